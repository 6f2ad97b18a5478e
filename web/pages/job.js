// One job (#/jobs/<id>): its fields, args, progress, result, the errors of each attempt
// and its log, all kept live: every job event for this id (and every resync) reloads the
// job and appends the log lines after the last one shown. Operators cancel and retry.
import * as api from '../api.js';
import {
  h, fill, add, pageHeading, loading, empty, errorBox, table, time, badge, text, json, dl, confirm,
  messageRegion, showMessage, duration,
} from '../ui.js';

const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);

export default {
  async render(ctx) {
    const id = Number(ctx.id);
    if (!Number.isSafeInteger(id) || id < 1) {
      add(ctx.root, pageHeading('Job not found'), h('p', {}, 'No job has this id.'));
      return;
    }
    const stateBadge = h('span', { dataset: { field: 'state' } });
    const actions = h('div', { class: 'actions' });
    const msg = messageRegion();
    const facts = h('div', {}, loading('Loading the job…'));
    const progress = h('div', {});
    const args = h('div', {});
    const result = h('div', {});
    const errors = h('div', {});
    const logList = h('ol', { class: 'log', 'aria-label': 'Job log' });
    const logState = h('div', {}, loading('Loading the log…'));
    add(ctx.root, 
      pageHeading(`Job #${id}`, stateBadge),
      h('p', {}, h('a', { href: ctx.href('jobs') }, '← All jobs')),
      actions, msg,
      h('div', { class: 'cols' },
        h('section', { 'aria-labelledby': 'job-facts' }, h('h2', { id: 'job-facts' }, 'Details'), facts),
        h('section', { 'aria-labelledby': 'job-progress' }, h('h2', { id: 'job-progress' }, 'Progress'), progress,
          h('h2', {}, 'Arguments'), args, h('h2', {}, 'Result'), result)),
      h('section', { 'aria-labelledby': 'job-errors' }, h('h2', { id: 'job-errors' }, 'Errors by attempt'), errors),
      h('section', { 'aria-labelledby': 'job-log' }, h('h2', { id: 'job-log' }, 'Log'), logState, logList));

    const { signal } = ctx;
    let lastLogId = 0;
    let shown = null;

    function renderJob(j) {
      shown = j;
      fill(stateBadge, badge(j.state));
      fill(facts, dl([
        ['Kind', j.kind], ['Queue', j.queue], ['State', j.state],
        ['Attempt', `${j.attempt} of ${j.max_attempts}`], ['Priority', String(j.priority)],
        ['Created by', j.created_by], ['Created', time(j.created_at)], ['Run at', time(j.run_at)],
        ['Started', time(j.started_at)], ['Finished', time(j.finished_at)],
        ['Took', j.started_at && j.finished_at ? duration((Date.parse(j.finished_at) - Date.parse(j.started_at)) / 1000) : '—'],
        ['Timeout', duration(j.timeout_seconds)], ['Worker', text(j.worker_id)],
        ['Idempotency key', text(j.idempotency_key)],
        ['Cancel requested', time(j.cancel_requested_at)],
      ]));
      const p = j.progress;
      fill(progress, p && p.percent !== null && p.percent !== undefined
        ? h('div', { class: 'progress' },
          h('label', { for: 'job-progress-bar' }, `${p.percent} %`, p.message ? ` · ${p.message}` : ''),
          h('progress', { id: 'job-progress-bar', max: '100', value: String(p.percent) }, `${p.percent} %`))
        : h('p', { class: 'muted' }, j.state === 'succeeded' ? 'Done.' : 'No progress reported.'));
      fill(args, json(j.args));
      fill(result, j.result === null || j.result === undefined ? h('p', { class: 'muted' }, 'No result yet.') : json(j.result));
      fill(errors, j.errors.length === 0 ? empty('No attempt failed.')
        : table('Errors by attempt', [
          { label: 'Attempt', cell: (e) => String(e.attempt) },
          { label: 'Time', cell: (e) => time(e.time) },
          { label: 'Message', cell: (e) => h('span', { class: 'pre' }, e.message) },
          { label: 'Retry at', cell: (e) => time(e.retry_at) },
        ], j.errors));
      fill(actions);
      if (ctx.can('operator')) {
        const cancellable = ['pending', 'retrying', 'running'].includes(j.state) && !j.cancel_requested_at;
        if (cancellable) {
          actions.append(h('button', {
            type: 'button', class: 'danger', dataset: { mutating: '', action: 'cancel' },
            onclick: async (e) => {
              const ok = await confirm({ title: `Cancel job #${j.id}?`, body: j.state === 'running' ? 'The job stops at its next heartbeat and cleans up.' : 'The job will not run.', confirmLabel: 'Cancel the job' });
              if (!ok) return;
              e.target.disabled = true;
              try {
                const r = await api.mutate('POST', `/api/v1/jobs/${id}/cancel`);
                showMessage(msg, r.status === 202 ? 'Cancel requested; the job stops at its next heartbeat.' : 'Job cancelled.');
                renderJob(r.data);
              } catch (err) {
                showMessage(msg, err);
                e.target.disabled = false;
              }
            },
          }, 'Cancel job'));
        }
        if (j.state === 'failed' || j.state === 'cancelled') {
          actions.append(h('button', {
            type: 'button', class: 'primary', dataset: { mutating: '', action: 'retry' },
            onclick: async (e) => {
              e.target.disabled = true;
              try {
                const r = await api.mutate('POST', `/api/v1/jobs/${id}/retry`);
                showMessage(msg, 'Job re-enqueued for one more attempt.');
                renderJob(r.data);
              } catch (err) {
                showMessage(msg, err);
                e.target.disabled = false;
              }
            },
          }, 'Retry job'));
        }
      }
    }

    async function loadLog() {
      // the log's cursor is the id of the last line: passing it asks for the lines after it
      for (;;) {
        const page = await api.get(`/api/v1/jobs/${id}/logs`, { cursor: lastLogId || undefined, limit: 500 }, { signal });
        for (const l of page.items) {
          logList.append(h('li', { class: `log-${l.level}` }, time(l.time), ' ',
            h('span', { class: 'level' }, l.level), ' ', h('span', { class: 'pre' }, l.message)));
          lastLogId = l.id;
        }
        if (!page.next_cursor) break;
      }
      fill(logState, logList.childElementCount === 0 ? empty('No log lines yet.') : '');
    }

    let busy = false;
    let again = false;
    async function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      try {
        const j = await api.get(`/api/v1/jobs/${id}`, undefined, { signal });
        renderJob(j);
        await loadLog();
      } catch (e) {
        if (e.name === 'AbortError') return;
        if (!shown) {
          fill(facts, errorBox(e));
          fill(logState);
        } else showMessage(msg, e);
      } finally {
        busy = false;
      }
      if (again) { again = false; refresh(); }
    }

    const stop = api.onJobEvents((ev) => {
      if ((ev.type === 'job' && ev.id === id) || ev.type === 'resync' || ev.type === 'open') refresh();
    });
    // A safety net for an unfinished job, should the stream be down for a while.
    const poll = setInterval(() => { if (shown && !FINISHED.has(shown.state)) refresh(); }, 10000);
    ctx.onCleanup(() => { stop(); clearInterval(poll); });
    await refresh();
  },
};
