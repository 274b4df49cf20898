/* Learned binary hash codes: a linear hash head K x D trained with the
 * pairwise loss of Deep Supervised Hashing (Liu, Wang, Shan, Chen, "Deep
 * Supervised Hashing for Fast Image Retrieval", CVPR 2016) on relaxed codes
 * u = tanh(W x + b):
 *
 *   L = 1/P sum_{i<j} [ s_ij d_ij / 2 + (1 - s_ij) max(m - d_ij, 0) / 2 ] / K
 *     + alpha / (B K) sum_i sum_k (1 - |u_ik|)
 *
 * with d_ij = |u_i - u_j|^2, s_ij = 1 for equal labels, m = margin * K
 * (default K; DSH takes 2K), every pair of a mini-batch of B vectors (P
 * pairs), Adam steps. With balance, similar and dissimilar pairs each weigh
 * half of the pair term (HashNet's weighting, Cao et al., ICCV 2017).
 * DSH's regulariser is || |u| - 1 ||_1, which for tanh outputs (|u| < 1) is
 * sum (1 - |u|). docs/hashing.md says why the defaults depart from DSH. Inputs are centred and scaled by one number while training
 * and the scaling is folded into W and b at the end, so the stored head
 * applies to raw vectors. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/hash.h"
#include "osprey/io.h"
#include "osprey/nn.h"

struct osp_hash {
    int bits, dim;
    float *w; /* bits x dim */
    float *b; /* bits */
    char layer[256];
    int normalize; /* 1 or 0: the vectors were L2-normalised; -1: not recorded */
};

#define LOSS_SAMPLE 2048

void osp_hash_params_init(osp_hash_params *p, int bits) {
    memset(p, 0, sizeof *p);
    p->bits = bits;
    p->epochs = 40;
    p->batch = 256;
    p->lr = 0.03f;
    p->quant = 0.1f;
    p->margin = 1.0f;
    p->weight_decay = 1e-4f;
    p->balance = 1;
    p->seed = 1234;
    p->normalize = -1;
}

static int check_bits(int bits, const char *where) {
    if (bits < OSP_HASH_MIN_BITS || bits > OSP_HASH_MAX_BITS || bits % 8)
        return osp_error(OSP_EINVAL, "%s: %d bits: a hash takes a multiple of 8 from %d to %d",
                         where, bits, OSP_HASH_MIN_BITS, OSP_HASH_MAX_BITS);
    return OSP_OK;
}

static int check_finite(const float *x, int64_t n, int dim, const char *what) {
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < dim; j++)
            if (!isfinite(x[i * dim + j]))
                return osp_error(OSP_EINVAL,
                                 "hash: row %lld of the %s holds %s at dimension %d: vectors must be finite numbers",
                                 (long long)i, what, isnan(x[i * dim + j]) ? "NaN" : "an infinity", j);
    return OSP_OK;
}

static osp_hash *hash_new(int bits, int dim, const char *layer) {
    osp_hash *h = calloc(1, sizeof *h);
    if (!h) {
        osp_error(OSP_ENOMEM, "hash: out of memory");
        return NULL;
    }
    h->bits = bits;
    h->dim = dim;
    h->w = osp_calloc((size_t)bits * (size_t)dim, sizeof *h->w);
    h->b = osp_calloc((size_t)bits, sizeof *h->b);
    if (!h->w || !h->b) {
        osp_hash_free(h);
        osp_error(OSP_ENOMEM, "hash: out of memory for a %d x %d head", bits, dim);
        return NULL;
    }
    snprintf(h->layer, sizeof h->layer, "%s", layer ? layer : "");
    h->normalize = -1;
    return h;
}

void osp_hash_free(osp_hash *h) {
    if (!h) return;
    osp_free(h->w);
    osp_free(h->b);
    free(h);
}

int osp_hash_bits(const osp_hash *h) { return h->bits; }
int osp_hash_dim(const osp_hash *h) { return h->dim; }
const char *osp_hash_layer(const osp_hash *h) { return h->layer; }
int osp_hash_normalize(const osp_hash *h) { return h->normalize; }
const float *osp_hash_weight(const osp_hash *h) { return h->w; }
const float *osp_hash_bias(const osp_hash *h) { return h->b; }

/* z = x W^T + b for rows x (n x d), w (k x d): z is n x k. */
static void affine(const float *x, int64_t n, int d, const float *w, const float *b, int k, float *z) {
    for (int64_t i = 0; i < n; i++) memcpy(z + i * k, b, (size_t)k * sizeof *z);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, k, d, 1.0f, x, d, w, d, 1.0f, z, k);
}

/* Loss of relaxed codes u (n x k) with labels, and if grad is not NULL its
 * gradient with respect to u (n x k). gram and a are n x n scratch. */
static double dsh_loss(const float *u, const int32_t *lab, int n, int k, float margin, float quant, int balance,
                       float *gram, float *a, float *grad) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, k, 1.0f, u, k, u, k, 0.0f, gram, n);
    const double pairs = 0.5 * (double)n * (n - 1);
    const double m = (double)margin * k;
    /* Balanced: similar and dissimilar pairs each weigh half of the batch's
     * pairs, whatever their numbers (with many labels nearly every pair is
     * dissimilar and would drown the similar ones). */
    double n_sim = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) n_sim += lab[i] == lab[j];
    const double n_dis = pairs - n_sim;
    const double w_sim = balance && n_sim > 0 && n_dis > 0 ? pairs / (2 * n_sim) : 1.0;
    const double w_dis = balance && n_sim > 0 && n_dis > 0 ? pairs / (2 * n_dis) : 1.0;
    const double scale = 1.0 / (pairs * k);
    double loss = 0;
    for (int i = 0; i < n; i++) {
        a[(size_t)i * n + i] = 0;
        for (int j = i + 1; j < n; j++) {
            double d = (double)gram[(size_t)i * n + i] + gram[(size_t)j * n + j] - 2.0 * gram[(size_t)i * n + j];
            if (d < 0) d = 0;
            double g = 0;
            if (lab[i] == lab[j]) {
                loss += w_sim * 0.5 * d;
                g = w_sim * 0.5;
            } else if (d < m) {
                loss += w_dis * 0.5 * (m - d);
                g = -w_dis * 0.5;
            }
            a[(size_t)i * n + j] = a[(size_t)j * n + i] = (float)(g * scale);
        }
    }
    loss *= scale;
    double q = 0;
    const double qs = (double)quant / ((double)n * k);
    for (int64_t t = 0; t < (int64_t)n * k; t++) q += 1.0 - fabs((double)u[t]);
    loss += qs * q;
    if (grad) {
        /* dL/du_i = 2 sum_j a_ij (u_i - u_j) = 2 (rowsum_i u_i - (A u)_i) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, k, n, -2.0f, a, n, u, k, 0.0f, grad, k);
        for (int i = 0; i < n; i++) {
            double rs = 0;
            for (int j = 0; j < n; j++) rs += a[(size_t)i * n + j];
            for (int c = 0; c < k; c++) {
                float v = u[(size_t)i * k + c];
                grad[(size_t)i * k + c] += (float)(2.0 * rs) * v - (float)qs * (v > 0 ? 1.0f : v < 0 ? -1.0f : 0.0f);
            }
        }
    }
    return loss;
}

/* The loss on the first min(n, LOSS_SAMPLE) rows of xs (already in the
 * scale w, b expect). */
static int sample_loss(const float *w, const float *b, int k, int d, const float *xs,
                       const int32_t *lab, int64_t n, float margin, float quant, int balance, double *loss) {
    int s = (int)(n < LOSS_SAMPLE ? n : LOSS_SAMPLE);
    float *u = osp_alloc((size_t)s * k * sizeof *u);
    float *gram = osp_alloc((size_t)s * s * sizeof *gram);
    float *a = osp_alloc((size_t)s * s * sizeof *a);
    int rc = OSP_OK;
    if (!u || !gram || !a) {
        rc = osp_error(OSP_ENOMEM, "hash: out of memory for the loss");
    } else {
        affine(xs, s, d, w, b, k, u);
        for (size_t t = 0; t < (size_t)s * k; t++) u[t] = tanhf(u[t]);
        *loss = dsh_loss(u, lab, s, k, margin, quant, balance, gram, a, NULL);
    }
    osp_free(u);
    osp_free(gram);
    osp_free(a);
    return rc;
}

static int check_params(const osp_hash_params *p, int64_t n, int dim) {
    int rc = check_bits(p->bits, "hash");
    if (rc) return rc;
    if (dim < 1 || dim > OSP_HASH_MAX_DIM)
        return osp_error(OSP_EINVAL, "hash: vectors of %d dimensions (1..%d)", dim, OSP_HASH_MAX_DIM);
    if (n < 2) return osp_error(OSP_EINVAL, "hash: training needs at least 2 vectors, got %lld", (long long)n);
    if (p->epochs < 1 || p->epochs > 100000) return osp_error(OSP_EINVAL, "hash: epochs %d (1..100000)", p->epochs);
    if (p->batch < 2 || p->batch > 8192) return osp_error(OSP_EINVAL, "hash: batch %d (2..8192)", p->batch);
    if (!(p->lr > 0 && p->lr <= 10)) return osp_error(OSP_EINVAL, "hash: learning rate %g (0..10]", p->lr);
    if (!(p->quant >= 0 && p->quant <= 100)) return osp_error(OSP_EINVAL, "hash: quantisation weight %g (0..100)", p->quant);
    if (!(p->margin > 0 && p->margin <= 4)) return osp_error(OSP_EINVAL, "hash: margin %g (0..4]", p->margin);
    if (!(p->weight_decay >= 0 && p->weight_decay < 1))
        return osp_error(OSP_EINVAL, "hash: weight decay %g [0..1)", p->weight_decay);
    return OSP_OK;
}

typedef struct adam {
    float *m, *v;
    int64_t t;
} adam;

static void adam_step(adam *o, float *w, const float *g, size_t n, float lr, float wd, int decay) {
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    o->t++;
    const float c1 = 1.0f - powf(b1, (float)o->t), c2 = 1.0f - powf(b2, (float)o->t);
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] + (decay ? wd * w[i] : 0.0f);
        o->m[i] = b1 * o->m[i] + (1 - b1) * gi;
        o->v[i] = b2 * o->v[i] + (1 - b2) * gi * gi;
        w[i] -= lr * (o->m[i] / c1) / (sqrtf(o->v[i] / c2) + eps);
    }
}

int osp_hash_train(const osp_hash_params *p, const float *x, const int32_t *labels, int64_t n,
                   int dim, osp_hash **out, osp_hash_report *report) {
    *out = NULL;
    if (report) memset(report, 0, sizeof *report);
    int rc = check_params(p, n, dim);
    if (rc) return rc;
    if ((rc = check_finite(x, n, dim, "training vectors"))) return rc;
    int64_t other = 1;
    while (other < n && labels[other] == labels[0]) other++;
    if (other == n) return osp_error(OSP_EINVAL, "hash: every vector has the same label: training needs two labels at least");

    const int k = p->bits, d = dim;
    const int B = (int)(n < p->batch ? n : p->batch);
    osp_hash *h = hash_new(k, d, p->layer);
    if (!h) return OSP_ENOMEM;
    h->normalize = p->normalize == 0 || p->normalize == 1 ? p->normalize : -1;

    /* Standardise: centre, divide by the RMS of the centred values. */
    double *mean = calloc((size_t)d, sizeof *mean);
    float *xs = osp_alloc((size_t)n * d * sizeof *xs);
    int64_t *order = osp_alloc((size_t)n * sizeof *order);
    float *xb = osp_alloc((size_t)B * d * sizeof *xb), *u = osp_alloc((size_t)B * k * sizeof *u);
    float *gu = osp_alloc((size_t)B * k * sizeof *gu);
    float *gram = osp_alloc((size_t)B * B * sizeof *gram), *amat = osp_alloc((size_t)B * B * sizeof *amat);
    float *gw = osp_alloc((size_t)k * d * sizeof *gw), *gb = osp_alloc((size_t)k * sizeof *gb);
    int32_t *lb = osp_alloc((size_t)B * sizeof *lb), *slab = NULL;
    adam ow = {osp_calloc((size_t)k * d, sizeof(float)), osp_calloc((size_t)k * d, sizeof(float)), 0};
    adam ob = {osp_calloc((size_t)k, sizeof(float)), osp_calloc((size_t)k, sizeof(float)), 0};
    float *sx = NULL;
    if (!mean || !xs || !order || !xb || !u || !gu || !gram || !amat || !gw || !gb || !lb || !ow.m || !ow.v ||
        !ob.m || !ob.v) {
        rc = osp_error(OSP_ENOMEM, "hash: out of memory for training on %lld x %d", (long long)n, d);
        goto done;
    }
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++) mean[j] += x[i * d + j];
    for (int j = 0; j < d; j++) mean[j] /= (double)n;
    double ss = 0;
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            double v = x[i * d + j] - mean[j];
            ss += v * v;
        }
    double rms = sqrt(ss / ((double)n * d));
    if (!(rms > 0)) rms = 1;
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++) xs[i * d + j] = (float)((x[i * d + j] - mean[j]) / rms);

    /* Start from random hyperplanes through the mean (SimHash), scaled so
     * that W x has unit variance for isotropic inputs. */
    osp_rng rng;
    osp_rng_seed(&rng, p->seed);
    const float init = 1.0f / sqrtf((float)d);
    for (size_t t = 0; t < (size_t)k * d; t++) h->w[t] = init * osp_rng_normal(&rng);

    /* A fixed sample for the reported loss: the first rows of a shuffle. */
    const int64_t ns = n < LOSS_SAMPLE ? n : LOSS_SAMPLE;
    sx = osp_alloc((size_t)ns * d * sizeof *sx);
    slab = osp_alloc((size_t)ns * sizeof *slab);
    if (!sx || !slab) {
        rc = osp_error(OSP_ENOMEM, "hash: out of memory");
        goto done;
    }
    for (int64_t i = 0; i < n; i++) order[i] = i;
    osp_rng_shuffle(&rng, order, n);
    for (int64_t i = 0; i < ns; i++) {
        memcpy(sx + i * d, xs + order[i] * d, (size_t)d * sizeof *sx);
        slab[i] = labels[order[i]];
    }
    double loss0 = 0;
    if ((rc = sample_loss(h->w, h->b, k, d, sx, slab, ns, p->margin, p->quant, p->balance, &loss0))) goto done;

    int steps = 0;
    double first = 0, last = 0;
    for (int e = 0; e < p->epochs; e++) {
        osp_rng_shuffle(&rng, order, n);
        double sum = 0;
        int nb = 0;
        /* Whole batches only (the tail joins the next epoch's shuffle), unless
         * n is smaller than a batch. */
        for (int64_t s = 0; s + B <= n; s += B) {
            for (int i = 0; i < B; i++) {
                memcpy(xb + (size_t)i * d, xs + order[s + i] * d, (size_t)d * sizeof *xb);
                lb[i] = labels[order[s + i]];
            }
            affine(xb, B, d, h->w, h->b, k, u);
            for (size_t t = 0; t < (size_t)B * k; t++) u[t] = tanhf(u[t]);
            sum += dsh_loss(u, lb, B, k, p->margin, p->quant, p->balance, gram, amat, gu);
            nb++;
            /* through tanh: dz = du (1 - u^2) */
            for (size_t t = 0; t < (size_t)B * k; t++) gu[t] *= 1.0f - u[t] * u[t];
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, d, B, 1.0f, gu, k, xb, d, 0.0f, gw, d);
            for (int c = 0; c < k; c++) {
                float g = 0;
                for (int i = 0; i < B; i++) g += gu[(size_t)i * k + c];
                gb[c] = g;
            }
            adam_step(&ow, h->w, gw, (size_t)k * d, p->lr, p->weight_decay, 1);
            adam_step(&ob, h->b, gb, (size_t)k, p->lr, 0, 0);
            steps++;
        }
        double mean_loss = nb ? sum / nb : 0;
        if (e == 0) first = mean_loss;
        last = mean_loss;
    }
    double loss1 = 0;
    if ((rc = sample_loss(h->w, h->b, k, d, sx, slab, ns, p->margin, p->quant, p->balance, &loss1))) goto done;

    /* Fold the standardisation in: W' = W / rms, b' = b - W' mean. */
    for (int c = 0; c < k; c++) {
        double acc = 0;
        for (int j = 0; j < d; j++) {
            float wv = (float)(h->w[(size_t)c * d + j] / rms);
            h->w[(size_t)c * d + j] = wv;
            acc += (double)wv * mean[j];
        }
        h->b[c] = (float)(h->b[c] - acc);
    }
    for (size_t t = 0; t < (size_t)k * d; t++)
        if (!isfinite(h->w[t])) {
            rc = osp_error(OSP_ERANGE, "hash: training diverged (try a smaller learning rate)");
            goto done;
        }
    if (report) {
        report->first_epoch_loss = first;
        report->last_epoch_loss = last;
        report->initial_loss = loss0;
        report->final_loss = loss1;
        report->epochs = p->epochs;
        report->steps = steps;
    }
done:
    free(mean);
    osp_free(xs);
    osp_free(order);
    osp_free(xb);
    osp_free(u);
    osp_free(gu);
    osp_free(gram);
    osp_free(amat);
    osp_free(gw);
    osp_free(gb);
    osp_free(lb);
    osp_free(ow.m);
    osp_free(ow.v);
    osp_free(ob.m);
    osp_free(ob.v);
    osp_free(sx);
    osp_free(slab);
    if (rc) osp_hash_free(h);
    else *out = h;
    return rc;
}

int osp_hash_loss(const osp_hash *h, const osp_hash_params *p, const float *x, const int32_t *labels,
                  int64_t n, double *loss) {
    if (n < 2) return osp_error(OSP_EINVAL, "hash: the loss needs at least 2 vectors");
    int rc = check_finite(x, n < LOSS_SAMPLE ? n : LOSS_SAMPLE, h->dim, "vectors");
    if (rc) return rc;
    return sample_loss(h->w, h->b, h->bits, h->dim, x, labels, n, p->margin, p->quant, p->balance, loss);
}

#define CODE_BLOCK 1024

int osp_hash_codes(const osp_hash *h, const float *x, int64_t n, uint8_t *codes) {
    if (n < 0) return osp_error(OSP_EINVAL, "hash: %lld vectors", (long long)n);
    int rc = check_finite(x, n, h->dim, "vectors");
    if (rc) return rc;
    const int k = h->bits, nbytes = k / 8;
    int64_t blk = n < CODE_BLOCK ? n : CODE_BLOCK;
    if (blk == 0) return OSP_OK;
    float *z = osp_alloc((size_t)blk * k * sizeof *z);
    if (!z) return osp_error(OSP_ENOMEM, "hash: out of memory");
    for (int64_t s = 0; s < n; s += blk) {
        int64_t m = n - s < blk ? n - s : blk;
        affine(x + s * h->dim, m, h->dim, h->w, h->b, k, z);
        for (int64_t i = 0; i < m; i++) {
            uint8_t *c = codes + (s + i) * nbytes;
            memset(c, 0, (size_t)nbytes);
            for (int bit = 0; bit < k; bit++)
                if (z[i * k + bit] > 0) c[bit / 8] |= (uint8_t)(1u << (bit % 8));
        }
    }
    osp_free(z);
    return OSP_OK;
}

/* ---- files ------------------------------------------------------------- */

#define HASH_VERSION 1

int osp_hash_save(const osp_hash *h, const char *path) {
    osp_st_writer *w;
    if (osp_st_writer_new(&w)) return osp_error(OSP_ENOMEM, "%s: out of memory", path);
    char bits[16], dim[16], ver[16];
    snprintf(bits, sizeof bits, "%d", h->bits);
    snprintf(dim, sizeof dim, "%d", h->dim);
    snprintf(ver, sizeof ver, "%d", HASH_VERSION);
    osp_shape ws = {.ndim = 2, .dim = {h->bits, h->dim}}, bs = {.ndim = 1, .dim = {h->bits}};
    int rc = osp_st_writer_add(w, "hash.weight", OSP_DTYPE_F32, &ws, h->w);
    if (!rc) rc = osp_st_writer_add(w, "hash.bias", OSP_DTYPE_F32, &bs, h->b);
    if (!rc) rc = osp_st_writer_meta(w, "format", "osprey");
    if (!rc) rc = osp_st_writer_meta(w, "kind", "hash");
    if (!rc) rc = osp_st_writer_meta(w, "version", ver);
    if (!rc) rc = osp_st_writer_meta(w, "bits", bits);
    if (!rc) rc = osp_st_writer_meta(w, "dim", dim);
    if (!rc) rc = osp_st_writer_meta(w, "layer", h->layer);
    if (!rc) rc = osp_st_writer_meta(w, "method", "dsh");
    /* Recorded when known; files without it are as before. */
    if (!rc && h->normalize >= 0) rc = osp_st_writer_meta(w, "normalize", h->normalize ? "1" : "0");
    if (!rc) rc = osp_st_writer_save(w, path);
    osp_st_writer_free(w);
    return rc;
}

/* A decimal integer in [lo, hi], nothing else. */
static int parse_int(const char *s, long lo, long hi, long *out) {
    if (!s || !*s || strlen(s) > 9) return 0;
    long v = 0;
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '9') return 0;
        v = v * 10 + (*c - '0');
    }
    if (v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static int from_st(const osp_safetensors *st, const char *name, osp_hash **out) {
    const char *kind = osp_st_meta(st, "kind");
    if (!kind || strcmp(kind, "hash"))
        return osp_error(OSP_EFORMAT, "%s: not an osprey hash file (kind is %s%s%s, not 'hash')", name,
                         kind ? "'" : "", kind ? kind : "missing", kind ? "'" : "");
    long ver = 0, bits = 0, dim = 0;
    if (!parse_int(osp_st_meta(st, "version"), 1, 1000000, &ver))
        return osp_error(OSP_EFORMAT, "%s: hash file without a valid version", name);
    if (ver > HASH_VERSION)
        return osp_error(OSP_EFORMAT, "%s: hash file version %ld is newer than this osprey reads (%d): upgrade osprey",
                         name, ver, HASH_VERSION);
    if (!parse_int(osp_st_meta(st, "bits"), OSP_HASH_MIN_BITS, OSP_HASH_MAX_BITS, &bits) || bits % 8)
        return osp_error(OSP_EFORMAT, "%s: bits must be a multiple of 8 from %d to %d", name, OSP_HASH_MIN_BITS,
                         OSP_HASH_MAX_BITS);
    if (!parse_int(osp_st_meta(st, "dim"), 1, OSP_HASH_MAX_DIM, &dim))
        return osp_error(OSP_EFORMAT, "%s: dim must be from 1 to %d", name, OSP_HASH_MAX_DIM);
    const osp_st_tensor *w = osp_st_find(st, "hash.weight"), *b = osp_st_find(st, "hash.bias");
    if (!w || !b) return osp_error(OSP_EFORMAT, "%s: hash file without hash.weight and hash.bias", name);
    if (w->dtype != OSP_DTYPE_F32 || b->dtype != OSP_DTYPE_F32)
        return osp_error(OSP_EFORMAT, "%s: hash tensors must be F32", name);
    if (w->shape.ndim != 2 || w->shape.dim[0] != bits || w->shape.dim[1] != dim || b->shape.ndim != 1 ||
        b->shape.dim[0] != bits)
        return osp_error(OSP_EFORMAT, "%s: hash tensors do not match bits = %ld and dim = %ld", name, bits, dim);
    if (w->nbytes != (size_t)bits * (size_t)dim * 4 || b->nbytes != (size_t)bits * 4)
        return osp_error(OSP_EFORMAT, "%s: hash tensors of the wrong size", name);
    const char *layer = osp_st_meta(st, "layer");
    if (layer && strlen(layer) >= 256) return osp_error(OSP_EFORMAT, "%s: layer name too long", name);
    const char *norm = osp_st_meta(st, "normalize");
    if (norm && strcmp(norm, "0") && strcmp(norm, "1"))
        return osp_error(OSP_EFORMAT, "%s: metadata 'normalize' must be \"0\" or \"1\"", name);
    osp_hash *h = hash_new((int)bits, (int)dim, layer);
    if (!h) return OSP_ENOMEM;
    h->normalize = norm ? norm[0] - '0' : -1;
    memcpy(h->w, w->data, w->nbytes);
    memcpy(h->b, b->data, b->nbytes);
    for (size_t t = 0; t < (size_t)bits * (size_t)dim; t++)
        if (!isfinite(h->w[t])) {
            osp_hash_free(h);
            return osp_error(OSP_EFORMAT, "%s: hash.weight holds a value that is not finite", name);
        }
    for (long t = 0; t < bits; t++)
        if (!isfinite(h->b[t])) {
            osp_hash_free(h);
            return osp_error(OSP_EFORMAT, "%s: hash.bias holds a value that is not finite", name);
        }
    *out = h;
    return OSP_OK;
}

int osp_hash_load(const char *path, osp_hash **out) {
    *out = NULL;
    osp_safetensors *st;
    int rc = osp_st_load(path, &st);
    if (rc) return rc;
    rc = from_st(st, path, out);
    osp_st_free(st);
    return rc;
}

int osp_hash_load_memory(const void *buf, size_t len, const char *name, osp_hash **out) {
    *out = NULL;
    osp_safetensors *st;
    int rc = osp_st_parse(buf, len, name, &st);
    if (rc) return rc;
    rc = from_st(st, name, out);
    osp_st_free(st);
    return rc;
}

/* ---- the head stored in a model ------------------------------------------ */

int osp_hash_from_net(const osp_net *net, const char *name, osp_hash **out) {
    *out = NULL;
    const osp_net_hash *nh = osp_net_get_hash(net);
    if (!nh)
        return osp_error(OSP_ENOENT,
                         "%s has no hash head: store one in a copy of it with 'osprey hash train --vectors DIR "
                         "--bits 64 --model %s --out NAME.osp' (DIR: its vectors from 'osprey embed'), or give "
                         "a hash file with --hash FILE.osh",
                         name ? name : "the model", name ? name : "MODEL");
    osp_hash *h = hash_new(nh->bits, nh->dim, nh->layer);
    if (!h) return OSP_ENOMEM;
    memcpy(h->w, nh->weight, (size_t)nh->bits * (size_t)nh->dim * sizeof *h->w);
    memcpy(h->b, nh->bias, (size_t)nh->bits * sizeof *h->b);
    h->normalize = nh->normalize;
    *out = h;
    return OSP_OK;
}

int osp_hash_to_net(const osp_hash *h, osp_net *net) {
    if (!h->layer[0])
        return osp_error(OSP_EINVAL, "the hash names no layer: a head stored in a model must say which layer "
                                     "it reads (train it from an 'osprey embed' folder, or give --layer)");
    osp_net_hash nh = {.bits = h->bits, .dim = h->dim, .layer = (char *)h->layer,
                       .normalize = h->normalize > 0, .weight = h->w, .bias = h->b};
    snprintf(nh.method, sizeof nh.method, "dsh");
    return osp_net_set_hash(net, &nh);
}
