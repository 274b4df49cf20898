/* The layers ONNX import needs: [hardsigmoid], [hardswish], [clip], [mul],
 * [sub], [div] and broadcasting [add], [constant], [pad], [transpose].
 * Gradients against finite differences (also on the portable reference
 * kernels), forward values against plain loops, shapes, and every bad spec
 * refused with a message that names file:line. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "osprey/io.h"
#include "osprey/nn.h"
#include "spec_expect.h"
#include "tmpdir.h"

static void expect_grad(const char *spec, const gradcheck_opts *o) {
    int bad = gradcheck_spec(spec, o);
    cr_assert_eq(bad, 0, "gradcheck found %d disagreements for:\n%s", bad, spec);
}

static void fill(float *x, int64_t n, float lo, float hi, uint64_t seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * osp_rng_uniform(&r);
}

/* Sets every buffer (the [constant]s' values) to +-U(0.5, 1.5): away from 0,
 * so that dividing by one is smooth. */
static void set_constants(osp_graph *g, uint64_t seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    for (int p = 0; p < osp_graph_param_count(g); p++) {
        const osp_param *prm = osp_graph_param(g, p);
        if (prm->kind != OSP_PARAM_BUFFER) continue;
        float *v = osp_graph_param_data(g, p);
        for (int64_t i = 0; i < prm->numel; i++) {
            float m = 0.5f + osp_rng_uniform(&r);
            v[i] = osp_rng_uniform(&r) < 0.5f ? -m : m;
        }
    }
}

/* Runs a planned net on x and returns the output (batch x size). */
static const float *run(osp_net *net, const float *x, int batch, osp_mode mode) {
    cr_assert_eq(osp_graph_plan(net->graph, batch, mode), 0, "%s", osp_last_error());
    osp_exec ex = {.be = osp_backend_default(), .mode = mode, .batch = batch, .seed = 1};
    cr_assert_eq(osp_graph_forward(net->graph, x, &ex), 0, "%s", osp_last_error());
    return osp_graph_output(net->graph)->out;
}

/* The gradient check of gradcheck.h for networks with [constant]s, whose
 * values it cannot set: d sum(out * R) / d input, every input value,
 * against central differences, with the constants random and away from 0. */
static void expect_input_grad(const char *spec, int batch) {
    osp_net *net = spec_build(spec);
    osp_graph *g = net->graph;
    set_constants(g, 3);
    osp_graph_require_input_grad(g);
    cr_assert_eq(osp_graph_plan(g, batch, OSP_MODE_TRAIN), 0, "%s", osp_last_error());
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = batch, .seed = 1};
    osp_node *in = osp_graph_node(g, 0), *out = osp_graph_output(g);
    const int64_t nx = in->size * batch, nr = out->size * batch;
    float *x = malloc((size_t)nx * sizeof *x), *dx = malloc((size_t)nx * sizeof *dx);
    float *r = malloc((size_t)nr * sizeof *r);
    fill(x, nx, -1, 1, 5);
    fill(r, nr, -1, 1, 6);
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0, "%s", osp_last_error());
    memcpy(out->dout, r, (size_t)nr * sizeof *r);
    cr_assert_eq(osp_graph_backward(g, &ex), 0, "%s", osp_last_error());
    memcpy(dx, in->dout, (size_t)nx * sizeof *dx);
    const float eps = 1e-2f;
    int bad = 0;
    for (int64_t i = 0; i < nx; i++) {
        double l[2];
        for (int side = 0; side < 2; side++) {
            float saved = x[i];
            x[i] = saved + (side ? -eps : eps);
            cr_assert_eq(osp_graph_forward(g, x, &ex), 0);
            x[i] = saved;
            l[side] = 0;
            for (int64_t j = 0; j < nr; j++) l[side] += (double)out->out[j] * r[j];
        }
        double numeric = (l[0] - l[1]) / (2.0 * eps);
        if (!(fabs(dx[i] - numeric) <= 2e-3 + 2e-2 * fmax(fabs(dx[i]), fabs(numeric)))) {
            if (bad++ < 5)
                fprintf(stderr, "input[%lld]: analytic %.6g, numeric %.6g\n", (long long)i, dx[i],
                        numeric);
        }
    }
    cr_assert_eq(bad, 0, "%d gradient disagreements for:\n%s", bad, spec);
    free(x);
    free(dx);
    free(r);
    osp_net_free(net);
}

/* ---- gradients: element-wise ----------------------------------------------- */

/* Inputs in (-5, 5) cross the kinks (+-3, the clip bounds); the small step
 * makes a kink between v - eps and v + eps unlikely (the fixed seeds, never). */
static const gradcheck_opts kink_opts = {.eps = 1e-3f, .max_checks = 200, .input_scale = 5};

Test(grad_extra, hardsigmoid) {
    expect_grad(NET("3x4x5") "[hardsigmoid]\n", &kink_opts);
    expect_grad(NET("3x4x5") "[hardsigmoid]\nalpha = 0.2\nbeta = 0.4\n", &kink_opts);
    expect_grad(NET("3x4x5") "[hardsigmoid]\nalpha = -0.3\n", &kink_opts);
}

Test(grad_extra, hardswish) {
    expect_grad(NET("3x4x5") "[hardswish]\n", &kink_opts);
    expect_grad(NET("17") "[hardswish]\n\n[tanh]\n", &(gradcheck_opts){.batch = 3, .input_scale = 4});
}

Test(grad_extra, clip) {
    expect_grad(NET("3x4x5") "[clip]\nmin = -1.5\nmax = 2\n", &kink_opts);
    expect_grad(NET("3x4x5") "[clip]\nmin = 0.25\n", &kink_opts);
    expect_grad(NET("3x4x5") "[clip]\nmax = inf\nmin = -inf\n", &kink_opts);
    expect_grad(NET("3x4x5") "[clip]\nmax = 1\nmin = -inf\n", &kink_opts);
}

/* ---- gradients: broadcasting ------------------------------------------------ */

static const char *const binary_ops[] = {"add", "sub", "mul", "div"};

/* a op b for every op; for [div] the divisor goes through a sigmoid first
 * (b in (0.27, 0.73) for inputs in (-1, 1)) so that it stays away from 0.
 * prelude defines the layers a and b from the input. */
static void expect_binary_grads(const char *net, const char *prelude, const char *a,
                                const char *b) {
    for (size_t i = 0; i < sizeof binary_ops / sizeof binary_ops[0]; i++) {
        char spec[1024];
        if (strcmp(binary_ops[i], "div"))
            snprintf(spec, sizeof spec, "[net]\ninput = %s\n\n%s[%s]\ninput = %s, %s\n\n[tanh]\n",
                     net, prelude, binary_ops[i], a, b);
        else
            snprintf(spec, sizeof spec,
                     "[net]\ninput = %s\n\n%s[sigmoid]\nname = divisor\ninput = %s\n\n"
                     "[div]\ninput = %s, divisor\n\n[tanh]\n",
                     net, prelude, b, a);
        expect_grad(spec, &(gradcheck_opts){.batch = 2, .max_checks = 120});
    }
}

/* [C,H,W] op [C,1,1], both ways round: the squeeze-excite shape. */
Test(grad_broadcast, per_channel) {
    const char *pool = "[globalavgpool]\nname = p\ninput = input\n\n";
    expect_binary_grads("3x4x5", pool, "input", "p");
    expect_binary_grads("3x4x5", pool, "p", "input");
}

/* [C,H,W] op [1] */
Test(grad_broadcast, scalar) {
    const char *s = "[fc]\nname = s\noutputs = 1\ninput = input\n\n";
    expect_binary_grads("3x4x5", s, "input", "s");
    expect_binary_grads("3x4x5", s, "s", "input");
}

/* [D] op [D]: no broadcasting; and [D] op [1] */
Test(grad_broadcast, same_shape_and_vector) {
    expect_binary_grads("7", "[tanh]\nname = t\ninput = input\n\n", "input", "t");
    expect_binary_grads("7", "[fc]\nname = s\noutputs = 1\ninput = input\n\n", "input", "s");
}

/* Ranks that differ: [C,H,W] op [W], [C,H,W] op [H,W], and both operands
 * broadcast: [C,1,W] op [H,1] gives [C,H,W]. */
Test(grad_broadcast, ranks_differ) {
    expect_binary_grads("3x4x5", "[fc]\nname = v\noutputs = 5\ninput = input\n\n", "input", "v");
    expect_binary_grads("3x4x5",
                        "[fc]\nname = f\noutputs = 20\ninput = input\n\n"
                        "[reshape]\nname = hw\nshape = 4x5\n\n",
                        "hw", "input");
    expect_binary_grads("2x3",
                        "[fc]\nname = f1\noutputs = 6\ninput = input\n\n"
                        "[reshape]\nname = a\nshape = 3x1x2\n\n"
                        "[fc]\nname = f2\noutputs = 4\ninput = input\n\n"
                        "[reshape]\nname = b\nshape = 4x1\n\n",
                        "a", "b");
}

/* x op x: both gradients land in one buffer. */
Test(grad_broadcast, same_input_twice) {
    expect_grad(NET("3x4x5") "[mul]\ninput = input, input\n", NULL);
    expect_grad(NET("3x4x5") "[sub]\ninput = input, input\n\n[tanh]\n", NULL);
}

/* ---- gradients: constants, pad, transpose --------------------------------- */

Test(grad_constant, with_binary_ops) {
    expect_input_grad(NET("3x4x5") "[constant]\nname = c\nshape = 3x1x1\n\n"
                                   "[mul]\ninput = input, c\n",
                      2);
    expect_input_grad(NET("3x4x5") "[constant]\nname = c\nshape = 3x1x1\n\n"
                                   "[sub]\ninput = c, input\n",
                      2);
    expect_input_grad(NET("6") "[constant]\nname = c\nshape = 1\n\n[div]\ninput = input, c\n", 3);
    expect_input_grad(NET("6") "[constant]\nname = c\nshape = 6\n\n[div]\ninput = c, c\n\n"
                               "[add]\ninput = input, c\n\n[mul]\ninput = div2, add3\n",
                      2);
    expect_input_grad(NET("2x3x4") "[constant]\nname = c\nshape = 2x3x4\n\n"
                                   "[add]\ninput = c, input\n\n[tanh]\n",
                      1);
}

Test(grad_pad, modes) {
    expect_grad(NET("2x4x5") "[pad]\npad = 1, 2, 3, 0\n", NULL);
    expect_grad(NET("2x4x5") "[pad]\npad = 2\nvalue = -1.5\n", NULL);
    expect_grad(NET("2x4x5") "[pad]\npad = 3, 1, 2, 4\nmode = reflect\n", NULL);
    expect_grad(NET("2x4x5") "[pad]\npad = 1x2\nmode = reflect\n\n[tanh]\n", NULL);
    expect_grad(NET("2x4x5") "[pad]\npad = 5, 0, 2, 6\nmode = edge\n", NULL);
    expect_grad(NET("1x1x1") "[pad]\npad = 2\nmode = edge\n", NULL);
}

Test(grad_transpose, perms) {
    expect_grad(NET("2x3x4") "[transpose]\nperm = 1, 2, 0\n", NULL);
    expect_grad(NET("2x3x4") "[transpose]\nperm = 2, 0, 1\n\n[tanh]\n", NULL);
    expect_grad(NET("2x3x4") "[transpose]\nperm = 0, 2, 1\n", NULL);
    expect_grad(NET("5x3") "[transpose]\nperm = 1, 0\n", NULL);
    expect_grad(NET("7") "[transpose]\nperm = 0\n", NULL);
}

/* The same layers around the backend's kernels (conv, activations, pool) on
 * the portable reference backend (osp_backend_default reads OSP_BACKEND at
 * its first call; each test runs in its own process). */
Test(grad_reference, squeeze_excite_chain) {
    setenv("OSP_BACKEND", "reference", 1);
    expect_grad(NET("2x5x6")
                "[conv]\nname = c1\nfilters = 4\nsize = 3\npad = 1\n\n"
                "[hardswish]\nname = h\n\n"
                "[globalavgpool]\n\n[fc]\noutputs = 4\n\n[reshape]\nshape = 4x1x1\n\n"
                "[hardsigmoid]\nname = gate\n\n"
                "[mul]\ninput = h, gate\n\n"
                "[pad]\npad = 1, 0, 0, 2\nmode = reflect\n\n"
                "[clip]\nmin = -0.5\nmax = 0.5\n\n"
                "[transpose]\nperm = 2, 0, 1\n\n"
                "[fc]\nname = v\noutputs = 6\ninput = h\n\n"
                "[sub]\ninput = transpose10, v\n",
                &(gradcheck_opts){.eps = 1e-3f, .max_checks = 100});
}

Test(grad_reference, broadcast_and_constant) {
    setenv("OSP_BACKEND", "reference", 1);
    expect_binary_grads("3x4x5", "[globalavgpool]\nname = p\ninput = input\n\n", "input", "p");
    expect_input_grad(NET("3x4x5") "[constant]\nname = c\nshape = 5\n\n"
                                   "[div]\ninput = input, c\n\n[sigmoid]\n",
                      2);
}

/* ---- forward values ------------------------------------------------------- */

Test(extra_forward, activations) {
    enum { D = 41 };
    float x[D];
    for (int i = 0; i < D; i++) x[i] = -5.0f + 0.25f * (float)i; /* hits -3, 0, 3 exactly */
    osp_net *net = spec_build(NET("41") "[hardsigmoid]\nname = hs\ninput = input\n\n"
                                        "[hardsigmoid]\nname = hs2\nalpha = 0.2\nbeta = 0.3\ninput = input\n\n"
                                        "[hardswish]\nname = hw\ninput = input\n\n"
                                        "[clip]\nname = c\nmin = -1\nmax = 2.5\ninput = input\n\n"
                                        "[clip]\nname = c2\nmax = 0\ninput = input\n\n"
                                        "[concat]\ninput = hs, hs2, hw, c, c2\n");
    const float *y = run(net, x, 1, OSP_MODE_INFER);
    for (int i = 0; i < D; i++) {
        double v = x[i];
        double want[5] = {fmin(fmax(v / 6 + 0.5, 0), 1), fmin(fmax(0.2 * v + 0.3, 0), 1),
                          v * fmin(fmax(v + 3, 0), 6) / 6, fmin(fmax(v, -1), 2.5), fmin(v, 0)};
        for (int k = 0; k < 5; k++)
            cr_expect_float_eq(y[k * D + i], want[k], 1e-6, "layer %d at x = %g: %g, not %g", k,
                               v, y[k * D + i], want[k]);
    }
    osp_net_free(net);
}

/* The gradients at the kinks are PyTorch's: hardsigmoid 0 at +-3, hardswish
 * -1/2 at -3 and 3/2 at 3 ((2x + 3) / 6 on [-3, 3], x / 3 + 1/2), clip 1 at
 * both bounds (torch.clamp passes min <= x <= max). */
Test(extra_backward, kinks_as_pytorch) {
    const float x[4] = {-3.0f, 3.0f, -1.0f, 2.0f};
    const char *specs[] = {NET("4") "[hardsigmoid]\n", NET("4") "[hardswish]\n",
                           NET("4") "[clip]\nmin = -1\nmax = 2\n"};
    for (int k = 0; k < 3; k++) {
        osp_net *net = spec_build(specs[k]);
        osp_graph *g = net->graph;
        osp_graph_require_input_grad(g);
        run(net, x, 1, OSP_MODE_TRAIN);
        osp_node *out = osp_graph_output(g);
        for (int i = 0; i < 4; i++) out->dout[i] = 1.0f;
        osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = 1};
        cr_assert_eq(osp_graph_backward(g, &ex), 0, "%s", osp_last_error());
        const float *dx = osp_graph_node(g, 0)->dout;
        for (int i = 0; i < 4; i++) {
            double v = x[i], want;
            if (k == 0) want = v > -3 && v < 3 ? 1.0 / 6 : 0;
            else if (k == 1) want = v < -3 ? 0 : v <= 3 ? (2 * v + 3) / 6 : 1;
            else want = v >= -1 && v <= 2 ? 1 : 0;
            cr_expect_float_eq(dx[i], want, 1e-6, "%s at x = %g: %g, not %g", specs[k], v, dx[i],
                               want);
        }
        osp_net_free(net);
    }
}

Test(extra_forward, nan_passes) {
    const float x[3] = {NAN, 1.0f, -INFINITY};
    const char *specs[] = {NET("3") "[hardsigmoid]\n", NET("3") "[hardswish]\n",
                           NET("3") "[clip]\nmin = -1\nmax = 2\n"};
    for (int k = 0; k < 3; k++) {
        osp_net *net = spec_build(specs[k]);
        const float *y = run(net, x, 1, OSP_MODE_INFER);
        cr_expect(isnan(y[0]), "%s: NaN gave %g", specs[k], y[0]);
        osp_net_free(net);
    }
}

/* a op b computed by plain loops over the broadcast index. */
static double apply(int op, double a, double b) {
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    default: return a / b;
    }
}

Test(extra_forward, broadcast_values) {
    enum { C = 3, H = 4, W = 5, B = 2 };
    float x[B * C * H * W];
    fill(x, B * C * H * W, 0.5f, 2.0f, 9);
    for (int op = 0; op < 4; op++) {
        char spec[512];
        /* p = per-channel mean [C,1,1]; v = the last row of channel 0 [W] */
        snprintf(spec, sizeof spec,
                 NET("3x4x5") "[globalavgpool]\nname = p\n\n"
                              "[%s]\nname = a\ninput = input, p\n\n"
                              "[%s]\nname = b\ninput = p, input\n\n"
                              "[concat]\ninput = a, b\n",
                 binary_ops[op], binary_ops[op]);
        osp_net *net = spec_build(spec);
        const float *y = run(net, x, B, OSP_MODE_INFER);
        for (int s = 0; s < B; s++)
            for (int c = 0; c < C; c++) {
                const float *plane = x + ((s * C) + c) * H * W;
                double mean = 0;
                for (int i = 0; i < H * W; i++) mean += plane[i];
                mean /= H * W;
                for (int i = 0; i < H * W; i++) {
                    double want_a = apply(op, plane[i], mean), want_b = apply(op, mean, plane[i]);
                    const float *ys = y + s * 2 * C * H * W;
                    cr_expect_float_eq(ys[c * H * W + i], want_a, 1e-5 * fmax(1, fabs(want_a)),
                                       "%s sample %d channel %d value %d", binary_ops[op], s, c, i);
                    cr_expect_float_eq(ys[(C + c) * H * W + i], want_b, 1e-5 * fmax(1, fabs(want_b)),
                                       "%s (reversed) sample %d channel %d value %d",
                                       binary_ops[op], s, c, i);
                }
            }
        osp_net_free(net);
    }
}

/* [C,1,W] * [H,1] -> [C,H,W]: both operands broadcast. */
Test(extra_forward, both_sides_broadcast) {
    enum { C = 2, H = 3, W = 4 };
    osp_net *net = spec_build(NET("1") "[constant]\nname = a\nshape = 2x1x4\n\n"
                                        "[constant]\nname = b\nshape = 3x1\n\n"
                                        "[mul]\ninput = a, b\n");
    osp_graph *g = net->graph;
    float *a = osp_graph_param_data(g, osp_graph_find_param(g, "a.value"));
    float *b = osp_graph_param_data(g, osp_graph_find_param(g, "b.value"));
    fill(a, C * W, -2, 2, 1);
    fill(b, H, -2, 2, 2);
    float x[2] = {0};
    const float *y = run(net, x, 2, OSP_MODE_INFER);
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < C; c++)
            for (int h = 0; h < H; h++)
                for (int w = 0; w < W; w++) {
                    float want = a[c * W + w] * b[h];
                    cr_expect_float_eq(y[s * C * H * W + (c * H + h) * W + w], want, 1e-6);
                }
    osp_net_free(net);
}

Test(constant, buffer_output_and_modes) {
    osp_net *net = spec_build(NET("3x2x2") "[constant]\nname = c\nshape = 3x1x1\n\n"
                                           "[mul]\nname = m\ninput = input, c\n");
    osp_graph *g = net->graph;
    int pi = osp_graph_find_param(g, "c.value");
    cr_assert(pi >= 0);
    const osp_param *p = osp_graph_param(g, pi);
    cr_assert_eq(p->kind, OSP_PARAM_BUFFER);
    cr_assert_eq(p->numel, 3);
    cr_assert_eq(osp_net_param_count(net), 0, "a constant is not trained");
    osp_node *c = osp_graph_find(g, "c");
    cr_assert_eq(c->n_inputs, 0);
    cr_assert_eq(c->needs_grad, 0);
    float *v = osp_graph_param_data(g, pi);
    for (int i = 0; i < 3; i++) cr_assert_eq(v[i], 0.0f, "starts at 0");
    v[0] = 2, v[1] = -1, v[2] = 0.5f;
    float x[2 * 12];
    fill(x, 24, -1, 1, 4);
    for (int mode = 0; mode < 2; mode++) {
        const float *y = run(net, x, 2, mode ? OSP_MODE_TRAIN : OSP_MODE_INFER);
        for (int s = 0; s < 2; s++)
            for (int ch = 0; ch < 3; ch++) {
                const float *cs = c->out + s * 3; /* read after the run: kept in training */
                if (mode) cr_expect_eq(cs[ch], v[ch]);
                for (int i = 0; i < 4; i++) {
                    int k = s * 12 + ch * 4 + i;
                    cr_expect_float_eq(y[k], x[k] * v[ch], 1e-7);
                }
            }
    }
    /* training: no gradient flows into the constant, the input's still does */
    osp_graph_require_input_grad(g);
    run(net, x, 2, OSP_MODE_TRAIN);
    cr_assert_null(c->dout);
    osp_node *out = osp_graph_output(g);
    for (int i = 0; i < 24; i++) out->dout[i] = 1.0f;
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = 2};
    cr_assert_eq(osp_graph_backward(g, &ex), 0, "%s", osp_last_error());
    for (int i = 0; i < 24; i++) cr_expect_eq(osp_graph_node(g, 0)->dout[i], v[(i % 12) / 4]);
    osp_net_free(net);
}

/* A network may start from a constant: the layer after it defaults to it. */
Test(constant, as_previous_layer) {
    osp_net *net = spec_build(NET("4") "[constant]\nshape = 2x3x1\n\n[relu]\n\n[add]\ninput = relu2, input\n");
    char buf[64];
    osp_shape_format(&osp_graph_output(net->graph)->shape, buf, sizeof buf);
    cr_assert_str_eq(buf, "2x3x4");
    osp_net_free(net);
}

/* The source index of padded index i by the definitions: reflect mirrors
 * about the edge value, edge repeats it. */
static int pad_source(int i, int n, int mode) {
    if (mode == 1) {
        while (i < 0 || i >= n) i = i < 0 ? -i : 2 * (n - 1) - i;
        return i;
    }
    if (mode == 2) return i < 0 ? 0 : i >= n ? n - 1 : i;
    return i >= 0 && i < n ? i : -1;
}

Test(extra_forward, pad_values) {
    enum { C = 2, H = 3, W = 4 };
    const char *modes[] = {"constant\nvalue = -inf", "reflect", "edge"};
    const int t = 2, l = 3, b = 1, r = 0; /* reflect needs pads < H, W */
    float x[2 * C * H * W];
    fill(x, 2 * C * H * W, -1, 1, 7);
    for (int m = 0; m < 3; m++) {
        char spec[256];
        snprintf(spec, sizeof spec, NET("2x3x4") "[pad]\npad = %d, %d, %d, %d\nmode = %s\n", t, l, b,
                 r, modes[m]);
        osp_net *net = spec_build(spec);
        const int oh = H + t + b, ow = W + l + r;
        char buf[64];
        osp_shape_format(&osp_graph_output(net->graph)->shape, buf, sizeof buf);
        cr_assert_eq(osp_graph_output(net->graph)->size, C * oh * ow, "%s: %s", modes[m], buf);
        const float *y = run(net, x, 2, OSP_MODE_INFER);
        for (int s = 0; s < 2; s++)
            for (int c = 0; c < C; c++)
                for (int i = 0; i < oh; i++)
                    for (int j = 0; j < ow; j++) {
                        int si = pad_source(i - t, H, m), sj = pad_source(j - l, W, m);
                        float got = y[((s * C + c) * oh + i) * ow + j];
                        float want = si < 0 || sj < 0 ? -INFINITY
                                                      : x[((s * C + c) * H + si) * W + sj];
                        cr_expect_eq(got, want, "%s: sample %d channel %d (%d, %d): %g, not %g",
                                     modes[m], s, c, i, j, got, want);
                    }
        osp_net_free(net);
    }
}

/* -inf padding before a max pool: the padding never wins. */
Test(extra_forward, pad_inf_then_maxpool) {
    float x[4] = {-5, -6, -7, -8};
    osp_net *net = spec_build(NET("1x2x2") "[pad]\npad = 1\nvalue = -inf\n\n[maxpool]\nsize = 2\n");
    const float *y = run(net, x, 1, OSP_MODE_INFER);
    cr_expect_eq(y[0], -5.0f);
    cr_expect_eq(y[1], -6.0f);
    cr_expect_eq(y[2], -7.0f);
    cr_expect_eq(y[3], -8.0f);
    osp_net_free(net);
}

Test(extra_forward, transpose_values) {
    enum { C = 2, H = 3, W = 4 };
    float x[2 * C * H * W];
    fill(x, 2 * C * H * W, -1, 1, 8);
    const int perms[][3] = {{1, 2, 0}, {2, 0, 1}, {0, 2, 1}, {2, 1, 0}};
    for (int k = 0; k < 4; k++) {
        const int *p = perms[k];
        char spec[128];
        snprintf(spec, sizeof spec, NET("2x3x4") "[transpose]\nperm = %d, %d, %d\n", p[0], p[1], p[2]);
        osp_net *net = spec_build(spec);
        const int in_dim[3] = {C, H, W};
        const int od[3] = {in_dim[p[0]], in_dim[p[1]], in_dim[p[2]]};
        const osp_shape *os = &osp_graph_output(net->graph)->shape;
        for (int i = 0; i < 3; i++) cr_assert_eq(os->dim[i], od[i]);
        const float *y = run(net, x, 2, OSP_MODE_INFER);
        for (int s = 0; s < 2; s++)
            for (int i0 = 0; i0 < od[0]; i0++)
                for (int i1 = 0; i1 < od[1]; i1++)
                    for (int i2 = 0; i2 < od[2]; i2++) {
                        int src[3];
                        src[p[0]] = i0, src[p[1]] = i1, src[p[2]] = i2;
                        float want = x[s * C * H * W + (src[0] * H + src[1]) * W + src[2]];
                        float got = y[s * C * H * W + (i0 * od[1] + i1) * od[2] + i2];
                        cr_expect_eq(got, want, "perm %d,%d,%d at %d,%d,%d", p[0], p[1], p[2], i0, i1, i2);
                    }
        osp_net_free(net);
    }
}

/* Training and inference give the same outputs (a larger input, so that the
 * threaded paths run too). */
Test(extra_forward, train_equals_infer) {
    const char *spec = NET("8x40x40") "[pad]\npad = 1, 2, 3, 4\nmode = reflect\n\n"
                                      "[hardswish]\nname = h\n\n"
                                      "[globalavgpool]\n\n[hardsigmoid]\nname = g\n\n"
                                      "[mul]\ninput = h, g\n\n[transpose]\nperm = 1, 2, 0\n\n"
                                      "[clip]\nmin = -0.1\n";
    osp_net *net = spec_build(spec);
    const int batch = 3;
    const int64_t n = batch * 8 * 40 * 40;
    float *x = malloc((size_t)n * sizeof *x);
    fill(x, n, -4, 4, 12);
    const osp_node *out = osp_graph_output(net->graph);
    const int64_t ny = batch * out->size;
    float *a = malloc((size_t)ny * sizeof *a);
    memcpy(a, run(net, x, batch, OSP_MODE_TRAIN), (size_t)ny * sizeof *a);
    const float *b = run(net, x, batch, OSP_MODE_INFER);
    cr_assert(!memcmp(a, b, (size_t)ny * sizeof *a));
    free(a);
    free(x);
    osp_net_free(net);
}

/* ---- shapes ----------------------------------------------------------------- */

Test(extra_spec, shapes) {
    const char *same[] = {"hardsigmoid", "hardswish", "clip"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        char spec[128];
        snprintf(spec, sizeof spec, NET("3x5x7") "[%s]\n", same[i]);
        spec_expect_shape(spec, "3x5x7");
        snprintf(spec, sizeof spec, NET("12") "[%s]\n", same[i]);
        spec_expect_shape(spec, "12");
    }
    spec_expect_shape(NET("3x4x5") "[globalavgpool]\nname = p\n\n[mul]\ninput = input, p\n", "3x4x5");
    spec_expect_shape(NET("3x4x5") "[fc]\nname = v\noutputs = 5\n\n[add]\ninput = v, input\n", "3x4x5");
    spec_expect_shape(NET("4") "[constant]\nname = c\nshape = 3x1\n\n[sub]\ninput = input, c\n", "3x4");
    spec_expect_shape(NET("4") "[constant]\nname = c\nshape = 1\n\n[div]\ninput = c, input\n", "4");
    spec_expect_shape(NET("4") "[constant]\nshape = 2x1x1x3\n", "2x1x1x3");
    spec_expect_shape(NET("3x4x5") "[pad]\npad = 1\n", "3x6x7");
    spec_expect_shape(NET("3x4x5") "[pad]\npad = 1x2\nmode = edge\n", "3x6x9");
    spec_expect_shape(NET("3x4x5") "[pad]\npad = 0, 1, 2, 3\nmode = reflect\n", "3x6x9");
    spec_expect_shape(NET("3x4x5") "[pad]\npad = 3, 4, 3, 4\nmode = reflect\n", "3x10x13");
    spec_expect_shape(NET("3x4x5") "[transpose]\nperm = 1, 2, 0\n", "4x5x3");
    spec_expect_shape(NET("3x4x5") "[transpose]\nperm = 2x0x1\n", "5x3x4");
    spec_expect_shape(NET("3x4") "[transpose]\nperm = 1, 0\n", "4x3");
}

/* ---- errors ------------------------------------------------------------------- */

Test(extra_spec, errors) {
    /* shapes that do not broadcast */
    spec_expect_error(NET("3x4x5") "[fc]\nname = f\noutputs = 4\n\n[mul]\ninput = input, f\n",
                      OSP_ESHAPE, 8, "cannot multiply 'input' (3x4x5) and 'f' (4)");
    spec_expect_error(NET("3x4x5") "[globalavgpool]\nname = p\n\n[reshape]\nname = r\nshape = 1x3\n\n"
                                   "[sub]\ninput = input, r\n",
                      OSP_ESHAPE, 11, "cannot subtract");
    spec_expect_error(NET("3x4x5") "[fc]\nname = f\noutputs = 2\n\n[div]\ninput = f, input\n",
                      OSP_ESHAPE, 8, "do not broadcast");
    spec_expect_error(NET("3x4x5") "[fc]\nname = f\noutputs = 4\n\n[add]\ninput = input, f\n",
                      OSP_ESHAPE, 8, "cannot add");
    /* only two inputs broadcast */
    spec_expect_error(NET("3x4x5") "[globalavgpool]\nname = p\n\n[add]\ninput = input, p, input\n",
                      OSP_ESHAPE, 7, "cannot add");
    spec_expect_error(NET("4") "[mul]\n", OSP_ESHAPE, 4, "exactly two inputs");
    spec_expect_error(NET("4") "[div]\ninput = input, input, input\n", OSP_ESHAPE, 4,
                      "exactly two inputs");
    /* [constant] */
    spec_expect_error(NET("4") "[constant]\nshape = 4\ninput = input\n", OSP_EFORMAT, 6,
                      "[constant] takes no input; remove 'input = input'");
    spec_expect_error(NET("4") "[constant]\n", OSP_EFORMAT, 4, "'shape'");
    spec_expect_error(NET("4") "[constant]\nshape = 4x0\n", OSP_EFORMAT, 5, "'shape'");
    spec_expect_error(NET("4") "[constant]\nshape = 4x-1\n", OSP_EFORMAT, 5, "'shape'");
    spec_expect_error(NET("4") "[constant]\nshape = 65536x65536\n", OSP_ESHAPE, 4, "values per sample");
    /* [pad] */
    spec_expect_error(NET("3x4x5") "[pad]\npad = 4, 0, 0, 0\nmode = reflect\n", OSP_ESHAPE, 4,
                      "must be smaller than the input's height and width (3x4x5)");
    spec_expect_error(NET("3x4x5") "[pad]\npad = 0, 0, 0, 5\nmode = reflect\n", OSP_ESHAPE, 4,
                      "reflect");
    spec_expect_error(NET("3x4x5") "[pad]\nmode = edge\n", OSP_EFORMAT, 4, "'pad'");
    spec_expect_error(NET("3x4x5") "[pad]\npad = 1, 2, 3\n", OSP_EFORMAT, 5, "1, 2 or 4 values");
    spec_expect_error(NET("3x4x5") "[pad]\npad = 1025\n", OSP_EFORMAT, 5, "between 0 and 1024");
    spec_expect_error(NET("3x4x5") "[pad]\npad = -1\n", OSP_EFORMAT, 5, "between 0 and 1024");
    spec_expect_error(NET("3x4x5") "[pad]\npad = 1\nmode = wrap\n", OSP_EFORMAT, 6,
                      "constant, reflect, edge");
    spec_expect_error(NET("3x4x5") "[pad]\npad = 1\nmode = edge\nvalue = 1\n", OSP_EFORMAT, 7,
                      "only for mode = constant");
    spec_expect_error(NET("3x4x5") "[pad]\npad = 1\nvalue = nan\n", OSP_EFORMAT, 6, "'value'");
    spec_expect_error(NET("12") "[pad]\npad = 1\n", OSP_ESHAPE, 4, "C x H x W");
    /* [transpose] */
    spec_expect_error(NET("3x4x5") "[transpose]\nperm = 1, 1, 0\n", OSP_EFORMAT, 5,
                      "names axis 1 twice");
    spec_expect_error(NET("3x4x5") "[transpose]\nperm = 1, 0\n", OSP_ESHAPE, 4,
                      "perm has 2 axes but the input (3x4x5) has 3");
    spec_expect_error(NET("3x4x5") "[transpose]\nperm = 0, 1, 3\n", OSP_EFORMAT, 5,
                      "axis 3 does not exist");
    spec_expect_error(NET("3x4x5") "[transpose]\nperm = 0, -1, 2\n", OSP_EFORMAT, 5, "'perm'");
    spec_expect_error(NET("3x4x5") "[transpose]\n", OSP_EFORMAT, 4, "'perm'");
    /* [clip], [hardsigmoid] */
    spec_expect_error(NET("4") "[clip]\nmin = 2\nmax = 1\n", OSP_EFORMAT, 6, "larger than 'max'");
    spec_expect_error(NET("4") "[clip]\nmin = inf\nmax = 5\n", OSP_EFORMAT, 6, "larger than 'max'");
    spec_expect_error(NET("4") "[clip]\nmin = low\n", OSP_EFORMAT, 5, "'min' must be a number");
    spec_expect_error(NET("4") "[hardsigmoid]\nalpha = inf\n", OSP_EFORMAT, 5, "'alpha'");
    spec_expect_error(NET("4") "[hardswish]\nalpha = 1\n", OSP_EFORMAT, 5, "unknown key 'alpha'");
    spec_expect_error(NET("4") "[mul]\ninput = input, input\nscale = 2\n", OSP_EFORMAT, 6,
                      "unknown key 'scale'");
}

/* The graph API: a node with no inputs added directly. */
Test(constant, graph_api_rejects_inputs) {
    osp_shape in = osp_shape_make(1, (int64_t[]){4});
    osp_graph *g;
    cr_assert_eq(osp_graph_new(&in, &g), 0);
    const osp_op *op = osp_op_find("constant");
    cr_assert_not_null(op);
    cr_assert_eq(op->no_inputs, 1);
    cr_assert_eq(osp_op_find("mul")->no_inputs, 0);
    int zero = 0;
    cr_assert_eq(osp_graph_add(g, op, "c", &zero, 1, NULL), OSP_ESHAPE);
    cr_assert(strstr(osp_last_error(), "constant takes no input"), "%s", osp_last_error());
    osp_graph_free(g);
}

/* ---- against PyTorch ---------------------------------------------------------- */

/* Every new layer, in one network that scripts/torchspec.py also builds in
 * PyTorch (Debian's python3-torch). */
static const char golden_spec[] =
    NET("2x5x6")
    "[conv]\nname = c1\nfilters = 4\nsize = 3\npad = 1\n\n"
    "[hardswish]\nname = h\n\n"
    "[globalavgpool]\nname = squeeze\n\n"
    "[fc]\nname = fc\noutputs = 4\n\n"
    "[reshape]\nname = r\nshape = 4x1x1\n\n"
    "[hardsigmoid]\nname = gate\n\n"
    "[mul]\nname = se\ninput = h, gate\n\n"
    "[pad]\nname = p1\npad = 1, 0, 0, 2\nmode = reflect\n\n"
    "[clip]\nname = cl1\nmin = -0.5\nmax = inf\n\n"
    "[transpose]\nname = t\nperm = 2, 0, 1\n\n"
    "[constant]\nname = k\nshape = 6\n\n"
    "[sub]\nname = s\ninput = t, k\n\n"
    "[pad]\nname = p2\npad = 1\nvalue = -inf\n\n"
    "[maxpool]\nname = mp\nsize = 2\n\n"
    "[constant]\nname = k2\nshape = 3x1\n\n"
    "[div]\nname = d\ninput = mp, k2\n\n"
    "[hardsigmoid]\nname = hs\nalpha = 0.2\nbeta = 0.3\n\n"
    "[constant]\nname = k3\nshape = 8x1x1\n\n"
    "[sub]\nname = s2\ninput = k3, d\n\n"
    "[add]\nname = a\ninput = s2, hs\n\n"
    "[fc]\nname = v\noutputs = 4\ninput = squeeze\n\n"
    "[add]\nname = a2\ninput = a, v\n\n"
    "[pad]\nname = p3\npad = 2x1\nmode = edge\n\n"
    "[clip]\nname = cl2\nmin = -2\nmax = 2.5\n\n"
    "[transpose]\nname = t2\nperm = 1, 0, 2\n";

static double rel_err(const float *got, const float *want, int64_t n) {
    double diff = 0, ref = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)got[i] - want[i];
        diff += e * e;
        ref += (double)want[i] * want[i];
    }
    return sqrt(diff) / fmax(sqrt(ref), 1e-30);
}

static const osp_st_tensor *need(const osp_safetensors *st, const char *prefix, const char *name,
                                 int64_t count) {
    char key[256];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    const osp_st_tensor *t = osp_st_find(st, key);
    cr_assert_not_null(t, "golden tensor %s missing", key);
    cr_assert_eq(t->nbytes, (size_t)count * sizeof(float), "golden tensor %s has %zu bytes", key,
                 t->nbytes);
    return t;
}

/* Output, input gradient and every parameter's gradient within 1e-5
 * relative error of PyTorch's, with PyTorch's weights and constants. */
static void check_golden(const osp_safetensors *st, const osp_backend *be) {
    osp_net *net = spec_build(golden_spec);
    osp_graph *g = net->graph;
    cr_assert_eq(osp_graph_set_backend(g, be), 0, "%s", osp_last_error());
    for (int i = 0; i < osp_graph_param_count(g); i++) {
        const osp_param *p = osp_graph_param(g, i);
        memcpy(osp_graph_param_data(g, i), need(st, "param/", p->name, p->numel)->data,
               (size_t)p->numel * sizeof(float));
    }
    const osp_st_tensor *x = osp_st_find(st, "input");
    cr_assert_not_null(x);
    const int batch = (int)x->shape.dim[0];
    osp_node *in = osp_graph_node(g, 0), *out = osp_graph_output(g);
    need(st, "", "input", batch * in->size);
    osp_graph_require_input_grad(g);
    const float *y = run(net, x->data, batch, OSP_MODE_TRAIN);
    double e = rel_err(y, need(st, "", "output", batch * out->size)->data, batch * out->size);
    cr_expect_lt(e, 1e-5, "output: relative error %g", e);
    memcpy(out->dout, need(st, "", "r", batch * out->size)->data, (size_t)(batch * out->size) * sizeof(float));
    osp_exec ex = {.be = be, .mode = OSP_MODE_TRAIN, .batch = batch, .seed = 1};
    cr_assert_eq(osp_graph_backward(g, &ex), 0, "%s", osp_last_error());
    e = rel_err(in->dout, need(st, "grad/", "input", batch * in->size)->data, batch * in->size);
    cr_expect_lt(e, 1e-5, "input gradient: relative error %g", e);
    for (int i = 0; i < osp_graph_param_count(g); i++) {
        const osp_param *p = osp_graph_param(g, i);
        if (p->kind != OSP_PARAM_WEIGHT) continue;
        e = rel_err(osp_graph_param_grad(g, i), need(st, "grad/", p->name, p->numel)->data, p->numel);
        cr_expect_lt(e, 1e-5, "%s gradient: relative error %g", p->name, e);
    }
    osp_net_free(net);
}

/* The reference values come from scripts/torchspec.py, run here (about a
 * second); skipped where python3-torch is not installed. Checked on the
 * backend this machine picks and on the portable reference. */
Test(golden_extra, all_new_layers_against_pytorch) {
    tmpdir_make();
    const char *spec_path = strdup(tmpdir_path("net.cfg"));
    tmpdir_write(spec_path, golden_spec, strlen(golden_spec));
    const char *st_path = strdup(tmpdir_path("golden.safetensors"));
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/scripts/torchspec.py golden %s %s 3",
             OSP_SOURCE_DIR, spec_path, st_path);
    if (system(cmd) != 0) {
        int have_torch = system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0;
        tmpdir_remove();
        if (!have_torch) cr_skip_test("python3-torch is not installed");
        cr_assert_fail("failed: %s", cmd);
    }
    osp_safetensors *st;
    cr_assert_eq(osp_st_load(st_path, &st), 0, "%s", osp_last_error());
    check_golden(st, osp_backend_default());
    check_golden(st, osp_backend_cpu_reference());
    osp_st_free(st);
    free((void *)spec_path);
    free((void *)st_path);
    tmpdir_remove();
}
