/* Learning-rate schedules: constant, step, cosine; each with an optional
 * linear warm-up. */
#include <math.h>
#include <string.h>

#include "osprey/optim.h"

static const char *const sched_names[] = {"constant", "step", "cosine", NULL};

const char *osp_sched_name(osp_sched_kind kind) {
    return kind >= OSP_SCHED_CONSTANT && kind <= OSP_SCHED_COSINE ? sched_names[kind] : "?";
}

int osp_sched_parse(const char *name) {
    for (int i = 0; sched_names[i]; i++)
        if (!strcmp(name, sched_names[i])) return i;
    return -1;
}

float osp_schedule_lr(const osp_schedule *s, float base_lr, int64_t step) {
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
