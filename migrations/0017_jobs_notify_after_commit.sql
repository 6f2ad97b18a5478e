-- New jobs are announced after the enqueuing transaction commits, by the jobs room
-- (server/jobs/jobs_notify.c), no longer by this trigger inside it. A transaction that has
-- called NOTIFY takes PostgreSQL's notification queue lock (one per cluster) at its commit
-- and holds it until its commit record is flushed, so that every enqueue waited for the WAL
-- flush of the one before it: one job per flush, whatever the number of callers (issue 9:
-- 313 jobs/s). The update trigger stays: claims, completions and operator actions are
-- few (batches) and no request waits on them. A job inserted by hand in SQL is found by
-- each replica's once-a-second poll (jobs_listener.c) instead of at once.
DROP TRIGGER job_events_insert ON job;
DROP FUNCTION job_notify_insert();
