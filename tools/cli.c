/* Helpers shared by the subcommands. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

int cli_fail(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "osprey %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_fail_lib(const char *cmd, const char *what) {
    const char *msg = osp_last_error();
    if (what && *what) return cli_fail(cmd, "%s: %s", what, *msg ? msg : "failed");
    return cli_fail(cmd, "%s", *msg ? msg : "failed");
}

int cli_int64(const char *cmd, const char *opt, const char *s, int64_t min, int64_t max, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return cli_fail(cmd, "%s must be an integer from %lld to %lld, not '%s'", opt,
                        (long long)min, (long long)max, s);
    *out = v;
    return 0;
}

int cli_int(const char *cmd, const char *opt, const char *s, long min, long max, int *out) {
    int64_t v = 0;
    if (cli_int64(cmd, opt, s, min, max, &v)) return 1;
    *out = (int)v;
    return 0;
}

int cli_u64(const char *cmd, const char *opt, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-')
        return cli_fail(cmd, "%s must be a non-negative integer, not '%s'", opt, s);
    *out = v;
    return 0;
}

int cli_float(const char *cmd, const char *opt, const char *s, double min, double max, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < min || v > max)
        return cli_fail(cmd, "%s must be a number from %g to %g, not '%s'", opt, min, max, s);
    *out = (float)v;
    return 0;
}

int cli_tty(void) { return isatty(STDERR_FILENO); }

void cli_format_duration(double seconds, char *buf, size_t len) {
    if (!(seconds >= 0) || seconds > 1e7) {
        snprintf(buf, len, "--:--");
        return;
    }
    long s = lround(seconds);
    if (s >= 3600) snprintf(buf, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else snprintf(buf, len, "%ld:%02ld", s / 60, s % 60);
}

int cli_open_dataset(const char *cmd, const char *path, osp_split split, osp_dataset **out) {
    if (osp_dataset_open_idx(path, split, out)) return cli_fail_lib(cmd, NULL);
    return 0;
}
