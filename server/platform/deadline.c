#include "platform/deadline.h"

struct timespec deadline_after(clockid_t clk, double seconds)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    if (seconds < 0)
        seconds = 0;
    time_t whole = (time_t)seconds;
    long ns = ts.tv_nsec + (long)((seconds - (double)whole) * 1e9);
    ts.tv_sec += whole + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    return ts;
}
