// Flags: the flags of one environment (#/flags?env=staging, stale ones with &stale=true) with
// their kill switch; #/flags/<key>?env=staging shows one flag: variants, that environment's
// rules, split and prerequisites, an editor, versions with rollback, promotion from one
// environment to another and scheduled rollouts (create, cancel, abort). A production
// change needs the admin role and If-Match, and is shown as a diff behind a confirmation.
// #/flags?view=requests lists the change requests (four eyes on production) with the diff
// each would make, to approve or reject; #/flags?view=segments lists the segments, to create
// and edit; the list has a form to create a flag.
import * as api from '../api.js';
import {
  h, fill, add, pageHeading, loading, empty, errorBox, table, time, text, badge, dl, field, select,
  messageRegion, showMessage, confirm, localToIso,
} from '../ui.js';

const PRODUCTION = 'production';
const CONFIG_KEYS = ['enabled', 'default_variant', 'off_variant', 'rules', 'prerequisites', 'split'];

/** May this role change the flag's configuration in env? (the server still enforces). */
function canWrite(ctx, env) {
  return ctx.can(env === PRODUCTION ? 'admin' : 'operator');
}

/** If-Match with the flag's version: the server refuses a stale one (412). */
function ifMatch(flag) {
  return { headers: { 'If-Match': `"${flag.version}"` } };
}

function fpath(key, rest = '') {
  return `/api/v1/flags/${encodeURIComponent(key)}${rest}`;
}

/** The configuration of a flag in env, with every member present. */
function configOf(flag, env) {
  const c = (flag.environments || {})[env] || {};
  return {
    enabled: Boolean(c.enabled), default_variant: c.default_variant ?? null, off_variant: c.off_variant ?? null,
    rules: c.rules || [], prerequisites: c.prerequisites || [], split: c.split ?? null,
  };
}

/** The members that differ between two configurations, as "member: from → to" lines. */
function configDiff(before, after) {
  const lines = [];
  for (const k of CONFIG_KEYS) {
    const a = JSON.stringify(before[k] ?? null);
    const b = JSON.stringify(after[k] ?? null);
    if (a !== b) lines.push(`${k}: ${a} → ${b}`);
  }
  return lines;
}

function diffNode(lines) {
  return h('span', { class: 'diff', dataset: { diff: '' } },
    lines.length ? lines.map((l) => h('span', { class: 'diff-line' }, l)) : h('span', { class: 'diff-line' }, 'No change.'));
}

/** Ask before a change: always for production (with the diff), never elsewhere. */
async function confirmChange(env, title, lines, confirmLabel) {
  if (env !== PRODUCTION) return true;
  return confirm({ title, body: h('span', {}, h('span', { class: 'diff-intro' }, 'This changes production:'), diffNode(lines)), confirmLabel });
}

/** What a write answered: a new version, or a change request awaiting another admin. */
function writeOutcome(r, what) {
  if (r.status === 202) return `${what}: change request #${r.data?.id} waits for another admin's approval.`;
  return `${what}: now version ${r.data?.version}.`;
}

function splitText(split) {
  if (!split || !split.length) return '—';
  return split.map((s) => `${s.variant} ${s.percentage} %`).join(', ');
}

function conditionText(c) {
  if (c.operator === 'in_segment' || c.operator === 'not_in_segment') return `${c.operator.replace(/_/g, ' ')} ${text(c.value)}`;
  return `${c.attribute ?? '?'} ${c.operator.replace(/_/g, ' ')} ${JSON.stringify(c.value)}`;
}

function envSelect(envs, value, name = 'environment') {
  return select(name, envs.map((e) => [e.name, e.display_name || e.name]), value);
}

// ---- the list ----

async function renderList(ctx, envs, env) {
  const stale = ctx.query.get('stale') === 'true';
  const tag = ctx.query.get('tag') || '';
  const envSel = envSelect(envs, env);
  const staleBox = h('input', { type: 'checkbox', name: 'stale', checked: stale, id: 'flags-stale' });
  const tagInput = h('input', { type: 'text', name: 'tag', value: tag, maxlength: '100' });
  const form = h('form', { class: 'filters', 'aria-label': 'Choose the environment and filter the flags' },
    field('Environment', envSel), field('Tag', tagInput),
    h('div', { class: 'field check' }, staleBox, h('label', { for: 'flags-stale' }, 'Stale only (removal candidates)')),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Show')));
  const go = () => ctx.go(ctx.href('flags', null, { env: envSel.value, tag: tagInput.value.trim(), stale: staleBox.checked ? 'true' : '' }));
  form.addEventListener('submit', (e) => { e.preventDefault(); go(); });
  envSel.addEventListener('change', go);
  const msg = messageRegion();
  const body = h('div', {}, loading('Loading flags…'));
  add(ctx.root, viewsNav(ctx, 'flags', env), form, ctx.can('operator') ? createFlagForm(ctx, env) : null, msg, body);
  await showList(ctx, env, { stale, tag }, body, msg);
}

/** The page's views: the flags of an environment, the segments, the change requests. */
function viewsNav(ctx, current, env) {
  const views = [['flags', 'Flags', { env }], ['segments', 'Segments', { view: 'segments' }], ['requests', 'Change requests', { view: 'requests' }]];
  return h('nav', { class: 'views', 'aria-label': 'Flags, segments and change requests' },
    h('ul', { class: 'plain views' }, views.map(([v, label, q]) => h('li', {},
      h('a', { href: ctx.href('flags', null, q), 'aria-current': v === current ? 'page' : null }, label)))));
}

const VARIANTS_BY_TYPE = {
  boolean: { on: true, off: false },
  string: { a: 'a', b: 'b' },
  number: { low: 0, high: 1 },
  object: { empty: {}, set: { key: 'value' } },
};

/** A new flag: its key, type and variants (disabled everywhere until configured). */
function createFlagForm(ctx, env) {
  const key = h('input', { type: 'text', name: 'key', required: true, maxlength: '200', pattern: '[a-z0-9]([a-z0-9\\-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9\\-]*[a-z0-9])?)*', spellcheck: 'false' });
  const type = select('type', Object.keys(VARIANTS_BY_TYPE), 'boolean');
  const variants = h('textarea', { name: 'variants', rows: '3', spellcheck: 'false' }, JSON.stringify(VARIANTS_BY_TYPE.boolean));
  type.addEventListener('change', () => { variants.value = JSON.stringify(VARIANTS_BY_TYPE[type.value]); });
  const def = h('input', { type: 'text', name: 'new_default_variant', maxlength: '64' });
  const off = h('input', { type: 'text', name: 'new_off_variant', maxlength: '64' });
  const description = h('input', { type: 'text', name: 'description', maxlength: '2000' });
  const owner = h('input', { type: 'text', name: 'owner', maxlength: '200' });
  const tags = h('input', { type: 'text', name: 'tags', maxlength: '1000' });
  const msg = messageRegion();
  const go = h('button', { type: 'submit', class: 'primary', dataset: { mutating: '' } }, 'Create flag');
  const form = h('form', { class: 'inline-form', 'aria-label': 'Create a flag' },
    field('Key', key, 'dotted lowercase, e.g. qdb.guarantee.new-feature'), field('Type', type),
    field('Variants (JSON: name → value of the type)', variants),
    h('div', { class: 'cols' }, field('Default variant (empty: the first)', def), field('Off variant (empty: the last)', off)),
    field('Description', description), field('Owner', owner), field('Tags (comma-separated)', tags),
    h('div', { class: 'actions' }, go), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = parseJson(variants, 'Variants', msg); if (!v.ok) return;
    const body = { key: key.value.trim(), type: type.value, variants: v.value };
    if (def.value.trim()) body.default_variant = def.value.trim();
    if (off.value.trim()) body.off_variant = off.value.trim();
    if (description.value.trim()) body.description = description.value.trim();
    if (owner.value.trim()) body.owner = owner.value.trim();
    const t = tags.value.split(',').map((x) => x.trim()).filter(Boolean);
    if (t.length) body.tags = t;
    go.disabled = true;
    try {
      await api.mutate('POST', '/api/v1/flags', body);
      ctx.go(ctx.href('flags', body.key, { env }));
    } catch (err) {
      showMessage(msg, err);
    } finally {
      go.disabled = false;
    }
  });
  return h('details', { class: 'panel' }, h('summary', {}, 'Create a flag'), form);
}

// ---- segments ----

function lines(textarea) {
  return textarea.value.split('\n').map((x) => x.trim()).filter(Boolean);
}

/** The fields of a segment (create and edit share them). */
function segmentFields(seg, idp) {
  const description = h('input', { type: 'text', name: 'description', maxlength: '2000', value: seg?.description || '' });
  const conditions = h('textarea', { name: 'conditions', rows: '4', spellcheck: 'false' }, JSON.stringify(seg?.conditions || [], null, 2));
  const included = h('textarea', { name: 'included', rows: '3', spellcheck: 'false' }, (seg?.included || []).join('\n'));
  const excluded = h('textarea', { name: 'excluded', rows: '3', spellcheck: 'false' }, (seg?.excluded || []).join('\n'));
  return {
    description, conditions, included, excluded,
    nodes: [field('Description', description),
      field('Conditions (JSON; all must hold)', conditions, '[{"attribute": "email", "operator": "ends_with", "value": "@qdb.qa"}]'),
      field('Included targeting keys (one a line; always in)', included), field('Excluded targeting keys (one a line; never in)', excluded)],
    id: idp,
  };
}

function segmentBody(f, msg) {
  const c = parseJson(f.conditions, 'Conditions', msg);
  if (!c.ok) return null;
  return { description: f.description.value.trim(), conditions: c.value || [], included: lines(f.included), excluded: lines(f.excluded) };
}

function segmentEditor(ctx, seg, reload) {
  const f = segmentFields(seg);
  const msg = messageRegion();
  const save = h('button', { type: 'submit', class: 'primary', dataset: { mutating: '' } }, 'Save segment');
  const form = h('form', { class: 'inline-form', 'aria-label': `Edit segment ${seg.name}` }, f.nodes, h('div', { class: 'actions' }, save), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = segmentBody(f, msg); if (!body) return;
    save.disabled = true;
    try {
      const r = await api.mutate('PUT', `/api/v1/segments/${encodeURIComponent(seg.name)}`, body, { headers: { 'If-Match': `"${seg.version}"` } });
      await reload(`Segment ${seg.name} saved: now version ${r.data?.version}.`);
    } catch (err) {
      showMessage(msg, err);
    } finally {
      save.disabled = false;
    }
  });
  return h('details', { class: 'panel', dataset: { segment: seg.name } }, h('summary', {}, `Edit ${seg.name}`), form);
}

function createSegmentForm(ctx, reload) {
  const name = h('input', { type: 'text', name: 'name', required: true, maxlength: '64', pattern: '[A-Za-z0-9_.\\-]{1,64}' });
  const f = segmentFields(null);
  const msg = messageRegion();
  const go = h('button', { type: 'submit', class: 'primary', dataset: { mutating: '' } }, 'Create segment');
  const form = h('form', { class: 'inline-form', 'aria-label': 'Create a segment' }, field('Name', name), f.nodes, h('div', { class: 'actions' }, go), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = segmentBody(f, msg); if (!body) return;
    go.disabled = true;
    try {
      await api.mutate('POST', '/api/v1/segments', { name: name.value.trim(), ...body });
      await reload(`Segment ${name.value.trim()} created.`);
    } catch (err) {
      showMessage(msg, err);
    } finally {
      go.disabled = false;
    }
  });
  return h('details', { class: 'panel' }, h('summary', {}, 'Create a segment'), form);
}

async function renderSegments(ctx, note) {
  const msg = messageRegion();
  const body = h('div', {}, loading('Loading segments…'));
  fill(ctx.root, pageHeading('Segments'), viewsNav(ctx, 'segments', null), msg, body);
  if (note) showMessage(msg, note);
  const reload = (m) => renderSegments(ctx, m);
  let items;
  try {
    items = (await api.get('/api/v1/segments', undefined, { signal: ctx.signal })).items;
  } catch (e) {
    if (e.name !== 'AbortError') fill(body, errorBox(e));
    return;
  }
  const columns = [
    { label: 'Name', cell: (s) => h('code', {}, s.name) },
    { label: 'Description', cell: (s) => text(s.description) },
    { label: 'Conditions', cell: (s) => (s.conditions || []).map(conditionText).join(' and ') || '—' },
    { label: 'Included', cell: (s) => String((s.included || []).length) },
    { label: 'Excluded', cell: (s) => String((s.excluded || []).length) },
    { label: 'Version', cell: (s) => String(s.version) },
    { label: 'Updated', cell: (s) => time(s.updated_at) },
  ];
  const op = ctx.can('operator');
  fill(body,
    items.length ? table('Segments', columns, items) : empty('No segments yet.'),
    op ? items.map((s) => segmentEditor(ctx, s, reload)) : null,
    op ? createSegmentForm(ctx, reload) : null);
  body.querySelectorAll('tbody tr').forEach((tr, i) => { tr.dataset.segment = items[i].name; });
}

// ---- change requests ----

const CR_STATES = ['pending', 'approved', 'rejected'];

async function renderRequests(ctx, note) {
  const state = CR_STATES.includes(ctx.query.get('state')) ? ctx.query.get('state') : (ctx.query.get('state') === 'all' ? '' : 'pending');
  const stateSel = select('state', [['pending', 'Pending'], ['approved', 'Approved'], ['rejected', 'Rejected'], ['all', 'All']], state || 'all');
  const form = h('form', { class: 'filters', 'aria-label': 'Filter the change requests' }, field('State', stateSel));
  stateSel.addEventListener('change', () => ctx.go(ctx.href('flags', null, { view: 'requests', state: stateSel.value })));
  form.addEventListener('submit', (e) => e.preventDefault());
  const msg = messageRegion();
  const body = h('div', {}, loading('Loading change requests…'));
  fill(ctx.root, pageHeading('Change requests'), viewsNav(ctx, 'requests', null),
    h('p', { class: 'muted' }, 'With four eyes on production (QDB_FLAGS_PROD_APPROVAL=1) a production change waits here until an admin other than its author approves it.'),
    form, msg, body);
  if (note) showMessage(msg, note);
  const reload = (m) => renderRequests(ctx, m);
  let items;
  try {
    items = (await api.get('/api/v1/change-requests', { state: state || undefined }, { signal: ctx.signal })).items;
  } catch (e) {
    if (e.name !== 'AbortError') fill(body, errorBox(e));
    return;
  }
  // the diff of a pending request is against the flag as it is now: one read per flag shown
  const keys = [...new Set(items.filter((r) => r.state === 'pending').map((r) => r.flag))];
  const flags = {};
  const got = await Promise.allSettled(keys.map((k) => api.get(fpath(k), undefined, { signal: ctx.signal })));
  if (ctx.signal.aborted) return;
  got.forEach((g, i) => { if (g.status === 'fulfilled') flags[keys[i]] = g.value; });
  const diffOf = (r) => (flags[r.flag] ? configDiff(configOf(flags[r.flag], r.environment), { ...configOf({ environments: { [r.environment]: r.config || {} } }, r.environment) }) : null);
  const columns = [
    { label: 'Id', cell: (r) => String(r.id) },
    { label: 'Flag', cell: (r) => h('a', { href: ctx.href('flags', r.flag, { env: r.environment }) }, r.flag) },
    { label: 'Environment', cell: (r) => r.environment },
    { label: 'Action', cell: (r) => text(r.action) },
    { label: 'State', cell: (r) => badge(r.state) },
    { label: 'Requested', cell: (r) => h('span', {}, text(r.requested_by), ' ', time(r.requested_at)) },
    { label: 'Comment', cell: (r) => text(r.comment) },
    {
      label: 'Change',
      cell: (r) => {
        if (r.state !== 'pending') return h('span', {}, r.decided_by ? [`${r.state} by ${r.decided_by} `, time(r.decided_at)] : '—', r.decision_comment ? ` (${r.decision_comment})` : null);
        const d = diffOf(r);
        return d ? diffNode(d) : h('span', { class: 'muted' }, 'the flag could not be read');
      },
    },
  ];
  if (ctx.can('admin')) {
    const decide = (r, verb, label) => h('button', {
      type: 'button', class: verb === 'approve' ? 'primary' : '', dataset: { mutating: '', action: verb, request: String(r.id) },
      'aria-label': `${label} change request ${r.id}`,
      onclick: async (e) => {
        const d = diffOf(r) || [];
        const ok = await confirm({
          title: `${label} change request ${r.id} (${r.flag} in ${r.environment})?`,
          body: h('span', {}, h('span', { class: 'diff-intro' }, verb === 'approve' ? `${r.environment} gets this change now:` : 'The change is dropped:'), diffNode(d)),
          confirmLabel: label, danger: verb === 'approve' && r.environment === PRODUCTION,
        });
        if (!ok) return;
        e.target.disabled = true;
        try {
          const res = await api.mutate('POST', `/api/v1/change-requests/${r.id}/${verb}`, { comment: `${verb === 'approve' ? 'approved' : 'rejected'} from the console` });
          await reload(`Change request ${r.id} ${verb === 'approve' ? 'approved and applied' : 'rejected'}${res.data?.version ? `: ${r.flag} is now version ${res.data.version}` : ''}.`);
        } catch (err) {
          showMessage(msg, err);
          e.target.disabled = false;
        }
      },
    }, label);
    columns.push({ label: 'Decide', cell: (r) => (r.state !== 'pending' ? '—' : h('span', { class: 'actions' }, decide(r, 'approve', 'Approve'), decide(r, 'reject', 'Reject'))) });
  }
  fill(body, items.length ? table('Change requests', columns, items) : empty(state ? `No ${state} change requests.` : 'No change requests.'));
  body.querySelectorAll('tbody tr').forEach((tr, i) => { tr.dataset.request = String(items[i].id); });
}

async function showList(ctx, env, { stale, tag }, body, msg) {
  let items;
  try {
    items = (await api.get('/api/v1/flags', { environment: env, tag: tag || undefined, stale: stale ? 'true' : undefined },
      { signal: ctx.signal })).items;
  } catch (e) {
    if (e.name !== 'AbortError') fill(body, errorBox(e));
    return;
  }
  const columns = [
    { label: 'Key', cell: (f) => h('a', { href: ctx.href('flags', f.key, { env }) }, f.key) },
    { label: 'Type', cell: (f) => f.type },
    { label: `In ${env}`, cell: (f) => badge(configOf(f, env).enabled ? 'enabled' : 'disabled') },
    { label: 'Serves', cell: (f) => { const c = configOf(f, env); return text(c.enabled ? c.default_variant : c.off_variant); } },
    { label: 'Rules', cell: (f) => String(configOf(f, env).rules.length) },
    { label: 'Split', cell: (f) => splitText(configOf(f, env).split) },
    { label: 'Tags', cell: (f) => text((f.tags || []).join(', ')) },
    { label: 'Version', cell: (f) => String(f.version) },
    { label: 'Updated', cell: (f) => time(f.updated_at) },
  ];
  if (canWrite(ctx, env)) {
    columns.push({
      label: 'Kill switch',
      cell: (f) => {
        const on = configOf(f, env).enabled;
        return h('button', {
          type: 'button', dataset: { mutating: '', action: 'toggle' }, 'aria-label': `${on ? 'Turn off' : 'Turn on'} ${f.key} in ${env}`,
          onclick: async (e) => {
            e.target.disabled = true;
            try {
              const out = await toggle(f, env);
              if (out) { showMessage(msg, out); await showList(ctx, env, { stale, tag }, body, msg); }
            } catch (err) {
              showMessage(msg, err);
            } finally {
              e.target.disabled = false;
            }
          },
        }, on ? 'Turn off' : 'Turn on');
      },
    });
  }
  fill(body, items.length === 0 ? empty(stale ? `No stale flags in ${env}.` : `No flags in ${env}.`)
    : table(`Flags in ${env}`, columns, items.map((f) => f)));
  body.querySelectorAll('tbody tr').forEach((tr, i) => { tr.dataset.flag = items[i].key; });
}

/** Flip the kill switch; a confirmation with the diff first in production. Resolves to the
 * message to show, or null when the viewer cancelled. */
async function toggle(flag, env) {
  const before = configOf(flag, env);
  const after = { ...before, enabled: !before.enabled };
  if (!(await confirmChange(env, `${after.enabled ? 'Turn on' : 'Turn off'} ${flag.key} in production?`, configDiff(before, after),
    after.enabled ? 'Turn on' : 'Turn off'))) return null;
  const r = await api.mutate('PUT', fpath(flag.key, `/environments/${encodeURIComponent(env)}`),
    { ...after, comment: `kill switch ${after.enabled ? 'on' : 'off'} from the console` }, ifMatch(flag));
  return writeOutcome(r, `${flag.key} turned ${after.enabled ? 'on' : 'off'} in ${env}`);
}

// ---- one flag ----

function parseJson(textarea, what, msg) {
  try {
    return { ok: true, value: JSON.parse(textarea.value.trim() || 'null') };
  } catch (e) {
    showMessage(msg, { title: `${what} is not JSON`, detail: e.message });
    return { ok: false };
  }
}

function editor(ctx, flag, env, reload) {
  const c = configOf(flag, env);
  const variants = Object.keys(flag.variants || {});
  const enabled = h('input', { type: 'checkbox', name: 'enabled', checked: c.enabled, id: 'flag-enabled' });
  const def = select('default_variant', variants, c.default_variant);
  const off = select('off_variant', variants, c.off_variant);
  const rules = h('textarea', { name: 'rules', rows: '6', spellcheck: 'false' }, JSON.stringify(c.rules, null, 2));
  const prereq = h('textarea', { name: 'prerequisites', rows: '3', spellcheck: 'false' }, JSON.stringify(c.prerequisites, null, 2));
  const split = h('textarea', { name: 'split', rows: '3', spellcheck: 'false' }, c.split ? JSON.stringify(c.split, null, 2) : '');
  const comment = h('input', { type: 'text', name: 'comment', maxlength: '2000' });
  const msg = messageRegion();
  const save = h('button', { type: 'submit', class: 'primary', dataset: { mutating: '' } }, env === PRODUCTION ? 'Review and save' : 'Save');
  const form = h('form', { class: 'inline-form', 'aria-label': `Configure ${flag.key} in ${env}` },
    h('div', { class: 'field check' }, enabled, h('label', { for: 'flag-enabled' }, 'Enabled (the kill switch)')),
    field('Default variant', def), field('Off variant', off),
    field('Rules (JSON)', rules, 'In order: [{"name", "conditions": [{"attribute", "operator", "value"}], "variant" or "split"}]'),
    field('Prerequisites (JSON)', prereq, '[{"flag": "other.flag", "variant": "on"}]'),
    field('Split (JSON; empty for none)', split, '[{"variant": "on", "percentage": 10}, {"variant": "off", "percentage": 90}]'),
    field('Comment (kept with the version)', comment),
    h('div', { class: 'actions' }, save), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const r = parseJson(rules, 'Rules', msg); if (!r.ok) return;
    const p = parseJson(prereq, 'Prerequisites', msg); if (!p.ok) return;
    const s = parseJson(split, 'Split', msg); if (!s.ok) return;
    const after = { enabled: enabled.checked, default_variant: def.value, off_variant: off.value, rules: r.value || [], prerequisites: p.value || [], split: s.value };
    const lines = configDiff(c, after);
    if (!(await confirmChange(env, `Change ${flag.key} in production?`, lines, 'Save'))) return;
    save.disabled = true;
    try {
      const res = await api.mutate('PUT', fpath(flag.key, `/environments/${encodeURIComponent(env)}`),
        { ...after, ...(comment.value.trim() ? { comment: comment.value.trim() } : {}) }, ifMatch(flag));
      await reload(writeOutcome(res, 'Saved'));
    } catch (err) {
      showMessage(msg, err);
    } finally {
      save.disabled = false;
    }
  });
  return h('details', { class: 'panel' }, h('summary', {}, `Edit the configuration in ${env}`), form);
}

function promoteForm(ctx, flag, envs, env, reload) {
  const path = envs.filter((e) => e.promotion_order !== null).sort((a, b) => a.promotion_order - b.promotion_order);
  const i = path.findIndex((e) => e.name === env);
  const from = envSelect(envs, env, 'from');
  const to = envSelect(envs, i >= 0 && i + 1 < path.length ? path[i + 1].name : env, 'to');
  const comment = h('input', { type: 'text', name: 'comment', maxlength: '2000' });
  const msg = messageRegion();
  const go = h('button', { type: 'submit', dataset: { mutating: '' } }, 'Promote');
  const form = h('form', { class: 'inline-form', 'aria-label': `Promote ${flag.key}` },
    field('From', from), field('To', to), field('Comment', comment), h('div', { class: 'actions' }, go), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (from.value === to.value) { showMessage(msg, { title: 'Choose two environments', detail: 'from and to are the same' }); return; }
    const lines = configDiff(configOf(flag, to.value), configOf(flag, from.value));
    const ok = await confirm({
      title: `Promote ${flag.key} from ${from.value} to ${to.value}?`,
      body: h('span', {}, h('span', { class: 'diff-intro' }, `${to.value} gets the configuration of ${from.value}:`), diffNode(lines)),
      confirmLabel: 'Promote', danger: to.value === PRODUCTION,
    });
    if (!ok) return;
    go.disabled = true;
    try {
      const r = await api.mutate('POST', fpath(flag.key, '/promote'),
        { from: from.value, to: to.value, ...(comment.value.trim() ? { comment: comment.value.trim() } : {}) }, ifMatch(flag));
      await reload(writeOutcome(r, `Promoted to ${to.value}`));
    } catch (err) {
      showMessage(msg, err);
    } finally {
      go.disabled = false;
    }
  });
  return h('details', { class: 'panel' }, h('summary', {}, 'Promote to another environment'), form);
}

function versionsSection(ctx, flag, env, versions, reload, msg) {
  const columns = [
    { label: 'Version', cell: (v) => String(v.version) },
    { label: 'When', cell: (v) => time(v.created_at) },
    { label: 'Who', cell: (v) => text(v.actor) },
    { label: 'Action', cell: (v) => text(v.action) },
    { label: 'Environment', cell: (v) => text(v.environment) },
    { label: 'Comment', cell: (v) => text(v.comment) },
    { label: 'Change', cell: (v) => diffNode((v.diff || []).map((d) => `${d.path}: ${JSON.stringify(d.from ?? null)} → ${JSON.stringify(d.to ?? null)}`)) },
  ];
  if (canWrite(ctx, env)) {
    columns.push({
      label: 'Rollback',
      cell: (v) => (v.version === flag.version ? h('span', { class: 'muted' }, 'current') : h('button', {
        type: 'button', dataset: { mutating: '', action: 'rollback', version: String(v.version) },
        'aria-label': `Roll back to ${v.version} in ${env}`,
        onclick: async (e) => {
          const ok = await confirm({
            title: `Roll ${flag.key} in ${env} back to version ${v.version}?`,
            body: h('span', {}, h('span', { class: 'diff-intro' }, `${env} gets its configuration of version ${v.version}:`),
              diffNode(configDiff(configOf(flag, env), configOf(v.doc || {}, env)))),
            confirmLabel: 'Roll back',
          });
          if (!ok) return;
          e.target.disabled = true;
          try {
            const r = await api.mutate('POST', fpath(flag.key, '/rollback'), { environment: env, version: v.version }, ifMatch(flag));
            await reload(writeOutcome(r, `Rolled back to version ${v.version}`));
          } catch (err) {
            showMessage(msg, err);
            e.target.disabled = false;
          }
        },
      }, `Roll back to ${v.version}`)),
    });
  }
  return versions.length ? table(`Versions of ${flag.key} in ${env}`, columns, versions) : empty('No versions.');
}

function rolloutsSection(ctx, flag, env, rollouts, reload, msg) {
  const columns = [
    { label: 'Id', cell: (r) => String(r.id) },
    { label: 'Environment', cell: (r) => r.environment },
    { label: 'Variant', cell: (r) => r.variant },
    { label: 'State', cell: (r) => badge(r.state) },
    {
      label: 'Steps',
      cell: (r) => h('ol', { class: 'plain steps' }, (r.steps || []).map((s) => h('li', {},
        `${s.percentage} % at `, time(s.at),
        s.applied_at ? [' — applied ', time(s.applied_at), s.version ? ` (version ${s.version})` : ''] : ' — to come',
        s.job_id ? [' ', h('a', { href: ctx.href('jobs', s.job_id) }, `job #${s.job_id}`)] : null))),
    },
    { label: 'By', cell: (r) => text(r.created_by) },
    { label: 'Comment', cell: (r) => text(r.comment) },
  ];
  if (canWrite(ctx, env)) {
    const act = (r, verb, label, body) => h('button', {
      type: 'button', dataset: { mutating: '', action: verb }, 'aria-label': `${label} rollout ${r.id}`,
      onclick: async (e) => {
        if (!(await confirm({ title: `${label} rollout ${r.id} of ${flag.key}?`, body, confirmLabel: label }))) return;
        e.target.disabled = true;
        try {
          await api.mutate('POST', fpath(flag.key, `/rollouts/${r.id}/${verb}`), {});
          await reload(`Rollout ${r.id}: ${verb === 'cancel' ? 'cancelled' : 'aborted'}.`);
        } catch (err) {
          showMessage(msg, err);
          e.target.disabled = false;
        }
      },
    }, label);
    columns.push({
      label: 'Actions',
      cell: (r) => (r.state !== 'active' || !canWrite(ctx, r.environment) ? '—' : h('span', { class: 'actions' },
        act(r, 'cancel', 'Cancel', 'The steps to come do nothing; the configuration stays as it is now.'),
        act(r, 'abort', 'Abort', `The configuration of ${r.environment} goes back to version ${r.base_version ?? '?'} (from before the rollout).`))),
    });
  }
  return rollouts.length ? table(`Rollouts of ${flag.key}`, columns, rollouts) : empty('No rollouts.');
}

function rolloutForm(ctx, flag, env, reload) {
  const variants = Object.keys(flag.variants || {});
  const variant = select('variant', variants, variants.includes('on') ? 'on' : variants[0]);
  const rows = [0, 1, 2].map((i) => ({
    at: h('input', { type: 'datetime-local', name: `at${i}` }),
    pct: h('input', { type: 'number', name: `percentage${i}`, min: '0', max: '100', step: '0.001' }),
  }));
  const comment = h('input', { type: 'text', name: 'comment', maxlength: '2000' });
  const msg = messageRegion();
  const go = h('button', { type: 'submit', dataset: { mutating: '' } }, 'Schedule rollout');
  const form = h('form', { class: 'inline-form', 'aria-label': `Schedule a rollout of ${flag.key} in ${env}` },
    field('Variant rolled out', variant),
    rows.map((r, i) => h('div', { class: 'cols' }, field(`Step ${i + 1}: at (your time)`, r.at), field(`Step ${i + 1}: percentage`, r.pct))),
    field('Comment', comment), h('div', { class: 'actions' }, go), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const steps = rows.filter((r) => r.at.value && r.pct.value !== '').map((r) => ({ at: localToIso(r.at.value), percentage: Number(r.pct.value) }));
    if (!steps.length) { showMessage(msg, { title: 'No step', detail: 'give at least one step: a time and a percentage' }); return; }
    go.disabled = true;
    try {
      const r = await api.mutate('POST', fpath(flag.key, '/rollouts'),
        { environment: env, variant: variant.value, steps, ...(comment.value.trim() ? { comment: comment.value.trim() } : {}) });
      await reload(`Rollout ${r.data?.id} scheduled in ${env}.`);
    } catch (err) {
      showMessage(msg, err);
    } finally {
      go.disabled = false;
    }
  });
  return h('details', { class: 'panel' }, h('summary', {}, `Schedule a rollout in ${env}`), form);
}

async function renderFlag(ctx, envs, env, note) {
  const key = ctx.id;
  const msg = messageRegion();
  const body = h('div', {}, loading('Loading the flag…'));
  fill(ctx.root, pageHeading(`Flag ${key}`), h('p', {}, h('a', { href: ctx.href('flags', null, { env }) }, `← Flags in ${env}`)), msg, body);
  if (note) showMessage(msg, note);
  const reload = (m) => renderFlag(ctx, envs, env, m);
  const [flagR, versR, rollR] = await Promise.allSettled([
    api.get(fpath(key), undefined, { signal: ctx.signal }),
    api.get(fpath(key, '/versions'), { environment: env, limit: 50 }, { signal: ctx.signal }),
    api.get(fpath(key, '/rollouts'), undefined, { signal: ctx.signal }),
  ]);
  if (ctx.signal.aborted) return;
  if (flagR.status === 'rejected') { fill(body, errorBox(flagR.reason)); return; }
  const flag = flagR.value;
  const c = configOf(flag, env);
  const envSel = envSelect(envs, env);
  envSel.addEventListener('change', () => ctx.go(ctx.href('flags', key, { env: envSel.value })));
  const variantRows = Object.entries(flag.variants || {}).map(([name, value]) => ({ name, value }));
  const killSwitch = canWrite(ctx, env) ? h('button', {
    type: 'button', class: c.enabled ? 'danger' : 'primary', dataset: { mutating: '', action: 'toggle' },
    onclick: async (e) => {
      e.target.disabled = true;
      try {
        const out = await toggle(flag, env);
        if (out) await reload(out);
      } catch (err) {
        showMessage(msg, err);
      } finally {
        e.target.disabled = false;
      }
    },
  }, c.enabled ? `Turn off in ${env}` : `Turn on in ${env}`) : null;
  const ruleRows = c.rules.map((r, i) => ({ ...r, n: i + 1 }));
  fill(body,
    dl([['Description', flag.description], ['Owner', flag.owner], ['Type', flag.type], ['Tags', (flag.tags || []).join(', ')],
      ['Archived', flag.archived ? 'yes' : 'no'], ['Version', String(flag.version)], ['Updated', time(flag.updated_at)]]),
    h('h2', {}, 'Variants'),
    table(`Variants of ${flag.key}`, [{ label: 'Variant', cell: (v) => h('code', {}, v.name) }, { label: 'Value', cell: (v) => h('code', {}, JSON.stringify(v.value)) }], variantRows),
    h('h2', {}, 'Environment'),
    h('form', { class: 'filters', 'aria-label': 'Choose the environment' }, field('Environment', envSel)),
    h('div', { class: 'page-head' }, dl([['Kill switch', badge(c.enabled ? 'enabled' : 'disabled')], ['Default variant', c.default_variant],
      ['Off variant', c.off_variant], ['Split', splitText(c.split)],
      ['Prerequisites', c.prerequisites.length ? c.prerequisites.map((p) => `${p.flag} = ${p.variant}`).join(', ') : '—']],
    { dataset: { env } }), killSwitch),
    h('h3', {}, 'Rules'),
    ruleRows.length ? table(`Rules of ${flag.key} in ${env}`, [
      { label: '#', cell: (r) => String(r.n) },
      { label: 'Name', cell: (r) => text(r.name) },
      { label: 'When', cell: (r) => r.conditions.map(conditionText).join(' and ') || 'always' },
      { label: 'Serves', cell: (r) => (r.split ? splitText(r.split) : text(r.variant)) },
    ], ruleRows) : empty('No rules: everyone gets the split or the default variant.'),
    canWrite(ctx, env) ? editor(ctx, flag, env, reload) : null,
    ctx.can('operator') ? promoteForm(ctx, flag, envs, env, reload) : null,
    h('h2', {}, `Versions in ${env}`),
    versR.status === 'fulfilled' ? versionsSection(ctx, flag, env, versR.value.items, reload, msg) : errorBox(versR.reason),
    h('h2', {}, 'Rollouts'),
    rollR.status === 'fulfilled' ? rolloutsSection(ctx, flag, env, rollR.value.items, reload, msg) : errorBox(rollR.reason),
    canWrite(ctx, env) ? rolloutForm(ctx, flag, env, reload) : null);
}

export default {
  async render(ctx) {
    const view = ctx.id ? null : ctx.query.get('view');
    if (view === 'segments') { await renderSegments(ctx); return; }
    if (view === 'requests') { await renderRequests(ctx); return; }
    const holder = loading('Loading environments…');
    add(ctx.root, ctx.id ? null : pageHeading('Flags'), holder);
    let envs;
    try {
      envs = (await api.get('/api/v1/environments', undefined, { signal: ctx.signal })).items;
    } catch (e) {
      if (e.name !== 'AbortError') holder.replaceWith(errorBox(e));
      return;
    }
    holder.remove();
    const wanted = ctx.query.get('env');
    const env = envs.some((e) => e.name === wanted) ? wanted : (envs.find((e) => e.name === 'staging') || envs[0])?.name;
    if (ctx.id) await renderFlag(ctx, envs, env);
    else await renderList(ctx, envs, env);
  },
};
