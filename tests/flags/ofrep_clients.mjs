// The official OpenFeature clients against a running server: @openfeature/server-sdk with
// @openfeature/ofrep-provider evaluates every seed flag (infrastructure design 5.4) with a
// service API token bound to production (its values) and one bound to development (all
// on); @openfeature/ofrep-core's OFREPApi takes the bulk answer and its ETag, and gets 304
// for If-None-Match until a flag changes.
//   node ofrep_clients.mjs <qdb-control binary> <source dir>   (QDB_TEST_PG_PORT from tests/run.sh)
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { openSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';
import { OFREPApi } from '@openfeature/ofrep-core';

const [binary, sourceDir] = process.argv.slice(2);
const pgPort = process.env.QDB_TEST_PG_PORT;
if (!binary || !sourceDir || !pgPort) {
  console.error('usage: QDB_TEST_PG_PORT=N node ofrep_clients.mjs <qdb-control> <source dir>');
  process.exit(2);
}
const logDir = process.env.QDB_TEST_LOG_DIR || os.tmpdir();
let passed = 0, failed = 0;
const check = (cond, msg) => { if (cond) passed++; else { failed++; console.error(`FAIL ${msg}`); } };
const step = (msg) => console.error(`-- ${msg}`);

const SEED = {
  'qdb.financing.enabled': true,
  'qdb.guarantee.enabled': false,
  'qdb.advisory.enabled': false,
  'qdb.guarantee.digital-signing': false,
  'qdb.cross-portal.related-items': false,
  'qdb.notification.push-fcm': false,
  'qdb.migration.wave2-linking': true,
  'qdb.migration.legacy-login-banner': false,
};

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}
const psql = (sql) => execFileSync('psql', ['-h', '127.0.0.1', '-p', String(pgPort), '-U', 'postgres', '-q', '-c', sql], { stdio: 'ignore' });

async function waitFor(url, ms = 30000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try { const r = await fetch(url); if (r.ok) return; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not come up`);
}

const db = `flagsofrep_${process.pid}`;
psql(`CREATE DATABASE ${db}`);
const keyFile = path.join(logDir, `flags-ofrep-key-${process.pid}`);
writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
const env = {
  ...process.env,
  QDB_DATABASE_URL: `postgresql://postgres@127.0.0.1:${pgPort}/${db}`,
  QDB_AUDIT_HMAC_KEY_FILE: keyFile,
  QDB_AUTH_MODE: 'dev',
  QDB_WEB_DIR: path.join(sourceDir, 'web'),
  QDB_SHUTDOWN_TIMEOUT: '5',
};
execFileSync(binary, ['migrate'], { env, stdio: 'ignore' });
const token = (name, e) => execFileSync(binary, ['token', 'create', '--name', name, '--role', 'viewer', '--environment', e],
  { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
const prodToken = token('ofrep-prod', 'production');
const devToken = token('ofrep-dev', 'development');

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const log = openSync(path.join(logDir, `flags-ofrep-${process.pid}.log`), 'w');
const server = spawn(binary, ['serve'], { env: { ...env, QDB_LISTEN: `127.0.0.1:${port}` }, stdio: ['ignore', log, log] });
let status = 1;
try {
  await waitFor(`${base}/readyz`);

  step('server SDK + OFREP provider, production token: the values of the flags file');
  await OpenFeature.setProviderAndWait('prod', new OFREPProvider({ baseUrl: base, headers: [['Authorization', `Bearer ${prodToken}`]] }));
  const prod = OpenFeature.getClient('prod');
  for (const [key, want] of Object.entries(SEED)) {
    const d = await prod.getBooleanDetails(key, !want, { targetingKey: 'user-1' });
    check(d.value === want && !d.errorCode, `production ${key}: ${JSON.stringify(d)}`);
    check(d.reason === (want ? 'STATIC' : 'DISABLED'), `production ${key} reason ${d.reason}`);
  }
  const missing = await prod.getBooleanDetails('qdb.no-such.flag', true, { targetingKey: 'u' });
  check(missing.value === true && missing.errorCode === 'FLAG_NOT_FOUND', `a missing flag: ${JSON.stringify(missing)}`);

  step('development token: every flag on (6.2)');
  await OpenFeature.setProviderAndWait('dev', new OFREPProvider({ baseUrl: base, headers: [['Authorization', `Bearer ${devToken}`]] }));
  const dev = OpenFeature.getClient('dev');
  for (const key of Object.keys(SEED)) {
    const v = await dev.getBooleanValue(key, false, { targetingKey: 'user-1' });
    check(v === true, `development ${key}: ${v}`);
  }

  step('bulk evaluation through OFREPApi: ETag, then 304');
  const api = new OFREPApi(base);
  const auth = { headers: { Authorization: `Bearer ${prodToken}` } };
  const first = await api.postBulkEvaluateFlags({ context: { targetingKey: 'user-1' } }, auth);
  const etag = first.httpResponse.headers.get('etag');
  check(first.httpStatus === 200 && first.value.flags.length === 8, `bulk: ${first.httpStatus} ${first.value?.flags?.length}`);
  check(!!etag, 'an ETag');
  for (const f of first.value.flags) check(f.value === SEED[f.key], `bulk ${f.key}: ${f.value}`);
  const again = await api.postBulkEvaluateFlags({ context: { targetingKey: 'user-1' } },
    { headers: { ...auth.headers, 'If-None-Match': etag } });
  check(again.httpStatus === 304, `If-None-Match gives 304: ${again.httpStatus}`);
  const other = await api.postBulkEvaluateFlags({ context: { targetingKey: 'user-2', portal: 'x' } },
    { headers: { ...auth.headers, 'If-None-Match': etag } });
  check(other.httpStatus === 304, `another context that gets the same answers: the same body, the same ETag (${other.httpStatus})`);

  step('a change makes a new ETag');
  const admin = await (await fetch(`${base}/dev-issuer/token`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ sub: 'ofrep-admin', role: 'admin' }) })).json();
  const put = await fetch(`${base}/api/v1/flags/qdb.advisory.enabled/environments/production`, {
    method: 'PUT',
    headers: { Authorization: `Bearer ${admin.access_token}`, 'Content-Type': 'application/json', 'If-Match': '"1"' },
    body: JSON.stringify({ enabled: true, default_variant: 'on', off_variant: 'off', comment: 'ofrep test' }),
  });
  check(put.status === 200, `PUT production: ${put.status}`);
  const after = await api.postBulkEvaluateFlags({ context: { targetingKey: 'user-1' } },
    { headers: { ...auth.headers, 'If-None-Match': etag } });
  check(after.httpStatus === 200 && after.httpResponse.headers.get('etag') !== etag, `after the change: ${after.httpStatus}`);
  const adv = await prod.getBooleanValue('qdb.advisory.enabled', false, { targetingKey: 'user-1' });
  check(adv === true, `the provider sees the change: ${adv}`);
  status = 0;
} catch (e) {
  failed++;
  console.error(`FAIL ${e.stack || e}`);
} finally {
  await OpenFeature.close();
  const exited = new Promise((resolve) => server.once('exit', resolve));
  server.kill('SIGTERM');
  const code = await exited;
  check(code === 0, `server stops cleanly (${code})`);
  try { psql(`DROP DATABASE ${db}`); } catch { /* best effort */ }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed || status ? 1 : 0);
