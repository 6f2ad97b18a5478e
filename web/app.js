// The console talks only to this service's own API.
const status = document.getElementById('status');
try {
  const r = await fetch('/readyz');
  const body = await r.json();
  status.textContent = r.ok ? `Ready (schema version ${body.schema_version})` : `Not ready: ${body.detail}`;
  status.className = r.ok ? 'ok' : 'bad';
} catch (e) {
  status.textContent = 'The service cannot be reached.';
  status.className = 'bad';
}
