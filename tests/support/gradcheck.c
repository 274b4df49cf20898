/* Finite-difference gradient checks. The loss is L = sum(out * R), so the
 * output's gradient is R; every other gradient comes from backward and is
 * compared with (L(v + eps) - L(v - eps)) / 2eps, summed in double. */
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "osprey/nn.h"

static double loss_of(osp_graph *g, const float *x, const float *r, const osp_exec *ex) {
    if (osp_graph_forward(g, x, ex)) return NAN;
    const osp_node *out = osp_graph_output(g);
    double l = 0;
    for (int64_t i = 0; i < out->size * ex->batch; i++) l += (double)out->out[i] * r[i];
    return l;
}

/* Checks d L / d v[i] for a sample of i; analytic holds the backward's values. */
static int check_tensor(const char *what, float *v, const float *analytic, int64_t count,
                        osp_graph *g, const float *x, const float *r, const osp_exec *ex,
                        const gradcheck_opts *o, osp_rng *rng) {
    int bad = 0;
    int64_t checks = count < o->max_checks ? count : o->max_checks;
    for (int64_t c = 0; c < checks; c++) {
        int64_t i = count <= o->max_checks ? c : (int64_t)osp_rng_below(rng, (uint64_t)count);
        float saved = v[i];
        v[i] = saved + o->eps;
        double lp = loss_of(g, x, r, ex);
        v[i] = saved - o->eps;
        double lm = loss_of(g, x, r, ex);
        v[i] = saved;
        double numeric = (lp - lm) / (2.0 * o->eps);
        double a = analytic[i];
        double tol = o->atol + o->rtol * fmax(fabs(a), fabs(numeric));
        if (!(fabs(a - numeric) <= tol)) {
            if (bad < 5)
                fprintf(stderr, "gradcheck: %s[%lld]: analytic %.6g, numeric %.6g\n", what,
                        (long long)i, a, numeric);
            bad++;
        }
    }
    return bad;
}

static gradcheck_opts with_defaults(const gradcheck_opts *opts) {
    gradcheck_opts o = {2, 1e-2f, 2e-2, 2e-3, 64, 1, 1.0f, NULL};
    if (opts) {
        if (opts->batch) o.batch = opts->batch;
        if (opts->eps) o.eps = opts->eps;
        if (opts->rtol) o.rtol = opts->rtol;
        if (opts->atol) o.atol = opts->atol;
        if (opts->max_checks) o.max_checks = opts->max_checks;
        if (opts->seed) o.seed = opts->seed;
        if (opts->input_scale) o.input_scale = opts->input_scale;
        o.hooks = opts->hooks;
    }
    return o;
}

int gradcheck_spec(const char *spec_text, const gradcheck_opts *opts) {
    gradcheck_opts o = with_defaults(opts);
    osp_net *net;
    if (osp_net_from_spec(spec_text, strlen(spec_text), "gradcheck", o.seed, &net)) {
        fprintf(stderr, "gradcheck: spec did not build: %s\n", osp_last_error());
        return -1;
    }
    int bad = gradcheck_net(net, &o);
    osp_net_free(net);
    return bad;
}

int gradcheck_net(osp_net *net, const gradcheck_opts *opts) {
    gradcheck_opts o = with_defaults(opts);
    osp_graph *g = net->graph;
    osp_graph_require_input_grad(g);
    if (osp_graph_plan(g, o.batch, OSP_MODE_TRAIN)) {
        fprintf(stderr, "gradcheck: plan failed: %s\n", osp_last_error());
        return -1;
    }
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = o.batch,
                   .seed = o.seed, .step = 0, .hooks = o.hooks};
    osp_node *in = osp_graph_node(g, 0), *out = osp_graph_output(g);
    int64_t nx = in->size * o.batch, nr = out->size * o.batch;
    float *x = osp_alloc((size_t)nx * sizeof(float));
    float *r = osp_alloc((size_t)nr * sizeof(float));
    float *dx = osp_alloc((size_t)nx * sizeof(float));
    int64_t nw;
    float *w = osp_graph_weights(g, &nw);
    float *dw = osp_alloc((size_t)(nw ? nw : 1) * sizeof(float));
    osp_rng rng;
    osp_rng_seed(&rng, o.seed * 7919);
    for (int64_t i = 0; i < nx; i++) x[i] = (2 * osp_rng_uniform(&rng) - 1) * o.input_scale;
    for (int64_t i = 0; i < nr; i++) r[i] = 2 * osp_rng_uniform(&rng) - 1;

    int bad = 0;
    if (osp_graph_forward(g, x, &ex)) bad = -1;
    if (bad == 0) {
        memcpy(out->dout, r, (size_t)nr * sizeof(float));
        if (osp_graph_backward(g, &ex)) bad = -1;
    }
    if (bad == 0) {
        memcpy(dx, in->dout, (size_t)nx * sizeof(float));
        memcpy(dw, osp_graph_grads(g, NULL), (size_t)nw * sizeof(float));
        bad += check_tensor("input", x, dx, nx, g, x, r, &ex, &o, &rng);
        for (int p = 0; p < osp_graph_param_count(g); p++) {
            const osp_param *prm = osp_graph_param(g, p);
            if (prm->kind != OSP_PARAM_WEIGHT) continue;
            bad += check_tensor(prm->name, w + prm->offset, dw + prm->offset, prm->numel, g, x, r,
                                &ex, &o, &rng);
        }
    } else {
        fprintf(stderr, "gradcheck: run failed: %s\n", osp_last_error());
    }
    osp_free(x);
    osp_free(r);
    osp_free(dx);
    osp_free(dw);
    return bad;
}
