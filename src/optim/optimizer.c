/* SGD (momentum, Nesterov), Adam and AdamW, each one flat loop over every
 * parameter, following torch.optim's update rules exactly so that runs can
 * be compared with PyTorch's. */
#include <math.h>
#include <string.h>

#include "osprey/optim.h"

static const char *const optim_names[] = {"sgd", "adam", "adamw", NULL};

const char *osp_optim_name(osp_optim_kind kind) {
    return kind >= OSP_OPTIM_SGD && kind <= OSP_OPTIM_ADAMW ? optim_names[kind] : "?";
}

int osp_optim_parse(const char *name, osp_optim_kind *kind) {
    for (int i = 0; name && optim_names[i]; i++)
        if (!strcmp(name, optim_names[i])) {
            *kind = (osp_optim_kind)i;
            return OSP_OK;
        }
    return osp_error(OSP_EINVAL, "unknown optimizer '%s' (sgd, adam, adamw)", name ? name : "");
}

osp_optim_config osp_optim_defaults(osp_optim_kind kind) {
    osp_optim_config c = {0};
    c.kind = kind;
    c.momentum = kind == OSP_OPTIM_SGD ? 0.9f : 0.0f;
    c.beta1 = 0.9;
    c.beta2 = 0.999;
    c.eps = 1e-8f;
    c.weight_decay = kind == OSP_OPTIM_ADAMW ? 0.01f : 0.0f;
    return c;
}

int osp_optim_new(const osp_optim_config *cfg, int64_t n, osp_optim **out) {
    *out = NULL;
    if (n < 0 || cfg->kind < OSP_OPTIM_SGD || cfg->kind > OSP_OPTIM_ADAMW)
        return osp_error(OSP_EINVAL, "bad optimizer configuration");
    if (cfg->nesterov && cfg->momentum <= 0.0f)
        return osp_error(OSP_EINVAL, "Nesterov momentum needs a momentum above 0");
    osp_optim *o = osp_calloc(1, sizeof *o);
    if (!o) return OSP_ENOMEM;
    o->cfg = *cfg;
    o->n = n;
    size_t count = (size_t)(n ? n : 1);
    o->m = osp_calloc(count, sizeof(float));
    if (cfg->kind != OSP_OPTIM_SGD) o->v = osp_calloc(count, sizeof(float));
    if (!o->m || (cfg->kind != OSP_OPTIM_SGD && !o->v)) {
        osp_optim_free(o);
        return OSP_ENOMEM;
    }
    *out = o;
    return OSP_OK;
}

void osp_optim_free(osp_optim *o) {
    if (!o) return;
    osp_free(o->m);
    osp_free(o->v);
    osp_free(o);
}

static void sgd_step(osp_optim *o, float *w, const float *g, float lr) {
    const float mu = o->cfg.momentum, wd = o->cfg.weight_decay;
    const int nesterov = o->cfg.nesterov;
    float *buf = o->m;
    const int64_t n = o->n;
    /* The first step sets buf = g (torch's "buf = clone(d_p)"), which is what
     * mu * 0 + g gives from the zeroed buffer. */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float d = g[i] + wd * w[i];
        if (mu != 0.0f) {
            buf[i] = mu * buf[i] + d;
            d = nesterov ? d + mu * buf[i] : buf[i];
        }
        w[i] -= lr * d;
    }
}

static void adam_step(osp_optim *o, float *w, const float *g, float lr) {
    const double beta1 = o->cfg.beta1, beta2 = o->cfg.beta2;
    /* The factors rounded from their double values, as torch rounds its
     * Python floats: (float)(1 - beta2), not 1.0f - (float)beta2. */
    const float b1 = (float)beta1, b2 = (float)beta2, one_b1 = (float)(1.0 - beta1),
                one_b2 = (float)(1.0 - beta2), eps = o->cfg.eps;
    const float wd = o->cfg.weight_decay;
    const int decoupled = o->cfg.kind == OSP_OPTIM_ADAMW;
    const float decay = (float)(1.0 - (double)lr * wd); /* AdamW: torch's 1 - lr * weight_decay */
    o->t++;
    const double c1 = 1.0 - pow(beta1, (double)o->t), c2 = 1.0 - pow(beta2, (double)o->t);
    const float step_size = (float)(lr / c1);
    const float c2_sqrt = (float)sqrt(c2);
    float *m = o->m, *v = o->v;
    const int64_t n = o->n;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        if (decoupled) w[i] *= decay;
        else d += wd * w[i];
        m[i] = b1 * m[i] + one_b1 * d;
        v[i] = b2 * v[i] + one_b2 * d * d;
        float denom = sqrtf(v[i]) / c2_sqrt + eps;
        w[i] -= step_size * m[i] / denom;
    }
}

void osp_optim_step(osp_optim *o, float *w, const float *g, float lr) {
    if (o->cfg.kind == OSP_OPTIM_SGD) sgd_step(o, w, g, lr);
    else adam_step(o, w, g, lr);
}

void osp_optim_step_groups(osp_optim *o, float *w, const float *g, float lr,
                           const osp_param_group *groups, int n_groups) {
    const int64_t t = o->t;
    for (int i = 0; i < n_groups; i++) {
        int64_t lo = groups[i].lo < 0 ? 0 : groups[i].lo, hi = groups[i].hi > o->n ? o->n : groups[i].hi;
        if (hi <= lo) continue;
        osp_optim view = *o;
        view.n = hi - lo;
        view.m = o->m + lo;
        view.v = o->v ? o->v + lo : NULL;
        view.t = t;
        osp_optim_step(&view, w + lo, g + lo, lr * groups[i].lr_scale);
    }
    o->t = t + (o->cfg.kind != OSP_OPTIM_SGD);
}
