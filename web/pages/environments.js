// Environments: the five environments in display order with their place on the promotion
// path; #/environments/<name> shows one. The inventory's matrix (databases, topics,
// connectors, drift per environment) is added here by the inventory page.
import * as api from '../api.js';
import { h, fill, add, pageHeading, loading, errorBox, dl } from '../ui.js';

export default {
  async render(ctx) {
    const body = h('div', {}, loading('Loading environments…'));
    add(ctx.root, pageHeading(ctx.id ? `Environment ${ctx.id}` : 'Environments'), body);
    let items;
    try {
      items = (await api.get('/api/v1/environments', undefined, { signal: ctx.signal })).items;
    } catch (e) {
      if (e.name !== 'AbortError') fill(body, errorBox(e));
      return;
    }
    const path = items.filter((e) => e.promotion_order !== null).sort((a, b) => a.promotion_order - b.promotion_order);
    const shown = ctx.id ? items.filter((e) => e.name === ctx.id) : items;
    if (ctx.id && shown.length === 0) {
      fill(body, h('p', {}, 'No environment has this name. ', h('a', { href: ctx.href('environments') }, 'All environments')));
      return;
    }
    fill(body, 
      ctx.id ? h('p', {}, h('a', { href: ctx.href('environments') }, '← All environments')) : h('p', {}, 'Promotion path: ',
        path.map((e, i) => [i ? ' → ' : '', h('a', { href: ctx.href('environments', e.name) }, e.display_name)])),
      h('div', { class: 'cards' }, shown.map((e) => h('section', { class: 'card', 'aria-labelledby': `env-${e.name}` },
        h('h2', { id: `env-${e.name}` }, h('a', { href: ctx.href('environments', e.name) }, e.display_name), ' ', h('code', {}, e.name)),
        dl([['Purpose', e.purpose], ['Cluster', e.cluster], ['Data', e.data], ['Access', e.access],
          ['Promotion', e.promotion_order === null ? 'off the path (standby)' : `step ${e.promotion_order}`]]),
        h('p', {}, h('a', { href: ctx.href('inventory', e.name) }, `Inventory and drift plan of ${e.display_name}`)))
        // slot: the inventory page adds this environment's matrix (databases, topics,
        // consumer groups, connectors) and drift here.
      )));
  },
};
