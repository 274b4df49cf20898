/* ONNX export of the transformer layers, imported back: the same outputs
 * (every layer's export is a form the importer reads, most of them folded
 * back into the one layer they came from), and the ONNX nodes each writes.
 * (tests/cli/onnx_transformer.sh runs exported models in ONNX Runtime.) */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/onnx.h"
#include "osprey/osprey.h"

static osp_net *net_of(const char *spec) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(spec, strlen(spec), "spec", 3, &net), 0, "%s", osp_last_error());
    return net;
}

/* Every parameter U(-1, 1), so that layer norms' weights are not all 1. */
static void randomize(osp_net *net) {
    osp_rng r;
    osp_rng_seed(&r, 11);
    int64_t count;
    float *w = osp_graph_weights(net->graph, &count);
    for (int64_t i = 0; i < count; i++) w[i] = 2.0f * osp_rng_uniform(&r) - 1.0f;
    osp_graph_weights_changed(net->graph);
}

/* The output for a batch of 2 random samples (malloc'd). */
static float *run(osp_net *net, int64_t *count) {
    osp_graph *g = net->graph;
    const int64_t in = osp_graph_node(g, 0)->size;
    float *x = malloc(sizeof(float) * (size_t)(2 * in));
    osp_rng r;
    osp_rng_seed(&r, 5);
    for (int64_t i = 0; i < 2 * in; i++) x[i] = 2.0f * osp_rng_uniform(&r) - 1.0f;
    cr_assert_eq(osp_graph_plan(g, 2, OSP_MODE_INFER), 0, "%s", osp_last_error());
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_INFER, .batch = 2, .seed = 1};
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0, "%s", osp_last_error());
    const osp_node *out = osp_graph_output(g);
    *count = 2 * out->size;
    float *y = malloc(sizeof(float) * (size_t)*count);
    memcpy(y, out->out, sizeof(float) * (size_t)*count);
    free(x);
    return y;
}

/* Exports spec's network, imports it back and compares the outputs;
 * returns the imported network's node count. */
static int round_trip(const char *spec) {
    osp_net *net = net_of(spec);
    randomize(net);
    void *data;
    size_t size;
    cr_assert_eq(osp_onnx_export_buffer(net, &data, &size), 0, "%s", osp_last_error());
    osp_onnx_import_options opt;
    memset(&opt, 0, sizeof opt);
    osp_net *back;
    cr_assert_eq(osp_onnx_import(data, size, "exported.onnx", &opt, &back), 0, "%s\n%s",
                 osp_last_error(), spec);
    int64_t n1, n2;
    float *y1 = run(net, &n1), *y2 = run(back, &n2);
    cr_assert_eq(n1, n2);
    double diff = 0, ref = 0;
    for (int64_t i = 0; i < n1; i++) {
        diff = fmax(diff, fabs((double)y1[i] - y2[i]));
        ref = fmax(ref, fabs((double)y1[i]));
    }
    cr_expect_leq(diff, 1e-5 * ref, "exported and imported: %g of %g\n%s", diff, ref, spec);
    int nodes = osp_graph_node_count(back->graph);
    free(y1);
    free(y2);
    osp_free(data);
    osp_net_free(back);
    osp_net_free(net);
    return nodes;
}

#define NET(input) "[net]\ninput = " input "\n\n"

Test(onnx_transformer, layers_fold_back) {
    /* each network: the input node and one layer per section */
    cr_expect_eq(round_trip(NET("5x8") "[layernorm]\n"), 2);
    cr_expect_eq(round_trip(NET("5x8") "[layernorm]\naxis = -2\neps = 1e-3\naffine = 0\n"), 2);
    cr_expect_eq(round_trip(NET("5x8") "[gelu]\n"), 2);
    cr_expect_eq(round_trip(NET("5x8") "[gelu]\napproximate = tanh\n"), 2);
    cr_expect_eq(round_trip(NET("5x8") "[erf]\n"), 2);
    cr_expect_eq(round_trip(NET("3x5x8") "[softmax]\naxis = 1\n"), 2);
    cr_expect_eq(round_trip(NET("5x8") "[fc]\noutputs = 3\nlast_axis = 1\n"), 2);
    cr_expect_eq(round_trip(NET("5x8") "[fc]\noutputs = 3\nlast_axis = 1\nbias = 0\n"), 2);
    cr_expect_eq(round_trip(NET("2x5x8") "[transpose]\nname = t\nperm = 0, 2, 1\n\n"
                                         "[matmul]\ninput = input, t\n"), 3);
    cr_expect_eq(round_trip(NET("2x5x8") "[transpose]\nname = t\nperm = 0, 2, 1\n\n"
                                         "[attention]\ninput = input, t, input\n"
                                         "transposed_k = 1\nscale = 0.3\n"), 3);
    /* K as it is: a Transpose first, which the import keeps as a layer */
    cr_expect_eq(round_trip(NET("2x5x8") "[tanh]\nname = k\n\n"
                                         "[attention]\ninput = input, k, input\n"), 4);
}

Test(onnx_transformer, unfolded_forms_match) {
    /* an encoder block */
    round_trip(NET("5x8") "[layernorm]\nname = ln\n\n"
                          "[fc]\nname = qkv\noutputs = 8\nlast_axis = 1\n\n"
                          "[reshape]\nname = h\nshape = 5x2x4\n\n"
                          "[transpose]\nname = ht\nperm = 1, 0, 2\n\n"
                          "[attention]\nname = a\ninput = ht, ht, ht\n\n"
                          "[transpose]\nname = m\nperm = 1, 0, 2\n\n"
                          "[reshape]\nname = r\nshape = 5x8\n\n"
                          "[add]\nname = res\ninput = input, r\n\n"
                          "[fc]\nname = f1\noutputs = 16\nlast_axis = 1\n\n"
                          "[gelu]\nname = g\n\n"
                          "[fc]\nname = f2\noutputs = 8\nlast_axis = 1\n\n"
                          "[add]\ninput = res, f2\n");
}

#if defined(__has_include)
#if __has_include("onnx.pb-c.h")
#define HAVE_ONNX_PB 1
#endif
#endif

#ifdef HAVE_ONNX_PB
#include "onnx.pb-c.h"

/* Unequal ranks: ONNX aligns whole shapes, batch included, so the lower
 * rank is unsqueezed after the batch. */
Test(onnx_transformer, matmul_unequal_ranks) {
    osp_net *net = net_of(NET("2x5x8") "[reshape]\nname = r\nshape = 8x10\n\n"
                                       "[matmul]\nname = mm\ninput = input, r\n");
    void *data;
    size_t size;
    cr_assert_eq(osp_onnx_export_buffer(net, &data, &size), 0, "%s", osp_last_error());
    Osp__Onnx__ModelProto *m = osp__onnx__model_proto__unpack(NULL, size, data);
    cr_assert_not_null(m);
    int unsqueeze = 0;
    for (size_t i = 0; i < m->graph->n_node; i++) {
        const Osp__Onnx__NodeProto *n = m->graph->node[i];
        if (!strcmp(n->op_type, "Unsqueeze")) {
            unsqueeze = 1;
            cr_assert_str_eq(n->input[0], "r");
        }
        if (!strcmp(n->op_type, "MatMul")) cr_assert_str_eq(n->input[1], "mm/unsqueeze");
    }
    cr_assert(unsqueeze);
    osp__onnx__model_proto__free_unpacked(m, NULL);
    osp_free(data);
    osp_net_free(net);
}
#endif
