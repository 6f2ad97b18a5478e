// The console's components: small functions that build DOM nodes. Every value from the
// API goes in as text (textContent, text nodes, attributes); nothing here parses HTML.

/** An element: h('a', {href: '#/jobs', class: 'x', onclick: fn}, 'text', node, ...).
 * Attributes are set with setAttribute (values as text), `on*` as listeners, `dataset`
 * as data-*; children are nodes or strings (as text), null and false are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') {
      el.value = v;
      if (el instanceof HTMLInputElement) el.defaultValue = v; // what form.reset() restores
    }
    else if (k === 'checked' || k === 'disabled' || k === 'hidden' || k === 'required' || k === 'selected') el[k] = Boolean(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

/** Append to el (nodes or strings as text; null, undefined and false skipped, where
 * Element.append would write "null"). */
export function add(el, ...children) {
  append(el, children);
  return el;
}

/** Replace the children of el (nodes or strings as text; null, undefined and false skipped). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** A value as text: '—' for null/undefined, JSON for objects. */
export function text(v) {
  if (v === null || v === undefined || v === '') return '—';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

const localFmt = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short',
});

/** A timestamp in the viewer's zone, with UTC on hover (title) and in datetime. */
export function time(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h('span', {}, String(iso));
  return h('time', { datetime: d.toISOString(), title: `UTC: ${d.toISOString().replace('T', ' ').replace('Z', ' UTC')}` },
    localFmt.format(d));
}

/** A number of seconds as "3 s", "4 min 10 s", "2 h 5 min", "3 d 4 h". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return s % 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s / 60} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** A job (or other) state as a badge; the word is always shown, colour only helps. */
export function badge(state, extraClass = '') {
  return h('span', { class: `badge badge-${String(state).replace(/[^a-z-]/g, '')} ${extraClass}`.trim(), dataset: { state } }, text(state));
}

/** Loading, empty and error states of a region. */
export function loading(what = 'Loading…') {
  return h('p', { class: 'state state-loading', role: 'status' }, what);
}
export function empty(what) {
  return h('p', { class: 'state state-empty' }, what);
}
export function errorBox(err) {
  return h('div', { class: 'message message-error', role: 'alert' },
    h('strong', {}, err?.title || 'Error'),
    err?.detail ? h('span', {}, ` ${err.detail}`) : (err?.title ? null : h('span', {}, ` ${err?.message || err}`)));
}

/** Show a message in a region kept for it (role=status or alert): the server's title and
 * detail for an ApiError, or a plain text for a success. */
export function showMessage(region, errOrText) {
  region.replaceChildren();
  if (errOrText === null || errOrText === undefined) { region.hidden = true; return; }
  region.hidden = false;
  if (typeof errOrText === 'string') {
    region.className = 'message message-ok';
    region.setAttribute('role', 'status');
    region.append(errOrText);
  } else {
    region.className = 'message message-error';
    region.setAttribute('role', 'alert');
    region.append(h('strong', {}, errOrText.title || 'Error'));
    if (errOrText.detail) region.append(` ${errOrText.detail}`);
    else if (!errOrText.title) region.append(` ${errOrText.message || errOrText}`);
  }
}

/** A region for showMessage, hidden while empty. */
export function messageRegion() {
  return h('div', { class: 'message', hidden: true, dataset: { message: '' } });
}

/** A table: columns [{label, cell: row => node|string, class}], rows. */
export function table(caption, columns, rows) {
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption },
    h('table', {},
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
      h('tbody', {}, rows.map((r) => tableRow(columns, r)))));
}

export function tableRow(columns, r) {
  return h('tr', {}, columns.map((c) => h('td', { class: c.class, 'data-label': c.label }, c.cell(r))));
}

/** A description list from [[term, value], ...]; values are nodes or text. */
export function dl(pairs, attrs = {}) {
  return h('dl', { class: 'pairs', ...attrs },
    pairs.map(([k, v]) => [h('dt', {}, k), h('dd', { dataset: { field: k } }, v instanceof Node ? v : text(v))]));
}

/** Any JSON value, pretty-printed as text. */
export function json(v) {
  return h('pre', { class: 'json' }, v === undefined ? '—' : JSON.stringify(v, null, 2));
}

/** A labelled form field: the label names the control (for, id). */
let fieldSeq = 0;
export function field(label, control, hint) {
  const id = control.id || `f${++fieldSeq}`;
  control.id = id;
  const hintEl = hint ? h('small', { id: `${id}-hint`, class: 'hint' }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hintEl);
}

/** A <select> of options [[value, label], ...] (or plain values). */
export function select(name, options, value) {
  return h('select', { name },
    options.map((o) => {
      const [v, l] = Array.isArray(o) ? o : [o, o];
      return h('option', { value: v, selected: v === value }, l);
    }));
}

/** A button that runs an async action, disabled while it runs; errors and successes go to
 * the message region. Mutating controls carry data-mutating (the tests look for them). */
export function actionButton(label, action, { region, className = '', mutating = true, ...attrs } = {}) {
  const b = h('button', { type: 'button', class: className, dataset: mutating ? { mutating: '' } : {}, ...attrs }, label);
  b.addEventListener('click', async () => {
    b.disabled = true;
    try {
      const ok = await action();
      if (region && typeof ok === 'string') showMessage(region, ok);
    } catch (e) {
      if (region) showMessage(region, e); else console.error(e);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

/** Ask before a destructive action: a modal <dialog> (focus stays inside, Escape cancels).
 * Resolves to true when confirmed. */
export function confirm({ title, body, confirmLabel = 'Confirm', danger = true }) {
  return new Promise((resolve) => {
    const heading = h('h2', { id: `dlg-${++fieldSeq}` }, title);
    const ok = h('button', { type: 'button', class: danger ? 'danger' : 'primary', dataset: { confirm: '' } }, confirmLabel);
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const dlg = h('dialog', { 'aria-labelledby': heading.id, class: 'confirm' },
      heading, h('p', {}, body), h('div', { class: 'actions' }, cancel, ok));
    const opener = document.activeElement;
    const done = (v) => {
      dlg.close();
      dlg.remove();
      if (opener && opener.isConnected) opener.focus(); // focus goes back where it was
      resolve(v);
    };
    ok.addEventListener('click', () => done(true));
    cancel.addEventListener('click', () => done(false));
    dlg.addEventListener('cancel', (e) => { e.preventDefault(); done(false); });
    document.body.append(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

/** A read-only text with a copy button (for a secret shown once). */
export function copyable(label, value) {
  const input = h('input', { type: 'text', readonly: true, value, class: 'secret', spellcheck: 'false', autocomplete: 'off' });
  const status = h('span', { role: 'status', class: 'muted' });
  const btn = h('button', { type: 'button' }, 'Copy');
  btn.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(value);
      status.textContent = 'Copied.';
    } catch {
      input.select();
      status.textContent = 'Select the text and copy it (the browser refused clipboard access).';
    }
  });
  return h('div', { class: 'copyable' }, field(label, input), h('div', { class: 'actions' }, btn, status));
}

/** Page heading, focusable so that navigation can move focus to it. */
export function pageHeading(title, ...extra) {
  return h('div', { class: 'page-head' }, h('h1', { tabindex: '-1', id: 'page-title' }, title), ...extra);
}

/** A filter form in a panel: open on wide screens or when a filter is set, folded on
 * narrow ones so that the results come first. */
export function filterPanel(form, active) {
  const narrow = window.matchMedia('(max-width: 700px)').matches;
  return h('details', { class: 'panel', open: active || !narrow }, h('summary', {}, active ? 'Filters (active)' : 'Filters'), form);
}

/** A card of the dashboard. */
export function card(title, ...children) {
  const id = `card-${++fieldSeq}`;
  return h('section', { class: 'card', 'aria-labelledby': id }, h('h2', { id }, title), ...children);
}

/** A local datetime-local value as RFC 3339 UTC ('' stays ''). */
export function localToIso(v) {
  if (!v) return '';
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}
/** RFC 3339 as a datetime-local value in the viewer's zone. */
export function isoToLocal(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}
