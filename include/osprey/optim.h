/* osprey optim: optimizers over one flat parameter array, and learning-rate
 * schedules. */
#ifndef OSPREY_OPTIM_H
#define OSPREY_OPTIM_H

#include <stdint.h>

#include "osprey/core.h"
#include "osprey/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum osp_optim_kind {
    OSP_OPTIM_SGD = 0,   /* momentum, Nesterov, L2 weight decay (as torch.optim.SGD) */
    OSP_OPTIM_ADAM = 1,  /* L2 weight decay added to the gradient (torch.optim.Adam) */
    OSP_OPTIM_ADAMW = 2, /* decoupled weight decay (torch.optim.AdamW) */
} osp_optim_kind;

typedef struct osp_optim_config {
    osp_optim_kind kind;
    float momentum;     /* SGD; 0 = plain SGD */
    int nesterov;       /* SGD; needs momentum > 0 */
    float weight_decay;
    /* Adam/AdamW. The betas are doubles, as torch.optim keeps them: in
     * float, 1 - 0.999f is 1.3e-5 away from 0.001, a second moment that
     * much smaller than torch's. */
    double beta1, beta2;
    float eps;
} osp_optim_config;

/* Defaults: SGD momentum 0.9; Adam betas (0.9, 0.999), eps 1e-8. */
OSP_API osp_optim_config osp_optim_defaults(osp_optim_kind kind);
OSP_API const char *osp_optim_name(osp_optim_kind kind);
/* "sgd", "adam", "adamw" -> *kind; 0, or OSP_EINVAL for another name. */
OSP_API int osp_optim_parse(const char *name, osp_optim_kind *kind);

typedef struct osp_optim {
    osp_optim_config cfg;
    int64_t n;  /* parameters */
    float *m;   /* SGD momentum buffer, or Adam first moment (n) */
    float *v;   /* Adam second moment (n); NULL for SGD */
    int64_t t;  /* steps taken (Adam bias correction) */
    /* Runs the updates; m and v are its memory (host memory on the CPU
     * tables, read there by checkpoints and gradient exchange). */
    const osp_backend *be;
} osp_optim;

/* An optimizer for n parameters, its state zero; OSP_EINVAL for a bad
 * configuration. Free it with osp_optim_free. osp_optim_new runs on
 * osp_backend_default(); osp_optim_new_for on be, for the parameters of a
 * graph on be (osp_graph_backend). */
OSP_API int osp_optim_new(const osp_optim_config *cfg, int64_t n, osp_optim **out);
OSP_API int osp_optim_new_for(const osp_optim_config *cfg, int64_t n, const osp_backend *be,
                              osp_optim **out);
OSP_API void osp_optim_free(osp_optim *o);
/* One update of w (n) from g (n) at learning rate lr. */
OSP_API void osp_optim_step(osp_optim *o, float *w, const float *g, float lr);

/* A slice [lo, hi) of the flat parameters trained at lr * lr_scale (a
 * network's backbone and its head at their own rates when fine-tuning). */
typedef struct osp_param_group {
    int64_t lo, hi;
    float lr_scale;
} osp_param_group;

/* One update of only the groups' slices of w, each at its own rate; the
 * optimizer state outside them is never read or written (a frozen
 * layer's stays zero, and its pages are never touched), and Adam counts
 * the step once. n_groups 0 updates nothing but the step count. */
OSP_API void osp_optim_step_groups(osp_optim *o, float *w, const float *g, float lr,
                                   const osp_param_group *groups, int n_groups);

typedef enum osp_sched_kind {
    OSP_SCHED_CONSTANT = 0,
    OSP_SCHED_STEP = 1,   /* lr * gamma^(floor(step / step_size)) */
    OSP_SCHED_COSINE = 2, /* lr * (min + (1-min) * (1 + cos(pi * progress)) / 2) */
} osp_sched_kind;

typedef struct osp_sched {
    osp_sched_kind kind;
    int64_t total_steps;  /* cosine: the length of the run */
    int64_t warmup_steps; /* linear warm-up from lr/warmup to lr first (0 = none) */
    int64_t step_size;    /* step: decay every step_size steps */
    float gamma;          /* step: factor */
    float min_factor;     /* cosine: final lr as a fraction of lr */
} osp_sched;

/* The learning rate at step (counted from 0). */
OSP_API float osp_sched_lr(const osp_sched *s, float base_lr, int64_t step);
OSP_API const char *osp_sched_name(osp_sched_kind kind);
/* "constant", "step", "cosine" -> *kind; 0, or OSP_EINVAL for another name. */
OSP_API int osp_sched_parse(const char *name, osp_sched_kind *kind);

#ifdef __cplusplus
}
#endif

#endif
