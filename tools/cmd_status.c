/* osprey status, logs, cancel, results: a task's state, output, end and
 * result, read from the broker. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "commands.h"

static void usage_status(FILE *out) {
    fprintf(out,
            "usage: osprey status [ID] [--watch] [--json] [broker options]\n"
            "\n"
            "Without ID: every task (id, state, priority, tries, worker, command) and the\n"
            "live workers. With ID: that task's record. --watch then prints each change of\n"
            "state as it happens (the channel osprey:events), until the task ends (without\n"
            "ID: until interrupted). States: waiting (for --after), queued, running,\n"
            "cancelling, and the final done, failed, cancelled, dead.\n"
            "\n" CLI_BROKER_HELP
            "  --watch               print the changes of state as they come\n"
            "  --json                the records (and with --watch the events) as JSON\n");
}

static void usage_logs(FILE *out) {
    fprintf(out,
            "usage: osprey logs ID [--follow] [broker options]\n"
            "\n"
            "The output lines of task ID (standard output and error, the last\n"
            "--log-lines of the worker), each try of the task under a line of its own.\n"
            "\n" CLI_BROKER_HELP
            "  --follow              go on printing lines as they come, until the task ends\n");
}

static void usage_cancel(FILE *out) {
    fprintf(out,
            "usage: osprey cancel ID [broker options]\n"
            "\n"
            "Cancels task ID: queued or waiting, it is cancelled at once (and the tasks\n"
            "waiting for it with it); running, its worker stops the command (SIGTERM, then\n"
            "SIGKILL) and records it cancelled. Prints the state after the call.\n"
            "\n" CLI_BROKER_HELP);
}

static void usage_results(FILE *out) {
    fprintf(out,
            "usage: osprey results ID [--json] [broker options]\n"
            "\n"
            "The result of a task that ended: its state, exit status, the folder it ran\n"
            "in (on the worker's storage), the files it left there, and its --json summary.\n"
            "\n" CLI_BROKER_HELP
            "  --json                one JSON object\n");
}

enum { O_WATCH = 1, O_JSON, O_FOLLOW };

/* The options of these four commands; one positional argument at most. */
typedef struct opts {
    const char *broker, *password, *id;
    int watch, json, follow;
} opts;

static int parse(const char *cmd, int argc, char **argv, void (*usage)(FILE *), opts *o) {
    static const struct option long_opts[] = {CLI_BROKER_OPTIONS,
                                              {"watch", no_argument, 0, O_WATCH},
                                              {"json", no_argument, 0, O_JSON},
                                              {"follow", no_argument, 0, O_FOLLOW},
                                              {"help", no_argument, 0, 'h'},
                                              {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        switch (c) {
        case CLI_OPT_BROKER: o->broker = optarg; break;
        case CLI_OPT_BROKER_PASSWORD: o->password = optarg; break;
        case O_WATCH: o->watch = 1; break;
        case O_JSON: o->json = 1; break;
        case O_FOLLOW: o->follow = 1; break;
        case 'h': usage(stdout); return -1;
        default: return cli_fail(cmd, "unknown or incomplete option '%s' (see 'osprey %s --help')", argv[optind - 1], cmd);
        }
    }
    if (optind < argc) o->id = argv[optind++];
    if (optind < argc) return cli_fail(cmd, "unexpected argument '%s'", argv[optind]);
    if ((o->watch && strcmp(cmd, "status")) || (o->follow && strcmp(cmd, "logs")) ||
        (o->json && strcmp(cmd, "status") && strcmp(cmd, "results")))
        return cli_fail(cmd, "an option of another command (see 'osprey %s --help')", cmd);
    if (o->id && !osp_task_id_valid(o->id, strlen(o->id))) return cli_fail(cmd, "'%s' is not a task id", o->id);
    return 0;
}

static const char *str(const cJSON *o, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static double num(const cJSON *o, const char *name, double otherwise) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(v) ? v->valuedouble : otherwise;
}

/* The task's command as one line ("train --net a.cfg ..."), at most width. */
static void command_line(const cJSON *t, char *buf, size_t width) {
    buf[0] = 0;
    size_t len = 0;
    const cJSON *w;
    cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(t, "argv")) {
        if (!cJSON_IsString(w)) continue;
        len += (size_t)snprintf(buf + len, width - len, "%s%s", len ? " " : "", w->valuestring);
        if (len >= width - 1) {
            if (width > 4) strcpy(buf + width - 4, "...");
            return;
        }
    }
}

static void print_time(const char *label, const cJSON *t, const char *name) {
    const double s = num(t, name, 0);
    if (s <= 0) return;
    const time_t secs = (time_t)s;
    struct tm tm;
    char when[32];
    gmtime_r(&secs, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    printf("%-10s %s UTC\n", label, when);
}

static void print_task(const cJSON *t) {
    char cmdline[4096];
    command_line(t, cmdline, sizeof cmdline);
    printf("task       %s\nstate      %s", str(t, "id"), str(t, "state"));
    if (*str(t, "reason")) printf(" (%s)", str(t, "reason"));
    printf("\ncommand    osprey %s\n", cmdline);
    printf("priority   %.0f\ntries      %.0f of %.0f\n", num(t, "priority", 5), num(t, "tries", 0), num(t, "max_tries", 3));
    if (num(t, "cores", 0) > 0) printf("cores      %.0f\n", num(t, "cores", 0));
    if (num(t, "gpus", 0) > 0) printf("gpus       %.0f\n", num(t, "gpus", 0));
    if (*str(t, "tags")) printf("tags       %s\n", str(t, "tags"));
    if (*str(t, "after")) printf("after      %s\n", str(t, "after"));
    if (*str(t, "sweep")) printf("sweep      %s\n", str(t, "sweep"));
    if (*str(t, "worker")) printf("worker     %s\n", str(t, "worker"));
    if (num(t, "passed", 0) > 0) printf("passed     %.0f times by workers it does not fit\n", num(t, "passed", 0));
    print_time("created", t, "created");
    print_time("started", t, "started");
    print_time("ended", t, "ended");
    if (*str(t, "progress") && !osp_task_state_final(str(t, "state"))) printf("progress   %s\n", str(t, "progress"));
    if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(t, "exit_code"))) printf("exit       %.0f\n", num(t, "exit_code", 0));
}

static int status_watch(const opts *o) {
    osp_broker *sub;
    if (cli_broker("status", o->broker, o->password, &sub)) return 1;
    if (osp_events_subscribe(sub)) {
        osp_broker_free(sub);
        return cli_fail_lib("status", NULL);
    }
    /* a task that ended before the subscription: nothing more will come */
    if (o->id) {
        osp_broker *b;
        char *json = NULL;
        if (cli_broker("status", o->broker, o->password, &b)) {
            osp_broker_free(sub);
            return 1;
        }
        const int rc = osp_task_get(b, o->id, &json);
        osp_broker_free(b);
        cJSON *t = rc ? NULL : cJSON_Parse(json);
        free(json);
        if (rc) {
            osp_broker_free(sub);
            return cli_fail_lib("status", NULL);
        }
        const int ended = osp_task_state_final(str(t, "state"));
        if (o->json) printf("{\"task\": \"%s\", \"state\": \"%s\"}\n", o->id, str(t, "state"));
        else printf("task %s %s\n", o->id, str(t, "state"));
        fflush(stdout);
        cJSON_Delete(t);
        if (ended) {
            osp_broker_free(sub);
            return 0;
        }
    }
    for (;;) {
        char *json;
        if (osp_events_next(sub, 1000, &json)) {
            osp_broker_free(sub);
            return cli_fail_lib("status", NULL);
        }
        if (!json) continue;
        cJSON *e = cJSON_Parse(json);
        const int mine = !o->id || !strcmp(str(e, "task"), o->id);
        if (mine) {
            if (o->json) printf("%s\n", json);
            else printf("task %s %s\n", str(e, "task"), str(e, "state"));
            fflush(stdout);
        }
        const int done = mine && o->id && osp_task_state_final(str(e, "state"));
        cJSON_Delete(e);
        free(json);
        if (done) break;
    }
    osp_broker_free(sub);
    return 0;
}

int cmd_status(int argc, char **argv) {
    opts o;
    const int p = parse("status", argc, argv, usage_status, &o);
    if (p) return p < 0 ? 0 : p;
    if (o.watch) return status_watch(&o);
    osp_broker *b;
    if (cli_broker("status", o.broker, o.password, &b)) return 1;
    char *json = NULL;
    const int rc = o.id ? osp_task_get(b, o.id, &json) : osp_task_list(b, &json);
    osp_broker_free(b);
    if (rc) return cli_fail_lib("status", NULL);
    if (o.json) {
        printf("%s\n", json);
        free(json);
        return 0;
    }
    cJSON *all = cJSON_Parse(json);
    free(json);
    if (o.id) {
        print_task(all);
    } else {
        printf("%-6s %-10s %3s %5s  %-20s %s\n", "ID", "STATE", "PRI", "TRIES", "WORKER", "COMMAND");
        const cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(all, "tasks")) {
            char cmdline[60];
            command_line(t, cmdline, sizeof cmdline);
            printf("%-6s %-10s %3.0f %5.0f  %-20.20s %s\n", str(t, "id"), str(t, "state"), num(t, "priority", 5),
                   num(t, "tries", 0), str(t, "worker"), cmdline);
        }
        const cJSON *workers = cJSON_GetObjectItemCaseSensitive(all, "workers");
        printf("\n%d worker%s\n", cJSON_GetArraySize(workers), cli_s(cJSON_GetArraySize(workers)));
        cJSON_ArrayForEach(t, workers) {
            printf("  %-24s %3.0f cores %2.0f GPUs  %s%s%s%s\n", str(t, "name"), num(t, "cores", 0), num(t, "gpus", 0),
                   *str(t, "task") ? "task " : "idle", str(t, "task"), *str(t, "tags") ? "  tags " : "", str(t, "tags"));
        }
    }
    cJSON_Delete(all);
    return 0;
}

static void print_line(const osp_task_log_line *l, void *user) {
    int *attempt = user;
    if (l->attempt != *attempt) {
        printf("--- try %d ---\n", l->attempt);
        *attempt = l->attempt;
    }
    printf("%s\n", l->text);
}

int cmd_logs(int argc, char **argv) {
    opts o;
    const int p = parse("logs", argc, argv, usage_logs, &o);
    if (p) return p < 0 ? 0 : p;
    if (!o.id) return cli_fail("logs", "which task? osprey logs ID");
    osp_broker *b;
    if (cli_broker("logs", o.broker, o.password, &b)) return 1;
    char after[64] = "0", *json = NULL;
    int attempt = 0, rc = osp_task_get(b, o.id, &json);
    free(json);
    if (rc) {
        osp_broker_free(b);
        return cli_fail_lib("logs", NULL);
    }
    for (;;) {
        char before[64];
        snprintf(before, sizeof before, "%s", after);
        if (osp_task_logs(b, o.id, after, o.follow ? 1000 : 0, print_line, &attempt)) {
            rc = cli_fail_lib("logs", NULL);
            break;
        }
        fflush(stdout);
        if (!o.follow) {
            if (!strcmp(before, after)) break;
            continue;
        }
        if (strcmp(before, after)) continue;
        /* nothing new for a second: is the task over? */
        if (osp_task_get(b, o.id, &json)) {
            rc = cli_fail_lib("logs", NULL);
            break;
        }
        cJSON *t = cJSON_Parse(json);
        free(json);
        const int ended = osp_task_state_final(str(t, "state"));
        cJSON_Delete(t);
        if (ended) {
            /* lines written just before the end */
            osp_task_logs(b, o.id, after, 0, print_line, &attempt);
            break;
        }
    }
    osp_broker_free(b);
    return rc;
}

int cmd_cancel(int argc, char **argv) {
    opts o;
    const int p = parse("cancel", argc, argv, usage_cancel, &o);
    if (p) return p < 0 ? 0 : p;
    if (!o.id) return cli_fail("cancel", "which task? osprey cancel ID");
    osp_broker *b;
    if (cli_broker("cancel", o.broker, o.password, &b)) return 1;
    char state[16];
    int had_ended;
    const int rc = osp_task_cancel(b, o.id, state, &had_ended);
    osp_broker_free(b);
    if (rc) return cli_fail_lib("cancel", NULL);
    if (had_ended) printf("task %s had already ended: %s\n", o.id, state);
    else printf("task %s %s\n", o.id, state);
    return 0;
}

int cmd_results(int argc, char **argv) {
    opts o;
    const int p = parse("results", argc, argv, usage_results, &o);
    if (p) return p < 0 ? 0 : p;
    if (!o.id) return cli_fail("results", "which task? osprey results ID");
    osp_broker *b;
    if (cli_broker("results", o.broker, o.password, &b)) return 1;
    char *json = NULL;
    const int rc = osp_task_get(b, o.id, &json);
    osp_broker_free(b);
    if (rc) return cli_fail_lib("results", NULL);
    cJSON *t = cJSON_Parse(json);
    free(json);
    const char *state = str(t, "state");
    if (!osp_task_state_final(state)) {
        const int rc_state = cli_fail("results", "task %s is %s: no result yet", o.id, state);
        cJSON_Delete(t);
        return rc_state;
    }
    if (o.json) {
        cJSON *r = cJSON_CreateObject();
        static const char *const keep[] = {"id", "state", "reason", "exit_code", "dir", "files", "summary", "tries", "worker", "started", "ended"};
        for (size_t i = 0; i < sizeof keep / sizeof *keep; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(t, keep[i]);
            if (v) cJSON_AddItemToObject(r, keep[i], cJSON_Duplicate(v, 1));
        }
        char *out = cJSON_PrintUnformatted(r);
        printf("%s\n", out);
        free(out);
        cJSON_Delete(r);
    } else {
        printf("task       %s\nstate      %s", o.id, state);
        if (*str(t, "reason")) printf(" (%s)", str(t, "reason"));
        printf("\n");
        if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(t, "exit_code"))) printf("exit       %.0f\n", num(t, "exit_code", 0));
        if (*str(t, "dir")) printf("folder     %s\n", str(t, "dir"));
        const cJSON *f;
        cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(t, "files"))
            printf("file       %s (%.0f bytes)\n", str(f, "path"), num(f, "bytes", 0));
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(t, "summary");
        if (cJSON_IsObject(s)) {
            char *text = cJSON_PrintUnformatted(s);
            printf("summary    %s\n", text);
            free(text);
        }
    }
    cJSON_Delete(t);
    return 0;
}
