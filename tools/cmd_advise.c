/* osprey advise: measures training throughput and memory at candidate batch
 * sizes and thread counts on this machine, and recommends a batch size,
 * threads and, for mpirun, ranks (docs/advise.md). */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "advise";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey advise (--net SPEC | --model MODEL) --data DATA [options]\n"
            "\n"
            "Times a few real training steps (forward, loss, backward, optimizer; the\n"
            "warm-up step not counted) of the network SPEC (or MODEL's) on samples of\n"
            "DATA at batch sizes that are powers of two and at thread counts from 1 to\n"
            "the cores, and counts the memory each batch plans (activations, gradients,\n"
            "weights, optimizer state, input batches) and the peak resident memory it\n"
            "added.\n"
            "Batches grow at all cores until images/s stops improving, the next batch\n"
            "would not fit --memory-budget, or the time is spent; thread counts then grow\n"
            "from 1 at the chosen batch. Prints the measurements and recommends:\n"
            "  - the batch of the most images/s that fits the budget, or a smaller one\n"
            "    within --tolerance of it (smaller batches tend to generalise better);\n"
            "  - the thread count fastest at that batch;\n"
            "  - for mpirun on a node like this one, ranks x threads per rank: a\n"
            "    prediction (ranks times one process's measured images/s, gradient\n"
            "    exchange not counted), given only when it beats one process.\n"
            "'osprey train --batch auto' runs it before training. See docs/advise.md.\n"
            "\n"
            "  --net SPEC            the network spec\n"
            "  --model MODEL         or a model's network (as 'osprey train --init' trains it)\n"
            "  --data DATA           training data as 'osprey train' reads it, or\n"
            "                        synthetic:N (required)\n"
            "  --split train|test    which IDX files of DATA (default train)\n"
            "  --memory-budget SIZE  memory the training may plan to use on this machine\n"
            "                        (all of a node's ranks together): 512M, 4G, 1.5G (K,\n"
            "                        M, G, T are powers of 1024; default none)\n"
            "  --seconds S           time the measurements aim to take (default 10)\n"
            "  --min-batch B         smallest batch tried (default 8)\n"
            "  --max-batch B         largest batch tried (default 1024, and at most the\n"
            "                        data's sample count)\n"
            "  --threads T           measure only T threads\n"
            "  --max-threads T       try 1..T threads (default: the cores online)\n"
            "  --optimizer NAME      sgd, adam or adamw: stepped and its state counted\n"
            "                        (default sgd)\n"
            "  --tolerance F         prefer a smaller batch within this fraction of the\n"
            "                        best images/s (default 0.05)\n"
            "  --seed S              seed of the measured network's weights (default 1)\n"
            "  --json                one JSON object on stdout\n"
            "  --quiet               no line per measurement on stderr\n");
}

typedef struct advise_options {
    const char *net, *model, *data;
    osp_split split;
    osp_advise_config cfg;
    int json, quiet;
} advise_options;

static int parse_options(int argc, char **argv, advise_options *o) {
    enum { NET = 256, MODEL, DATA, SPLIT, BUDGET, SECONDS, MIN_BATCH, MAX_BATCH, THREADS, MAX_THREADS,
           OPTIMIZER, TOLERANCE, SEED, JSON, QUIET, HELP };
    static const struct option opts[] = {
        {"net", required_argument, 0, NET},           {"data", required_argument, 0, DATA},
        {"model", required_argument, 0, MODEL},
        {"split", required_argument, 0, SPLIT},       {"memory-budget", required_argument, 0, BUDGET},
        {"seconds", required_argument, 0, SECONDS},   {"min-batch", required_argument, 0, MIN_BATCH},
        {"max-batch", required_argument, 0, MAX_BATCH}, {"threads", required_argument, 0, THREADS},
        {"max-threads", required_argument, 0, MAX_THREADS},
        {"optimizer", required_argument, 0, OPTIMIZER}, {"tolerance", required_argument, 0, TOLERANCE},
        {"seed", required_argument, 0, SEED},         {"json", no_argument, 0, JSON},
        {"quiet", no_argument, 0, QUIET},             {"help", no_argument, 0, HELP},
        {0, 0, 0, 0}};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        const char *a = optarg;
        float f;
        int bad = 0;
        switch (c) {
        case NET: o->net = a; break;
        case MODEL: o->model = a; break;
        case DATA: o->data = a; break;
        case SPLIT:
            if (strcmp(a, "train") && strcmp(a, "test")) return cli_fail(CMD, "--split must be train or test");
            o->split = strcmp(a, "train") ? OSP_SPLIT_TEST : OSP_SPLIT_TRAIN;
            break;
        case BUDGET: bad = cli_bytes(CMD, "--memory-budget", a, &o->cfg.memory_budget); break;
        case SECONDS:
            if (!(bad = cli_float(CMD, "--seconds", a, 0.01, 86400, &f))) o->cfg.seconds = f;
            break;
        case MIN_BATCH: bad = cli_int(CMD, "--min-batch", a, 1, 65536, &o->cfg.min_batch); break;
        case MAX_BATCH: bad = cli_int(CMD, "--max-batch", a, 1, 65536, &o->cfg.max_batch); break;
        case THREADS: bad = cli_int(CMD, "--threads", a, 1, 1024, &o->cfg.threads); break;
        case MAX_THREADS: bad = cli_int(CMD, "--max-threads", a, 1, 1024, &o->cfg.max_threads); break;
        case OPTIMIZER:
            if (osp_optim_parse(a, &o->cfg.optim))
                return cli_fail(CMD, "--optimizer must be sgd, adam or adamw, not '%s'", a);
            break;
        case TOLERANCE:
            if (!(bad = cli_float(CMD, "--tolerance", a, 0, 0.5, &f))) o->cfg.tolerance = f;
            break;
        case SEED: bad = cli_u64(CMD, "--seed", a, &o->cfg.seed); break;
        case JSON: o->json = 1; break;
        case QUIET: o->quiet = 1; break;
        case 'h':
        case HELP: usage(stdout); return -1;
        default:
            return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey advise --help')",
                            argv[optind - 1]);
        }
        if (bad) return 1;
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s' (see 'osprey advise --help')", argv[optind]);
    if (!o->net == !o->model || !o->data)
        return cli_fail(CMD, "give --net SPEC or --model MODEL, and --data DATA (see 'osprey advise --help')");
    if (o->cfg.min_batch > o->cfg.max_batch)
        return cli_fail(CMD, "--min-batch %d is larger than --max-batch %d", o->cfg.min_batch, o->cfg.max_batch);
    if (o->cfg.threads && o->cfg.max_threads)
        return cli_fail(CMD, "give --threads T (only T) or --max-threads T (1..T), not both");
    return 0;
}

static void print_table(const osp_advice *a) {
    printf("%7s %7s %11s %9s %12s %12s\n", "batch", "threads", "images/s", "step ms", "planned MiB",
           "peak RSS MiB");
    for (int i = 0; i < a->n_points; i++) {
        const osp_advise_point *p = &a->points[i];
        printf("%7d %7d %11.1f %9.2f %12.1f", p->batch, p->threads, p->images_per_s, 1e3 * p->step_s,
               p->planned_bytes / 1048576.0);
        if (p->rss_bytes >= 0) printf(" %12.1f\n", p->rss_bytes / 1048576.0);
        else printf(" %12s\n", "?");
    }
}

/* Bytes a rank sends (and receives) per step in a ring allreduce of the
 * gradients: 2 (ranks - 1) / ranks of them. */
static double exchange_bytes(const osp_advice *a, const osp_net *net) {
    return 2.0 * (a->ranks - 1) / a->ranks * 4.0 * (double)osp_net_param_count(net);
}

static void print_recommendation(const osp_advice *a, const osp_net *net) {
    printf("recommended: --batch %d --threads %d (%s)\n", a->batch, a->threads, a->reason);
    if (a->ranks > 1)
        printf("mpirun on a node like this (a prediction): -np %d with --threads %d and --batch %d per "
               "rank: %d x %.0f = %.0f images/s, against %.0f measured for one process; the "
               "gradient exchange (%.1f MiB per rank and step) is not counted\n", a->ranks,
               a->rank_threads, a->batch, a->ranks, a->ranks_images_per_s / a->ranks,
               a->ranks_images_per_s, a->images_per_s, exchange_bytes(a, net) / 1048576.0);
    else
        printf("mpirun on a node like this: one rank of %d thread%s (no split of the %d cores into "
               "ranks is predicted to be faster)\n", a->threads, a->threads == 1 ? "" : "s", a->cores);
}

static int print_json(const osp_advice *a, const osp_net *net, const advise_options *o) {
    cJSON *root = cJSON_CreateObject(), *pts = cJSON_CreateArray(), *rec = cJSON_CreateObject(),
          *mpi = cJSON_CreateObject();
    if (!root || !pts || !rec || !mpi) {
        cJSON_Delete(root);
        cJSON_Delete(pts);
        cJSON_Delete(rec);
        cJSON_Delete(mpi);
        return cli_fail(CMD, "out of memory");
    }
    cJSON_AddStringToObject(root, o->net ? "net" : "model", o->net ? o->net : o->model);
    cJSON_AddStringToObject(root, "data", o->data);
    cJSON_AddNumberToObject(root, "cores", a->cores);
    cJSON_AddNumberToObject(root, "memory_budget", (double)o->cfg.memory_budget);
    cJSON_AddNumberToObject(root, "seconds", o->cfg.seconds);
    cJSON_AddStringToObject(root, "optimizer", osp_optim_name(o->cfg.optim));
    cJSON_AddNumberToObject(root, "tolerance", o->cfg.tolerance);
    for (int i = 0; i < a->n_points; i++) {
        const osp_advise_point *p = &a->points[i];
        cJSON *m = cJSON_CreateObject();
        if (!m) continue;
        cJSON_AddNumberToObject(m, "batch", p->batch);
        cJSON_AddNumberToObject(m, "threads", p->threads);
        cJSON_AddNumberToObject(m, "images_per_s", p->images_per_s);
        cJSON_AddNumberToObject(m, "step_s", p->step_s);
        cJSON_AddNumberToObject(m, "steps", p->steps);
        cJSON_AddNumberToObject(m, "planned_bytes", (double)p->planned_bytes);
        if (p->rss_bytes >= 0) cJSON_AddNumberToObject(m, "rss_bytes", (double)p->rss_bytes);
        else cJSON_AddNullToObject(m, "rss_bytes");
        cJSON_AddBoolToObject(m, "fits", o->cfg.memory_budget <= 0 || p->planned_bytes <= o->cfg.memory_budget);
        cJSON_AddItemToArray(pts, m);
    }
    cJSON_AddItemToObject(root, "measurements", pts);
    cJSON_AddNumberToObject(rec, "batch", a->batch);
    cJSON_AddNumberToObject(rec, "threads", a->threads);
    cJSON_AddNumberToObject(rec, "images_per_s", a->images_per_s);
    cJSON_AddNumberToObject(rec, "planned_bytes", (double)a->planned_bytes);
    cJSON_AddNumberToObject(rec, "best_batch", a->best_batch);
    cJSON_AddNumberToObject(rec, "best_images_per_s", a->best_images_per_s);
    cJSON_AddStringToObject(rec, "reason", a->reason);
    cJSON_AddNumberToObject(mpi, "ranks_per_node", a->ranks);
    cJSON_AddNumberToObject(mpi, "threads_per_rank", a->rank_threads);
    cJSON_AddNumberToObject(mpi, "images_per_s", a->ranks_images_per_s);
    cJSON_AddBoolToObject(mpi, "predicted", a->ranks > 1);
    cJSON_AddNumberToObject(mpi, "exchange_bytes_per_step", exchange_bytes(a, net));
    cJSON_AddItemToObject(rec, "mpirun", mpi);
    cJSON_AddItemToObject(root, "recommendation", rec);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) return cli_fail(CMD, "out of memory");
    printf("%s\n", text);
    cJSON_free(text);
    return 0;
}

/* A line on stderr as each measurement comes in. */
static void show_point(const osp_advise_point *p, void *user) {
    (void)user;
    fprintf(stderr, "advise: batch %5d  %2d thread%s  %9.1f images/s  (%d steps of %.2f ms; planned %.1f MiB, "
            "peak RSS +", p->batch, p->threads, p->threads == 1 ? " " : "s", p->images_per_s, p->steps,
            1e3 * p->step_s, p->planned_bytes / 1048576.0);
    if (p->rss_bytes >= 0) fprintf(stderr, "%.1f MiB)\n", p->rss_bytes / 1048576.0);
    else fprintf(stderr, "?)\n");
}

/* The classifier sized for the data's classes, as 'osprey train' does. */
static int fit_classes(const advise_options *o, osp_net **netp, const osp_dataset *data) {
    osp_net *net = *netp;
    if (data->n_classes == net->n_classes) return 0;
    int head;
    osp_net *resized;
    if (osp_net_find_head(net, NULL, &head) ||
        osp_net_resize_head(net, head, data->n_classes, o->cfg.seed, &resized))
        return cli_fail(CMD, "%s has %d classes but %s has %d outputs: %s", o->data, data->n_classes,
                        o->net ? o->net : o->model, net->n_classes, osp_last_error());
    osp_net_free(net);
    *netp = resized;
    return 0;
}

int cmd_advise(int argc, char **argv) {
    advise_options o = {.cfg = osp_advise_defaults()};
    int rc = parse_options(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    if (!o.quiet) o.cfg.on_point = show_point;
    osp_net *net = NULL;
    osp_dataset *data = NULL;
    osp_advice *advice = NULL;
    int status = 1;
    if (o.net ? osp_net_load_spec(o.net, o.cfg.seed, &net) : osp_model_load(o.model, &net))
        return cli_fail_lib(CMD, NULL);
    rc = cli_open_synthetic(CMD, o.data, o.split, net, &data);
    if (rc < 0) {
        cli_image_options io = cli_image_defaults();
        rc = cli_open_dataset(CMD, o.data, o.split, net, &io, NULL, 0, &data);
    }
    if (rc || fit_classes(&o, &net, data)) goto done;
    if (osp_advise(net, data, &o.cfg, &advice)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    if (o.json) {
        if (print_json(advice, net, &o)) goto done;
    } else {
        print_table(advice);
        print_recommendation(advice, net);
    }
    status = 0;
done:
    osp_advice_free(advice);
    osp_dataset_free(data);
    osp_net_free(net);
    return status;
}
