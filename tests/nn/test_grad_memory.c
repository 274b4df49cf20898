/* Training plans share gradient memory by liveness (src/graph/plan.c): a
 * deeper chain costs its activations, not a gradient buffer per node, and
 * the gradients of a residual network stay those of separate buffers
 * (each cleared by its first writer, src/graph/exec.c). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/nn.h"

enum { BATCH = 8, CH = 4, SIDE = 16 };

/* A chain of `blocks` conv + relu layers, each block with a residual add. */
static osp_net *chain(int blocks) {
    char spec[8192];
    int at = snprintf(spec, sizeof spec, "[net]\ninput = %dx%dx%d\n[conv]\nname = c0\nfilters = %d\n"
                      "size = 3\npad = 1\n[relu]\nname = r0\n", CH, SIDE, SIDE, CH);
    for (int b = 1; b <= blocks; b++)
        at += snprintf(spec + at, sizeof spec - (size_t)at,
                       "[conv]\nfilters = %d\nsize = 3\npad = 1\n[relu]\n[conv]\nname = c%d\n"
                       "filters = %d\nsize = 3\npad = 1\n[add]\nname = a%d\ninput = c%d, r%d\n"
                       "[relu]\nname = r%d\n", CH, b, CH, b, b, b - 1, b);
    at += snprintf(spec + at, sizeof spec - (size_t)at, "[globalavgpool]\n[fc]\noutputs = 3\n");
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(spec, (size_t)at, "chain", 3, &net), 0, "%s", osp_last_error());
    return net;
}

Test(grad_memory, deeper_costs_activations_only) {
    osp_net *a = chain(4), *b = chain(12);
    size_t ba, bb;
    cr_assert_eq(osp_graph_train_bytes(a->graph, BATCH, &ba), 0);
    cr_assert_eq(osp_graph_train_bytes(b->graph, BATCH, &bb), 0);
    /* 8 more blocks: 5 nodes of CH x SIDE x SIDE each */
    const double activations = 8.0 * 5 * CH * SIDE * SIDE * BATCH * sizeof(float);
    cr_expect((double)(bb - ba) < 1.1 * activations, "8 blocks cost %zu bytes, activations %.0f",
              bb - ba, activations);
    osp_net_free(a);
    osp_net_free(b);
}

/* Two steps on one net: the second sees gradients cleared by their first
 * writers, not left over from the first; and the gradients match a net
 * planned afresh. */
Test(grad_memory, repeated_backward_is_the_same) {
    osp_net *net = chain(3), *fresh = chain(3);
    float x[BATCH * CH * SIDE * SIDE];
    for (size_t i = 0; i < sizeof x / sizeof *x; i++) x[i] = (float)((i * 29) % 13) / 13.0f - 0.5f;
    int32_t labels[BATCH];
    for (int i = 0; i < BATCH; i++) labels[i] = i % 3;
    float *first = NULL;
    int64_t nw;
    osp_net *nets[3] = {net, net, fresh};
    for (int run = 0; run < 3; run++) {
        osp_graph *g = nets[run]->graph;
        osp_graph_require_input_grad(g);
        cr_assert_eq(osp_graph_plan(g, BATCH, OSP_MODE_TRAIN), 0);
        osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = BATCH};
        cr_assert_eq(osp_graph_forward(g, x, &ex), 0, "%s", osp_last_error());
        osp_node *out = osp_graph_output(g);
        double loss;
        ex.be->softmax_xent(BATCH, (int)out->size, out->out, labels, NULL, out->dout, &loss);
        cr_assert_eq(osp_graph_backward(g, &ex), 0, "%s", osp_last_error());
        const float *gr = osp_graph_grads(g, &nw), *dx = osp_graph_node(g, 0)->dout;
        if (!first) {
            first = malloc((size_t)(nw + BATCH * CH * SIDE * SIDE) * sizeof(float));
            memcpy(first, gr, (size_t)nw * sizeof(float));
            memcpy(first + nw, dx, sizeof x);
            continue;
        }
        cr_expect(memcmp(first, gr, (size_t)nw * sizeof(float)) == 0, "run %d: weight gradients differ", run);
        cr_expect(memcmp(first + nw, dx, sizeof x) == 0, "run %d: input gradients differ", run);
    }
    free(first);
    osp_net_free(net);
    osp_net_free(fresh);
}
