/* The layers of vision transformers: [matmul], [fc] with last_axis,
 * [layernorm], [gelu], [erf] and [softmax] along an axis; and the plain
 * element-wise functions beside them ([exp], [log], [sqrt], [abs], [neg],
 * [reciprocal], [softplus], [softsign]). Gradients against
 * finite differences (also on the portable reference kernels), bad specs
 * refused with file:line, and a transformer encoder block against PyTorch
 * (scripts/torchspec.py builds the same network): output, input gradient
 * and every parameter's gradient. */
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

static const gradcheck_opts opts = {.max_checks = 96};

/* ---- gradients ------------------------------------------------------------ */

Test(grad_transformer, gelu_and_erf) {
    const gradcheck_opts wide = {.max_checks = 96, .input_scale = 3};
    expect_grad(NET("3x4x5") "[gelu]\n", &wide);
    expect_grad(NET("3x4x5") "[gelu]\napproximate = tanh\n", &wide);
    expect_grad(NET("17") "[erf]\n", &wide);
    expect_grad(NET("17") "[gelu]\napproximate = none\n\n[erf]\n", &wide);
}

/* log, sqrt and reciprocal read exp's output: positive, away from 0. */
Test(grad_transformer, plain_functions) {
    const gradcheck_opts wide = {.max_checks = 96, .input_scale = 3};
    expect_grad(NET("3x4x5") "[exp]\n", &opts);
    expect_grad(NET("3x4x5") "[exp]\n\n[log]\n", &wide);
    expect_grad(NET("3x4x5") "[exp]\n\n[sqrt]\n", &opts);
    expect_grad(NET("3x4x5") "[exp]\n\n[reciprocal]\n", &opts);
    expect_grad(NET("17") "[abs]\n\n[neg]\n", &wide);
    expect_grad(NET("17") "[softplus]\n\n[softsign]\n", &wide);
    expect_grad(NET("3x4x5") "[softmax]\nlog = 1\n", &wide);
    expect_grad(NET("3x4x5") "[softmax]\naxis = 1\nlog = 1\n", &wide);
}

Test(grad_transformer, layernorm) {
    expect_grad(NET("5x8") "[layernorm]\n", &opts);
    expect_grad(NET("5x8") "[layernorm]\naxis = -2\neps = 1e-3\n", &opts);
    expect_grad(NET("2x3x4") "[layernorm]\naxis = 1\n", &opts);
    expect_grad(NET("2x3x4") "[layernorm]\naffine = 0\n", &opts);
    expect_grad(NET("7") "[layernorm]\naxis = 0\n\n[tanh]\n", &opts);
}

Test(grad_transformer, softmax_axis) {
    expect_grad(NET("3x4x5") "[softmax]\naxis = -1\n", &opts);
    expect_grad(NET("3x4x5") "[softmax]\naxis = 1\n", &opts);
    expect_grad(NET("3x4x5") "[softmax]\naxis = 0\n", &opts);
    expect_grad(NET("6") "[softmax]\naxis = 0\n", &opts);
}

Test(grad_transformer, fc_last_axis) {
    expect_grad(NET("5x8") "[fc]\noutputs = 3\nlast_axis = 1\n", &opts);
    expect_grad(NET("2x3x4") "[fc]\noutputs = 6\nlast_axis = 1\nbias = 0\n", &opts);
}

Test(grad_transformer, matmul) {
    /* x x^T per sample: both operands are one node */
    expect_grad(NET("4x6") "[transpose]\nname = t\nperm = 1, 0\n\n"
                           "[matmul]\ninput = input, t\n", &opts);
    /* per head, Q x K^T: leading axes of the same size */
    expect_grad(NET("2x3x4") "[transpose]\nname = t\nperm = 0, 2, 1\n\n"
                             "[tanh]\nname = th\n\n"
                             "[matmul]\ninput = input, th\n", &opts);
    /* a rank-2 operand broadcast over the heads (its gradient is a sum) */
    expect_grad(NET("2x3x4") "[reshape]\nname = m\nshape = 4x6\n\n"
                             "[sigmoid]\nname = s\n\n"
                             "[matmul]\ninput = input, s\n", &opts);
    expect_grad(NET("2x3x4") "[reshape]\nname = m\nshape = 6x4\n\n"
                             "[sigmoid]\nname = s\n\n"
                             "[transpose]\nname = t\nperm = 0, 2, 1\ninput = input\n\n"
                             "[matmul]\ninput = s, t\n", &opts);
    /* mixed broadcasting, 2x1 against 1x3 leading axes: one product at a time */
    expect_grad(NET("2x3x4") "[reshape]\nname = a\nshape = 2x1x3x4\n\n"
                             "[reshape]\nname = b\nshape = 1x3x4x2\ninput = input\n\n"
                             "[tanh]\nname = t\n\n"
                             "[matmul]\ninput = a, t\n", &opts);
}

Test(grad_transformer, attention) {
    /* 4 queries, 6 keys of 4 features, values of 3 */
    expect_grad(NET("2x6x4") "[transpose]\nname = t\nperm = 0, 2, 1\n\n"
                             "[fc]\nname = q\noutputs = 4\nlast_axis = 1\n\n"
                             "[fc]\nname = v\noutputs = 3\nlast_axis = 1\ninput = input\n\n"
                             "[attention]\ninput = q, input, v\n", &opts);
    expect_grad(NET("2x6x4") "[transpose]\nname = t\nperm = 0, 2, 1\n\n"
                             "[fc]\nname = q\noutputs = 4\nlast_axis = 1\n\n"
                             "[fc]\nname = v\noutputs = 3\nlast_axis = 1\ninput = input\n\n"
                             "[attention]\ninput = q, t, v\ntransposed_k = 1\nscale = 0.7\n",
                &opts);
    /* self-attention of one node: Q, K and V share a gradient */
    expect_grad(NET("3x5x4") "[attention]\ninput = input, input, input\n", &opts);
    /* more than one block of queries and of keys (64 each): the online
     * softmax rescales earlier blocks */
    expect_grad(NET("1x150x3") "[tanh]\nname = k\n\n"
                               "[attention]\ninput = input, k, input\nscale = 2\n",
                &(gradcheck_opts){.batch = 2, .max_checks = 64});
}

/* The same on the portable reference kernels. */
Test(grad_reference, transformer_layers) {
    setenv("OSP_BACKEND", "reference", 1);
    expect_grad(NET("5x8") "[layernorm]\n\n[gelu]\n\n[fc]\noutputs = 4\nlast_axis = 1\n\n"
                           "[softmax]\naxis = 0\n", &opts);
    expect_grad(NET("2x3x4") "[transpose]\nname = t\nperm = 0, 2, 1\n\n"
                             "[matmul]\ninput = input, t\n\n[erf]\n", &opts);
    expect_grad(NET("1x70x3") "[tanh]\nname = k\n\n"
                              "[attention]\ninput = input, k, input\n", &opts);
}

/* ---- shapes and errors --------------------------------------------------- */

Test(transformer_spec, shapes) {
    spec_expect_shape(NET("5x8") "[fc]\noutputs = 3\nlast_axis = 1\n", "5x3");
    spec_expect_shape(NET("5x8") "[fc]\noutputs = 3\n", "3");
    spec_expect_shape(NET("5x8") "[layernorm]\naxis = -2\n", "5x8");
    spec_expect_shape(NET("2x3x4") "[transpose]\nname = t\nperm = 0, 2, 1\n\n"
                                   "[matmul]\ninput = input, t\n", "2x3x3");
    spec_expect_shape(NET("2x3x4") "[reshape]\nname = r\nshape = 1x4x6\n\n[transpose]\n"
                                   "perm = 1, 0, 2\nname = u\ninput = input\n\n"
                                   "[matmul]\ninput = u, r\n", "3x2x6");
}

Test(transformer_spec, errors) {
    spec_expect_error(NET("4x6") "[matmul]\ninput = input, input\n", OSP_ESHAPE, 4,
                      "6 columns against 4 rows");
    spec_expect_error(NET("6") "[matmul]\ninput = input, input\n", OSP_ESHAPE, 4,
                      "two axes or more");
    spec_expect_error(NET("4x6") "[matmul]\n", OSP_ESHAPE, 4, "two inputs");
    spec_expect_error(NET("2x3x3") "[reshape]\nname = r\nshape = 3x3x2\n\n"
                                   "[matmul]\ninput = input, r\n", OSP_ESHAPE, 8,
                      "do not broadcast");
    spec_expect_error(NET("4x6") "[layernorm]\naxis = 2\n", OSP_ESHAPE, 4, "axis 2 does not exist");
    spec_expect_error(NET("4x6") "[layernorm]\naxis = -3\n", OSP_ESHAPE, 4, "axis -3");
    spec_expect_error(NET("4x6") "[layernorm]\neps = 0\n", OSP_EFORMAT, 5, "'eps'");
    spec_expect_error(NET("4x6") "[layernorm]\naffine = 2\n", OSP_EFORMAT, 5, "'affine'");
    spec_expect_error(NET("4x6") "[softmax]\naxis = 2\n", OSP_ESHAPE, 4, "axis 2 does not exist");
    spec_expect_error(NET("4x6") "[softmax]\naxis = x\n", OSP_EFORMAT, 5, "'axis'");
    spec_expect_error(NET("4x6") "[gelu]\napproximate = erf\n", OSP_EFORMAT, 5,
                      "must be one of none, tanh");
    spec_expect_error(NET("4x6") "[fc]\noutputs = 2\nlast_axis = yes\n", OSP_EFORMAT, 6,
                      "'last_axis'");
    spec_expect_error(NET("4x6") "[erf]\ninput = input, input\n", OSP_ESHAPE, 4, "one input");
    spec_expect_error(NET("4x6") "[softplus]\ninput = input, input\n", OSP_ESHAPE, 4,
                      "one input");
    spec_expect_error(NET("4x6") "[attention]\ninput = input, input\n", OSP_ESHAPE, 4,
                      "three inputs (Q, K, V)");
    spec_expect_error(NET("4x6") "[attention]\ninput = input, input, input\ntransposed_k = 1\n",
                      OSP_ESHAPE, 4, "do not fit");
    spec_expect_error(NET("2x4x6") "[reshape]\nname = r\nshape = 4x2x6\n\n"
                                   "[attention]\ninput = input, r, input\n", OSP_ESHAPE, 8,
                      "leading axes");
    spec_expect_error(NET("4x6") "[attention]\ninput = input, input, input\nscale = 0\n",
                      OSP_EFORMAT, 6, "'scale' must not be 0");
}

/* ---- against PyTorch ------------------------------------------------------ */

/* A pre-norm transformer encoder block on 5 tokens of 8 features, two
 * heads, then the rest of the layers' keys: tanh GELU, erf, a layer norm
 * over two axes, scores broadcast against a rank-2 operand, fused
 * attention (K given transposed, and not), a softmax along a middle
 * axis. */
static const char golden_spec[] =
    NET("5x8")
    "[layernorm]\nname = ln1\n\n"
    "[fc]\nname = q\noutputs = 8\nlast_axis = 1\n\n"
    "[fc]\nname = k\noutputs = 8\nlast_axis = 1\ninput = ln1\n\n"
    "[fc]\nname = v\noutputs = 8\nlast_axis = 1\ninput = ln1\nbias = 0\n\n"
    "[reshape]\nname = qh\nshape = 5x2x4\ninput = q\n\n"
    "[transpose]\nname = qt\nperm = 1, 0, 2\n\n"
    "[reshape]\nname = kh\nshape = 5x2x4\ninput = k\n\n"
    "[transpose]\nname = kt\nperm = 1, 2, 0\n\n"
    "[reshape]\nname = vh\nshape = 5x2x4\ninput = v\n\n"
    "[transpose]\nname = vt\nperm = 1, 0, 2\n\n"
    "[matmul]\nname = scores\ninput = qt, kt\n\n"
    "[softmax]\nname = attn\naxis = -1\n\n"
    "[matmul]\nname = ctx\ninput = attn, vt\n\n"
    "[transpose]\nname = ctxt\nperm = 1, 0, 2\n\n"
    "[reshape]\nname = merged\nshape = 5x8\n\n"
    "[fc]\nname = proj\noutputs = 8\nlast_axis = 1\n\n"
    "[add]\nname = res1\ninput = input, proj\n\n"
    "[layernorm]\nname = ln2\n\n"
    "[fc]\nname = ff1\noutputs = 16\nlast_axis = 1\n\n"
    "[gelu]\nname = act\n\n"
    "[fc]\nname = ff2\noutputs = 8\nlast_axis = 1\n\n"
    "[add]\nname = res2\ninput = res1, ff2\n\n"
    "[gelu]\nname = act2\napproximate = tanh\n\n"
    "[erf]\nname = e\n\n"
    "[layernorm]\nname = ln3\naxis = 0\neps = 1e-3\n\n"
    "[matmul]\nname = mixed\ninput = attn, ln3\n\n"
    "[attention]\nname = fused\ninput = qt, kt, mixed\ntransposed_k = 1\nscale = 0.9\n\n"
    "[attention]\nname = fused2\ninput = fused, fused, vt\n\n"
    "[softmax]\nname = out\naxis = 1\ninput = fused2\n";

/* The plain functions and log-softmax (along an axis, and over the whole
 * sample), after a linear layer so that a parameter gradient flows through
 * each; log, sqrt and reciprocal read exp's positive output. */
static const char plain_spec[] =
    NET("4x6")
    "[fc]\nname = lin\noutputs = 6\nlast_axis = 1\n\n"
    "[softplus]\nname = sp\n\n"
    "[softsign]\nname = ss\ninput = lin\n\n"
    "[abs]\nname = ab\ninput = lin\n\n"
    "[neg]\nname = ng\ninput = lin\n\n"
    "[exp]\nname = ex\ninput = lin\n\n"
    "[log]\nname = lg\ninput = ex\n\n"
    "[sqrt]\nname = sq\ninput = ex\n\n"
    "[reciprocal]\nname = rc\ninput = ex\n\n"
    "[softmax]\nname = ls\ninput = lin\naxis = -1\nlog = 1\n\n"
    "[softmax]\nname = lw\ninput = lin\nlog = 1\n\n"
    "[concat]\nname = out\ninput = sp, ss, ab, ng, lg, sq, rc, ls, lw\naxis = 0\n";

/* Multi-head attention over 130 tokens: three blocks of 64 queries and of
 * keys in the fused kernel. The keys have no bias: its gradient is 0 in
 * exact arithmetic (it shifts each row of scores by a constant), so both
 * sides would compare rounding noise. */
static const char long_spec[] =
    NET("130x8")
    "[fc]\nname = q\noutputs = 8\nlast_axis = 1\n\n"
    "[fc]\nname = k\noutputs = 8\nlast_axis = 1\ninput = input\nbias = 0\n\n"
    "[fc]\nname = v\noutputs = 6\nlast_axis = 1\ninput = input\n\n"
    "[reshape]\nname = qh\nshape = 130x2x4\ninput = q\n\n"
    "[transpose]\nname = qt\nperm = 1, 0, 2\n\n"
    "[reshape]\nname = kh\nshape = 130x2x4\ninput = k\n\n"
    "[transpose]\nname = kt\nperm = 1, 0, 2\n\n"
    "[reshape]\nname = vh\nshape = 130x2x3\ninput = v\n\n"
    "[transpose]\nname = vt\nperm = 1, 0, 2\n\n"
    "[attention]\nname = att\ninput = qt, kt, vt\nscale = 1.5\n\n"
    "[transpose]\nname = merged\nperm = 1, 0, 2\n";

/* The largest difference over the largest reference value, or over floor
 * where that is larger (a gradient that is zero in exact arithmetic, such as
 * that of the keys' bias, which shifts each row of scores by a constant). */
static double max_err(const float *got, const float *want, int64_t n, double floor) {
    double diff = 0, ref = floor;
    for (int64_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)got[i] - want[i]));
        ref = fmax(ref, fabs((double)want[i]));
    }
    return diff / fmax(ref, 1e-30);
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

/* Output, input gradient and every parameter's gradient within 1e-5 of the
 * largest value of PyTorch's (of 0.1 at least for a parameter's), with
 * PyTorch's weights. */
static void check_golden(const char *spec, const osp_safetensors *st, const osp_backend *be) {
    osp_net *net = spec_build(spec);
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
    cr_assert_eq(osp_graph_plan(g, batch, OSP_MODE_TRAIN), 0, "%s", osp_last_error());
    osp_exec ex = {.be = be, .mode = OSP_MODE_TRAIN, .batch = batch, .seed = 1};
    cr_assert_eq(osp_graph_forward(g, x->data, &ex), 0, "%s", osp_last_error());
    double e = max_err(out->out, need(st, "", "output", batch * out->size)->data, batch * out->size, 0);
    fprintf(stderr, "%s vs PyTorch (%s): output %.2g",
            spec == golden_spec ? "block" : spec == plain_spec ? "plain functions" : "attention",
            ex.be->name, e);
    cr_expect_lt(e, 1e-5, "output: error %g", e);
    memcpy(out->dout, need(st, "", "r", batch * out->size)->data,
           (size_t)(batch * out->size) * sizeof(float));
    cr_assert_eq(osp_graph_backward(g, &ex), 0, "%s", osp_last_error());
    e = max_err(in->dout, need(st, "grad/", "input", batch * in->size)->data, batch * in->size, 0);
    fprintf(stderr, ", input gradient %.2g", e);
    cr_expect_lt(e, 1e-5, "input gradient: error %g", e);
    double worst = 0;
    for (int i = 0; i < osp_graph_param_count(g); i++) {
        const osp_param *p = osp_graph_param(g, i);
        e = max_err(osp_graph_param_grad(g, i), need(st, "grad/", p->name, p->numel)->data,
                    p->numel, 0.1);
        worst = fmax(worst, e);
        cr_expect_lt(e, 1e-5, "%s gradient: error %g", p->name, e);
    }
    fprintf(stderr, ", parameter gradients %.2g\n", worst);
    osp_net_free(net);
}

/* The reference values come from scripts/torchspec.py, run here (about a
 * second); skipped where python3-torch is not installed. Checked on the
 * backend this machine picks and on the portable reference. */
static void against_pytorch(const char *spec) {
    tmpdir_make();
    const char *spec_path = strdup(tmpdir_path("net.cfg"));
    tmpdir_write(spec_path, spec, strlen(spec));
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
    check_golden(spec, st, osp_backend_default());
    check_golden(spec, st, osp_backend_cpu_reference());
    osp_st_free(st);
    free((void *)spec_path);
    free((void *)st_path);
    tmpdir_remove();
}

Test(golden_transformer, encoder_block_against_pytorch) { against_pytorch(golden_spec); }

Test(golden_transformer, long_attention_against_pytorch) { against_pytorch(long_spec); }

Test(golden_transformer, plain_functions_against_pytorch) { against_pytorch(plain_spec); }
