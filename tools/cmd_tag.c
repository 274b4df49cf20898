/* osprey tag / osprey embed: a model over a collection of images, into an
 * output folder that a killed run continues (osprey/pipeline.h,
 * docs/pipeline.md). Under mpirun each rank does its shard into
 * DIR/shards/ and rank 0 joins them into DIR. */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "commands.h"

#define MAX_MODELS 8
#define MAX_SCALES 8

typedef struct tag_options {
    const char *cmd;
    const char *model, *out, *hash; /* hash: --hash FILE */
    int binary;                      /* --binary or --hash: codes, not floats */
    const char *more_models[MAX_MODELS];
    int n_more;
    int scales[MAX_SCALES];
    osp_pipeline_options p;
    int threads, json, quiet, shard_given, top_k_given;
    char **inputs;
    int n_inputs;
} tag_options;

static void usage(FILE *out, int embed) {
    if (embed)
        fprintf(out,
                "usage: osprey embed --model MODEL --layer NAME --out DIR [options] INPUT...\n"
                "\n"
                "One vector per image from any layer of MODEL (averaged over its plane where the\n"
                "layer is spatial; for a layer of tokens, T x D, the class token or the tokens'\n"
                "mean with --pool) into DIR/vectors.npy (N x D), DIR/ids.npy (the image ids,\n"
                "row by row) and DIR/catalog.db (SQLite: paths, sizes, SHA-256, status).\n");
    else
        fprintf(out,
                "usage: osprey tag --model MODEL --out DIR [options] INPUT...\n"
                "\n"
                "The top labels of each image with their scores into DIR/tags.jsonl, one line\n"
                "an image: {\"id\", \"path\", \"labels\": [{\"description\", \"score\"}], \"model\"},\n"
                "or {\"id\", \"path\", \"error\": {\"code\", \"message\"}} for an image that cannot\n"
                "be read; and DIR/catalog.db (SQLite). --embed NAME also writes vectors, from the\n"
                "same forward pass, as 'osprey embed' does.\n");
    fprintf(out,
            "\n"
            "INPUT: image files, folders (every .jpg/.jpeg/.png/.webp below, any depth), list\n"
            "files (a path a line, relative to the list), or - for paths on standard input.\n"
            "\n"
            "Killed at any moment, the same command run again does what is left: every image\n"
            "is in the outputs exactly once. A later run over more images does only the new\n"
            "ones. DIR holds one model's work: another model, layer or setting is refused.\n"
            "\n");
    if (!embed)
        fprintf(out,
                "  --top-k K             labels per image (default 5)\n"
                "  --threshold P         leave out labels scoring under P (default 0)\n"
                "  --sigmoid             scores as independent sigmoids, not one softmax (a\n"
                "                        multi-label model takes them by itself, and gives\n"
                "                        every label over its own threshold, the top-k cut\n"
                "                        only with --top-k)\n"
                "  --embed NAME          also write NAME's vectors (see 'osprey embed')\n"
                "  --model MODEL2 ...    more models: an ensemble, whose scores are averaged\n"
                "                        (the same classes; vectors come from the first)\n"
                "  --scales S1,S2,...    average the scores over these input sizes (S x S) of\n"
                "                        each model, as Deep Image does (models whose layers\n"
                "                        do not depend on the input size: convolutions and\n"
                "                        global pooling); with --embed the first is the\n"
                "                        model's own size\n");
    else
        fprintf(out, "  --layer NAME          the layer ('osprey info MODEL' lists them); with\n"
                     "                        --binary, the hash head's layer by default\n");
    fprintf(out,
            "  --pool cls|mean       a token layer (T x D, a vision transformer's) as one\n"
            "                        vector of D: token 0 (the class token), or the mean of\n"
            "                        the tokens; recorded in DIR, and 'osprey similar'\n"
            "                        pools its queries alike (without it a token layer is\n"
            "                        taken whole, T*D values)\n");
    fprintf(out,
            "  --normalize           L2-normalise the vectors (for cosine search)\n"
            "  --dtype T             float32 (default) or float16 vectors\n"
            "  --binary              packed binary codes instead of floats, for a binary\n"
            "                        index: the model's own learned hash head, with its\n"
            "                        layer and normalisation ('osprey hash train --out\n"
            "                        MODEL.osp' stores one; 'osprey info' shows it)\n"
            "  --hash HASH.osh       the same through a hash file instead of the model's head\n"
            "  --batch B             images per forward pass (default 32)\n"
            "  --workers W           decoding threads (default: the cores)\n"
            "  --threads T           inference threads (default: all cores)\n"
            "  --max-pixels N        larger images are error rows (default 67108864)\n"
            "  --shard I/N           do only shard I of N (0-based) of the inputs, for\n"
            "                        schedulers other than MPI; join with 'osprey merge'\n"
            "  --skip-done           also check that images already done are unchanged\n"
            "                        (SHA-256); changed ones are reported, not redone\n"
            "  --lock-timeout SEC    wait up to SEC seconds for another run or merge\n"
            "                        writing into DIR to end (default 10; 0: refuse at once)\n"
            "  --json                a JSON summary on stdout\n"
            "  --quiet               no progress or summary on stderr\n"
            "\n"
            "Under mpirun each rank does its shard into DIR/shards/R-of-N and rank 0 joins\n"
            "them into DIR (run again with the same number of ranks to continue).\n");
}

static int parse_shard(const char *cmd, const char *s, int *shard, int *shards) {
    char *end;
    long i = strtol(s, &end, 10);
    if (end == s || *end != '/') goto bad;
    const char *b = end + 1;
    long n = strtol(b, &end, 10);
    if (end == b || *end || n < 1 || n > 1000000 || i < 0 || i >= n) goto bad;
    *shard = (int)i;
    *shards = (int)n;
    return 0;
bad:
    return cli_fail(cmd, "--shard must be I/N with 0 <= I < N, not '%s'", s);
}

static int parse(int argc, char **argv, int embed, tag_options *o) {
    enum { O_MODEL = 256, O_SCALES, O_BINARY, O_HASH, O_OUT, O_LAYER, O_EMBED, O_TOPK, O_THRESHOLD, O_SIGMOID, O_NORMALIZE,
           O_DTYPE, O_BATCH, O_WORKERS, O_THREADS, O_PIXELS, O_SHARD, O_SKIP, O_JSON, O_QUIET, O_HELP, O_POOL,
           O_LOCK };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},   {"out", required_argument, 0, O_OUT},
        {"scales", required_argument, 0, O_SCALES}, {"binary", no_argument, 0, O_BINARY},
        {"hash", required_argument, 0, O_HASH},
        {"layer", required_argument, 0, O_LAYER},   {"embed", required_argument, 0, O_EMBED},
        {"top-k", required_argument, 0, O_TOPK},    {"threshold", required_argument, 0, O_THRESHOLD},
        {"sigmoid", no_argument, 0, O_SIGMOID},     {"normalize", no_argument, 0, O_NORMALIZE},
        {"dtype", required_argument, 0, O_DTYPE},   {"batch", required_argument, 0, O_BATCH},
        {"workers", required_argument, 0, O_WORKERS}, {"threads", required_argument, 0, O_THREADS},
        {"max-pixels", required_argument, 0, O_PIXELS}, {"shard", required_argument, 0, O_SHARD},
        {"skip-done", no_argument, 0, O_SKIP},      {"json", no_argument, 0, O_JSON},
        {"quiet", no_argument, 0, O_QUIET},         {"help", no_argument, 0, O_HELP},
        {"pool", required_argument, 0, O_POOL},     {"lock-timeout", required_argument, 0, O_LOCK},
        {0, 0, 0, 0}};
    const char *cmd = o->cmd;
    o->p = osp_pipeline_defaults();
    o->p.tags = !embed;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "-h", opts, NULL)) != -1) {
        switch (c) {
        case 1: o->inputs[o->n_inputs++] = optarg; break;
        case O_MODEL:
            if (!o->model) {
                o->model = optarg;
                break;
            }
            if (embed) return cli_fail(cmd, "one --model: vectors come from one model ('osprey tag' averages several)");
            if (o->n_more == MAX_MODELS) return cli_fail(cmd, "at most %d models", MAX_MODELS + 1);
            o->more_models[o->n_more++] = optarg;
            break;
        case O_SCALES: {
            if (embed) return cli_fail(cmd, "--scales is for 'osprey tag'");
            char *p = optarg, *end;
            o->p.n_scales = 0;
            while (*p) {
                long v = strtol(p, &end, 10);
                if (end == p || v < 8 || v > 4096 || (*end && *end != ',') || o->p.n_scales == MAX_SCALES)
                    return cli_fail(cmd, "--scales takes up to %d sizes from 8 to 4096, such as 224,320, not '%s'", MAX_SCALES, optarg);
                o->scales[o->p.n_scales++] = (int)v;
                p = *end ? end + 1 : end;
            }
            if (o->p.n_scales == 0) return cli_fail(cmd, "--scales needs at least one size");
            o->p.scales = o->scales;
            break;
        }
        case O_OUT: o->out = optarg; break;
        case O_LAYER:
            if (!embed) return cli_fail(cmd, "--layer is for 'osprey embed'; 'osprey tag' takes --embed NAME");
            o->p.embed_layer = optarg;
            break;
        case O_EMBED:
            if (embed) return cli_fail(cmd, "'osprey embed' takes --layer NAME");
            o->p.embed_layer = optarg;
            break;
        case O_TOPK:
        case O_THRESHOLD:
        case O_SIGMOID:
            if (embed) return cli_fail(cmd, "%s is for 'osprey tag'", argv[optind - 1]);
            if (c == O_TOPK && cli_int(cmd, "--top-k", optarg, 1, 100000, &o->p.top_k)) return 1;
            if (c == O_TOPK) o->top_k_given = 1;
            if (c == O_THRESHOLD && cli_float(cmd, "--threshold", optarg, 0, 1, &o->p.threshold)) return 1;
            if (c == O_SIGMOID) o->p.sigmoid = 1;
            break;
        case O_NORMALIZE: o->p.normalize = 1; break;
        case O_POOL:
            if (!strcmp(optarg, "cls")) o->p.pool = OSP_POOL_CLS;
            else if (!strcmp(optarg, "mean")) o->p.pool = OSP_POOL_MEAN;
            else return cli_fail(cmd, "--pool must be cls (token 0) or mean (of the tokens), not '%s'", optarg);
            break;
        case O_BINARY: o->binary = 1; break;
        case O_HASH:
            o->hash = optarg;
            o->binary = 1;
            break;
        case O_DTYPE:
            if (!strcmp(optarg, "float32")) o->p.dtype = OSP_DTYPE_F32;
            else if (!strcmp(optarg, "float16")) o->p.dtype = OSP_DTYPE_F16;
            else return cli_fail(cmd, "--dtype must be float32 or float16, not '%s'", optarg);
            break;
        case O_BATCH: if (cli_int(cmd, "--batch", optarg, 1, 4096, &o->p.batch)) return 1; break;
        case O_WORKERS: if (cli_int(cmd, "--workers", optarg, 1, 256, &o->p.workers)) return 1; break;
        case O_THREADS: if (cli_int(cmd, "--threads", optarg, 1, 1024, &o->threads)) return 1; break;
        case O_PIXELS:
            if (cli_int64(cmd, "--max-pixels", optarg, 1, (int64_t)1 << 40, &o->p.max_pixels)) return 1;
            break;
        case O_SHARD:
            if (parse_shard(cmd, optarg, &o->p.shard, &o->p.shards)) return 1;
            o->shard_given = 1;
            break;
        case O_SKIP: o->p.verify = 1; break;
        case O_LOCK: {
            float sec;
            if (cli_float(cmd, "--lock-timeout", optarg, 0, 1e6, &sec)) return 1;
            o->p.lock_timeout = sec;
            break;
        }
        case O_JSON: o->json = 1; break;
        case O_QUIET: o->quiet = 1; break;
        case 'h':
        case O_HELP: usage(stdout, embed); return -1;
        default:
            return cli_fail(cmd, "unknown or incomplete option '%s' (see 'osprey %s --help')",
                            argv[optind - 1], cmd);
        }
    }
    if (!o->model || !o->out)
        return cli_fail(cmd, "--model and --out are required (see 'osprey %s --help')", cmd);
    /* --binary once took the hash file: say where it goes now */
    for (int i = 0; o->binary && !o->hash && i < o->n_inputs; i++) {
        size_t n = strlen(o->inputs[i]);
        if (n > 4 && !strcmp(o->inputs[i] + n - 4, ".osh"))
            return cli_fail(cmd, "%s is a hash file: give it with --hash %s (--binary alone uses the model's "
                            "own hash head)", o->inputs[i], o->inputs[i]);
    }
    /* with codes, the hash names its layer */
    if (embed && !o->p.embed_layer && !o->binary)
        return cli_fail(cmd, "--layer is required ('osprey info %s' lists the layers)", o->model);
    if (!embed && !o->p.embed_layer && (o->p.normalize || o->p.dtype != OSP_DTYPE_F32 || o->binary))
        return cli_fail(cmd, "--normalize, --dtype, --binary and --hash apply to vectors: add --embed NAME");
    if (!o->p.embed_layer && o->p.pool != OSP_POOL_DEFAULT)
        return cli_fail(cmd, "--pool applies to vectors: add --embed NAME");
    if (o->binary && o->p.pool != OSP_POOL_DEFAULT)
        return cli_fail(cmd, "--pool is not for --binary: a hash takes its layer's vectors as it was trained");
    if (o->binary && o->p.dtype != OSP_DTYPE_F32)
        return cli_fail(cmd, "--binary writes bits: not with --dtype");
    if (o->n_inputs == 0)
        return cli_fail(cmd, "no INPUT: give image files, folders, list files or - (see 'osprey %s --help')", cmd);
    return 0;
}

/* ---- progress ------------------------------------------------------------- */

typedef struct progress {
    int tty;
    double last;
} progress;

static void on_progress(const osp_pipeline_progress *p, void *user) {
    progress *pr = user;
    double now = osp_now();
    if (!pr->tty || now - pr->last < 0.25) return;
    pr->last = now;
    char eta[32] = "";
    if (p->total > 0 && p->images_per_s > 0) {
        char d[24];
        cli_format_duration((double)(p->total - p->done) / p->images_per_s, d, sizeof d);
        snprintf(eta, sizeof eta, "  ETA %s", d);
    }
    if (p->total > 0)
        fprintf(stderr, "\r\033[K%lld/%lld images  %.1f images/s  %lld errors%s", (long long)p->done,
                (long long)p->total, p->images_per_s, (long long)p->errors, eta);
    else
        fprintf(stderr, "\r\033[K%lld images  %.1f images/s  %lld errors", (long long)p->done,
                p->images_per_s, (long long)p->errors);
}

/* Inputs this process will look at, for the ETA: a second walk over the
 * sources (names only), when nothing comes from stdin. */
static int64_t count_inputs(const tag_options *o) {
    for (int i = 0; i < o->n_inputs; i++)
        if (!strcmp(o->inputs[i], "-")) return -1;
    osp_inputs *in;
    if (osp_inputs_new((const char *const *)o->inputs, o->n_inputs, &in)) return -1;
    osp_log_level level = osp_log_get_level();
    osp_log_set_level(OSP_LOG_ERROR); /* its warnings come in the real walk */
    const int shards = o->p.shards > 1 ? o->p.shards : 1;
    int64_t n = 0;
    const char *path;
    while (osp_inputs_next(in, &path) == OSP_OK && path)
        n += osp_image_id(path) % shards == o->p.shard;
    osp_log_set_level(level);
    osp_inputs_free(in);
    return n;
}

static void print_summary(const tag_options *o, const osp_pipeline_summary *s, int64_t left_out) {
    if (o->json) {
        printf("{\"images\": %lld, \"errors\": %lld, \"errors_by_code\": {", (long long)s->images,
               (long long)s->errors);
        for (int k = 0; k < OSP_PIPELINE_ERROR_KINDS; k++)
            printf("%s\"%s\": %lld", k ? ", " : "", osp_pipeline_error_code(k), (long long)s->error_kinds[k]);
        printf("}, \"already_done\": %lld, \"changed\": %lld, \"other_shards\": %lld, "
               "\"not_images\": %lld, \"rows\": %lld, \"seconds\": %.3f, \"images_per_s\": %.2f, "
               "\"threads\": %d, \"out\": \"%s\"}\n",
               (long long)s->skipped, (long long)s->changed, (long long)s->not_ours,
               (long long)left_out, (long long)s->total_rows, s->seconds, s->images_per_s,
               osp_threads_get(), o->out);
    }
    if (o->quiet) return;
    if (cli_tty()) fputs("\r\033[K", stderr);
    fprintf(stderr, "%s: %lld image%s in %.1f s (%.1f images/s)", o->out, (long long)s->images,
            s->images == 1 ? "" : "s", s->seconds, s->images_per_s);
    if (s->errors) {
        fprintf(stderr, ", %lld unreadable (", (long long)s->errors);
        int first = 1;
        for (int k = 0; k < OSP_PIPELINE_ERROR_KINDS; k++)
            if (s->error_kinds[k]) {
                fprintf(stderr, "%s%s %lld", first ? "" : ", ", osp_pipeline_error_code(k),
                        (long long)s->error_kinds[k]);
                first = 0;
            }
        fputc(')', stderr);
    }
    if (s->skipped) fprintf(stderr, ", %lld already done", (long long)s->skipped);
    if (s->changed) fprintf(stderr, ", %lld changed since (not redone)", (long long)s->changed);
    if (left_out) fprintf(stderr, ", %lld files left out (not images by name)", (long long)left_out);
    fputc('\n', stderr);
}

/* ---- running ---------------------------------------------------------------- */

static char *command_line(int argc, char **argv, const char *cmd) {
    size_t len = strlen("osprey ") + strlen(cmd) + 1;
    for (int i = 1; i < argc; i++) len += strlen(argv[i]) + 1;
    char *s = malloc(len + 1);
    if (!s) return NULL;
    strcpy(s, "osprey ");
    strcat(s, cmd);
    for (int i = 1; i < argc; i++) {
        strcat(s, " ");
        strcat(s, argv[i]);
    }
    return s;
}

static int run_one(tag_options *o, osp_net *net, const char *out, char *command) {
    osp_inputs *in = NULL;
    if (osp_inputs_new((const char *const *)o->inputs, o->n_inputs, &in)) return cli_fail_lib(o->cmd, NULL);
    progress pr = {.tty = cli_tty() && !o->quiet};
    /* recorded absolute, so that 'osprey similar' finds it from anywhere */
    char model_path[PATH_MAX];
    o->p.model_path = realpath(o->model, model_path) ? model_path : o->model;
    o->p.command = command;
    o->p.total = pr.tty ? count_inputs(o) : -1;
    o->p.on_progress = on_progress;
    o->p.user = &pr;
    osp_pipeline_summary s;
    int rc = osp_pipeline_run(net, in, out, &o->p, &s);
    int64_t left_out = osp_inputs_skipped(in);
    osp_inputs_free(in);
    if (rc) {
        if (pr.tty) fputs("\r\033[K", stderr);
        return cli_fail_lib(o->cmd, NULL);
    }
    const char *saved = o->out;
    o->out = out;
    print_summary(o, &s, left_out);
    o->out = saved;
    return 0;
}

/* Under mpirun: rank R of N does shard R into DIR/shards/R-of-N, and rank 0
 * joins every shard into DIR once all are done. */
static int run_distributed(tag_options *o, osp_net *net, char *command) {
    osp_dist *dist;
    if (osp_dist_new(&dist)) return cli_fail_lib(o->cmd, "mpirun");
    const int rank = osp_dist_rank(dist), ranks = osp_dist_size(dist);
    char shards_dir[4096], mine[4096 + 64];
    snprintf(shards_dir, sizeof shards_dir, "%s/shards", o->out);
    snprintf(mine, sizeof mine, "%s/%d-of-%d", shards_dir, rank, ranks);
    mkdir(o->out, 0755);
    mkdir(shards_dir, 0755);
    o->p.shard = rank;
    o->p.shards = ranks;
    if (rank != 0) o->quiet = 1;
    int status = run_one(o, net, mine, command);
    /* every rank must be done before rank 0 reads their shards */
    if (osp_dist_min(dist, status == 0) == 0) {
        if (status == 0 && rank == 0) cli_fail(o->cmd, "another rank failed; run the command again to continue");
        status = 1;
    } else if (rank == 0) {
        char **srcs = malloc((size_t)ranks * sizeof *srcs);
        for (int r = 0; srcs && r < ranks; r++) {
            srcs[r] = malloc(sizeof mine);
            if (srcs[r]) snprintf(srcs[r], sizeof mine, "%s/%d-of-%d", shards_dir, r, ranks);
        }
        if (!srcs || osp_pipeline_merge(o->out, (const char *const *)srcs, ranks, o->p.lock_timeout)) status = cli_fail_lib(o->cmd, "joining the shards");
        for (int r = 0; srcs && r < ranks; r++) free(srcs[r]);
        free(srcs);
        if (!status && !o->quiet) fprintf(stderr, "%s: joined %d shards\n", o->out, ranks);
    }
    osp_dist_min(dist, 1); /* the others wait for the join */
    osp_dist_free(dist);
    return status;
}

/* A multi-label model gives every label over its threshold, as sigmoids:
 * unless the user said otherwise, no top-k cut and no softmax. */
static int prepare_multi_label(tag_options *o, const osp_net *net) {
    if (!osp_net_multi_label(net) || !o->p.tags) return 0;
    o->p.sigmoid = 1;
    if (!o->top_k_given) {
        int64_t k;
        if (osp_net_find_layer(net, OSP_LAYER_LOGITS, NULL, &k)) return cli_fail_lib(o->cmd, NULL);
        o->p.top_k = (int)k;
    }
    return 0;
}

/* Codes: the hash gives the layer when none was named, and its
 * normalisation (the pipeline refuses a --normalize it was not trained
 * with). */
static int use_hash(tag_options *o, const osp_hash *hash) {
    o->p.hash = hash;
    const char *layer = osp_hash_layer(hash);
    if (!o->p.embed_layer) {
        if (!*layer)
            return cli_fail(o->cmd, "%s does not record its layer: give --layer NAME", o->hash ? o->hash : o->model);
        o->p.embed_layer = layer;
    }
    if (osp_hash_normalize(hash) == 1) o->p.normalize = 1;
    return 0;
}

static int tag_main(int argc, char **argv, int embed) {
    tag_options o = {.cmd = embed ? "embed" : "tag"};
    o.inputs = calloc((size_t)argc + 1, sizeof *o.inputs);
    if (!o.inputs) return 2;
    int status = parse(argc, argv, embed, &o);
    if (status) {
        free(o.inputs);
        return status < 0 ? 0 : status;
    }
    osp_threads_set(o.threads);
    if (o.quiet) osp_log_set_level(OSP_LOG_ERROR);
    osp_net *net = NULL, *more[MAX_MODELS] = {0};
    char more_paths[MAX_MODELS][PATH_MAX];
    const char *more_names[MAX_MODELS];
    char *command = command_line(argc, argv, o.cmd);
    for (int m = 0; m < o.n_more && !status; m++) {
        if (osp_model_load(o.more_models[m], &more[m])) status = cli_fail_lib(o.cmd, NULL);
        more_names[m] = realpath(o.more_models[m], more_paths[m]) ? more_paths[m] : o.more_models[m];
    }
    osp_hash *hash = NULL;
    char hash_path[PATH_MAX];
    if (!status && o.hash && osp_hash_load(o.hash, &hash)) status = cli_fail_lib(o.cmd, NULL);
    /* recorded absolute, so that 'osprey similar' codes its queries alike */
    if (o.hash) o.p.hash_path = realpath(o.hash, hash_path) ? hash_path : o.hash;
    o.p.models = more;
    o.p.model_paths = more_names;
    o.p.n_models = o.n_more;
    if (status) {
    } else if (osp_model_load(o.model, &net)) {
        status = cli_fail_lib(o.cmd, NULL);
    } else if (o.binary && !hash && osp_hash_from_net(net, o.model, &hash)) {
        status = cli_fail_lib(o.cmd, NULL);
    } else if (o.binary && use_hash(&o, hash)) {
        status = 1;
    } else if (prepare_multi_label(&o, net)) {
        status = 1;
    } else if (!o.shard_given && osp_dist_launched()) {
        status = run_distributed(&o, net, command);
    } else {
        status = run_one(&o, net, o.out, command);
    }
    free(command);
    osp_net_free(net);
    for (int m = 0; m < o.n_more; m++) osp_net_free(more[m]);
    osp_hash_free(hash);
    free(o.inputs);
    return status;
}

int cmd_tag(int argc, char **argv) { return tag_main(argc, argv, 0); }
int cmd_embed(int argc, char **argv) { return tag_main(argc, argv, 1); }
