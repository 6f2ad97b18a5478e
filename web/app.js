// The console talks only to this service's own API.
import * as auth from './auth.js';

// ---- sign-in (auth.js): who is signed in, sign in / sign out, /api/v1/me ----
const who = document.getElementById('who');
const signinButton = document.getElementById('signin');
const signoutButton = document.getElementById('signout');
const authError = document.getElementById('auth-error');
const mePanel = document.getElementById('me-panel');
const meList = document.getElementById('me');

async function showMe() {
  const r = await auth.apiFetch('/api/v1/me');
  const me = await r.json();
  if (!r.ok) throw new Error(me.detail || `HTTP ${r.status}`);
  who.textContent = `${me.name} (${me.role})`;
  meList.replaceChildren();
  const rows = [['Subject', me.subject], ['Name', me.name], ['Roles', me.roles.join(', ')],
    ['Signed in with', me.auth_method], ['Token expires', me.expires_at || 'never']];
  for (const [k, v] of rows) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dd.dataset.field = k;
    meList.append(dt, dd);
  }
}

function showSession(signedIn) {
  who.hidden = !signedIn;
  mePanel.hidden = !signedIn;
  signinButton.hidden = signedIn;
  signoutButton.hidden = !signedIn;
}

signinButton.addEventListener('click', () => auth.signIn());
signoutButton.addEventListener('click', () => auth.signOut());
auth.onChange(showSession);
try {
  await auth.completeSignIn();
  showSession(auth.signedIn());
  if (auth.signedIn()) await showMe();
} catch (e) {
  authError.textContent = e.message;
  authError.hidden = false;
  showSession(false);
}

const status = document.getElementById('status');
try {
  const r = await fetch('/readyz');
  const body = await r.json();
  status.textContent = r.ok ? `Ready (schema version ${body.schema_version})` : `Not ready: ${body.detail}`;
  status.className = r.ok ? 'ok' : 'bad';
} catch (e) {
  status.textContent = 'The service cannot be reached.';
  status.className = 'bad';
}
