/* The optimizers and the learning-rate schedules against PyTorch's
 * (torch.optim and torch.optim.lr_scheduler), on data that
 * tests/golden/make_optim_golden.py makes before this test (the CTest
 * fixture optim_golden).
 *
 * Optimizers: the same parameters and gradients, several steps at a
 * changing rate. The parameters after every step must match torch's
 * within TOL, the state after the last step (momentum buffer, Adam's
 * moments) within STATE_TOL, each relative to max(|torch's value|, the
 * root mean square of the whole tensor). Both sides compute in float32
 * but do not round alike: torch's vector kernels fuse a multiply and an
 * add (buf * mu + d, m * beta1 + (1 - beta1) * g) that osprey rounds
 * twice. That is a few units in the last place (6e-8 each) of the
 * largest terms, and a value that ends near 0 after its terms cancel
 * keeps the absolute difference of the terms, not one relative to its
 * own size: hence the tensor's scale as the floor. The gradients span
 * e^-3 to e^3, so the moments, sums of them, see the largest such
 * differences (up to 1e-6 of their scale on this data, hence STATE_TOL
 * with a margin); the parameters stay below 5e-7.
 *
 * Schedules: each step's rate within TOL relative (rates below a
 * millionth of the base rate, the end of a cosine to 0, compared with
 * that as their scale). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/io.h"
#include "osprey/optim.h"

#define TOL 1e-6
#define STATE_TOL 2e-6

static osp_safetensors *load(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/optim_golden/%s.safetensors", OSP_BINARY_DIR, name);
    osp_safetensors *st;
    cr_assert_eq(osp_st_load(path, &st), 0, "%s", osp_last_error());
    return st;
}

static const float *tensor(const osp_safetensors *st, const char *name, int64_t numel) {
    const osp_st_tensor *t = osp_st_find(st, name);
    cr_assert_not_null(t, "golden tensor %s missing", name);
    cr_assert_eq(t->dtype, OSP_DTYPE_F32, "%s: not float32", name);
    cr_assert_eq(t->nbytes, (size_t)numel * sizeof(float), "%s: %zu bytes", name, t->nbytes);
    return t->data;
}

static double meta_number(const osp_safetensors *st, const char *key) {
    const char *s = osp_st_meta(st, key);
    cr_assert_not_null(s, "golden metadata %s missing", key);
    return strtod(s, NULL);
}

/* The root mean square of n values. */
static double rms(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s / (double)(n ? n : 1));
}

/* The largest |got - want| / max(|want|, the tensor's root mean square)
 * over n values. */
static double worst(const float *got, const float *want, int64_t n, int64_t *at) {
    const double floor = fmax(rms(want, n), 1e-30);
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]) / fmax(fabs((double)want[i]), floor);
        if (d > e || isnan(d)) {
            e = isnan(d) ? INFINITY : d;
            *at = i;
        }
    }
    return e;
}

static void check_optimizer(const char *name) {
    osp_safetensors *st = load(name);
    const char *kind_name = osp_st_meta(st, "kind");
    cr_assert_not_null(kind_name);
    osp_optim_kind kind;
    cr_assert_eq(osp_optim_parse(kind_name, &kind), 0, "%s", osp_last_error());
    osp_optim_config cfg = osp_optim_defaults(kind);
    cfg.weight_decay = (float)meta_number(st, "weight_decay");
    if (kind == OSP_OPTIM_SGD) {
        cfg.momentum = (float)meta_number(st, "momentum");
        cfg.nesterov = meta_number(st, "nesterov") != 0;
    } else {
        cfg.beta1 = meta_number(st, "beta1");
        cfg.beta2 = meta_number(st, "beta2");
        cfg.eps = (float)meta_number(st, "eps");
    }
    const int steps = (int)meta_number(st, "steps");
    const osp_st_tensor *w0t = osp_st_find(st, "w0");
    cr_assert_not_null(w0t);
    const int64_t n = w0t->shape.dim[0];
    const float *w0 = tensor(st, "w0", n), *grads = tensor(st, "grads", steps * n),
                *lrs = tensor(st, "lrs", steps), *weights = tensor(st, "weights", steps * n);

    osp_optim *opt;
    cr_assert_eq(osp_optim_new(&cfg, n, &opt), 0, "%s", osp_last_error());
    float *w = malloc((size_t)n * sizeof(float));
    memcpy(w, w0, (size_t)n * sizeof(float));
    for (int k = 0; k < steps; k++) {
        osp_optim_step(opt, w, grads + k * n, lrs[k]);
        int64_t at = 0;
        double e = worst(w, weights + k * n, n, &at);
        cr_expect_leq(e, TOL, "%s step %d: parameter %lld is %.9g, torch %.9g (error %.3g)", name,
                      k + 1, (long long)at, w[at], weights[k * n + at], e);
    }
    int64_t at = 0;
    double e = worst(opt->m, tensor(st, "m", n), n, &at);
    cr_expect_leq(e, STATE_TOL, "%s: first moment / momentum %lld is %.9g, torch %.9g", name,
                  (long long)at, opt->m[at], tensor(st, "m", n)[at]);
    if (opt->v) {
        e = worst(opt->v, tensor(st, "v", n), n, &at);
        cr_expect_leq(e, STATE_TOL, "%s: second moment %lld is %.9g, torch %.9g", name, (long long)at,
                      opt->v[at], tensor(st, "v", n)[at]);
    }
    if (kind != OSP_OPTIM_SGD) cr_expect_eq(opt->t, steps);
    free(w);
    osp_optim_free(opt);
    osp_st_free(st);
}

Test(optim_golden, sgd) { check_optimizer("sgd"); }
Test(optim_golden, sgd_weight_decay) { check_optimizer("sgd_weight_decay"); }
Test(optim_golden, sgd_momentum) { check_optimizer("sgd_momentum"); }
Test(optim_golden, sgd_momentum_weight_decay) { check_optimizer("sgd_momentum_weight_decay"); }
Test(optim_golden, sgd_nesterov) { check_optimizer("sgd_nesterov"); }
Test(optim_golden, sgd_nesterov_weight_decay) { check_optimizer("sgd_nesterov_weight_decay"); }
Test(optim_golden, adam) { check_optimizer("adam"); }
Test(optim_golden, adam_weight_decay) { check_optimizer("adam_weight_decay"); }
Test(optim_golden, adam_betas) { check_optimizer("adam_betas"); }
Test(optim_golden, adamw) { check_optimizer("adamw"); }
Test(optim_golden, adamw_strong_decay) { check_optimizer("adamw_strong_decay"); }

static void check_schedule(const char *name) {
    osp_safetensors *st = load("schedules");
    char key[128];
    snprintf(key, sizeof key, "%s.kind", name);
    const char *kind_name = osp_st_meta(st, key);
    cr_assert_not_null(kind_name, "golden metadata %s missing", key);
    osp_sched s = {0};
    cr_assert_eq(osp_sched_parse(kind_name, &s.kind), 0, "%s", osp_last_error());
#define FIELD(field, meta)                                                                         \
    snprintf(key, sizeof key, "%s.%s", name, meta);                                                \
    s.field = meta_number(st, key)
    FIELD(warmup_steps, "warmup");
    FIELD(total_steps, "total");
    FIELD(step_size, "step_size");
    FIELD(gamma, "gamma");
    FIELD(min_factor, "min_factor");
#undef FIELD
    const float base = (float)meta_number(st, "base_lr");
    const osp_st_tensor *t = osp_st_find(st, name);
    cr_assert_not_null(t, "golden schedule %s missing", name);
    const int64_t steps = t->shape.dim[0];
    const float *want = tensor(st, name, steps);
    for (int64_t k = 0; k < steps; k++) {
        float got = osp_sched_lr(&s, base, k);
        double scale = fmax(fabs((double)want[k]), 1e-6 * base);
        cr_expect_leq(fabs((double)got - want[k]) / scale, TOL,
                      "%s step %lld: lr %.9g, torch %.9g", name, (long long)k, got, want[k]);
    }
    osp_st_free(st);
}

Test(sched_golden, step) { check_schedule("step"); }
Test(sched_golden, step_gamma) { check_schedule("step_gamma"); }
Test(sched_golden, cosine) { check_schedule("cosine"); }
Test(sched_golden, cosine_min) { check_schedule("cosine_min"); }
Test(sched_golden, warmup_constant) { check_schedule("warmup_constant"); }
Test(sched_golden, warmup_step) { check_schedule("warmup_step"); }
Test(sched_golden, warmup_cosine) { check_schedule("warmup_cosine"); }
