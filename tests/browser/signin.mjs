// Console sign-in in a real browser (playwright-core + Debian chromium, headless):
//  1. dev mode: the console's Authorization Code + PKCE flow through the dev issuer's
//     sign-in page; the token stays in memory (no storage holds it); when it expires the
//     console signs in again and comes back to the same page; sign-out.
//  2. oidc mode: the same flow against a real OpenID provider (tests/fixtures/
//     oidc_provider.mjs standing in for Keycloak): its login and consent pages, PKCE S256,
//     back to the same page with an admin token; sign-out through its end-session page.
//
//   node signin.mjs <qdb-control binary> <source dir>   (QDB_TEST_PG_PORT from tests/run.sh)
import { spawn } from 'node:child_process';
import { openSync, writeFileSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { freePort, psql as psqlOn, waitFor, stop, launch } from './lib.mjs';

const [binary, sourceDir] = process.argv.slice(2);
const pgPort = process.env.QDB_TEST_PG_PORT;
if (!binary || !sourceDir || !pgPort) {
  console.error('usage: QDB_TEST_PG_PORT=N node signin.mjs <qdb-control> <source dir>');
  process.exit(2);
}
const logDir = process.env.QDB_TEST_LOG_DIR || os.tmpdir();
let passed = 0, failed = 0;
const check = (cond, msg) => { if (cond) passed++; else { failed++; console.error(`FAIL ${msg}`); } };
const step = (msg) => console.error(`-- ${msg}`);
const children = [];

const psql = (sql) => psqlOn(pgPort, sql);

function start(cmd, args, env, logName) {
  const log = openSync(path.join(logDir, logName), 'w');
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', log, log] });
  children.push(child);
  return child;
}

async function startServer(db, port, env, name) {
  const keyFile = path.join(logDir, `browser-audit-key-${process.pid}`);
  writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  const child = start(binary, ['serve'], {
    QDB_DATABASE_URL: `postgresql://postgres@127.0.0.1:${pgPort}/${db}`,
    QDB_LISTEN: `127.0.0.1:${port}`,
    QDB_WEB_DIR: path.join(sourceDir, 'web'),
    QDB_AUDIT_HMAC_KEY_FILE: keyFile,
    QDB_SHUTDOWN_TIMEOUT: '5',
    ...env,
  }, name);
  await waitFor(`http://127.0.0.1:${port}/readyz`);
  return child;
}

async function noTokenStored(page) {
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
  return !stored.includes('eyJ');
}

async function devMode(db) {
  step('dev mode: sign in through the dev issuer');
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const server = await startServer(db, port, { QDB_AUTH_MODE: 'dev' }, `browser-dev-${process.pid}.log`);
  const csp = (await fetch(`${base}/`)).headers.get('content-security-policy') || '';
  check(csp.includes("connect-src 'self';"), `dev mode: the console connects to its own origin only: ${csp}`);
  const browser = await launch();
  const { context } = browser;
  try {
    await context.clock.install();
    const page = await context.newPage();
    const authorizeUrls = [];
    page.on('request', (r) => { if (r.url().includes('/authorize?')) authorizeUrls.push(r.url()); });
    await page.goto(`${base}/#/jobs`);
    await page.locator('#signin').click();
    await page.locator('#login_name').fill('Grace Hopper');
    await page.locator('#login_role').selectOption('operator');
    await page.locator('#sign-in').click();
    await page.locator('#who').filter({ hasText: 'Grace Hopper (operator)' }).waitFor({ timeout: 15000 });
    check(page.url() === `${base}/#/jobs`, `back on the same page: ${page.url()}`);
    check(await page.locator('dd[data-field="Signed in with"]').textContent() === 'dev', 'signed in with dev');
    check(authorizeUrls.some((u) => u.includes('code_challenge_method=S256') && u.includes('code_challenge=')), 'PKCE S256 on the authorize request');
    check(await noTokenStored(page), 'no token in localStorage, sessionStorage or cookies');

    step('dev mode: the token expires, the console signs in again and keeps the page');
    await page.evaluate(() => { location.hash = '#/audit'; });
    await context.clock.fastForward(3600 * 1000);
    await page.locator('#login_name').waitFor({ timeout: 15000 });
    await page.locator('#login_name').fill('Grace Hopper');
    await page.locator('#login_role').selectOption('admin');
    await page.locator('#sign-in').click();
    await page.locator('#who').filter({ hasText: 'Grace Hopper (admin)' }).waitFor({ timeout: 15000 });
    check(page.url() === `${base}/#/audit`, `back on the page it was on: ${page.url()}`);

    step('dev mode: sign out');
    await page.locator('#signout').click();
    await page.locator('#signin').waitFor({ state: 'visible', timeout: 5000 });
    check(await page.locator('#who').isHidden(), 'who is hidden after sign-out');
  } finally {
    await browser.close();
    check(await stop(server) === 0, 'dev server stops cleanly');
  }
}

async function oidcMode(db) {
  step('oidc mode: sign in through the OpenID provider with PKCE');
  const port = await freePort();
  const fport = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const issuer = `http://127.0.0.1:${fport}/realms/qdb-one`;
  const fixture = start('node', [path.join(sourceDir, 'tests/fixtures/oidc_provider.mjs'), '--port', String(fport), '--redirect', `${base}/`],
    {}, `browser-oidc-fixture-${process.pid}.log`);
  await waitFor(`${issuer}/.well-known/openid-configuration`);
  const server = await startServer(db, port, { QDB_AUTH_MODE: 'oidc', QDB_OIDC_ISSUER: issuer }, `browser-oidc-${process.pid}.log`);
  const csp = (await fetch(`${base}/`)).headers.get('content-security-policy') || '';
  check(csp.includes(`connect-src 'self' http://127.0.0.1:${fport};`), `the CSP lets the console reach the issuer's origin only: ${csp}`);
  const browser = await launch();
  const { context } = browser;
  try {
    const page = await context.newPage();
    const authorizeUrls = [];
    page.on('request', (r) => { if (r.url().startsWith(`${issuer}/auth?`)) authorizeUrls.push(r.url()); });
    await page.goto(`${base}/#/flags`);
    await page.locator('#signin').click();
    await page.locator('input[name="login"]').fill('admin-alice', { timeout: 15000 });
    await page.locator('input[name="password"]').fill('any password');
    await page.locator('button[type="submit"]').first().click();
    // Consent ("Authorize") page of the provider's dev interactions.
    await page.locator('button[type="submit"]').first().click({ timeout: 15000 });
    await page.locator('#who').filter({ hasText: 'admin-alice (admin)' }).waitFor({ timeout: 15000 });
    check(page.url() === `${base}/#/flags`, `back on the same page: ${page.url()}`);
    check(await page.locator('dd[data-field="Signed in with"]').textContent() === 'oidc', 'signed in with oidc');
    check(authorizeUrls.length > 0 && authorizeUrls.every((u) => u.includes('code_challenge_method=S256') && u.includes('code_challenge=')), 'PKCE S256 on the authorize request');
    check(await noTokenStored(page), 'no token in localStorage, sessionStorage or cookies');

    step('oidc mode: sign out through the end-session page');
    await page.locator('#signout').click();
    await page.locator('button[name="logout"]').click({ timeout: 15000 });
    await page.waitForURL(`${base}/`, { timeout: 15000 });
    await page.locator('#signin').waitFor({ state: 'visible', timeout: 15000 });
    check(true, 'signed out and back on the console');
  } finally {
    await browser.close();
    check(await stop(server) === 0, 'oidc server stops cleanly');
    await stop(fixture);
  }
}

const db = `t_browser_signin_${process.pid}`;
psql(`CREATE DATABASE ${db}`);
try {
  await devMode(db);
  await oidcMode(db);
} catch (e) {
  failed++;
  console.error(`FAIL ${e.stack || e}`);
} finally {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  try { psql(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`); } catch { /* best effort */ }
}
for (const f of [`browser-dev-${process.pid}.log`, `browser-oidc-${process.pid}.log`]) {
  try {
    if (/Sanitizer|runtime error:/.test(readFileSync(path.join(logDir, f), 'utf8'))) check(false, `sanitizer report in ${f}`);
  } catch { /* no log */ }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
