/* osprey submit: queue an osprey command as a task on the broker
 * (osp_task_submit); prints its id. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "submit";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey submit [options] -- COMMAND ARGS...\n"
            "\n"
            "Queues 'osprey COMMAND ARGS...' as a task for 'osprey worker' and prints its\n"
            "id. COMMAND is one of osprey's batch commands (train, eval, run, info, export,\n"
            "import, quantize, dataset, tag, embed, merge, index, hash, similar, bench,\n"
            "advise); its options are checked against its --help before it is queued.\n"
            "The task runs in its own folder WORKDIR/ID on the worker: relative paths are\n"
            "read and written there. --json is added where the command prints a summary\n"
            "with it (the result keeps the last JSON line); a train task also gets --out\n"
            "model.osp when it has no --out, and --resume auto, so that a task run again\n"
            "after its worker was lost continues from its checkpoint.\n"
            "\n" CLI_BROKER_HELP
            "  --priority P          0 (lowest) to 9 (default 5): higher runs first\n"
            "  --cores N             cores it needs: only workers with as many take it\n"
            "                        (and it runs with N threads)\n"
            "  --gpus N              GPUs it needs: only workers declaring them take it\n"
            "  --tags LIST           tags a worker must have (a,b: all of them)\n"
            "  --after ID            wait until task ID is done (cancelled if it fails)\n"
            "  --notify URL          POST the task's record as JSON to URL when it ends\n"
            "  --max-tries N         starts before a task whose worker keeps dying goes to\n"
            "                        the dead letters (default 3)\n"
            "  --json                print {\"id\": ...}\n"
            "\n"
            "See docs/platform.md.\n");
}

enum { O_JSON = 1 };

int cmd_submit(int argc, char **argv) {
    static const struct option opts[] = {
        CLI_BROKER_OPTIONS, CLI_TASK_OPTIONS, {"json", no_argument, 0, O_JSON},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *broker = NULL, *password = NULL;
    osp_task_spec spec;
    osp_task_spec_defaults(&spec);
    int json = 0, c;
    optind = 1;
    opterr = 0;
    /* '+': the task's own words start at the first that is not ours */
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case CLI_OPT_BROKER: broker = optarg; break;
        case CLI_OPT_BROKER_PASSWORD: password = optarg; break;
        case O_JSON: json = 1; break;
        case 'h': usage(stdout); return 0;
        default: {
            const int rc = cli_task_option(CMD, c, optarg, &spec);
            if (rc >= 0) {
                if (rc) return 1;
                break;
            }
            return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey submit --help')", argv[optind - 1]);
        }
        }
    }
    if (optind >= argc) return cli_fail(CMD, "no command to queue: osprey submit [options] -- COMMAND ARGS...");
    const int n = argc - optind;
    const char *const *task = (const char *const *)argv + optind;
    if (cli_check_task(CMD, n, task)) return 1;
    int m;
    char **prepared;
    if (osp_task_prepare(n, task, &m, &prepared)) return cli_fail_lib(CMD, NULL);
    spec.argc = m;
    spec.argv = (const char *const *)prepared;
    osp_broker *b;
    if (cli_broker(CMD, broker, password, &b)) {
        free(prepared);
        return 1;
    }
    char id[OSP_TASK_ID_MAX];
    const int rc = osp_task_submit(b, &spec, id);
    free(prepared);
    osp_broker_free(b);
    if (rc) return cli_fail_lib(CMD, NULL);
    if (json) printf("{\"id\": \"%s\"}\n", id);
    else printf("%s\n", id);
    return 0;
}
