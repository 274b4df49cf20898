/* osprey bench: images/s of a network's training step or inference, on
 * random data held in memory (no decoding), for side-by-side comparisons;
 * with --layers, the time and GFLOP/s of every layer; with --sgemm, the
 * machine's sgemm peak, the yardstick for the layers' GFLOP/s. */
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
            "  --threads-mode M  training: layers, replicas or auto (default), as\n"
            "                    'osprey train --threads-mode'\n"
            "  --layers          also time every layer (forward, backward, GFLOP/s)\n"
            "  --sgemm           only measure sgemm GFLOP/s (square and conv-like shapes)\n"
            "  --json            one JSON object on stdout\n");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct bench_run {
    osp_net *net;
    osp_optim *opt;
    float *x;
    int32_t *labels;
    int batch, train;
    osp_node_times *times; /* --layers: each node's time, added by the executor */
    osp_replicas *replicas; /* training with one replica per thread; else NULL */
} bench_run;

static int step(bench_run *b, uint64_t i) {
    osp_graph *g = b->net->graph;
    if (b->replicas) {
        osp_replicas_batch rb = {.x = b->x, .labels = b->labels, .batch = b->batch, .seed = 1, .step = i};
        double loss;
        int64_t correct;
        int rc = osp_replicas_step(b->replicas, &rb, &loss, &correct);
        if (!rc) osp_optim_step(b->opt, osp_graph_weights(g, NULL), osp_graph_grads(g, NULL), 1e-4f);
        return rc;
    }
    osp_exec ex = {.be = osp_graph_backend(g), .mode = b->train ? OSP_MODE_TRAIN : OSP_MODE_INFER,
                   .batch = b->batch, .seed = 1, .step = i, .times = b->times};
    int rc = osp_graph_forward(g, b->x, &ex);
    if (rc || !b->train) return rc;
    osp_node *logits = osp_graph_node(g, b->net->logits_node);
    double loss;
    ex.be->softmax_xent(b->batch, (int)logits->size, logits->out, b->labels, NULL, logits->dout,
                        &loss);
    if ((rc = osp_graph_backward_from(g, logits->id, &ex))) return rc;
    osp_optim_step(b->opt, osp_graph_weights(g, NULL), osp_graph_grads(g, NULL), 1e-4f);
    return 0;
}

/* FLOPs of a node's forward for a batch: 2 per multiply-add of a conv or fc
 * (each output reads every weight once per output position); 0 for the
 * rest, whose cost is memory traffic. */
static double node_flops(const osp_graph *g, const osp_node *n, int batch) {
    if (!n->op || (strcmp(n->op->name, "conv") && strcmp(n->op->name, "fc"))) return 0;
    const osp_param *w = osp_graph_param(g, n->params[0]);
    double positions = strcmp(n->op->name, "conv") ? 1.0 : (double)n->shape.dim[1] * n->shape.dim[2];
    return 2.0 * batch * positions * (double)w->numel;
}

/* Per-layer times of `steps` steps: the steps timed above, with the
 * executor clocking every op (osp_exec.times); what a step spends outside
 * the ops (the input copy, the loss, zeroing gradients, the optimizer) is
 * the rest of its time. */
static int profile_layers(bench_run *b, int steps) {
    osp_graph *g = b->net->graph;
    const int nn = osp_graph_node_count(g);
    double *fwd = osp_calloc((size_t)nn * 2, sizeof(double)), *bwd = fwd ? fwd + nn : NULL;
    if (!fwd) return OSP_ENOMEM;
    osp_node_times times = {.forward = fwd, .backward = bwd};
    b->times = &times;
    /* The executor clocks one graph: the layers are timed split over the
     * threads, as --threads-mode layers runs them. */
    osp_replicas *replicas = b->replicas;
    b->replicas = NULL;
    int rc = replicas ? osp_graph_plan(g, b->batch, OSP_MODE_TRAIN) : OSP_OK;
    if (replicas) printf("(layer times with --threads-mode layers)\n");
    double total0 = osp_now();
    for (int s = 0; s < steps && !rc; s++) rc = step(b, (uint64_t)s);
    b->times = NULL;
    b->replicas = replicas;
    if (rc) {
        osp_free(fwd);
        return rc;
    }
    double total = osp_now() - total0;
    printf("%-14s %-13s %-12s %9s %9s %8s %8s\n", "layer", "op", "output", "fwd ms", "bwd ms",
           "fwd GF/s", "bwd GF/s");
    double sum_f = 0, sum_b = 0;
    for (int i = 1; i < nn; i++) {
        const osp_node *n = osp_graph_node(g, i);
        char shape[48];
        osp_shape_format(&n->shape, shape, sizeof shape);
        double f = fwd[i] / steps, bk = bwd[i] / steps, fl = node_flops(g, n, b->batch);
        /* Backward: the filter gradient always, the data gradient where one flows. */
        double bfl = fl * (osp_graph_node(g, n->inputs[0])->dout ? 2 : 1);
        sum_f += f;
        sum_b += bk;
        if (n->fused_into) {
            printf("%-14s %-13s %-12s %9s %9.3f   (fused into %s)\n", n->name, n->op->name, shape,
                   "-", bk * 1e3, osp_graph_node(g, n->fused_into)->name);
            continue;
        }
        printf("%-14s %-13s %-12s %9.3f %9.3f", n->name, n->op->name, shape, f * 1e3, bk * 1e3);
        if (fl > 0) printf(" %8.1f %8.1f", f > 0 ? fl / f * 1e-9 : 0, bk > 0 ? bfl / bk * 1e-9 : 0);
        printf("\n");
    }
    printf("%-40s %9.3f %9.3f\n", "sum of layers", sum_f * 1e3, sum_b * 1e3);
    double other = total / steps - sum_f - sum_b;
    printf("%-40s %9.3f   (input copy, loss, zeroing, optimizer)\n", "other", other * 1e3);
    printf("%-40s %9.3f   = %.1f images/s\n", "step", total / steps * 1e3,
           steps * (double)b->batch / total);
    osp_free(fwd);
    return OSP_OK;
}

/* sgemm GFLOP/s for C (m x n) = A (m x k) B (k x n): the median of reps
 * timed runs of about 0.3 s each. */
static double sgemm_rate(int m, int n, int k, int reps) {
    float *a = osp_alloc((size_t)m * k * sizeof(float)), *bm = osp_alloc((size_t)k * n * sizeof(float));
    float *c = osp_alloc((size_t)m * n * sizeof(float));
    double rates[16], result = 0;
    if (reps > 16) reps = 16;
    if (a && bm && c) {
        for (int64_t i = 0; i < (int64_t)m * k; i++) a[i] = (float)(i % 7) * 0.1f;
        for (int64_t i = 0; i < (int64_t)k * n; i++) bm[i] = (float)(i % 5) * 0.1f;
        const osp_backend *be = osp_backend_default();
        double flops = 2.0 * m * n * k, t0 = osp_now();
        be->sgemm(OSP_NO_TRANS, OSP_NO_TRANS, m, n, k, 1.0f, a, k, bm, n, 0.0f, c, n);
        int iters = (int)fmax(1, 0.3 / fmax(osp_now() - t0, 1e-7));
        for (int r = 0; r < reps; r++) {
            t0 = osp_now();
            for (int it = 0; it < iters; it++)
                be->sgemm(OSP_NO_TRANS, OSP_NO_TRANS, m, n, k, 1.0f, a, k, bm, n, 0.0f, c, n);
            rates[r] = flops * iters / (osp_now() - t0) * 1e-9;
        }
        qsort(rates, (size_t)reps, sizeof *rates, cmp_double);
        result = rates[reps / 2];
    }
    osp_free(a);
    osp_free(bm);
    osp_free(c);
    return result;
}

/* The peak (a large square GEMM) and the GEMM shapes of the example nets'
 * convolutions (filters x positions x taps), so that a layer's GFLOP/s can
 * be read against what BLAS itself reaches. */
static int sgemm_report(int json) {
    static const struct { const char *what; int m, n, k; } shapes[] = {
        {"peak 2048^3", 2048, 2048, 2048},
        {"resnet20 stage 1 (16x1024x144)", 16, 1024, 144},
        {"resnet20 stage 3 (64x64x576)", 64, 64, 576},
        {"lenet conv2 (50x512x500)", 50, 512, 500},
        {"mobilenet pw (256x64x256)", 256, 64, 256},
    };
    const int n = (int)(sizeof shapes / sizeof shapes[0]);
    if (json) printf("{\"threads\": %d", osp_threads_get());
    for (int i = 0; i < n; i++) {
        double r = sgemm_rate(shapes[i].m, shapes[i].n, shapes[i].k, 5);
        if (json) printf(", \"%s\": %.1f", shapes[i].what, r);
        else printf("sgemm %-32s %2d threads: %7.1f GFLOP/s\n", shapes[i].what, osp_threads_get(), r);
    }
    if (json) printf("}\n");
    return 0;
}

int cmd_bench(int argc, char **argv) {
    static const struct option opts[] = {
        {"net", required_argument, 0, 'n'},   {"model", required_argument, 0, 'm'},
        {"batch", required_argument, 0, 'b'}, {"train", no_argument, 0, 't'},
        {"steps", required_argument, 0, 's'}, {"reps", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 'T'}, {"json", no_argument, 0, 'j'},
        {"layers", no_argument, 0, 'l'},      {"sgemm", no_argument, 0, 'g'},
        {"threads-mode", required_argument, 0, 'M'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    const char *spec = NULL, *model = NULL;
    int threads = 0, steps = 0, reps = 5, json = 0, layers = 0, sgemm = 0, mode = OSP_THREADS_AUTO, c;
    bench_run b = {.batch = 64};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'n': spec = optarg; break;
        case 'm': model = optarg; break;
        case 'b': if (cli_int(CMD, "--batch", optarg, 1, 65536, &b.batch)) return 1; break;
        case 't': b.train = 1; break;
        case 's': if (cli_int(CMD, "--steps", optarg, 1, 1000000, &steps)) return 1; break;
        case 'r': if (cli_int(CMD, "--reps", optarg, 1, 1000, &reps)) return 1; break;
        case 'T': if (cli_int(CMD, "--threads", optarg, 1, 1024, &threads)) return 1; break;
        case 'j': json = 1; break;
        case 'M':
            if (osp_threads_mode_parse(optarg, &mode))
                return cli_fail(CMD, "--threads-mode must be auto, layers or replicas, not '%s'", optarg);
            break;
        case 'l': layers = 1; break;
        case 'g': sgemm = 1; break;
        case 'h': usage(stdout); return 0;
        default: return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey bench --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (sgemm) {
        osp_threads_set(threads);
        return sgemm_report(json);
    }
    if (!spec == !model) return cli_fail(CMD, "give --net SPEC or --model MODEL (see 'osprey bench --help')");
    osp_threads_set(threads);
    if (spec ? osp_net_load_spec(spec, 1, &b.net) : osp_model_load(model, &b.net)) return cli_fail_lib(CMD, NULL);
    int status = 1;
    double *rates = NULL;
    osp_graph *g = b.net->graph;
    int64_t size = osp_shape_numel(&b.net->input), n_weights;
    osp_graph_weights(g, &n_weights);
    osp_optim_config oc = osp_optim_defaults(OSP_OPTIM_SGD);
    int rc_opt = osp_optim_new_for(&oc, n_weights, osp_graph_backend(b.net->graph), &b.opt);
    b.x = osp_alloc((size_t)b.batch * (size_t)size * sizeof(float));
    b.labels = osp_alloc((size_t)b.batch * sizeof(int32_t));
    rates = osp_alloc((size_t)reps * sizeof(double));
    if (rc_opt || !b.x || !b.labels || !rates) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    osp_rng rng;
    osp_rng_seed(&rng, 1);
    for (int64_t i = 0; i < b.batch * size; i++) b.x[i] = osp_rng_normal(&rng);
    for (int i = 0; i < b.batch; i++) b.labels[i] = (int32_t)osp_rng_below(&rng, (uint64_t)b.net->n_classes);
    const int n_replicas = b.train ? osp_replicas_for(b.net, b.batch, osp_threads_get(), mode) : 1;
    if ((n_replicas > 1 && osp_replicas_new(b.net, n_replicas, &b.replicas)) ||
        /* replicas plan their own slices */
        (!b.replicas && osp_graph_plan(g, b.batch, b.train ? OSP_MODE_TRAIN : OSP_MODE_INFER))) {
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
        printf("{\"images_per_s\": %.1f, \"batch\": %d, \"mode\": \"%s\", \"threads\": %d, \"threads_mode\": \"%s\", \"steps\": %d, \"reps\": %d, \"backend\": \"%s\"}\n",
               median, b.batch, b.train ? "train" : "infer", osp_threads_get(),
               b.replicas ? "replicas" : "layers", steps, reps, osp_graph_backend(b.net->graph)->name);
    else
        printf("%s, batch %d, %d threads%s: %.1f images/s (median of %d x %d steps, backend %s)\n",
               b.train ? "training" : "inference", b.batch, osp_threads_get(),
               b.replicas ? " as replicas" : "", median, reps, steps,
               osp_graph_backend(b.net->graph)->name);
    if (layers && profile_layers(&b, steps)) {
        cli_fail_lib(CMD, NULL);
        goto done;
    }
    status = 0;
done:
    osp_free(rates);
    osp_free(b.x);
    osp_free(b.labels);
    osp_optim_free(b.opt);
    osp_replicas_free(b.replicas);
    osp_net_free(b.net);
    return status;
}
