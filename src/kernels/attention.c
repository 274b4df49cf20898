/* Scaled dot-product attention, softmax(Q K^T * scale) V, computed block by
 * block as FlashAttention does: for a block of queries, the keys are taken
 * ATT_BK at a time; each block of scores is made by one GEMM, folded into a
 * running maximum and sum (the online softmax: earlier partial outputs are
 * rescaled when the maximum grows), and multiplied into the output by a
 * second GEMM. No more than ATT_BQ x ATT_BK scores exist at once, whatever
 * the number of tokens. The forward keeps each query's log-sum-exp; the
 * backward recomputes the scores block by block from it.
 *
 * Threads own (attention, query block) pairs in the forward and whole
 * attentions in the backward (whose key and value gradients collect every
 * query block), so the result does not depend on the thread count. Each
 * thread has its own slot of the workspace.
 *
 * Compiled once per instruction set (cpu_kernels.h): the softmax's
 * exponentials (vmath.h), maxima and sums run in vector lanes. */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_kernels.h"
#include "vmath.h"

/* A key block of 256 holds a ViT's 197 tokens (one GEMM per query block
 * instead of four); its scores, 64 x 256 floats, stay in L2. */
#define ATT_BQ 64
#define ATT_BK 256
/* Lanes of the row reductions: a vector of floats on AVX-512. */
#define LANES 16
/* Floats of one thread's slot: scores, their gradient, and per-row values. */
#define ATT_SLOT (2 * ATT_BQ * ATT_BK + 4 * ATT_BQ)

size_t KFN(attention_workspace)(const osp_attention_desc *d) {
    (void)d;
    return sizeof(float) * (size_t)ATT_SLOT * (size_t)osp__kernel_slots();
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The pointer to key j of attention c and the GEMM layout that reads the
 * keys as K^T (d x cols): K stored tk x d (read transposed) or, with
 * k_trans, d x tk (read as is). */
static const float *key_block(const osp_attention_desc *d, const float *k, int64_t c, int j) {
    const float *kc = k + c * (int64_t)d->tk * d->d;
    return d->k_trans ? kc + j : kc + (int64_t)j * d->d;
}

/* S (rows x cols, row stride ATT_BK) = scale * Q_blk K_blk^T. */
static void scores(const osp_attention_desc *d, const float *qb, const float *kb, int rows,
                   int cols, float *s) {
    if (d->k_trans)
        osp__cpu_sgemm(OSP_NO_TRANS, OSP_NO_TRANS, rows, cols, d->d, d->scale, qb, d->d, kb, d->tk,
                       0.0f, s, ATT_BK);
    else
        osp__cpu_sgemm(OSP_NO_TRANS, OSP_TRANS, rows, cols, d->d, d->scale, qb, d->d, kb, d->d,
                       0.0f, s, ATT_BK);
}

/* The largest of s[0..n) and m. Lane by lane, so that the loop
 * vectorises without reassociating anything; NaN-free scores assumed as in
 * the scalar loop it replaces (a NaN score gives a NaN row either way). */
static float row_max(const float *s, int n, float m) {
    float lane[LANES];
    for (int u = 0; u < LANES; u++) lane[u] = m;
    int j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int u = 0; u < LANES; u++) lane[u] = s[j + u] > lane[u] ? s[j + u] : lane[u];
    for (; j < n; j++) m = s[j] > m ? s[j] : m;
    for (int u = 0; u < LANES; u++) m = lane[u] > m ? lane[u] : m;
    return m;
}

/* s[j] = e^(s[j] - m) for j < n; returns their sum (lanes of floats, then
 * added in double). */
static float row_exp_sum(float *s, int n, float m) {
    for (int j = 0; j < n; j++) s[j] = osp__vexp(s[j] - m);
    float lane[LANES] = {0};
    int j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int u = 0; u < LANES; u++) lane[u] += s[j + u];
    double sum = 0;
    for (; j < n; j++) sum += s[j];
    for (int u = 0; u < LANES; u++) sum += lane[u];
    return (float)sum;
}

static void forward_block(const osp_attention_desc *d, const float *q, const float *k,
                          const float *v, float *o, float *lse, int64_t c, int q0, float *ws) {
    const int rows = d->tq - q0 < ATT_BQ ? d->tq - q0 : ATT_BQ;
    const float *qb = q + (c * d->tq + q0) * (int64_t)d->d;
    float *ob = o + (c * d->tq + q0) * (int64_t)d->dv;
    float *s = ws, *m = ws + 2 * ATT_BQ * ATT_BK, *l = m + ATT_BQ;
    for (int r = 0; r < rows; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    memset(ob, 0, sizeof(float) * (size_t)rows * (size_t)d->dv);
    for (int k0 = 0; k0 < d->tk; k0 += ATT_BK) {
        const int cols = d->tk - k0 < ATT_BK ? d->tk - k0 : ATT_BK;
        scores(d, qb, key_block(d, k, c, k0), rows, cols, s);
        for (int r = 0; r < rows; r++) {
            float *sr = s + (int64_t)r * ATT_BK;
            const float mx = row_max(sr, cols, m[r]);
            const float corr = m[r] == -INFINITY ? 0.0f : expf(m[r] - mx);
            l[r] = l[r] * corr + row_exp_sum(sr, cols, mx);
            m[r] = mx;
            if (corr != 1.0f) {
                float *orow = ob + (int64_t)r * d->dv;
                for (int e = 0; e < d->dv; e++) orow[e] *= corr;
            }
        }
        const float *vb = v + (c * d->tk + k0) * (int64_t)d->dv;
        osp__cpu_sgemm(OSP_NO_TRANS, OSP_NO_TRANS, rows, d->dv, cols, 1.0f, s, ATT_BK, vb, d->dv,
                       1.0f, ob, d->dv);
    }
    for (int r = 0; r < rows; r++) {
        const float inv = 1.0f / l[r]; /* l >= 1: the maximum contributes exp(0) */
        float *orow = ob + (int64_t)r * d->dv;
        for (int e = 0; e < d->dv; e++) orow[e] *= inv;
        if (lse) lse[c * d->tq + q0 + r] = m[r] + logf(l[r]);
    }
}

void KFN(attention_forward)(const osp_attention_desc *d, const float *q, const float *k,
                                const float *v, float *o, float *lse, void *workspace) {
    const int qblocks = (d->tq + ATT_BQ - 1) / ATT_BQ;
    const int64_t jobs = d->count * qblocks;
    const double work = (double)jobs * ATT_BQ * d->tk * (d->d + d->dv);
#pragma omp parallel for schedule(static) num_threads(osp__kernel_team()) if (work >= 1e5 && jobs > 1)
    for (int64_t job = 0; job < jobs; job++)
        forward_block(d, q, k, v, o, lse, job / qblocks, (int)(job % qblocks) * ATT_BQ,
                      (float *)workspace + (int64_t)thread_id() * ATT_SLOT);
}

/* One attention's gradients, query block by key block: with P = exp(S -
 * lse) and D = rowsum(dO * O), dV += P^T dO, dP = dO V^T, dS = P (dP - D),
 * dQ += scale dS K, dK += scale dS^T Q. */
static void backward_one(const osp_attention_desc *d, const float *q, const float *k,
                         const float *v, const float *o, const float *dout, const float *lse,
                         float *dq, float *dk, float *dv, int64_t c, float *ws) {
    float *p = ws, *dp = ws + ATT_BQ * ATT_BK, *drow = ws + 2 * ATT_BQ * ATT_BK;
    for (int q0 = 0; q0 < d->tq; q0 += ATT_BQ) {
        const int rows = d->tq - q0 < ATT_BQ ? d->tq - q0 : ATT_BQ;
        const int64_t qrow = c * d->tq + q0;
        const float *qb = q + qrow * d->d, *ob = o + qrow * d->dv, *dob = dout + qrow * d->dv;
        for (int r = 0; r < rows; r++) {
            double s = 0;
            for (int e = 0; e < d->dv; e++)
                s += (double)dob[(int64_t)r * d->dv + e] * ob[(int64_t)r * d->dv + e];
            drow[r] = (float)s;
        }
        for (int k0 = 0; k0 < d->tk; k0 += ATT_BK) {
            const int cols = d->tk - k0 < ATT_BK ? d->tk - k0 : ATT_BK;
            const float *kb = key_block(d, k, c, k0);
            const float *vb = v + (c * d->tk + k0) * (int64_t)d->dv;
            scores(d, qb, kb, rows, cols, p);
            for (int r = 0; r < rows; r++) {
                const float l = lse[qrow + r];
                float *pr = p + (int64_t)r * ATT_BK;
                for (int j = 0; j < cols; j++) pr[j] = osp__vexp(pr[j] - l);
            }
            if (dv)
                osp__cpu_sgemm(OSP_TRANS, OSP_NO_TRANS, cols, d->dv, rows, 1.0f, p, ATT_BK, dob,
                               d->dv, 1.0f, dv + (c * d->tk + k0) * (int64_t)d->dv, d->dv);
            if (!dq && !dk) continue;
            osp__cpu_sgemm(OSP_NO_TRANS, OSP_TRANS, rows, cols, d->dv, 1.0f, dob, d->dv, vb, d->dv,
                           0.0f, dp, ATT_BK);
            for (int r = 0; r < rows; r++) {
                float *dpr = dp + (int64_t)r * ATT_BK;
                const float *pr = p + (int64_t)r * ATT_BK;
                for (int j = 0; j < cols; j++) dpr[j] = pr[j] * (dpr[j] - drow[r]);
            }
            if (dq) {
                float *dqb = dq + qrow * d->d;
                if (d->k_trans)
                    osp__cpu_sgemm(OSP_NO_TRANS, OSP_TRANS, rows, d->d, cols, d->scale, dp, ATT_BK,
                                   kb, d->tk, 1.0f, dqb, d->d);
                else
                    osp__cpu_sgemm(OSP_NO_TRANS, OSP_NO_TRANS, rows, d->d, cols, d->scale, dp,
                                   ATT_BK, kb, d->d, 1.0f, dqb, d->d);
            }
            if (dk) {
                float *dkb = (float *)key_block(d, dk, c, k0);
                if (d->k_trans) /* dK^T (d x cols) += scale Q^T dS */
                    osp__cpu_sgemm(OSP_TRANS, OSP_NO_TRANS, d->d, cols, rows, d->scale, qb, d->d,
                                   dp, ATT_BK, 1.0f, dkb, d->tk);
                else
                    osp__cpu_sgemm(OSP_TRANS, OSP_NO_TRANS, cols, d->d, rows, d->scale, dp, ATT_BK,
                                   qb, d->d, 1.0f, dkb, d->d);
            }
        }
    }
}

void KFN(attention_backward)(const osp_attention_desc *d, const float *q, const float *k,
                                 const float *v, const float *o, const float *dout,
                                 const float *lse, float *dq, float *dk, float *dv,
                                 void *workspace) {
    const double work = (double)d->count * d->tq * d->tk * (d->d + d->dv);
#pragma omp parallel for schedule(static) num_threads(osp__kernel_team()) if (work >= 1e5 && d->count > 1)
    for (int64_t c = 0; c < d->count; c++)
        backward_one(d, q, k, v, o, dout, lse, dq, dk, dv, c,
                     (float *)workspace + (int64_t)thread_id() * ATT_SLOT);
}
