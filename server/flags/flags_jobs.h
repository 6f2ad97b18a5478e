/* Scheduled rollouts (flags_jobs.c, flags_rollouts_api.c). */
#ifndef QDB_FLAGS_JOBS_H
#define QDB_FLAGS_JOBS_H

#include <jansson.h>

#define FLAGS_ROLLOUT_KIND "flags.rollout_step"

/* Register the rollout step kind (from the module's init). 0 or -1. */
int flags_jobs_register(void);
/* The configuration serving `variant` to `percentage` % and `other` to the rest, enabled.
 * New reference. */
json_t *flags_rollout_config(const json_t *cfg, const char *variant, const char *other,
                             double percentage);
/* The variant that gets the rest: the default variant unless it is `variant`, then the off
 * variant; NULL when both are `variant`. Borrowed from cfg. */
const char *flags_rollout_other(const json_t *cfg, const char *variant);

#endif
