// The Node side of bench/jobs.sh, on the same PostgreSQL:
//   node graphile.mjs throughput   graphile-worker 0.17.3: N no-op jobs enqueued in batches
//                                  first, then drained
//   node graphile.mjs latency      graphile-worker: idle pickup latency (commit -> task
//                                  start), 200 jobs
//   node graphile.mjs qdb-latency  qdb-control (already serving DATABASE_URL): the same
//                                  measure, commit of the INSERT -> the runner's first
//                                  statement (the noop's job_log line), same clock
// Prints one JSON line. Settings mirror qdb-control's: 8 concurrent jobs, a local queue
// (localQueue mode, batches of JOBS_BATCH) and batched completions.
import { performance } from 'node:perf_hooks';
import { Logger, makeWorkerUtils, run } from 'graphile-worker';
import pg from 'pg';

const mode = process.argv[2] ?? 'throughput';
const connectionString = process.env.DATABASE_URL;
const N = Number(process.env.N ?? 50000);
const BATCH = Number(process.env.JOBS_BATCH ?? 100);
const CONCURRENCY = Number(process.env.WORKERS ?? 8);

const preset = {
  worker: {
    connectionString,
    concurrentJobs: CONCURRENCY,
    maxPoolSize: CONCURRENCY + 2,
    pollInterval: 1000,
    localQueue: { size: BATCH },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
  },
};
const silent = new Logger(() => () => {});
const quiet = { logger: silent };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function throughput() {
  const utils = await makeWorkerUtils({ connectionString, logger: silent });
  await utils.migrate();
  for (let done = 0; done < N; done += 1000) {
    const n = Math.min(1000, N - done);
    await utils.addJobs(Array.from({ length: n }, () => ({ identifier: 'noop', payload: {} })));
  }
  let count = 0;
  let resolveAll;
  const all = new Promise((r) => { resolveAll = r; });
  // timed like qdb-control's figure: from the first job's start to the last completion
  let t0 = 0;
  const runner = await run({
    preset,
    noHandleSignals: true,
    taskList: {
      noop: async () => {
        if (count === 0) t0 = performance.now();
        if (++count === N) resolveAll();
      },
    },
    ...quiet,
  });
  await all;
  // completions are batched: the last one is recorded when the database has no job left
  // (jobs are deleted on completion); polled only now, so as not to load it meanwhile
  for (;;) {
    const left = await utils.withPgClient((c) =>
      c.query('select exists (select 1 from graphile_worker._private_jobs) as any'));
    if (!left.rows[0].any) break;
    await sleep(1);
  }
  const secs = (performance.now() - t0) / 1000;
  await runner.stop();
  await utils.release();
  console.log(JSON.stringify({ engine: 'graphile-worker', jobs: N, seconds: secs, jobs_per_s: N / secs }));
}

async function latency() {
  const utils = await makeWorkerUtils({ connectionString, logger: silent });
  await utils.migrate();
  const started = new Map();
  const runner = await run({
    preset,
    noHandleSignals: true,
    taskList: { lat: async (payload) => { started.set(payload.i, performance.now()); } },
    ...quiet,
  });
  await sleep(1500);
  const lat = [];
  for (let i = 0; i < 200; i++) {
    await utils.addJob('lat', { i });
    const committed = performance.now();
    while (!started.has(i)) await sleep(0.2);
    lat.push(started.get(i) - committed);
    await sleep(20 + Math.random() * 30);
  }
  await runner.stop();
  await utils.release();
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  console.log(JSON.stringify({ engine: 'graphile-worker', p50_ms: q(0.5), p99_ms: q(0.99) }));
}

async function qdbLatency() {
  const c = new pg.Client({ connectionString });
  await c.connect();
  const lat = [];
  for (let i = 0; i < 200; i++) {
    const r = await c.query(
      "INSERT INTO job (kind, args, created_by, max_attempts, timeout_seconds) " +
        "VALUES ('noop', '{\"log\":true}', 'bench', 3, 60) RETURNING id");
    // autocommit: the INSERT has committed when its reply arrives
    const committed = performance.timeOrigin + performance.now();
    const id = r.rows[0].id;
    // read the runner's start afterwards: polling meanwhile would load the database
    await sleep(20 + Math.random() * 30);
    let started;
    for (;;) {
      const l = await c.query(
        'SELECT extract(epoch FROM time)::float8 * 1000 AS ms FROM job_log WHERE job_id = $1', [id]);
      if (l.rows.length) { started = l.rows[0].ms; break; }
      await sleep(5);
    }
    lat.push(started - committed);
  }
  await c.end();
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  console.log(JSON.stringify({ engine: 'qdb-control', p50_ms: q(0.5), p99_ms: q(0.99) }));
}

if (mode === 'latency') await latency();
else if (mode === 'qdb-latency') await qdbLatency();
else await throughput();
process.exit(0);
