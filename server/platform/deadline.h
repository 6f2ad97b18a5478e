/* Absolute times for pthread_cond_timedwait and friends, which want "now on this clock plus
 * a delay" as a normalised struct timespec: one helper instead of a copy of the carry
 * arithmetic at every wait. */
#ifndef QDB_PLATFORM_DEADLINE_H
#define QDB_PLATFORM_DEADLINE_H

#include <time.h>

/* The time `seconds` from now on `clk` (CLOCK_REALTIME for a default condition variable
 * or pthread_timedjoin_np, CLOCK_MONOTONIC for one set up with pthread_condattr_setclock).
 * A negative delay counts as 0. */
struct timespec deadline_after(clockid_t clk, double seconds);

#endif
