/* SGD (momentum, Nesterov), Adam and AdamW, following torch.optim's update
 * rules exactly so that runs can be compared with PyTorch's. Each update
 * is one flat loop over every parameter, run by the backend (its sgd_step
 * and adam_step slots): here are the state and the factors. */
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
    return osp_optim_new_for(cfg, n, osp_backend_default(), out);
}

/* The state starts at zero. On a backend whose memory is host memory it
 * comes from calloc, whose pages stay untouched until an update writes
 * them (a frozen layer's never are); elsewhere it is zeroed on the device. */
static float *state_new(const osp_backend *be, size_t count) {
    if (be->host_memory) return osp_calloc(count, sizeof(float));
    float *p = be->mem_alloc(be->ctx, count * sizeof(float));
    if (p) be->mem_zero(be->ctx, p, count * sizeof(float));
    return p;
}

static void state_free(const osp_backend *be, float *p) {
    if (!p) return;
    if (be->host_memory) osp_free(p);
    else be->mem_free(be->ctx, p);
}

int osp_optim_new_for(const osp_optim_config *cfg, int64_t n, const osp_backend *be,
                      osp_optim **out) {
    *out = NULL;
    if (n < 0 || cfg->kind < OSP_OPTIM_SGD || cfg->kind > OSP_OPTIM_ADAMW || !be)
        return osp_error(OSP_EINVAL, "bad optimizer configuration");
    if (cfg->nesterov && cfg->momentum <= 0.0f)
        return osp_error(OSP_EINVAL, "Nesterov momentum needs a momentum above 0");
    osp_optim *o = osp_calloc(1, sizeof *o);
    if (!o) return OSP_ENOMEM;
    o->cfg = *cfg;
    o->n = n;
    o->be = be;
    size_t count = (size_t)(n ? n : 1);
    o->m = state_new(be, count);
    if (cfg->kind != OSP_OPTIM_SGD) o->v = state_new(be, count);
    if (!o->m || (cfg->kind != OSP_OPTIM_SGD && !o->v)) {
        osp_optim_free(o);
        return OSP_ENOMEM;
    }
    *out = o;
    return OSP_OK;
}

void osp_optim_free(osp_optim *o) {
    if (!o) return;
    state_free(o->be, o->m);
    state_free(o->be, o->v);
    osp_free(o);
}

static void sgd_step(osp_optim *o, float *w, const float *g, float lr) {
    o->be->sgd_step(o->n, lr, o->cfg.momentum, o->cfg.weight_decay, o->cfg.nesterov, w, g, o->m);
}

static void adam_step(osp_optim *o, float *w, const float *g, float lr) {
    const double beta1 = o->cfg.beta1, beta2 = o->cfg.beta2;
    const float wd = o->cfg.weight_decay;
    o->t++;
    const double c1 = 1.0 - pow(beta1, (double)o->t), c2 = 1.0 - pow(beta2, (double)o->t);
    /* The factors rounded from their double values, as torch rounds its
     * Python floats: (float)(1 - beta2), not 1.0f - (float)beta2. */
    const osp_adam_step s = {
        .beta1 = (float)beta1, .beta2 = (float)beta2,
        .one_minus_beta1 = (float)(1.0 - beta1), .one_minus_beta2 = (float)(1.0 - beta2),
        .eps = o->cfg.eps, .weight_decay = wd,
        .decoupled = o->cfg.kind == OSP_OPTIM_ADAMW,
        .decay = (float)(1.0 - (double)lr * wd), /* AdamW: torch's 1 - lr * weight_decay */
        .step_size = (float)(lr / c1),
        .c2_sqrt = (float)sqrt(c2),
    };
    o->be->adam_step(o->n, &s, w, g, o->m, o->v);
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
