// The DR page in a real browser against the real server (tests/browser/rooms.mjs), with
// PostgreSQL servers of its own on loopback ports (tests/integration/dr_pg.sh): a primary
// with pgbench data and a streaming standby as production's qdb_read_store, and a third
// server as the dr environment's. A verified base backup is taken through the API first.
//  - a viewer sees the status per component, the scenarios of 7.3 with their procedures,
//    and no control that changes anything;
//  - an operator runs a drill from the page and, once its job finishes, sees the drill's
//    achieved RTO and RPO beside the targets, the figures the API reports;
//  - an admin fails over behind a typed confirmation (the button stays disabled until the
//    database's name is typed), and sees the failover with its RTO in the history;
//  - axe-core and screenshots of every view at 1280 and 390 px, light and dark.
//
//   node dr.mjs <qdb-control binary> <source dir> <screenshot dir>
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { freePort } from './lib.mjs';
import { run, T } from './rooms.mjs';

const sourceDir = process.argv[3];
// run() checks these too, but it exits at once: checked here before any server starts, so
// that a wrong call leaves none behind
if (!process.argv[2] || !sourceDir || !process.env.QDB_TEST_PG_PORT) {
  console.error('usage: QDB_TEST_PG_PORT=N node dr.mjs <qdb-control> <source dir> [screenshot dir]');
  process.exit(2);
}
const root = mkdtempSync('/tmp/qdb-test-drb-');
const sh = (...args) => execFileSync('bash', [path.join(sourceDir, 'tests/integration/dr_pg.sh'), ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
const on = (port, db, sql) => execFileSync('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', db, '-tAc', sql], { encoding: 'utf8' }).trim();
const pp = await freePort();
let ps = await freePort();
while (ps === pp) ps = await freePort();
let pc = await freePort();
while (pc === pp || pc === ps) pc = await freePort();
const backupDir = path.join(root, 'backups');

let rc = 1;
try {
  sh('primary', root, 'a', String(pp));
  on(pp, 'postgres', 'CREATE DATABASE qdb_read_store');
  execFileSync('/usr/lib/postgresql/15/bin/pgbench', ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(pp), '-U', 'postgres', 'qdb_read_store'], { stdio: 'ignore' });
  sh('standby', root, 'b', String(ps), String(pp));
  sh('primary', root, 'c', String(pc));
  on(pc, 'postgres', 'CREATE DATABASE qdb_read_store');
  mkdirSync(backupDir, { mode: 0o700 });

  rc = await run('dr', async (t) => {
    const { check, step, api, newPage, signIn, heading, settled, audit } = t;
    const waitJob = async (id, ms = 180000) => {
      for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => { setTimeout(r, 200); })) {
        const j = (await api('admin', 'GET', `/api/v1/jobs/${id}`)).body;
        if (['succeeded', 'failed', 'cancelled'].includes(j.state)) return j;
      }
      return null;
    };
    const idOf = async (env) => (await api('viewer', 'GET', `/api/v1/databases?environment=${env}`)).body.items.find((d) => d.name === 'qdb_read_store').id;

    step('setup: production/qdb_read_store is the pair, dr/qdb_read_store the third server; a verified backup');
    const src = await idOf('production');
    const dst = await idOf('dr');
    const conn = (port) => ({ host: '127.0.0.1', port, admin_user: 'postgres' });
    let r = await api('admin', 'PATCH', `/api/v1/databases/${src}`, { primary: conn(pp), standby: conn(ps) });
    check(r.status === 200, `the pair: ${r.status} ${JSON.stringify(r.body)}`);
    r = await api('admin', 'PATCH', `/api/v1/databases/${dst}`, { primary: conn(pc) });
    check(r.status === 200, `the DR server: ${r.status}`);
    r = await api('admin', 'POST', `/api/v1/databases/${src}/backups`, { method: 'basebackup' });
    const bj = await waitJob(r.body.id);
    check(bj?.state === 'succeeded', `base backup: ${bj?.state} ${JSON.stringify(bj?.errors)}`);
    r = await api('admin', 'POST', `/api/v1/backups/${bj.result.backup_id}/verify`);
    const vj = await waitJob(r.body.id);
    check(vj?.state === 'succeeded', `verify: ${vj?.state} ${JSON.stringify(vj?.errors)}`);

    step('viewer: status, scenarios with their procedures, no control');
    const viewer = await newPage('viewer');
    await signIn(viewer, 'Val Viewer', 'viewer', '#/dr');
    await heading(viewer, 'Disaster recovery');
    await settled(viewer);
    const scen = viewer.locator('#view .table-wrap').filter({ has: viewer.locator('caption:text-is("DR scenarios (7.3)")') });
    check(await scen.locator('tbody tr').count() === 6, 'six scenarios');
    check((await scen.textContent()).includes('pg_promote(wait => true)'), 'the primary failure procedure is listed');
    check(await viewer.locator('#view [data-mutating]').count() === 0, 'a viewer sees no control');
    await audit(viewer, 'dr-viewer');
    await viewer.close();

    step('operator: a drill from the page; its figures show beside the targets');
    const op = await newPage('operator');
    await signIn(op, 'Otto Operator', 'operator', '#/dr');
    await heading(op, 'Disaster recovery');
    await settled(op);
    await op.locator('[data-drill-db="production/qdb_read_store"]').check();
    await op.locator('select[name="target_environment"]').selectOption('dr');
    await op.locator('[data-action="drill"]').click();
    await op.locator('.message', { hasText: /Drill: job #\d+ (succeeded|failed)/ }).waitFor({ timeout: 240000 });
    check(await op.locator('.message', { hasText: /Drill: job #\d+ succeeded/ }).count() === 1, 'the drill succeeded');
    const drills = (await api('viewer', 'GET', '/api/v1/dr/drills')).body.items;
    const res = drills[0].results[0];
    const latest = op.locator(`[data-latest-drill="${drills[0].id}"]`);
    await latest.waitFor({ timeout: T });
    const rtoText = await latest.locator('[data-bar="RTO"] label').textContent();
    check(/^RTO: .+ of 2 h 0 min$/.test(rtoText) && res.ok && res.rto_seconds > 0, `the drill's RTO against 2 h: ${rtoText}`);
    check(await latest.locator('[data-bar="RTO"] meter').getAttribute('value') === String(res.rto_seconds), 'the bar is the API\'s figure');
    const rpoText = await latest.locator('[data-bar="RPO"]').textContent();
    check(res.rpo_seconds === null ? rpoText.includes('not measured (target 5 min)') : rpoText.includes('of 5 min'), `the RPO against 5 min: ${rpoText}`);
    check(await op.locator('[data-last-drill="read-store"]').count() === 1, 'the status shows the read store\'s last drill');
    check(await op.locator('[data-action^="failover-"]').count() === 0, 'an operator has no failover button');
    check(on(pc, 'qdb_read_store', 'SELECT count(*) FROM pgbench_accounts') === '100000', 'psql: the DR server holds the accounts');
    await settled(op);
    await audit(op, 'dr-drill');
    await op.locator(`a[href="#/dr/${drills[0].id}"]`).first().click();
    await heading(op, `DR drill #${drills[0].id}`);
    await settled(op);
    await audit(op, 'dr-drill-detail');
    await op.close();

    step('admin: failover behind a typed confirmation');
    const adm = await newPage('admin');
    await signIn(adm, 'Ada Admin', 'admin', '#/dr');
    await heading(adm, 'Disaster recovery');
    await settled(adm);
    await adm.locator('[data-action="failover-qdb_read_store"]').click();
    const dlg = adm.locator('dialog[open]');
    await dlg.waitFor({ timeout: T });
    check(await dlg.locator('[data-confirm]').isDisabled(), 'disabled before the name is typed');
    await dlg.locator('[data-typed-name]').fill('qdb_read_stor');
    check(await dlg.locator('[data-confirm]').isDisabled(), 'disabled with a wrong name');
    await audit(adm, 'dr-failover-confirm');
    await dlg.locator('button', { hasText: 'Cancel' }).click();
    check((await api('viewer', 'GET', '/api/v1/dr/failovers')).body.items.length === 0, 'cancelled: nothing started');
    await adm.locator('[data-action="failover-qdb_read_store"]').click();
    await dlg.locator('[data-typed-name]').fill('qdb_read_store');
    await dlg.locator('[data-confirm]').click();
    await adm.locator('.message', { hasText: /Fail over: job #\d+ (succeeded|failed)/ }).waitFor({ timeout: 120000 });
    check(await adm.locator('.message', { hasText: /Fail over: job #\d+ succeeded/ }).count() === 1, 'the failover succeeded');
    const fo = (await api('viewer', 'GET', '/api/v1/dr/failovers')).body.items[0];
    const hist = adm.locator('#view .table-wrap').filter({ has: adm.locator('caption:text-is("Failovers and switchovers")') });
    await hist.locator('tbody tr').first().waitFor({ timeout: T });
    check((await hist.textContent()).includes(`127.0.0.1:${ps}`) && fo.rto_seconds > 0 && fo.rto_seconds < 30, `the failover in the history, RTO ${fo.rto_seconds} s`);
    check(on(ps, 'qdb_read_store', 'SELECT pg_is_in_recovery()') === 'f', 'psql: the standby is a primary now');
    await settled(adm);
    await audit(adm, 'dr-failover-done');
    await adm.close();
  }, { env: { QDB_BACKUP_DIR: backupDir, QDB_BACKUP_STATUS_CRON: 'off' } });
} catch (e) {
  console.error(`FAIL setup: ${e.stack || e}`);
  rc = 1;
} finally {
  try { sh('stopall', root); } catch (e) { console.error(`cleanup: ${e.message}`); }
  rmSync(root, { recursive: true, force: true });
}
process.exit(rc);
