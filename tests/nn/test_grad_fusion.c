/* Inference fusion (conv + batch norm + activation, add + activation, see
 * osp_op.fuse) gives the unfused outputs within 1e-5 relative, on every CPU
 * backend; stays correct after the weights change and the graph is planned
 * again; and never touches training. Unfused inference is an inference-mode forward
 * under a training plan, which fuses nothing. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/nn.h"

static const char *SPEC =
    "[net]\ninput = 3x12x11\n"
    "[conv]\nname = c1\nfilters = 8\nsize = 3\npad = 1\nbias = 0\n[batchnorm]\n[relu]\n"
    "[conv]\nname = c2\nfilters = 8\nsize = 3\npad = 1\ngroups = 8\n[batchnorm]\n[relu6]\n"
    "[conv]\nname = c3\nfilters = 16\nsize = 1\n[batchnorm]\n"
    "[conv]\nname = c4\nfilters = 16\nsize = 3\nstride = 2\npad = 1\n[leakyrelu]\nalpha = 0.2\n"
    /* c5's output is also read by the add: nothing may fuse into it */
    "[conv]\nname = c5\nfilters = 16\nsize = 3\npad = 1\n[batchnorm]\nname = bn5\n"
    "[add]\ninput = bn5, c5\n[relu]\n[globalavgpool]\n[fc]\noutputs = 5\n";

static double rel_err(const float *got, const float *want, int64_t n) {
    double diff = 0, ref = 0;
    for (int64_t i = 0; i < n; i++) {
        diff += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        ref += (double)want[i] * want[i];
    }
    return sqrt(diff) / fmax(sqrt(ref), 1e-30);
}

/* Batch-norm statistics and affine parameters far from their defaults. */
static void perturb_params(osp_graph *g, uint64_t seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    for (int i = 0; i < osp_graph_param_count(g); i++) {
        const osp_param *p = osp_graph_param(g, i);
        float *v = osp_graph_param_data(g, i);
        if (!strstr(p->name, "batchnorm") && !strstr(p->name, "bn5")) continue;
        for (int64_t j = 0; j < p->numel; j++) {
            float u = osp_rng_uniform(&r);
            v[j] = strstr(p->name, "running_var") ? 0.2f + 2 * u : 2 * u - 1;
        }
    }
}

static void run(osp_net *net, const osp_backend *be, int batch, osp_mode plan, const float *x,
                float *out) {
    osp_graph *g = net->graph;
    cr_assert_eq(osp_graph_plan(g, batch, plan), 0, "%s", osp_last_error());
    osp_exec ex = {.be = be, .mode = OSP_MODE_INFER, .batch = batch};
    cr_assert_eq(osp_graph_forward(g, x, &ex), 0, "%s", osp_last_error());
    memcpy(out, osp_graph_output(g)->out, (size_t)batch * net->n_classes * sizeof(float));
}

/* check on every CPU backend this machine runs (the reference always). */
static void on_every_backend(void (*check)(const osp_backend *)) {
    static const char *const names[] = {"reference", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        const osp_backend *be = osp_backend_find(names[i]);
        if (be) check(be); /* NULL: this CPU lacks the instructions */
    }
}

static void check_backend(const osp_backend *be) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "fusion", 3, &net), 0, "%s", osp_last_error());
    osp_graph *g = net->graph;
    perturb_params(g, 5);
    enum { B = 3 };
    const int64_t in = osp_shape_numel(&net->input);
    float x[B * 3 * 12 * 11], fused[B * 5], plain[B * 5];
    osp_rng r;
    osp_rng_seed(&r, 9);
    for (int64_t i = 0; i < B * in; i++) x[i] = osp_rng_normal(&r);

    run(net, be, B, OSP_MODE_TRAIN, x, plain);
    run(net, be, B, OSP_MODE_INFER, x, fused);
    double e = rel_err(fused, plain, B * 5);
    cr_expect_lt(e, 1e-5, "%s: fused vs unfused relative error %g", be->name, e);
    /* The chains fused: c1+bn+relu, c2+bn+relu6, c3+bn, c4+leakyrelu, add+relu;
     * not c5. */
    int fused_nodes = 0;
    for (int i = 1; i < osp_graph_node_count(g); i++) fused_nodes += osp_graph_node(g, i)->fused_into != 0;
    cr_expect_eq(fused_nodes, 7, "%s: %d nodes fused", be->name, fused_nodes);
    cr_expect_eq(osp_graph_node(g, osp_graph_find(g, "bn5")->id)->fused_into, 0);

    /* New weights: once the graph is told, the next inference plan (same
     * batch) folds them again. */
    float *w = osp_graph_param_data(g, osp_graph_find_param(g, "c1.weight"));
    w[0] += 0.5f;
    perturb_params(g, 6);
    osp_graph_weights_changed(g);
    run(net, be, B, OSP_MODE_INFER, x, fused);
    run(net, be, B, OSP_MODE_TRAIN, x, plain);
    e = rel_err(fused, plain, B * 5);
    cr_expect_lt(e, 1e-5, "%s: after a weight change, relative error %g", be->name, e);

    /* Batch 1 takes other kernel paths (threads over rows). */
    run(net, be, 1, OSP_MODE_INFER, x, fused);
    run(net, be, 1, OSP_MODE_TRAIN, x, plain);
    e = rel_err(fused, plain, 5);
    cr_expect_lt(e, 1e-5, "%s: batch 1, relative error %g", be->name, e);
    osp_net_free(net);
}

Test(fusion, matches_unfused_on_every_backend) { on_every_backend(check_backend); }

/* A backend's prepared filters (AVX2: Winograd's transform, which a lone
 * 7x7 image takes only with them) give the unprepared outputs, follow the
 * weights after osp_graph_weights_changed, and are never used under a
 * training plan, whose steps change the weights without a new plan. */
static const char *PREP_SPEC = "[net]\ninput = 64x7x7\n"
                               "[conv]\nname = c\nfilters = 64\nsize = 3\npad = 1\n[relu]\n"
                               "[globalavgpool]\n[fc]\noutputs = 5\n";

static void check_prepared(const osp_backend *be) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(PREP_SPEC, strlen(PREP_SPEC), "prepared", 3, &net), 0, "%s",
                 osp_last_error());
    osp_graph *g = net->graph;
    const osp_backend *ref = osp_backend_cpu_reference();
    float x[64 * 7 * 7], got[5], want[5];
    osp_rng r;
    osp_rng_seed(&r, 11);
    for (int i = 0; i < 64 * 7 * 7; i++) x[i] = osp_rng_normal(&r);
    float *w = osp_graph_param_data(g, osp_graph_find_param(g, "c.weight"));
    for (int round = 0; round < 2; round++) {
        run(net, be, 1, OSP_MODE_INFER, x, got);
        run(net, ref, 1, OSP_MODE_TRAIN, x, want);
        double e = rel_err(got, want, 5);
        cr_expect_lt(e, 1e-5, "%s: round %d, relative error %g", be->name, round, e);
        for (int i = 0; i < 64 * 64 * 9; i++) w[i] *= -0.5f; /* then plan again */
        osp_graph_weights_changed(g);
    }
    /* A training plan's inference-mode forward reads the weights as they are. */
    run(net, be, 1, OSP_MODE_TRAIN, x, got);
    for (int i = 0; i < 64 * 64 * 9; i++) w[i] *= 3.0f;
    run(net, be, 1, OSP_MODE_TRAIN, x, got);
    run(net, ref, 1, OSP_MODE_TRAIN, x, want);
    double e = rel_err(got, want, 5);
    cr_expect_lt(e, 1e-5, "%s: training plan, relative error %g", be->name, e);
    osp_net_free(net);
}

Test(fusion, prepared_filters_follow_the_weights) { on_every_backend(check_prepared); }

/* A residual add fuses into the conv that makes one of its inputs when the
 * other exists by then (b: after its batch norm, before the ReLU), and not
 * into the conv that runs first (c, whose partner d runs after it: d takes
 * it instead). */
static const char *RES_SPEC =
    "[net]\ninput = 8x10x9\n"
    "[conv]\nname = a\nfilters = 8\nsize = 3\npad = 1\n[relu]\nname = ra\n"
    "[conv]\nname = b\nfilters = 8\nsize = 3\npad = 1\n[batchnorm]\nname = bnb\n"
    "[add]\nname = add1\ninput = bnb, ra\n[relu]\nname = rb\n"
    "[conv]\nname = c\nfilters = 8\nsize = 1\n"
    "[conv]\nname = d\ninput = rb\nfilters = 8\nsize = 1\n"
    "[add]\nname = add2\ninput = c, d\n[globalavgpool]\n[fc]\noutputs = 5\n";

static void check_residual(const osp_backend *be) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(RES_SPEC, strlen(RES_SPEC), "residual", 3, &net), 0, "%s",
                 osp_last_error());
    osp_graph *g = net->graph;
    perturb_params(g, 7);
    enum { B = 3 };
    float x[B * 8 * 10 * 9], fused[B * 5], plain[B * 5];
    osp_rng r;
    osp_rng_seed(&r, 13);
    for (int i = 0; i < B * 8 * 10 * 9; i++) x[i] = osp_rng_normal(&r);
    for (int batch = B; batch >= 1; batch -= B - 1) {
        run(net, be, batch, OSP_MODE_TRAIN, x, plain);
        run(net, be, batch, OSP_MODE_INFER, x, fused);
        double e = rel_err(fused, plain, batch * 5);
        cr_expect_lt(e, 1e-5, "%s: batch %d, relative error %g", be->name, batch, e);
    }
    const int b = osp_graph_find(g, "b")->id, d = osp_graph_find(g, "d")->id;
    cr_expect_eq(osp_graph_find(g, "add1")->fused_into, b, "%s: add1 not fused into b", be->name);
    cr_expect_eq(osp_graph_find(g, "rb")->fused_into, b, "%s: rb not fused into b", be->name);
    cr_expect_eq(osp_graph_find(g, "add2")->fused_into, d, "%s: add2 not fused into d", be->name);
    cr_expect_eq(osp_graph_find(g, "c")->fused_into, 0);
    osp_net_free(net);
}

Test(fusion, residual_add_into_conv) { on_every_backend(check_residual); }

/* A transformer's MLP: [fc] last_axis takes in the [gelu] after it (exact
 * and tanh), but not one whose input something else reads too; 20 tokens
 * a sample, so that batch 3 has enough rows for the threads' column
 * shares and batch 1 too. */
static const char *FC_SPEC = "[net]\ninput = 20x24\n"
                             "[fc]\nname = up\noutputs = 40\nlast_axis = 1\n[gelu]\n"
                             "[fc]\nname = mid\noutputs = 24\nlast_axis = 1\nbias = 0\n"
                             "[gelu]\napproximate = tanh\n"
                             "[fc]\nname = side\noutputs = 24\nlast_axis = 1\n[gelu]\nname = g3\n"
                             "[add]\ninput = g3, side\n"
                             "[fc]\noutputs = 5\n";

static void check_fc_gelu(const osp_backend *be) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(FC_SPEC, strlen(FC_SPEC), "fc_gelu", 5, &net), 0, "%s",
                 osp_last_error());
    osp_graph *g = net->graph;
    enum { B = 3 };
    float x[B * 20 * 24], fused[B * 5], plain[B * 5];
    osp_rng r;
    osp_rng_seed(&r, 11);
    for (int i = 0; i < B * 20 * 24; i++) x[i] = 2 * osp_rng_normal(&r);
    for (int batch = 1; batch <= B; batch += B - 1) {
        run(net, be, batch, OSP_MODE_TRAIN, x, plain);
        run(net, be, batch, OSP_MODE_INFER, x, fused);
        const double e = rel_err(fused, plain, batch * 5);
        cr_expect_lt(e, 1e-5, "%s batch %d: fused vs unfused relative error %g", be->name, batch,
                     e);
    }
    int fused_nodes = 0;
    for (int i = 1; i < osp_graph_node_count(g); i++)
        fused_nodes += osp_graph_node(g, i)->fused_into != 0;
    cr_expect_eq(fused_nodes, 2, "%s: %d nodes fused", be->name, fused_nodes);
    cr_expect_eq(osp_graph_node(g, osp_graph_find(g, "g3")->id)->fused_into, 0);
    osp_net_free(net);
}

Test(fusion, gelu_into_fc) { on_every_backend(check_fc_gelu); }
