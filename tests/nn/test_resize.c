/* [resize]: gradients against finite differences for every mode,
 * coordinate mapping and rounding, forward values worked out by hand,
 * output shapes, and bad specs refused with file:line. PyTorch comparisons
 * are in tests/io/test_onnx_opsets.c (models exported by PyTorch). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gradcheck.h"
#include "osprey/nn.h"
#include "spec_expect.h"

static void expect_grad(const char *spec) {
    int bad = gradcheck_spec(spec, NULL);
    cr_assert_eq(bad, 0, "gradcheck found %d disagreements for:\n%s", bad, spec);
}

Test(grad_resize, nearest_every_rounding_and_mapping) {
    static const char *const coords[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
                                         "asymmetric", "tf_half_pixel_for_nn"};
    static const char *const nearests[] = {"round_prefer_floor", "round_prefer_ceil", "floor",
                                           "ceil"};
    char spec[512];
    for (int c = 0; c < 5; c++)
        for (int r = 0; r < 4; r++) {
            snprintf(spec, sizeof spec, NET("2x3x4") "[resize]\nscale = 1.5x2.5\ncoord = %s\n"
                     "nearest = %s\n\n[tanh]\n", coords[c], nearests[r]);
            expect_grad(spec);
        }
    expect_grad(NET("2x5x6") "[resize]\nscale = 0.5\nnearest = ceil\n");
    expect_grad(NET("1x4x4") "[resize]\nsize = 7x3\n");
}

Test(grad_resize, linear_every_mapping) {
    static const char *const coords[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
                                         "asymmetric", "tf_half_pixel_for_nn"};
    char spec[512];
    for (int c = 0; c < 5; c++) {
        snprintf(spec, sizeof spec, NET("2x3x4") "[resize]\nmode = linear\nscale = 2x1.5\n"
                 "coord = %s\n\n[tanh]\n", coords[c]);
        expect_grad(spec);
        snprintf(spec, sizeof spec, NET("2x5x7") "[resize]\nmode = linear\nsize = 3x4\n"
                 "coord = %s\n", coords[c]);
        expect_grad(spec);
    }
    expect_grad(NET("1x1x1") "[resize]\nmode = linear\nsize = 3x2\ncoord = align_corners\n");
    expect_grad(NET("2x4x4") "[conv]\nfilters = 3\nsize = 3\npad = 1\n\n[resize]\nmode = linear\n"
                "scale = 2\n\n[conv]\nfilters = 2\nsize = 3\n");
}

static void forward(const char *spec, const float *x, int64_t nx, const float *want, int64_t ny) {
    osp_net *net = spec_build(spec);
    osp_graph *g = net->graph;
    cr_assert_eq(osp_graph_plan(g, 1, OSP_MODE_INFER), 0, "%s", osp_last_error());
    cr_assert_eq(osp_graph_node(g, 0)->size, nx);
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_INFER, .batch = 1};
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0, "%s", osp_last_error());
    const osp_node *out = osp_graph_output(g);
    cr_assert_eq(out->size, ny);
    for (int64_t i = 0; i < ny; i++)
        cr_expect_float_eq(out->out[i], want[i], 1e-6f, "%s: value %lld is %g, not %g", spec,
                           (long long)i, (double)out->out[i], (double)want[i]);
    osp_net_free(net);
}

Test(resize, values_by_hand) {
    const float x[4] = {1, 2, 3, 4};
    /* nearest, x / 2 floored: each value twice on each axis */
    forward(NET("1x2x2") "[resize]\nscale = 2\ncoord = asymmetric\nnearest = floor\n", x, 4,
            (const float[]){1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}, 16);
    /* align_corners to 3 x 3: the corners kept, the middles averaged */
    forward(NET("1x2x2") "[resize]\nsize = 3\nmode = linear\ncoord = align_corners\n", x, 4,
            (const float[]){1, 1.5f, 2, 2, 2.5f, 3, 3, 3.5f, 4}, 9);
    /* half_pixel, scale 2: (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped */
    forward(NET("1x1x2") "[resize]\nscale = 1x2\nmode = linear\n", x, 2,
            (const float[]){1, 1.25f, 1.75f, 2}, 4);
    /* round_prefer_ceil on tf_half_pixel_for_nn, scale 0.5 of 4: (x + 0.5) * 2 = 1, 3 */
    const float row[4] = {10, 11, 12, 13};
    forward(NET("1x1x4") "[resize]\nscale = 1x0.5\ncoord = tf_half_pixel_for_nn\n"
            "nearest = round_prefer_ceil\n", row, 4, (const float[]){11, 13}, 2);
    /* half_pixel, scale 3 of 2, round_prefer_floor: -1/3, 0, 1/3, 2/3, 1, 4/3 */
    forward(NET("1x1x2") "[resize]\nscale = 1x3\n", x, 2, (const float[]){1, 1, 1, 2, 2, 2}, 6);
}

Test(resize, shapes) {
    spec_expect_shape(NET("3x5x5") "[resize]\nscale = 1.5\n", "3x7x7");
    spec_expect_shape(NET("3x5x8") "[resize]\nscale = 0.5x0.25\n", "3x2x2");
    spec_expect_shape(NET("2x4x4") "[resize]\nsize = 9x1\nmode = linear\n", "2x9x1");
}

Test(resize, bad_specs_refused) {
    spec_expect_error(NET("3x5x5") "[resize]\nscale = 2\nsize = 4\n", OSP_EFORMAT, 4, "not both");
    spec_expect_error(NET("3x5x5") "[resize]\nmode = linear\n", OSP_EFORMAT, 4, "neither");
    spec_expect_error(NET("3x5x5") "[resize]\nscale = 0\n", OSP_EFORMAT, 5, "(0, 1024]");
    spec_expect_error(NET("3x5x5") "[resize]\nscale = 2\nmode = cubic\n", OSP_EFORMAT, 6,
                      "nearest, linear");
    spec_expect_error(NET("3x5x5") "[resize]\nscale = 2\nmode = linear\nnearest = floor\n",
                      OSP_EFORMAT, 7, "only for mode = nearest");
    spec_expect_error(NET("3x5x5") "[resize]\nscale = 2\ncoord = tf_crop_and_resize\n",
                      OSP_EFORMAT, 6, "half_pixel");
    spec_expect_error(NET("3x5x5") "[resize]\nscale = 0.1\n", OSP_ESHAPE, 4, "gives 0x0");
    spec_expect_error(NET("12") "[resize]\nscale = 2\n", OSP_ESHAPE, 4, "C x H x W");
}
