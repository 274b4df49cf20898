/* osp_exec.times: the executor adds each node's forward and backward time
 * where asked (osprey bench --layers reads them), leaves the results as an
 * untimed run computes them, and counts a fused node in its chain's head. */
#include <criterion/criterion.h>
#include <string.h>

#include "osprey/nn.h"

static const char *SPEC = "[net]\ninput = 2x6x6\n"
                          "[conv]\nfilters = 4\nsize = 3\n[batchnorm]\n[relu]\n[fc]\noutputs = 3\n";

enum { BATCH = 2, IN = 2 * 6 * 6, OUT = 3 };

static osp_net *build(void) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "times", 1, &net), OSP_OK, "%s",
                 osp_last_error());
    return net;
}

static void input(float *x) {
    for (int i = 0; i < BATCH * IN; i++) x[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
}

/* One training step's forward and backward (the output's gradient is 1). */
static void train_step(osp_net *net, const float *x, osp_node_times *times) {
    osp_graph *g = net->graph;
    cr_assert_eq(osp_graph_plan(g, BATCH, OSP_MODE_TRAIN), OSP_OK, "%s", osp_last_error());
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = BATCH, .seed = 1,
                   .times = times};
    cr_assert_eq(osp_graph_forward(g, x, &ex), OSP_OK, "%s", osp_last_error());
    osp_node *out = osp_graph_output(g);
    for (int i = 0; i < BATCH * OUT; i++) out->dout[i] = 1.0f;
    cr_assert_eq(osp_graph_backward(g, &ex), OSP_OK, "%s", osp_last_error());
}

Test(node_times, training_times_every_node_and_changes_nothing) {
    osp_net *timed = build(), *plain = build();
    const int nn = osp_graph_node_count(timed->graph);
    double fwd[8] = {0}, bwd[8] = {0};
    cr_assert_leq(nn, 8);
    osp_node_times times = {.forward = fwd, .backward = bwd};
    float x[BATCH * IN];
    input(x);
    train_step(timed, x, &times);
    train_step(plain, x, NULL);

    int64_t n;
    float *ga = osp_graph_grads(timed->graph, &n), *gb = osp_graph_grads(plain->graph, &n);
    cr_expect_arr_eq(ga, gb, (size_t)n * sizeof(float), "timing changes no result");
    cr_expect_eq(fwd[0], 0.0, "the input node runs no op");
    cr_expect_eq(bwd[0], 0.0);
    for (int i = 1; i < nn; i++) {
        const char *name = osp_graph_node(timed->graph, i)->op->name;
        cr_expect_gt(fwd[i], 0.0, "%s forward", name);
        cr_expect_gt(bwd[i], 0.0, "%s backward", name);
    }

    /* A second step adds to the same arrays. */
    double before = fwd[1];
    train_step(timed, x, &times);
    cr_expect_gt(fwd[1], before);
    osp_net_free(timed);
    osp_net_free(plain);
}

Test(node_times, a_fused_node_is_counted_in_its_head) {
    osp_net *net = build();
    osp_graph *g = net->graph;
    const int nn = osp_graph_node_count(g);
    double fwd[8] = {0};
    cr_assert_leq(nn, 8);
    osp_node_times times = {.forward = fwd}; /* backward: not asked for */
    float x[BATCH * IN];
    input(x);
    cr_assert_eq(osp_graph_plan(g, BATCH, OSP_MODE_INFER), OSP_OK, "%s", osp_last_error());
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_INFER, .batch = BATCH,
                   .times = &times};
    cr_assert_eq(osp_graph_forward(g, x, &ex), OSP_OK, "%s", osp_last_error());
    int fused = 0;
    for (int i = 1; i < nn; i++) {
        const osp_node *node = osp_graph_node(g, i);
        if (node->fused_into) {
            fused++;
            cr_expect_eq(fwd[i], 0.0, "%s is computed by %s", node->name,
                         osp_graph_node(g, node->fused_into)->name);
        } else {
            cr_expect_gt(fwd[i], 0.0, "%s", node->name);
        }
    }
    cr_expect_gt(fused, 0, "the batch norm folds into the conv");
    osp_net_free(net);
}
