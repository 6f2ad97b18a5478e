// Jobs: the filterable list (state, kind, queue, created by, since) with cursor paging,
// kept live by the job events stream; admins can start a diagnostic job. #/jobs/<id> is
// the job's own page (job.js).
import * as api from '../api.js';
import {
  h, fill, add, pageHeading, field, select, loading, empty, errorBox, table, tableRow, time, badge, text,
  messageRegion, showMessage, localToIso, isoToLocal, filterPanel,
} from '../ui.js';
import job from './job.js';

const STATES = ['pending', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'];
const FILTERS = ['state', 'kind', 'queue', 'created_by', 'since'];
const DIRECT_KINDS = [['sleep', 'sleep'], ['noop', 'noop'], ['fail', 'fail']];
const DEFAULT_ARGS = { sleep: '{"seconds": 5, "log": true}', noop: '{"log": true}', fail: '{"permanent": true}' };

function progressText(j) {
  const p = j.progress;
  if (!p || p.percent === null || p.percent === undefined) return '—';
  return `${p.percent} %`;
}

function filterForm(ctx) {
  const q = ctx.query;
  const state = select('state', [['', 'Any state'], ...STATES], q.get('state') || '');
  const kind = h('input', { name: 'kind', type: 'text', value: q.get('kind') || '', maxlength: '100' });
  const queue = h('input', { name: 'queue', type: 'text', value: q.get('queue') || '', maxlength: '100' });
  const createdBy = h('input', { name: 'created_by', type: 'text', value: q.get('created_by') || '', maxlength: '256' });
  const since = h('input', { name: 'since', type: 'datetime-local', value: isoToLocal(q.get('since')) });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter jobs' },
    field('State', state), field('Kind', kind), field('Queue', queue),
    field('Created by', createdBy, 'a subject, or schedule:<name>'), field('Created since', since),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Filter'),
      h('a', { href: ctx.href('jobs'), class: 'button' }, 'Clear')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    ctx.go(ctx.href('jobs', null, {
      state: state.value, kind: kind.value.trim(), queue: queue.value.trim(),
      created_by: createdBy.value.trim(), since: localToIso(since.value),
    }));
  });
  return form;
}

function startForm(ctx) {
  const kind = select('kind', DIRECT_KINDS, 'sleep');
  const args = h('textarea', { name: 'args', rows: '2', spellcheck: 'false' }, DEFAULT_ARGS.sleep);
  kind.addEventListener('change', () => { args.value = DEFAULT_ARGS[kind.value] || '{}'; });
  const msg = messageRegion();
  const submit = h('button', { type: 'submit', class: 'primary', dataset: { mutating: '' } }, 'Start job');
  const form = h('form', { class: 'inline-form', 'aria-label': 'Start a diagnostic job' },
    field('Kind', kind), field('Arguments (JSON)', args), h('div', { class: 'actions' }, submit), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    let parsed;
    try {
      parsed = JSON.parse(args.value || '{}');
    } catch (err) {
      showMessage(msg, { title: 'Arguments are not JSON', detail: err.message });
      return;
    }
    submit.disabled = true;
    try {
      const r = await api.mutate('POST', '/api/v1/jobs', { kind: kind.value, args: parsed });
      ctx.go(ctx.href('jobs', r.data.id));
    } catch (err) {
      showMessage(msg, err);
    } finally {
      submit.disabled = false;
    }
  });
  return h('details', { class: 'panel' }, h('summary', {}, 'Start a diagnostic job'), form);
}

export default {
  async render(ctx) {
    if (ctx.id) return job.render(ctx);
    const query = {};
    for (const k of FILTERS) if (ctx.query.get(k)) query[k] = ctx.query.get(k);
    const columns = [
      { label: 'Job', cell: (j) => h('a', { href: ctx.href('jobs', j.id) }, `#${j.id}`) },
      { label: 'Kind', cell: (j) => j.kind },
      { label: 'Queue', cell: (j) => j.queue },
      { label: 'State', cell: (j) => badge(j.state) },
      { label: 'Attempt', cell: (j) => `${j.attempt} of ${j.max_attempts}` },
      { label: 'Progress', cell: (j) => progressText(j) },
      { label: 'Created by', cell: (j) => text(j.created_by) },
      { label: 'Created', cell: (j) => time(j.created_at) },
    ];
    const notice = h('div', { class: 'notice', hidden: true, role: 'status' });
    const results = h('div', {}, loading('Loading jobs…'));
    const more = h('button', { type: 'button', hidden: true }, 'Load more');
    add(ctx.root, pageHeading('Jobs'),
      ctx.can('admin') ? startForm(ctx) : null,
      filterPanel(filterForm(ctx), Object.keys(query).length > 0), notice, results, h('div', { class: 'actions' }, more));

    let pages = api.pager('/api/v1/jobs', { ...query, limit: 50 }, { signal: ctx.signal });
    const rows = new Map(); // job id -> its <tr>
    let tbody = null;
    async function loadPage() {
      more.disabled = true;
      try {
        const items = await pages.next();
        if (!tbody) {
          if (items.length === 0) {
            fill(results, empty(Object.keys(query).length ? 'No job matches these filters.' : 'No jobs yet.'));
          } else {
            const t = table('Jobs', columns, []);
            tbody = t.querySelector('tbody');
            fill(results, t);
          }
        }
        for (const j of items) {
          if (rows.has(j.id)) continue;
          const tr = tableRow(columns, j);
          tr.dataset.jobId = j.id;
          rows.set(j.id, tr);
          tbody.append(tr);
        }
        more.hidden = pages.done;
      } catch (e) {
        if (e.name === 'AbortError') return;
        fill(results, errorBox(e));
      } finally {
        more.disabled = false;
      }
    }
    more.addEventListener('click', loadPage);
    function reload() {
      pages = api.pager('/api/v1/jobs', { ...query, limit: 50 }, { signal: ctx.signal });
      rows.clear();
      tbody = null;
      unseen = 0;
      notice.hidden = true;
      fill(results, loading('Loading jobs…'));
      loadPage();
    }

    // Live: a listed job's state changes in place; new jobs (or a resync) offer a reload,
    // so that the page never moves under the operator's hands.
    let unseen = 0;
    const showNotice = (why) => {
      notice.hidden = false;
      fill(notice, why, ' ',
        h('button', { type: 'button', onclick: reload }, 'Show them'));
    };
    const stop = api.onJobEvents((ev) => {
      if (ev.type === 'resync') { showNotice('Jobs changed while the list was not listening.'); return; }
      if (ev.type !== 'job') return;
      const tr = rows.get(ev.id);
      if (tr) {
        const cell = tr.querySelector('td[data-label="State"]');
        if (cell) fill(cell, badge(ev.state));
      } else if (ev.state === 'pending') {
        unseen++;
        showNotice(`${unseen} new ${unseen === 1 ? 'job' : 'jobs'}.`);
      }
    });
    ctx.onCleanup(stop);
    await loadPage();
  },
};
