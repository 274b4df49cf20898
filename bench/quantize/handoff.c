/* Int8 activations between layers, on and off, in one process
 * (docs/benchmarks.md, "Int8 activations between layers"):
 *
 *     build/bench_int8_handoff MODEL.int8.osp BATCH PAIRS [shared]
 *
 * loads the int8 model twice, runs one forward of each, then keeps (as
 * osp_net_run's named layers are kept) in the second copy the outputs
 * that the first hands from one int8 layer to the next as bytes, so that
 * they stay float32 there as every layer did before (with "shared": only
 * those handed off beside a float32 output that other layers read too,
 * so that the other copy has the single-reader hand-offs alone); then
 * PAIRS times a
 * forward of each copy, the order alternating. Both copies meet the same
 * load of a shared machine, which two processes run one after the other
 * do not. Prints each side's images/s (best and median) and process CPU
 * time per image, and the median and quartiles of the paired ratios of
 * wall time (float32 / bytes). OMP_NUM_THREADS sets the threads. It reads
 * the conv op's state (src/nn/attrs.h), so it is built with src/ in view. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/attrs.h"
#include "osprey/model.h"
#include "osprey/nn.h"

#define MAX_KEPT 15 /* osp_net_run takes 16 layers, the output one of them */

static double seconds(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int by_value(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The outputs net hands off as bytes under its current plan (shared:
 * only those beside a float32 output): the last node of each such
 * convolution's fused chain. */
static int handed_off(osp_net *net, const char **names, int shared) {
    osp_graph *g = net->graph;
    const int count = osp_graph_node_count(g);
    int found = 0;
    for (int i = 1; i < count; i++) {
        const osp_node *n = osp_graph_node(g, i);
        if (!n->op || strcmp(n->op->name, "conv")) continue;
        const conv_attrs *a = n->attrs;
        if (a->qout_node < 0 || (shared && !a->qbytes_size)) continue;
        int last = i;
        for (int j = i + 1; j < count; j++)
            if (osp_graph_node(g, j)->fused_into == i) last = j;
        if (found == MAX_KEPT) return -1;
        names[found++] = osp_graph_node(g, last)->name;
    }
    return found;
}

int main(int argc, char **argv) {
    if (argc != 4 && (argc != 5 || strcmp(argv[4], "shared"))) {
        fprintf(stderr, "usage: %s MODEL.int8.osp BATCH PAIRS [shared]\n", argv[0]);
        return 2;
    }
    const int batch = atoi(argv[2]), pairs = atoi(argv[3]), shared = argc == 5;
    osp_net *net[2];
    if (batch < 1 || pairs < 1) {
        fprintf(stderr, "BATCH and PAIRS must be positive\n");
        return 2;
    }
    if (osp_model_load(argv[1], &net[0]) || osp_model_load(argv[1], &net[1])) {
        fprintf(stderr, "%s\n", osp_last_error());
        return 1;
    }
    const int64_t in = osp_shape_numel(&net[0]->input);
    int64_t out_size;
    osp_net_find_layer(net[0], NULL, NULL, &out_size);
    float *x = malloc(sizeof(float) * (size_t)(in * batch));
    float *kept[MAX_KEPT + 1] = {malloc(sizeof(float) * (size_t)(out_size * batch))};
    double *wall[2] = {malloc(sizeof(double) * pairs), malloc(sizeof(double) * pairs)};
    double *cpu[2] = {malloc(sizeof(double) * pairs), malloc(sizeof(double) * pairs)};
    double *ratio = malloc(sizeof(double) * pairs);
    if (!x || !kept[0] || !wall[0] || !wall[1] || !cpu[0] || !cpu[1] || !ratio) {
        osp_error(OSP_ENOMEM, "out of memory");
        goto fail;
    }
    osp_rng r;
    osp_rng_seed(&r, 1);
    for (int64_t i = 0; i < in * batch; i++) x[i] = 2.0f * osp_rng_uniform(&r) - 1.0f;

    const char *names[MAX_KEPT + 1] = {NULL}; /* NULL: the output */
    if (osp_net_run(net[0], x, batch, batch, NULL, 0, kept)) goto fail;
    const int n_kept = handed_off(net[0], names + 1, shared);
    if (n_kept < 0) {
        osp_error(OSP_ERANGE, "more than %d hand-offs", MAX_KEPT);
        goto fail;
    }
    for (int i = 1; i <= n_kept; i++) {
        int64_t size;
        osp_net_find_layer(net[1], names[i], NULL, &size);
        if (!(kept[i] = malloc(sizeof(float) * (size_t)(size * batch)))) {
            osp_error(OSP_ENOMEM, "out of memory");
            goto fail;
        }
    }
    if (osp_net_run(net[1], x, batch, batch, names, n_kept + 1, kept)) goto fail;
    const char *none[MAX_KEPT];
    if (handed_off(net[1], none, shared) != 0) {
        osp_error(OSP_ESTATE, "the kept copy still hands off");
        goto fail;
    }
    printf("%s, batch %d: %d outputs handed off as bytes%s, kept float32 in the other copy\n",
           argv[1], batch, n_kept, shared ? " beside float32" : "");

    for (int p = 0; p < pairs; p++) {
        for (int s = 0; s < 2; s++) {
            const int side = (p + s) % 2;
            const double w0 = seconds(CLOCK_MONOTONIC), c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
            /* the kept layers stay kept: no copies out */
            if (osp_net_run(net[side], x, batch, batch, NULL, 0, kept)) goto fail;
            wall[side][p] = seconds(CLOCK_MONOTONIC) - w0;
            cpu[side][p] = seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
        }
        ratio[p] = wall[1][p] / wall[0][p];
    }
    const char *label[2] = {"bytes  ", "float32"};
    for (int s = 0; s < 2; s++) {
        qsort(wall[s], pairs, sizeof(double), by_value);
        qsort(cpu[s], pairs, sizeof(double), by_value);
        printf("%s images/s best %.1f median %.1f; CPU ms/image best %.2f median %.2f\n", label[s],
               batch / wall[s][0], batch / wall[s][pairs / 2], cpu[s][0] * 1e3 / batch,
               cpu[s][pairs / 2] * 1e3 / batch);
    }
    qsort(ratio, pairs, sizeof(double), by_value);
    printf("paired wall time float32 / bytes: median %.3f, quartiles %.3f-%.3f\n",
           ratio[pairs / 2], ratio[pairs / 4], ratio[3 * pairs / 4]);
    int rc = 0;
    if (0) {
    fail:
        fprintf(stderr, "%s\n", osp_last_error());
        rc = 1;
    }
    for (int i = 0; i <= MAX_KEPT; i++) free(kept[i]);
    for (int s = 0; s < 2; s++) {
        free(wall[s]);
        free(cpu[s]);
        osp_net_free(net[s]);
    }
    free(ratio);
    free(x);
    return rc;
}
