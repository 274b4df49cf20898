/* The state changes of src/platform/scripts.c against a real Redis server
 * (started here on a free loopback port, stopped at the end), driven step
 * by step so that the orders a live run only meets by chance are certain:
 * a worker frozen past the lapse whose task was taken over cannot record a
 * result; a task's tries run out into the dead letters; a cancel reaches a
 * running task through its heartbeat; dependants are queued or cancelled
 * with their task; the entry is acknowledged with the result. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "osprey/platform.h"
#include "platform/broker.h"

static pid_t server;
static char dir[64], url[64];
static osp_broker *b;

static int free_port(void) {
    const int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert(s >= 0 && !bind(s, (struct sockaddr *)&a, sizeof a) && !getsockname(s, (struct sockaddr *)&a, &len));
    close(s);
    return ntohs(a.sin_port);
}

static void start(void) {
    if (access("/usr/bin/redis-server", X_OK)) cr_skip_test("no redis-server");
    snprintf(dir, sizeof dir, "/tmp/osp-scripts-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    const int port = free_port();
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    server = fork();
    if (server == 0) {
        const int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execl("/usr/bin/redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--dir", dir, "--save", "",
              "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100 && osp_broker_connect(url, NULL, &b); i++) usleep(50000);
    cr_assert_not_null(b, "redis-server did not start: %s", osp_last_error());
}

static void stop(void) {
    osp_broker_free(b);
    b = NULL;
    if (server > 0) {
        kill(server, SIGTERM);
        waitpid(server, NULL, 0);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (dir[0] && system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
}

TestSuite(scripts, .init = start, .fini = stop);

static const char *const EVAL_ARGV[] = {"eval", "--model", "m.osp", "--data", "d"};

static void submit(char id[OSP_TASK_ID_MAX], const char *after, int max_tries) {
    osp_task_spec s;
    osp_task_spec_defaults(&s);
    s.argc = 5;
    s.argv = EVAL_ARGV;
    s.after = after;
    if (max_tries) s.max_tries = max_tries;
    cr_assert_eq(osp_task_submit(b, &s, id), 0, "%s", osp_last_error());
}

static char *get(const char *id, const char *field) {
    static char value[256];
    redisReply *r = osp__broker_cmd(b, "HGET osprey:task:%s %s", id, field);
    cr_assert_not_null(r);
    snprintf(value, sizeof value, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
    return value;
}

static long long number(const char *fmt, const char *arg) {
    redisReply *r = osp__broker_cmd(b, fmt, arg);
    cr_assert_not_null(r, "%s", osp_last_error());
    const long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* What a worker does: read (or reclaim) the next entry as consumer w. */
static void take(const char *w, int reclaim, char entry[64]) {
    osp__broker_ensure_groups(b);
    redisReply *r = reclaim ? osp__broker_cmd(b, "XAUTOCLAIM osprey:queue:5 workers %s 0 0-0 COUNT 1", w)
                            : osp__broker_cmd(b, "XREADGROUP GROUP workers %s COUNT 1 STREAMS osprey:queue:5 >", w);
    cr_assert_not_null(r, "%s", osp_last_error());
    const redisReply *e = reclaim ? r->element[1]->element[0] : r->element[0]->element[1]->element[0];
    snprintf(entry, 64, "%s", e->element[0]->str);
    freeReplyObject(r);
}

/* Runs a script; returns its reply's first word (or integer as text). */
static const char *run(const char *script, int argc, const char *const *argv) {
    static char first[64];
    char now[32];
    osp__now_string(now);
    const char *args[16] = {now};
    for (int i = 0; i < argc; i++) args[1 + i] = argv[i];
    redisReply *r = osp__broker_eval(b, script, argc + 1, args);
    cr_assert_not_null(r, "%s", osp_last_error());
    if (r->type == REDIS_REPLY_INTEGER) snprintf(first, sizeof first, "%lld", r->integer);
    else if (r->type == REDIS_REPLY_ARRAY && r->elements) snprintf(first, sizeof first, "%s", r->element[0]->str);
    else first[0] = 0;
    freeReplyObject(r);
    return first;
}

#define START(id, w, entry) run(osp__script_start, 4, (const char *const[]){id, w, "osprey:queue:5", entry})
#define FINISH(id, attempt, w, state) \
    run(osp__script_finish, 9, (const char *const[]){id, attempt, w, state, "0", "{}", "[]", "/tmp/x", ""})
#define KEEP(id, attempt, w) run(osp__script_keep, 3, (const char *const[]){id, attempt, w})

Test(scripts, frozen_worker_cannot_record) {
    char id[OSP_TASK_ID_MAX], e1[64], e2[64];
    submit(id, NULL, 3);
    cr_assert_str_eq(get(id, "state"), "queued");
    take("w1", 0, e1);
    cr_assert_str_eq(START(id, "w1", e1), "run");
    cr_assert_str_eq(KEEP(id, "1", "w1"), "1");
    /* w1 freezes; after the lapse w2 reclaims the entry and runs try 2 */
    take("w2", 1, e2);
    cr_assert_str_eq(e2, e1, "the same entry");
    cr_assert_str_eq(START(id, "w2", e2), "run");
    cr_assert_str_eq(get(id, "attempt"), "2");
    /* w1 wakes: its heartbeat says the task is no longer its, its result is refused */
    cr_assert_str_eq(KEEP(id, "1", "w1"), "0");
    cr_assert_str_eq(FINISH(id, "1", "w1", "done"), "stale");
    cr_assert_str_eq(get(id, "state"), "running");
    cr_assert_eq(number("XLEN %s", "osprey:history"), 0);
    /* w2's result is the one: recorded with the acknowledgement */
    cr_assert_str_eq(FINISH(id, "2", "w2", "done"), "ended");
    cr_assert_str_eq(get(id, "state"), "done");
    cr_assert_eq(number("XLEN %s", "osprey:history"), 1);
    cr_assert_eq(number("XLEN %s", "osprey:queue:5"), 0, "the entry is deleted with the result");
    cr_assert_str_eq(FINISH(id, "2", "w2", "done"), "stale", "a second finish changes nothing");
    cr_assert_eq(number("XLEN %s", "osprey:history"), 1);
}

Test(scripts, tries_run_out_into_dead_letters) {
    char id[OSP_TASK_ID_MAX], e[64];
    submit(id, NULL, 2);
    take("w1", 0, e);
    cr_assert_str_eq(START(id, "w1", e), "run");
    take("w2", 1, e); /* w1 lost */
    cr_assert_str_eq(START(id, "w2", e), "run");
    take("w3", 1, e); /* w2 lost too */
    cr_assert_str_eq(START(id, "w3", e), "ended");
    cr_assert_str_eq(get(id, "state"), "dead");
    cr_assert_str_eq(get(id, "tries"), "2");
    cr_assert_eq(number("XLEN %s", "osprey:dead"), 1);
    cr_assert_eq(number("XLEN %s", "osprey:queue:5"), 0);
}

Test(scripts, cancel_running_through_heartbeat) {
    char id[OSP_TASK_ID_MAX], e[64], state[16];
    int had_ended;
    submit(id, NULL, 3);
    take("w1", 0, e);
    cr_assert_str_eq(START(id, "w1", e), "run");
    cr_assert_eq(osp_task_cancel(b, id, state, &had_ended), 0);
    cr_assert_str_eq(state, "cancelling");
    cr_assert_str_eq(KEEP(id, "1", "w1"), "2");
    /* the command killed, the worker reports its exit: recorded as cancelled */
    cr_assert_str_eq(FINISH(id, "1", "w1", "failed"), "ended");
    cr_assert_str_eq(get(id, "state"), "cancelled");
    cr_assert_eq(osp_task_cancel(b, id, state, &had_ended), 0);
    cr_assert(had_ended);
    cr_assert_str_eq(state, "cancelled");
}

Test(scripts, cancelled_while_its_worker_was_lost) {
    char id[OSP_TASK_ID_MAX], e[64], state[16];
    int had_ended;
    submit(id, NULL, 3);
    take("w1", 0, e);
    cr_assert_str_eq(START(id, "w1", e), "run");
    cr_assert_eq(osp_task_cancel(b, id, state, &had_ended), 0);
    take("w2", 1, e);
    cr_assert_str_eq(START(id, "w2", e), "ended", "not run again");
    cr_assert_str_eq(get(id, "state"), "cancelled");
}

Test(scripts, dependants_follow_their_task) {
    char a[OSP_TASK_ID_MAX], b1[OSP_TASK_ID_MAX], c[OSP_TASK_ID_MAX], d[OSP_TASK_ID_MAX], e[64];
    submit(a, NULL, 3);
    submit(b1, a, 3);
    submit(c, b1, 3);
    cr_assert_str_eq(get(b1, "state"), "waiting");
    cr_assert_str_eq(get(c, "state"), "waiting");
    cr_assert_eq(number("XLEN %s", "osprey:queue:5"), 1, "only the first is queued");
    take("w", 0, e);
    cr_assert_str_eq(START(a, "w", e), "run");
    cr_assert_str_eq(FINISH(a, "1", "w", "done"), "ended");
    cr_assert_str_eq(get(b1, "state"), "queued", "queued when its task is done");
    cr_assert_str_eq(get(c, "state"), "waiting");
    take("w", 0, e);
    cr_assert_str_eq(START(b1, "w", e), "run");
    cr_assert_str_eq(FINISH(b1, "1", "w", "failed"), "ended");
    cr_assert_str_eq(get(c, "state"), "cancelled", "cancelled when its task failed");
    cr_assert(strstr(get(c, "reason"), "ended failed"));
    /* submitted after its task ended badly: cancelled at once */
    submit(d, b1, 3);
    cr_assert_str_eq(get(d, "state"), "cancelled");
    char none[OSP_TASK_ID_MAX];
    osp_task_spec s;
    osp_task_spec_defaults(&s);
    s.argc = 5;
    s.argv = EVAL_ARGV;
    s.after = "999999";
    cr_assert_eq(osp_task_submit(b, &s, none), OSP_ENOENT);
}

Test(scripts, a_task_that_does_not_fit_goes_back) {
    char id[OSP_TASK_ID_MAX], e[64], e2[64];
    submit(id, NULL, 3);
    take("w1", 0, e);
    cr_assert_str_eq(run(osp__script_requeue, 3, (const char *const[]){id, "osprey:queue:5", e}), "1");
    cr_assert_eq(number("XLEN %s", "osprey:queue:5"), 1);
    take("w2", 0, e2);
    cr_assert_str_neq(e2, e, "a new entry at the end");
    cr_assert_str_eq(START(id, "w2", e2), "run");
    cr_assert_str_eq(get(id, "passed"), "1");
    cr_assert_str_eq(get(id, "tries"), "1", "passing over is no try");
}
