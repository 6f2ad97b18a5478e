// Dashboard: jobs by state, failing and long-running jobs, the oldest pending job's age,
// the outbox backlog and the audit chain's last full verification. Refreshed on job
// events (at most every 2 s) and every 15 s for what has no event (outbox, gauges).
import * as api from '../api.js';
import { h, fill, add, card, loading, errorBox, empty, time, duration, badge, text, table } from '../ui.js';

const LONG_RUNNING_S = 600; // a running job past 10 minutes is shown as long-running
const DAY_MS = 24 * 3600 * 1000;

function jobLink(ctx, j) {
  return h('a', { href: ctx.href('jobs', j.id) }, `#${j.id} ${j.kind}`);
}

function countText(items, limit, more) {
  return more ? `${limit}+` : String(items.length);
}

export default {
  async render(ctx) {
    const status = h('p', { class: 'muted', role: 'status', 'aria-live': 'polite' }, 'Loading…');
    const states = h('div', {}, loading());
    const failing = h('div', {}, loading());
    const longRunning = h('div', {}, loading());
    const outbox = h('div', {}, loading());
    const chain = h('div', {}, loading());
    add(ctx.root, 
      h('div', { class: 'page-head' }, h('h1', { id: 'page-title', tabindex: '-1' }, 'Dashboard'), status),
      h('div', { class: 'cards' },
        card('Jobs by state', states),
        card('Failing jobs (last 24 h)', failing),
        card('Long-running jobs', longRunning),
        card('Event outbox', outbox),
        card('Audit chain', chain),
        // slot: RPO/RTO status (backups, DR) and drift per environment (inventory) add
        // their cards here, each from its own room's API.
      ));

    const { signal } = ctx;
    let busy = false;
    let again = false;
    async function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      const since = new Date(Date.now() - DAY_MS).toISOString();
      const list = (query) => api.get('/api/v1/jobs', query, { signal });
      const [m, failed, succeeded, cancelled, running, out, verify] = await Promise.allSettled([
        api.metrics({ signal }),
        list({ state: 'failed', since, limit: 100 }),
        list({ state: 'succeeded', since, limit: 100 }),
        list({ state: 'cancelled', since, limit: 100 }),
        list({ state: 'running', limit: 100 }),
        api.get('/api/v1/events/status', undefined, { signal }),
        list({ kind: 'audit.verify', limit: 1 }),
      ]);
      if (signal.aborted) return;

      // jobs by state: the unfinished ones are the server's gauges (every replica, exact);
      // the finished ones are counted from the last day's pages.
      const counts = { pending: 0, retrying: 0, running: 0 };
      let oldest = null;
      if (m.status === 'fulfilled') {
        for (const s of m.value) {
          if (s.name === 'qdb_jobs' && s.labels.state in counts) counts[s.labels.state] += s.value;
          if (s.name === 'qdb_jobs_oldest_pending_age_seconds') oldest = s.value;
        }
      }
      const rows = [
        ['pending', m.status === 'fulfilled' ? String(counts.pending) : '—', {}],
        ['retrying', m.status === 'fulfilled' ? String(counts.retrying) : '—', {}],
        ['running', m.status === 'fulfilled' ? String(counts.running) : '—', {}],
        ['succeeded', succeeded.status === 'fulfilled' ? countText(succeeded.value.items, 100, succeeded.value.next_cursor) : '—', { since }],
        ['failed', failed.status === 'fulfilled' ? countText(failed.value.items, 100, failed.value.next_cursor) : '—', { since }],
        ['cancelled', cancelled.status === 'fulfilled' ? countText(cancelled.value.items, 100, cancelled.value.next_cursor) : '—', { since }],
      ];
      const group = (title, list) => [h('h3', {}, title), h('ul', { class: 'state-counts' }, list.map(([s, n, q]) =>
        h('li', { dataset: { state: s } },
          h('a', { href: ctx.href('jobs', null, { state: s, ...q }) }, badge(s), h('span', { class: 'count' }, n)))))];
      fill(states,
        group('Now', rows.slice(0, 3)),
        group('Finished in the last 24 h', rows.slice(3)),
        h('p', {}, 'Oldest pending job waiting: ',
          h('strong', { dataset: { field: 'oldest-pending' } }, m.status === 'fulfilled' ? (oldest ? duration(oldest) : 'none waiting') : '—')),
        m.status === 'rejected' ? errorBox(m.reason) : null);

      if (failed.status === 'fulfilled') {
        const items = failed.value.items.slice(0, 5);
        fill(failing, items.length === 0 ? empty('No job failed in the last 24 hours.')
          : h('ul', { class: 'plain' }, items.map((j) => h('li', {}, jobLink(ctx, j), ' ', h('span', { class: 'muted' }, 'failed '), time(j.finished_at),
            j.errors?.length ? h('div', { class: 'muted clip' }, text(j.errors[j.errors.length - 1].message)) : null))),
        failed.value.items.length > 5 ? h('p', {}, h('a', { href: ctx.href('jobs', null, { state: 'failed', since }) }, 'All failed jobs')) : null);
      } else fill(failing, errorBox(failed.reason));

      if (running.status === 'fulfilled') {
        const now = Date.now();
        const long = running.value.items
          .map((j) => ({ j, age: j.started_at ? (now - Date.parse(j.started_at)) / 1000 : 0 }))
          .filter((x) => x.age >= LONG_RUNNING_S)
          .sort((a, b) => b.age - a.age);
        fill(longRunning, 
          long.length === 0 ? empty(`No job has been running for more than ${duration(LONG_RUNNING_S)}.`)
            : table('Long-running jobs', [
              { label: 'Job', cell: (x) => jobLink(ctx, x.j) },
              { label: 'Running for', cell: (x) => duration(x.age) },
              { label: 'Progress', cell: (x) => (x.j.progress?.percent !== null && x.j.progress?.percent !== undefined ? `${x.j.progress.percent} %` : '—') },
            ], long.slice(0, 10)));
      } else fill(longRunning, errorBox(running.reason));

      if (out.status === 'fulfilled') {
        const o = out.value;
        fill(outbox, h('dl', { class: 'pairs', dataset: { outbox: 'ok' } },
          h('dt', {}, 'Backlog'), h('dd', { dataset: { field: 'backlog' } }, String(o.backlog)),
          h('dt', {}, 'Oldest waiting'), h('dd', {}, o.oldest_age_seconds === null ? 'none waiting' : duration(o.oldest_age_seconds)),
          h('dt', {}, 'Published'), h('dd', {}, String(o.published_total)),
          h('dt', {}, 'Dead-lettered'), h('dd', {}, String(o.dead_lettered_total)),
          h('dt', {}, 'Kafka'), h('dd', {}, o.kafka_configured ? 'configured' : 'not configured')));
      } else if (out.reason?.status === 404) {
        fill(outbox, h('p', { class: 'state state-unavailable', dataset: { outbox: 'unavailable' } },
          'Not available: this server does not report its outbox (no events status endpoint).'));
      } else fill(outbox, errorBox(out.reason));

      if (verify.status === 'fulfilled') {
        const j = verify.value.items[0];
        if (!j) {
          fill(chain, empty('No full verification has run yet.'),
            h('p', {}, h('a', { href: ctx.href('audit') }, 'Verify on the audit page')));
        } else {
          const ok = j.result && typeof j.result === 'object' ? j.result.ok : null;
          fill(chain, h('p', {}, badge(j.state), ' ',
            j.state === 'succeeded' && ok ? h('strong', { class: 'ok' }, 'Chain intact')
              : j.state === 'failed' ? h('strong', { class: 'bad' }, 'Verification failed') : null),
          h('dl', { class: 'pairs' },
            h('dt', {}, 'Last full verification'), h('dd', {}, jobLink(ctx, j)),
            h('dt', {}, 'Finished'), h('dd', {}, time(j.finished_at)),
            h('dt', {}, 'Events checked'), h('dd', {}, text(j.result?.checked))));
        }
      } else fill(chain, errorBox(verify.reason));

      fill(status, 'Updated ', time(new Date().toISOString()));
      busy = false;
      if (again) { again = false; refresh(); }
    }

    let timer = null;
    const soon = () => {
      if (timer) return;
      timer = setTimeout(() => { timer = null; refresh(); }, 2000);
    };
    const stop = api.onJobEvents((ev) => { if (ev.type === 'job' || ev.type === 'resync') soon(); });
    const poll = setInterval(refresh, 15000);
    ctx.onCleanup(() => { stop(); clearInterval(poll); clearTimeout(timer); });
    await refresh();
  },
};
