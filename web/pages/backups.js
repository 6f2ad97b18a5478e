// Backups: the RPO/RTO table of every protected component (ok / warning / breach, the WAL
// lag of the streamed ones), the catalog with sizes, durations and verification state, and
// the actions: run a backup of a managed database (operator), verify one by a test restore
// (operator), restore one into another database, to a point in time through the streamed
// WAL (admin, behind a typed confirmation of the target's name). Started jobs are followed
// live through job events until they finish.
import * as api from '../api.js';
import {
  h, fill, add, pageHeading, loading, empty, errorBox, table, time, text, badge, duration, field,
  select, messageRegion, showMessage, localToIso,
} from '../ui.js';

const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);

function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

function seconds(s) {
  if (s === null || s === undefined) return '—';
  return s < 60 ? `${Number(s).toFixed(1)} s` : duration(s);
}

// ---- the RPO/RTO table ----

function statusTable(rows) {
  return table('RPO and RTO of every protected component', [
    { label: 'Component', cell: (r) => h('span', {}, h('strong', {}, r.component), r.title ? ` ${r.title}` : '') },
    { label: 'Method', cell: (r) => r.method },
    { label: 'Database', cell: (r) => (r.database ? h('code', {}, r.database) : '—') },
    { label: 'Last good backup', cell: (r) => (r.last_success_age_seconds === null ? 'never' : `${duration(r.last_success_age_seconds)} ago`) },
    { label: 'RPO', cell: (r) => (r.rpo_seconds ? duration(r.rpo_seconds) : '0 (WAL streaming)') },
    {
      label: 'WAL lag',
      cell: (r) => (r.wal_stream
        ? h('span', {}, seconds(r.wal_lag_seconds), ' ', badge(r.wal_stream.state),
          r.wal_stream.lag_bytes !== null ? ` ${bytes(r.wal_stream.lag_bytes)} behind` : '')
        : '—'),
    },
    { label: 'Last restore', cell: (r) => seconds(r.last_restore_seconds) },
    { label: 'RTO', cell: (r) => duration(r.rto_seconds) },
    { label: 'State', cell: (r) => badge(r.state, 'rpo-state') },
    { label: 'Why', cell: (r) => (r.reasons.length ? h('ul', { class: 'plain' }, r.reasons.map((x) => h('li', {}, x.reason))) : '—') },
  ], rows);
}

// ---- jobs started from this page, followed live ----

function jobTracker(ctx, id, what, onDone) {
  let state = 'pending';
  const rank = (st) => (FINISHED.has(st) ? 2 : st === 'pending' ? 0 : 1);
  const li = h('li', { dataset: { jobId: String(id) } });
  const draw = () => fill(li, h('a', { href: ctx.href('jobs', id) }, `job #${id}`), ` ${what} `, badge(state));
  const set = (st) => {
    if (!st || rank(st) < rank(state)) return;
    const was = state;
    state = st;
    draw();
    if (FINISHED.has(st) && !FINISHED.has(was)) onDone(st);
  };
  const refresh = async () => {
    try { set((await api.get(`/api/v1/jobs/${id}`, undefined, { signal: ctx.signal })).state); } catch { /* the next event or poll */ }
  };
  const stop = api.onJobEvents((ev) => {
    if (ev.type === 'job' && ev.id === id) set(ev.state);
    else if (ev.type === 'resync' || ev.type === 'open') refresh();
  });
  const poll = setInterval(() => { if (!FINISHED.has(state)) refresh(); }, 15000);
  ctx.onCleanup(() => { stop(); clearInterval(poll); });
  draw();
  refresh();
  return li;
}

// ---- restore: a dialog with the typed confirmation of the target's name ----

function restoreDialog(backup, databases) {
  return new Promise((resolve) => {
    const targets = databases.filter((d) => d.id !== backup.database_id);
    const heading = h('h2', { id: `restore-${backup.id}` }, `Restore backup #${backup.id} of ${backup.environment}/${backup.database}`);
    const target = select('target', targets.map((d) => [String(d.id), `${d.environment}/${d.name}`]));
    const when = select('when', [['end', 'as the backup ended'], ['latest', 'latest (all streamed WAL)'], ['time', 'at a point in time']], 'end');
    const at = h('input', { type: 'datetime-local', name: 'point_in_time', step: '1', disabled: true });
    const force = h('input', { type: 'checkbox', name: 'force' });
    const typed = h('input', { type: 'text', name: 'confirm_name', autocomplete: 'off', spellcheck: 'false' });
    const ok = h('button', { type: 'button', class: 'danger', disabled: true, dataset: { confirm: '', mutating: '' } }, 'Restore');
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const targetName = () => targets.find((d) => String(d.id) === target.value)?.name || '';
    const hint = h('small', { class: 'hint', id: `restore-hint-${backup.id}` });
    const sync = () => {
      at.disabled = when.value !== 'time';
      hint.textContent = `Type ${targetName()} to confirm.`;
      ok.disabled = !targetName() || typed.value !== targetName() || (when.value === 'time' && !at.value);
    };
    for (const el of [target, when, at, typed]) { el.addEventListener('input', sync); el.addEventListener('change', sync); }
    typed.setAttribute('aria-describedby', hint.id);
    const dlg = h('dialog', { 'aria-labelledby': heading.id, class: 'confirm' }, heading,
      h('p', {}, 'The target database\'s contents are replaced by the backup\'s. Restoring onto the backup\'s own source is refused.'),
      targets.length ? [
        field('Target database', target),
        field('Recover', when),
        field('Point in time (your zone)', at),
        h('div', { class: 'field' }, h('label', {}, force, ' Replace a target that holds tables')),
        field('Target name', typed), hint,
      ] : h('p', {}, 'No other managed database to restore into.'),
      h('div', { class: 'actions' }, cancel, ok));
    const opener = document.activeElement;
    const done = (v) => {
      dlg.close();
      dlg.remove();
      if (opener && opener.isConnected) opener.focus();
      resolve(v);
    };
    ok.addEventListener('click', () => {
      const body = { target: Number(target.value), force: force.checked };
      if (when.value === 'latest') body.point_in_time = 'latest';
      if (when.value === 'time') body.point_in_time = localToIso(at.value);
      done({ body, name: `${targets.find((d) => String(d.id) === target.value).environment}/${targetName()}` });
    });
    cancel.addEventListener('click', () => done(null));
    dlg.addEventListener('cancel', (e) => { e.preventDefault(); done(null); });
    document.body.append(dlg);
    sync();
    dlg.showModal();
    cancel.focus();
  });
}

// ---- the catalog ----

function catalogTable(ctx, items, actions) {
  return table('Backups, newest first', [
    { label: 'Backup', cell: (b) => h('code', {}, `#${b.id}`) },
    { label: 'Database', cell: (b) => h('code', {}, `${b.environment}/${b.database}`) },
    { label: 'Method', cell: (b) => b.method },
    { label: 'Status', cell: (b) => badge(b.status) },
    { label: 'Size', cell: (b) => bytes(b.size_bytes) },
    { label: 'Took', cell: (b) => (b.duration_ms === null ? '—' : seconds(b.duration_ms / 1000)) },
    { label: 'Started', cell: (b) => time(b.started_at) },
    { label: 'Verified', cell: (b) => (b.verified_at ? h('span', {}, time(b.verified_at), ` restore ${seconds(b.restore_seconds)}`) : '—') },
    { label: 'Error', cell: (b) => text(b.error) },
    {
      label: 'Actions',
      cell: (b) => {
        const done = ['completed', 'verified', 'bad'].includes(b.status);
        const btns = [];
        if (ctx.can('operator') && done) {
          btns.push(h('button', { type: 'button', dataset: { mutating: '', action: 'verify', backup: String(b.id) }, 'aria-label': `Verify backup ${b.id}`, onclick: () => actions.verify(b) }, 'Verify'));
        }
        if (ctx.can('admin') && (b.status === 'completed' || b.status === 'verified')) {
          btns.push(h('button', { type: 'button', dataset: { mutating: '', action: 'restore', backup: String(b.id) }, 'aria-label': `Restore backup ${b.id}`, onclick: () => actions.restore(b) }, 'Restore'));
        }
        return btns.length ? h('div', { class: 'actions' }, btns) : '—';
      },
    },
  ], items);
}

export default {
  async render(ctx) {
    const msg = messageRegion();
    const statusBox = h('div', {}, loading('Loading the RPO/RTO table…'));
    const catalogBox = h('div', {}, loading('Loading the catalog…'));
    const runBox = h('div', {});
    const started = h('ul', { class: 'plain', dataset: { startedJobs: '' }, 'aria-label': 'Jobs started here' });
    add(ctx.root, pageHeading('Backups'), msg,
      h('h2', {}, 'RPO and RTO'), statusBox,
      h('h2', {}, 'Catalog'), runBox, started, catalogBox);
    const o = { signal: ctx.signal };
    let databases = [];

    const loadStatus = async () => {
      try {
        const s = await api.get('/api/v1/backups/status', undefined, o);
        fill(statusBox, h('p', {}, 'Overall: ', badge(s.state, 'rpo-state')), statusTable(s.components || []));
      } catch (e) { if (e.name !== 'AbortError') fill(statusBox, errorBox(e)); }
    };
    const loadCatalog = async () => {
      try {
        const c = await api.get('/api/v1/backups', { limit: 100 }, o);
        fill(catalogBox, c.items.length ? catalogTable(ctx, c.items, actions) : empty('No backups yet.'));
      } catch (e) { if (e.name !== 'AbortError') fill(catalogBox, errorBox(e)); }
    };
    const reload = () => Promise.all([loadStatus(), loadCatalog()]);
    const follow = (r, what) => {
      const id = r.data?.id;
      if (!id) return;
      add(started, jobTracker(ctx, id, what, () => reload()));
    };

    const actions = {
      async verify(b) {
        try {
          const r = await api.mutate('POST', `/api/v1/backups/${b.id}/verify`);
          showMessage(msg, `Verification of backup #${b.id} started.`);
          follow(r, `verify backup #${b.id}`);
        } catch (e) { showMessage(msg, e); }
      },
      async restore(b) {
        const choice = await restoreDialog(b, databases);
        if (!choice) return;
        try {
          const r = await api.mutate('POST', `/api/v1/backups/${b.id}/restore`, choice.body);
          showMessage(msg, `Restore of backup #${b.id} into ${choice.name} started.`);
          follow(r, `restore backup #${b.id} into ${choice.name}`);
        } catch (e) { showMessage(msg, e); }
      },
    };

    if (ctx.can('operator')) {
      try {
        databases = (await api.get('/api/v1/databases', undefined, o)).items || [];
      } catch (e) { if (e.name !== 'AbortError') fill(runBox, errorBox(e)); }
      if (ctx.signal.aborted) return;
      if (databases.length) {
        const db = select('database', databases.map((d) => [String(d.id), `${d.environment}/${d.name}`]));
        const method = select('method', [['basebackup', 'base backup (pg_basebackup)'], ['dump', 'dump (pg_dump)']], 'basebackup');
        const run = h('button', { type: 'submit', class: 'primary', dataset: { mutating: '', action: 'run' } }, 'Run a backup');
        const form = h('form', { class: 'filters', 'aria-label': 'Run a backup' }, field('Database', db), field('Method', method), h('div', { class: 'actions' }, run));
        form.addEventListener('submit', async (e) => {
          e.preventDefault();
          run.disabled = true;
          try {
            const r = await api.mutate('POST', `/api/v1/databases/${db.value}/backups`, { method: method.value });
            const name = databases.find((d) => String(d.id) === db.value);
            showMessage(msg, `Backup of ${name.environment}/${name.name} started.`);
            follow(r, `${method.value} of ${name.environment}/${name.name}`);
          } catch (err) { showMessage(msg, err); } finally { run.disabled = false; }
        });
        fill(runBox, form);
      }
    }
    await reload();
    // ages and lags move without job events: refresh the table at the console's slowest pace
    const poll = setInterval(loadStatus, 15000);
    ctx.onCleanup(() => clearInterval(poll));
  },
};
