/* osprey route: an HTTP router over shard workers (`osprey serve`), with
 * the web page (osprey/serve.h, docs/serving.md, docs/http-api.md). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "osprey/serve.h"

static const char *const CMD = "route";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey route --listen HOST:PORT --shard ADDR[,ADDR...] [--shard ...] [options]\n"
            "\n"
            "One HTTP front over workers ('osprey serve') that each hold one shard of the\n"
            "catalogue: the i-th --shard (from 0) names the replicas of shard i, the workers\n"
            "holding the images whose id %% N == i (N: the number of --shard options), as\n"
            "'osprey tag --shard i/N' makes them. ADDR is HOST:PORT.\n"
            "\n"
            "  POST /v1/vectors:search    to one live replica of every shard (round robin,\n"
            "                             another replica when one fails); the hits merged\n"
            "  POST /v1/images:annotate   to one live worker (round robin over all); its\n"
            "                             WEB_DETECTION searched over every shard\n"
            "  POST /v1/images, DELETE /v1/images/ID\n"
            "                             to every live replica of the image's shard (the\n"
            "                             Authorization header passed on)\n"
            "  GET  /                     a web page: drop an image, see its labels and\n"
            "                             the similar images\n"
            "  GET  /v1/catalog/image?path=P   a catalogue image, below --allow-root only\n"
            "  GET  /healthz, /metrics    the router's view of its workers; Prometheus text\n"
            "\n"
            "An answer missing a shard whose every replica is down says \"partial\": true and\n"
            "\"missingShards\". Prints 'listening on HOST:PORT' on stderr when it accepts\n"
            "connections; SIGTERM or SIGINT: the requests in flight finish, then it exits 0.\n"
            "\n"
            "  --listen HOST:PORT    the address to serve on (port 0: any free one)\n"
            "  --shard ADDR[,ADDR]   a shard's replicas (once per shard, in shard order)\n"
            "  --allow-root DIR      serve catalogue images from below DIR only (default:\n"
            "                        none; the page then shows no pictures)\n"
            "  --timeout-ms N        deadline of a request, retries included (default 10000)\n"
            "  --health-ms N         health checks of every worker this often (default 1000)\n"
            "  --threads T           requests served at once (default 16)\n"
            "  --quiet               no log lines but errors\n");
}

static void on_signal(int sig) {
    (void)sig;
    osp_serve_stop();
}

static void on_listening(const char *addr, void *ctx) {
    (void)ctx;
    fprintf(stderr, "listening on %s\n", addr);
    fflush(stderr);
}

int cmd_route(int argc, char **argv) {
    static const struct option opts[] = {
        {"listen", required_argument, 0, 'l'},    {"shard", required_argument, 0, 's'},
        {"allow-root", required_argument, 0, 'r'}, {"timeout-ms", required_argument, 0, 'T'},
        {"health-ms", required_argument, 0, 'H'}, {"threads", required_argument, 0, 't'},
        {"quiet", no_argument, 0, 'q'},           {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    osp_serve_router_config cfg = osp_serve_router_defaults();
    const char **shards = calloc((size_t)argc + 1, sizeof *shards);
    if (!shards) return cli_fail(CMD, "out of memory");
    int n_shards = 0, quiet = 0, c, status = 1;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'l': cfg.listen = optarg; break;
        case 's': shards[n_shards++] = optarg; break;
        case 'r': cfg.allow_root = optarg; break;
        case 'T': if (cli_int(CMD, "--timeout-ms", optarg, 1, 3600 * 1000, &cfg.timeout_ms)) goto done; break;
        case 'H': if (cli_int(CMD, "--health-ms", optarg, 10, 3600 * 1000, &cfg.health_ms)) goto done; break;
        case 't': if (cli_int(CMD, "--threads", optarg, 1, 1024, &cfg.threads)) goto done; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); status = 0; goto done;
        default:
            cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey route --help')", argv[optind - 1]);
            goto done;
        }
    }
    if (optind < argc) {
        cli_fail(CMD, "unexpected argument '%s' (see 'osprey route --help')", argv[optind]);
        goto done;
    }
    if (!cfg.listen || n_shards == 0) {
        cli_fail(CMD, "--listen and at least one --shard are required (see 'osprey route --help')");
        goto done;
    }
    cfg.shards = shards;
    cfg.n_shards = n_shards;
    cfg.on_listening = on_listening;
    if (!quiet && osp_log_get_level() > OSP_LOG_INFO) osp_log_set_level(OSP_LOG_INFO);
    if (quiet) osp_log_set_level(OSP_LOG_ERROR);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (osp_serve_router_run(&cfg)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    status = 0;
done:
    free(shards);
    return status;
}
