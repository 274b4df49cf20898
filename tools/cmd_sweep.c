/* osprey sweep: queue one task per point of a grid of settings
 * (osp_sweep_submit), and `osprey sweep report ID`: the settings against
 * the accuracy each task reached, best first. */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "sweep";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey sweep --grid GRID [--random N] [--seed S] [options] -- COMMAND ARGS...\n"
            "       osprey sweep report ID [--json] [broker options]\n"
            "\n"
            "Queues 'osprey COMMAND ARGS...' once per point of GRID, with the point's\n"
            "settings as options (replacing those ARGS gives), and prints the sweep's id.\n"
            "GRID is NAME=V1,V2,...;NAME=...: 'lr=0.1,0.03,0.01;batch=32,64' is 6 tasks,\n"
            "each with its own folder (and so its own --out). 'sweep report ID' prints the\n"
            "settings of each task against its result, best first: val_top1 of the last\n"
            "epoch where train had --val or --val-split, else its training accuracy (or a\n"
            "command's top1).\n"
            "\n"
            "  --grid GRID           the settings (at most 16 names, 10000 points)\n"
            "  --random N            only N points of the grid, drawn at random\n"
            "  --seed S              the seed of the draw (default 1)\n"
            "  --json                print {\"id\", \"tasks\"}; with report, the table as JSON\n"
            "and those of 'osprey submit' (--priority, --cores, --gpus, --tags, --after,\n"
            "--notify, --max-tries) for every task, and\n" CLI_BROKER_HELP);
}

enum { O_GRID = 1, O_RANDOM, O_SEED, O_JSON };

static const char *str(const cJSON *o, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* What a task reached: the summary's val_top1, else accuracy, else top1
 * (NAN: none). */
static double metric(const cJSON *t, const char **name) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(t, "summary");
    static const char *const names[] = {"val_top1", "accuracy", "top1"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, names[i]);
        if (cJSON_IsNumber(v)) {
            *name = names[i];
            return v->valuedouble;
        }
    }
    *name = "";
    return NAN;
}

typedef struct row {
    const cJSON *task;
    double value;
    const char *metric;
} row;

static int by_value(const void *a, const void *b) {
    const row *x = a, *y = b;
    if (isnan(x->value) != isnan(y->value)) return isnan(x->value) ? 1 : -1;
    if (x->value != y->value) return x->value > y->value ? -1 : 1;
    return 0;
}

static int report(int argc, char **argv) {
    static const struct option opts[] = {CLI_BROKER_OPTIONS, {"json", no_argument, 0, O_JSON},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *broker = NULL, *password = NULL;
    int json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case CLI_OPT_BROKER: broker = optarg; break;
        case CLI_OPT_BROKER_PASSWORD: password = optarg; break;
        case O_JSON: json = 1; break;
        case 'h': usage(stdout); return 0;
        default: return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey sweep --help')", argv[optind - 1]);
        }
    }
    if (optind + 1 != argc) return cli_fail(CMD, "which sweep? osprey sweep report ID");
    osp_broker *b;
    if (cli_broker(CMD, broker, password, &b)) return 1;
    char *text = NULL;
    const int rc = osp_sweep_get(b, argv[optind], &text);
    osp_broker_free(b);
    if (rc) return cli_fail_lib(CMD, NULL);
    cJSON *sweep = cJSON_Parse(text);
    free(text);
    const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(sweep, "tasks");
    const int n = cJSON_GetArraySize(tasks);
    row *rows = calloc((size_t)n + 1, sizeof *rows);
    int i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tasks) {
        rows[i].task = t;
        rows[i].value = metric(t, &rows[i].metric);
        i++;
    }
    qsort(rows, (size_t)n, sizeof *rows, by_value);
    if (json) {
        cJSON *out = cJSON_CreateObject(), *arr;
        cJSON_AddStringToObject(out, "id", argv[optind]);
        cJSON_AddStringToObject(out, "grid", str(sweep, "grid"));
        arr = cJSON_AddArrayToObject(out, "rows");
        for (i = 0; i < n; i++) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "task", str(rows[i].task, "id"));
            cJSON_AddStringToObject(r, "state", str(rows[i].task, "state"));
            const cJSON *params = cJSON_GetObjectItemCaseSensitive(rows[i].task, "params");
            cJSON_AddItemToObject(r, "params", params ? cJSON_Duplicate(params, 1) : cJSON_CreateObject());
            if (isnan(rows[i].value)) cJSON_AddNullToObject(r, "value");
            else cJSON_AddNumberToObject(r, "value", rows[i].value);
            cJSON_AddStringToObject(r, "metric", rows[i].metric);
            cJSON_AddItemToArray(arr, r);
        }
        char *s = cJSON_PrintUnformatted(out);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(out);
    } else {
        printf("sweep %s: %s\n%-6s %-10s %-10s %-9s %s\n", argv[optind], str(sweep, "grid"), "TASK", "STATE", "METRIC",
               "VALUE", "SETTINGS");
        for (i = 0; i < n; i++) {
            char settings[512] = "";
            size_t len = 0;
            const cJSON *p;
            cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(rows[i].task, "params")) {
                if (cJSON_IsString(p) && len < sizeof settings)
                    len += (size_t)snprintf(settings + len, sizeof settings - len, "%s%s=%s", len ? " " : "", p->string,
                                            p->valuestring);
            }
            char value[32] = "-";
            if (!isnan(rows[i].value)) snprintf(value, sizeof value, "%.4f", rows[i].value);
            printf("%-6s %-10s %-10s %-9s %s\n", str(rows[i].task, "id"), str(rows[i].task, "state"),
                   *rows[i].metric ? rows[i].metric : "-", value, settings);
        }
    }
    free(rows);
    cJSON_Delete(sweep);
    return 0;
}

int cmd_sweep(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "report")) return report(argc - 1, argv + 1);
    static const struct option opts[] = {
        CLI_BROKER_OPTIONS,
        {"grid", required_argument, 0, O_GRID},         {"random", required_argument, 0, O_RANDOM},
        {"seed", required_argument, 0, O_SEED},         {"json", no_argument, 0, O_JSON},
        CLI_TASK_OPTIONS,                               {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *broker = NULL, *password = NULL, *grid = NULL;
    osp_task_spec spec;
    osp_task_spec_defaults(&spec);
    int json = 0, random = 0, c;
    uint64_t seed = 1;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case CLI_OPT_BROKER: broker = optarg; break;
        case CLI_OPT_BROKER_PASSWORD: password = optarg; break;
        case O_GRID: grid = optarg; break;
        case O_RANDOM:
            if (cli_int(CMD, "--random", optarg, 1, 10000, &random)) return 1;
            break;
        case O_SEED:
            if (cli_u64(CMD, "--seed", optarg, &seed)) return 1;
            break;
        case O_JSON: json = 1; break;
        case 'h': usage(stdout); return 0;
        default: {
            const int rc = cli_task_option(CMD, c, optarg, &spec);
            if (rc >= 0) {
                if (rc) return 1;
                break;
            }
            return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey sweep --help')", argv[optind - 1]);
        }
        }
    }
    if (!grid) return cli_fail(CMD, "--grid is required (see 'osprey sweep --help')");
    if (optind >= argc) return cli_fail(CMD, "no command to sweep: osprey sweep --grid GRID -- COMMAND ARGS...");
    osp_sweep_grid *g;
    if (osp_sweep_grid_parse(grid, &g)) return cli_fail_lib(CMD, NULL);
    /* the command and every grid name are checked as options of it */
    const int n = argc - optind;
    osp_sweep_point first;
    osp_sweep_grid_point(g, 0, &first);
    int m = 0;
    char **with_point = NULL;
    int bad = osp_sweep_apply(n, (const char *const *)argv + optind, &first, &m, &with_point) ||
              cli_check_task(CMD, m, (const char *const *)with_point);
    free(with_point);
    osp_sweep_grid_free(g);
    if (bad) return bad == 1 ? 1 : cli_fail_lib(CMD, NULL);
    char **prepared;
    if (osp_task_prepare(n, (const char *const *)argv + optind, &m, &prepared)) return cli_fail_lib(CMD, NULL);
    spec.argc = m;
    spec.argv = (const char *const *)prepared;
    osp_broker *b;
    if (cli_broker(CMD, broker, password, &b)) {
        free(prepared);
        return 1;
    }
    char id[OSP_TASK_ID_MAX], *text = NULL;
    int rc = osp_sweep_submit(b, &spec, grid, random, seed, id);
    free(prepared);
    if (rc) {
        osp_broker_free(b);
        return cli_fail_lib(CMD, NULL);
    }
    rc = osp_sweep_get(b, id, &text);
    osp_broker_free(b);
    if (rc) return cli_fail_lib(CMD, NULL);
    cJSON *sweep = cJSON_Parse(text);
    free(text);
    const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(sweep, "tasks");
    if (json) {
        printf("{\"id\": \"%s\", \"tasks\": [", id);
        const cJSON *t;
        int i = 0;
        cJSON_ArrayForEach(t, tasks) printf("%s\"%s\"", i++ ? ", " : "", str(t, "id"));
        printf("]}\n");
    } else {
        printf("%s\n", id);
        fprintf(stderr, "sweep %s: %d task%s queued\n", id, cJSON_GetArraySize(tasks), cli_s(cJSON_GetArraySize(tasks)));
    }
    cJSON_Delete(sweep);
    return 0;
}
