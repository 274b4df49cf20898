/* Specs of the pointwise layers: output shapes, parameters as PyTorch has
 * them, and every bad spec refused with a message that names file:line. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "osprey/nn.h"

#include "spec_expect.h"

/* ---- shapes and parameters ------------------------------------------------- */

Test(pointwise_spec, shapes) {
    const char *same[] = {"relu", "leakyrelu", "relu6", "sigmoid", "tanh", "swish",
                          "batchnorm", "dropout", "softmax", "l2norm"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        char spec[128];
        snprintf(spec, sizeof spec, NET("3x5x7") "[%s]\n", same[i]);
        spec_expect_shape(spec, "3x5x7");
        snprintf(spec, sizeof spec, NET("12") "[%s]\n", same[i]);
        spec_expect_shape(spec, "12");
    }
    spec_expect_shape(NET("16x5x5") "[flatten]\n", "400");
    spec_expect_shape(NET("16x5x5") "[reshape]\nshape = 4x-1\n", "4x100");
    spec_expect_shape(NET("16x5x5") "[reshape]\nshape = 2, 8, 25\n", "2x8x25");
    spec_expect_shape(NET("400") "[reshape]\nshape = 16x5x5\n", "16x5x5");
    spec_expect_shape(NET("3x4x5") "[relu]\nname = a\n\n[add]\ninput = a, input, a\n", "3x4x5");
    spec_expect_shape(NET("3x4x5") "[relu]\nname = a\n\n[concat]\ninput = a, input, a\n", "9x4x5");
    spec_expect_shape(NET("6") "[flatten]\nname = f\n\n[tanh]\ninput = input\nname = t\n\n"
                 "[concat]\ninput = f, t\n", "12");
}

Test(pointwise_spec, batchnorm_params_as_pytorch) {
    osp_net *net = spec_build(NET("5x3x3") "[batchnorm]\nname = bn1\n");
    osp_graph *g = net->graph;
    const char *names[] = {"bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"};
    const float init[] = {1, 0, 0, 1};
    const osp_param_kind kinds[] = {OSP_PARAM_WEIGHT, OSP_PARAM_WEIGHT, OSP_PARAM_BUFFER,
                                    OSP_PARAM_BUFFER};
    for (int i = 0; i < 4; i++) {
        int p = osp_graph_find_param(g, names[i]);
        cr_assert(p >= 0, "no %s", names[i]);
        cr_assert_eq(osp_graph_param(g, p)->kind, kinds[i]);
        cr_assert_eq(osp_graph_param(g, p)->shape.ndim, 1);
        cr_assert_eq(osp_graph_param(g, p)->shape.dim[0], 5);
        const float *v = osp_graph_param_data(g, p);
        for (int c = 0; c < 5; c++) cr_assert_eq(v[c], init[i], "%s[%d] = %g", names[i], c, v[c]);
    }
    cr_assert_eq(osp_net_param_count(net), 10);
    osp_net_free(net);
}

Test(pointwise_spec, no_parameters_elsewhere) {
    osp_net *net = spec_build(NET("4") "[relu]\n\n[leakyrelu]\nalpha = 0.1\n\n[dropout]\n\n[softmax]\n");
    cr_assert_eq(osp_graph_param_count(net->graph), 0);
    osp_net_free(net);
}

/* A final [softmax] is skipped by the loss: it trains on the logits. */
Test(pointwise_spec, softmax_output_keeps_logits_node) {
    osp_net *net = spec_build(NET("4") "[tanh]\nname = logits\n\n[softmax]\n");
    cr_assert_eq(net->logits_node, osp_graph_find(net->graph, "logits")->id);
    cr_assert_eq(net->n_classes, 4);
    osp_net_free(net);
}

/* ---- bad values ---------------------------------------------------------------- */

Test(pointwise_spec, bad_values) {
    spec_expect_error(NET("4") "[leakyrelu]\nalpha = steep\n", OSP_EFORMAT, 5, "'alpha'");
    spec_expect_error(NET("4") "[batchnorm]\neps = 0\n", OSP_EFORMAT, 5, "'eps'");
    spec_expect_error(NET("4") "[batchnorm]\neps = -1e-5\n", OSP_EFORMAT, 5, "'eps'");
    spec_expect_error(NET("4") "[batchnorm]\nname = bn\nmomentum = 1.5\n", OSP_EFORMAT, 6, "'momentum'");
    spec_expect_error(NET("4") "[dropout]\np = 1\n", OSP_EFORMAT, 5, "'p'");
    spec_expect_error(NET("4") "[dropout]\np = -0.1\n", OSP_EFORMAT, 5, "'p'");
    spec_expect_error(NET("4") "[dropout]\np = half\n", OSP_EFORMAT, 5, "'p'");
    spec_expect_error(NET("4") "[l2norm]\neps = 0\n", OSP_EFORMAT, 5, "'eps'");
    spec_expect_error(NET("4") "[reshape]\nshape = 2x0x2\n", OSP_EFORMAT, 5, "'shape'");
    spec_expect_error(NET("4") "[reshape]\nshape = -1x-1\n", OSP_EFORMAT, 5, "-1");
    spec_expect_error(NET("4") "[reshape]\nshape = 2xtwo\n", OSP_EFORMAT, 5, "'shape'");
    spec_expect_error(NET("4") "[reshape]\nshape = 1x1x1x1x1x1x1x4\n", OSP_EFORMAT, 5, "'shape'");
}

Test(pointwise_spec, missing_required_key) {
    spec_expect_error(NET("4") "[reshape]\nname = r\n", OSP_EFORMAT, 4, "'shape'");
}

Test(pointwise_spec, unknown_keys) {
    const char *types[] = {"relu",      "leakyrelu", "relu6",   "sigmoid", "tanh",
                           "swish",     "batchnorm", "dropout", "add",     "concat",
                           "flatten",   "reshape",   "softmax", "l2norm"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        /* the keys a type needs before the unknown one */
        const char *needs = !strcmp(types[i], "reshape") ? "shape = 4\n"
                            : !strcmp(types[i], "add") || !strcmp(types[i], "concat")
                                ? "input = input, input\n"
                                : "";
        char spec[160];
        snprintf(spec, sizeof spec, NET("4") "[%s]\n%sslope = 2\n", types[i], needs);
        spec_expect_error(spec, OSP_EFORMAT, *needs ? 6 : 5, "unknown key 'slope'");
    }
    spec_expect_error(NET("4") "[dropout]\nrate = 0.5\n", OSP_EFORMAT, 5, "'rate'");
}

/* ---- shapes that do not fit ---------------------------------------------------- */

Test(pointwise_spec, shape_mismatches) {
    spec_expect_error(NET("16x5x5") "[reshape]\nshape = 16x5x4\n", OSP_ESHAPE, 4, "400 values");
    spec_expect_error(NET("16x5x5") "[reshape]\nshape = 3x-1\n", OSP_ESHAPE, 4, "400 values");
    spec_expect_error(NET("16x5x5") "[reshape]\nshape = 1000x1000\n", OSP_ESHAPE, 4, "400 values");
    spec_expect_error(NET("3x4x5") "[flatten]\nname = f\n\n[add]\ninput = f, input\n", OSP_ESHAPE, 7,
                 "cannot add");
    spec_expect_error(NET("3x4x5") "[add]\n", OSP_ESHAPE, 4, "two or more inputs");
    spec_expect_error(NET("3x4x5") "[reshape]\nname = r\nshape = 3x5x4\n\n[concat]\ninput = r, input\n",
                 OSP_ESHAPE, 8, "cannot concatenate");
    spec_expect_error(NET("3x4x5") "[flatten]\nname = f\n\n[concat]\ninput = f, input\n", OSP_ESHAPE, 7,
                 "cannot concatenate");
    spec_expect_error(NET("3x4x5") "[concat]\ninput = input\n", OSP_ESHAPE, 4, "two or more inputs");
    spec_expect_error(NET("3x4x5") "[relu]\nname = a\n\n[relu]\ninput = a, input\n", OSP_ESHAPE, 7,
                 "one input");
}
