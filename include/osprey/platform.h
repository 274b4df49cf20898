/* osprey platform: a task queue for a team, on Redis (docs/platform.md).
 * `osprey submit` queues an osprey command (an argv array, never a shell
 * string) as a task; `osprey worker` takes the tasks that fit it, runs
 * them as child processes, streams their log lines to the broker, stores
 * their results, and heartbeats; a task whose worker died is reclaimed and
 * run again, and goes to the dead letters after its tries are spent.
 *
 * The broker is one Redis server: a stream per priority read through one
 * consumer group, a hash per task, a log stream per task, and the pub/sub
 * channel osprey:events for every change of state. The parts that talk to
 * Redis need hiredis at build time (osp_platform_available); the parsers
 * (broker URLs, task argv, stream messages, sweep grids) are always built. */
#ifndef OSPREY_PLATFORM_H
#define OSPREY_PLATFORM_H

#include <stdint.h>

#include "osprey/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if this build talks to Redis (it was built with hiredis), else 0 and
 * every call that needs a broker returns OSP_ENOTSUP. */
OSP_API int osp_platform_available(void);

/* ---- broker addresses -------------------------------------------------------- */

/* redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]; HOST may be [IPv6]. The
 * password may be percent-encoded (%40 for @). */
typedef struct osp_broker_url {
    char host[256];
    int port;          /* default 6379 */
    int db;            /* default 0 */
    char user[128];    /* "" = the default user */
    char password[256]; /* "" = none */
} osp_broker_url;

/* Parses url into *out; OSP_EINVAL with the reason on a malformed one. */
OSP_API int osp_broker_url_parse(const char *url, osp_broker_url *out);

/* A connection to the broker; not shared between threads. */
typedef struct osp_broker osp_broker;

/* Connects, authenticates and selects the database. password_file (or
 * NULL) holds the password (surrounding white space ignored), which then
 * replaces any in the URL: it keeps the secret off command lines. */
OSP_API int osp_broker_connect(const char *url, const char *password_file, osp_broker **out);
OSP_API void osp_broker_free(osp_broker *b);

/* ---- tasks ------------------------------------------------------------------- */

#define OSP_TASK_MAX_ARGS 256   /* words of a task's argv */
#define OSP_TASK_MAX_ARG 4096   /* bytes of one word */
#define OSP_TASK_ID_MAX 24      /* bytes of a task id with its NUL */
#define OSP_PRIORITY_LEVELS 10  /* priorities 0 (lowest) to 9 */

/* 0 if argv (argv[0] the osprey subcommand, without "osprey") may be a
 * task: an osprey subcommand that does batch work (train, eval, run, info,
 * export, import, quantize, dataset, tag, embed, merge, index, hash,
 * similar, bench; index and hash with one of their own subcommands), at
 * most OSP_TASK_MAX_ARGS words of at most OSP_TASK_MAX_ARG bytes, each
 * valid UTF-8 with no control characters. Else OSP_EINVAL saying why. */
OSP_API int osp_task_check_argv(int argc, const char *const *argv);
/* 1 if argv's subcommand prints a summary with --json (the worker keeps
 * the last JSON object line of a task's standard output as its summary). */
OSP_API int osp_task_takes_json(int argc, const char *const *argv);

/* argv as a task runs it: --json appended where the subcommand prints a
 * summary with it; a train task also gets --out model.osp when it has no
 * --out, and --resume auto when it starts from --net without --resume, so
 * that a task run again after its worker was lost continues from its last
 * checkpoint. One malloc'd block (free(*out)). */
OSP_API int osp_task_prepare(int argc, const char *const *argv, int *out_argc, char ***out);

/* argv as a JSON array of strings (malloc'd, free with free). */
OSP_API char *osp_task_argv_encode(int argc, const char *const *argv);
/* The reverse, checked as osp_task_check_argv does: *argv is one malloc'd
 * block (free(*argv) frees it all). Input is untrusted. */
OSP_API int osp_task_argv_decode(const char *json, size_t len, int *argc, char ***argv);

/* A task id: 1 to 19 decimal digits, no leading zero. 1 if s is one. */
OSP_API int osp_task_id_valid(const char *s, size_t len);
/* The task id of a queue message: its fields (name, value, name, value...,
 * n_fields of them, with their lengths) must be exactly "task" ID and
 * "v" "1". Anything else is OSP_EFORMAT saying why: the worker moves the
 * message aside. Input is untrusted. */
OSP_API int osp_task_message_decode(const char *const *fields, const size_t *lens, int n_fields,
                                    char id[OSP_TASK_ID_MAX]);

/* What a task needs and how it is run. */
typedef struct osp_task_spec {
    int argc;
    const char *const *argv;  /* the osprey subcommand and its arguments */
    int priority;             /* 0..9, 9 first (default 5) */
    int cores;                /* cores it needs (0: any worker) */
    int gpus;                 /* GPUs it needs (0: none) */
    const char *tags;         /* "a,b": a worker must have them all (NULL: none) */
    const char *after;        /* a task id that must end done first (NULL: none) */
    const char *notify;       /* http(s) URL that gets a POST when the task ends (NULL) */
    int max_tries;            /* starts before it goes to the dead letters (default 3) */
    const char *sweep;        /* the sweep it belongs to (NULL) */
    const char *params;       /* the sweep's settings of it, a JSON object (NULL) */
} osp_task_spec;

/* Defaults: priority 5, max_tries 3, the rest 0/NULL. */
OSP_API void osp_task_spec_defaults(osp_task_spec *spec);

/* Queues a task and writes its id. A task with after waits (state
 * waiting) until that task is done, is queued then, and is cancelled if
 * that task ends any other way. OSP_ENOENT if after is no task. */
OSP_API int osp_task_submit(osp_broker *b, const osp_task_spec *spec, char id[OSP_TASK_ID_MAX]);

/* The task's record as a JSON object (malloc'd): id, state, argv,
 * priority, cores, gpus, tags, after, tries, max_tries, worker, created,
 * started, ended, exit_code, dir, files, summary, reason, progress...
 * OSP_ENOENT if there is no such task. */
OSP_API int osp_task_get(osp_broker *b, const char *id, char **json);
/* Every task's record, oldest first, and the live workers:
 * {"tasks": [...], "workers": [...]} (malloc'd). */
OSP_API int osp_task_list(osp_broker *b, char **json);

/* Cancels a task: one queued or waiting is cancelled at once (and the
 * tasks waiting on it with it); one running is marked cancelling, and its
 * worker stops the command (SIGTERM, then SIGKILL) and ends it cancelled.
 * *state gets the state after the call ("cancelled" or "cancelling"), or
 * with *had_ended set, the final state of a task that had already ended. */
OSP_API int osp_task_cancel(osp_broker *b, const char *id, char state[16], int *had_ended);

/* One line of a task's log. */
typedef struct osp_task_log_line {
    const char *entry;  /* its stream id, for the next read */
    int attempt;        /* which try of the task wrote it */
    int is_stderr;
    const char *text;
} osp_task_log_line;

/* Calls fn for each log line of the task after the entry `after` ("0"
 * from the start), at most block_ms waiting for one (0: no wait), and
 * copies the last entry read into after (64 bytes). */
OSP_API int osp_task_logs(osp_broker *b, const char *id, char after[64], int block_ms,
                          void (*fn)(const osp_task_log_line *line, void *user), void *user);

/* 1 for the states a task ends in: done, failed, cancelled, dead. */
OSP_API int osp_task_state_final(const char *state);

/* ---- events ------------------------------------------------------------------ */

/* Makes b a subscriber of osprey:events (it can then only wait for events). */
OSP_API int osp_events_subscribe(osp_broker *b);
/* Waits at most timeout_ms for an event: {"task", "state", "time"} as a
 * malloc'd JSON string in *json, or NULL when none came. */
OSP_API int osp_events_next(osp_broker *b, int timeout_ms, char **json);

/* ---- workers ----------------------------------------------------------------- */

typedef struct osp_worker_config {
    const char *broker;        /* broker URL (required) */
    const char *password_file; /* or NULL */
    const char *name;          /* unique among workers (default HOST:PID) */
    int cores;                 /* cores offered, shared by the tasks it runs at once
                                  (default: the online CPUs) */
    int gpus;                  /* GPUs offered (default 0) */
    const char *tags;          /* "cpu,avx512": what tasks may ask for */
    const char *workdir;       /* tasks run in WORKDIR/<id>/ (default "osprey-tasks") */
    const char *exe;           /* the osprey binary to run (default /proc/self/exe) */
    double lapse_s;            /* a worker silent this long is taken for dead (default 30) */
    double idle_exit_s;        /* exit after this long with nothing to do (0: never) */
    int max_log_lines;         /* lines kept of each task's log (default 10000) */
    int quiet;                 /* no line per task on stderr */
} osp_worker_config;

OSP_API void osp_worker_defaults(osp_worker_config *cfg);
/* Serves tasks until osp_worker_stop (or idle_exit_s): returns 0, or an
 * error if it cannot start (bad settings, no broker). */
OSP_API int osp_worker_run(const osp_worker_config *cfg);
/* Asks osp_worker_run to take no more tasks and return once those it runs
 * have ended (async-signal-safe); called twice, it stops them too, and
 * other workers take them over. */
OSP_API void osp_worker_stop(void);

/* ---- sweeps ------------------------------------------------------------------ */

/* One setting of a sweep: name=value pairs, the name an option of the
 * command without "--". */
typedef struct osp_sweep_point {
    int n;
    const char *names[16];
    const char *values[16];
} osp_sweep_point;

/* A parsed grid "lr=0.1,0.03;batch=32,64": up to 16 names of up to 64
 * values each. */
typedef struct osp_sweep_grid osp_sweep_grid;

/* Parses grid (untrusted). OSP_EINVAL saying why on a malformed one. */
OSP_API int osp_sweep_grid_parse(const char *grid, osp_sweep_grid **out);
OSP_API void osp_sweep_grid_free(osp_sweep_grid *g);
/* The number of points of the full grid (the product of the counts). */
OSP_API int64_t osp_sweep_grid_size(const osp_sweep_grid *g);
/* Point i (0 <= i < size) of the full grid, the last name varying
 * fastest. Its strings are borrowed from g. */
OSP_API void osp_sweep_grid_point(const osp_sweep_grid *g, int64_t i, osp_sweep_point *p);
/* random > 0: that many distinct points drawn with seed (all of them if
 * the grid is no larger), in grid order; else every point. Writes the
 * point numbers to idx (malloc'd) and their count. */
OSP_API int osp_sweep_grid_select(const osp_sweep_grid *g, int random, uint64_t seed, int64_t **idx,
                                  int *n);
/* argv with the point's options set: "--NAME VALUE" replaces an option
 * the command has, else is appended. One malloc'd block (free(*out)). */
OSP_API int osp_sweep_apply(int argc, const char *const *argv, const osp_sweep_point *p, int *out_argc,
                            char ***out);

/* Queues one task per point: base with argv replaced per point. Writes
 * the sweep's id. */
OSP_API int osp_sweep_submit(osp_broker *b, const osp_task_spec *base, const char *grid, int random,
                             uint64_t seed, char id[OSP_TASK_ID_MAX]);
/* The sweep: {"id", "grid", "tasks": [task records]} (malloc'd JSON). */
OSP_API int osp_sweep_get(osp_broker *b, const char *id, char **json);

#ifdef __cplusplus
}
#endif

#endif
