// Disaster recovery: per component the targets of 7.2 beside what the last drill, failover
// and switchover achieved (a bar per figure: achieved against target), the drills with
// their per-database RTO and RPO, a drill started from here (operator), failover and
// switchover of a managed pair behind a typed confirmation of the database's name (admin),
// and the scenarios of 7.3 with their procedures. Jobs started here are followed live.
import * as api from '../api.js';
import {
  h, fill, add, pageHeading, loading, empty, errorBox, table, time, text, badge, duration, field,
  select, messageRegion, showMessage,
} from '../ui.js';

const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);
let seq = 0;

function seconds(v) {
  if (v === null || v === undefined) return '—';
  if (v === 0) return '0 s';
  return v < 10 ? `${Number(v).toFixed(2)} s` : duration(v);
}

/** Achieved against target as a <meter> (over the target shows as such), with its words. */
function bar(label, achieved, target) {
  if (achieved === null || achieved === undefined) {
    return h('div', { class: 'dr-bar', dataset: { bar: label } }, h('span', {}, `${label}: not measured (target ${seconds(target)})`));
  }
  const id = `drbar-${++seq}`;
  const over = target !== null && target !== undefined && achieved > target;
  const max = Math.max(achieved, target || 0) || 1;
  return h('div', { class: 'dr-bar', dataset: { bar: label, over: over ? 'yes' : 'no' } },
    h('label', { for: id }, `${label}: ${seconds(achieved)} of ${seconds(target)}${over ? ' (missed)' : ''}`),
    h('meter', { id, min: '0', max: String(max), low: String(target ?? max), high: String(target ?? max), optimum: '0', value: String(achieved) }));
}

function wrap(p) {
  return p.then((v) => ({ status: 'fulfilled', value: v }), (e) => ({ status: 'rejected', reason: e }));
}

function settled(r, render) {
  if (r.status === 'rejected') return r.reason?.name === 'AbortError' ? null : errorBox(r.reason);
  return render(r.value);
}

/** Wait for job id to finish: job events, with a 15 s poll should the stream be down. */
function followJob(ctx, id, onDone) {
  let done = false;
  const finish = (state) => { if (!done && FINISHED.has(state)) { done = true; stop(); clearInterval(poll); onDone(state); } };
  const check = async () => {
    try { finish((await api.get(`/api/v1/jobs/${id}`, undefined, { signal: ctx.signal })).state); } catch { /* next event or poll */ }
  };
  const stop = api.onJobEvents((ev) => {
    if (ev.type === 'job' && ev.id === id) finish(ev.state);
    else if (ev.type === 'resync' || ev.type === 'open') check();
  });
  const poll = setInterval(check, 15000);
  ctx.onCleanup(() => { stop(); clearInterval(poll); });
  check();
}

/** A confirmation that asks for the database's name to be typed before it enables. */
function typedConfirm({ title, body, name, confirmLabel }) {
  return new Promise((resolve) => {
    const heading = h('h2', { id: `drdlg-${++seq}` }, title);
    const input = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', dataset: { typedName: '' } });
    const ok = h('button', { type: 'button', class: 'danger', disabled: true, dataset: { confirm: '' } }, confirmLabel);
    const cancel = h('button', { type: 'button' }, 'Cancel');
    input.addEventListener('input', () => { ok.disabled = input.value !== name; });
    const dlg = h('dialog', { 'aria-labelledby': heading.id, class: 'confirm' },
      heading, h('p', {}, body), field(`Type ${name} to confirm`, input), h('div', { class: 'actions' }, cancel, ok));
    const opener = document.activeElement;
    const done = (v) => {
      dlg.close();
      dlg.remove();
      if (opener && opener.isConnected) opener.focus();
      resolve(v);
    };
    ok.addEventListener('click', () => done(input.value === name));
    cancel.addEventListener('click', () => done(false));
    dlg.addEventListener('cancel', (e) => { e.preventDefault(); done(false); });
    document.body.append(dlg);
    dlg.showModal();
    input.focus();
  });
}

function statusTable(st) {
  const rows = st.components || [];
  return rows.length ? table('DR status per component', [
    { label: 'Component', cell: (c) => h('span', {}, h('strong', {}, c.title || c.component), ' ', h('code', {}, text(c.database))) },
    { label: 'State', cell: (c) => h('span', {}, badge(c.state), (c.reasons || []).length ? h('ul', { class: 'plain' }, c.reasons.map((r) => h('li', {}, r.reason))) : null) },
    {
      label: 'Last drill',
      cell: (c) => (c.last_drill ? h('div', { dataset: { lastDrill: c.component } },
        bar('RTO', c.last_drill.rto_seconds, c.rto_seconds), bar('RPO', c.last_drill.rpo_seconds, c.rpo_seconds),
        h('small', {}, 'drill ', h('a', { href: `#/dr/${c.last_drill.drill_id}` }, `#${c.last_drill.drill_id}`), ', ', time(c.last_drill.finished_at)))
        : `none (targets: RTO ${seconds(c.rto_seconds)}, RPO ${seconds(c.rpo_seconds)})`),
    },
    { label: 'Last failover', cell: (c) => (c.last_failover ? h('div', {}, bar('RTO', c.last_failover.rto_seconds, c.failover_target_rto_seconds), h('small', {}, time(c.last_failover.finished_at))) : '—') },
    { label: 'Last switchover', cell: (c) => (c.last_switchover ? h('div', {}, bar('RTO', c.last_switchover.rto_seconds, c.failover_target_rto_seconds), h('small', {}, time(c.last_switchover.finished_at))) : '—') },
  ], rows) : empty('No targets.');
}

function drillResults(d) {
  const rows = d.results || [];
  return rows.length ? table(`Results of drill ${d.id}`, [
    { label: 'Database', cell: (r) => h('code', {}, `${r.environment}/${r.database}`) },
    { label: 'Component', cell: (r) => text(r.component) },
    { label: 'Outcome', cell: (r) => h('span', {}, badge(r.ok ? 'succeeded' : 'failed'), r.error ? h('span', {}, ` ${r.error}`) : null) },
    { label: 'RTO', cell: (r) => bar('RTO', r.rto_seconds, r.target_rto_seconds) },
    { label: 'RPO', cell: (r) => bar('RPO', r.rpo_seconds, r.target_rpo_seconds) },
    { label: 'Backup', cell: (r) => (r.backup_id ? `#${r.backup_id}, restored in ${seconds(r.restore_seconds)}` : '—') },
  ], rows) : empty('No database restored yet.');
}

function drillsTable(items) {
  return items.length ? table('Drills', [
    { label: 'Drill', cell: (d) => h('a', { href: `#/dr/${d.id}` }, `#${d.id}`) },
    { label: 'State', cell: (d) => badge(d.state) },
    { label: 'Into', cell: (d) => d.target_environment },
    { label: 'Requested', cell: (d) => h('span', {}, time(d.requested_at), d.scheduled ? ' (scheduled)' : ` by ${d.requested_by}`) },
    { label: 'Databases', cell: (d) => `${(d.results || []).filter((r) => r.ok).length} of ${d.databases.length} restored` },
  ], items) : empty('No drill yet.');
}

function failoversTable(items) {
  return items.length ? table('Failovers and switchovers', [
    { label: 'Kind', cell: (f) => f.kind },
    { label: 'Database', cell: (f) => h('code', {}, `${f.environment}/${f.database}`) },
    { label: 'State', cell: (f) => h('span', {}, badge(f.state), f.error ? h('span', {}, ` ${f.error}`) : null) },
    { label: 'RTO', cell: (f) => seconds(f.rto_seconds) },
    { label: 'Data loss', cell: (f) => (f.lost_bytes === null ? 'unknown (old primary unreachable)' : `${f.lost_bytes} bytes, ${seconds(f.lost_seconds)}`) },
    { label: 'New primary', cell: (f) => `${f.old_standby.host}:${f.old_standby.port}` },
    { label: 'Rejoin', cell: (f) => text(f.rejoin_method) },
    { label: 'Requested', cell: (f) => time(f.requested_at) },
  ], items) : empty('No failover or switchover yet.');
}

function scenariosTable(sc) {
  return table('DR scenarios (7.3)', [
    { label: 'Scenario', cell: (s) => h('strong', {}, s.title) },
    { label: 'Impact', cell: (s) => s.impact },
    { label: 'Target RTO', cell: (s) => (s.target_rto_min_seconds ? `${duration(s.target_rto_min_seconds)} – ${duration(s.target_rto_seconds)}` : `< ${duration(s.target_rto_seconds)}`) },
    { label: 'Components', cell: (s) => s.components.join(', ') },
    { label: 'Procedure', cell: (s) => h('ol', {}, s.steps.map((p) => h('li', {}, h('span', { class: 'badge' }, p.action), ` ${p.description}`, p.route ? h('code', {}, ` ${p.route}`) : null))) },
  ], sc.items);
}

async function renderDrill(ctx) {
  add(ctx.root, h('p', {}, h('a', { href: ctx.href('dr') }, '← Disaster recovery')));
  const body = h('div', {}, loading('Loading the drill…'));
  add(ctx.root, body);
  try {
    const d = await api.get(`/api/v1/dr/drills/${encodeURIComponent(ctx.id)}`, undefined, { signal: ctx.signal });
    fill(body, h('p', {}, 'State ', badge(d.state), ` into ${d.target_environment}, requested `, time(d.requested_at),
      d.finished_at ? h('span', {}, ', finished ', time(d.finished_at)) : null, d.error ? ` — ${d.error}` : ''), drillResults(d));
  } catch (e) {
    if (e.name !== 'AbortError') fill(body, errorBox(e));
  }
}

async function renderMain(ctx) {
  const msg = messageRegion();
  const statusBox = h('div', {}, loading('Loading the status…'));
  const drillsBox = h('div', {}, loading('Loading the drills…'));
  const drillForm = h('div', {});
  const pairsBox = h('div', {});
  const historyBox = h('div', {}, loading('Loading the failovers…'));
  const scenariosBox = h('div', {}, loading('Loading the scenarios…'));
  add(ctx.root, msg,
    h('h2', {}, 'Status'), statusBox,
    h('h2', {}, 'Drills'), drillForm, drillsBox,
    h('h2', {}, 'Failover and switchover'), pairsBox, historyBox,
    h('h2', {}, 'Scenarios'), scenariosBox);
  const o = { signal: ctx.signal };

  const loadFigures = async () => {
    const [st, drills, fos] = await Promise.all([
      wrap(api.get('/api/v1/dr/status', undefined, o)),
      wrap(api.get('/api/v1/dr/drills', { limit: 20 }, o)),
      wrap(api.get('/api/v1/dr/failovers', { limit: 20 }, o)),
    ]);
    if (ctx.signal.aborted) return;
    fill(statusBox, settled(st, statusTable));
    fill(drillsBox, settled(drills, (v) => [drillsTable(v.items), v.items[0] ? h('div', { dataset: { latestDrill: String(v.items[0].id) } }, h('h3', {}, `Drill #${v.items[0].id}`), drillResults(v.items[0])) : null]));
    fill(historyBox, settled(fos, (v) => failoversTable(v.items)));
  };

  const started = (what, r, onDone) => {
    const id = r.data?.id;
    showMessage(msg, `${what} started: job #${id}.`);
    followJob(ctx, id, async (state) => {
      showMessage(msg, `${what}: job #${id} ${state}.`);
      await loadFigures();
      if (onDone) onDone(state);
    });
  };

  const [dbs, envs, sc] = await Promise.all([
    wrap(api.get('/api/v1/databases', undefined, o)),
    wrap(api.get('/api/v1/environments', undefined, o)),
    wrap(api.get('/api/v1/dr/scenarios', undefined, o)),
    loadFigures(),
  ]);
  if (ctx.signal.aborted) return;
  fill(scenariosBox, settled(sc, scenariosTable));

  const withServer = dbs.status === 'fulfilled' ? dbs.value.items.filter((d) => d.primary && d.primary.host) : [];
  if (ctx.can('operator') && dbs.status === 'fulfilled' && envs.status === 'fulfilled') {
    const boxes = withServer.map((d) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', value: String(d.id), dataset: { drillDb: `${d.environment}/${d.name}` } }), ` ${d.environment}/${d.name}`));
    const target = select('target_environment', envs.value.items.map((e) => [e.name, e.display_name || e.name]), 'dr');
    const run = h('button', { type: 'button', class: 'primary', dataset: { mutating: '', action: 'drill' } }, 'Run drill');
    run.addEventListener('click', async () => {
      const ids = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => Number(i.value));
      run.disabled = true;
      try {
        const r = await api.mutate('POST', '/api/v1/dr/drills', { databases: ids, target_environment: target.value });
        started('Drill', r, () => { run.disabled = false; });
      } catch (err) {
        showMessage(msg, err);
        run.disabled = false;
      }
    });
    fill(drillForm, h('fieldset', { class: 'panel' }, h('legend', {}, 'Run a drill: restore the newest verified backups into another environment'),
      boxes.length ? h('div', { class: 'checks' }, boxes) : empty('No database with a server in the inventory.'),
      field('Into environment', target), h('div', { class: 'actions' }, run)));
  }

  const pairs = withServer.filter((d) => d.standby && d.standby.host);
  const pairColumns = [
    { label: 'Database', cell: (d) => h('code', {}, `${d.environment}/${d.name}`) },
    { label: 'Primary', cell: (d) => `${d.primary.host}:${d.primary.port ?? 5432}` },
    { label: 'Standby', cell: (d) => `${d.standby.host}:${d.standby.port ?? 5432}` },
  ];
  if (ctx.can('admin')) {
    pairColumns.push({
      label: 'Actions',
      cell: (d) => {
        const act = (kind, label) => {
          const b = h('button', { type: 'button', class: 'danger', dataset: { mutating: '', action: `${kind}-${d.name}` } }, label);
          b.addEventListener('click', async () => {
            const ok = await typedConfirm({
              title: `${label} ${d.environment}/${d.name}?`,
              body: kind === 'failover'
                ? `The standby ${d.standby.host}:${d.standby.port ?? 5432} is promoted now; the primary ${d.primary.host}:${d.primary.port ?? 5432} is fenced read-only where it still answers.`
                : `The primary is fenced, the standby catches up and is promoted, and the old primary rejoins as its standby.`,
              name: d.name,
              confirmLabel: label,
            });
            if (!ok) return;
            try {
              const r = await api.mutate('POST', `/api/v1/databases/${d.id}/${kind}`, kind === 'switchover' ? {} : undefined);
              started(label, r);
            } catch (err) {
              showMessage(msg, err);
            }
          });
          return b;
        };
        return h('div', { class: 'actions' }, act('failover', 'Fail over'), act('switchover', 'Switch over'));
      },
    });
  }
  fill(pairsBox, dbs.status === 'rejected' ? errorBox(dbs.reason)
    : pairs.length ? table('Managed pairs (primary and standby)', pairColumns, pairs) : empty('No database with a standby.'));
}

export default {
  async render(ctx) {
    add(ctx.root, pageHeading(ctx.id ? `DR drill #${ctx.id}` : 'Disaster recovery'));
    if (ctx.id) await renderDrill(ctx);
    else await renderMain(ctx);
  },
};
