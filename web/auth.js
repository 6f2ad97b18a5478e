// Console sign-in: OAuth 2.0 Authorization Code flow with PKCE (S256) against the issuer the
// server names at /api/v1/auth/config: Keycloak in oidc mode, the server's own dev issuer in
// dev mode. The same code runs for both.
//
// The access token lives in this module's memory only (never localStorage or
// sessionStorage); a reload signs in again (Keycloak's session makes that a quick round
// trip). Across the redirect only the PKCE verifier, the state and the page to come back to
// are kept in sessionStorage, and removed once used. When the token expires (or the API
// answers 401) the console signs in again and comes back to the same page.
const PENDING = 'qdb.signin.pending';

let config = null;
let token = null;
let expiresAt = 0; // ms since epoch
let expiryTimer = null;
const listeners = new Set();

function b64url(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function randomString(n) {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

async function s256(text) {
  return b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));
}

function redirectUri() {
  return `${location.origin}/`;
}

function notify() {
  for (const fn of listeners) fn(signedIn());
}

function scheduleExpiry() {
  clearTimeout(expiryTimer);
  if (!token) return;
  // Sign in again a little before the token runs out, so no request fails with it.
  const ms = Math.max(expiresAt - Date.now() - 15000, 1000);
  expiryTimer = setTimeout(() => signIn(), ms);
}

/** The sign-in settings (mode, issuer, client id, endpoints). */
export async function loadConfig() {
  if (!config) {
    const r = await fetch('/api/v1/auth/config');
    if (!r.ok) throw new Error(`sign-in is unavailable (${r.status})`);
    config = await r.json();
  }
  return config;
}

/** Whether the console holds a token that has not expired. */
export function signedIn() {
  return token !== null && Date.now() < expiresAt;
}

/** Call fn(signedIn) whenever the sign-in state changes. */
export function onChange(fn) {
  listeners.add(fn);
}

/** Send the browser to the issuer's sign-in page; it comes back to this very page. */
export async function signIn() {
  const cfg = await loadConfig();
  const verifier = randomString(32);
  const state = randomString(16);
  sessionStorage.setItem(PENDING, JSON.stringify({
    state, verifier, returnTo: location.pathname + location.search + location.hash,
  }));
  const q = new URLSearchParams({
    response_type: 'code',
    client_id: cfg.client_id,
    redirect_uri: redirectUri(),
    scope: cfg.scope,
    state,
    code_challenge: await s256(verifier),
    code_challenge_method: 'S256',
  });
  location.assign(`${cfg.authorization_endpoint}?${q}`);
}

/** Forget the token; in oidc mode also end the issuer's session. */
export async function signOut() {
  const cfg = await loadConfig();
  token = null;
  expiresAt = 0;
  clearTimeout(expiryTimer);
  notify();
  if (cfg.end_session_endpoint) {
    const q = new URLSearchParams({ client_id: cfg.client_id, post_logout_redirect_uri: redirectUri() });
    location.assign(`${cfg.end_session_endpoint}?${q}`);
  }
}

/** Finish a sign-in when the issuer sent us back with ?code&state. Call once at start. */
export async function completeSignIn() {
  const params = new URLSearchParams(location.search);
  const code = params.get('code');
  const state = params.get('state');
  const error = params.get('error');
  if (!code && !error) return false;
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || 'null');
  sessionStorage.removeItem(PENDING);
  const back = pending?.returnTo || '/';
  history.replaceState(null, '', back);
  if (error) throw new Error(`sign-in failed: ${error}`);
  if (!pending || pending.state !== state) throw new Error('sign-in failed: the state does not match');
  const cfg = await loadConfig();
  const r = await fetch(cfg.token_endpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: redirectUri(),
      client_id: cfg.client_id,
      code_verifier: pending.verifier,
    }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok || !body.access_token) throw new Error(`sign-in failed: ${body.error || r.status}`);
  token = body.access_token;
  expiresAt = Date.now() + (Number(body.expires_in) || 300) * 1000;
  scheduleExpiry();
  notify();
  return true;
}

/** fetch() against this service's API with the bearer token. Without a valid token, or on a
 * 401, it signs in again (the page comes back afterwards) and the promise never settles. */
export async function apiFetch(path, options = {}) {
  if (!signedIn()) {
    await signIn();
    return new Promise(() => {});
  }
  const headers = new Headers(options.headers || {});
  headers.set('Authorization', `Bearer ${token}`);
  const r = await fetch(path, { ...options, headers });
  if (r.status === 401) {
    token = null;
    await signIn();
    return new Promise(() => {});
  }
  return r;
}
