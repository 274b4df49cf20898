/* IVF-PQ: k-means lists holding product-quantized residuals.
 *
 * A vector x in list l is stored as m bytes: for each of the m sub-spaces
 * (dsub = d/m dimensions) the nearest of ksub = 2^nbits codewords to the
 * residual x - c_l. Queries are compared asymmetrically: the query stays
 * exact and one table of m x ksub partial distances per list turns each
 * stored vector's distance into m lookups.
 *
 * For L2 the per-list table comes from two precomputed parts (FAISS's
 * "precomputed tables"):
 *   |q - c - r|^2 = |q - c|^2 + (|r|^2 + 2 c.r) - 2 q.r
 * where (|r_j|^2 + 2 c_j.r_j) depends only on the list and codeword (built at
 * train or load time) and -2 q_j.r_j only on the query (once per query). */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "index/ivf.h"
#include "index/kmeans.h"
#include "index/topk.h"

#define TAG_CODEBOOKS OSP__TAG('P', 'Q', 'C', 'B')
/* Codebook training sample per codeword. */
#define PQ_POINTS_PER_CODE 256
/* Largest precomputed table (nlist x m x ksub floats); beyond it the
 * per-list tables are computed from scratch for every probed list. */
#define PRECOMP_MAX_BYTES ((size_t)128 << 20)

typedef struct ivf_pq {
    osp_index base;
    osp__ivf ivf;
    int m, ksub, dsub;
    float *codebooks; /* m x ksub x dsub */
    int cb_owned;
    float *precomp;   /* L2: nlist x m x ksub, or NULL */
} ivf_pq;

static int ivfpq_init(osp_index *ix) {
    ivf_pq *p = (ivf_pq *)ix;
    p->m = ix->params.pq_m;
    p->ksub = 1 << ix->params.pq_nbits;
    p->dsub = ix->params.dim / p->m;
    osp__ivf_setup(&p->ivf, ix, (size_t)p->m);
    return OSP_OK;
}

static void ivfpq_destroy(osp_index *ix) {
    ivf_pq *p = (ivf_pq *)ix;
    osp__ivf_destroy(&p->ivf);
    if (p->cb_owned) osp_free(p->codebooks);
    osp_free(p->precomp);
    p->codebooks = NULL;
    p->precomp = NULL;
}

/* (|r|^2 + 2 c.r) for every list, sub-space and codeword. */
static int build_precomp(ivf_pq *p) {
    osp_free(p->precomp);
    p->precomp = NULL;
    if (p->base.params.metric != OSP_INDEX_METRIC_L2) return OSP_OK;
    size_t per_list = (size_t)p->m * p->ksub;
    if ((size_t)p->ivf.nlist * per_list * sizeof(float) > PRECOMP_MAX_BYTES) return OSP_OK;
    p->precomp = osp_alloc((size_t)p->ivf.nlist * per_list * sizeof(float));
    if (!p->precomp) return osp_error(OSP_ENOMEM, "ivfpq: out of memory for tables");
    int ds = p->dsub;
#pragma omp parallel for num_threads(osp__threads(&p->base)) schedule(static)
    for (int l = 0; l < p->ivf.nlist; l++) {
        const float *c = p->ivf.centroids + (size_t)l * p->ivf.d;
        float *t = p->precomp + (size_t)l * per_list;
        for (int j = 0; j < p->m; j++)
            for (int c2 = 0; c2 < p->ksub; c2++) {
                const float *r = p->codebooks + ((size_t)j * p->ksub + c2) * ds;
                float s = 0;
                for (int i = 0; i < ds; i++) s += r[i] * r[i] + 2.0f * c[j * ds + i] * r[i];
                t[j * p->ksub + c2] = s;
            }
    }
    return OSP_OK;
}

/* The m codes of residual r. */
static void encode(const ivf_pq *p, const float *r, uint8_t *code) {
    int ds = p->dsub;
    for (int j = 0; j < p->m; j++) {
        const float *rj = r + j * ds, *cb = p->codebooks + (size_t)j * p->ksub * ds;
        float best = INFINITY;
        int arg = 0;
        for (int c = 0; c < p->ksub; c++) {
            float d = osp__l2sq_c(rj, cb + (size_t)c * ds, (size_t)ds);
            if (d < best) {
                best = d;
                arg = c;
            }
        }
        code[j] = (uint8_t)arg;
    }
}

static int ivfpq_train(osp_index *ix, const float *x, int64_t n) {
    ivf_pq *p = (ivf_pq *)ix;
    int d = ix->params.dim;
    if (n < p->ksub)
        return osp_error(OSP_EINVAL, "ivfpq: %lld training vectors for %d codewords per sub-space",
                         (long long)n, p->ksub);
    int rc = osp__ivf_train(&p->ivf, ix, x, n);
    if (rc) return rc;
    /* Residuals of a sample: the codebooks learn what is left after the
     * coarse centroid, which is what gets encoded. */
    int64_t ns = n < (int64_t)PQ_POINTS_PER_CODE * p->ksub ? n : (int64_t)PQ_POINTS_PER_CODE * p->ksub;
    float *res = osp_alloc((size_t)ns * d * sizeof *res);
    float *sub = osp_alloc((size_t)ns * p->dsub * sizeof *sub);
    int32_t *assign = osp_alloc((size_t)ns * sizeof *assign);
    if (p->cb_owned) osp_free(p->codebooks);
    p->codebooks = osp_alloc((size_t)p->m * p->ksub * p->dsub * sizeof(float));
    p->cb_owned = 1;
    if (!res || !sub || !assign || !p->codebooks) {
        rc = osp_error(OSP_ENOMEM, "ivfpq: out of memory for training");
        goto out;
    }
    /* an evenly spaced sample: x is in the caller's order, which k-means
     * has no reason to trust, but striding avoids a copy of the shuffle */
    for (int64_t i = 0; i < ns; i++) {
        int64_t src = (int64_t)((double)i * (double)n / (double)ns);
        memcpy(res + (size_t)i * d, x + (size_t)src * d, (size_t)d * sizeof(float));
    }
    rc = osp__ivf_probe(&p->ivf, ix, res, ns, 1, osp__threads(ix), assign, NULL);
    if (rc) goto out;
    for (int64_t i = 0; i < ns; i++) {
        const float *c = p->ivf.centroids + (size_t)assign[i] * d;
        for (int j = 0; j < d; j++) res[(size_t)i * d + j] -= c[j];
    }
    for (int j = 0; j < p->m; j++) {
        for (int64_t i = 0; i < ns; i++)
            memcpy(sub + (size_t)i * p->dsub, res + (size_t)i * d + (size_t)j * p->dsub,
                   (size_t)p->dsub * sizeof(float));
        rc = osp__kmeans_train(sub, ns, p->dsub, p->ksub, ix->params.kmeans_iters, 0,
                               ix->params.seed + 1 + (uint64_t)j, osp__threads(ix), 0,
                               p->codebooks + (size_t)j * p->ksub * p->dsub);
        if (rc) goto out;
    }
    rc = build_precomp(p);
out:
    osp_free(res);
    osp_free(sub);
    osp_free(assign);
    return rc;
}

static int ivfpq_add(osp_index *ix, const void *xv, const int64_t *ids, int64_t n) {
    ivf_pq *p = (ivf_pq *)ix;
    const float *x = xv;
    int d = ix->params.dim;
    int threads = osp__threads(ix);
    int32_t *assign = osp_alloc((size_t)n * sizeof *assign);
    uint8_t *codes = osp_alloc((size_t)n * p->m);
    float *res = osp_alloc((size_t)threads * d * sizeof *res);
    int rc = assign && codes && res ? OSP_OK : OSP_ENOMEM;
    if (!rc) rc = osp__ivf_probe(&p->ivf, ix, x, n, 1, threads, assign, NULL);
    if (!rc) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            int t = 0;
#ifdef _OPENMP
            t = omp_get_thread_num();
#endif
            float *r = res + (size_t)t * d;
            const float *xi = x + (size_t)i * d, *c = p->ivf.centroids + (size_t)assign[i] * d;
            for (int j = 0; j < d; j++) r[j] = xi[j] - c[j];
            encode(p, r, codes + (size_t)i * p->m);
        }
        rc = osp__ivf_reserve(&p->ivf, assign, n);
    }
    if (!rc)
        for (int64_t i = 0; i < n; i++) osp__ivf_append(&p->ivf, ix, assign[i], codes + (size_t)i * p->m, ids[i]);
    osp_free(assign);
    osp_free(codes);
    osp_free(res);
    return rc;
}

static int ivfpq_remove(osp_index *ix, const int64_t *ids, int64_t n, int64_t *removed) {
    return osp__ivf_remove(&((ivf_pq *)ix)->ivf, ix, ids, n, removed);
}

/* Sum of table entries over m codes: the asymmetric distance. */
static inline float adc(const float *t, const uint8_t *code, int m, int ksub) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int j = 0;
    for (; j + 4 <= m; j += 4) {
        s0 += t[(j + 0) * ksub + code[j + 0]];
        s1 += t[(j + 1) * ksub + code[j + 1]];
        s2 += t[(j + 2) * ksub + code[j + 2]];
        s3 += t[(j + 3) * ksub + code[j + 3]];
    }
    for (; j < m; j++) s0 += t[j * ksub + code[j]];
    return (s0 + s1) + (s2 + s3);
}

/* Per-query work: qt holds the query-only part (-2 q.r for L2 with
 * precomputed tables, -q.r for inner product); lt is the per-list table. */
static void search_one(const ivf_pq *p, const float *q, const int32_t *lists, const float *cdist,
                       int np, const osp__search_ctx *sc, float *qt, float *lt, float *resid,
                       osp__hit *h, int64_t *ids, float *dist) {
    int m = p->m, ksub = p->ksub, ds = p->dsub, d = p->ivf.d, k = sc->k;
    int l2 = p->base.params.metric == OSP_INDEX_METRIC_L2;
    size_t per_list = (size_t)m * ksub;
    if (!l2 || p->precomp)
        for (int j = 0; j < m; j++)
            for (int c = 0; c < ksub; c++) {
                const float *r = p->codebooks + ((size_t)j * ksub + c) * ds;
                float dot = osp__dot_c(q + j * ds, r, (size_t)ds);
                qt[j * ksub + c] = l2 ? -2.0f * dot : -dot;
            }
    int nh = 0;
    for (int pi = 0; pi < np; pi++) {
        int l = lists ? lists[pi] : pi;
        if (l < 0) continue;
        const osp__ivf_list *li = &p->ivf.lists[l];
        if (li->n == 0) continue;
        const float *c = p->ivf.centroids + (size_t)l * d;
        float base;
        const float *t;
        if (!l2) {
            base = cdist ? cdist[pi] : -osp__dot_c(q, c, (size_t)d);
            t = qt;
        } else if (p->precomp) {
            base = cdist ? cdist[pi] : osp__l2sq_c(q, c, (size_t)d);
            const float *pre = p->precomp + (size_t)l * per_list;
            for (size_t i = 0; i < per_list; i++) lt[i] = pre[i] + qt[i];
            t = lt;
        } else {
            base = 0;
            for (int i = 0; i < d; i++) resid[i] = q[i] - c[i];
            for (int j = 0; j < m; j++)
                for (int c2 = 0; c2 < ksub; c2++)
                    lt[j * ksub + c2] = osp__l2sq_c(resid + j * ds,
                                                    p->codebooks + ((size_t)j * ksub + c2) * ds,
                                                    (size_t)ds);
            t = lt;
        }
        float bound = osp__topk_bound(h, nh, k);
        for (uint32_t e = 0; e < li->n; e++) {
            float de = base + adc(t, li->codes + (size_t)e * m, m, ksub);
            if (!(de <= bound)) continue;
            if (sc->filter && !osp__allowed(sc, li->ids[e])) continue;
            osp__topk_push(h, &nh, k, de, li->ids[e]);
            bound = osp__topk_bound(h, nh, k);
        }
    }
    osp__topk_finish(h, nh, k, ids, dist);
}

static int ivfpq_search(const osp_index *ix, const void *qv, int64_t nq, const osp__search_ctx *sc,
                        int64_t *ids, float *dist) {
    const ivf_pq *p = (const ivf_pq *)ix;
    const float *q = qv;
    int k = sc->k, np = osp__ivf_nprobe(&p->ivf, sc), d = p->ivf.d;
    int all = np >= p->ivf.nlist;
    size_t per_list = (size_t)p->m * p->ksub;
    size_t scratch = 2 * per_list + (size_t)d; /* qt, lt, residual */
    int32_t *lists = all ? NULL : osp_alloc((size_t)nq * np * sizeof *lists);
    float *cdist = all ? NULL : osp_alloc((size_t)nq * np * sizeof *cdist);
    float *work = osp_alloc((size_t)sc->threads * scratch * sizeof *work);
    osp__hit *heaps = osp_alloc((size_t)sc->threads * k * sizeof *heaps);
    int rc = work && heaps && (all || (lists && cdist)) ? OSP_OK : OSP_ENOMEM;
    if (!rc && !all) rc = osp__ivf_probe(&p->ivf, ix, q, nq, np, sc->threads, lists, cdist);
    if (!rc) {
#pragma omp parallel for num_threads(sc->threads) schedule(dynamic, 1) if (sc->threads > 1)
        for (int64_t i = 0; i < nq; i++) {
            int t = 0;
#ifdef _OPENMP
            t = omp_get_thread_num();
#endif
            float *w = work + (size_t)t * scratch;
            size_t o = (size_t)i * np;
            search_one(p, q + (size_t)i * d, all ? NULL : lists + o, all ? NULL : cdist + o, np, sc,
                       w, w + per_list, w + 2 * per_list, heaps + (size_t)t * k,
                       ids + (size_t)i * k, dist + (size_t)i * k);
        }
    }
    osp_free(lists);
    osp_free(cdist);
    osp_free(work);
    osp_free(heaps);
    return rc;
}

static int ivfpq_save(const osp_index *ix, osp__writer *w) {
    const ivf_pq *p = (const ivf_pq *)ix;
    if (!ix->trained) return OSP_OK;
    osp__ivf_save(&p->ivf, w);
    osp__writer_add(w, TAG_CODEBOOKS, p->codebooks,
                    (size_t)p->m * p->ksub * p->dsub * sizeof(float));
    return OSP_OK;
}

static int ivfpq_load(osp_index *ix, const osp__reader *r) {
    ivf_pq *p = (ivf_pq *)ix;
    p->ivf.nlist = ix->params.nlist;
    if (!ix->trained) return OSP_OK;
    const void *cb;
    int rc = osp__reader_get(r, TAG_CODEBOOKS, (size_t)p->m * p->ksub * p->dsub * sizeof(float), &cb);
    if (rc) return rc;
    p->codebooks = (float *)cb;
    p->cb_owned = 0;
    rc = osp__ivf_load(&p->ivf, ix, r);
    if (rc) return rc;
    /* codes index the codebooks: with fewer than 8 bits, larger bytes would
     * read past them */
    if (p->ksub < 256)
        for (int l = 0; l < p->ivf.nlist; l++) {
            const osp__ivf_list *li = &p->ivf.lists[l];
            for (size_t i = 0; i < (size_t)li->n * p->m; i++)
                if (li->codes[i] >= p->ksub)
                    return osp_error(OSP_ECORRUPT, "%s: PQ code %u past %d codewords", r->name,
                                     li->codes[i], p->ksub);
        }
    return build_precomp(p);
}

static void ivfpq_info(const osp_index *ix, osp_index_info *info) {
    const ivf_pq *p = (const ivf_pq *)ix;
    info->memory_bytes += osp__ivf_bytes(&p->ivf);
    if (p->cb_owned) info->memory_bytes += (size_t)p->m * p->ksub * p->dsub * sizeof(float);
    if (p->precomp) info->memory_bytes += (size_t)p->ivf.nlist * p->m * p->ksub * sizeof(float);
}

const osp__index_ops osp__ivf_pq_ops = {
    .type = OSP_INDEX_IVF_PQ,
    .struct_size = sizeof(ivf_pq),
    .init = ivfpq_init,
    .train = ivfpq_train,
    .add = ivfpq_add,
    .remove = ivfpq_remove,
    .search = ivfpq_search,
    .save = ivfpq_save,
    .load = ivfpq_load,
    .destroy = ivfpq_destroy,
    .info = ivfpq_info,
};
