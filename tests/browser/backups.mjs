// The backups page in a real browser against the real server (tests/browser/rooms.mjs).
// Two databases of this run on the shared cluster are registered in the inventory: a
// source holding a table, and an empty target.
//  - a viewer sees the RPO/RTO table (all ten components, states coloured and named) and
//    the catalog, but no control that changes anything;
//  - an operator runs a dump of the source from the page and watches its job reach
//    succeeded live (no reload), then the catalog lists the backup completed;
//  - an admin restores it into the target behind a typed confirmation: the button stays
//    disabled until the target's name is typed; the restore job reaches succeeded and
//    psql finds the rows in the target;
//  - axe-core (no serious or critical violation) and screenshots at 1280 and 390 px.
//
//   node backups.mjs <qdb-control binary> <source dir> <screenshot dir>
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run, T } from './rooms.mjs';

const names = [`t_brbk_${process.pid}_src`, `t_brbk_${process.pid}_tgt`];
const pgPort = process.env.QDB_TEST_PG_PORT;
const onCluster = (sql, db = 'postgres') => execFileSync('psql', ['-h', '127.0.0.1', '-p', String(pgPort), '-U', 'postgres', '-d', db, '-tA', '-c', sql], { encoding: 'utf8' }).trim();
const backupDir = mkdtempSync(path.join(os.tmpdir(), 'qdb-browser-backups-'));

for (const n of names) onCluster(`CREATE DATABASE ${n}`);
onCluster('CREATE TABLE kept (v int); INSERT INTO kept SELECT generate_series(1, 42)', names[0]);

const rc = await run('backups', async (t) => {
  const { check, step, api, newPage, signIn, heading, settled, audit } = t;

  step('setup: the source and the target in the inventory');
  const ids = [];
  for (const name of names) {
    const r = await api('admin', 'POST', '/api/v1/databases', {
      environment: 'development', name, storage_initial_gb: 1, storage_max_gb: 1,
      primary: { host: '127.0.0.1', port: Number(pgPort), admin_user: 'postgres' },
    });
    check(r.status === 201, `register ${name}: ${r.status} ${JSON.stringify(r.body)}`);
    ids.push(r.body.id);
  }

  step('viewer: the RPO/RTO table and the catalog, nothing to press');
  const viewer = await newPage('viewer');
  await signIn(viewer, 'Val Viewer', 'viewer', '#/backups');
  await heading(viewer, 'Backups');
  await settled(viewer);
  const status = viewer.locator('#view .table-wrap').filter({ has: viewer.locator('caption:text-is("RPO and RTO of every protected component")') });
  check(await status.locator('tbody tr').count() === 10, `ten components: ${await status.locator('tbody tr').count()}`);
  check(await status.locator('.badge.badge-breach').count() >= 1, 'a component without a backup is in breach, coloured as such');
  check((await status.textContent()).includes('no good backup on record'), 'the reason is said in words');
  check(await viewer.locator('#view [data-mutating]').count() === 0, 'a viewer sees no control that changes anything');
  check(await viewer.getByText('No backups yet.').count() === 1, 'the empty catalog says so');
  await audit(viewer, 'backups-viewer');
  await viewer.close();

  step('operator: run a dump from the page; its job reaches succeeded live');
  const op = await newPage('operator');
  await signIn(op, 'Otto Operator', 'operator', '#/backups');
  await heading(op, 'Backups');
  await settled(op);
  await op.evaluate(() => { window.__noReload = true; });
  await op.locator('form[aria-label="Run a backup"] select[name="database"]').selectOption({ label: `development/${names[0]}` });
  await op.locator('form[aria-label="Run a backup"] select[name="method"]').selectOption('dump');
  await op.locator('[data-action="run"]').click();
  await op.locator('.message-ok', { hasText: `Backup of development/${names[0]} started.` }).waitFor({ timeout: T });
  const job = op.locator('[data-started-jobs] li').first();
  check(/^#\/jobs\/\d+$/.test(await job.locator('a').getAttribute('href')), 'the started job links to its page');
  await job.locator('[data-state="succeeded"]').waitFor({ timeout: 90000 });
  check(await op.evaluate(() => window.__noReload === true), 'followed live, without a reload');
  const row = op.locator('#view tbody tr', { hasText: `development/${names[0]}` }).filter({ has: op.locator('[data-state="completed"]') });
  await row.first().waitFor({ timeout: T });
  check(/dump/.test(await row.first().textContent()), 'the catalog lists the dump, completed');
  check(await op.locator('[data-action="restore"]').count() === 0, 'an operator is not offered a restore');
  await settled(op);
  await audit(op, 'backups-operator');
  await op.close();

  step('admin: restore behind a typed confirmation of the target\'s name');
  const backups = (await api('viewer', 'GET', `/api/v1/backups?database=${ids[0]}`)).body.items;
  check(backups.length === 1, `one backup of the source: ${backups.length}`);
  const adm = await newPage('admin');
  await signIn(adm, 'Ada Admin', 'admin', '#/backups');
  await heading(adm, 'Backups');
  await settled(adm);
  await adm.locator(`[data-action="restore"][data-backup="${backups[0].id}"]`).click();
  const dlg = adm.locator('dialog[open]');
  await dlg.waitFor({ timeout: T });
  await dlg.locator('select[name="target"]').selectOption({ label: `development/${names[1]}` });
  const ok = dlg.locator('[data-confirm]');
  check(await ok.isDisabled(), 'the restore button is disabled before the name is typed');
  await dlg.locator('input[name="confirm_name"]').fill('wrong');
  check(await ok.isDisabled(), 'and with a wrong name');
  await dlg.locator('input[name="confirm_name"]').fill(names[1]);
  check(!(await ok.isDisabled()), 'enabled once the target\'s name is typed');
  await audit(adm, 'backups-restore-confirm');
  await ok.click();
  await adm.locator('.message-ok', { hasText: `Restore of backup #${backups[0].id} into development/${names[1]} started.` }).waitFor({ timeout: T });
  await adm.locator('[data-started-jobs] li').first().locator('[data-state="succeeded"]').waitFor({ timeout: 90000 });
  check(onCluster('SELECT count(*) FROM kept', names[1]) === '42', 'psql: the 42 rows are in the target');
  await adm.close();
}, { env: { QDB_BACKUP_DIR: backupDir, QDB_BACKUP_STATUS_CRON: 'off' } });

for (const n of names) {
  try { onCluster(`DROP DATABASE IF EXISTS ${n} WITH (FORCE)`); } catch (e) { console.error(`cleanup: ${e.message}`); }
}
rmSync(backupDir, { recursive: true, force: true });
process.exit(rc);
