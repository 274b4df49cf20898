/* osprey worker: takes the tasks that fit it from the queue streams
 * (highest priority first), runs each as a child process of the osprey
 * binary in its own folder, streams its output lines to the task's log,
 * heartbeats (its own key, and the task's entry kept from being
 * reclaimed), reclaims the entries of workers gone silent, and records
 * each result with the Lua scripts of scripts.c. It runs as many tasks at
 * once as its cores hold (a task without --cores holds them all). */
#define _GNU_SOURCE /* prctl, pipe2 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "broker.h"

#define LINE_MAX_BYTES 4096       /* a longer output line is cut into pieces */
#define SUMMARY_MAX_BYTES 65536   /* the --json summary kept */
#define FILES_MAX 1000            /* output files listed in a result */
#define KILL_GRACE_S 5.0          /* SIGTERM, then SIGKILL after this long */
#define MAX_SLOTS 64              /* tasks running at once */

static volatile sig_atomic_t stop_requests;

void osp_worker_stop(void) { stop_requests = stop_requests + 1; }

void osp_worker_defaults(osp_worker_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->workdir = "osprey-tasks";
    cfg->lapse_s = 30;
    cfg->max_log_lines = 10000;
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->cores = n > 0 ? (int)n : 1;
}

typedef struct worker {
    const osp_worker_config *cfg;
    osp_broker *b;
    char name[160];
    char exe[PATH_MAX];
    char workdir[PATH_MAX];
    double beat_s;      /* heartbeat period: a quarter of the lapse */
    double last_beat;
    double last_reclaim;
    double last_connect;
    /* a stream whose first task did not fit is passed over until then, so
     * that the tasks of lower priority that fit are not starved */
    double skip_until[OSP_PRIORITY_LEVELS];
    struct slot *slots;  /* MAX_SLOTS */
    int running;         /* active slots */
    int cores_used;      /* the cores they hold */
} worker;

/* A task running in a child process. */
typedef struct slot {
    int active;
    char id[OSP_TASK_ID_MAX];
    char attempt[16];
    int cores;                 /* of the worker's, held while it runs */
    pid_t pid;
    int fd[2];                 /* its stdout and stderr; -1 once closed */
    char line[2][LINE_MAX_BYTES + 1];
    size_t len[2];
    int lines;
    char *summary;             /* the last JSON object line of stdout */
    char dir[PATH_MAX + OSP_TASK_ID_MAX + 1];
    double t0, last_keep, kill_at;
    int killed, lost, cancelled;
} slot;

/* A message read from a queue stream. */
typedef struct message {
    char stream[32];
    char entry[64];
    int n;                /* fields (name, value, ...) */
    const char *fields[8];
    size_t lens[8];
    int too_many;         /* more than 8 fields: foreign */
} message;

static void sleep_s(double s) {
    struct timespec t = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&t, NULL);
}

/* 1 if the broker connection works. A lost one (the server restarted, the
 * network dropped) is made again, at most once a second, the old one kept
 * until then: a running task goes on meanwhile, its lines in the outage
 * lost. */
static int connected(worker *w) {
    if (!w->b->c->err) return 1;
    if (osp_now() - w->last_connect < 1) return 0;
    w->last_connect = osp_now();
    osp_broker *fresh;
    if (osp_broker_connect(w->cfg->broker, w->cfg->password_file, &fresh)) {
        osp_log(OSP_LOG_WARN, "worker %s: %s; trying again", w->name, osp_last_error());
        return 0;
    }
    osp_broker_free(w->b);
    w->b = fresh;
    osp__broker_ensure_groups(w->b);
    osp_log(OSP_LOG_WARN, "worker %s: connected to the broker again", w->name);
    return 1;
}

/* ---- heartbeats -------------------------------------------------------------- */

/* The worker's own record: it expires when the heartbeats stop, so
 * `osprey status` lists only live workers. */
static void beat(worker *w) {
    char now[32], ttl[32], cores[16], gpus[16], pid[16], tasks[MAX_SLOTS * OSP_TASK_ID_MAX] = "";
    size_t len = 0;
    for (int i = 0; i < MAX_SLOTS; i++)
        if (w->slots[i].active) len += (size_t)snprintf(tasks + len, sizeof tasks - len, "%s%s", len ? "," : "", w->slots[i].id);
    osp__now_string(now);
    snprintf(ttl, sizeof ttl, "%lld", (long long)(w->cfg->lapse_s * 1000));
    snprintf(cores, sizeof cores, "%d", w->cfg->cores);
    snprintf(gpus, sizeof gpus, "%d", w->cfg->gpus);
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    redisReply *r = osp__broker_cmd(w->b, "HSET osprey:worker:%s name %s pid %s cores %s gpus %s tags %s task %s heartbeat %s",
                                    w->name, w->name, pid, cores, gpus, w->cfg->tags ? w->cfg->tags : "", tasks, now);
    if (r) freeReplyObject(r);
    if ((r = osp__broker_cmd(w->b, "PEXPIRE osprey:worker:%s %s", w->name, ttl))) freeReplyObject(r);
    if ((r = osp__broker_cmd(w->b, "SADD osprey:workers %s", w->name))) freeReplyObject(r);
    w->last_beat = osp_now();
}

/* The running task's heartbeat (osp__script_keep): 1 go on, 2 cancelled,
 * 0 lost (another worker has it now), -1 the broker did not answer. */
static int keep(worker *w, const slot *t) {
    char now[32];
    osp__now_string(now);
    const char *args[] = {now, t->id, t->attempt, w->name};
    redisReply *r = osp__broker_eval(w->b, osp__script_keep, 4, args);
    if (!r) return -1;
    const int v = r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    freeReplyObject(r);
    return v;
}

/* ---- reading the queue ------------------------------------------------------- */

/* Copies an entry [id, [field, value, ...]] of stream into m (borrowing
 * the reply's strings). 0 if there is none. */
static int take_entry(const redisReply *e, const char *stream, message *m) {
    memset(m, 0, sizeof *m);
    if (!e || e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING)
        return 0;
    snprintf(m->stream, sizeof m->stream, "%s", stream);
    snprintf(m->entry, sizeof m->entry, "%s", e->element[0]->str);
    const redisReply *f = e->element[1];
    if (f->type != REDIS_REPLY_ARRAY) return 1; /* deleted meanwhile: no fields */
    if (f->elements > 8) {
        m->too_many = 1;
        m->n = 8;
    } else {
        m->n = (int)f->elements;
    }
    for (int i = 0; i < m->n; i++) {
        m->fields[i] = f->element[i]->type == REDIS_REPLY_STRING ? f->element[i]->str : NULL;
        m->lens[i] = f->element[i]->type == REDIS_REPLY_STRING ? f->element[i]->len : 0;
    }
    return 1;
}

/* The next new entry, highest priority first, or a reclaimed one of a
 * worker silent past the lapse. *reply owns the strings of m. */
static int next_message(worker *w, message *m, redisReply **reply) {
    *reply = NULL;
    for (int p = OSP_PRIORITY_LEVELS - 1; p >= 0; p--) {
        if (w->skip_until[p] > osp_now()) continue;
        char stream[32];
        snprintf(stream, sizeof stream, "osprey:queue:%d", p);
        redisReply *r = osp__broker_cmd(w->b, "XREADGROUP GROUP %s %s COUNT 1 STREAMS %s >", OSP__GROUP, w->name, stream);
        if (!r) {
            if (strstr(osp_last_error(), "NOGROUP")) osp__broker_ensure_groups(w->b);
            return 0;
        }
        /* [[stream, [[id, fields]]]] or nil */
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2 &&
            r->element[0]->element[1]->elements >= 1 &&
            take_entry(r->element[0]->element[1]->element[0], stream, m)) {
            *reply = r;
            return 1;
        }
        freeReplyObject(r);
    }
    if (osp_now() - w->last_reclaim < w->beat_s) return 0;
    w->last_reclaim = osp_now();
    char idle[32];
    snprintf(idle, sizeof idle, "%lld", (long long)(w->cfg->lapse_s * 1000));
    for (int p = OSP_PRIORITY_LEVELS - 1; p >= 0; p--) {
        char stream[32];
        snprintf(stream, sizeof stream, "osprey:queue:%d", p);
        redisReply *r = osp__broker_cmd(w->b, "XAUTOCLAIM %s %s %s %s 0-0 COUNT 1", stream, OSP__GROUP, w->name, idle);
        if (!r) return 0;
        /* [cursor, [[id, fields]], [deleted ids]] */
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && r->element[1]->elements >= 1 &&
            take_entry(r->element[1]->element[0], stream, m)) {
            osp_log(OSP_LOG_INFO, "worker %s: reclaimed %s %s from a silent worker", w->name, stream, m->entry);
            *reply = r;
            return 1;
        }
        freeReplyObject(r);
    }
    return 0;
}

/* Moves a message no worker can read to osprey:malformed, with why. */
static void move_aside(worker *w, const message *m, const char *why) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < m->n; i++) {
        char buf[257];
        const size_t n = m->lens[i] < 256 ? m->lens[i] : 256;
        if (m->fields[i]) memcpy(buf, m->fields[i], n);
        buf[m->fields[i] ? n : 0] = 0;
        cJSON_AddItemToArray(a, cJSON_CreateString(buf));
    }
    char *fields = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    char now[32];
    osp__now_string(now);
    const char *args[] = {now, m->stream, m->entry, why, fields ? fields : "[]"};
    redisReply *r = osp__broker_eval(w->b, osp__script_aside, 5, args);
    if (r) freeReplyObject(r);
    free(fields);
    osp_log(OSP_LOG_WARN, "worker %s: %s %s moved to osprey:malformed: %s", w->name, m->stream, m->entry, why);
}

/* ---- fitting ----------------------------------------------------------------- */

static const char *field(const redisReply *rec, const char *name) {
    for (size_t i = 0; i + 1 < rec->elements; i += 2)
        if (rec->element[i]->str && !strcmp(rec->element[i]->str, name)) return rec->element[i + 1]->str;
    return NULL;
}

/* 1 if every tag of want is one of have (both "a,b"). */
static int has_tags(const char *have, const char *want) {
    if (!want || !*want) return 1;
    char buf[300];
    snprintf(buf, sizeof buf, "%s", want);
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        const size_t n = strlen(t);
        int found = 0;
        for (const char *p = have ? have : ""; *p && !found;) {
            const char *end = strchr(p, ',');
            const size_t len = end ? (size_t)(end - p) : strlen(p);
            found = len == n && !strncmp(p, t, n);
            p = end ? end + 1 : p + len;
        }
        if (!found) return 0;
    }
    return 1;
}

static int fits(const worker *w, const redisReply *rec) {
    const char *cores = field(rec, "cores"), *gpus = field(rec, "gpus");
    if (cores && atoi(cores) > w->cfg->cores) return 0;
    if (gpus && atoi(gpus) > w->cfg->gpus) return 0;
    return has_tags(w->cfg->tags, field(rec, "tags"));
}

/* ---- running tasks ----------------------------------------------------------- */

static void log_line(worker *w, slot *t, int is_err, const char *text) {
    t->lines++;
    if (!is_err && text[0] == '{') {
        cJSON *o = cJSON_Parse(text);
        if (cJSON_IsObject(o) && strlen(text) < SUMMARY_MAX_BYTES) {
            free(t->summary);
            t->summary = strdup(text);
        }
        cJSON_Delete(o);
    }
    if (!connected(w)) return;
    char cap[32];
    snprintf(cap, sizeof cap, "%d", w->cfg->max_log_lines);
    redisReply *x = osp__broker_cmd(w->b, "XADD osprey:task:%s:log MAXLEN ~ %s * a %s s %s l %s", t->id, cap,
                                    t->attempt, is_err ? "e" : "o", text);
    if (x) freeReplyObject(x);
    if (is_err && *text && (x = osp__broker_cmd(w->b, "HSET osprey:task:%s progress %s", t->id, text)))
        freeReplyObject(x);
}

/* Splits what came on stream s (0 out, 1 err) into lines; a carriage
 * return ends a line too (progress drawn over itself). */
static void take_output(worker *w, slot *t, int s, const char *buf, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char c = buf[i];
        if (c == '\n' || c == '\r' || t->len[s] == LINE_MAX_BYTES) {
            t->line[s][t->len[s]] = 0;
            if (t->len[s]) log_line(w, t, s, t->line[s]);
            t->len[s] = 0;
            if (c == '\n' || c == '\r') continue;
        }
        t->line[s][t->len[s]++] = c ? c : ' ';
    }
}

/* Files below dir (relative paths and sizes), at most FILES_MAX, three
 * folders deep. */
static void list_files(cJSON *a, const char *dir, const char *rel, int depth) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) && cJSON_GetArraySize(a) < FILES_MAX;) {
        if (e->d_name[0] == '.') continue;
        char path[PATH_MAX], name[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) continue;
        if (snprintf(name, sizeof name, "%s%s%s", rel, *rel ? "/" : "", e->d_name) >= (int)sizeof name) continue;
        struct stat st;
        if (lstat(path, &st)) continue;
        if (S_ISDIR(st.st_mode)) {
            if (depth < 3) list_files(a, path, name, depth + 1);
        } else if (S_ISREG(st.st_mode)) {
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "path", name);
            cJSON_AddNumberToObject(f, "bytes", (double)st.st_size);
            cJSON_AddItemToArray(a, f);
        }
    }
    closedir(d);
}

/* In the child: never returns. */
static void exec_child(const worker *w, const char *dir, int out, int err, int cores, char **argv, pid_t parent) {
    /* a worker killed outright takes its command with it: the task is run
     * again elsewhere, and two runs must not write the same folder */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (chdir(dir)) _exit(127);
    const int null = open("/dev/null", O_RDONLY);
    if (null < 0 || dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(127);
    char n[16];
    snprintf(n, sizeof n, "%d", cores);
    setenv("OMP_NUM_THREADS", n, 1);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    /* the worker ignores SIGPIPE, and an exec keeps what is ignored */
    signal(SIGPIPE, SIG_DFL);
    execv(w->exe, argv);
    _exit(127);
}

/* Records the end of a task (osp__script_finish) and notifies. */
static void finish(worker *w, const char *id, const char *attempt, const char *state, int exit_code,
                   const char *summary, const char *files, const char *dir, const char *reason) {
    char now[32], code[16];
    osp__now_string(now);
    snprintf(code, sizeof code, "%d", exit_code);
    const char *args[] = {now, id, attempt, w->name, state, code, summary ? summary : "", files, dir, reason};
    /* through an outage of the broker: tried again for a minute (two
     * lapses if longer); after that the entry stays pending, and the task
     * is run again once the broker is back and the lapse is over */
    const double t0 = osp_now(), patience = w->cfg->lapse_s > 30 ? 2 * w->cfg->lapse_s : 60;
    redisReply *r = NULL;
    while (!(r = osp__broker_eval(w->b, osp__script_finish, 10, args)) && osp_now() - t0 < patience &&
           stop_requests < 2) {
        sleep_s(1);
        connected(w);
    }
    if (!r) {
        osp_log(OSP_LOG_WARN, "worker %s: task %s: the result was not recorded: %s", w->name, id, osp_last_error());
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements && !strcmp(r->element[0]->str, "stale"))
        osp_log(OSP_LOG_INFO, "worker %s: task %s: another worker took it over; its result stands", w->name, id);
    else
        osp__notify_tasks(w->b, r, 1);
    freeReplyObject(r);
}

/* Starts task id (try `attempt`, its record rec) in a free slot, holding
 * `cores`; a task that cannot start ends failed. */
static void start_task(worker *w, const char *id, const redisReply *rec, const char *attempt, int cores) {
    slot *t = NULL;
    for (int i = 0; i < MAX_SLOTS && !t; i++)
        if (!w->slots[i].active) t = &w->slots[i];
    char dir[sizeof t->dir];
    snprintf(dir, sizeof dir, "%s/%s", w->workdir, id);
    const char *argv_json = field(rec, "argv");
    int argc = 0;
    char **argv = NULL;
    char why[300] = "";
    if (!argv_json || osp_task_argv_decode(argv_json, strlen(argv_json), &argc, &argv))
        snprintf(why, sizeof why, "its argv is malformed");
    else if (mkdir(dir, 0777) && errno != EEXIST)
        snprintf(why, sizeof why, "cannot make its folder: %s", strerror(errno));
    int out[2] = {-1, -1}, err[2] = {-1, -1};
    if (!*why && (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)))
        snprintf(why, sizeof why, "pipe: %s", strerror(errno));
    char **child_argv = *why ? NULL : malloc((size_t)(argc + 2) * sizeof *child_argv);
    if (!*why && !child_argv) snprintf(why, sizeof why, "out of memory");
    pid_t pid = -1;
    if (!*why) {
        child_argv[0] = "osprey";
        memcpy(child_argv + 1, argv, (size_t)argc * sizeof *child_argv);
        child_argv[argc + 1] = NULL;
        const pid_t parent = getpid();
        pid = fork();
        if (pid == 0) exec_child(w, dir, out[1], err[1], cores, child_argv, parent);
        if (pid < 0) snprintf(why, sizeof why, "fork: %s", strerror(errno));
    }
    free(child_argv);
    /* the write ends are the child's; the read ends are kept if it started */
    const int ends[4] = {out[1], err[1], *why ? out[0] : -1, *why ? err[0] : -1};
    for (int i = 0; i < 4; i++)
        if (ends[i] >= 0) close(ends[i]);
    if (*why) {
        finish(w, id, attempt, "failed", -1, NULL, "[]", dir, why);
        free(argv);
        return;
    }
    memset(t, 0, sizeof *t);
    t->active = 1;
    snprintf(t->id, sizeof t->id, "%s", id);
    snprintf(t->attempt, sizeof t->attempt, "%s", attempt);
    snprintf(t->dir, sizeof t->dir, "%s", dir);
    t->cores = cores;
    t->pid = pid;
    t->fd[0] = out[0];
    t->fd[1] = err[0];
    t->t0 = t->last_keep = osp_now();
    w->running++;
    w->cores_used += cores;
    if (!w->cfg->quiet)
        osp_log(OSP_LOG_WARN, "worker %s: task %s (try %s): osprey %s", w->name, id, attempt, argv[0]);
    free(argv);
    beat(w);
}

/* A slot whose command has closed its output: reaped, recorded, freed. */
static void complete(worker *w, slot *t) {
    int status = 0;
    while (waitpid(t->pid, &status, 0) < 0 && errno == EINTR) {
    }
    for (int s = 0; s < 2; s++)
        if (t->len[s]) {
            t->line[s][t->len[s]] = 0;
            log_line(w, t, s, t->line[s]);
            t->len[s] = 0;
        }
    if (!t->lost) {
        cJSON *files = cJSON_CreateArray();
        list_files(files, t->dir, "", 0);
        char *files_json = cJSON_PrintUnformatted(files);
        cJSON_Delete(files);
        int code;
        char reason[64] = "";
        if (WIFEXITED(status)) {
            code = WEXITSTATUS(status);
            if (code == 127 && !t->lines) snprintf(reason, sizeof reason, "the command could not be started");
            else if (code) snprintf(reason, sizeof reason, "exit status %d", code);
        } else {
            code = 128 + WTERMSIG(status);
            snprintf(reason, sizeof reason, "killed by signal %d", WTERMSIG(status));
        }
        const char *state = code == 0 ? "done" : "failed";
        finish(w, t->id, t->attempt, state, code, t->summary, files_json ? files_json : "[]", t->dir, reason);
        if (!w->cfg->quiet)
            osp_log(OSP_LOG_WARN, "worker %s: task %s %s in %.1f s%s%s", w->name, t->id,
                    t->cancelled ? "cancelled" : state, osp_now() - t->t0, *reason ? ": " : "", reason);
        free(files_json);
    }
    free(t->summary);
    t->active = 0;
    w->running--;
    w->cores_used -= t->cores;
    beat(w);
}

/* A running task's heartbeat, and its stop when it was cancelled, taken
 * over, or the worker was stopped twice. */
static void tend(worker *w, slot *t) {
    const double now = osp_now();
    int stop = 0;
    if (now - t->last_keep >= w->beat_s && connected(w)) {
        t->last_keep = now;
        const int k = keep(w, t);
        if ((k == 0 || k == 2) && !t->kill_at) {
            if (k == 0) t->lost = 1;
            else t->cancelled = 1;
            osp_log(OSP_LOG_INFO, "worker %s: task %s %s: stopping it", w->name, t->id,
                    k == 0 ? "was taken over by another worker" : "was cancelled");
            stop = 1;
        }
    }
    if (stop_requests >= 2 && !t->kill_at) {
        /* stopped twice: leave the task for another worker */
        t->lost = 1;
        stop = 1;
    }
    if (stop) {
        kill(t->pid, SIGTERM);
        t->kill_at = now + KILL_GRACE_S;
    }
    if (t->kill_at && now > t->kill_at && !t->killed) {
        kill(t->pid, SIGKILL);
        t->killed = 1;
    }
}

/* Waits at most timeout_ms for output of the running commands, streams
 * it, and completes the commands that closed theirs. */
static void pump(worker *w, int timeout_ms) {
    struct pollfd fds[2 * MAX_SLOTS];
    int n = 0;
    for (int i = 0; i < MAX_SLOTS; i++)
        for (int s = 0; s < 2 && w->slots[i].active; s++)
            if (w->slots[i].fd[s] >= 0) fds[n++] = (struct pollfd){.fd = w->slots[i].fd[s], .events = POLLIN};
    if (poll(fds, (nfds_t)n, timeout_ms) <= 0) return;
    int at = 0;
    for (int i = 0; i < MAX_SLOTS; i++) {
        slot *t = &w->slots[i];
        for (int s = 0; s < 2 && t->active; s++) {
            if (t->fd[s] < 0) continue;
            const struct pollfd *p = &fds[at++];
            if (!(p->revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[65536];
            const ssize_t got = read(t->fd[s], buf, sizeof buf);
            if (got > 0) {
                take_output(w, t, s, buf, (size_t)got);
            } else if (got == 0 || errno != EINTR) {
                close(t->fd[s]);
                t->fd[s] = -1;
            }
        }
        if (t->active && t->fd[0] < 0 && t->fd[1] < 0) complete(w, t);
    }
}

/* One message: read, checked, fitted, started. */
static void handle(worker *w, const message *m) {
    char id[OSP_TASK_ID_MAX];
    if (m->too_many) {
        move_aside(w, m, "more fields than a task message has");
        return;
    }
    if (osp_task_message_decode(m->fields, m->lens, m->n, id)) {
        move_aside(w, m, osp_last_error());
        return;
    }
    redisReply *rec = osp__broker_cmd(w->b, "HGETALL osprey:task:%s", id);
    if (!rec) return; /* the broker is away: the entry stays pending and is reclaimed */
    if (rec->type != REDIS_REPLY_ARRAY || !rec->elements) {
        freeReplyObject(rec);
        move_aside(w, m, "no such task");
        return;
    }
    char now[32];
    osp__now_string(now);
    const char *c = field(rec, "cores");
    const int cores = c && atoi(c) > 0 ? atoi(c) : w->cfg->cores;
    if (!fits(w, rec) || cores > w->cfg->cores - w->cores_used) {
        const char *args[] = {now, id, m->stream, m->entry};
        redisReply *r = osp__broker_eval(w->b, osp__script_requeue, 4, args);
        if (r) freeReplyObject(r);
        freeReplyObject(rec);
        /* another worker may take it: this one looks at the other streams first */
        const int p = atoi(m->stream + strlen("osprey:queue:"));
        if (p >= 0 && p < OSP_PRIORITY_LEVELS) w->skip_until[p] = osp_now() + 0.5;
        return;
    }
    const char *args[] = {now, id, w->name, m->stream, m->entry};
    redisReply *s = osp__broker_eval(w->b, osp__script_start, 5, args);
    if (!s || s->type != REDIS_REPLY_ARRAY || !s->elements) {
        if (s) freeReplyObject(s);
        freeReplyObject(rec);
        return;
    }
    const char *what = s->element[0]->str;
    if (!strcmp(what, "run") && s->elements == 2) {
        start_task(w, id, rec, s->element[1]->str, cores);
    } else if (!strcmp(what, "missing")) {
        move_aside(w, m, "no such task");
    } else if (!strcmp(what, "ended")) {
        osp__notify_tasks(w->b, s, 1);
        if (!w->cfg->quiet) osp_log(OSP_LOG_WARN, "worker %s: task %s ended without running (see osprey status %s)",
                                    w->name, id, id);
    }
    freeReplyObject(s);
    freeReplyObject(rec);
}

int osp_worker_run(const osp_worker_config *cfg) {
    if (!cfg->broker) return osp_error(OSP_EINVAL, "worker: no broker URL");
    if (cfg->cores < 1 || cfg->gpus < 0 || !(cfg->lapse_s >= 0.5) || cfg->max_log_lines < 1)
        return osp_error(OSP_EINVAL, "worker: cores >= 1, gpus >= 0, lapse >= 0.5 s, log lines >= 1");
    worker w = {.cfg = cfg};
    if (cfg->name) {
        if (!*cfg->name || strlen(cfg->name) >= 128 || strpbrk(cfg->name, " \t\r\n"))
            return osp_error(OSP_EINVAL, "worker: a name is 1 to 127 characters without spaces");
        snprintf(w.name, sizeof w.name, "%s", cfg->name);
    } else {
        char host[128] = "host";
        gethostname(host, sizeof host - 1);
        snprintf(w.name, sizeof w.name, "%.120s:%d", host, (int)getpid());
    }
    const char *exe = cfg->exe ? cfg->exe : "/proc/self/exe";
    if (!realpath(exe, w.exe)) return osp_error(OSP_ENOENT, "worker: %s: %s", exe, strerror(errno));
    if (mkdir(cfg->workdir, 0777) && errno != EEXIST)
        return osp_error(OSP_EIO, "worker: %s: %s", cfg->workdir, strerror(errno));
    if (!realpath(cfg->workdir, w.workdir)) return osp_error(OSP_EIO, "worker: %s: %s", cfg->workdir, strerror(errno));
    w.beat_s = cfg->lapse_s / 4;
    if (w.beat_s > 5) w.beat_s = 5;
    if (!(w.slots = calloc(MAX_SLOTS, sizeof *w.slots))) return osp_error(OSP_ENOMEM, "worker");
    int rc = osp_broker_connect(cfg->broker, cfg->password_file, &w.b);
    if (!rc) rc = osp__broker_ensure_groups(w.b);
    if (rc) {
        osp_broker_free(w.b);
        free(w.slots);
        return rc;
    }
    osp_log(OSP_LOG_WARN, "worker %s: %d cores, %d GPUs%s%s, tasks in %s", w.name, cfg->cores, cfg->gpus,
            cfg->tags ? ", tags " : "", cfg->tags ? cfg->tags : "", w.workdir);
    beat(&w);
    double idle_since = osp_now();
    /* a first stop takes no more tasks and waits for those running */
    while (!stop_requests || w.running) {
        const int up = connected(&w);
        if (up && osp_now() - w.last_beat >= w.beat_s) beat(&w);
        for (int i = 0; i < MAX_SLOTS; i++)
            if (w.slots[i].active) tend(&w, &w.slots[i]);
        int took = 0;
        message m;
        redisReply *reply;
        if (up && !stop_requests && w.cores_used < cfg->cores && w.running < MAX_SLOTS &&
            next_message(&w, &m, &reply)) {
            handle(&w, &m);
            freeReplyObject(reply);
            took = 1;
        }
        if (w.running || took) idle_since = osp_now();
        else if (cfg->idle_exit_s > 0 && osp_now() - idle_since > cfg->idle_exit_s) break;
        if (w.running) pump(&w, took ? 0 : 200);
        else if (!took) sleep_s(up ? 0.2 : 1);
    }
    if (!w.b->c->err) {
        redisReply *r = osp__broker_cmd(w.b, "DEL osprey:worker:%s", w.name);
        if (r) freeReplyObject(r);
        if ((r = osp__broker_cmd(w.b, "SREM osprey:workers %s", w.name))) freeReplyObject(r);
    }
    osp_log(OSP_LOG_WARN, "worker %s: stopped", w.name);
    osp_broker_free(w.b);
    free(w.slots);
    return OSP_OK;
}
