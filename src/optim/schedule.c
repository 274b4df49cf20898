/* Learning-rate schedules: constant, step, cosine; each with an optional
 * linear warm-up. */
#include <math.h>
#include <string.h>

#include "osprey/optim.h"

static const char *const sched_names[] = {"constant", "step", "cosine", NULL};

const char *osp_sched_name(osp_sched_kind kind) {
    return kind >= OSP_SCHED_CONSTANT && kind <= OSP_SCHED_COSINE ? sched_names[kind] : "?";
}

int osp_sched_parse(const char *name, osp_sched_kind *kind) {
    for (int i = 0; name && sched_names[i]; i++)
        if (!strcmp(name, sched_names[i])) {
            *kind = (osp_sched_kind)i;
            return OSP_OK;
        }
    return osp_error(OSP_EINVAL, "unknown schedule '%s' (constant, step, cosine)", name ? name : "");
}

float osp_sched_lr(const osp_sched *s, float base_lr, int64_t step) {
    if (step < 0) step = 0;
    if (s->warmup_steps > 0 && step < s->warmup_steps)
        return base_lr * (float)(step + 1) / (float)s->warmup_steps;
    int64_t t = step - s->warmup_steps;
    switch (s->kind) {
    case OSP_SCHED_STEP:
        if (s->step_size <= 0) return base_lr;
        return base_lr * powf(s->gamma, (float)(t / s->step_size));
    case OSP_SCHED_COSINE: {
        int64_t span = s->total_steps - s->warmup_steps;
        if (span <= 0) return base_lr;
        double progress = (double)(t < span ? t : span) / (double)span;
        double f = s->min_factor + (1.0 - s->min_factor) * 0.5 * (1.0 + cos(M_PI * progress));
        return (float)(base_lr * f);
    }
    default: return base_lr;
    }
}
