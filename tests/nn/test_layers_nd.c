/* The shape layers at any rank: [concat] along any axis and of many
 * inputs, [slice], [gather], [expand], [reduce], and inputs of rank 1 to 5.
 * Gradients against finite differences, forward values against plain
 * loops, shapes, and bad specs refused with file:line. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "osprey/nn.h"
#include "spec_expect.h"

static void expect_grad_eps(const char *spec, float eps) {
    int bad = gradcheck_spec(spec, &(gradcheck_opts){.batch = 2, .max_checks = 400, .eps = eps});
    cr_assert_eq(bad, 0, "gradcheck found %d disagreements for:\n%s", bad, spec);
}

static void expect_grad(const char *spec) { expect_grad_eps(spec, 1e-2f); }

/* Runs spec on x (batch samples) and returns a copy of the output. */
static float *run(const char *spec, const float *x, int batch, int64_t *size) {
    osp_net *net = spec_build(spec);
    cr_assert_eq(osp_graph_plan(net->graph, batch, OSP_MODE_INFER), 0, "%s", osp_last_error());
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_INFER, .batch = batch};
    cr_assert_eq(osp_graph_forward(net->graph, x, &ex), 0, "%s", osp_last_error());
    const osp_node *out = osp_graph_output(net->graph);
    *size = out->size;
    float *y = malloc((size_t)(out->size * batch) * sizeof *y);
    memcpy(y, out->out, (size_t)(out->size * batch) * sizeof *y);
    osp_net_free(net);
    return y;
}

/* x[i] = i: each output value names the input it came from. */
static float *iota(int64_t n) {
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = (float)i;
    return x;
}

/* ---- shapes ---------------------------------------------------------------- */

Test(nd_shape, inputs_of_any_rank) {
    spec_expect_shape(NET("7") "[relu]\n", "7");
    spec_expect_shape(NET("6x8") "[relu]\n", "6x8");
    spec_expect_shape(NET("2x3x4x5x6") "[relu]\n", "2x3x4x5x6");
    spec_expect_error(NET("2x3x4x5x6x7") "[relu]\n", OSP_EFORMAT, 2, "at most 5");
    /* mean/std per channel are for C x H x W only */
    spec_expect_error("[net]\ninput = 3x8\nmean = 1, 2, 3\n\n[relu]\n", OSP_EFORMAT, 3, "1 value");
}

Test(nd_shape, concat) {
    spec_expect_shape(NET("4x6x8") "[relu]\nname = a\n\n[concat]\ninput = input, a\naxis = 2\n",
                      "4x6x16");
    spec_expect_shape(NET("4x6x8") "[relu]\nname = a\n\n[concat]\ninput = input, a\naxis = -2\n",
                      "4x12x8");
    spec_expect_error(NET("4x6x8") "[slice]\nname = a\nstarts = 1\nends = 3\n\n"
                      "[concat]\ninput = input, a\naxis = 1\n",
                      OSP_ESHAPE, 9, "only axis 1 may differ");
    spec_expect_error(NET("4x6") "[relu]\nname = a\n\n[concat]\ninput = input, a\naxis = 2\n",
                      OSP_ESHAPE, 7, "axis 2 does not exist");
}

/* 40 inputs, more than the 8 the graph once allowed; 65 are too many. */
Test(nd_shape, concat_of_forty) {
    char spec[8192];
    int len = snprintf(spec, sizeof spec, NET("2x3") "[concat]\naxis = 1\ninput = input");
    for (int i = 1; i < 40; i++) len += snprintf(spec + len, sizeof spec - (size_t)len, ", input");
    snprintf(spec + len, sizeof spec - (size_t)len, "\n");
    spec_expect_shape(spec, "2x120");
    int64_t size;
    float *x = iota(12), *y = run(spec, x, 2, &size);
    for (int b = 0; b < 2; b++)
        for (int r = 0; r < 2; r++)
            for (int j = 0; j < 120; j++)
                cr_assert_eq(y[b * 240 + r * 120 + j], x[b * 6 + r * 3 + j % 3]);
    free(x);
    free(y);
    /* 65: one past the graph's limit */
    len = snprintf(spec, sizeof spec, NET("2x3") "[concat]\ninput = input");
    for (int i = 1; i < 65; i++) len += snprintf(spec + len, sizeof spec - (size_t)len, ", input");
    snprintf(spec + len, sizeof spec - (size_t)len, "\n");
    spec_expect_error(spec, OSP_EFORMAT, 5, "more than 64 inputs");
}

Test(nd_shape, slice) {
    spec_expect_shape(NET("6x8") "[slice]\nstarts = 1\nends = 6\nsteps = 2\n", "3x8");
    spec_expect_shape(NET("6x8") "[slice]\nstarts = -1\nends = -1000000\naxes = 1\nsteps = -3\n",
                      "6x3");
    spec_expect_shape(NET("6x8") "[slice]\nstarts = 2, 0\nends = 1000000, 4\naxes = -1, 0\n", "4x6");
    spec_expect_error(NET("6x8") "[slice]\nstarts = 4\nends = 2\n", OSP_ESHAPE, 4, "is empty");
    spec_expect_error(NET("6x8") "[slice]\nstarts = 0\nends = 2\naxes = 2\n", OSP_ESHAPE, 4,
                      "axis 2 does not exist");
    spec_expect_error(NET("6x8") "[slice]\nstarts = 0\nends = 2\nsteps = 0\n", OSP_EFORMAT, 7,
                      "must not be 0");
    spec_expect_error(NET("6x8") "[slice]\nstarts = 0, 1\nends = 2\n", OSP_EFORMAT, 4,
                      "'starts' and 'ends'");
    /* x[:, 5:0:-2, 1:8:3] of a 6x8 sample */
    int64_t size;
    float *x = iota(2 * 48),
          *y = run(NET("6x8") "[slice]\nstarts = 5, 1\nends = 0, 8\nsteps = -2, 3\n", x, 2, &size);
    cr_assert_eq(size, 9);
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                cr_assert_eq(y[b * 9 + i * 3 + j], x[b * 48 + (5 - 2 * i) * 8 + 1 + 3 * j]);
    free(x);
    free(y);
}

Test(nd_shape, gather) {
    spec_expect_shape(NET("5x6x8") "[gather]\nindex = 0\n", "6x8");
    spec_expect_shape(NET("5x6x8") "[gather]\naxis = 1\nindex = -1\n", "5x8");
    spec_expect_shape(NET("5x6x8") "[gather]\naxis = -1\nindices = 3, 3, 0\n", "5x6x3");
    spec_expect_shape(NET("8") "[gather]\nindex = 2\n", "1");
    spec_expect_error(NET("5x6") "[gather]\naxis = 1\nindex = 6\n", OSP_ESHAPE, 4, "outside axis 1");
    spec_expect_error(NET("5x6") "[gather]\nindex = 1\nindices = 2\n", OSP_EFORMAT, 6, "not both");
    spec_expect_error(NET("5x6") "[gather]\naxis = 1\n", OSP_EFORMAT, 4, "is required");
    int64_t size;
    float *x = iota(2 * 30), *y = run(NET("5x6") "[gather]\naxis = 1\nindices = 4, 0, 4\n", x, 2, &size);
    cr_assert_eq(size, 15);
    static const int pick[3] = {4, 0, 4};
    for (int b = 0; b < 2; b++)
        for (int r = 0; r < 5; r++)
            for (int i = 0; i < 3; i++)
                cr_assert_eq(y[b * 15 + r * 3 + i], x[b * 30 + r * 6 + pick[i]]);
    free(x);
    free(y);
}

Test(nd_shape, expand) {
    spec_expect_shape(NET("1x8") "[expand]\nshape = 5x1\n", "5x8");
    spec_expect_shape(NET("1x8") "[expand]\nshape = 3x1x1\n", "3x1x8");
    spec_expect_shape(NET("4x1") "[expand]\nshape = 4x6\n", "4x6");
    spec_expect_error(NET("4x2") "[expand]\nshape = 4x6\n", OSP_ESHAPE, 4, "cannot broadcast");
    int64_t size;
    float *x = iota(2 * 3), *y = run(NET("3x1") "[expand]\nshape = 2x3x4\n", x, 2, &size);
    cr_assert_eq(size, 24);
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 24; k++) cr_assert_eq(y[b * 24 + k], x[b * 3 + (k / 4) % 3]);
    free(x);
    free(y);
}

Test(nd_shape, reduce) {
    spec_expect_shape(NET("4x6x8") "[reduce]\nop = mean\naxes = 1\n", "4x1x8");
    spec_expect_shape(NET("4x6x8") "[reduce]\nop = sum\naxes = -1, 0\nkeepdims = 0\n", "6");
    spec_expect_shape(NET("4x6x8") "[reduce]\nop = max\nkeepdims = 0\n", "1");
    spec_expect_error(NET("4x6") "[reduce]\nop = mean\naxes = 1, -1\n", OSP_ESHAPE, 4, "named twice");
    spec_expect_error(NET("4x6") "[reduce]\naxes = 1\n", OSP_EFORMAT, 4, "'op'");
    spec_expect_error(NET("4x6") "[reduce]\nop = median\n", OSP_EFORMAT, 5, "one of mean, sum, max");
    /* over axis 0 of 3x4: sums, means and maxima of columns */
    static const char *const ops[3] = {"sum", "mean", "max"};
    for (int k = 0; k < 3; k++) {
        char spec[256];
        snprintf(spec, sizeof spec, NET("3x4") "[reduce]\nop = %s\naxes = 0\nkeepdims = 0\n", ops[k]);
        int64_t size;
        float x[24];
        for (int i = 0; i < 24; i++) x[i] = (float)((i * 7) % 11) - 5.0f;
        float *y = run(spec, x, 2, &size);
        cr_assert_eq(size, 4);
        for (int b = 0; b < 2; b++)
            for (int j = 0; j < 4; j++) {
                float s = 0, m = -INFINITY;
                for (int i = 0; i < 3; i++) {
                    s += x[b * 12 + i * 4 + j];
                    m = fmaxf(m, x[b * 12 + i * 4 + j]);
                }
                float want = k == 0 ? s : k == 1 ? s / 3 : m;
                cr_assert_float_eq(y[b * 4 + j], want, 1e-6, "%s [%d][%d]", ops[k], b, j);
            }
        free(y);
    }
}

/* ---- gradients ----------------------------------------------------------- */

Test(nd_grad, concat) {
    expect_grad(NET("3x4x5") "[tanh]\nname = a\n\n[concat]\ninput = input, a, input\naxis = 2\n");
    expect_grad(NET("3x4x5") "[tanh]\nname = a\n\n[concat]\ninput = a, input\naxis = 1\n");
    expect_grad(NET("4x5") "[tanh]\nname = a\n\n[concat]\ninput = a, input\n");
}

Test(nd_grad, slice) {
    expect_grad(NET("4x5x6") "[slice]\nstarts = 1, -1\nends = 4, -100\naxes = 0, 2\nsteps = 2, -2\n");
    expect_grad(NET("4x5x6") "[slice]\nstarts = 1\nends = 3\naxes = 1\n");
    /* overlapping slices read the same value twice */
    expect_grad(NET("4x6") "[slice]\nname = a\nstarts = 0\nends = 3\n\n"
                "[slice]\nname = b\ninput = input\nstarts = 1\nends = 4\n\n"
                "[mul]\ninput = a, b\n");
}

Test(nd_grad, gather) {
    expect_grad(NET("4x5x6") "[gather]\naxis = 1\nindices = 4, 0, 4, 2\n");
    expect_grad(NET("4x5x6") "[gather]\nindex = -1\n\n[tanh]\n");
    expect_grad(NET("4x5x6") "[gather]\naxis = 2\nindex = 3\n");
}

Test(nd_grad, expand) {
    expect_grad(NET("1x6") "[expand]\nshape = 3x2x1\n\n[tanh]\n");
    expect_grad(NET("4x1x6") "[expand]\nshape = 4x5x6\n");
}

Test(nd_grad, reduce) {
    expect_grad(NET("4x5x6") "[reduce]\nop = mean\naxes = 0, 2\n\n[tanh]\n");
    expect_grad(NET("4x5x6") "[reduce]\nop = sum\naxes = 1\nkeepdims = 0\n\n[tanh]\n");
    /* a small step: two values within 2e-2 of the maximum would swap */
    expect_grad_eps(NET("4x5x6") "[reduce]\nop = max\naxes = -1\n", 1e-4f);
    expect_grad_eps(NET("2x3x2x2x3") "[reduce]\nop = max\naxes = 1, 3\nkeepdims = 0\n", 1e-4f);
    expect_grad_eps(NET("4x5x6") "[reduce]\nop = min\naxes = 0\n", 1e-4f);
    /* l1's kink at 0 is as far as the inputs allow from the step */
    expect_grad_eps(NET("4x5x6") "[reduce]\nop = l1\naxes = 1, 2\n", 1e-4f);
    expect_grad(NET("4x5x6") "[reduce]\nop = l2\naxes = 2\nkeepdims = 0\n\n[tanh]\n");
    expect_grad(NET("4x5x6") "[reduce]\nop = sumsquare\naxes = 0\n\n[tanh]\n");
    expect_grad(NET("4x5x6") "[reduce]\nop = logsumexp\naxes = -1\n");
    /* logsum of exp's positive values */
    expect_grad(NET("4x5x6") "[exp]\n\n[reduce]\nop = logsum\naxes = 1\n");
}

/* The other kinds against plain loops over axis 1 of 3x4: minimum, L1,
 * L2, sum of squares, log of the sum (of positive values), log-sum-exp. */
Test(nd_values, reduce_more) {
    static const char *const ops[6] = {"min", "l1", "l2", "sumsquare", "logsum", "logsumexp"};
    for (int k = 0; k < 6; k++) {
        char spec[256];
        snprintf(spec, sizeof spec, NET("3x4") "[reduce]\nop = %s\naxes = 1\nkeepdims = 0\n", ops[k]);
        int64_t size;
        float x[24];
        for (int i = 0; i < 24; i++) x[i] = (float)((i * 7) % 11) - (k == 4 ? -0.5f : 5.0f);
        float *y = run(spec, x, 2, &size);
        cr_assert_eq(size, 3);
        for (int b = 0; b < 2; b++)
            for (int r = 0; r < 3; r++) {
                const float *v = x + b * 12 + r * 4;
                double mn = INFINITY, l1 = 0, sq = 0, sum = 0, mx = -INFINITY, se = 0;
                for (int j = 0; j < 4; j++) {
                    mn = fmin(mn, v[j]);
                    mx = fmax(mx, v[j]);
                    l1 += fabs(v[j]);
                    sq += (double)v[j] * v[j];
                    sum += v[j];
                }
                for (int j = 0; j < 4; j++) se += exp(v[j] - mx);
                double want[6] = {mn, l1, sqrt(sq), sq, log(sum), mx + log(se)};
                cr_assert_float_eq(y[b * 3 + r], want[k], 1e-5 * fmax(1.0, fabs(want[k])),
                                   "%s [%d][%d]: %g, not %g", ops[k], b, r, y[b * 3 + r], want[k]);
            }
        free(y);
    }
}
