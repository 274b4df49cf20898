/* osprey serve: an HTTP worker over a model and one shard of an index and
 * its catalogue (docs/http-api.md). The work is osp_serve_worker_run's;
 * this file reads the options and turns SIGTERM / SIGINT into a clean
 * stop. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "osprey/serve.h"

static const char *const CMD = "serve";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey serve --model MODEL [--index INDEX --catalog DIR] --listen HOST:PORT [options]\n"
            "\n"
            "Answers HTTP requests (docs/http-api.md) with MODEL and, where given, INDEX (built\n"
            "with 'osprey index build --from DIR') and DIR, the output folder of 'osprey tag\n"
            "--embed' or 'osprey embed' that names its images:\n"
            "  POST /v1/images:annotate   LABEL_DETECTION, WEB_DETECTION (similar images from\n"
            "                             INDEX), IMAGE_PROPERTIES, EMBEDDING; Cloud Vision's shape\n"
            "  POST /v1/vectors:search    the nearest images of vectors\n"
            "  POST /v1/images            add images (needs --token-file)\n"
            "  DELETE /v1/images/ID       remove one (needs --token-file)\n"
            "  GET /healthz, GET /metrics (Prometheus)\n"
            "Prints 'listening on HOST:PORT' on stderr once it answers; SIGTERM or SIGINT\n"
            "stops it after the requests in flight are answered (exit status 0).\n"
            "\n"
            "  --model MODEL         the model (the one DIR was made with: its hash is checked)\n"
            "  --index INDEX         the index to search (with --catalog); writes rewrite it\n"
            "  --catalog DIR         the output folder INDEX was built from; writes go to its\n"
            "                        catalog.db\n"
            "  --layer NAME          EMBEDDING's layer without --catalog (default: DIR's layer)\n"
            "  --normalize           L2-normalise EMBEDDING's vectors without --catalog\n"
            "  --listen HOST:PORT    the address (default 127.0.0.1:8080; port 0: any free one,\n"
            "                        printed)\n"
            "  --allow-root DIR      accept imageUri file paths resolving under DIR (relative\n"
            "                        ones are taken from DIR); without it imageUri is refused\n"
            "  --token-file FILE     writes need 'Authorization: Bearer TOKEN', TOKEN being the\n"
            "                        file's contents (16+ printable characters); without it\n"
            "                        every write is refused\n"
            "  --threads T           HTTP threads (default 4)\n"
            "  --inference-threads T threads of the network's kernels (default: all cores)\n"
            "  --max-connections N   connections answered at once; more get 429 (default 256)\n"
            "  --timeout-s S         idle connections are closed and request bodies must\n"
            "                        arrive within S seconds (default 30)\n"
            "  --max-pixels N        largest image, width x height (default 67108864)\n");
}

static void on_signal(int sig) {
    (void)sig;
    osp_serve_stop();
}

static void on_ready(const char *address, void *user) {
    (void)user;
    fprintf(stderr, "osprey serve: listening on %s\n", address);
    fflush(stderr);
}

int cmd_serve(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},       {"index", required_argument, 0, 'x'},
        {"catalog", required_argument, 0, 'c'},     {"layer", required_argument, 0, 'l'},
        {"normalize", no_argument, 0, 'n'},         {"listen", required_argument, 0, 'L'},
        {"allow-root", required_argument, 0, 'r'},  {"token-file", required_argument, 0, 'k'},
        {"threads", required_argument, 0, 't'},     {"inference-threads", required_argument, 0, 'i'},
        {"max-connections", required_argument, 0, 'C'}, {"timeout-s", required_argument, 0, 'T'},
        {"max-pixels", required_argument, 0, 'P'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    osp_serve_worker_config cfg;
    osp_serve_worker_defaults(&cfg);
    int inference_threads = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': cfg.model_path = optarg; break;
        case 'x': cfg.index_path = optarg; break;
        case 'c': cfg.catalog_dir = optarg; break;
        case 'l': cfg.layer = optarg; break;
        case 'n': cfg.normalize = 1; break;
        case 'L': cfg.listen = optarg; break;
        case 'r': cfg.allow_root = optarg; break;
        case 'k': cfg.token_file = optarg; break;
        case 't': if (cli_int(CMD, "--threads", optarg, 1, 1024, &cfg.threads)) return 1; break;
        case 'i': if (cli_int(CMD, "--inference-threads", optarg, 1, 1024, &inference_threads)) return 1; break;
        case 'C': if (cli_int(CMD, "--max-connections", optarg, 1, 100000, &cfg.max_connections)) return 1; break;
        case 'T': if (cli_int(CMD, "--timeout-s", optarg, 1, 3600, &cfg.timeout_s)) return 1; break;
        case 'P':
            if (cli_int64(CMD, "--max-pixels", optarg, 1, (int64_t)1 << 40, &cfg.max_pixels)) return 1;
            break;
        case 'h': usage(stdout); return 0;
        default:
            return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey serve --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s' (see 'osprey serve --help')", argv[optind]);
    if (!cfg.model_path) return cli_fail(CMD, "--model is required (see 'osprey serve --help')");
    osp_threads_set(inference_threads);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    cfg.on_ready = on_ready;
    if (osp_serve_worker_run(&cfg)) return cli_fail_lib(CMD, NULL);
    fprintf(stderr, "osprey serve: stopped\n");
    return 0;
}
