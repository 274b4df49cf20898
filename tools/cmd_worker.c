/* osprey worker: run the broker's tasks that fit this machine
 * (osp_worker_run) until SIGTERM or SIGINT. */
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "worker";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey worker [options]\n"
            "\n"
            "Takes the tasks queued by 'osprey submit' and 'osprey sweep' that fit this\n"
            "worker, highest priority first, as many at once as its --cores hold (a task\n"
            "holds its own --cores, one without holds them all): runs each as 'osprey\n"
            "COMMAND ARGS...' in WORKDIR/ID, streams its output lines to the task's log\n"
            "('osprey logs'), and records its result: exit status, the files in its folder\n"
            "and its --json summary ('osprey results'). It heartbeats while it works; the\n"
            "tasks of a worker silent for --lapse seconds are taken over by other workers\n"
            "and run again (a train task continues from its checkpoint). The first\n"
            "SIGTERM or SIGINT stops it after the running tasks; a second stops them too\n"
            "(other workers take them over).\n"
            "\n" CLI_BROKER_HELP
            "  --cores N             cores offered (default: the online CPUs); a task\n"
            "                        asking for more than are free is left to others\n"
            "  --gpus N              GPUs offered (default 0)\n"
            "  --tags LIST           tags offered (cpu,avx512): a task's tags must be among them\n"
            "  --workdir DIR         where the tasks' folders are (default osprey-tasks);\n"
            "                        shared storage when workers on several machines\n"
            "                        must see each other's outputs\n"
            "  --name NAME           this worker's name (default HOST:PID), unique\n"
            "  --lapse S             seconds of silence after which a worker is taken for\n"
            "                        dead (default 30); heartbeats come every S/4 (at most 5 s)\n"
            "  --idle-exit S         exit after S seconds with nothing to do (for batch\n"
            "                        jobs, such as a Slurm array; default: never)\n"
            "  --log-lines N         lines kept of each task's log (default 10000)\n"
            "  --quiet               no line per task on stderr\n"
            "\n"
            "See docs/platform.md.\n");
}

static void on_signal(int sig) {
    (void)sig;
    osp_worker_stop();
}

enum { O_CORES = 1, O_GPUS, O_TAGS, O_WORKDIR, O_NAME, O_LAPSE, O_IDLE, O_LINES, O_QUIET };

int cmd_worker(int argc, char **argv) {
    static const struct option opts[] = {
        CLI_BROKER_OPTIONS,
        {"cores", required_argument, 0, O_CORES}, {"gpus", required_argument, 0, O_GPUS},
        {"tags", required_argument, 0, O_TAGS},   {"workdir", required_argument, 0, O_WORKDIR},
        {"name", required_argument, 0, O_NAME},   {"lapse", required_argument, 0, O_LAPSE},
        {"idle-exit", required_argument, 0, O_IDLE}, {"log-lines", required_argument, 0, O_LINES},
        {"quiet", no_argument, 0, O_QUIET},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    osp_worker_config cfg;
    osp_worker_defaults(&cfg);
    const char *broker = NULL;
    float lapse = (float)cfg.lapse_s, idle = 0;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case CLI_OPT_BROKER: broker = optarg; break;
        case CLI_OPT_BROKER_PASSWORD: cfg.password_file = optarg; break;
        case O_CORES:
            if (cli_int(CMD, "--cores", optarg, 1, 4096, &cfg.cores)) return 1;
            break;
        case O_GPUS:
            if (cli_int(CMD, "--gpus", optarg, 0, 1024, &cfg.gpus)) return 1;
            break;
        case O_TAGS: cfg.tags = optarg; break;
        case O_WORKDIR: cfg.workdir = optarg; break;
        case O_NAME: cfg.name = optarg; break;
        case O_LAPSE:
            if (cli_float(CMD, "--lapse", optarg, 0.5, 86400, &lapse)) return 1;
            break;
        case O_IDLE:
            if (cli_float(CMD, "--idle-exit", optarg, 0, 1e7, &idle)) return 1;
            break;
        case O_LINES:
            if (cli_int(CMD, "--log-lines", optarg, 1, 10000000, &cfg.max_log_lines)) return 1;
            break;
        case O_QUIET: cfg.quiet = 1; break;
        case 'h': usage(stdout); return 0;
        default:
            return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey worker --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    cfg.lapse_s = lapse;
    cfg.idle_exit_s = idle;
    if (!osp_platform_available())
        return cli_fail(CMD, "this osprey was built without hiredis (libhiredis-dev): no task platform");
    if (!broker) broker = getenv("OSPREY_BROKER");
    cfg.broker = broker && *broker ? broker : "redis://127.0.0.1:6379";
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* a broker that goes away must not kill the worker with SIGPIPE */
    signal(SIGPIPE, SIG_IGN);
    if (osp_worker_run(&cfg)) return cli_fail_lib(CMD, NULL);
    return 0;
}
