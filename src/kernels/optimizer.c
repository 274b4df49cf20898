/* The optimizers' updates (src/optim/optimizer.c holds their rules and
 * state): one flat loop over every parameter each, as torch.optim's
 * single-tensor paths compute them. */
#include <math.h>

#include "cpu_kernels.h"

void osp__cpu_sgd_step(int64_t n, float lr, float momentum, float weight_decay, int nesterov,
                       float *w, const float *g, float *buf) {
    const float mu = momentum, wd = weight_decay;
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

void osp__cpu_adam_step(int64_t n, const osp_adam_step *s, float *w, const float *g, float *m,
                        float *v) {
    const float b1 = s->beta1, b2 = s->beta2, one_b1 = s->one_minus_beta1,
                one_b2 = s->one_minus_beta2, eps = s->eps, wd = s->weight_decay;
    const float decay = s->decay, step_size = s->step_size, c2_sqrt = s->c2_sqrt;
    const int decoupled = s->decoupled;
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
