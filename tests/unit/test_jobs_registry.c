/* The job engine's registries fail loudly when full: the 257th kind and the 257th default
 * schedule are refused (the registering module's init fails, and start-up with it), never
 * dropped; registering a name again replaces it, also when the table is full. */
#include <stdio.h>
#include <string.h>

#include "jobs/jobs_internal.h"
#include "unit.h"

static char kind_names[JOBS_MAX_KINDS + 1][16];
static struct jobs_kind kinds[JOBS_MAX_KINDS + 1];
static char schedule_names[JOBS_MAX_DEFAULT_SCHEDULES + 1][16];
static struct jobs_schedule_default schedules[JOBS_MAX_DEFAULT_SCHEDULES + 1];

static void test_kinds(void)
{
    EXPECT(JOBS_MAX_KINDS == 256, "the limit is 256 (%d)", JOBS_MAX_KINDS);
    int ok = 1;
    for (int i = 0; i <= JOBS_MAX_KINDS; i++) {
        snprintf(kind_names[i], sizeof kind_names[i], "k%d", i);
        kinds[i] = (struct jobs_kind){.kind = kind_names[i], .max_attempts = 1};
    }
    for (int i = 0; i < JOBS_MAX_KINDS; i++)
        ok &= jobs_register_kind(&kinds[i]) == 0;
    EXPECT(ok, "256 distinct kinds register");
    EXPECT(jobs_kind_count() == JOBS_MAX_KINDS, "256 kinds counted (%zu)", jobs_kind_count());
    EXPECT(jobs_register_kind(&kinds[JOBS_MAX_KINDS]) == -1, "the 257th kind is refused");
    EXPECT(jobs_kind_count() == JOBS_MAX_KINDS, "still 256 (%zu)", jobs_kind_count());
    EXPECT(jobs_find_kind("k256") == NULL, "the refused kind is not found");
    /* a room registering again replaces its kind, full table or not */
    static struct jobs_kind again = {.kind = "k7", .max_attempts = 5};
    EXPECT(jobs_register_kind(&again) == 0, "re-registering k7 replaces it");
    EXPECT(jobs_find_kind("k7") == &again, "k7 is the new one");
    EXPECT(jobs_kind_index("k255") == 255 && jobs_kind_at(255) == &kinds[255],
           "the last kind is at index 255 (per-kind metrics are sized by the same limit)");
}

static void test_default_schedules(void)
{
    static struct jobs_schedule_default bad = {.name = "bad", .cron = "61 * * * *", .kind = "k0"};
    EXPECT(jobs_schedule_ensure(&bad) == -1, "a default schedule whose cron does not parse");
    int ok = 1;
    for (int i = 0; i <= JOBS_MAX_DEFAULT_SCHEDULES; i++) {
        snprintf(schedule_names[i], sizeof schedule_names[i], "s%d", i);
        schedules[i] = (struct jobs_schedule_default){
            .name = schedule_names[i], .cron = "0 3 * * *", .kind = "k0"};
    }
    for (int i = 0; i < JOBS_MAX_DEFAULT_SCHEDULES; i++)
        ok &= jobs_schedule_ensure(&schedules[i]) == 0;
    EXPECT(ok, "256 default schedules register");
    EXPECT(jobs_schedule_ensure(&schedules[JOBS_MAX_DEFAULT_SCHEDULES]) == -1,
           "the 257th default schedule is refused");
    static struct jobs_schedule_default again = {.name = "s3", .cron = "5 4 * * *", .kind = "k1"};
    EXPECT(jobs_schedule_ensure(&again) == 0, "re-registering s3 replaces it");
}

int main(void)
{
    test_kinds();
    test_default_schedules();
    return unit_done();
}
