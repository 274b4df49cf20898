/* Row-wise softmax (rows x cols) and the fused softmax + cross-entropy loss.
 * Every row subtracts its maximum before exp, so no logit can overflow, and
 * sums run in double. Threads own whole rows. */
#include <assert.h>
#include <math.h>

#include <omp.h>

#include "cpu_kernels.h"

/* Below this many values a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 14)
/* Partial losses are kept per thread on the stack; more threads than this
 * are not used for the loss. */
#define XENT_MAX_THREADS 256

static float row_max(const float *x, int cols) {
    float m = x[0];
    for (int j = 1; j < cols; j++) m = x[j] > m ? x[j] : m;
    return m;
}

void osp__cpu_softmax_forward(int rows, int cols, const float *x, float *y) {
#pragma omp parallel for schedule(static) if ((int64_t)rows * cols >= PARALLEL_MIN && rows > 1)
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (int64_t)r * cols;
        float *yr = y + (int64_t)r * cols;
        float m = row_max(xr, cols);
        double sum = 0;
        for (int j = 0; j < cols; j++) {
            yr[j] = expf(xr[j] - m);
            sum += yr[j];
        }
        float inv = (float)(1.0 / sum); /* sum >= 1: the max contributes exp(0) */
        for (int j = 0; j < cols; j++) yr[j] *= inv;
    }
}

/* dx = y * (dy - sum(dy * y)) per row. */
void osp__cpu_softmax_backward(int rows, int cols, const float *y, const float *dy, float *dx) {
    if (!dx) return;
#pragma omp parallel for schedule(static) if ((int64_t)rows * cols >= PARALLEL_MIN && rows > 1)
    for (int r = 0; r < rows; r++) {
        const float *yr = y + (int64_t)r * cols, *dyr = dy + (int64_t)r * cols;
        float *dxr = dx + (int64_t)r * cols;
        double dot = 0;
        for (int j = 0; j < cols; j++) dot += (double)dyr[j] * yr[j];
        float d = (float)dot;
        for (int j = 0; j < cols; j++) dxr[j] += yr[j] * (dyr[j] - d);
    }
}

/* Per row: loss = log(sum(exp(x))) - x[label] = lse - x[label], and
 * d(mean loss)/dx = (softmax(x) - onehot(label)) / rows. */
static double xent_row(int cols, const float *x, int32_t label, float inv_rows, float *p,
                       float *d) {
    assert(label >= 0 && label < cols);
    float m = row_max(x, cols);
    double sum = 0;
    for (int j = 0; j < cols; j++) sum += exp((double)x[j] - m);
    double lse = m + log(sum);
    if (p || d) {
        for (int j = 0; j < cols; j++) {
            float pj = (float)exp((double)x[j] - lse);
            if (p) p[j] = pj;
            if (d) d[j] = pj * inv_rows;
        }
        if (d) d[label] -= inv_rows;
    }
    return lse - x[label];
}

/* One row's loss (and its outputs) for the row-sum below. */
typedef struct loss_rows {
    int cols;
    const float *logits;
    const int32_t *labels; /* softmax */
    const float *targets;  /* sigmoid BCE */
    float scale;           /* of the gradient */
    float *probs, *dlogits;
    double (*row)(const struct loss_rows *l, int r);
} loss_rows;

/* The sum of every row's loss. Each thread sums a contiguous block of
 * rows; the blocks' sums are then added in thread order, so the total
 * depends only on the thread count. */
static double sum_rows(int rows, const loss_rows *l) {
    double partial[XENT_MAX_THREADS];
    int threads = 1, want = omp_get_max_threads();
    if (want > XENT_MAX_THREADS) want = XENT_MAX_THREADS;
    int parallel = (int64_t)rows * l->cols >= PARALLEL_MIN && rows > 1;
#pragma omp parallel num_threads(want) if (parallel)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp single
        threads = nt;
        int lo = (int)((int64_t)rows * t / nt), hi = (int)((int64_t)rows * (t + 1) / nt);
        double sum = 0;
        for (int r = lo; r < hi; r++) sum += l->row(l, r);
        partial[t] = sum;
    }
    double total = 0;
    for (int t = 0; t < threads; t++) total += partial[t];
    return total;
}

static double xent_at(const loss_rows *l, int r) {
    const int64_t at = (int64_t)r * l->cols;
    return xent_row(l->cols, l->logits + at, l->labels[r], l->scale, l->probs ? l->probs + at : NULL,
                    l->dlogits ? l->dlogits + at : NULL);
}

double osp__cpu_softmax_xent(int rows, int cols, const float *logits, const int32_t *labels,
                             float *probs, float *dlogits) {
    if (rows <= 0) return 0.0;
    const loss_rows l = {.cols = cols, .logits = logits, .labels = labels,
                         .scale = 1.0f / (float)rows, .probs = probs, .dlogits = dlogits,
                         .row = xent_at};
    return sum_rows(rows, &l) / rows;
}

/* Sigmoid + binary cross-entropy on logits, one row: the sum of the row's
 * losses max(x,0) - x*t + log1p(exp(-|x|)); the gradient (sigmoid(x) - t)
 * scaled by scale into d. */
static double bce_row(int cols, const float *x, const float *t, float scale, float *p, float *d) {
    double sum = 0;
    for (int j = 0; j < cols; j++) {
        double v = x[j], e = exp(-fabs(v));
        sum += (v > 0 ? v : 0) - v * (double)t[j] + log1p(e);
        if (p || d) {
            /* sigmoid without overflow: e = exp(-|v|) <= 1 */
            double s = v >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
            if (p) p[j] = (float)s;
            if (d) d[j] = (float)((s - (double)t[j]) * scale);
        }
    }
    return sum;
}

static double bce_at(const loss_rows *l, int r) {
    const int64_t at = (int64_t)r * l->cols;
    return bce_row(l->cols, l->logits + at, l->targets + at, l->scale,
                   l->probs ? l->probs + at : NULL, l->dlogits ? l->dlogits + at : NULL);
}

double osp__cpu_sigmoid_bce(int rows, int cols, const float *logits, const float *targets,
                            float *probs, float *dlogits) {
    if (rows <= 0 || cols <= 0) return 0.0;
    const double count = (double)rows * (double)cols;
    const loss_rows l = {.cols = cols, .logits = logits, .targets = targets,
                         .scale = (float)(1.0 / count), .probs = probs, .dlogits = dlogits,
                         .row = bce_at};
    return sum_rows(rows, &l) / count;
}
