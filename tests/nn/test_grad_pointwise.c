/* Gradient checks of the pointwise layers ([relu] ... [swish], [batchnorm],
 * [dropout], [add], [concat], [flatten], [reshape], [softmax], [l2norm])
 * against finite differences; and the behaviour a gradient check cannot see
 * (running statistics, inference mode, the dropout mask). */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "gradcheck.h"
#include "osprey/nn.h"

#define NET(input) "[net]\ninput = " input "\n\n"

static void expect_grad(const char *spec, const gradcheck_opts *o) {
    int bad = gradcheck_spec(spec, o);
    cr_assert_eq(bad, 0, "gradcheck found %d disagreements for:\n%s", bad, spec);
}

/* ---- activations ------------------------------------------------------------ */

/* The piecewise-linear ones have kinks: a small step makes a kink between
 * v - eps and v + eps unlikely (and the fixed seeds make it never). */
static const gradcheck_opts kink_opts = {.eps = 1e-3f, .max_checks = 200};

Test(grad_activation, relu) { expect_grad(NET("3x4x5") "[relu]\n", &kink_opts); }

Test(grad_activation, leakyrelu) {
    expect_grad(NET("3x4x5") "[leakyrelu]\n", &kink_opts);
    expect_grad(NET("3x4x5") "[leakyrelu]\nalpha = 0.2\n", &kink_opts);
}

/* inputs in (-8, 8) cross both kinks, 0 and 6 */
Test(grad_activation, relu6) {
    expect_grad(NET("3x4x5") "[relu6]\n",
                &(gradcheck_opts){.eps = 1e-3f, .max_checks = 200, .input_scale = 8});
}

Test(grad_activation, smooth) {
    const gradcheck_opts o = {.input_scale = 4, .max_checks = 200};
    expect_grad(NET("3x4x5") "[sigmoid]\n", &o);
    expect_grad(NET("3x4x5") "[tanh]\n", &o);
    expect_grad(NET("3x4x5") "[swish]\n", &o);
}

Test(grad_activation, one_d_input_and_chain) {
    expect_grad(NET("17") "[tanh]\n\n[swish]\n\n[sigmoid]\n", &(gradcheck_opts){.batch = 3});
}

/* ---- batch norm ------------------------------------------------------------- */

/* Batch statistics couple the samples: batch 4 keeps the loss smooth and its
 * finite differences accurate in float32. */
static const gradcheck_opts bn_opts = {.batch = 4, .max_checks = 200};

Test(grad_batchnorm, four_d) {
    expect_grad(NET("3x4x5") "[batchnorm]\n", &bn_opts);
}

Test(grad_batchnorm, four_d_eps_momentum) {
    expect_grad(NET("2x3x3") "[batchnorm]\neps = 1e-3\nmomentum = 0.5\n", &bn_opts);
}

Test(grad_batchnorm, one_d) { expect_grad(NET("6") "[batchnorm]\n", &bn_opts); }

Test(grad_batchnorm, one_d_batch_5) {
    expect_grad(NET("5") "[batchnorm]\n", &(gradcheck_opts){.batch = 5, .max_checks = 200});
}

/* gamma and beta away from 1 and 0, and a layer after, so that dgamma and
 * dbeta see a non-trivial upstream gradient */
Test(grad_batchnorm, between_layers) {
    expect_grad(NET("2x3x4") "[tanh]\n\n[batchnorm]\n\n[sigmoid]\n\n[batchnorm]\n", &bn_opts);
}

static osp_net *build(const char *spec) {
    osp_net *net;
    int rc = osp_net_from_spec(spec, strlen(spec), "test.cfg", 1, &net);
    cr_assert_eq(rc, 0, "spec did not build: %s", osp_last_error());
    return net;
}

static void fill(float *v, int64_t n, float lo, float hi, uint64_t seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * osp_rng_uniform(&r);
}

/* Training updates the running statistics (unbiased variance, momentum);
 * inference normalises with them. */
Test(batchnorm, running_statistics_and_inference) {
    enum { batch = 4, c = 2, s = 3 };
    osp_net *net = build(NET("2x1x3") "[batchnorm]\nname = bn\nmomentum = 0.25\neps = 1e-3\n");
    osp_graph *g = net->graph;
    float x[batch * c * s];
    fill(x, batch * c * s, -1, 3, 5);
    int rm = osp_graph_find_param(g, "bn.running_mean"), rv = osp_graph_find_param(g, "bn.running_var");
    int w = osp_graph_find_param(g, "bn.weight"), b = osp_graph_find_param(g, "bn.bias");
    cr_assert(rm >= 0 && rv >= 0 && w >= 0 && b >= 0);
    cr_assert_eq(osp_graph_param(g, rm)->kind, OSP_PARAM_BUFFER);
    cr_assert_eq(osp_graph_param(g, w)->kind, OSP_PARAM_WEIGHT);
    cr_assert_eq(osp_net_param_count(net), 2 * c);

    cr_assert_eq(osp_graph_plan(g, batch, OSP_MODE_TRAIN), 0);
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = batch};
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0);
    const float *mean = osp_graph_param_data(g, rm), *var = osp_graph_param_data(g, rv);
    for (int ch = 0; ch < c; ch++) {
        double sum = 0, sq = 0;
        for (int n = 0; n < batch; n++)
            for (int i = 0; i < s; i++) sum += x[(n * c + ch) * s + i];
        double mu = sum / (batch * s);
        for (int n = 0; n < batch; n++)
            for (int i = 0; i < s; i++) sq += pow(x[(n * c + ch) * s + i] - mu, 2);
        cr_assert_float_eq(mean[ch], 0.25 * mu, 1e-6);
        cr_assert_float_eq(var[ch], 0.75 + 0.25 * sq / (batch * s - 1), 1e-6);
    }

    /* Inference: (x - running_mean) / sqrt(running_var + eps) * w + b. */
    float *gamma = osp_graph_param_data(g, w), *beta = osp_graph_param_data(g, b);
    gamma[0] = 2, gamma[1] = -0.5f, beta[0] = 0.25f, beta[1] = 1;
    cr_assert_eq(osp_graph_plan(g, batch, OSP_MODE_INFER), 0);
    ex.mode = OSP_MODE_INFER;
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0);
    const float *y = osp_graph_output(g)->out;
    for (int n = 0; n < batch; n++)
        for (int ch = 0; ch < c; ch++)
            for (int i = 0; i < s; i++) {
                int k = (n * c + ch) * s + i;
                double want = (x[k] - mean[ch]) / sqrt(var[ch] + 1e-3) * gamma[ch] + beta[ch];
                cr_assert_float_eq(y[k], want, 1e-5);
            }
    osp_net_free(net);
}

/* ---- dropout ----------------------------------------------------------------- */

Test(grad_dropout, p_0_3) {
    expect_grad(NET("3x4x5") "[dropout]\np = 0.3\n", &(gradcheck_opts){.max_checks = 200});
}

Test(grad_dropout, between_layers_default_p) {
    expect_grad(NET("40") "[tanh]\n\n[dropout]\n\n[sigmoid]\n", &(gradcheck_opts){.batch = 3});
}

/* Runs a dropout net of 1000 values per sample in train mode. */
static void dropout_run(osp_net *net, const float *x, int batch, uint64_t seed, uint64_t step,
                        osp_mode mode, float *y) {
    osp_graph *g = net->graph;
    cr_assert_eq(osp_graph_plan(g, batch, mode), 0);
    osp_exec ex = {.be = osp_backend_default(), .mode = mode, .batch = batch, .seed = seed,
                   .step = step};
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0);
    memcpy(y, osp_graph_output(g)->out, (size_t)batch * 1000 * sizeof(float));
}

Test(dropout, mask_rate_scale_and_reproducibility) {
    enum { batch = 4, n = batch * 1000 };
    osp_net *net = build(NET("1000") "[dropout]\np = 0.3\n");
    static float x[n], y[n], y2[n];
    fill(x, n, 0.5f, 1.5f, 9);
    dropout_run(net, x, batch, 42, 7, OSP_MODE_TRAIN, y);
    int dropped = 0;
    for (int i = 0; i < n; i++) {
        if (y[i] == 0.0f) dropped++;
        else cr_assert_float_eq(y[i], x[i] / 0.7f, 1e-6);
    }
    /* 4000 Bernoulli(0.3) draws: the standard deviation of the count is 29 */
    cr_assert(dropped > 1050 && dropped < 1350, "dropped %d of %d", dropped, n);

    /* Same seed and step: the same mask, whatever the thread count. */
    int threads = omp_get_max_threads();
    omp_set_num_threads(threads > 1 ? 1 : 2);
    dropout_run(net, x, batch, 42, 7, OSP_MODE_TRAIN, y2);
    omp_set_num_threads(threads);
    cr_assert_eq(memcmp(y, y2, sizeof y), 0);

    /* Another step or seed: another mask. */
    dropout_run(net, x, batch, 42, 8, OSP_MODE_TRAIN, y2);
    cr_assert_neq(memcmp(y, y2, sizeof y), 0);
    dropout_run(net, x, batch, 43, 7, OSP_MODE_TRAIN, y2);
    cr_assert_neq(memcmp(y, y2, sizeof y), 0);

    /* Inference is the identity. */
    dropout_run(net, x, batch, 42, 7, OSP_MODE_INFER, y2);
    cr_assert_eq(memcmp(x, y2, sizeof x), 0);
    osp_net_free(net);
}

/* Two dropout layers on one step draw different masks. */
Test(dropout, layers_draw_independent_masks) {
    enum { batch = 2, n = batch * 1000 };
    osp_net *net = build(NET("1000") "[dropout]\nname = d1\ninput = input\n\n"
                                     "[dropout]\nname = d2\ninput = input\n\n[add]\ninput = d1, d2\n");
    osp_graph *g = net->graph;
    static float x[n];
    fill(x, n, 0.5f, 1.5f, 3);
    cr_assert_eq(osp_graph_plan(g, batch, OSP_MODE_TRAIN), 0);
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = batch, .seed = 1};
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0);
    cr_assert_neq(memcmp(osp_graph_find(g, "d1")->out, osp_graph_find(g, "d2")->out, sizeof x), 0);
    osp_net_free(net);
}

/* ---- add and concat ------------------------------------------------------------ */

#define BRANCHES                                                          \
    "[relu]\nname = a\ninput = input\n\n[tanh]\nname = b\ninput = input\n\n" \
    "[sigmoid]\nname = c\ninput = input\n\n"

Test(grad_add, two_inputs) {
    expect_grad(NET("2x3x4") BRANCHES "[add]\ninput = a, b\n", &kink_opts);
}

Test(grad_add, three_inputs) {
    expect_grad(NET("2x3x4") BRANCHES "[add]\ninput = a, b, c\n", &kink_opts);
}

/* An input named twice gets its gradient twice; the raw input works too. */
Test(grad_add, repeated_and_raw_input) {
    expect_grad(NET("2x3x4") BRANCHES "[add]\ninput = b, b, input\n", &kink_opts);
}

Test(grad_concat, two_inputs) {
    expect_grad(NET("2x3x4") BRANCHES "[concat]\ninput = a, b\n", &kink_opts);
}

/* Inputs of 6, 2 and 2 channels. */
Test(grad_concat, three_inputs_of_different_widths) {
    expect_grad(NET("2x3x4") BRANCHES "[concat]\nname = abc\ninput = a, b, c\n\n"
                                      "[concat]\ninput = abc, b, c\n",
                &kink_opts);
}

Test(grad_concat, one_d) {
    expect_grad(NET("7") BRANCHES "[concat]\ninput = c, a, b\n",
                &(gradcheck_opts){.batch = 3, .eps = 1e-3f});
}

Test(concat, channel_layout) {
    osp_net *net = build(NET("2x1x2") "[tanh]\nname = t\ninput = input\n\n"
                                      "[concat]\ninput = input, t, input\n");
    osp_graph *g = net->graph;
    const osp_node *out = osp_graph_output(g);
    cr_assert_eq(out->shape.ndim, 3);
    cr_assert_eq(out->shape.dim[0], 6);
    cr_assert_eq(out->shape.dim[1], 1);
    cr_assert_eq(out->shape.dim[2], 2);
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    cr_assert_eq(osp_graph_plan(g, 2, OSP_MODE_INFER), 0);
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_INFER, .batch = 2};
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0);
    for (int n = 0; n < 2; n++)
        for (int k = 0; k < 4; k++) {
            float v = x[n * 4 + k];
            cr_assert_float_eq(out->out[n * 12 + k], v, 0);
            cr_assert_float_eq(out->out[n * 12 + 4 + k], tanhf(v), 1e-6);
            cr_assert_float_eq(out->out[n * 12 + 8 + k], v, 0);
        }
    osp_net_free(net);
}

/* ---- flatten, reshape ---------------------------------------------------------- */

Test(grad_reshape, flatten) {
    expect_grad(NET("2x3x4") "[tanh]\n\n[flatten]\n\n[sigmoid]\n", NULL);
}

Test(grad_reshape, reshape_inferred_axis) {
    expect_grad(NET("2x3x4") "[tanh]\n\n[reshape]\nshape = 4x-1\n\n[softmax]\n", NULL);
}

Test(reshape, shapes) {
    osp_net *net = build(NET("16x5x5") "[reshape]\nname = r\nshape = 20x-1x2\n\n[flatten]\n");
    const osp_node *r = osp_graph_find(net->graph, "r");
    cr_assert_eq(r->shape.ndim, 3);
    cr_assert_eq(r->shape.dim[0], 20);
    cr_assert_eq(r->shape.dim[1], 10);
    cr_assert_eq(r->shape.dim[2], 2);
    const osp_node *f = osp_graph_output(net->graph);
    cr_assert_eq(f->shape.ndim, 1);
    cr_assert_eq(f->shape.dim[0], 400);
    osp_net_free(net);
}

/* ---- softmax, l2norm ------------------------------------------------------------ */

Test(grad_softmax, flattened_sample) {
    expect_grad(NET("2x3x2") "[softmax]\n", &(gradcheck_opts){.input_scale = 3});
}

Test(grad_softmax, one_d) { expect_grad(NET("10") "[softmax]\n", &(gradcheck_opts){.batch = 3}); }

Test(grad_l2norm, flattened_sample) {
    expect_grad(NET("3x2x2") "[l2norm]\n", &(gradcheck_opts){.eps = 1e-3f});
}

Test(grad_l2norm, after_layer_with_eps) {
    expect_grad(NET("9") "[tanh]\n\n[l2norm]\neps = 1e-6\n", &(gradcheck_opts){.eps = 1e-3f});
}

Test(l2norm, unit_rows) {
    osp_net *net = build(NET("2x2x2") "[l2norm]\n");
    osp_graph *g = net->graph;
    float x[24];
    fill(x, 24, -3, 3, 11);
    memset(x + 16, 0, 8 * sizeof(float)); /* a zero sample stays zero */
    cr_assert_eq(osp_graph_plan(g, 3, OSP_MODE_INFER), 0);
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_INFER, .batch = 3};
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0);
    const float *y = osp_graph_output(g)->out;
    for (int n = 0; n < 3; n++) {
        double sq = 0;
        for (int k = 0; k < 8; k++) sq += (double)y[n * 8 + k] * y[n * 8 + k];
        cr_assert_float_eq(sq, n < 2 ? 1.0 : 0.0, 1e-6);
    }
    osp_net_free(net);
}
