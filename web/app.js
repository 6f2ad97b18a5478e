// The console's shell: sign-in state, the navigation, and the hash router that gives every
// page and object its own URL (#/jobs/42, #/audit?action=job.cancel), so that deep links,
// reload, back and forward work. Pages are ES modules under pages/ (see web/README.md).
import * as auth from './auth.js';
import * as api from './api.js';
import { h, errorBox, dl, time } from './ui.js';
import dashboard from './pages/dashboard.js';
import jobs from './pages/jobs.js';
import schedules from './pages/schedules.js';
import audit from './pages/audit.js';
import tokens from './pages/tokens.js';
import environments from './pages/environments.js';
import flags from './pages/flags.js';
import inventory from './pages/inventory.js';
import backups from './pages/backups.js';
import dr from './pages/dr.js';

// The rooms, in navigation order. `path` is the first segment of the hash route; `minRole`
// hides the entry from roles below it (the server still enforces: a deep link shows its 403).
const PAGES = [
  { path: '', label: 'Dashboard', page: dashboard },
  { path: 'jobs', label: 'Jobs', page: jobs },
  { path: 'schedules', label: 'Schedules', page: schedules },
  { path: 'audit', label: 'Audit', page: audit },
  { path: 'flags', label: 'Flags', page: flags },
  { path: 'inventory', label: 'Inventory', page: inventory },
  { path: 'backups', label: 'Backups', page: backups },
  { path: 'dr', label: 'DR', page: dr },
  { path: 'environments', label: 'Environments', page: environments },
  { path: 'tokens', label: 'API tokens', page: tokens, minRole: 'admin' },
];

const navList = document.getElementById('nav-list');
const view = document.getElementById('view');
const who = document.getElementById('who');
const mePanel = document.getElementById('me-panel');
const meList = document.getElementById('me');
const signinButton = document.getElementById('signin');
const signoutButton = document.getElementById('signout');
const authError = document.getElementById('auth-error');

let me = null;
let current = null; // the shown page: {abort, cleanups}
let firstRender = true;

/** '#/jobs/42?state=failed' -> {path: 'jobs', id: '42', query: URLSearchParams}. */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [p, q = ''] = raw.split('?');
  const parts = p.split('/').filter(Boolean).map((s) => { try { return decodeURIComponent(s); } catch { return s; } });
  return { path: parts[0] || '', id: parts.length > 1 ? parts.slice(1).join('/') : null, query: new URLSearchParams(q) };
}

/** The hash of a page, object and query: href('jobs', 42, {state: 'failed'}). */
function href(path, id, query) {
  let s = `#/${path}`;
  if (id !== null && id !== undefined) s += `/${encodeURIComponent(id)}`;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    if (q.toString()) s += `?${q}`;
  }
  return s;
}

function renderNav() {
  const { path } = parseHash();
  navList.parentElement.hidden = !me; // the pages need a sign-in first
  navList.replaceChildren(...PAGES
    .filter((p) => !p.minRole || (me && api.roleAtLeast(me.role, p.minRole)))
    .map((p) => h('li', {}, h('a', { href: `#/${p.path}`, 'aria-current': p.path === path ? 'page' : null }, p.label))));
}

function showSession(signedIn) {
  mePanel.hidden = !signedIn || !me;
  signinButton.hidden = signedIn;
  signoutButton.hidden = !signedIn;
  if (!signedIn) {
    me = null;
    who.textContent = '';
  }
}

async function loadMe() {
  me = await api.get('/api/v1/me');
  who.textContent = `${me.name} (${me.role})`;
  meList.replaceChildren(...dl([['Subject', me.subject], ['Name', me.name], ['Role', me.role],
    ['Roles', me.roles.join(', ')], ['Signed in with', me.auth_method], ['Token expires', me.expires_at ? time(me.expires_at) : 'never']]).childNodes);
  showSession(true);
}

async function route() {
  if (current) {
    current.abort.abort();
    for (const fn of current.cleanups) fn();
  }
  const { path, id, query } = parseHash();
  const entry = PAGES.find((p) => p.path === path);
  renderNav();
  const cleanups = [];
  const abort = new AbortController();
  current = { abort, cleanups };
  const focusHeading = !firstRender;
  firstRender = false;
  view.replaceChildren();
  if (!auth.signedIn() || !me) {
    document.title = 'Sign in · QDB One';
    view.append(h('section', { class: 'signed-out', 'aria-labelledby': 'page-title' },
      h('h1', { id: 'page-title', tabindex: '-1' }, 'QDB One Control Plane'),
      h('p', {}, 'Sign in to run the platform: jobs, schedules, the audit trail, API tokens and environments.')));
    return;
  }
  if (!entry) {
    document.title = 'Not found · QDB One';
    view.append(h('h1', { id: 'page-title', tabindex: '-1' }, 'Page not found'),
      h('p', {}, 'No page at this address. ', h('a', { href: '#/' }, 'Go to the dashboard.')));
    if (focusHeading) document.getElementById('page-title')?.focus();
    return;
  }
  document.title = `${entry.label} · QDB One`;
  const ctx = {
    root: view,
    id,
    query,
    me,
    can: (min) => api.roleAtLeast(me.role, min),
    signal: abort.signal,
    onCleanup: (fn) => cleanups.push(fn),
    href,
    go: (hash) => { location.hash = hash; },
  };
  try {
    await entry.page.render(ctx);
  } catch (e) {
    if (e.name !== 'AbortError' && current?.abort === abort) view.append(errorBox(e));
  }
  if (focusHeading && current?.abort === abort) document.getElementById('page-title')?.focus();
}

signinButton.addEventListener('click', () => auth.signIn());
signoutButton.addEventListener('click', () => auth.signOut()); // onChange re-renders
// The skip link moves focus; as a plain #main link it would be taken for a route.
document.querySelector('a.skip').addEventListener('click', (e) => {
  e.preventDefault();
  document.getElementById('main').focus();
});
auth.onChange((signedIn) => {
  if (!signedIn) {
    api.closeJobEvents();
    showSession(false);
    route();
  }
});
window.addEventListener('hashchange', route);

try {
  await auth.completeSignIn();
  showSession(auth.signedIn());
  if (auth.signedIn()) await loadMe();
} catch (e) {
  authError.textContent = e.message;
  authError.hidden = false;
  showSession(false);
}
route();

const status = document.getElementById('status');
try {
  const r = await fetch('/readyz');
  const body = await r.json();
  status.textContent = r.ok ? `Service ready (schema version ${body.schema_version})` : `Service not ready: ${body.detail}`;
  status.className = r.ok ? 'ok' : 'bad';
} catch (e) {
  status.textContent = 'The service cannot be reached.';
  status.className = 'bad';
}
