/* osprey merge: join the output folders of one run's shards
 * (osp_pipeline_merge). */
#include <getopt.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "osprey/pipeline.h"

static const char *const CMD = "merge";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey merge --out DIR SRC...\n"
            "\n"
            "Joins the output folders SRC of one run's shards ('osprey tag' or 'osprey embed'\n"
            "with --shard I/N on several machines) into one output folder DIR, that\n"
            "'osprey index build --from DIR' and 'osprey similar --catalog DIR' read.\n"
            "\n"
            "  --out DIR             the folder to write (made if missing); a folder that\n"
            "                        holds an earlier merge is replaced, one that holds a\n"
            "                        run of 'osprey tag' or 'osprey embed' is refused\n"
            "  --quiet               print nothing on success\n"
            "  --json                print the figures as one JSON object\n"
            "  --lock-timeout SEC    wait up to SEC seconds for another merge or run\n"
            "                        writing into DIR to end (default 10; 0: refuse at once)\n"
            "\n"
            "The sources must be runs of the same model (content hash), layer, vector size\n"
            "and type, normalisation, scoring and tags setting. Rows follow the order of\n"
            "the SRC arguments; image ids are kept. Only what each source committed is\n"
            "read: a shard killed mid-batch can be merged as it is. An image in two\n"
            "sources is kept once, from the first, if both have the same path; two paths\n"
            "with the same id are an error. The files are written under temporary names\n"
            "in DIR and renamed into place, catalog.db last; the sources are not changed.\n");
}

/* s as a JSON string. */
static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

int cmd_merge(int argc, char **argv) {
    static const struct option opts[] = {{"out", required_argument, 0, 'o'}, {"quiet", no_argument, 0, 'q'},
                                         {"json", no_argument, 0, 'j'},      {"help", no_argument, 0, 'h'},
                                         {"lock-timeout", required_argument, 0, 'l'}, {0, 0, 0, 0}};
    const char *out = NULL;
    int quiet = 0, json = 0, c;
    float lock_timeout = (float)OSP_PIPELINE_LOCK_TIMEOUT;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'q': quiet = 1; break;
        case 'j': json = 1; break;
        case 'l':
            if (cli_float(CMD, "--lock-timeout", optarg, 0, 1e6, &lock_timeout)) return 1;
            break;
        case 'h': usage(stdout); return 0;
        default: return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey merge --help')", argv[optind - 1]);
        }
    }
    if (!out) return cli_fail(CMD, "--out DIR is required (see 'osprey merge --help')");
    if (optind >= argc) return cli_fail(CMD, "no source folders to merge (see 'osprey merge --help')");
    const int n = argc - optind;
    const char *const *srcs = (const char *const *)argv + optind;
    double t0 = osp_now();
    if (osp_pipeline_merge(out, srcs, n, lock_timeout)) return cli_fail_lib(CMD, NULL);
    double seconds = osp_now() - t0;
    if (quiet && !json) return 0;
    osp_catalog *cat = NULL;
    int64_t ok = 0, errors = 0;
    if (osp_catalog_open(out, &cat) || osp_catalog_counts(cat, &ok, &errors)) {
        osp_catalog_close(cat);
        return cli_fail_lib(CMD, out);
    }
    osp_catalog_close(cat);
    if (json) {
        printf("{\"out\": ");
        json_string(stdout, out);
        printf(", \"sources\": %d, \"images\": %lld, \"errors\": %lld, \"seconds\": %.3f}\n", n,
               (long long)(ok + errors), (long long)errors, seconds);
    } else
        printf("merged %d folder%s into %s: %lld images (%lld errors) in %.2f s\n", n, n == 1 ? "" : "s", out,
               (long long)(ok + errors), (long long)errors, seconds);
    return 0;
}
