// The inventory page in a real browser against the real server (tests/browser/rooms.mjs).
// The provisioning target is real: the development environment's PostgreSQL target is the
// test's own cluster, and its databases are two of this run's own (the seeded ones are taken
// out of this server's inventory first, so that nothing with a fixed name is created on the
// shared cluster), dropped again at the end. Kafka and Kafka Connect have no target here,
// so the plan holds databases only.
//  - a viewer sees the environments with their matrix, the databases, topics, consumer
//    groups and connectors, and the plan, but no apply button;
//  - an operator sees the drift (two databases missing), applies the plan behind a
//    confirmation (cancel first: nothing starts), watches the jobs it started reach
//    succeeded (each a link to #/jobs/<id>), and the plan checked again is clean; psql on
//    the target finds both databases owned by their roles;
//  - axe-core (no serious or critical violation) and a screenshot of every page visited at
//    1280 and 390 px, light and dark.
//
//   node inventory.mjs <qdb-control binary> <source dir> <screenshot dir>
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { run, T } from './rooms.mjs';

const names = [`t_brinv_${process.pid}_a`, `t_brinv_${process.pid}_b`];
const pgPort = process.env.QDB_TEST_PG_PORT;
const onTarget = (sql) => execFileSync('psql', ['-h', '127.0.0.1', '-p', String(pgPort), '-U', 'postgres', '-tA', '-c', sql], { encoding: 'utf8' }).trim();

const rc = await run('inventory', async (t) => {
  const { check, step, api, newPage, signIn, heading, settled, audit } = t;

  step('setup: the seed\'s topics, consumer groups and connectors; the development target is this cluster; two databases of this run');
  const seed = JSON.parse(readFileSync(path.join(process.argv[3], 'deploy/inventory/seed.json'), 'utf8'));
  const imp = await api('admin', 'POST', '/api/v1/inventory/import', seed);
  check(imp.status === 200 || imp.status === 201, `import the seed: ${imp.status} ${JSON.stringify(imp.body)}`);
  const seeded = (await api('viewer', 'GET', '/api/v1/databases?environment=development')).body.items;
  for (const d of seeded) {
    const r = await api('admin', 'DELETE', `/api/v1/databases/${d.id}`);
    check(r.status === 204, `remove seeded ${d.name} from this server's inventory: ${r.status}`);
  }
  const patch = await api('admin', 'PATCH', '/api/v1/environments/development',
    { targets: { postgres: { host: '127.0.0.1', port: Number(pgPort), admin_user: 'postgres' } } });
  check(patch.status === 200, `development's postgres target: ${patch.status} ${JSON.stringify(patch.body)}`);
  for (const [i, name] of names.entries()) {
    const r = await api('admin', 'POST', '/api/v1/databases', {
      environment: 'development', name, storage_initial_gb: 1, storage_max_gb: 2 + i,
      purpose: 'browser test <b>not bold</b>', settings: { work_mem: '16MB' },
    });
    check(r.status === 201, `create ${name}: ${r.status} ${JSON.stringify(r.body)}`);
  }

  step('viewer: the inventory overview and development, no apply button');
  const viewer = await newPage('viewer');
  await signIn(viewer, 'Val Viewer', 'viewer', '#/inventory');
  await heading(viewer, 'Inventory');
  await settled(viewer);
  const matrix = viewer.locator('#view table').first();
  check(await matrix.locator('tbody tr').count() === 5, 'five environments in the matrix');
  check(/qdb-one/.test(await matrix.textContent()), 'the matrix shows the Keycloak realm');
  check(await viewer.locator('#view code', { hasText: names[0] }).count() === 1, 'our database is listed');
  check(await viewer.locator('#view b').count() === 0 && (await viewer.locator('#view').textContent()).includes('<b>not bold</b>'),
    'a value holding HTML shows as text');
  for (const [caption, kind] of [['Kafka topics', 'topics'], ['Consumer groups', 'consumer_groups'], ['Debezium connectors', 'connectors']]) {
    const want = (seed[kind] || []).length;
    const rows = await viewer.locator('#view .table-wrap').filter({ has: viewer.locator(`caption:text-is("${caption}")`) }).locator('tbody tr').count();
    check(want > 0 && rows === want, `${caption}: ${rows} rows, ${want} in the seed`);
  }
  await audit(viewer, 'inventory-viewer');
  await viewer.locator('#view a', { hasText: 'Development' }).first().click();
  await heading(viewer, 'Inventory: development');
  await settled(viewer);
  await viewer.locator('[data-plan="drift"]').waitFor({ timeout: T });
  check(await viewer.locator('#view [data-mutating]').count() === 0, 'a viewer sees no apply button');
  check((await viewer.locator('[data-targets]').textContent()).includes(`postgres@127.0.0.1:${pgPort}`), 'the target is shown');
  await audit(viewer, 'inventory-env-viewer');
  await viewer.close();

  step('operator: the plan lists both databases missing');
  const op = await newPage('operator');
  await signIn(op, 'Otto Operator', 'operator', '#/inventory/development');
  await heading(op, 'Inventory: development');
  await settled(op);
  const plan = op.locator('[data-plan="drift"]');
  await plan.waitFor({ timeout: T });
  const planRows = plan.locator('tbody tr');
  check(await planRows.count() === 2, `two differences: ${await planRows.count()}`);
  for (const name of names) {
    check(/database_missing/.test(await planRows.filter({ hasText: name }).textContent()), `${name}: database_missing`);
  }
  check((await plan.textContent()).includes('inventory.provision_database'), 'the fix is named');

  step('operator: apply asks first; cancel starts nothing');
  const jobsBefore = (await api('admin', 'GET', '/api/v1/jobs?kind=inventory.provision_database')).body.items.length;
  await op.locator('[data-action="apply"]').click();
  await op.locator('dialog[open]').waitFor({ timeout: T });
  check((await op.locator('dialog[open]').textContent()).includes(names[1]), 'the confirmation names what it provisions');
  await audit(op, 'inventory-apply-confirm');
  await op.locator('dialog[open] button', { hasText: 'Cancel' }).click();
  await op.locator('dialog').waitFor({ state: 'detached', timeout: T });
  check((await api('admin', 'GET', '/api/v1/jobs?kind=inventory.provision_database')).body.items.length === jobsBefore, 'cancelled: no job');

  step('operator: apply; the jobs finish live; the plan is clean afterwards');
  await op.evaluate(() => { window.__noReload = true; });
  await op.locator('[data-action="apply"]').click();
  await op.locator('dialog[open] [data-confirm]').click();
  await op.locator('.message-ok', { hasText: 'Applied: 2 jobs started.' }).waitFor({ timeout: T });
  const jobs = op.locator('[data-applied-jobs] li');
  check(await jobs.count() === 2, 'two jobs listed');
  for (const li of await jobs.all()) {
    check(/^#\/jobs\/\d+$/.test(await li.locator('a').getAttribute('href')), 'each links to its job');
    await li.locator('[data-state="succeeded"]').waitFor({ timeout: 60000 });
  }
  await op.locator('[data-plan="clean"]').waitFor({ timeout: T });
  check((await op.locator('[data-plan="clean"]').textContent()).includes('No drift'), 'the plan checked again is clean');
  check(await op.evaluate(() => window.__noReload === true), 'no reload while the jobs ran');
  await settled(op);
  await audit(op, 'inventory-applied');
  for (const name of names) {
    check(onTarget(`SELECT count(*) FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = '${name}' AND r.rolname = '${name}'`) === '1',
      `psql: ${name} exists, owned by its role`);
  }
  const plan2 = await api('viewer', 'GET', '/api/v1/environments/development/plan');
  check(plan2.status === 200 && plan2.body.differences.length === 0, `the API's plan is empty too: ${JSON.stringify(plan2.body.differences)}`);
  step('operator: consumer group lag on demand; without a Kafka target the server\'s problem is shown');
  const lagButton = op.getByRole('button', { name: `Check lag of ${seed.consumer_groups[0].name} in development`, exact: true });
  const lagCell = lagButton.locator('xpath=..');
  await lagButton.click();
  await lagCell.locator('[role="alert"], :text("messages over")').first().waitFor({ timeout: T });
  const lagText = await lagCell.textContent();
  const lagApi = await api('viewer', 'GET', `/api/v1/kafka/consumer-groups/${encodeURIComponent(seed.consumer_groups[0].name)}/lag?environment=development`);
  check(lagApi.status === 200 ? lagText.includes(`${lagApi.body.total} messages`) : lagText.includes(lagApi.body.title),
    `the lag cell shows what the API says (${lagApi.status} ${lagApi.body.title || lagApi.body.total}): ${lagText}`);
  await op.locator('[data-applied-jobs] a').first().click();
  await heading(op, 'Job #');
  await op.locator('[data-field="state"] [data-state="succeeded"]').waitFor({ timeout: T });
  await op.close();
});

// the databases and roles this run made on the shared cluster
for (const name of names) {
  try { onTarget(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`); } catch (e) { console.error(`cleanup: ${e.message}`); }
  try { onTarget(`DROP ROLE IF EXISTS ${name}`); } catch (e) { console.error(`cleanup: ${e.message}`); }
}
process.exit(rc);
