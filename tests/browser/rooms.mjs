// What the browser tests of the rooms' pages (flags.mjs, inventory.mjs) share on top of
// lib.mjs: a real server in dev mode on its own database of the test cluster, the dev
// issuer's sign-in, waiting for a page to settle, the API with a dev token for setting up,
// and audit(): a screenshot plus axe-core (no serious or critical violation) at 1280 px in
// light and dark and at 390 px, the same as console.mjs does for the shell's pages.
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, readdirSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { freePort, psql as psqlOn, waitFor, stop, launch } from './lib.mjs';

export const T = 20000; // generous bound for any wait on a loaded 2-core machine

/** The harness of one test: run(body) starts PostgreSQL database, server and browser, calls
 * body(t), then tears everything down and exits with the outcome. */
export async function run(name, body, { env = {} } = {}) {
  const [binary, sourceDir, shotDirArg] = process.argv.slice(2);
  const pgPort = process.env.QDB_TEST_PG_PORT;
  if (!binary || !sourceDir || !pgPort) {
    console.error(`usage: QDB_TEST_PG_PORT=N node ${name}.mjs <qdb-control> <source dir> [screenshot dir]`);
    process.exit(2);
  }
  const logDir = process.env.QDB_TEST_LOG_DIR || os.tmpdir();
  const shotDir = shotDirArg || path.join(logDir, `${name}-screenshots`);
  mkdirSync(shotDir, { recursive: true });
  for (const f of readdirSync(shotDir)) if (f.startsWith(`${name}-`) && f.endsWith('.png')) rmSync(path.join(shotDir, f));
  const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

  let passed = 0, failed = 0, shots = 0;
  const pageErrors = [];
  const children = [];
  const check = (cond, msg) => { if (cond) passed++; else { failed++; console.error(`FAIL ${msg}`); } };
  const step = (msg) => console.error(`-- ${msg}`);
  const psql = (sql) => psqlOn(pgPort, sql);
  const db = `t_browser_${name}_${process.pid}`;
  const serverLog = `browser-${name}-${process.pid}.log`;
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;

  async function startServer() {
    const keyFile = path.join(logDir, `browser-${name}-key-${process.pid}`);
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
        ...env,
      },
      stdio: ['ignore', log, log],
    });
    children.push(child);
    await waitFor(`${base}/readyz`);
    return child;
  }

  const tokens = {};
  async function token(role) {
    if (!tokens[role]) {
      const r = await fetch(`${base}/dev-issuer/token`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ sub: `script-${role}`, role }),
      });
      tokens[role] = (await r.json()).access_token;
    }
    return tokens[role];
  }

  /** The API as role: {status, body, headers}. */
  async function callApi(role, method, p, reqBody, headers = {}) {
    const r = await fetch(`${base}${p}`, {
      method,
      headers: { Authorization: `Bearer ${await token(role)}`, ...(reqBody !== undefined ? { 'Content-Type': 'application/json' } : {}), ...headers },
      body: reqBody !== undefined ? JSON.stringify(reqBody) : undefined,
    });
    const txt = await r.text();
    let parsed = null;
    try { parsed = txt ? JSON.parse(txt) : null; } catch { parsed = txt; }
    return { status: r.status, body: parsed, headers: r.headers };
  }

  let context;
  async function newPage(label) {
    const page = await context.newPage();
    await page.setViewportSize({ width: 1280, height: 900 });
    page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) pageErrors.push(`${label}: ${m.text()}`);
    });
    return page;
  }

  async function signIn(page, who, role, hash = '#/') {
    await page.goto(`${base}/${hash}`);
    await page.locator('#signin').click();
    await page.locator('#login_name').fill(who, { timeout: T });
    await page.locator('#login_role').selectOption(role);
    await page.locator('#sign-in').click();
    await page.locator('#who').filter({ hasText: `(${role})` }).waitFor({ timeout: T });
  }

  async function heading(page, txt) {
    await page.locator('h1#page-title').filter({ hasText: txt }).waitFor({ timeout: T });
  }

  async function settled(page) {
    await page.waitForFunction(() => !document.querySelector('#view .state-loading'), null, { timeout: T });
  }

  async function audit(page, shot) {
    for (const [w, hgt, schemes] of [[1280, 900, ['light', 'dark']], [390, 844, ['light', 'dark']]]) {
      for (const scheme of schemes) {
        await page.setViewportSize({ width: w, height: hgt });
        await page.emulateMedia({ colorScheme: scheme });
        await page.screenshot({ path: path.join(shotDir, `${name}-${String(++shots).padStart(2, '0')}-${shot}-${w}-${scheme}.png`), fullPage: true });
        if (w === 1280 && scheme === 'light') {
          const stray = await page.evaluate(() => {
            const out = [];
            const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
            for (let n = walk.nextNode(); n; n = walk.nextNode()) {
              if (/^\s*(null|undefined|NaN|\[object Object\])\s*$/.test(n.nodeValue) && !n.parentElement.closest('pre')) out.push(n.parentElement.tagName);
            }
            return out;
          });
          check(stray.length === 0, `no null/undefined text on ${shot}: in ${stray.join(', ')}`);
        }
        if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(axeSource);
        const bad = await page.evaluate(async () => {
          const r = await window.axe.run(document, { resultTypes: ['violations'] });
          return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
            .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
        });
        check(bad.length === 0, `axe on ${shot} at ${w} px ${scheme}: ${bad.join('; ')}`);
      }
    }
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.emulateMedia({ colorScheme: 'light' });
  }

  let server;
  let browser;
  psql(`CREATE DATABASE ${db}`);
  try {
    server = await startServer();
    browser = await launch();
    context = browser.context;
    await body({
      base, check, step, psql, pgPort, token, api: callApi, newPage, signIn, heading, settled, audit,
    });
    check(pageErrors.length === 0, `no script error or CSP violation in any page: ${pageErrors.join(' | ')}`);
  } catch (e) {
    failed++;
    console.error(`FAIL ${e.stack || e}`);
    if (context) {
      for (const [i, p] of context.pages().entries()) {
        await p.screenshot({ path: path.join(shotDir, `${name}-failure-${i}.png`), fullPage: true }).catch(() => {});
        console.error(`   page ${i} at ${p.url()}: screenshot ${name}-failure-${i}.png`);
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
  return failed ? 1 : 0;
}
