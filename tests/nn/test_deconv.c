/* [deconv] (transposed convolution): gradients against finite differences,
 * values and gradients against PyTorch's nn.ConvTranspose2d in several
 * configurations, ONNX export and import again, the output sizes, and bad
 * specs refused with file:line. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "onnx_roundtrip.h"
#include "osprey/nn.h"
#include "spec_expect.h"
#include "tmpdir.h"
#include "torch_golden.h"

static void expect_grad(const char *spec) {
    const gradcheck_opts o = {.max_checks = 200};
    int bad = gradcheck_spec(spec, &o);
    cr_assert_eq(bad, 0, "gradcheck found %d disagreements for:\n%s", bad, spec);
}

/* stride 2 with output_padding, groups, dilation, padding; lopsided pads */
static const char *const configs[] = {
    NET("3x5x4") "[deconv]\nfilters = 4\nsize = 3\nstride = 2\npad = 1\noutput_padding = 1\n",
    NET("4x3x5") "[deconv]\nfilters = 6\nsize = 3x2\nstride = 2x1\ngroups = 2\n",
    NET("2x4x4") "[deconv]\nfilters = 3\nsize = 3\ndilation = 2\npad = 2x1\nbias = 0\n",
    NET("6x4x3") "[deconv]\nfilters = 3\nsize = 4\nstride = 3x2\ngroups = 3\npad = 1\n"
                 "output_padding = 2x1\ndilation = 1x2\n",
    NET("3x4x4") "[deconv]\nfilters = 2\nsize = 1\n",
    NET("2x3x3") "[deconv]\nfilters = 4\nsize = 3\nstride = 2\n\n[tanh]\n\n"
                 "[deconv]\nfilters = 2\nsize = 2\nstride = 2\n",
};
#define N_CONFIGS (int)(sizeof configs / sizeof configs[0])

Test(grad_deconv, configurations) {
    for (int i = 0; i < N_CONFIGS; i++) expect_grad(configs[i]);
    /* lopsided padding (ONNX's pads) */
    expect_grad(NET("2x3x4") "[deconv]\nfilters = 3\nsize = 3\nstride = 2\npad = 0, 1, 2, 0\n");
}

/* The portable kernels (OSP_BACKEND is read at first use: before any
 * other call in this test's process). */
Test(grad_deconv, reference) {
    setenv("OSP_BACKEND", "reference", 1);
    expect_grad(configs[0]);
}

Test(golden_deconv, against_pytorch) {
    tmpdir_make();
    if (torch_golden_make(configs, N_CONFIGS, 3) < 0) {
        tmpdir_remove();
        cr_skip_test("python3-torch is not installed");
    }
    double worst = 0;
    for (int i = 0; i < N_CONFIGS; i++) {
        double e = torch_golden_error(configs[i], i);
        cr_expect_lt(e, 1e-5, "config %d: error %g for:\n%s", i, e, configs[i]);
        if (e > worst) worst = e;
    }
    cr_log_info("deconv vs PyTorch: largest error %.3g of the largest value", worst);
    tmpdir_remove();
}

/* A plain loop over the definition: every input value times every tap,
 * added at its output position. */
Test(deconv_forward, lopsided_pads_match_direct_sum) {
    const char *spec = NET("2x3x4") "[deconv]\nfilters = 4\nsize = 3x2\nstride = 2x3\n"
                       "pad = 0, 1, 2, 0\noutput_padding = 1\ngroups = 2\ndilation = 2x1\n";
    osp_net *net = spec_build(spec);
    osp_graph *g = net->graph;
    cr_assert_eq(osp_graph_init_params(g, 7), 0);
    const float *w = osp_graph_param_data(g, 0), *b = osp_graph_param_data(g, 1);
    const int C = 2, H = 3, W = 4, K = 4, kh = 3, kw = 2, sh = 2, sw = 3, dh = 2, dw = 1;
    const int P = (H - 1) * sh - 0 - 2 + dh * (kh - 1) + 1 + 1;
    const int Q = (W - 1) * sw - 1 - 0 + dw * (kw - 1) + 1 + 1;
    osp_node *out = osp_graph_output(g);
    cr_assert_eq(out->shape.dim[1], P);
    cr_assert_eq(out->shape.dim[2], Q);
    float x[2 * 3 * 4];
    for (int i = 0; i < C * H * W; i++) x[i] = (float)((i * 7) % 11) / 5.0f - 1.0f;
    cr_assert_eq(osp_graph_plan(g, 1, OSP_MODE_INFER), 0);
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_INFER, .batch = 1};
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0);
    float want[4 * 16 * 16] = {0};
    cr_assert_leq(K * P * Q, (int)(sizeof want / sizeof want[0]));
    for (int k = 0; k < K; k++)
        for (int i = 0; i < P * Q; i++) want[k * P * Q + i] = b[k];
    const int cg = C / 2, kg = K / 2;
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++)
            for (int v = 0; v < W; v++)
                for (int kk = 0; kk < kg; kk++)
                    for (int i = 0; i < kh; i++)
                        for (int j = 0; j < kw; j++) {
                            int oy = h * sh - 0 + i * dh, ox = v * sw - 1 + j * dw;
                            if (oy < 0 || oy >= P || ox < 0 || ox >= Q) continue;
                            int k = c / cg * kg + kk;
                            want[(k * P + oy) * Q + ox] +=
                                x[(c * H + h) * W + v] * w[((c * kg + kk) * kh + i) * kw + j];
                        }
    for (int i = 0; i < K * P * Q; i++)
        cr_assert_float_eq(out->out[i], want[i], 1e-5, "y[%d] = %g, want %g", i, out->out[i],
                           want[i]);
    osp_net_free(net);
}

Test(deconv_spec, shapes_and_errors) {
    /* (H - 1) * stride - pads + dilation * (k - 1) + 1 + output_padding */
    spec_expect_shape(configs[0], "4x10x8");
    spec_expect_shape(configs[1], "6x7x6");
    spec_expect_shape(configs[2], "3x4x6");
    spec_expect_shape(NET("1x3x3") "[deconv]\nfilters = 1\nsize = 3\nstride = 3x2\n"
                      "pad = 0, 0, 0, 0\noutput_padding = 1\n", "1x10x8");
    spec_expect_error(NET("3x4x4") "[deconv]\nsize = 3\n", OSP_EFORMAT, 4, "'filters'");
    spec_expect_error(NET("3x4x4") "[deconv]\nfilters = 2\n", OSP_EFORMAT, 4, "'size'");
    spec_expect_error(NET("3x4x4") "[deconv]\nfilters = 2\nsize = 3\npad = 1, 2, 3\n", OSP_EFORMAT,
                      7, "not 3");
    spec_expect_error(NET("3x4x4") "[deconv]\nfilters = 3\nsize = 3\ngroups = 2\n", OSP_EFORMAT,
                      7, "multiple of 'groups'");
    spec_expect_error(NET("3x4x4") "[deconv]\nfilters = 4\nsize = 3\ngroups = 2\n", OSP_ESHAPE, 4,
                      "not a multiple of groups = 2");
    spec_expect_error(NET("3x2x2") "[deconv]\nfilters = 4\nsize = 1\npad = 1\n", OSP_ESHAPE, 4,
                      "crops the whole");
    spec_expect_error(NET("12") "[deconv]\nfilters = 4\nsize = 1\n", OSP_ESHAPE, 4, "C x H x W");
    spec_expect_error(NET("3x4x4") "[deconv]\nfilters = 2\nsize = 3\nstride = 0\n", OSP_EFORMAT, 7,
                      "'stride'");
    spec_expect_error(NET("3x4x4") "[deconv]\nfilters = 2\nsize = 3\noutput_padding = -1\n",
                      OSP_EFORMAT, 7, "'output_padding'");
}

/* Exported as ConvTranspose and imported again: the same layers, the same
 * outputs (lopsided pads and output_padding included). */
Test(deconv_onnx, export_import_round_trip) {
    for (int i = 0; i < N_CONFIGS; i++) {
        char layers[256];
        double e = onnx_roundtrip_error(configs[i], 11, layers, sizeof layers);
        cr_expect_lt(e, 1e-6, "config %d: error %g for:\n%s", i, e, configs[i]);
        cr_expect(strstr(layers, "deconv") == layers, "config %d imported as %s", i, layers);
    }
    double e = onnx_roundtrip_error(NET("2x3x4") "[deconv]\nfilters = 4\nsize = 3x2\nstride = 2x3\n"
                                    "pad = 0, 1, 2, 0\noutput_padding = 1\ngroups = 2\n", 5, NULL, 0);
    cr_expect_lt(e, 1e-6, "lopsided: error %g", e);
}

/* Forward and backward give the same bits on one thread and on several (3,
 * or all the cores if fewer): images go to
 * threads whole, or sgemm splits one image's GEMM, never a sum. */
Test(deconv_forward, same_bits_any_thread_count) {
    const char *spec = NET("6x5x5") "[deconv]\nfilters = 4\nsize = 3\nstride = 2\ngroups = 2\n";
    float *got[2][2];
    for (int run = 0; run < 2; run++) {
        osp_threads_set(run ? 3 : 1);
        osp_net *net = spec_build(spec);
        osp_graph *g = net->graph;
        osp_graph_require_input_grad(g);
        enum { N = 7 };
        cr_assert_eq(osp_graph_plan(g, N, OSP_MODE_TRAIN), 0, "%s", osp_last_error());
        osp_node *in = osp_graph_node(g, 0), *out = osp_graph_output(g);
        float *x = malloc((size_t)(N * in->size) * sizeof *x);
        for (int64_t i = 0; i < N * in->size; i++) x[i] = (float)((i * 37) % 23) / 11.0f - 1.0f;
        osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = N};
        cr_assert_eq(osp_graph_forward(g, x, &ex), 0);
        for (int64_t i = 0; i < N * out->size; i++) out->dout[i] = out->out[i];
        cr_assert_eq(osp_graph_backward(g, &ex), 0);
        got[run][0] = malloc((size_t)(N * out->size) * sizeof(float));
        got[run][1] = malloc((size_t)(N * in->size) * sizeof(float));
        memcpy(got[run][0], out->out, (size_t)(N * out->size) * sizeof(float));
        memcpy(got[run][1], in->dout, (size_t)(N * in->size) * sizeof(float));
        if (run) {
            cr_expect_eq(memcmp(got[0][0], got[1][0], (size_t)(N * out->size) * sizeof(float)), 0,
                         "the output differs between 1 and several threads");
            cr_expect_eq(memcmp(got[0][1], got[1][1], (size_t)(N * in->size) * sizeof(float)), 0,
                         "the input gradient differs between 1 and several threads");
        }
        free(x);
        osp_net_free(net);
    }
    osp_threads_set(0);
    for (int i = 0; i < 2; i++) {
        free(got[i][0]);
        free(got[i][1]);
    }
}
