// The admin console in a real browser (playwright-core + Debian chromium, headless) against
// the real server and PostgreSQL, in dev mode (the dev issuer's role picker):
//  - the static files' security headers (CSP, Referrer-Policy, nosniff); no CSP violation
//    and no script error on any page;
//  - sign in as each role; a viewer sees no mutating control, and a forced request (a deep
//    link to the admin-only tokens page) shows the server's 403 as a message;
//  - an admin starts a `sleep` job and watches its live log and its state reach succeeded
//    without a reload; cancels another; creates an API token (the secret once, a copy
//    button) and revokes it behind a confirmation (the secret then no longer works);
//  - deep link + reload, back and forward; keyboard-only navigation through the shell;
//  - a display name holding HTML shows as text and runs nothing;
//  - a screenshot of every page visited (under the build folder) and axe-core: no serious
//    or critical violation on any page at 1280 and 390 px, light and dark.
//
//   node console.mjs <qdb-control binary> <source dir> <screenshot dir>
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, readdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { freePort, psql as psqlOn, waitFor, stop, launch } from './lib.mjs';

const [binary, sourceDir, shotDirArg] = process.argv.slice(2);
const pgPort = process.env.QDB_TEST_PG_PORT;
if (!binary || !sourceDir || !pgPort) {
  console.error('usage: QDB_TEST_PG_PORT=N node console.mjs <qdb-control> <source dir> [screenshot dir]');
  process.exit(2);
}
const logDir = process.env.QDB_TEST_LOG_DIR || os.tmpdir();
const shotDir = shotDirArg || path.join(logDir, 'console-screenshots');
mkdirSync(shotDir, { recursive: true });
for (const f of readdirSync(shotDir)) if (f.endsWith('.png')) rmSync(path.join(shotDir, f)); // this run's only
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

let passed = 0, failed = 0;
const check = (cond, msg) => { if (cond) passed++; else { failed++; console.error(`FAIL ${msg}`); } };
const step = (msg) => console.error(`-- ${msg}`);
const children = [];
const T = 20000; // generous bound for any wait on a loaded 2-core machine

const psql = (sql) => psqlOn(pgPort, sql);

const db = `t_browser_console_${process.pid}`;
const serverLog = `browser-console-${process.pid}.log`;
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
let shots = 0;
const pageErrors = [];

async function startServer() {
  const keyFile = path.join(logDir, `browser-console-key-${process.pid}`);
  writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  const log = openSync(path.join(logDir, serverLog), 'w');
  const child = spawn(binary, ['serve'], {
    env: {
      ...process.env,
      QDB_DATABASE_URL: `postgresql://postgres@127.0.0.1:${pgPort}/${db}`,
      QDB_LISTEN: `127.0.0.1:${port}`,
      QDB_WEB_DIR: path.join(sourceDir, 'web'),
      QDB_AUDIT_HMAC_KEY_FILE: keyFile,
      QDB_AUTH_MODE: 'dev',
      QDB_SHUTDOWN_TIMEOUT: '5',
    },
    stdio: ['ignore', log, log],
  });
  children.push(child);
  await waitFor(`${base}/readyz`);
  return child;
}

async function newPage(context, label) {
  const page = await context.newPage();
  await page.setViewportSize({ width: 1280, height: 900 });
  page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
  // A refused request (403, 404, 400) is logged by chromium as an error; the page shows it.
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) pageErrors.push(`${label}: ${m.text()}`);
  });
  return page;
}

async function signIn(page, name, role) {
  await page.locator('#signin').click();
  await page.locator('#login_name').fill(name, { timeout: T });
  await page.locator('#login_role').selectOption(role);
  await page.locator('#sign-in').click();
  await page.locator('#who').filter({ hasText: `(${role})` }).waitFor({ timeout: T });
}

/** Wait until the page's heading names the page (the router has rendered it). */
async function heading(page, text) {
  await page.locator('h1#page-title').filter({ hasText: text }).waitFor({ timeout: T });
}

async function settled(page) {
  // no loading placeholder left (each region replaces its own when its request answers)
  await page.waitForFunction(() => !document.querySelector('#view .state-loading'), null, { timeout: T });
}

/** Screenshot and axe-core at 1280 and 390 px in the light scheme, and at 1280 px in the
 * dark one (its colours are the same at any width; fewer full-page shots keep the test
 * quick on a loaded machine). */
async function audit(page, name) {
  for (const [w, hgt, schemes] of [[1280, 900, ['light', 'dark']], [390, 844, ['light']]]) {
    for (const scheme of schemes) {
      await page.setViewportSize({ width: w, height: hgt });
      await page.emulateMedia({ colorScheme: scheme });
      await page.screenshot({ path: path.join(shotDir, `${String(++shots).padStart(2, '0')}-${name}-${w}-${scheme}.png`), fullPage: true });
      if (w === 1280 && scheme === 'light') {
        // a null or undefined that reached the page as text is a rendering bug
        const stray = await page.evaluate(() => {
          const out = [];
          const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
          for (let n = walk.nextNode(); n; n = walk.nextNode()) {
            if (/^\s*(null|undefined|NaN|\[object Object\])\s*$/.test(n.nodeValue) && !n.parentElement.closest('pre')) out.push(n.parentElement.tagName);
          }
          return out;
        });
        check(stray.length === 0, `no null/undefined text on ${name}: in ${stray.join(', ')}`);
      }
      if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(axeSource);
      const bad = await page.evaluate(async () => {
        const r = await window.axe.run(document, { resultTypes: ['violations'] });
        return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
          .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
      });
      check(bad.length === 0, `axe on ${name} at ${w} px ${scheme}: ${bad.join('; ')}`);
    }
  }
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.emulateMedia({ colorScheme: 'light' });
}

async function nav(page, label, title) {
  await page.locator('#nav a', { hasText: label }).click();
  await heading(page, title);
  await settled(page);
}

function textOnly() {
  step('the console\'s modules build no HTML from strings');
  const dir = path.join(sourceDir, 'web');
  const files = readdirSync(dir).filter((f) => f.endsWith('.js')).map((f) => path.join(dir, f))
    .concat(readdirSync(path.join(dir, 'pages')).filter((f) => f.endsWith('.js')).map((f) => path.join(dir, 'pages', f)));
  for (const f of files) {
    const src = readFileSync(f, 'utf8');
    const bad = src.match(/\b(innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\s*\(|new Function|setHTMLUnsafe)/);
    check(!bad, `${path.relative(sourceDir, f)} uses ${bad && bad[1]}`);
  }
  check(!/<script>|\son[a-z]+=|style=/.test(readFileSync(path.join(dir, 'index.html'), 'utf8')), 'index.html has no inline script, handler or style');
}

async function headers() {
  step('static files carry the security headers');
  for (const p of ['/', '/app.js', '/style.css', '/pages/jobs.js']) {
    const r = await fetch(`${base}${p}`);
    const csp = r.headers.get('content-security-policy') || '';
    check(r.status === 200, `${p}: ${r.status}`);
    check(/default-src 'self'/.test(csp) && /script-src 'self'(;|$)/.test(csp) && /frame-ancestors 'none'/.test(csp)
      && /base-uri 'none'/.test(csp) && !/unsafe/.test(csp), `${p} CSP: ${csp}`);
    check(r.headers.get('referrer-policy') === 'no-referrer', `${p} Referrer-Policy`);
    check(r.headers.get('x-content-type-options') === 'nosniff', `${p} nosniff`);
  }
}

async function admin(context) {
  step('admin: sign in (display name holding HTML), the dashboard');
  const page = await newPage(context, 'admin');
  const evil = 'Ada <img src=x onerror="window.__pwned=1"><b>bold</b>';
  await page.goto(`${base}/#/`);
  await signIn(page, evil, 'admin');
  check(await page.locator('#who').textContent() === `${evil} (admin)`, 'the HTML display name is shown as text');
  check(await page.locator('#who img, #who b').count() === 0, 'no element made from the display name');
  await heading(page, 'Dashboard');
  await settled(page);
  const outbox = await page.locator('[data-outbox]').getAttribute('data-outbox');
  check(outbox === 'ok' || outbox === 'unavailable', `outbox card shows a value or "not available": ${outbox}`);
  if (outbox === 'ok') check(/^\d+$/.test(await page.locator('[data-field="backlog"]').textContent()), 'outbox backlog is a number');
  else check(/Not available/.test(await page.locator('[data-outbox]').textContent()), 'outbox not available is said');
  check(await page.locator('.state-counts li').count() === 6, 'six job states on the dashboard');
  await audit(page, 'dashboard-admin');

  step('admin: start a sleep job and watch its live log reach succeeded, no reload');
  await nav(page, 'Jobs', 'Jobs');
  await page.evaluate(() => { window.__noReload = true; });
  await page.locator('summary', { hasText: 'Start a diagnostic job' }).click();
  await page.locator('select[name="kind"]').selectOption('sleep');
  await page.locator('textarea[name="args"]').fill('{"seconds": 3, "log": true}');
  await page.locator('button', { hasText: 'Start job' }).click();
  await page.waitForURL(/#\/jobs\/\d+$/, { timeout: T });
  const sleepId = Number(page.url().split('/').pop());
  await heading(page, `Job #${sleepId}`);
  await page.locator('ol.log li', { hasText: 'sleeping for 3.0 s' }).waitFor({ timeout: T });
  await page.locator('ol.log li', { hasText: 'slept 3.0 s, done' }).waitFor({ timeout: T });
  await page.locator('[data-field="state"] [data-state="succeeded"]').waitFor({ timeout: T });
  check(await page.locator('ol.log li', { hasText: /slept \d+\.\d of 3\.0 s/ }).count() >= 1, 'progress lines arrived in the log');
  check(await page.evaluate(() => window.__noReload === true), 'no reload while the job ran');
  check((await page.locator('.json').last().textContent()).includes('"slept"'), 'the result is shown');
  await audit(page, 'job-succeeded');

  step('admin: cancel a running job');
  await nav(page, 'Jobs', 'Jobs');
  await page.locator('summary', { hasText: 'Start a diagnostic job' }).click();
  await page.locator('textarea[name="args"]').fill('{"seconds": 120}');
  await page.locator('button', { hasText: 'Start job' }).click();
  await page.waitForURL(/#\/jobs\/\d+$/, { timeout: T });
  const cancelId = Number(page.url().split('/').pop());
  await page.locator('[data-field="state"] [data-state="running"]').waitFor({ timeout: T });
  await page.locator('[data-action="cancel"]').click();
  await page.locator('dialog[open] [data-confirm]').click();
  await page.locator('[data-field="state"] [data-state="cancelled"]').waitFor({ timeout: T });
  check(await page.locator('[data-action="retry"]').count() === 1, 'a cancelled job offers retry');
  await audit(page, 'job-cancelled');

  step('admin: the jobs list filters through the URL and pages with the cursor');
  await page.goto(`${base}/#/jobs?state=cancelled`);
  await heading(page, 'Jobs');
  await settled(page);
  check(await page.locator(`tr[data-job-id="${cancelId}"]`).count() === 1, 'the cancelled job is in the filtered list');
  check(await page.locator(`tr[data-job-id="${sleepId}"]`).count() === 0, 'the succeeded job is not');
  check(await page.locator('select[name="state"]').inputValue() === 'cancelled', 'the filter form shows the filter');
  await audit(page, 'jobs-filtered');

  step('admin: the list shows new jobs and their states live');
  await nav(page, 'Jobs', 'Jobs');
  const tok = await (await fetch(`${base}/dev-issuer/token`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ sub: 'script', role: 'admin' }),
  })).json();
  await page.waitForFunction(() => document.querySelector('#view tbody'), null, { timeout: T });
  // the stream is open once an event reaches the page; enqueue until the notice shows
  let liveId = 0;
  const enqueue = async () => {
    const r = await fetch(`${base}/api/v1/jobs`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${tok.access_token}` },
      body: JSON.stringify({ kind: 'sleep', args: { seconds: 3 } }),
    });
    liveId = (await r.json()).id;
  };
  await enqueue();
  const notice = page.locator('.notice', { hasText: /new job/ });
  for (let i = 0; i < 20 && !(await notice.isVisible()); i++) {
    await notice.waitFor({ timeout: 1000 }).catch(enqueue);
  }
  await notice.locator('button').click();
  const liveRow = page.locator(`tr[data-job-id="${liveId}"]`);
  await liveRow.waitFor({ timeout: T });
  await liveRow.locator('[data-state="succeeded"]').waitFor({ timeout: T });
  check(await page.evaluate(() => window.__noReload === true), 'the list followed the job without a reload');
  const utc = await page.locator(`tr[data-job-id="${liveId}"] time`).first().getAttribute('title');
  check(/^UTC: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/.test(utc || ''), `UTC on hover: ${utc}`);

  step('admin: the dashboard follows job events without a reload');
  // the live list's sleep jobs finish first, so that the one change to come is ours
  for (const end = Date.now() + 60000; Date.now() < end;) {
    const busy = await Promise.all(['pending', 'running', 'retrying'].map(async (st) => (await (await fetch(`${base}/api/v1/jobs?state=${st}`, {
      headers: { Authorization: `Bearer ${tok.access_token}` },
    })).json()).items.length));
    if (busy.every((n) => n === 0)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  await nav(page, 'Dashboard', 'Dashboard');
  const succeededCount = page.locator('li[data-state="succeeded"] .count');
  const before = await succeededCount.textContent();
  await fetch(`${base}/api/v1/jobs`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${tok.access_token}` },
    body: JSON.stringify({ kind: 'noop' }),
  });
  await page.waitForFunction((b) => document.querySelector('li[data-state="succeeded"] .count')?.textContent !== b, before, { timeout: T });
  check(Number(await succeededCount.textContent()) === Number(before) + 1, `succeeded count ${before} -> ${await succeededCount.textContent()}`);
  check(await page.evaluate(() => window.__noReload === true), 'the dashboard refreshed in place');

  step('admin: cursor paging of the jobs list');
  for (let i = 0; i < 55; i++) {
    const r = await fetch(`${base}/api/v1/jobs`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${tok.access_token}` },
      body: JSON.stringify({ kind: 'noop' }),
    });
    if (r.status !== 202) throw new Error(`enqueue noop: ${r.status}`);
  }
  await page.goto(`${base}/#/jobs?kind=noop`);
  await heading(page, 'Jobs');
  await settled(page);
  check(await page.locator('tbody tr').count() === 50, 'the first page holds 50 jobs');
  await page.locator('button', { hasText: 'Load more' }).click();
  // 55 noops and the dashboard step's one: a second page of 6
  await page.waitForFunction(() => document.querySelectorAll('#view tbody tr').length === 56, null, { timeout: T });
  check(await page.locator('button', { hasText: 'Load more' }).isHidden(), 'no more pages after the last');

  step('admin: schedules, audit, environments');
  await nav(page, 'Schedules', 'Schedules');
  check(await page.locator('tbody tr').count() >= 1, 'schedules listed (audit-verify-daily at least)');
  await audit(page, 'schedules');
  await page.locator('tbody a', { hasText: 'audit-verify-daily' }).click();
  await heading(page, 'Schedule audit-verify-daily');
  const cron = page.locator('input[name="cron"]');
  const original = await cron.inputValue();
  await cron.fill('61 * * * *');
  await page.locator('button', { hasText: 'Save' }).click();
  const problem = page.locator('#view .message-error');
  await problem.waitFor({ timeout: T });
  const ptext = await problem.textContent();
  check(/cron/i.test(ptext) && ptext.length > 20, `a refused change shows the problem's title and detail: ${ptext}`);
  await audit(page, 'schedule-edit-refused');
  await cron.fill(original);
  await page.locator('button', { hasText: 'Save' }).click();
  await page.locator('.message-ok', { hasText: 'Saved' }).waitFor({ timeout: T });
  await nav(page, 'Audit', 'Audit');
  check(await page.locator('tbody tr').count() >= 2, 'audit events listed');
  check(await page.locator('tbody img').count() === 0, 'no element made from an actor name');
  await page.locator('details.event summary').first().click();
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: T }),
    page.locator('button', { hasText: 'Export these events' }).click(),
  ]);
  const lines = readFileSync(await download.path(), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  check(lines.length >= 2 && lines.every((e) => e.seq && e.hash), `the export downloads the events as JSON Lines (${lines.length})`);
  await page.locator('button', { hasText: 'Check the newest events' }).click();
  await page.locator('[data-verify="ok"]').waitFor({ timeout: T });
  await audit(page, 'audit');
  await page.locator('button', { hasText: 'Verify the whole chain now' }).click();
  await page.locator('.message-ok a', { hasText: /job #\d+/ }).click();
  await page.locator('[data-field="state"] [data-state="succeeded"]').waitFor({ timeout: T });
  await nav(page, 'Dashboard', 'Dashboard');
  await page.locator('.card strong.ok', { hasText: 'Chain intact' }).waitFor({ timeout: T });
  check(true, 'a full verification from the audit page shows on the dashboard');
  await nav(page, 'Environments', 'Environments');
  check(await page.locator('.card').count() === 5, 'five environments');
  await audit(page, 'environments');

  step('admin: create an API token (secret once, copy button) and revoke it');
  await nav(page, 'API tokens', 'API tokens');
  await page.locator('input[name="name"]').fill('console-test');
  await page.locator('select[name="role"]').selectOption('viewer');
  await page.locator('button', { hasText: 'Create token' }).click();
  const secretBox = page.locator('input.secret');
  await secretBox.waitFor({ timeout: T });
  const secret = await secretBox.inputValue();
  check(/^qdb_[A-Za-z0-9_-]{40,}$/.test(secret), 'the secret is shown once');
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  await page.locator('.copyable button', { hasText: 'Copy' }).click();
  await page.locator('.copyable [role="status"]', { hasText: 'Copied.' }).waitFor({ timeout: T });
  check(await page.evaluate(() => navigator.clipboard.readText()) === secret, 'the copy button copies the secret');
  const me = await fetch(`${base}/api/v1/me`, { headers: { Authorization: `Bearer ${secret}` } });
  check(me.status === 200, `the new token works: ${me.status}`);
  await audit(page, 'tokens');
  const row = page.locator('tbody tr', { hasText: 'console-test' });
  await row.locator('[data-action="revoke"]').click();
  await page.locator('dialog[open]').waitFor({ timeout: T });
  check(await page.evaluate(() => document.activeElement?.textContent === 'Cancel'), 'the confirmation opens on Cancel');
  await page.keyboard.press('Escape');
  await page.locator('dialog').waitFor({ state: 'detached', timeout: T });
  check(await page.evaluate(() => document.activeElement?.dataset.action === 'revoke'), 'Escape closes it and gives focus back');
  check(await row.locator('[data-state="active"]').count() === 1, 'Escape revokes nothing');
  await row.locator('[data-action="revoke"]').click();
  await page.locator('dialog[open]').waitFor({ timeout: T });
  await audit(page, 'tokens-confirm');
  await page.locator('dialog[open] [data-confirm]').click();
  await row.locator('[data-state="revoked"]').waitFor({ timeout: T });
  check(/revoked/.test(await page.locator('#view .message-ok').textContent()), 'revocation confirmed in a message');
  const after = await fetch(`${base}/api/v1/me`, { headers: { Authorization: `Bearer ${secret}` } });
  check(after.status === 401, `the revoked token is refused: ${after.status}`);
  await page.reload();
  await page.locator('#signin').waitFor({ state: 'visible', timeout: T });
  check(!(await page.content()).includes(secret), 'the secret is gone after a reload');

  step('admin: deep link + reload; back and forward');
  await page.goto(`${base}/#/jobs/${sleepId}`);
  await page.reload();
  await page.locator('#signin').waitFor({ state: 'visible', timeout: T });
  await signIn(page, 'Ada', 'admin');
  await heading(page, `Job #${sleepId}`);
  check(page.url() === `${base}/#/jobs/${sleepId}`, `back on the deep link: ${page.url()}`);
  await nav(page, 'Audit', 'Audit');
  await nav(page, 'Environments', 'Environments');
  await page.goBack();
  await heading(page, 'Audit');
  await page.goBack();
  await heading(page, `Job #${sleepId}`);
  await page.goForward();
  await heading(page, 'Audit');
  check(true, 'back and forward move between pages');
  check(await page.evaluate(() => window.__pwned === undefined), 'no script ran from a display name');
  await page.close();
  return { sleepId, cancelId };
}

async function viewer(context, { sleepId, cancelId }) {
  step('viewer: no mutating control anywhere; a forced request shows the 403');
  const page = await newPage(context, 'viewer');
  await page.goto(`${base}/#/`);
  await signIn(page, 'Vera Viewer', 'viewer');
  await heading(page, 'Dashboard');
  await settled(page);
  check(await page.locator('#nav a', { hasText: 'API tokens' }).count() === 0, 'no tokens entry in a viewer\'s navigation');
  await audit(page, 'dashboard-viewer');
  for (const [hash, title] of [['#/jobs', 'Jobs'], [`#/jobs/${sleepId}`, `Job #${sleepId}`], [`#/jobs/${cancelId}`, `Job #${cancelId}`],
    ['#/schedules', 'Schedules'], ['#/schedules/audit-verify-daily', 'Schedule audit-verify-daily'], ['#/audit', 'Audit'], ['#/environments', 'Environments']]) {
    await page.evaluate((hh) => { location.hash = hh; }, hash);
    await heading(page, title);
    await settled(page);
    check(await page.locator('[data-mutating]').count() === 0, `no mutating control for a viewer on ${hash}`);
    check(await page.locator('form.inline-form').count() === 0, `no edit form for a viewer on ${hash}`);
  }
  await audit(page, 'job-viewer');

  step('a page load makes no more API calls than it shows');
  await page.evaluate(() => { location.hash = '#/jobs'; });
  await heading(page, 'Jobs');
  await settled(page);
  const calls = [];
  const onRequest = (r) => { if (new URL(r.url()).pathname.startsWith('/api/')) calls.push(new URL(r.url()).pathname); };
  page.on('request', onRequest);
  await page.evaluate((id) => { location.hash = `#/jobs/${id}`; }, sleepId);
  await heading(page, `Job #${sleepId}`);
  await settled(page);
  await page.locator('ol.log li').first().waitFor({ timeout: T });
  page.off('request', onRequest);
  check(calls.length === 2 && calls[0] === `/api/v1/jobs/${sleepId}` && calls[1] === `/api/v1/jobs/${sleepId}/logs`,
    `a finished job's page asks for the job and its log, once each (the events stream stays open): ${calls.join(' ')}`);
  await page.evaluate(() => { location.hash = '#/tokens'; });
  await heading(page, 'API tokens');
  const alert = page.locator('#view [role="alert"]');
  await alert.waitFor({ timeout: T });
  check(/Permission denied/.test(await alert.textContent()), `the 403 is shown: ${await alert.textContent()}`);
  await audit(page, 'tokens-viewer-403');
  await page.close();
}

async function operator(context, { cancelId }) {
  step('operator: retry a cancelled job; no admin-only controls');
  const page = await newPage(context, 'operator');
  await page.goto(`${base}/#/jobs/${cancelId}`);
  await signIn(page, 'Otto Operator', 'operator');
  await heading(page, `Job #${cancelId}`);
  await page.locator('[data-action="retry"]').click();
  await page.locator('.message-ok', { hasText: 're-enqueued' }).waitFor({ timeout: T });
  await page.locator('[data-field="state"] [data-state="running"], [data-field="state"] [data-state="pending"]').first().waitFor({ timeout: T });
  await page.locator('[data-action="cancel"]').click();
  await page.locator('dialog[open] [data-confirm]').click();
  await page.locator('[data-field="state"] [data-state="cancelled"]').waitFor({ timeout: T });
  check(true, 'operator retried and cancelled');
  await page.evaluate(() => { location.hash = '#/jobs'; });
  await heading(page, 'Jobs');
  check(await page.locator('summary', { hasText: 'Start a diagnostic job' }).count() === 0, 'no direct enqueue for an operator');
  await page.evaluate(() => { location.hash = '#/schedules'; });
  await heading(page, 'Schedules');
  await settled(page);
  check(await page.locator('button', { hasText: /^(Enable|Disable)$/ }).count() >= 1, 'an operator can enable/disable schedules');
  await audit(page, 'schedules-operator');
  await page.close();
}

async function keyboard(context) {
  step('keyboard only: skip link, navigation, focus moves to the page heading');
  const page = await newPage(context, 'keyboard');
  await page.goto(`${base}/#/`);
  await signIn(page, 'Kim Keys', 'operator');
  await heading(page, 'Dashboard');
  await page.locator('body').focus();
  await page.evaluate(() => document.activeElement?.blur());
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement?.classList.contains('skip')), 'first Tab reaches the skip link');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(outline !== 'none', `focus is visible: outline ${outline}`);
  await page.keyboard.press('Enter');
  check(await page.evaluate(() => document.activeElement?.id === 'main') && page.url().endsWith('#/'), `the skip link moves focus to the content, the route stays: ${page.url()}`);
  await page.evaluate(() => document.activeElement?.blur());
  await page.keyboard.press('Tab');
  // Tab through the shell until the Jobs link has focus, then Enter.
  let found = false;
  for (let i = 0; i < 20 && !found; i++) {
    await page.keyboard.press('Tab');
    found = await page.evaluate(() => document.activeElement?.closest('#nav') && document.activeElement.textContent === 'Jobs');
  }
  check(found, 'Tab reaches the Jobs link in the navigation');
  await page.keyboard.press('Enter');
  await heading(page, 'Jobs');
  await page.waitForFunction(() => document.activeElement?.id === 'page-title', null, { timeout: T });
  check(page.url().endsWith('#/jobs'), `Enter followed the link: ${page.url()}`);
  // From the heading, Tab goes on into the page's controls (the filter form).
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => !!document.activeElement?.closest('#view')), 'Tab continues into the page');
  check(await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle !== 'none'), 'that focus is visible too');
  await page.close();
}

let server;
psql(`CREATE DATABASE ${db}`);
let browser;
let context;
try {
  textOnly();
  server = await startServer();
  await headers();
  browser = await launch();
  context = browser.context;
  const ids = await admin(context);
  await viewer(context, ids);
  await operator(context, ids);
  await keyboard(context);
  check(pageErrors.length === 0, `no script error or CSP violation in any page: ${pageErrors.join(' | ')}`);
} catch (e) {
  failed++;
  console.error(`FAIL ${e.stack || e}`);
  if (context) {
    for (const [i, p] of context.pages().entries()) {
      await p.screenshot({ path: path.join(shotDir, `failure-${i}.png`), fullPage: true }).catch(() => {});
      console.error(`   page ${i} at ${p.url()}: screenshot failure-${i}.png`);
    }
  }
} finally {
  if (browser) await browser.close();
  if (server) check(await stop(server) === 0, 'server stops cleanly');
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  try { psql(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`); } catch { /* best effort */ }
}
try {
  if (/Sanitizer|runtime error:/.test(readFileSync(path.join(logDir, serverLog), 'utf8'))) check(false, `sanitizer report in ${serverLog}`);
} catch { /* no log */ }
console.log(`${passed} passed, ${failed} failed (${shots} screenshots in ${shotDir})`);
process.exit(failed ? 1 : 0);
