/* The platform's calls in a build without hiredis: each says so. The
 * parsers (url.c, task.c, sweep.c) are built either way. */
#include <stdlib.h>
#include <string.h>

#include "osprey/platform.h"

static int missing(void) {
    return osp_error(OSP_ENOTSUP, "this osprey was built without hiredis (libhiredis-dev): no task platform");
}

int osp_platform_available(void) { return 0; }
int osp_broker_connect(const char *url, const char *password_file, osp_broker **out) {
    *out = NULL;
    return missing();
}
void osp_broker_free(osp_broker *b) { (void)b; }
int osp_task_submit(osp_broker *b, const osp_task_spec *spec, char id[OSP_TASK_ID_MAX]) {
    id[0] = 0;
    return missing();
}
int osp_task_get(osp_broker *b, const char *id, char **json) {
    *json = NULL;
    return missing();
}
int osp_task_list(osp_broker *b, char **json) {
    *json = NULL;
    return missing();
}
int osp_task_cancel(osp_broker *b, const char *id, char state[16], int *had_ended) {
    state[0] = 0;
    *had_ended = 0;
    return missing();
}
int osp_task_logs(osp_broker *b, const char *id, char after[64], int block_ms,
                  void (*fn)(const osp_task_log_line *line, void *user), void *user) {
    return missing();
}
int osp_events_subscribe(osp_broker *b) { return missing(); }
int osp_events_next(osp_broker *b, int timeout_ms, char **json) {
    *json = NULL;
    return missing();
}
void osp_worker_defaults(osp_worker_config *cfg) { memset(cfg, 0, sizeof *cfg); }
int osp_worker_run(const osp_worker_config *cfg) { return missing(); }
void osp_worker_stop(void) {}
int osp_sweep_submit(osp_broker *b, const osp_task_spec *base, const char *grid, int random, uint64_t seed,
                     char id[OSP_TASK_ID_MAX]) {
    id[0] = 0;
    return missing();
}
int osp_sweep_get(osp_broker *b, const char *id, char **json) {
    *json = NULL;
    return missing();
}
