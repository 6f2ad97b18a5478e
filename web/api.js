// The console's one API client: every page talks to the service through this module.
// It adds the bearer token (auth.js keeps it in memory), turns RFC 9457 problem+json
// replies into ApiError (title, detail, status, field), walks cursor pages and reads the
// job events stream (Server-Sent Events over fetch, so that the token travels in the
// Authorization header and never in a URL).
import * as auth from './auth.js';

/** A refused or failed request: the server's problem+json, or a stand-in for a network
 * failure (status 0). `message` is "title: detail", fit to show as it is. */
export class ApiError extends Error {
  constructor(status, problem) {
    const title = problem?.title || (status ? `HTTP ${status}` : 'The service cannot be reached');
    const detail = problem?.detail || '';
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.field = problem?.field || null;
    this.problem = problem || null;
  }
}

/** Roles are ordered: viewer < operator < admin. */
const ROLES = ['viewer', 'operator', 'admin'];
export function roleAtLeast(role, min) {
  return ROLES.indexOf(role) >= ROLES.indexOf(min) && ROLES.indexOf(min) >= 0;
}

function withQuery(path, query) {
  if (!query) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

async function send(method, path, { query, body, headers, signal } = {}) {
  const h = new Headers(headers || {});
  const init = { method, headers: h, signal };
  if (body !== undefined) {
    h.set('Content-Type', 'application/json');
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await auth.apiFetch(withQuery(path, query), init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, { detail: e.message });
  }
  if (!r.ok) {
    const problem = await r.json().catch(() => null);
    throw new ApiError(r.status, problem);
  }
  return r;
}

/** GET a JSON document. Throws ApiError. */
export async function get(path, query, options = {}) {
  const r = await send('GET', path, { ...options, query });
  return r.json();
}

/** A mutation (POST, PATCH, DELETE) with an optional JSON body. Resolves to
 * {status, data, location}; data is null for an empty reply. Throws ApiError. */
export async function mutate(method, path, body, options = {}) {
  const r = await send(method, path, { ...options, body });
  const text = await r.text();
  return { status: r.status, data: text ? JSON.parse(text) : null, location: r.headers.get('Location') };
}

/** A raw Response (for downloads such as the audit export). Throws ApiError. */
export async function raw(path, query, options = {}) {
  return send('GET', path, { ...options, query });
}

/** Cursor paging: next() fetches the following page of `path` with `query` and resolves to
 * its items; `done` turns true after the last page (next_cursor null). */
export function pager(path, query = {}, { signal } = {}) {
  let cursor = null;
  const p = {
    done: false,
    async next() {
      const page = await get(path, { ...query, cursor }, { signal });
      cursor = page.next_cursor;
      p.done = !cursor;
      return page.items;
    },
  };
  return p;
}

/** The public Prometheus metrics as [{name, labels, value}] (for gauges the API has no
 * document for, such as jobs by state). */
export async function metrics({ signal } = {}) {
  let r;
  try {
    r = await fetch('/metrics', { signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, { detail: e.message });
  }
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
  const out = [];
  for (const line of (await r.text()).split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

// ---- the job events stream (GET /api/v1/jobs/events) ----
// One connection for the whole console, opened while some page listens. Listeners get
// {type: 'job', id, state}, {type: 'resync'} (changes may have been missed: reload), and
// {type: 'open'} / {type: 'closed'} for a live indicator. After a drop it reconnects
// (the server's `retry`, 2 s by default) and sends 'resync', since changes in between
// were not seen.
const listeners = new Set();
let streamAbort = null;
let streamOpen = false;

function emit(ev) {
  for (const fn of [...listeners]) {
    try { fn(ev); } catch (e) { console.error(e); }
  }
}

async function runStream() {
  let retryMs = 2000;
  let first = true;
  const abort = new AbortController();
  streamAbort = abort;
  while (!abort.signal.aborted) {
    // signed out meanwhile: stop (apiFetch would send the browser to sign in)
    if (!auth.signedIn()) break;
    try {
      const r = await auth.apiFetch('/api/v1/jobs/events', {
        headers: { Accept: 'text/event-stream' }, signal: abort.signal,
      });
      if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
      streamOpen = true;
      emit({ type: 'open' });
      if (!first) emit({ type: 'resync' });
      first = false;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      let event = { type: 'message', data: '' };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.search(/\r\n|\n|\r/)) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + (buf.startsWith('\r\n', nl) ? 2 : 1));
          if (line === '') {
            if (event.type === 'job') {
              try {
                const d = JSON.parse(event.data);
                emit({ type: 'job', id: Number(d.id), state: d.state });
              } catch { /* a malformed event is skipped */ }
            } else if (event.type === 'resync') {
              emit({ type: 'resync' });
            }
            event = { type: 'message', data: '' };
            continue;
          }
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') event.type = val;
          else if (field === 'data') event.data += (event.data ? '\n' : '') + val;
          else if (field === 'retry' && /^\d+$/.test(val)) retryMs = Number(val);
        }
      }
    } catch (e) {
      if (abort.signal.aborted) break;
    }
    if (streamOpen) {
      streamOpen = false;
      emit({ type: 'closed' });
    }
    if (abort.signal.aborted) break;
    await new Promise((resolve) => setTimeout(resolve, retryMs));
  }
  if (streamAbort === abort) { // ended by itself (signed out): the next listener starts anew
    streamAbort = null;
    streamOpen = false;
  }
}

/** Listen to job changes; returns the function that stops listening. The connection
 * outlives its last listener by a few seconds, so that moving between pages keeps it:
 * a listener that joins an open stream misses nothing from then on and gets no 'open';
 * one that joins before the stream is up gets 'open' when it is (then reload, since
 * changes between its first fetch and the stream's start were not seen). */
let closeTimer = null;
export function onJobEvents(fn) {
  listeners.add(fn);
  clearTimeout(closeTimer);
  closeTimer = null;
  if (!streamAbort) runStream();
  return () => {
    listeners.delete(fn);
    if (listeners.size === 0 && streamAbort && !closeTimer) {
      closeTimer = setTimeout(() => {
        closeTimer = null;
        if (listeners.size > 0 || !streamAbort) return;
        streamAbort.abort();
        streamAbort = null;
        streamOpen = false;
      }, 5000);
    }
  };
}

/** Close the stream now (sign-out). */
export function closeJobEvents() {
  clearTimeout(closeTimer);
  closeTimer = null;
  if (streamAbort) streamAbort.abort();
  streamAbort = null;
  streamOpen = false;
}

/** Whether the events stream is connected now. */
export function jobEventsLive() {
  return streamOpen;
}
