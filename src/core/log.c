/* Leveled logging to stderr. The level is the one piece of global mutable
 * state besides the thread-local error (see DESIGN.md). */
#include <stdio.h>

#include "osprey/core.h"

static osp_log_level current_level = OSP_LOG_INFO;

void osp_log_set_level(osp_log_level level) { current_level = level; }

osp_log_level osp_log_get_level(void) { return current_level; }

void osp_log(osp_log_level level, const char *fmt, ...) {
    static const char *const prefix[] = {"debug: ", "", "warning: ", "error: "};
    if (level < current_level || level >= OSP_LOG_QUIET) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One fputs per line keeps lines from different threads whole. */
    char out[1100];
    snprintf(out, sizeof out, "%s%s\n", prefix[level], line);
    fputs(out, stderr);
}
