/* osprey bench: images/s of a network's training step or inference, on
 * random data held in memory (no decoding), for side-by-side comparisons. */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "bench";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey bench (--net SPEC | --model MODEL) [options]\n"
            "\n"
            "Times a network on random inputs held in memory: a full training step\n"
            "(forward, loss, backward, SGD update) with --train, else inference.\n"
            "Prints the median images/s over the timed repetitions.\n"
            "\n"
            "  --net SPEC        a network spec (random weights)\n"
            "  --model MODEL     a saved model\n"
            "  --batch B         images per step (default 64)\n"
            "  --train           time training steps instead of inference\n"
            "  --steps N         steps per repetition (default: about 2 s of work)\n"
            "  --reps R          timed repetitions (default 5)\n"
            "  --threads T       threads (default: all cores)\n"
            "  --json            one JSON object on stdout\n");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct bench_run {
    osp_net *net;
    osp_optimizer *opt;
    float *x;
    int32_t *labels;
    int batch, train;
} bench_run;

static int step(bench_run *b, uint64_t i) {
    osp_graph *g = b->net->graph;
    osp_exec ex = {.be = osp_backend_default(), .mode = b->train ? OSP_MODE_TRAIN : OSP_MODE_INFER,
                   .batch = b->batch, .seed = 1, .step = i};
    int rc = osp_graph_forward(g, b->x, &ex);
    if (rc || !b->train) return rc;
    osp_node *logits = osp_graph_node(g, b->net->logits_node);
    ex.be->softmax_xent(b->batch, (int)logits->size, logits->out, b->labels, NULL, logits->dout);
    if ((rc = osp_graph_backward_from(g, logits->id, &ex))) return rc;
    osp_optimizer_step(b->opt, osp_graph_weights(g, NULL), osp_graph_grads(g, NULL), 1e-4f);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    static const struct option opts[] = {
        {"net", required_argument, 0, 'n'},   {"model", required_argument, 0, 'm'},
        {"batch", required_argument, 0, 'b'}, {"train", no_argument, 0, 't'},
        {"steps", required_argument, 0, 's'}, {"reps", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 'T'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    const char *spec = NULL, *model = NULL;
    int threads = 0, steps = 0, reps = 5, json = 0, c;
    bench_run b = {.batch = 64};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n': spec = optarg; break;
        case 'm': model = optarg; break;
        case 'b': if (cli_int(CMD, "--batch", optarg, 1, 65536, &b.batch)) return 1; break;
        case 't': b.train = 1; break;
        case 's': if (cli_int(CMD, "--steps", optarg, 1, 1000000, &steps)) return 1; break;
        case 'r': if (cli_int(CMD, "--reps", optarg, 1, 1000, &reps)) return 1; break;
        case 'T': if (cli_int(CMD, "--threads", optarg, 1, 1024, &threads)) return 1; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey bench --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!spec == !model) return cli_fail(CMD, "give --net SPEC or --model MODEL (see 'osprey bench --help')");
    osp_threads_set(threads);
    if (spec ? osp_net_load_spec(spec, 1, &b.net) : osp_model_load(model, &b.net)) return cli_fail_lib(CMD, NULL);
    int status = 1;
    double *rates = NULL;
    osp_graph *g = b.net->graph;
    int64_t size = osp_shape_numel(&b.net->input), n_weights;
    osp_graph_weights(g, &n_weights);
    osp_optim_config oc = osp_optim_defaults(OSP_OPTIM_SGD);
    b.opt = osp_optimizer_new(&oc, n_weights);
    b.x = osp_alloc((size_t)b.batch * (size_t)size * sizeof(float));
    b.labels = osp_alloc((size_t)b.batch * sizeof(int32_t));
    rates = osp_alloc((size_t)reps * sizeof(double));
    if (!b.opt || !b.x || !b.labels || !rates) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    osp_rng rng;
    osp_rng_seed(&rng, 1);
    for (int64_t i = 0; i < b.batch * size; i++) b.x[i] = osp_rng_normal(&rng);
    for (int i = 0; i < b.batch; i++) b.labels[i] = (int32_t)osp_rng_below(&rng, (uint64_t)b.net->n_classes);
    if (osp_graph_plan(g, b.batch, b.train ? OSP_MODE_TRAIN : OSP_MODE_INFER)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    /* Warm-up step, which also sizes a repetition to about 2 s of work. */
    double t0 = osp_now();
    if (step(&b, 0)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    double one = osp_now() - t0;
    if (steps == 0) steps = (int)fmin(fmax(2.0 / fmax(one, 1e-6), 3), 10000);
    for (int r = 0; r < reps; r++) {
        t0 = osp_now();
        for (int s = 0; s < steps; s++)
            if (step(&b, (uint64_t)(r * steps + s + 1))) {
                cli_fail_lib(CMD, NULL);
                goto done;
            }
        rates[r] = (double)steps * b.batch / (osp_now() - t0);
    }
    qsort(rates, (size_t)reps, sizeof *rates, cmp_double);
    double median = reps % 2 ? rates[reps / 2] : 0.5 * (rates[reps / 2 - 1] + rates[reps / 2]);
    if (json)
        printf("{\"images_per_s\": %.1f, \"batch\": %d, \"mode\": \"%s\", \"threads\": %d, \"steps\": %d, \"reps\": %d, \"backend\": \"%s\"}\n",
               median, b.batch, b.train ? "train" : "infer", osp_threads_get(), steps, reps,
               osp_backend_default()->name);
    else
        printf("%s, batch %d, %d threads: %.1f images/s (median of %d x %d steps, backend %s)\n",
               b.train ? "training" : "inference", b.batch, osp_threads_get(), median, reps, steps,
               osp_backend_default()->name);
    status = 0;
done:
    osp_free(rates);
    osp_free(b.x);
    osp_free(b.labels);
    osp_optimizer_free(b.opt);
    osp_net_free(b.net);
    return status;
}
