/* Helpers shared by the subcommands. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
    /* "osprey index: index: ..." says the module twice: once is enough. */
    size_t n = strlen(cmd);
    if (!strncmp(msg, cmd, n) && msg[n] == ':' && msg[n + 1] == ' ') msg += n + 2;
    if (what && *what) return cli_fail(cmd, "%s: %s", what, *msg ? msg : "failed");
    return cli_fail(cmd, "%s", *msg ? msg : "failed");
}

int cli_check_output(const char *cmd, const char *opt, const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return cli_fail(cmd, "%s %s is a folder: give a file name (such as %s/model.osp)", opt,
                        path, path);
    /* The file is written as a temporary beside it and renamed into place:
     * make that temporary now, so a missing or read-only folder shows
     * before the work rather than after it. */
    osp_atomic_file f;
    if (osp_atomic_open(&f, path)) {
        const char *msg = osp_last_error(), *why = strrchr(msg, ':');
        const char *slash = strrchr(path, '/');
        int dir_len = slash ? (slash == path ? 1 : (int)(slash - path)) : 1;
        return cli_fail(cmd, "%s %s: cannot write in %.*s: %s", opt, path, dir_len,
                        slash ? path : ".", why && why[1] == ' ' ? why + 2 : msg);
    }
    osp_atomic_abort(&f);
    return 0;
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

int cli_bytes(const char *cmd, const char *opt, const char *s, int64_t *out) {
    char *end = (char *)s;
    double v = 0;
    errno = 0;
    if (*s >= '0' && *s <= '9') v = strtod(s, &end);
    double unit = 1;
    switch (*end) {
    case 'k': case 'K': unit = 1024.0; end++; break;
    case 'm': case 'M': unit = 1024.0 * 1024; end++; break;
    case 'g': case 'G': unit = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': unit = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (unit > 1 && (*end == 'i' || *end == 'I') && (end[1] == 'b' || end[1] == 'B')) end += 2;
    else if (*end == 'b' || *end == 'B') end++;
    const double bytes = v * unit;
    if (errno || end == s || *end || !(bytes >= 1) || bytes > 9.0e15)
        return cli_fail(cmd, "%s must be a size such as 512M, 4G or 1.5G (K, M, G, T: powers of 1024), "
                        "not '%s'", opt, s);
    *out = (int64_t)bytes;
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

/* ---- datasets ------------------------------------------------------------ */

cli_image_options cli_image_defaults(void) {
    cli_image_options o;
    memset(&o, 0, sizeof o);
    o.transform = osp_transform_defaults(0, 0, 0);
    o.workers = -1;
    return o;
}

/* "A,B" with min <= A <= B <= max. */
static int parse_pair(const char *cmd, const char *opt, const char *s, double min, double max,
                      float *a, float *b) {
    char *end;
    errno = 0;
    double x = strtod(s, &end), y;
    if (errno || end == s || *end != ',') goto bad;
    const char *t = end + 1;
    y = strtod(t, &end);
    if (errno || end == t || *end || !isfinite(x) || !isfinite(y) || x < min || y > max || x > y) goto bad;
    *a = (float)x;
    *b = (float)y;
    return 0;
bad:
    return cli_fail(cmd, "--%s must be two numbers MIN,MAX with %g <= MIN <= MAX <= %g, not '%s'",
                    opt, min, max, s);
}

/* A count with an optional K, M or G (powers of 1024): "64M". */
static int parse_pixels(const char *cmd, const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    int shift = 0;
    if (*end == 'K' || *end == 'k') shift = 10, end++;
    else if (*end == 'M' || *end == 'm') shift = 20, end++;
    else if (*end == 'G' || *end == 'g') shift = 30, end++;
    if (errno || end == s || *end || v < 1 || v > ((long long)1 << 40) >> shift)
        return cli_fail(cmd, "--max-pixels must be a count like 64M or 1000000 (at most 1T), not '%s'", s);
    *out = (int64_t)v << shift;
    return 0;
}

static int parse_augment(const char *cmd, const char *s, osp_augment *a) {
    a->crop = a->flip = 0;
    if (!strcmp(s, "none")) return 0;
    char buf[128];
    if (strlen(s) >= sizeof buf) return cli_fail(cmd, "--augment: '%s' is too long", s);
    strcpy(buf, s);
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!strcmp(tok, "crop")) a->crop = 1;
        else if (!strcmp(tok, "flip")) a->flip = 1;
        else return cli_fail(cmd, "--augment takes none or a list of crop and flip, not '%s'", tok);
    }
    return 0;
}

int cli_image_option(const char *cmd, const char *name, const char *v, cli_image_options *o) {
    osp_transform *t = &o->transform;
    osp_augment *a = &t->augment;
    float lo, hi;
    if (!strcmp(name, "augment")) {
        o->augment_set = 1;
        return parse_augment(cmd, v, a);
    }
    if (!strcmp(name, "crop-scale")) return parse_pair(cmd, name, v, 1e-3, 1, &a->scale_min, &a->scale_max);
    if (!strcmp(name, "crop-ratio")) return parse_pair(cmd, name, v, 1e-2, 1e2, &a->ratio_min, &a->ratio_max);
    if (!strcmp(name, "multiscale")) {
        if (parse_pair(cmd, name, v, 1, 65536, &lo, &hi)) return 1;
        a->short_min = (int)lo;
        a->short_max = (int)hi;
        return 0;
    }
    if (!strcmp(name, "jitter")) return cli_float(cmd, "--jitter", v, 0, 0.99, &a->jitter);
    if (!strcmp(name, "crop-fraction")) return cli_float(cmd, "--crop-fraction", v, 0.01, 1, &t->crop_fraction);
    if (!strcmp(name, "resize")) {
        if (!strcmp(v, "center")) t->resize = OSP_RESIZE_CENTER;
        else if (!strcmp(v, "stretch")) t->resize = OSP_RESIZE_STRETCH;
        else if (!strcmp(v, "letterbox")) t->resize = OSP_RESIZE_LETTERBOX;
        else return cli_fail(cmd, "--resize must be center, stretch or letterbox, not '%s'", v);
        return 0;
    }
    if (!strcmp(name, "max-pixels")) return parse_pixels(cmd, v, &o->max_pixels);
    if (!strcmp(name, "workers")) return cli_int(cmd, "--workers", v, 0, 256, &o->workers);
    if (!strcmp(name, "prefetch")) return cli_int(cmd, "--prefetch", v, 1, 64, &o->prefetch);
    return -1;
}

int cli_open_dataset(const char *cmd, const char *path, osp_split split, const osp_net *net,
                     const cli_image_options *io, const char *const *class_names, int n_classes,
                     osp_dataset **out) {
    osp_image_data_options opt = {.transform = io->transform, .max_pixels = io->max_pixels,
                                  .class_names = class_names, .n_classes = n_classes};
    if (net->input.ndim == 3) {
        opt.transform.channels = (int)net->input.dim[0];
        opt.transform.height = (int)net->input.dim[1];
        opt.transform.width = (int)net->input.dim[2];
    }
    if (osp_dataset_open(path, split, &opt, out)) return cli_fail_lib(cmd, NULL);
    if (io->workers >= 0) (*out)->load_workers = io->workers;
    if (io->prefetch > 0) (*out)->load_prefetch = io->prefetch;
    return 0;
}

int cli_open_synthetic(const char *cmd, const char *path, osp_split split, const osp_net *net,
                       osp_dataset **out) {
    if (strncmp(path, "synthetic:", 10)) return -1;
    int64_t count = 0;
    if (cli_int64(cmd, "--data synthetic:N", path + 10, 1, INT64_MAX / 2, &count)) return 1;
    /* The test split is other samples of the same classes. */
    int64_t first = split == OSP_SPLIT_TEST ? (int64_t)1 << 40 : 0;
    if (osp_dataset_synthetic(&net->input, net->n_classes, first, count, 42, out))
        return cli_fail_lib(cmd, NULL);
    return 0;
}

/* ---- the task platform --------------------------------------------------- */

int cli_task_option(const char *cmd, int c, const char *arg, osp_task_spec *spec) {
    switch (c) {
    case 0x110: return cli_int(cmd, "--priority", arg, 0, OSP_PRIORITY_LEVELS - 1, &spec->priority);
    case 0x111: return cli_int(cmd, "--cores", arg, 1, 4096, &spec->cores);
    case 0x112: return cli_int(cmd, "--gpus", arg, 0, 1024, &spec->gpus);
    case 0x113: spec->tags = arg; return 0;
    case 0x114: spec->after = arg; return 0;
    case 0x115: spec->notify = arg; return 0;
    case 0x116: return cli_int(cmd, "--max-tries", arg, 1, 100, &spec->max_tries);
    default: return -1;
    }
}

int cli_broker(const char *cmd, const char *url, const char *password_file, osp_broker **out) {
    *out = NULL;
    if (!osp_platform_available())
        return cli_fail(cmd, "this osprey was built without hiredis (libhiredis-dev): no task platform");
    if (!url) url = getenv("OSPREY_BROKER");
    if (!url || !*url) url = "redis://127.0.0.1:6379";
    if (osp_broker_connect(url, password_file, out)) return cli_fail_lib(cmd, NULL);
    return 0;
}

/* The standard output of `osprey WORDS... --help` (malloc'd), or NULL. */
static char *help_text(const char *const *words, int n) {
    int p[2];
    if (pipe(p)) return NULL;
    const pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return NULL;
    }
    if (pid == 0) {
        const char *argv[5] = {"osprey", NULL, NULL, NULL, NULL};
        for (int i = 0; i < n; i++) argv[1 + i] = words[i];
        argv[1 + n] = "--help";
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execv("/proc/self/exe", (char **)argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0, cap = 1 << 16;
    char *text = malloc(cap + 1);
    for (ssize_t got; text && (got = read(p[0], text + len, cap - len)) > 0;) {
        len += (size_t)got;
        if (len == cap) break;
    }
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    if (!text || !WIFEXITED(status) || WEXITSTATUS(status)) {
        free(text);
        return NULL;
    }
    text[len] = 0;
    return text;
}

/* 1 if text names the option (with its dashes) as a word of its own. */
static int mentions(const char *text, const char *opt, size_t n) {
    for (const char *p = strstr(text, opt); p; p = strstr(p + 1, opt)) {
        const char after = p[n], before = p == text ? ' ' : p[-1];
        if ((before == ' ' || before == '(' || before == '[' || before == '|' || before == '\n') &&
            !(after == '-' || (after >= 'a' && after <= 'z') || (after >= '0' && after <= '9')))
            return 1;
    }
    return 0;
}

int cli_check_task(const char *cmd, int argc, const char *const *argv) {
    if (osp_task_check_argv(argc, argv)) return cli_fail_lib(cmd, NULL);
    /* the subcommand's own --help says which options it takes */
    const int sub = argc > 1 && (!strcmp(argv[0], "index") || !strcmp(argv[0], "hash"));
    char *text = help_text(argv, sub ? 2 : 1);
    if (!text) return cli_fail(cmd, "cannot read 'osprey %s --help'", argv[0]);
    for (int i = 1 + sub; i < argc; i++) {
        if (!strcmp(argv[i], "--")) break;
        if (strncmp(argv[i], "--", 2)) continue;
        const char *eq = strchr(argv[i], '=');
        const size_t n = eq ? (size_t)(eq - argv[i]) : strlen(argv[i]);
        char name[65];
        if (n < sizeof name) {
            memcpy(name, argv[i], n);
            name[n] = 0;
        }
        if (n >= sizeof name || !mentions(text, name, n)) {
            free(text);
            return cli_fail(cmd, "'osprey %s' has no option '%.*s' (see 'osprey %s --help')", argv[0], (int)(n > 64 ? 64 : n),
                            argv[i], argv[0]);
        }
    }
    free(text);
    return 0;
}
