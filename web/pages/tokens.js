// API tokens (admin): the list, create (the secret is shown once, with a copy button) and
// revoke behind a confirmation. Other roles reaching #/tokens see the server's 403.
import * as api from '../api.js';
import {
  h, fill, add, pageHeading, field, select, loading, empty, errorBox, table, time, text, badge, confirm,
  messageRegion, showMessage, copyable,
} from '../ui.js';

export default {
  async render(ctx) {
    const msg = messageRegion();
    const secret = h('div', {});
    const list = h('div', {}, loading('Loading tokens…'));
    add(ctx.root, pageHeading('API tokens'),
      h('p', { class: 'muted' }, 'Service credentials for the API. A secret is shown once, when the token is made; only its hash is kept.'),
      msg, ctx.can('admin') ? createForm() : null, secret, list);

    function createForm() {
      const name = h('input', { name: 'name', type: 'text', required: true, maxlength: '100', autocomplete: 'off' });
      const role = select('role', ['viewer', 'operator', 'admin'], 'viewer');
      const expires = h('input', { name: 'expires_in', type: 'text', value: '90d', maxlength: '10', spellcheck: 'false' });
      const envs = h('input', { name: 'environments', type: 'text', placeholder: 'all', spellcheck: 'false' });
      const submit = h('button', { type: 'submit', class: 'primary', dataset: { mutating: '' } }, 'Create token');
      const form = h('form', { class: 'inline-form', 'aria-label': 'Create an API token' },
        field('Name', name), field('Role', role), field('Expires in', expires, '1m to 400d, e.g. 30d'),
        field('Environments', envs, 'comma-separated; empty for all'), h('div', { class: 'actions' }, submit));
      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        const body = { name: name.value.trim(), role: role.value };
        if (expires.value.trim()) body.expires_in = expires.value.trim();
        const list = envs.value.split(',').map((s) => s.trim()).filter(Boolean);
        if (list.length) body.environments = list;
        submit.disabled = true;
        try {
          const r = await api.mutate('POST', '/api/v1/tokens', body);
          showMessage(msg, null);
          fill(secret, h('section', { class: 'secret-once', 'aria-labelledby': 'secret-h' },
            h('h2', { id: 'secret-h' }, `Token ${r.data.name} created`),
            h('p', {}, h('strong', {}, 'Copy the secret now: it is not shown again.')),
            copyable('Secret', r.data.token),
            h('button', { type: 'button', onclick: () => fill(secret) }, 'Done, hide it')));
          secret.querySelector('input')?.focus();
          form.reset();
          await load();
        } catch (err) {
          showMessage(msg, err);
        } finally {
          submit.disabled = false;
        }
      });
      return h('details', { class: 'panel', open: true }, h('summary', {}, 'Create a token'), form);
    }

    async function load() {
      let items;
      try {
        items = (await api.get('/api/v1/tokens', undefined, { signal: ctx.signal })).items;
      } catch (e) {
        if (e.name !== 'AbortError') fill(list, errorBox(e));
        return;
      }
      const columns = [
        { label: 'Name', cell: (t) => t.name },
        { label: 'Role', cell: (t) => t.role },
        { label: 'Environments', cell: (t) => (t.environments ? t.environments.join(', ') : 'all') },
        { label: 'Created by', cell: (t) => text(t.created_by) },
        { label: 'Created', cell: (t) => time(t.created_at) },
        { label: 'Expires', cell: (t) => time(t.expires_at) },
        { label: 'Last used', cell: (t) => time(t.last_used_at) },
        { label: 'Status', cell: (t) => (t.revoked_at ? h('span', {}, badge('revoked'), ' ', time(t.revoked_at)) : badge('active')) },
      ];
      if (ctx.can('admin')) {
        columns.push({
          label: 'Actions',
          cell: (t) => (t.revoked_at ? '' : h('button', {
            type: 'button', class: 'danger', dataset: { mutating: '', action: 'revoke' }, 'aria-label': `Revoke ${t.name}`,
            onclick: async () => {
              const ok = await confirm({
                title: `Revoke the token ${t.name}?`,
                body: 'Every service using it is refused from now on. This cannot be undone.',
                confirmLabel: 'Revoke',
              });
              if (!ok) return;
              try {
                await api.mutate('DELETE', `/api/v1/tokens/${encodeURIComponent(t.id)}`);
                showMessage(msg, `Token ${t.name} revoked.`);
                await load();
              } catch (err) {
                showMessage(msg, err);
              }
            },
          }, 'Revoke')),
        });
      }
      fill(list, items.length === 0 ? empty('No API tokens yet.') : table('API tokens', columns, items));
    }
    await load();
  },
};
