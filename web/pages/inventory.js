// Inventory: the environments with their configuration matrix, and what the platform runs
// (databases, Kafka topics, consumer groups, Debezium connectors); #/inventory/<env> shows
// one environment: its matrix and targets, its databases, consumer group lag on demand, and
// the drift plan, whose apply button (behind a confirmation) starts the provisioning jobs
// and follows them live until they finish.
import * as api from '../api.js';
import {
  h, fill, add, pageHeading, loading, empty, errorBox, table, time, text, badge, dl, messageRegion,
  showMessage, confirm,
} from '../ui.js';

const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);

const MATRIX = [
  ['kafka_retention_ms', 'Kafka retention (ms)'], ['log_retention', 'Log retention'], ['audit_retention', 'Audit retention'],
  ['tls', 'TLS'], ['keycloak_realm', 'Keycloak realm'], ['nas_integration', 'NAS'], ['moci_integration', 'MOCI'],
  ['qfc_integration', 'QFC'], ['feature_flags', 'Feature flags'],
];

function envPath(env, rest = '') {
  return `/api/v1/environments/${encodeURIComponent(env)}${rest}`;
}

function settled(r, render) {
  if (r.status === 'rejected') return r.reason?.name === 'AbortError' ? null : errorBox(r.reason);
  return render(r.value);
}

function targetsList(t) {
  const pg = t?.postgres;
  const k = t?.kafka;
  const kc = t?.kafka_connect;
  return dl([
    ['PostgreSQL', pg ? `${pg.admin_user}@${pg.host}:${pg.port ?? 5432}${pg.sslmode ? ` (sslmode ${pg.sslmode})` : ''}` : 'none'],
    ['PostgreSQL secret', pg?.admin_secret ? h('code', {}, pg.admin_secret) : '—'],
    ['Kafka', k ? `${k.bootstrap_servers} (${k.security_protocol || 'plaintext'}, ${k.broker_count ?? 3} brokers)` : 'none'],
    ['Kafka Connect', kc ? kc.url : 'none'],
  ], { dataset: { targets: '' } });
}

function databaseColumns(ctx, withEnv) {
  return [
    withEnv ? { label: 'Environment', cell: (d) => h('a', { href: ctx.href('inventory', d.environment) }, d.environment) } : null,
    { label: 'Name', cell: (d) => h('code', {}, d.name) },
    { label: 'Engine', cell: (d) => `PostgreSQL ${d.engine_version}` },
    { label: 'Purpose', cell: (d) => text(d.purpose) },
    { label: 'HA', cell: (d) => text(d.ha_strategy) },
    { label: 'Storage', cell: (d) => `${d.storage_initial_gb} GB → ${d.storage_max_gb} GB` },
    { label: 'Owner', cell: (d) => d.owner },
    { label: 'Pool', cell: (d) => `${d.pool_mode}, ${d.pool_size} (clients ≤ ${d.max_client_connections})` },
    { label: 'CDC tables', cell: (d) => text((d.cdc_tables || []).join(', ')) },
  ].filter(Boolean);
}

function topicsTable(items) {
  return items.length ? table('Kafka topics', [
    { label: 'Name', cell: (t) => h('code', {}, t.name) },
    { label: 'Group', cell: (t) => text(t.group) },
    { label: 'Partitions', cell: (t) => String(t.partitions) },
    { label: 'Replication', cell: (t) => `${t.replication_factor} (min in sync ${t.min_insync_replicas})` },
    { label: 'Retention (ms)', cell: (t) => String(t.retention_ms) },
    { label: 'Per environment', cell: (t) => text(Object.entries(t.retention_by_environment || {}).map(([e, v]) => `${e}: ${v}`).join(', ')) },
    { label: 'Compression', cell: (t) => t.compression },
  ], items) : empty('No topics.');
}

function groupsTable(ctx, items, env) {
  const columns = [
    { label: 'Name', cell: (g) => h('code', {}, g.name) },
    { label: 'Topics', cell: (g) => text((g.topics || []).join(', ')) },
    { label: 'Instances', cell: (g) => String(g.instances) },
    { label: 'Processing', cell: (g) => text(g.processing) },
    { label: 'Lag threshold', cell: (g) => String(g.lag_threshold) },
  ];
  if (env) {
    columns.push({
      label: `Lag in ${env}`,
      cell: (g) => {
        const out = h('span', { role: 'status' });
        const b = h('button', { type: 'button', 'aria-label': `Check lag of ${g.name} in ${env}` }, 'Check lag');
        b.addEventListener('click', async () => {
          b.disabled = true;
          fill(out, ' …');
          try {
            const lag = await api.get(`/api/v1/kafka/consumer-groups/${encodeURIComponent(g.name)}/lag`, { environment: env }, { signal: ctx.signal });
            fill(out, ` ${lag.total} messages over ${lag.partitions.length} partitions`, lag.total > lag.threshold ? ' (above the threshold)' : '');
          } catch (e) {
            if (e.name !== 'AbortError') fill(out, errorBox(e));
          } finally {
            b.disabled = false;
          }
        });
        return h('span', {}, b, out);
      },
    });
  }
  return items.length ? table('Consumer groups', columns, items) : empty('No consumer groups.');
}

function connectorsTable(items) {
  return items.length ? table('Debezium connectors', [
    { label: 'Name', cell: (c) => h('code', {}, c.name) },
    { label: 'Class', cell: (c) => text(c.config?.['connector.class']) },
    { label: 'Configuration', cell: (c) => h('details', {}, h('summary', {}, `${Object.keys(c.config || {}).length} settings`), h('pre', { class: 'json' }, JSON.stringify(c.config, null, 2))) },
    { label: 'Updated', cell: (c) => time(c.updated_at) },
  ], items) : empty('No connectors.');
}

// ---- the overview ----

async function renderOverview(ctx) {
  const body = h('div', {}, loading('Loading the inventory…'));
  add(ctx.root, body);
  let envs;
  try {
    envs = (await api.get('/api/v1/environments', undefined, { signal: ctx.signal })).items;
  } catch (e) {
    if (e.name !== 'AbortError') fill(body, errorBox(e));
    return;
  }
  const o = { signal: ctx.signal };
  const [details, dbs, topics, groups, connectors] = await Promise.all([
    Promise.allSettled(envs.map((e) => api.get(envPath(e.name), undefined, o))),
    ...[['/api/v1/databases'], ['/api/v1/kafka/topics'], ['/api/v1/kafka/consumer-groups'], ['/api/v1/kafka/connectors']]
      .map(([p]) => api.get(p, undefined, o).then((v) => ({ status: 'fulfilled', value: v }), (e) => ({ status: 'rejected', reason: e }))),
  ]);
  if (ctx.signal.aborted) return;
  const rows = envs.map((e, i) => ({ env: e, detail: details[i].status === 'fulfilled' ? details[i].value : null, error: details[i].reason }));
  fill(body,
    h('h2', {}, 'Environments'),
    table('The configuration matrix of every environment', [
      { label: 'Environment', cell: (r) => h('a', { href: ctx.href('inventory', r.env.name) }, r.env.display_name || r.env.name) },
      ...MATRIX.map(([k, label]) => ({ label, cell: (r) => (r.detail ? text(r.detail.config?.[k]) : errorBox(r.error)) })),
      { label: 'Targets', cell: (r) => (r.detail ? ['postgres', 'kafka', 'kafka_connect'].filter((t) => r.detail.targets?.[t]).join(', ') || 'none' : '—') },
    ], rows),
    h('h2', {}, 'Databases'),
    settled(dbs, (v) => (v.items.length ? table('Managed databases', databaseColumns(ctx, true), v.items) : empty('No databases.'))),
    h('h2', {}, 'Kafka topics'),
    settled(topics, (v) => topicsTable(v.items)),
    h('h2', {}, 'Consumer groups'),
    settled(groups, (v) => groupsTable(ctx, v.items, null)),
    h('h2', {}, 'Connectors'),
    settled(connectors, (v) => connectorsTable(v.items)));
}

// ---- one environment ----

function planView(ctx, env, plan, onApply) {
  const diffs = plan.differences || [];
  const summary = diffs.length ? `${diffs.length} difference${diffs.length === 1 ? '' : 's'} to fix` : 'No drift: the targets match the inventory.';
  return h('div', { dataset: { plan: diffs.length ? 'drift' : 'clean' } },
    h('p', {}, h('strong', {}, summary), ' (checked ', time(plan.checked_at), ')'),
    (plan.warnings || []).length ? h('ul', { class: 'plain warnings', 'aria-label': 'Warnings' },
      plan.warnings.map((w) => h('li', { class: 'message' }, `Warning: ${w}`))) : null,
    diffs.length ? table(`Drift plan of ${env}`, [
      { label: 'Resource', cell: (d) => d.resource },
      { label: 'Name', cell: (d) => h('code', {}, d.name) },
      { label: 'Differences', cell: (d) => h('ul', { class: 'plain' }, d.differences.map((x) => h('li', {}, h('code', {}, x.difference), ` ${x.detail}`))) },
      { label: 'Fix', cell: (d) => h('code', {}, d.action.kind) },
    ], diffs) : null,
    diffs.length && ctx.can('operator') ? h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'primary', dataset: { mutating: '', action: 'apply' }, onclick: onApply }, `Apply the plan to ${env}`)) : null);
}

/** The jobs an apply started, each with its state, followed through job events. */
function jobsTracker(ctx, ids, onAllDone) {
  const states = new Map(ids.map((id) => [id, 'pending']));
  const list = h('ul', { class: 'plain', dataset: { appliedJobs: '' } });
  const status = h('p', { role: 'status' });
  let done = false;
  const draw = () => {
    fill(list, ids.map((id) => h('li', { dataset: { jobId: String(id) } },
      h('a', { href: ctx.href('jobs', id) }, `job #${id}`), ' ', badge(states.get(id)))));
    const finished = ids.filter((id) => FINISHED.has(states.get(id))).length;
    status.textContent = `${finished} of ${ids.length} jobs finished.`;
    if (finished === ids.length && !done) { done = true; onAllDone(); }
  };
  // A provisioning job only moves forward (pending, running or retrying, finished). An event
  // can arrive after a fetch that already saw a later state, and two fetches can answer out
  // of order: neither may take a job back.
  const rank = (st) => (FINISHED.has(st) ? 2 : st === 'pending' ? 0 : 1);
  const set = (id, st) => { if (st && rank(st) >= rank(states.get(id))) states.set(id, st); };
  const refresh = async (only) => {
    await Promise.all((only || ids).map(async (id) => {
      try {
        set(id, (await api.get(`/api/v1/jobs/${id}`, undefined, { signal: ctx.signal })).state);
      } catch { /* the next event or poll tries again */ }
    }));
    if (!ctx.signal.aborted) draw();
  };
  const stop = api.onJobEvents((ev) => {
    if (ev.type === 'job' && states.has(ev.id)) { set(ev.id, ev.state); draw(); }
    else if (ev.type === 'resync' || ev.type === 'open') refresh();
  });
  // a safety net should the stream be down for a while
  const poll = setInterval(() => { if (!done) refresh(ids.filter((id) => !FINISHED.has(states.get(id)))); }, 15000);
  ctx.onCleanup(() => { stop(); clearInterval(poll); });
  draw();
  refresh();
  return h('section', { class: 'panel applied', 'aria-label': 'Jobs started by the apply' }, h('h3', {}, 'Jobs started'), status, list);
}

async function renderEnv(ctx) {
  const env = ctx.id;
  const msg = messageRegion();
  const body = h('div', {}, loading(`Loading ${env}…`));
  const planBox = h('div', {}, loading('Checking the targets for drift…'));
  const applied = h('div', {});
  add(ctx.root, h('p', {}, h('a', { href: ctx.href('inventory') }, '← Inventory')), msg, body);
  const o = { signal: ctx.signal };
  const wrap = (p) => p.then((v) => ({ status: 'fulfilled', value: v }), (e) => ({ status: 'rejected', reason: e }));
  const [detail, dbs, groups] = await Promise.all([
    wrap(api.get(envPath(env), undefined, o)),
    wrap(api.get('/api/v1/databases', { environment: env }, o)),
    wrap(api.get('/api/v1/kafka/consumer-groups', undefined, o)),
  ]);
  if (ctx.signal.aborted) return;
  if (detail.status === 'rejected') { fill(body, errorBox(detail.reason)); return; }
  const d = detail.value;

  const loadPlan = async () => {
    fill(planBox, loading('Checking the targets for drift…'));
    try {
      const plan = await api.get(envPath(env, '/plan'), undefined, o);
      fill(planBox, planView(ctx, env, plan, () => apply(plan)));
    } catch (e) {
      if (e.name !== 'AbortError') fill(planBox, errorBox(e));
    }
  };
  const apply = async (plan) => {
    const ok = await confirm({
      title: `Apply the drift plan to ${env}?`,
      body: h('span', {}, `This starts ${plan.differences.length} provisioning job${plan.differences.length === 1 ? '' : 's'} against the targets of ${env}: `,
        plan.differences.map((x, i) => [i ? ', ' : '', `${x.action.kind} ${x.name}`]), '.'),
      confirmLabel: 'Apply',
    });
    if (!ok) return;
    try {
      const r = await api.mutate('POST', envPath(env, '/apply'), {});
      const ids = r.data?.jobs || [];
      showMessage(msg, ids.length ? `Applied: ${ids.length} job${ids.length === 1 ? '' : 's'} started.` : 'Nothing to apply: the plan was empty.');
      fill(applied, ids.length ? jobsTracker(ctx, ids, loadPlan) : null);
      if (!ids.length) await loadPlan();
    } catch (err) {
      showMessage(msg, err);
    }
  };

  fill(body,
    dl([['Name', d.name], ['Purpose', d.purpose], ['Cluster', d.cluster], ['Data', d.data], ['Access', d.access],
      ['Updated', time(d.updated_at)]]),
    h('h2', {}, 'Configuration matrix'),
    dl(MATRIX.map(([k, label]) => [label, text(d.config?.[k])]), { dataset: { matrix: '' } }),
    h('h2', {}, 'Targets'),
    targetsList(d.targets),
    h('h2', {}, 'Drift plan'),
    h('div', { class: 'actions' }, h('button', { type: 'button', onclick: loadPlan }, 'Check again')),
    planBox, applied,
    h('h2', {}, `Databases in ${env}`),
    settled(dbs, (v) => (v.items.length ? table(`Databases in ${env}`, databaseColumns(ctx, false), v.items) : empty('No databases.'))),
    h('h2', {}, 'Consumer groups'),
    settled(groups, (v) => groupsTable(ctx, v.items, env)));
  await loadPlan();
}

export default {
  async render(ctx) {
    add(ctx.root, pageHeading(ctx.id ? `Inventory: ${ctx.id}` : 'Inventory'));
    if (ctx.id) await renderEnv(ctx);
    else await renderOverview(ctx);
  },
};
