// Schedules: every schedule with its cron (UTC), next run and last job; operators enable,
// disable, create, and edit one at #/schedules/<name> (cron, args, enabled).
import * as api from '../api.js';
import {
  h, fill, add, pageHeading, field, loading, empty, errorBox, table, time, text, badge, messageRegion,
  showMessage,
} from '../ui.js';

function parseArgs(textarea, msg) {
  try {
    const v = JSON.parse(textarea.value || '{}');
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('a JSON object is needed');
    return v;
  } catch (e) {
    showMessage(msg, { title: 'Arguments are not a JSON object', detail: e.message });
    return null;
  }
}

function editForm(ctx, s) {
  const cron = h('input', { name: 'cron', type: 'text', value: s.cron, required: true, maxlength: '200', spellcheck: 'false' });
  const args = h('textarea', { name: 'args', rows: '4', spellcheck: 'false' }, JSON.stringify(s.args, null, 2));
  const enabled = h('input', { name: 'enabled', type: 'checkbox', checked: s.enabled });
  const msg = messageRegion();
  const save = h('button', { type: 'submit', class: 'primary', dataset: { mutating: '' } }, 'Save');
  const form = h('form', { class: 'inline-form', 'aria-label': `Edit schedule ${s.name}` },
    field('Cron (UTC: minute hour day month weekday)', cron),
    field('Arguments (JSON)', args),
    h('div', { class: 'field check' }, enabled, h('label', { for: (enabled.id = 'sched-enabled') }, 'Enabled')),
    h('div', { class: 'actions' }, save, h('a', { class: 'button', href: ctx.href('schedules') }, 'Back')), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const a = parseArgs(args, msg);
    if (!a) return;
    save.disabled = true;
    try {
      const r = await api.mutate('PATCH', `/api/v1/schedules/${encodeURIComponent(s.name)}`,
        { cron: cron.value.trim(), args: a, enabled: enabled.checked });
      showMessage(msg, `Saved. Next run: ${r.data.next_run_at ? new Date(r.data.next_run_at).toLocaleString() : 'none (disabled)'}.`);
    } catch (err) {
      showMessage(msg, err);
    } finally {
      save.disabled = false;
    }
  });
  return form;
}

function createForm(ctx) {
  const name = h('input', { name: 'name', type: 'text', required: true, pattern: '[a-z0-9._\\-]{1,100}', maxlength: '100' });
  const cron = h('input', { name: 'cron', type: 'text', required: true, maxlength: '200', value: '17 3 * * *', spellcheck: 'false' });
  const kind = h('input', { name: 'kind', type: 'text', required: true, maxlength: '100', value: 'noop' });
  const args = h('textarea', { name: 'args', rows: '2', spellcheck: 'false' }, '{}');
  const msg = messageRegion();
  const submit = h('button', { type: 'submit', class: 'primary', dataset: { mutating: '' } }, 'Create schedule');
  const form = h('form', { class: 'inline-form', 'aria-label': 'Create a schedule' },
    field('Name', name, 'a-z, 0-9, dot, dash, underscore'), field('Cron (UTC)', cron), field('Kind', kind),
    field('Arguments (JSON)', args), h('div', { class: 'actions' }, submit), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const a = parseArgs(args, msg);
    if (!a) return;
    submit.disabled = true;
    try {
      await api.mutate('POST', '/api/v1/schedules', { name: name.value.trim(), cron: cron.value.trim(), kind: kind.value.trim(), args: a });
      ctx.go(ctx.href('schedules', name.value.trim()));
    } catch (err) {
      showMessage(msg, err);
    } finally {
      submit.disabled = false;
    }
  });
  return h('details', { class: 'panel' }, h('summary', {}, 'Create a schedule'), form);
}

export default {
  async render(ctx) {
    const body = h('div', {}, loading('Loading schedules…'));
    const msg = messageRegion();
    add(ctx.root, pageHeading(ctx.id ? `Schedule ${ctx.id}` : 'Schedules'), msg, body);
    await show(ctx, body, msg);
  },
};

async function show(ctx, body, msg) {
  let list;
  try {
    list = (await api.get('/api/v1/schedules', undefined, { signal: ctx.signal })).items;
  } catch (e) {
    if (e.name !== 'AbortError') fill(body, errorBox(e));
    return;
  }
  if (ctx.id) {
    const s = list.find((x) => x.name === ctx.id);
    if (!s) {
      fill(body, h('p', {}, 'No schedule has this name. ', h('a', { href: ctx.href('schedules') }, 'All schedules')));
      return;
    }
    fill(body, 
      h('dl', { class: 'pairs' },
        h('dt', {}, 'Kind'), h('dd', {}, s.kind),
        h('dt', {}, 'Next run'), h('dd', {}, time(s.next_run_at)),
        h('dt', {}, 'Last fired'), h('dd', {}, time(s.last_fired_at)),
        h('dt', {}, 'Last job'), h('dd', {}, s.last_job_id ? h('a', { href: ctx.href('jobs', s.last_job_id) }, `#${s.last_job_id}`) : '—'),
        h('dt', {}, 'Updated'), h('dd', {}, time(s.updated_at))),
      ctx.can('operator') ? editForm(ctx, s)
        : h('dl', { class: 'pairs' }, h('dt', {}, 'Cron (UTC)'), h('dd', {}, s.cron), h('dt', {}, 'Arguments'), h('dd', {}, text(s.args)),
          h('dt', {}, 'Enabled'), h('dd', {}, s.enabled ? 'yes' : 'no')));
    return;
  }
  const columns = [
    { label: 'Name', cell: (s) => h('a', { href: ctx.href('schedules', s.name) }, s.name) },
    { label: 'Cron (UTC)', cell: (s) => h('code', {}, s.cron) },
    { label: 'Kind', cell: (s) => s.kind },
    { label: 'Enabled', cell: (s) => badge(s.enabled ? 'enabled' : 'disabled') },
    { label: 'Next run', cell: (s) => time(s.next_run_at) },
    { label: 'Last job', cell: (s) => (s.last_job_id ? h('a', { href: ctx.href('jobs', s.last_job_id) }, `#${s.last_job_id}`) : '—') },
  ];
  if (ctx.can('operator')) {
    columns.push({
      label: 'Actions',
      cell: (s) => h('button', {
        type: 'button', dataset: { mutating: '' }, 'aria-label': `${s.enabled ? 'Disable' : 'Enable'} ${s.name}`,
        onclick: async (e) => {
          e.target.disabled = true;
          try {
            await api.mutate('PATCH', `/api/v1/schedules/${encodeURIComponent(s.name)}`, { enabled: !s.enabled });
            showMessage(msg, `${s.name} ${s.enabled ? 'disabled' : 'enabled'}.`);
            await show(ctx, body, msg);
          } catch (err) {
            showMessage(msg, err);
            e.target.disabled = false;
          }
        },
      }, s.enabled ? 'Disable' : 'Enable'),
    });
  }
  fill(body, list.length === 0 ? empty('No schedules.') : table('Schedules', columns, list),
    ctx.can('operator') ? createForm(ctx) : null);
}
