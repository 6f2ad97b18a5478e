// Audit: the trail with its filters (in the URL, so a search is a link), each event's actor,
// action and the diff of before and after; the chain's verification (the last full one, a
// check of the newest events, and "verify the whole chain" as a job); the export.
import * as api from '../api.js';
import {
  h, fill, add, pageHeading, field, loading, empty, errorBox, table, time, text, badge, messageRegion,
  showMessage, localToIso, isoToLocal, card, filterPanel,
} from '../ui.js';

const FILTERS = [
  ['actor', 'Actor', 'subject or display name'], ['action', 'Action', 'e.g. job.cancel'],
  ['resource_type', 'Resource type'], ['resource_id', 'Resource id'], ['environment', 'Environment'],
];

/** Flatten a JSON value to {path: value} for the diff. */
function flatten(v, prefix = '', out = {}) {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const keys = Object.keys(v);
    if (keys.length === 0 && prefix) out[prefix] = v;
    for (const k of keys) flatten(v[k], prefix ? `${prefix}.${k}` : k, out);
  } else if (prefix) out[prefix] = v;
  else out['(value)'] = v;
  return out;
}

function diff(before, after) {
  const b = before === null || before === undefined ? {} : flatten(before);
  const a = after === null || after === undefined ? {} : flatten(after);
  const rows = [];
  for (const k of [...new Set([...Object.keys(b), ...Object.keys(a)])].sort()) {
    const inB = k in b;
    const inA = k in a;
    const same = inB && inA && JSON.stringify(b[k]) === JSON.stringify(a[k]);
    if (!same) rows.push({ k, change: !inB ? 'added' : !inA ? 'removed' : 'changed', before: inB ? b[k] : undefined, after: inA ? a[k] : undefined });
  }
  return rows;
}

function eventDetails(e) {
  const rows = diff(e.before, e.after);
  return h('details', { class: 'event' },
    h('summary', {}, 'Changes and context'),
    rows.length === 0 ? h('p', { class: 'muted' }, 'No field changed.')
      : table(`Changes of event ${e.seq}`, [
        { label: 'Field', cell: (r) => h('code', {}, r.k) },
        { label: 'Change', cell: (r) => r.change },
        { label: 'Before', cell: (r) => h('span', { class: 'pre' }, r.before === undefined ? '—' : text(r.before)) },
        { label: 'After', cell: (r) => h('span', { class: 'pre' }, r.after === undefined ? '—' : text(r.after)) },
      ], rows),
    h('dl', { class: 'pairs small' },
      h('dt', {}, 'Actor subject'), h('dd', {}, e.actor_subject),
      h('dt', {}, 'Signed in with'), h('dd', {}, e.auth_method),
      h('dt', {}, 'API token'), h('dd', {}, text(e.token_id)),
      h('dt', {}, 'Request'), h('dd', {}, text(e.request_id)),
      h('dt', {}, 'Job'), h('dd', {}, e.job_id ? h('a', { href: `#/jobs/${e.job_id}` }, `#${e.job_id}`) : '—'),
      h('dt', {}, 'Client'), h('dd', {}, text(e.client_addr)),
      h('dt', {}, 'Hash'), h('dd', { class: 'hash' }, e.hash)));
}

function verifyResult(r) {
  return h('div', { dataset: { verify: r.ok ? 'ok' : 'broken' } },
    h('p', {}, r.ok ? h('strong', { class: 'ok' }, 'Intact') : h('strong', { class: 'bad' }, `Broken at event ${r.first_broken_seq}`),
      r.reason ? ` · ${r.reason}` : ''),
    h('dl', { class: 'pairs' },
      h('dt', {}, 'Checked'), h('dd', {}, `${r.checked} events (${r.from_seq}–${r.to_seq})`),
      h('dt', {}, 'Chain head'), h('dd', {}, String(r.head_seq)),
      h('dt', {}, 'Complete'), h('dd', {}, r.complete ? 'yes' : 'no, run again or verify the whole chain'),
      h('dt', {}, 'From checkpoint'), h('dd', {}, text(r.from_checkpoint)),
      h('dt', {}, 'Checkpoints refused'), h('dd', {}, String(r.checkpoints_refused))));
}

export default {
  async render(ctx) {
    const query = {};
    for (const [k] of FILTERS) if (ctx.query.get(k)) query[k] = ctx.query.get(k);
    for (const k of ['since', 'until']) if (ctx.query.get(k)) query[k] = ctx.query.get(k);

    // ---- filters ----
    const inputs = {};
    const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter audit events' },
      FILTERS.map(([k, label, hint]) => field(label, (inputs[k] = h('input', { name: k, type: 'text', value: query[k] || '', maxlength: '256' })), hint)),
      field('Since', (inputs.since = h('input', { name: 'since', type: 'datetime-local', value: isoToLocal(query.since) }))),
      field('Until', (inputs.until = h('input', { name: 'until', type: 'datetime-local', value: isoToLocal(query.until) }))),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Search'),
        h('a', { href: ctx.href('audit'), class: 'button' }, 'Clear')));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const q = {};
      for (const [k] of FILTERS) q[k] = inputs[k].value.trim();
      q.since = localToIso(inputs.since.value);
      q.until = localToIso(inputs.until.value);
      ctx.go(ctx.href('audit', null, q));
    });

    // ---- verification ----
    const vmsg = messageRegion();
    const lastFull = h('div', {}, loading());
    const check = h('div', {});
    const vActions = h('div', { class: 'actions' },
      h('button', {
        type: 'button',
        onclick: async (e) => {
          e.target.disabled = true;
          fill(check, loading('Checking…'));
          try {
            fill(check, verifyResult(await api.get('/api/v1/audit/verify', undefined, { signal: ctx.signal })));
          } catch (err) {
            if (err.name !== 'AbortError') fill(check, errorBox(err));
          } finally { e.target.disabled = false; }
        },
      }, 'Check the newest events'),
      ctx.can('operator') ? h('button', {
        type: 'button', class: 'primary', dataset: { mutating: '' },
        onclick: async (e) => {
          e.target.disabled = true;
          try {
            const r = await api.mutate('POST', '/api/v1/audit/verify', {});
            vmsg.hidden = false;
            vmsg.className = 'message message-ok';
            vmsg.setAttribute('role', 'status');
            fill(vmsg, 'Full verification started: ', h('a', { href: ctx.href('jobs', r.data.id) }, `job #${r.data.id}`), '.');
          } catch (err) {
            showMessage(vmsg, err);
          } finally { e.target.disabled = false; }
        },
      }, 'Verify the whole chain now') : null);

    // ---- export ----
    const emsg = messageRegion();
    const exportButton = ctx.can('operator') ? h('button', {
      type: 'button',
      onclick: async (e) => {
        e.target.disabled = true;
        try {
          const r = await api.raw('/api/v1/audit/export', query);
          const blob = await r.blob();
          const url = URL.createObjectURL(blob);
          const a = h('a', { href: url, download: `audit-${new Date().toISOString().replace(/[:.]/g, '-')}.jsonl` });
          document.body.append(a);
          a.click();
          a.remove();
          setTimeout(() => URL.revokeObjectURL(url), 10000);
          showMessage(emsg, `Exported ${blob.size} bytes.`);
        } catch (err) {
          showMessage(emsg, err);
        } finally { e.target.disabled = false; }
      },
    }, 'Export these events (JSON Lines)') : null;

    const results = h('div', {}, loading('Loading events…'));
    const more = h('button', { type: 'button', hidden: true }, 'Load more');
    add(ctx.root, pageHeading('Audit'),
      h('div', { class: 'cards' }, card('Chain verification', lastFull, check, vActions, vmsg)),
      filterPanel(form, Object.keys(query).length > 0), exportButton ? h('div', { class: 'actions' }, exportButton, emsg) : null, results, h('div', { class: 'actions' }, more));

    api.get('/api/v1/jobs', { kind: 'audit.verify', limit: 1 }, { signal: ctx.signal }).then((p) => {
      const j = p.items[0];
      fill(lastFull, j
        ? h('p', {}, 'Last full verification: ', h('a', { href: ctx.href('jobs', j.id) }, `job #${j.id}`), ' ', badge(j.state), ' ', time(j.finished_at || j.created_at))
        : h('p', { class: 'muted' }, 'No full verification has run yet.'));
    }, (err) => { if (err.name !== 'AbortError') fill(lastFull, errorBox(err)); });

    // ---- the events ----
    const columns = [
      { label: 'Seq', cell: (e) => String(e.seq) },
      { label: 'Time', cell: (e) => time(e.time) },
      { label: 'Actor', cell: (e) => h('span', { title: e.actor_subject }, text(e.actor_name || e.actor_subject)) },
      { label: 'Action', cell: (e) => h('code', {}, e.action) },
      { label: 'Resource', cell: (e) => `${e.resource_type}${e.resource_id ? ` ${e.resource_id}` : ''}` },
      { label: 'Environment', cell: (e) => text(e.environment) },
      { label: 'Details', cell: (e) => eventDetails(e) },
    ];
    const pages = api.pager('/api/v1/audit', { ...query, limit: 50 }, { signal: ctx.signal });
    let tbody = null;
    async function loadPage() {
      more.disabled = true;
      try {
        const items = await pages.next();
        if (!tbody) {
          if (items.length === 0) {
            fill(results, empty(Object.keys(query).length ? 'No event matches these filters.' : 'No events yet.'));
            return;
          }
          const t = table('Audit events', columns, []);
          tbody = t.querySelector('tbody');
          fill(results, t);
        }
        for (const e of items) {
          const tr = h('tr', {}, columns.map((c) => h('td', { 'data-label': c.label }, c.cell(e))));
          tbody.append(tr);
        }
        more.hidden = pages.done;
      } catch (e) {
        if (e.name !== 'AbortError') fill(results, errorBox(e));
      } finally {
        more.disabled = false;
      }
    }
    more.addEventListener('click', loadPage);
    await loadPage();
  },
};
