/* Replicas (src/train/replicas.c): T threads, each on a slice of the
 * batch, give the gradients and the training run of one thread on the
 * whole batch, up to float32 rounding; batch norm sees the whole batch;
 * runs repeat bit for bit. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "osprey/train.h"
#include "synth.h"

/* Residual block with 2-D and 1-D batch norm: every sum the replicas
 * exchange (forward statistics, backward sums) is on the path. */
static const char *SPEC =
    "[net]\ninput = 2x8x8\n"
    "[conv]\nname = c1\nfilters = 6\nsize = 3\npad = 1\nbias = 0\n[batchnorm]\n[relu]\nname = r1\n"
    "[conv]\nfilters = 6\nsize = 3\npad = 1\nbias = 0\n[batchnorm]\nname = b2\n"
    "[add]\ninput = b2, r1\n[relu]\n[maxpool]\nsize = 2\n"
    "[fc]\noutputs = 12\n[batchnorm]\n[relu]\n[fc]\noutputs = 5\n";

static osp_net *make_net(void) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 7, &net), 0, "%s", osp_last_error());
    return net;
}

/* The largest |a - b| over n floats, relative to 1 + the largest |a|. */
static double max_diff(const float *a, const float *b, int64_t n) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)a[i]));
    }
    return d / (1 + m);
}

/* One thread on the whole batch: the reference step's gradients. */
static double reference_grads(osp_net *net, const float *x, const int32_t *labels, int batch) {
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = batch, .seed = 3};
    cr_assert_eq(osp_graph_plan(net->graph, batch, OSP_MODE_TRAIN), 0);
    cr_assert_eq(osp_graph_forward(net->graph, x, &ex), 0, "%s", osp_last_error());
    osp_node *logits = osp_graph_node(net->graph, net->logits_node);
    double loss;
    ex.be->softmax_xent(batch, (int)logits->size, logits->out, labels, NULL, logits->dout, &loss);
    cr_assert_eq(osp_graph_backward_from(net->graph, logits->id, &ex), 0, "%s", osp_last_error());
    return loss;
}

static void check_step(int n_replicas, int batch) {
    osp_threads_set(1);
    osp_net *one = make_net(), *many = make_net();
    osp_dataset *ds = synth_dataset(batch, 2, 8, 8, 5, 21);
    float x[64 * 128];
    int32_t labels[64];
    cr_assert(batch <= 64);
    for (int b = 0; b < batch; b++) cr_assert_eq(ds->get(ds, b, x + b * 128, &labels[b]), 0);
    double loss1 = reference_grads(one, x, labels, batch);
    osp_replicas *p;
    cr_assert_eq(osp_replicas_new(many, n_replicas, &p), 0, "%s", osp_last_error());
    cr_assert_eq(osp_replicas_count(p), n_replicas);
    osp_replicas_batch rb = {.x = x, .labels = labels, .batch = batch, .seed = 3};
    double loss2;
    int64_t correct;
    cr_assert_eq(osp_replicas_step(p, &rb, &loss2, &correct), 0, "%s", osp_last_error());
    cr_assert(correct >= 0 && correct <= batch);
    cr_expect(fabs(loss1 - loss2) < 1e-5 * (1 + fabs(loss1)), "loss %.9g vs %.9g", loss1, loss2);
    int64_t nw, nb;
    const float *g1 = osp_graph_grads(one->graph, &nw), *g2 = osp_graph_grads(many->graph, NULL);
    double d = max_diff(g1, g2, nw);
    cr_expect(d < 1e-5, "%d replicas, batch %d: gradients differ by %g", n_replicas, batch, d);
    /* The running statistics follow the whole batch's too. */
    const float *s1 = osp_graph_buffers(one->graph, &nb), *s2 = osp_graph_buffers(many->graph, NULL);
    d = max_diff(s1, s2, nb);
    cr_expect(d < 1e-6, "running statistics differ by %g", d);
    /* A gradient that ignored the other slices' statistics is far off:
     * the comparison above can fail. */
    double scale = 0;
    for (int64_t i = 0; i < nw; i++) scale = fmax(scale, fabs(g1[i]));
    cr_assert(scale > 1e-3, "gradients too small to compare (%g)", scale);
    osp_replicas_free(p);
    osp_dataset_free(ds);
    osp_net_free(one);
    osp_net_free(many);
}

Test(replicas, two_give_one_threads_gradients) { check_step(2, 32); }

/* Uneven slices (11, 11, 12), and a batch smaller than the replicas. */
Test(replicas, uneven_slices_and_tiny_batches) {
    check_step(3, 34);
    check_step(4, 3);
}

typedef struct losses {
    double v[64];
    int n;
} losses;

static void keep_loss(const osp_train_progress *p, void *user) {
    losses *l = user;
    if (l->n < 64) l->v[l->n++] = p->step_loss;
}

/* osp_train on threads threads in mode: the weights and each step's loss. */
static osp_net *train(int threads, int mode, losses *l) {
    osp_threads_set(threads);
    osp_net *net = make_net();
    osp_dataset *ds = synth_dataset(200, 2, 8, 8, 5, 4);
    osp_train_config cfg = osp_train_defaults();
    cfg.epochs = 3;
    cfg.batch = 24; /* 9 steps an epoch, the last of 8 samples */
    cfg.lr = 0.05f;
    cfg.seed = 9;
    cfg.threads_mode = mode;
    cfg.on_step = keep_loss;
    cfg.user = l;
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, NULL, 0), 0, "%s", osp_last_error());
    osp_dataset_free(ds);
    osp_threads_set(1);
    return net;
}

Test(replicas, train_as_one_thread_and_repeat) {
    losses l1 = {0}, l2 = {0}, l3 = {0};
    osp_net *one = train(1, OSP_THREADS_LAYERS, &l1);
    osp_net *two = train(2, OSP_THREADS_REPLICAS, &l2);
    osp_net *again = train(2, OSP_THREADS_REPLICAS, &l3);
    cr_assert_eq(l1.n, 27);
    cr_assert_eq(l2.n, 27);
    for (int i = 0; i < l1.n; i++)
        cr_expect(fabs(l1.v[i] - l2.v[i]) < 1e-4 * (1 + fabs(l1.v[i])), "step %d: loss %.8g vs %.8g",
                  i + 1, l1.v[i], l2.v[i]);
    cr_expect(l2.v[l2.n - 1] < l2.v[0], "no learning: %g -> %g", l2.v[0], l2.v[l2.n - 1]);
    int64_t nw, nb;
    const float *w1 = osp_graph_weights(one->graph, &nw), *w2 = osp_graph_weights(two->graph, NULL);
    double d = max_diff(w1, w2, nw);
    cr_expect(d < 1e-4, "weights after 27 steps differ by %g", d);
    const float *b1 = osp_graph_buffers(one->graph, &nb), *b2 = osp_graph_buffers(two->graph, NULL);
    d = max_diff(b1, b2, nb);
    cr_expect(d < 1e-4, "running statistics differ by %g", d);
    const float *w3 = osp_graph_weights(again->graph, NULL);
    cr_expect(memcmp(w2, w3, (size_t)nw * sizeof(float)) == 0, "two runs with replicas differ");
    osp_net_free(one);
    osp_net_free(two);
    osp_net_free(again);
}

Test(replicas, modes_resolve) {
    osp_net *net = make_net();
    cr_expect_eq(osp_replicas_for(net, 64, 2, OSP_THREADS_LAYERS), 1);
    cr_expect_eq(osp_replicas_for(net, 64, 2, OSP_THREADS_REPLICAS), 2);
    cr_expect_eq(osp_replicas_for(net, 64, 1, OSP_THREADS_REPLICAS), 1);
    cr_expect_eq(osp_replicas_for(net, 3, 4, OSP_THREADS_REPLICAS), 3);
    /* auto keeps the layers (measured faster, docs/benchmarks.md) */
    cr_expect_eq(osp_replicas_for(net, 64, 2, OSP_THREADS_AUTO), 1);
    cr_expect_eq(osp_replicas_for(net, 64, 1, OSP_THREADS_AUTO), 1);
    const char *plain = "[net]\ninput = 1x8x8\n[conv]\nfilters = 4\nsize = 3\n[relu]\n[fc]\noutputs = 3\n";
    const char *wide = "[net]\ninput = 3x64x64\n[conv]\nfilters = 16\nsize = 3\npad = 1\n"
                       "[batchnorm]\n[fc]\noutputs = 3\n";
    osp_net *p, *w;
    cr_assert_eq(osp_net_from_spec(plain, strlen(plain), "plain", 1, &p), 0, "%s", osp_last_error());
    cr_assert_eq(osp_net_from_spec(wide, strlen(wide), "wide", 1, &w), 0, "%s", osp_last_error());
    cr_expect_eq(osp_replicas_for(p, 64, 2, OSP_THREADS_AUTO), 1);
    cr_expect_eq(osp_replicas_for(w, 64, 2, OSP_THREADS_AUTO), 1);
    cr_expect_eq(osp_replicas_for(w, 64, 2, OSP_THREADS_REPLICAS), 2);
    osp_net_free(p);
    osp_net_free(w);
    int mode;
    cr_expect_eq(osp_threads_mode_parse("replicas", &mode), 0);
    cr_expect_eq(mode, OSP_THREADS_REPLICAS);
    cr_expect_str_eq(osp_threads_mode_name(OSP_THREADS_LAYERS), "layers");
    cr_expect_neq(osp_threads_mode_parse("rows", &mode), 0);
    osp_net_free(net);
}
