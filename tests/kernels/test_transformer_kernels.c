/* The transformers' kernels: the vectorisable exp, erf and GELUs
 * (src/kernels/vmath.h) against libm in double precision over dense ranges,
 * at the error bounds vmath.h states; the backends' GELU, erf, fused fully
 * connected, attention and layer norm kernels against the reference
 * backend, and the reference's erf, attention and layer norm against
 * direct formulas in double. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/vmath.h"
#include "osprey/kernels.h"

static const char *const variants[] = {"reference", "avx2", "avx512"};

/* Every float step of 2^-12 from lo to hi. */
#define FOR_RANGE(x, lo, hi) for (float x = (lo); x <= (hi); x += 1.0f / 4096)

Test(vmath, exp_relative_error) {
    double worst = 0;
    FOR_RANGE(x, -87.0f, 88.0f) {
        const double want = exp((double)x), e = fabs(osp__vexp(x) - want) / want;
        if (e > worst) worst = e;
    }
    cr_assert(worst < 2e-7, "exp: relative error %.3g", worst);
    cr_assert_eq(osp__vexp(-1000.0f), (float)exp(-87.0), "clamped below");
    cr_assert(isnan(osp__vexp(NAN)));
}

Test(vmath, erf_absolute_error) {
    double worst = 0;
    FOR_RANGE(x, -8.0f, 8.0f) {
        const double e = fabs(osp__verf(x) - erf((double)x));
        if (e > worst) worst = e;
    }
    cr_assert(worst < 2e-7, "erf: absolute error %.3g", worst);
    cr_assert_eq(osp__verf(0.0f), 0.0f);
    cr_assert_eq(osp__verf(100.0f), 1.0f);
    cr_assert_eq(osp__verf(-100.0f), -1.0f);
}

/* GELU's output grows as x: its error is relative to 1 + |x|. */
Test(vmath, gelu_error) {
    double worst = 0, worst_tanh = 0;
    FOR_RANGE(x, -12.0f, 12.0f) {
        const double g = 0.5 * x * (1 + erf(x / sqrt(2.0)));
        const double u = sqrt(2 / M_PI) * (x + 0.044715 * x * x * x);
        const double gt = 0.5 * x * (1 + tanh(u));
        const double e = fabs(osp__vgelu(x) - g) / (1 + fabs(x));
        const double et = fabs(osp__vgelu_tanh(x) - gt) / (1 + fabs(x));
        if (e > worst) worst = e;
        if (et > worst_tanh) worst_tanh = et;
    }
    cr_assert(worst < 2e-7, "gelu: error %.3g", worst);
    cr_assert(worst_tanh < 2e-7, "gelu tanh: error %.3g", worst_tanh);
}

static float *filled(size_t n, uint64_t seed, float scale) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    float *v = malloc(n * sizeof(float));
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++) v[i] = scale * (2 * osp_rng_uniform(&r) - 1);
    return v;
}

static void close_all(const char *be, const char *what, const float *got, const float *want,
                      size_t n, float tol) {
    for (size_t i = 0; i < n; i++)
        cr_assert(fabsf(got[i] - want[i]) <= tol * (1 + fabsf(want[i])),
                  "%s %s[%zu] = %.8g, want %.8g", be, what, i, got[i], want[i]);
}

/* Each backend's GELU, tanh GELU and erf, forward and backward, on the
 * same values as the reference (1e-6 relative: they differ only in fused
 * multiply-adds), and the reference's against libm. */
Test(transformer_kernels, special_slots_match) {
    enum { COUNT = 40000 }; /* past PARALLEL_MIN: the threaded loop too */
    float *x = filled(COUNT, 1, 7.0f), *dy = filled(COUNT, 2, 1.0f);
    float *a = malloc(COUNT * sizeof(float)), *b = malloc(COUNT * sizeof(float));
    float *da = calloc(COUNT, sizeof(float)), *db = calloc(COUNT, sizeof(float));
    const osp_backend *ref = osp_backend_cpu_reference();
    ref->special_forward(OSP_FN_ERF, COUNT, x, a);
    for (int i = 0; i < COUNT; i++)
        cr_assert(fabs(a[i] - erf((double)x[i])) < 2e-7, "reference erf(%.8g) = %.8g", x[i], a[i]);
    memset(da, 0, COUNT * sizeof(float));
    ref->special_backward(OSP_FN_ERF, COUNT, x, dy, da);
    for (int i = 0; i < COUNT; i++) {
        const double want = dy[i] * 2 / sqrt(M_PI) * exp(-(double)x[i] * x[i]);
        cr_assert(fabs(da[i] - want) <= 1e-6 * (1 + fabs(want)), "reference erf' at %.8g", x[i]);
    }
    static const osp_special fns[] = {OSP_FN_GELU, OSP_FN_GELU_TANH, OSP_FN_ERF};
    for (size_t v = 1; v < 3; v++) {
        const osp_backend *be = osp_backend_find(variants[v]);
        if (!be) continue;
        for (size_t f = 0; f < 3; f++) {
            ref->special_forward(fns[f], COUNT, x, a);
            be->special_forward(fns[f], COUNT, x, b);
            close_all(be->name, "special y", b, a, COUNT, 1e-6f);
            memset(da, 0, COUNT * sizeof(float));
            memset(db, 0, COUNT * sizeof(float));
            ref->special_backward(fns[f], COUNT, x, dy, da);
            be->special_backward(fns[f], COUNT, x, dy, db);
            close_all(be->name, "special dx", db, da, COUNT, 1e-6f);
        }
    }
    free(x), free(dy), free(a), free(b), free(da), free(db);
}

/* fc_forward_fused on every backend against the reference's fc_forward
 * then special_forward: without and with bias, no function, GELU and tanh
 * GELU; a few rows (the small path) and many (the threads' column shares,
 * with a width that is not a multiple of 16). */
Test(transformer_kernels, fc_forward_fused_matches_unfused) {
    static const int shapes[][3] = {{3, 19, 45}, {37, 19, 45}, {197, 64, 150}};
    static const int fns[] = {-1, OSP_FN_GELU, OSP_FN_GELU_TANH};
    const osp_backend *ref = osp_backend_cpu_reference();
    for (size_t s = 0; s < 3; s++) {
        const int n = shapes[s][0], in = shapes[s][1], out = shapes[s][2];
        float *x = filled((size_t)n * in, 3, 1.0f), *w = filled((size_t)out * in, 4, 0.5f);
        float *bias = filled((size_t)out, 5, 1.0f);
        float *want = malloc((size_t)n * out * sizeof(float));
        float *got = malloc((size_t)n * out * sizeof(float));
        for (size_t v = 0; v < 3; v++) {
            const osp_backend *be = osp_backend_find(variants[v]);
            if (!be) continue;
            for (int with_bias = 0; with_bias < 2; with_bias++)
                for (size_t f = 0; f < 3; f++) {
                    const float *b = with_bias ? bias : NULL;
                    ref->fc_forward(n, in, out, x, w, b, want);
                    if (fns[f] >= 0)
                        ref->special_forward((osp_special)fns[f], (int64_t)n * out, want, want);
                    memset(got, 0xff, (size_t)n * out * sizeof(float)); /* NaNs */
                    be->fc_forward_fused(n, in, out, x, w, b, fns[f], got);
                    close_all(be->name, "fc fused y", got, want, (size_t)n * out, 1e-5f);
                }
        }
        free(x), free(w), free(bias), free(want), free(got);
    }
}

/* Attention workspaces, kept until free_workspaces(). */
static void *workspaces[64];
static int n_workspaces;

static void *malloc_ws(const osp_backend *be, const osp_attention_desc *d) {
    cr_assert_lt(n_workspaces, 64);
    void *w = malloc(be->attention_workspace(d));
    cr_assert_not_null(w);
    return workspaces[n_workspaces++] = w;
}

static void free_workspaces(void) {
    while (n_workspaces) free(workspaces[--n_workspaces]);
}

/* softmax(scale q k^T) v of one attention, in double. */
static void naive_attention(const osp_attention_desc *d, const float *q, const float *k,
                            const float *v, int64_t c, double *o) {
    double *p = malloc((size_t)d->tk * sizeof(double));
    cr_assert_not_null(p);
    for (int i = 0; i < d->tq; i++) {
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < d->tk; j++) {
            double s = 0;
            for (int e = 0; e < d->d; e++) {
                const double kv = d->k_trans ? k[(c * d->d + e) * d->tk + j]
                                             : k[(c * d->tk + j) * d->d + e];
                s += (double)q[(c * d->tq + i) * d->d + e] * kv;
            }
            p[j] = s * d->scale;
            if (p[j] > mx) mx = p[j];
        }
        for (int j = 0; j < d->tk; j++) sum += p[j] = exp(p[j] - mx);
        for (int e = 0; e < d->dv; e++) {
            double acc = 0;
            for (int j = 0; j < d->tk; j++) acc += p[j] * v[(c * d->tk + j) * d->dv + e];
            o[(int64_t)i * d->dv + e] = acc / sum;
        }
    }
    free(p);
}

/* Attention on every backend, forward and backward, against the
 * reference (1e-5); the reference's forward against the direct formula.
 * Token counts below, at and past a key block (256), both key layouts. */
Test(transformer_kernels, attention_matches) {
    static const int shapes[][4] = {/* count, tq, tk, d */
                                    {3, 5, 7, 8}, {2, 70, 197, 16}, {1, 20, 300, 12}};
    const osp_backend *ref = osp_backend_cpu_reference();
    for (size_t s = 0; s < 3; s++)
        for (int kt = 0; kt < 2; kt++) {
            osp_attention_desc d = {.count = shapes[s][0], .tq = shapes[s][1],
                                    .tk = shapes[s][2], .d = shapes[s][3], .dv = shapes[s][3] + 3,
                                    .scale = 1.0f / sqrtf((float)shapes[s][3]), .k_trans = kt};
            const size_t nq = (size_t)d.count * d.tq * d.d, nk = (size_t)d.count * d.tk * d.d;
            const size_t nv = (size_t)d.count * d.tk * d.dv, no = (size_t)d.count * d.tq * d.dv;
            float *q = filled(nq, 10 + s, 2.0f), *k = filled(nk, 20 + s, 2.0f);
            float *v = filled(nv, 30 + s, 1.0f), *dout = filled(no, 40 + s, 1.0f);
            float *o[2], *lse[2], *dq[2], *dk[2], *dv[2];
            double *want = malloc((size_t)d.tq * d.dv * sizeof(double));
            ref->attention_forward(&d, q, k, v, o[0] = malloc(no * sizeof(float)),
                                   lse[0] = malloc((size_t)d.count * d.tq * sizeof(float)),
                                   malloc_ws(ref, &d));
            for (int64_t c = 0; c < d.count; c++) {
                naive_attention(&d, q, k, v, c, want);
                for (int64_t i = 0; i < (int64_t)d.tq * d.dv; i++)
                    cr_assert(fabs(o[0][c * d.tq * d.dv + i] - want[i]) < 1e-5,
                              "reference attention %zu: o = %.8g, want %.8g", s,
                              o[0][c * d.tq * d.dv + i], want[i]);
            }
            ref->attention_backward(&d, q, k, v, o[0], dout, lse[0],
                                    dq[0] = calloc(nq, sizeof(float)),
                                    dk[0] = calloc(nk, sizeof(float)),
                                    dv[0] = calloc(nv, sizeof(float)), malloc_ws(ref, &d));
            for (size_t b = 1; b < 3; b++) {
                const osp_backend *be = osp_backend_find(variants[b]);
                if (!be) continue;
                o[1] = malloc(no * sizeof(float));
                lse[1] = malloc((size_t)d.count * d.tq * sizeof(float));
                be->attention_forward(&d, q, k, v, o[1], lse[1], malloc_ws(be, &d));
                close_all(be->name, "attention o", o[1], o[0], no, 1e-5f);
                close_all(be->name, "attention lse", lse[1], lse[0], (size_t)d.count * d.tq,
                          1e-5f);
                be->attention_backward(&d, q, k, v, o[0], dout, lse[0],
                                       dq[1] = calloc(nq, sizeof(float)),
                                       dk[1] = calloc(nk, sizeof(float)),
                                       dv[1] = calloc(nv, sizeof(float)), malloc_ws(be, &d));
                close_all(be->name, "attention dq", dq[1], dq[0], nq, 1e-5f);
                close_all(be->name, "attention dk", dk[1], dk[0], nk, 1e-5f);
                close_all(be->name, "attention dv", dv[1], dv[0], nv, 1e-5f);
                free(o[1]), free(lse[1]), free(dq[1]), free(dk[1]), free(dv[1]);
            }
            free(q), free(k), free(v), free(dout), free(want);
            free(o[0]), free(lse[0]), free(dq[0]), free(dk[0]), free(dv[0]);
        }
    free_workspaces();
}

/* Layer norm on every backend against the reference (1e-5), and the
 * reference against the formula in double; rows of a few widths (below,
 * at and past a lane multiple), with and without gamma and beta, and an
 * offset mean that a one-pass variance would lose. */
Test(transformer_kernels, layernorm_matches) {
    static const int widths[] = {7, 16, 768, 100};
    const osp_backend *ref = osp_backend_cpu_reference();
    for (size_t wi = 0; wi < 4; wi++) {
        const int rows = 37, cols = widths[wi];
        const size_t n = (size_t)rows * cols;
        float *x = filled(n, 50 + wi, 1.0f), *dy = filled(n, 60 + wi, 1.0f);
        float *g = filled((size_t)cols, 70, 1.0f), *b = filled((size_t)cols, 71, 1.0f);
        for (size_t i = 0; i < n; i++) x[i] += 100.0f;
        float *y[2] = {malloc(n * sizeof(float)), malloc(n * sizeof(float))};
        float *dx[2] = {malloc(n * sizeof(float)), malloc(n * sizeof(float))};
        float mean[2][37], inv[2][37], dg[2][768], db[2][768];
        for (int affine = 0; affine < 2; affine++) {
            const float *gm = affine ? g : NULL, *bt = affine ? b : NULL;
            ref->layernorm_forward(rows, cols, 1e-5f, x, gm, bt, y[0], mean[0], inv[0]);
            for (int r = 0; r < rows; r++) {
                double s = 0, sq = 0;
                for (int j = 0; j < cols; j++) s += x[r * cols + j];
                for (int j = 0; j < cols; j++) sq += pow(x[r * cols + j] - s / cols, 2);
                for (int j = 0; j < cols; j++) {
                    double want = (x[r * cols + j] - s / cols) / sqrt(sq / cols + 1e-5);
                    if (affine) want = want * g[j] + b[j];
                    cr_assert(fabs(y[0][r * cols + j] - want) < 2e-4 * (1 + fabs(want)),
                              "reference layernorm [%d][%d] = %.8g, want %.8g", r, j,
                              y[0][r * cols + j], want);
                }
            }
            memset(dx[0], 0, n * sizeof(float));
            memset(dg[0], 0, sizeof dg[0]), memset(db[0], 0, sizeof db[0]);
            ref->layernorm_backward(rows, cols, x, dy, gm, mean[0], inv[0], dx[0], dg[0], db[0]);
            for (size_t v = 1; v < 3; v++) {
                const osp_backend *be = osp_backend_find(variants[v]);
                if (!be) continue;
                be->layernorm_forward(rows, cols, 1e-5f, x, gm, bt, y[1], mean[1], inv[1]);
                close_all(be->name, "layernorm y", y[1], y[0], n, 1e-5f);
                close_all(be->name, "layernorm mean", mean[1], mean[0], (size_t)rows, 1e-6f);
                close_all(be->name, "layernorm invstd", inv[1], inv[0], (size_t)rows, 1e-5f);
                memset(dx[1], 0, n * sizeof(float));
                memset(dg[1], 0, sizeof dg[1]), memset(db[1], 0, sizeof db[1]);
                be->layernorm_backward(rows, cols, x, dy, gm, mean[0], inv[0], dx[1], dg[1],
                                       db[1]);
                close_all(be->name, "layernorm dx", dx[1], dx[0], n, 1e-5f);
                close_all(be->name, "layernorm dgamma", dg[1], dg[0], (size_t)cols, 1e-5f);
                close_all(be->name, "layernorm dbeta", db[1], db[0], (size_t)cols, 1e-5f);
            }
        }
        free(x), free(dy), free(g), free(b), free(y[0]), free(y[1]), free(dx[0]), free(dx[1]);
    }
}
