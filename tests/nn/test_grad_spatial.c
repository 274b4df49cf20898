/* Gradient checks of [conv], [maxpool], [avgpool], [globalavgpool] and [fc]
 * against finite differences, one case per option; and inference (no saved
 * argmax) matching training's forward. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "osprey/nn.h"

#define NET(input) "[net]\ninput = " input "\n\n"

static void expect_grad(const char *spec, const gradcheck_opts *o) {
    int bad = gradcheck_spec(spec, o);
    cr_assert_eq(bad, 0, "gradcheck found %d disagreements for:\n%s", bad, spec);
}

/* ---- conv --------------------------------------------------------------- */

Test(grad_conv, basic_3x3_pad_1) {
    expect_grad(NET("3x6x7") "[conv]\nfilters = 4\nsize = 3\npad = 1\n", NULL);
}

Test(grad_conv, stride_2) {
    expect_grad(NET("2x9x8") "[conv]\nfilters = 3\nsize = 3\nstride = 2\npad = 1\n",
                &(gradcheck_opts){.batch = 3});
}

Test(grad_conv, rect_window_stride_pad) {
    expect_grad(NET("2x8x9") "[conv]\nfilters = 3\nsize = 3x5\nstride = 2x1\npad = 0x2\n", NULL);
}

Test(grad_conv, dilation_2) {
    expect_grad(NET("2x9x9") "[conv]\nfilters = 3\nsize = 3\ndilation = 2\npad = 2\n", NULL);
}

Test(grad_conv, pad_same) {
    expect_grad(NET("2x6x5") "[conv]\nfilters = 2\nsize = 5x3\npad = same\n", NULL);
}

Test(grad_conv, groups_2) {
    expect_grad(NET("4x6x6") "[conv]\nfilters = 6\nsize = 3\npad = 1\ngroups = 2\n", NULL);
}

Test(grad_conv, depthwise) {
    expect_grad(NET("4x7x6") "[conv]\nfilters = 4\nsize = 3\nstride = 2\npad = 1\ngroups = 4\n",
                NULL);
}

Test(grad_conv, depthwise_multiplier) {
    expect_grad(NET("3x6x6") "[conv]\nfilters = 6\nsize = 3\npad = 1\ngroups = 3\n", NULL);
}

Test(grad_conv, pointwise_1x1) {
    expect_grad(NET("5x4x6") "[conv]\nfilters = 3\nsize = 1\n", &(gradcheck_opts){.batch = 3});
    /* One image at a time: the path that skips im2col entirely. */
    expect_grad(NET("5x4x6") "[conv]\nfilters = 3\nsize = 1\n", &(gradcheck_opts){.batch = 1});
}

Test(grad_conv, no_bias) {
    expect_grad(NET("2x5x5") "[conv]\nfilters = 3\nsize = 3\nbias = 0\n", NULL);
}

Test(grad_conv, two_layers) {
    expect_grad(NET("2x8x8") "[conv]\nfilters = 4\nsize = 3\nstride = 2\npad = 1\n\n"
                             "[conv]\nfilters = 3\nsize = 3\npad = 1\n",
                NULL);
}

/* ---- pooling -------------------------------------------------------------- */

/* Max pooling is not differentiable where two inputs of a window are within
 * eps of each other: a small step, and a seed whose inputs keep every
 * window's top two more than 2 eps apart (seed 1 has a pair 4e-5 apart). */
static const gradcheck_opts max_opts = {.eps = 1e-3f, .max_checks = 200, .seed = 3};

Test(grad_maxpool, size_2) {
    expect_grad(NET("2x6x7") "[maxpool]\nsize = 2\n", &max_opts);
}

Test(grad_maxpool, overlapping_pad) {
    expect_grad(NET("2x7x8") "[maxpool]\nsize = 3\nstride = 2\npad = 1\n", &max_opts);
}

Test(grad_maxpool, ceil) {
    expect_grad(NET("2x7x8") "[maxpool]\nsize = 3\nstride = 2\nceil = 1\n", &max_opts);
    expect_grad(NET("1x7x5") "[maxpool]\nsize = 2\nceil = 1\npad = 1\n", &max_opts);
}

Test(grad_avgpool, include_pad) {
    expect_grad(NET("2x7x8") "[avgpool]\nsize = 3\nstride = 2\npad = 1\n", NULL);
}

Test(grad_avgpool, exclude_pad) {
    expect_grad(NET("2x7x8") "[avgpool]\nsize = 3\nstride = 2\npad = 1\nexclude_pad = 1\n", NULL);
}

Test(grad_avgpool, ceil_both_pad_modes) {
    expect_grad(NET("2x8x7") "[avgpool]\nsize = 3\nstride = 2\npad = 1\nceil = 1\n", NULL);
    expect_grad(NET("2x8x7") "[avgpool]\nsize = 3\nstride = 2\npad = 1\nceil = 1\nexclude_pad = 1\n",
                NULL);
}

Test(grad_globalavgpool, plane_mean) {
    expect_grad(NET("3x5x4") "[globalavgpool]\n", NULL);
}

/* ---- fc ------------------------------------------------------------------- */

Test(grad_fc, flattens_3d_input) {
    expect_grad(NET("2x3x4") "[fc]\noutputs = 5\n", &(gradcheck_opts){.batch = 3});
}

Test(grad_fc, vector_input_no_bias) {
    expect_grad(NET("7") "[fc]\noutputs = 4\nbias = 0\n", NULL);
}

Test(grad_spatial, small_lenet) {
    expect_grad(NET("1x12x12") "[conv]\nfilters = 3\nsize = 5\n\n"
                               "[maxpool]\nsize = 2\n\n"
                               "[conv]\nfilters = 4\nsize = 3\npad = 1\n\n"
                               "[globalavgpool]\n\n"
                               "[fc]\noutputs = 3\n",
                &(gradcheck_opts){.eps = 1e-3f});
}

/* ---- inference runs without saved memory ---------------------------------- */

Test(spatial, inference_matches_training) {
    const char *spec = NET("2x9x9") "[conv]\nfilters = 4\nsize = 3\npad = 1\n\n"
                                    "[maxpool]\nsize = 3\nstride = 2\nceil = 1\n\n"
                                    "[avgpool]\nsize = 2\nexclude_pad = 1\npad = 1\n\n"
                                    "[fc]\noutputs = 3\n";
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(spec, strlen(spec), "t.cfg", 5, &net), 0, "%s", osp_last_error());
    osp_graph *g = net->graph;
    const int batch = 3;
    float x[3 * 2 * 9 * 9], train_out[3 * 3];
    osp_rng r;
    osp_rng_seed(&r, 11);
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) x[i] = 2 * osp_rng_uniform(&r) - 1;
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = batch};
    cr_assert_eq(osp_graph_plan(g, batch, OSP_MODE_TRAIN), 0);
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0);
    memcpy(train_out, osp_graph_output(g)->out, sizeof train_out);
    ex.mode = OSP_MODE_INFER;
    cr_assert_eq(osp_graph_plan(g, batch, OSP_MODE_INFER), 0);
    cr_assert_null(osp_graph_find(g, "maxpool2")->saved);
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0);
    cr_assert(!memcmp(train_out, osp_graph_output(g)->out, sizeof train_out));
    osp_net_free(net);
}

/* The same checks on the portable reference kernels (osp_backend_default
 * reads OSP_BACKEND at its first call; each test runs in its own process). */
Test(grad_reference, conv_paths) {
    setenv("OSP_BACKEND", "reference", 1);
    expect_grad(NET("3x6x7") "[conv]\nfilters = 4\nsize = 3\npad = 1\n", NULL);
    expect_grad(NET("2x9x8") "[conv]\nfilters = 3\nsize = 3\nstride = 2\npad = 1\n",
                &(gradcheck_opts){.batch = 3});
    expect_grad(NET("4x7x6") "[conv]\nfilters = 4\nsize = 3\nstride = 2\npad = 1\ngroups = 4\n",
                NULL);
    expect_grad(NET("5x4x6") "[conv]\nfilters = 3\nsize = 1\n", &(gradcheck_opts){.batch = 1});
    expect_grad(NET("2x6x7") "[maxpool]\nsize = 2\n", &max_opts);
    expect_grad(NET("2x5x6") "[avgpool]\nsize = 3\nstride = 2\npad = 1\n", NULL);
}
