// What the browser tests share: free ports, psql, waiting for a URL, stopping a child, and
// Debian's chromium launched headless with the flags this machine needs (FACTS.md).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** Run one SQL statement as postgres on the test cluster. */
export function psql(pgPort, sql) {
  execFileSync('psql', ['-h', '127.0.0.1', '-p', String(pgPort), '-U', 'postgres', '-q', '-c', sql], { stdio: 'ignore' });
}

/** Poll url until it answers 2xx, for up to ms. */
export async function waitFor(url, ms = 30000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try { const r = await fetch(url); if (r.ok) return; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not come up`);
}

/** SIGTERM a child we spawned (SIGKILL after 15 s); resolves to its exit code. */
export function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
    const t = setTimeout(() => child.kill('SIGKILL'), 15000);
    child.once('exit', (code) => { clearTimeout(t); resolve(code); });
    child.kill('SIGTERM');
  });
}

/** A headless chromium with a fresh profile: {context, close()}. */
export async function launch() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'qdb-chromium-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  return {
    context,
    dir,
    async close() {
      await context.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
