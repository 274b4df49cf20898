/* Synchronised batch norm (the sum hook of osp_exec_hooks): the layer's
 * gradient through that path against finite differences; with one replica
 * it is the plain layer; two replicas, each a thread with its own copy of
 * the network and half of the batch, summing through a barrier, are one
 * network on the whole batch: outputs, input gradients, running statistics
 * and (summed) parameter gradients. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "gradcheck.h"
#include "osprey/nn.h"

#define NET(input) "[net]\ninput = " input "\n\n"

/* One replica: the sum over the replicas is the value itself. */
static void sum_alone(void *user, double *v, int n, int grad) {
    (void)user;
    (void)v;
    (void)n;
    (void)grad;
}

static const osp_exec_hooks alone = {.sum = sum_alone};

static const gradcheck_opts bn_opts = {.batch = 4, .max_checks = 200, .hooks = &alone};

static void expect_grad(const char *spec, const gradcheck_opts *o) {
    int bad = gradcheck_spec(spec, o);
    cr_assert_eq(bad, 0, "gradcheck found %d disagreements for:\n%s", bad, spec);
}

Test(grad_batchnorm_sync, four_d) { expect_grad(NET("3x4x5") "[batchnorm]\n", &bn_opts); }

Test(grad_batchnorm_sync, one_d) { expect_grad(NET("6") "[batchnorm]\n", &bn_opts); }

Test(grad_batchnorm_sync, between_layers) {
    expect_grad(NET("2x3x4") "[tanh]\n\n[batchnorm]\n\n[sigmoid]\n\n[batchnorm]\neps = 1e-3\n", &bn_opts);
}

/* ---- replicas ---------------------------------------------------------------- */

#define SPEC NET("3x5x4") "[conv]\nfilters = 4\nsize = 3\npad = 1\n\n[batchnorm]\nname = bn1\nmomentum = 0.3\n\n" \
    "[tanh]\n\n[fc]\noutputs = 6\n\n[batchnorm]\nname = bn2\n"
enum { BATCH = 6, HALF = BATCH / 2 };

static osp_net *build(void) {
    osp_net *net;
    int rc = osp_net_from_spec(SPEC, strlen(SPEC), "test.cfg", 3, &net);
    cr_assert_eq(rc, 0, "spec did not build: %s", osp_last_error());
    osp_graph_require_input_grad(net->graph);
    return net;
}

static void fill(float *v, int64_t n, float lo, float hi, uint64_t seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * osp_rng_uniform(&r);
}

typedef struct pair {
    pthread_barrier_t barrier;
    const double *slot[2];
} pair;

typedef struct replica {
    pair *pair;
    int id;
    osp_net *net;
    const float *x, *r; /* its half of the inputs and of the output gradients */
    int rc;
} replica;

/* Both replicas' values, added in the same order on each. */
static void sum_pair(void *user, double *v, int n, int grad) {
    (void)grad; /* the loss is a sum over the rows: every replica's scale is the whole batch's */
    replica *me = user;
    pair *p = me->pair;
    double *total = malloc((size_t)n * sizeof(double));
    cr_assert(total);
    p->slot[me->id] = v;
    pthread_barrier_wait(&p->barrier);
    for (int i = 0; i < n; i++) total[i] = p->slot[0][i] + p->slot[1][i];
    pthread_barrier_wait(&p->barrier); /* both have read before either writes */
    memcpy(v, total, (size_t)n * sizeof(double));
    free(total);
}

/* Forward and backward of net on batch rows of x with output gradient r. */
static int run(osp_net *net, int batch, const float *x, const float *r, const osp_exec_hooks *hooks) {
    osp_graph *g = net->graph;
    int rc = osp_graph_plan(g, batch, OSP_MODE_TRAIN);
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = batch, .hooks = hooks};
    if (!rc) rc = osp_graph_forward(g, x, &ex);
    osp_node *out = osp_graph_output(g);
    if (!rc) memcpy(out->dout, r, (size_t)batch * (size_t)out->size * sizeof(float));
    if (!rc) rc = osp_graph_backward(g, &ex);
    return rc;
}

static void *replica_main(void *arg) {
    replica *me = arg;
    osp_exec_hooks hooks = {.user = me, .sum = sum_pair};
    me->rc = run(me->net, HALF, me->x, me->r, &hooks);
    return NULL;
}

static void expect_close(const float *a, const float *b, int64_t n, double tol, const char *what) {
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabs((double)a[i] - b[i]) <= tol * (1 + fabs((double)a[i])), "%s[%lld]: %g, %g", what,
                  (long long)i, a[i], b[i]);
}

Test(batchnorm_sync, two_replicas_are_one_batch) {
    osp_net *whole = build(), *half[2] = {build(), build()};
    osp_graph *g = whole->graph;
    const int64_t in = osp_graph_node(g, 0)->size, out = osp_graph_output(g)->size;
    float x[BATCH * 60], r[BATCH * 6];
    cr_assert_eq(in, 60);
    cr_assert_eq(out, 6);
    fill(x, BATCH * in, -1, 3, 5);
    fill(r, BATCH * out, -1, 1, 6);
    cr_assert_eq(run(whole, BATCH, x, r, NULL), 0, "%s", osp_last_error());

    pair p;
    pthread_barrier_init(&p.barrier, NULL, 2);
    replica rep[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        rep[i] = (replica){.pair = &p, .id = i, .net = half[i], .x = x + i * HALF * in, .r = r + i * HALF * out};
        cr_assert_eq(pthread_create(&th[i], NULL, replica_main, &rep[i]), 0);
    }
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&p.barrier);

    int64_t nw, nb;
    const float *dw = osp_graph_grads(g, &nw);
    const float *buf = osp_graph_buffers(g, &nb);
    float *dw_sum = calloc((size_t)nw, sizeof(float));
    cr_assert(dw_sum);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(rep[i].rc, 0);
        osp_graph *h = half[i]->graph;
        expect_close(osp_graph_output(g)->out + i * HALF * out, osp_graph_output(h)->out, HALF * out,
                     1e-5, "output");
        expect_close(osp_graph_node(g, 0)->dout + i * HALF * in, osp_graph_node(h, 0)->dout, HALF * in,
                     1e-5, "input gradient");
        expect_close(buf, osp_graph_buffers(h, NULL), nb, 1e-6, "running statistics");
        const float *d = osp_graph_grads(h, NULL);
        for (int64_t k = 0; k < nw; k++) dw_sum[k] += d[k];
    }
    expect_close(dw, dw_sum, nw, 1e-5, "parameter gradient");
    /* and plain per-replica statistics would not have matched */
    osp_net *plain = build();
    cr_assert_eq(run(plain, HALF, x, r, NULL), 0);
    double worst = 0;
    for (int64_t k = 0; k < HALF * out; k++)
        worst = fmax(worst, fabs(osp_graph_output(plain->graph)->out[k] - osp_graph_output(g)->out[k]));
    cr_assert_gt(worst, 1e-2);
    free(dw_sum);
    osp_net_free(plain);
    osp_net_free(whole);
    osp_net_free(half[0]);
    osp_net_free(half[1]);
}

/* One replica: the hook's path is the plain layer's, to float rounding. */
Test(batchnorm_sync, one_replica_is_the_plain_layer) {
    osp_net *a = build(), *b = build();
    float x[BATCH * 60], r[BATCH * 6];
    fill(x, BATCH * 60, -2, 5, 7);
    fill(r, BATCH * 6, -1, 1, 8);
    cr_assert_eq(run(a, BATCH, x, r, NULL), 0);
    cr_assert_eq(run(b, BATCH, x, r, &alone), 0);
    int64_t nw, nb;
    osp_graph_grads(a->graph, &nw);
    osp_graph_buffers(a->graph, &nb);
    expect_close(osp_graph_output(a->graph)->out, osp_graph_output(b->graph)->out, BATCH * 6, 1e-5, "output");
    expect_close(osp_graph_node(a->graph, 0)->dout, osp_graph_node(b->graph, 0)->dout, BATCH * 60, 1e-5,
                 "input gradient");
    expect_close(osp_graph_grads(a->graph, NULL), osp_graph_grads(b->graph, NULL), nw, 1e-5, "gradient");
    expect_close(osp_graph_buffers(a->graph, NULL), osp_graph_buffers(b->graph, NULL), nb, 1e-6, "statistics");
    osp_net_free(a);
    osp_net_free(b);
}
