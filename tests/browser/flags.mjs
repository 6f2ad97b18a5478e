// The flags page in a real browser against the real server (tests/browser/rooms.mjs):
//  - a viewer sees the flags of staging and no mutating control;
//  - an operator turns a flag off in staging with its kill switch, sees the new version in
//    the list and in the flag's versions, and rolls it back (a confirmation, a new version,
//    the flag on again, as the API and OFREP evaluation confirm); a write on a stale
//    version shows the server's 412 problem; the operator sees no control for production;
//  - an operator schedules a rollout in staging and sees its steps, cancels it; schedules
//    another and aborts it (the configuration from before comes back);
//  - an admin's production change shows the diff behind a confirmation, and cancelling it
//    changes nothing; an admin promotes development to staging;
//  - an admin creates a flag from the list, creates a segment and edits it;
//  - four eyes (QDB_FLAGS_PROD_APPROVAL=1): a production change made by another admin waits
//    as a change request, shown with its diff; the admin approves it (the flag changes) and
//    rejects another (nothing changes);
//  - stale flags; axe-core (no serious or critical violation) and a screenshot of every
//    page visited at 1280 and 390 px, light and dark.
//
//   node flags.mjs <qdb-control binary> <source dir> <screenshot dir>
import { run, T } from './rooms.mjs';

const KEY = 'qdb.guarantee.digital-signing';

process.exit(await run('flags', async (t) => {
  const { check, step, api, newPage, signIn, heading, settled, audit } = t;
  const flag = async () => (await api('viewer', 'GET', `/api/v1/flags/${KEY}`)).body;
  const evaluate = async () => (await api('operator', 'POST', `/ofrep/v1/evaluate/flags/${KEY}?environment=staging`,
    { context: { targetingKey: 'user-1' } })).body;

  // the seed leaves the flag's staging configuration to the migration: turn it on first, so
  // that the test starts from a known state
  let f = await flag();
  check(f && f.key === KEY, `the seed flag exists: ${JSON.stringify(f)}`);
  const variants = Object.keys(f.variants);
  if (!f.environments.staging.enabled) {
    const r = await api('operator', 'PUT', `/api/v1/flags/${KEY}/environments/staging`,
      { ...f.environments.staging, enabled: true, comment: 'test setup' }, { 'If-Match': `"${f.version}"` });
    check(r.status === 200, `setup: staging on: ${r.status} ${JSON.stringify(r.body)}`);
    f = await flag();
  }
  const startVersion = f.version;
  const servedOn = (await evaluate()).value;

  step('viewer: the flags of staging, no mutating control');
  const viewer = await newPage('viewer');
  await signIn(viewer, 'Val Viewer', 'viewer', '#/flags');
  await heading(viewer, 'Flags');
  await settled(viewer);
  check(await viewer.locator(`tr[data-flag="${KEY}"]`).count() === 1, 'the seed flag is listed');
  check(await viewer.locator('#view tbody tr').count() === 8, `8 seed flags in staging: ${await viewer.locator('#view tbody tr').count()}`);
  check(await viewer.locator('#view [data-mutating]').count() === 0, 'a viewer sees no mutating control in the list');
  await audit(viewer, 'flags-viewer');
  await viewer.locator(`tr[data-flag="${KEY}"] a`).click();
  await heading(viewer, `Flag ${KEY}`);
  await settled(viewer);
  check(await viewer.locator('#view [data-mutating]').count() === 0, 'a viewer sees no mutating control on a flag');
  await audit(viewer, 'flag-viewer');
  await viewer.close();

  step('operator: turn the flag off in staging, see the new version');
  const op = await newPage('operator');
  await signIn(op, 'Otto Operator', 'operator', '#/flags?env=staging');
  await heading(op, 'Flags');
  await settled(op);
  const row = op.locator(`tr[data-flag="${KEY}"]`);
  check(await row.locator('[data-state="enabled"]').count() === 1, 'enabled in staging');
  await row.locator('[data-action="toggle"]').click();
  await op.locator('.message-ok', { hasText: `now version ${startVersion + 1}` }).waitFor({ timeout: T });
  await row.locator('[data-state="disabled"]').waitFor({ timeout: T });
  f = await flag();
  check(f.version === startVersion + 1 && f.environments.staging.enabled === false, `the API agrees: version ${f.version}, enabled ${f.environments.staging.enabled}`);
  const servedOff = await evaluate();
  check(servedOff.reason === 'DISABLED', `evaluation in staging says DISABLED: ${JSON.stringify(servedOff)}`);
  await audit(op, 'flags-operator-toggled');

  step('operator: the flag\'s versions; roll back to the one before');
  await row.locator('a').click();
  await heading(op, `Flag ${KEY}`);
  await settled(op);
  const firstVersion = op.locator('#view table').filter({ has: op.locator('caption', { hasText: 'Versions of' }) }).locator('tbody tr').first();
  check((await firstVersion.locator('td').first().textContent()) === String(startVersion + 1), 'the newest version is the toggle');
  check((await firstVersion.textContent()).includes('kill switch off from the console'), 'with its comment');
  check(/enabled/.test(await firstVersion.locator('[data-diff]').textContent()), 'and its diff names enabled');
  const back = op.locator(`[data-action="rollback"][data-version="${startVersion}"]`);
  check(await back.count() === 1, `a rollback button for version ${startVersion}`);
  await back.click();
  await op.locator('dialog[open]').waitFor({ timeout: T });
  check(/enabled: false → true/.test(await op.locator('dialog[open]').textContent()), 'the rollback confirmation shows the diff');
  await audit(op, 'flag-rollback-confirm');
  await op.locator('dialog[open] [data-confirm]').click();
  await op.locator('.message-ok', { hasText: `Rolled back to version ${startVersion}: now version ${startVersion + 2}` }).waitFor({ timeout: T });
  await op.locator(`[data-env="staging"] [data-state="enabled"]`).waitFor({ timeout: T });
  f = await flag();
  check(f.version === startVersion + 2 && f.environments.staging.enabled === true, `rolled back: version ${f.version}, enabled ${f.environments.staging.enabled}`);
  check(JSON.stringify((await evaluate()).value) === JSON.stringify(servedOn), 'evaluation serves the value from before again');
  await settled(op);
  await audit(op, 'flag-rolled-back');

  step('operator: a change on a stale version shows the server\'s 412');
  const behind = await api('operator', 'PUT', `/api/v1/flags/${KEY}/environments/staging`,
    { ...f.environments.staging, comment: 'behind the page' }, { 'If-Match': `"${f.version}"` });
  check(behind.status === 200, `a change behind the page's back: ${behind.status}`);
  await op.locator('.page-head [data-action="toggle"]').click();
  const problem = op.locator('#view .message-error');
  await problem.waitFor({ timeout: T });
  const ptext = await problem.textContent();
  check(/Precondition|version|stale/i.test(ptext), `the 412 problem is shown: ${ptext}`);
  check((await flag()).version === f.version + 1, 'and nothing changed');

  step('operator: no control for production');
  await op.goto(`${t.base}/#/flags?env=production`);
  await heading(op, 'Flags');
  await settled(op);
  check(await op.locator('#view tbody tr').count() === 8, 'the production flags are shown');
  check(await op.locator('#view [data-action="toggle"]').count() === 0, 'an operator has no kill switch in production');

  step('operator: a rollout in staging with its steps; cancel it; another, abort it');
  await op.goto(`${t.base}/#/flags/${KEY}?env=staging`);
  await heading(op, `Flag ${KEY}`);
  await settled(op);
  const schedule = async (pcts) => {
    await op.locator('summary', { hasText: 'Schedule a rollout in staging' }).click();
    const soon = new Date(Date.now() + 3600e3);
    for (const [i, p] of pcts.entries()) {
      const at = new Date(soon.getTime() + i * 3600e3);
      const pad = (n) => String(n).padStart(2, '0');
      await op.locator(`input[name="at${i}"]`).fill(`${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}T${pad(at.getHours())}:${pad(at.getMinutes())}`);
      await op.locator(`input[name="percentage${i}"]`).fill(String(p));
    }
    await op.locator('button', { hasText: 'Schedule rollout' }).click();
    const ok = op.locator('.message-ok', { hasText: /Rollout \d+ scheduled in staging/ });
    await ok.waitFor({ timeout: T });
    return Number((await ok.textContent()).match(/Rollout (\d+)/)[1]);
  };
  const r1 = await schedule([10, 50]);
  const rolloutRow = (id) => op.locator('#view table').filter({ has: op.locator('caption', { hasText: 'Rollouts of' }) })
    .locator('tbody tr').filter({ has: op.locator('td:first-child', { hasText: new RegExp(`^${id}$`) }) });
  await rolloutRow(r1).locator('[data-state="active"]').waitFor({ timeout: T });
  check(await rolloutRow(r1).locator('.steps li').count() === 2, 'two steps shown');
  check(/10 % at/.test(await rolloutRow(r1).textContent()) && /50 % at/.test(await rolloutRow(r1).textContent()), 'with their percentages');
  await audit(op, 'flag-rollout-active');
  await rolloutRow(r1).locator('[data-action="cancel"]').click();
  await op.locator('dialog[open] [data-confirm]').click();
  await rolloutRow(r1).locator('[data-state="cancelled"]').waitFor({ timeout: T });
  const r2 = await schedule([25]);
  await rolloutRow(r2).locator('[data-state="active"]').waitFor({ timeout: T });
  await rolloutRow(r2).locator('[data-action="abort"]').click();
  await op.locator('dialog[open] [data-confirm]').click();
  await rolloutRow(r2).locator('[data-state="aborted"]').waitFor({ timeout: T });
  const rl = (await api('viewer', 'GET', `/api/v1/flags/${KEY}/rollouts`)).body.items;
  check(rl.find((x) => x.id === r1)?.state === 'cancelled' && rl.find((x) => x.id === r2)?.state === 'aborted',
    `the API agrees on the rollouts: ${JSON.stringify(rl.map((x) => [x.id, x.state]))}`);
  await audit(op, 'flag-rollouts-ended');
  await op.close();

  step('admin: a production change shows its diff behind a confirmation; cancel changes nothing');
  const adm = await newPage('admin');
  await signIn(adm, 'Ada Admin', 'admin', `#/flags?env=production`);
  await heading(adm, 'Flags');
  await settled(adm);
  const before = await flag();
  const prodRow = adm.locator(`tr[data-flag="${KEY}"]`);
  await prodRow.locator('[data-action="toggle"]').click();
  const dlg = adm.locator('dialog[open]');
  await dlg.waitFor({ timeout: T });
  const enabledProd = before.environments.production.enabled;
  check((await dlg.textContent()).includes(`enabled: ${enabledProd} → ${!enabledProd}`), `the confirmation shows the diff: ${await dlg.textContent()}`);
  await audit(adm, 'flags-production-confirm');
  await adm.locator('dialog[open] button', { hasText: 'Cancel' }).click();
  await dlg.waitFor({ state: 'detached', timeout: T });
  check((await flag()).version === before.version, 'cancelled: no new version');

  step('admin: promote development to staging');
  await adm.goto(`${t.base}/#/flags/${KEY}?env=development`);
  await heading(adm, `Flag ${KEY}`);
  await settled(adm);
  await adm.locator('summary', { hasText: 'Promote to another environment' }).click();
  check(await adm.locator('select[name="to"]').inputValue() === 'integration', 'the next environment on the path is proposed');
  await adm.locator('select[name="to"]').selectOption('staging');
  await adm.locator('button', { hasText: 'Promote' }).click();
  await adm.locator('dialog[open]').waitFor({ timeout: T });
  await adm.locator('dialog[open] [data-confirm]').click();
  await adm.locator('.message-ok', { hasText: 'Promoted to staging' }).waitFor({ timeout: T });
  f = await flag();
  check(JSON.stringify(f.environments.staging) === JSON.stringify(f.environments.development),
    `staging now has development's configuration: ${JSON.stringify(f.environments.staging)}`);
  await audit(adm, 'flag-promoted');

  step('admin: create a flag from the list');
  const NEWKEY = 'qdb.console.created-flag';
  await adm.goto(`${t.base}/#/flags?env=staging`);
  await heading(adm, 'Flags');
  await settled(adm);
  await adm.locator('summary', { hasText: 'Create a flag' }).click();
  await adm.locator('input[name="key"]').fill(NEWKEY);
  await adm.locator('input[name="description"]').fill('made by the browser test');
  await audit(adm, 'flag-create-form');
  await adm.locator('button', { hasText: 'Create flag' }).click();
  await heading(adm, `Flag ${NEWKEY}`);
  await settled(adm);
  const made = (await api('viewer', 'GET', `/api/v1/flags/${NEWKEY}`)).body;
  check(made?.key === NEWKEY && made.type === 'boolean' && made.description === 'made by the browser test',
    `the API has the new flag: ${JSON.stringify(made)}`);
  check(await adm.locator('[data-env="staging"] [data-state="disabled"]').count() === 1, 'a new flag is off until configured');

  step('admin: create a segment, then edit it');
  await adm.goto(`${t.base}/#/flags?view=segments`);
  await heading(adm, 'Segments');
  await settled(adm);
  await adm.locator('summary', { hasText: 'Create a segment' }).click();
  const createSeg = adm.locator('form[aria-label="Create a segment"]');
  await createSeg.locator('input[name="name"]').fill('console-team');
  await createSeg.locator('textarea[name="conditions"]').fill('[{"attribute": "email", "operator": "ends_with", "value": "@team.qa"}]');
  await createSeg.locator('textarea[name="included"]').fill('user-1\nuser-2');
  await adm.locator('button', { hasText: 'Create segment' }).click();
  await adm.locator('.message-ok', { hasText: 'Segment console-team created.' }).waitFor({ timeout: T });
  await adm.locator('tr[data-segment="console-team"]').waitFor({ timeout: T });
  check(/email ends with "@team.qa"/.test(await adm.locator('tr[data-segment="console-team"]').textContent()), 'the segment lists its condition');
  await audit(adm, 'segments');
  await adm.locator('details[data-segment="console-team"] summary').click();
  const editSeg = adm.locator('details[data-segment="console-team"] form');
  await editSeg.locator('input[name="description"]').fill('the console team');
  await editSeg.locator('textarea[name="excluded"]').fill('user-3');
  await editSeg.locator('button', { hasText: 'Save segment' }).click();
  await adm.locator('.message-ok', { hasText: 'Segment console-team saved: now version 2.' }).waitFor({ timeout: T });
  const seg = (await api('viewer', 'GET', '/api/v1/segments/console-team')).body;
  check(seg?.description === 'the console team' && JSON.stringify(seg.included) === '["user-1","user-2"]' && JSON.stringify(seg.excluded) === '["user-3"]',
    `the API has the edited segment: ${JSON.stringify(seg)}`);

  step('four eyes: another admin\'s production change, approved from its diff; another rejected');
  const propose = async (comment) => {
    const cur = await flag();
    const r = await api('admin', 'PUT', `/api/v1/flags/${KEY}/environments/production`,
      { ...cur.environments.production, enabled: !cur.environments.production.enabled, comment }, { 'If-Match': `"${cur.version}"` });
    check(r.status === 202 && r.body?.id > 0, `a production change waits as a change request: ${r.status} ${JSON.stringify(r.body)}`);
    return { id: r.body?.id, was: cur.environments.production.enabled, version: cur.version };
  };
  const cr1 = await propose('go live');
  await adm.goto(`${t.base}/#/flags?view=requests`);
  await heading(adm, 'Change requests');
  await settled(adm);
  const crRow = (id) => adm.locator(`tr[data-request="${id}"]`);
  await crRow(cr1.id).waitFor({ timeout: T });
  check((await crRow(cr1.id).locator('[data-diff]').textContent()).includes(`enabled: ${cr1.was} → ${!cr1.was}`),
    `the request shows its diff: ${await crRow(cr1.id).textContent()}`);
  await audit(adm, 'change-requests');
  await crRow(cr1.id).locator('[data-action="approve"]').click();
  await adm.locator('dialog[open]').waitFor({ timeout: T });
  check((await adm.locator('dialog[open]').textContent()).includes(`enabled: ${cr1.was} → ${!cr1.was}`), 'the approval asks with the diff');
  await adm.locator('dialog[open] [data-confirm]').click();
  await adm.locator('.message-ok', { hasText: `Change request ${cr1.id} approved and applied` }).waitFor({ timeout: T });
  f = await flag();
  check(f.environments.production.enabled === !cr1.was && f.version > cr1.version, `approved: production enabled ${f.environments.production.enabled}, version ${f.version}`);
  const cr2 = await propose('not now');
  await adm.goto(`${t.base}/#/flags?view=requests&state=pending`);
  await heading(adm, 'Change requests');
  await settled(adm);
  await crRow(cr2.id).locator('[data-action="reject"]').click();
  await adm.locator('dialog[open] [data-confirm]').click();
  await adm.locator('.message-ok', { hasText: `Change request ${cr2.id} rejected` }).waitFor({ timeout: T });
  const after2 = await flag();
  check(after2.version === cr2.version && after2.environments.production.enabled === cr2.was, `rejected: nothing changed (version ${after2.version})`);
  const listed = (await api('viewer', 'GET', '/api/v1/change-requests')).body.items;
  check(listed.find((x) => x.id === cr1.id)?.state === 'approved' && listed.find((x) => x.id === cr2.id)?.state === 'rejected',
    `the API agrees on the decisions: ${JSON.stringify(listed.map((x) => [x.id, x.state]))}`);
  await adm.goto(`${t.base}/#/flags?view=requests&state=all`);
  await heading(adm, 'Change requests');
  await settled(adm);
  check(await adm.locator('#view [data-action="approve"]').count() === 0, 'nothing left to decide');

  step('stale flags');
  await adm.goto(`${t.base}/#/flags?env=staging&stale=true`);
  await heading(adm, 'Flags');
  await settled(adm);
  const stale = (await api('viewer', 'GET', '/api/v1/flags?environment=staging&stale=true')).body.items;
  const shown = await adm.locator('#view tbody tr').count();
  check(shown === stale.length, `the page lists the API's stale flags: ${shown} vs ${stale.length}`);
  if (!stale.length) check(await adm.locator('.state-empty', { hasText: 'No stale flags in staging' }).count() === 1, 'no stale flag is said');
  check(await adm.locator('#flags-stale').isChecked(), 'the filter shows as set');
  await audit(adm, 'flags-stale');
  await adm.close();

  step('viewer: segments and change requests without a mutating control');
  const v2 = await newPage('viewer');
  await signIn(v2, 'Val Viewer', 'viewer', '#/flags?view=segments');
  await heading(v2, 'Segments');
  await settled(v2);
  check(await v2.locator('tr[data-segment="console-team"]').count() === 1, 'the viewer sees the segment');
  check(await v2.locator('#view [data-mutating]').count() === 0, 'and no mutating control on segments');
  await v2.goto(`${t.base}/#/flags?view=requests&state=all`);
  await heading(v2, 'Change requests');
  await settled(v2);
  check(await v2.locator('#view tbody tr').count() >= 2, 'the viewer sees the change requests');
  check(await v2.locator('#view [data-mutating]').count() === 0, 'and no mutating control on them');
  await v2.close();
}, { env: { QDB_FLAGS_PROD_APPROVAL: '1' } }));
