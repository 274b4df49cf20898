/* Specs of [conv], [maxpool], [avgpool], [globalavgpool] and [fc]: output
 * shapes and parameters as PyTorch has them, and every bad spec refused with
 * a message that names file:line. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "osprey/nn.h"

#include "spec_expect.h"

/* ---- shapes --------------------------------------------------------------- */

Test(conv_spec, shapes) {
    spec_expect_shape(NET("3x32x32") "[conv]\nfilters = 16\nsize = 3\nstride = 2\npad = 1\n", "16x16x16");
    spec_expect_shape(NET("3x32x32") "[conv]\nfilters = 8\nsize = 3\npad = same\ndilation = 2\n", "8x32x32");
    spec_expect_shape(NET("3x10x12") "[conv]\nfilters = 4\nsize = 3x5\nstride = 1x2\npad = 1x2\n", "4x10x6");
    spec_expect_shape(NET("1x28x28") "[conv]\nfilters = 20\nsize = 5\n", "20x24x24");
    spec_expect_shape(NET("3x9x9") "[conv]\nfilters = 5\nsize = 3\ndilation = 3\n", "5x3x3");
}

Test(conv_spec, params_as_pytorch) {
    osp_net *net = spec_build(NET("4x8x8") "[conv]\nname = conv1\nfilters = 6\nsize = 3x2\ngroups = 2\n");
    osp_graph *g = net->graph;
    int wi = osp_graph_find_param(g, "conv1.weight"), bi = osp_graph_find_param(g, "conv1.bias");
    cr_assert(wi >= 0 && bi >= 0);
    char buf[64];
    osp_shape_format(&osp_graph_param(g, wi)->shape, buf, sizeof buf);
    cr_assert_str_eq(buf, "6x2x3x2");
    osp_shape_format(&osp_graph_param(g, bi)->shape, buf, sizeof buf);
    cr_assert_str_eq(buf, "6");
    /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C/groups * kh * kw = 12 */
    float bound = 1.0f / sqrtf(12.0f), *w = osp_graph_param_data(g, wi);
    float big = 0;
    for (int i = 0; i < 72; i++) big = fmaxf(big, fabsf(w[i]));
    cr_assert(big <= bound && big > 0.8f * bound, "max |w| %g, bound %g", big, bound);
    osp_net_free(net);
    net = spec_build(NET("3x5x5") "[conv]\nname = c\nfilters = 2\nsize = 3\nbias = 0\n");
    cr_assert_eq(osp_graph_find_param(net->graph, "c.bias"), -1);
    cr_assert_eq(osp_graph_param_count(net->graph), 1);
    osp_net_free(net);
}

Test(pool_spec, shapes) {
    spec_expect_shape(NET("3x7x7") "[maxpool]\nsize = 2\n", "3x3x3");
    spec_expect_shape(NET("3x7x7") "[maxpool]\nsize = 2\nceil = 1\n", "3x4x4");
    spec_expect_shape(NET("3x8x8") "[maxpool]\nsize = 3\nstride = 2\npad = 1\n", "3x4x4");
    /* ceil mode drops a last window that would start in the right padding */
    spec_expect_shape(NET("1x5x5") "[maxpool]\nsize = 2\nstride = 2\npad = 1\nceil = 1\n", "1x3x3");
    spec_expect_shape(NET("2x9x6") "[avgpool]\nsize = 3x2\nstride = 3x1\n", "2x3x5");
    spec_expect_shape(NET("2x9x6") "[avgpool]\nsize = 3\nstride = 2\npad = 1\nexclude_pad = 1\n", "2x5x3");
    spec_expect_shape(NET("64x7x5") "[globalavgpool]\n", "64x1x1");
}

Test(fc_spec, shapes_and_params) {
    osp_net *net = spec_build(NET("3x4x5") "[fc]\nname = fc1\noutputs = 10\n");
    osp_graph *g = net->graph;
    char buf[64];
    osp_shape_format(&osp_graph_output(g)->shape, buf, sizeof buf);
    cr_assert_str_eq(buf, "10");
    int wi = osp_graph_find_param(g, "fc1.weight");
    cr_assert(wi >= 0 && osp_graph_find_param(g, "fc1.bias") >= 0);
    osp_shape_format(&osp_graph_param(g, wi)->shape, buf, sizeof buf);
    cr_assert_str_eq(buf, "10x60");
    cr_assert_eq(net->n_classes, 10);
    osp_net_free(net);
    net = spec_build(NET("6") "[fc]\nname = f\noutputs = 2\nbias = 0\n");
    cr_assert_eq(osp_graph_find_param(net->graph, "f.bias"), -1);
    osp_net_free(net);
}

/* ---- errors --------------------------------------------------------------- */

/* Lines: 1 [net], 2 input, 3 blank, 4 [layer], 5 first key, ... */

Test(conv_spec, errors) {
    spec_expect_error(NET("3x8x8") "[conv]\nsize = 3\n", OSP_EFORMAT, 4, "'filters'");
    spec_expect_error(NET("3x8x8") "[conv]\nfilters = 4\n", OSP_EFORMAT, 4, "'size'");
    spec_expect_error(NET("3x8x8") "[conv]\nfilters = 0\nsize = 3\n", OSP_EFORMAT, 5, "'filters'");
    spec_expect_error(NET("3x8x8") "[conv]\nfilters = four\nsize = 3\n", OSP_EFORMAT, 5, "'filters'");
    spec_expect_error(NET("3x8x8") "[conv]\nfilters = 4\nsize = 3x3x3\n", OSP_EFORMAT, 6, "'size'");
    spec_expect_error(NET("3x8x8") "[conv]\nfilters = 4\nsize = 3\nstride = 0\n", OSP_EFORMAT, 7, "'stride'");
    spec_expect_error(NET("3x8x8") "[conv]\nfilters = 4\nsize = 3\npad = -1\n", OSP_EFORMAT, 7, "'pad'");
    spec_expect_error(NET("3x8x8") "[conv]\nfilters = 4\nsize = 3\npad = valid\n", OSP_EFORMAT, 7, "'pad'");
    spec_expect_error(NET("3x8x8") "[conv]\nfilters = 4\nsize = 3\nbias = 2\n", OSP_EFORMAT, 7, "'bias'");
    spec_expect_error(NET("3x8x8") "[conv]\nfilters = 4\nsize = 3\nkernel = 3\n", OSP_EFORMAT, 7,
                 "unknown key 'kernel'");
    spec_expect_error(NET("3x8x8") "[conv]\nfilters = 4\nsize = 3\nstride = 2\npad = same\n",
                 OSP_EFORMAT, 8, "stride 1");
    spec_expect_error(NET("3x8x8") "[conv]\nfilters = 4\nsize = 2\npad = same\n", OSP_EFORMAT, 7, "same");
    spec_expect_error(NET("4x8x8") "[conv]\nfilters = 3\nsize = 3\ngroups = 2\n", OSP_EFORMAT, 7, "'groups'");
    /* Shape errors come from setup, with the section's place. */
    spec_expect_error(NET("3x8x8") "[conv]\nfilters = 4\nsize = 3\ngroups = 2\n", OSP_ESHAPE, 4, "groups");
    spec_expect_error(NET("3x4x4") "[conv]\nfilters = 4\nsize = 5\n", OSP_ESHAPE, 4, "does not fit");
    spec_expect_error(NET("12") "[conv]\nfilters = 4\nsize = 1\n", OSP_ESHAPE, 4, "C x H x W");
}

Test(pool_spec, errors) {
    spec_expect_error(NET("3x8x8") "[maxpool]\nstride = 2\n", OSP_EFORMAT, 4, "'size'");
    spec_expect_error(NET("3x8x8") "[maxpool]\nsize = 0\n", OSP_EFORMAT, 5, "'size'");
    spec_expect_error(NET("3x8x8") "[maxpool]\nsize = 2\nceil = yes\n", OSP_EFORMAT, 6, "'ceil'");
    spec_expect_error(NET("3x8x8") "[maxpool]\nsize = 2\npad = 2\n", OSP_EFORMAT, 6, "'pad'");
    spec_expect_error(NET("3x8x8") "[maxpool]\nsize = 2\nexclude_pad = 1\n", OSP_EFORMAT, 6,
                 "unknown key 'exclude_pad'");
    spec_expect_error(NET("3x8x8") "[avgpool]\nsize = 2\nexclude_pad = 2\n", OSP_EFORMAT, 6, "'exclude_pad'");
    spec_expect_error(NET("3x8x8") "[avgpool]\npad = 1\n", OSP_EFORMAT, 4, "'size'");
    spec_expect_error(NET("3x8x8") "[avgpool]\nsize = 2\ndilation = 2\n", OSP_EFORMAT, 6, "unknown key");
    spec_expect_error(NET("3x8x8") "[globalavgpool]\nsize = 2\n", OSP_EFORMAT, 5, "unknown key 'size'");
    spec_expect_error(NET("3x3x8") "[maxpool]\nsize = 4\n", OSP_ESHAPE, 4, "does not fit");
    spec_expect_error(NET("48") "[globalavgpool]\n", OSP_ESHAPE, 4, "C x H x W");
}

Test(fc_spec, errors) {
    spec_expect_error(NET("3x8x8") "[fc]\nbias = 0\n", OSP_EFORMAT, 4, "'outputs'");
    spec_expect_error(NET("3x8x8") "[fc]\noutputs = -3\n", OSP_EFORMAT, 5, "'outputs'");
    spec_expect_error(NET("3x8x8") "[fc]\noutputs = 10\nbias = true\n", OSP_EFORMAT, 6, "'bias'");
    spec_expect_error(NET("3x8x8") "[fc]\noutputs = 10\nunits = 10\n", OSP_EFORMAT, 6,
                 "unknown key 'units'");
}
