/* k-means (see kmeans.h). */
#include <math.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "index/index_impl.h"
#include "index/kmeans.h"
#include "index/select.h"
#include "index/topk.h"

/* Rows per sgemm block in kmeans_nearest: a block of distances
 * (rows x k floats) then stays within a few MB. */
#define NEAREST_BLOCK 1024
/* Below this many vectors a batch goes through the distance kernel instead
 * of sgemm (one query: scanning the centroids directly is faster). */
#define NEAREST_GEMM_MIN 16

void osp__norms(const float *x, int64_t n, int d, const osp__kernels *kern, float *out) {
    for (int64_t i = 0; i < n; i++)
        out[i] = -kern->ndot(x + (size_t)i * d, x + (size_t)i * d, (size_t)d);
}

int osp__kmeans_nearest(const float *x, int64_t n, int d, const float *c, const float *cnorms,
                        int k, int p, int ip, int threads, const osp__kernels *kern,
                        int32_t *lists, float *dist) {
    if (p > k) p = k;
    if (n < NEAREST_GEMM_MIN) {
        osp__hit *heap = osp_alloc((size_t)p * sizeof *heap);
        if (!heap) return OSP_ENOMEM;
        for (int64_t i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * d;
            int nh = 0;
            for (int j = 0; j < k; j++) {
                float dj = ip ? kern->ndot(xi, c + (size_t)j * d, (size_t)d)
                              : kern->l2sq(xi, c + (size_t)j * d, (size_t)d);
                if (nh < p || dj < heap[0].d) osp__topk_push(heap, &nh, p, dj, j);
            }
            for (int r = nh - 1; r >= 0; r--) {
                osp__hit top = heap[0];
                heap[0] = heap[r];
                osp__topk_sift_down(heap, r, 0);
                lists[(size_t)i * p + r] = (int32_t)top.id;
                if (dist) dist[(size_t)i * p + r] = top.d;
            }
        }
        osp_free(heap);
        return OSP_OK;
    }
    osp__select_fn select = osp__select_for(kern->level);
    size_t block = NEAREST_BLOCK;
    float *prod = osp_alloc(block * (size_t)k * sizeof *prod);
    osp__hit *heap = osp_alloc((size_t)p * sizeof *heap);
    int64_t *ids = osp_alloc((size_t)p * sizeof *ids);
    float *ds = osp_alloc((size_t)p * sizeof *ds);
    if (!prod || !heap || !ids || !ds) {
        osp_free(prod);
        osp_free(heap);
        osp_free(ids);
        osp_free(ds);
        return OSP_ENOMEM;
    }
    /* sgemm on BLAS's threads, selection in this one (see select.h) */
    (void)threads;
    for (int64_t b0 = 0; b0 < n; b0 += (int64_t)block) {
        int rows = (int)(n - b0 < (int64_t)block ? n - b0 : (int64_t)block);
        const float *xb = x + (size_t)b0 * d;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, k, d, 1.0f, xb, d, c, d, 0.0f,
                    prod, k);
        for (int r = 0; r < rows; r++) {
            int nh = 0;
            /* L2: |c|^2 - 2 x.c, then + |x|^2; inner product: -x.c */
            select(prod + (size_t)r * k, ip ? NULL : cnorms, ip ? -1.0f : -2.0f, k, NULL, 0, NULL,
                   heap, &nh, p);
            osp__topk_finish(heap, nh, p, ids, ds);
            const float *xr = xb + (size_t)r * d;
            float xn = ip ? 0.0f : -kern->ndot(xr, xr, (size_t)d);
            size_t o = (size_t)(b0 + r) * p;
            for (int i = 0; i < p; i++) {
                lists[o + i] = (int32_t)ids[i];
                if (dist) dist[o + i] = ids[i] < 0 ? INFINITY : ip ? ds[i] : fmaxf(ds[i] + xn, 0.0f);
            }
        }
    }
    osp_free(prod);
    osp_free(heap);
    osp_free(ids);
    osp_free(ds);
    return OSP_OK;
}

static void normalize_rows(float *c, int k, int d) {
    for (int j = 0; j < k; j++) {
        float *cj = c + (size_t)j * d;
        double s = 0;
        for (int i = 0; i < d; i++) s += (double)cj[i] * cj[i];
        if (s > 0) {
            float inv = (float)(1.0 / sqrt(s));
            for (int i = 0; i < d; i++) cj[i] *= inv;
        }
    }
}

/* k-means++ seeding on xs (m x d): each next centroid drawn with probability
 * proportional to the squared distance to the nearest one chosen so far. */
static int seed_plusplus(const float *xs, int64_t m, int d, int k, osp_rng *rng, int threads,
                         const osp__kernels *kern, float *c) {
    float *mind = osp_alloc((size_t)m * sizeof *mind);
    if (!mind) return OSP_ENOMEM;
    for (int64_t i = 0; i < m; i++) mind[i] = INFINITY;
    int64_t pick = (int64_t)osp_rng_below(rng, (uint64_t)m);
    for (int j = 0; j < k; j++) {
        memcpy(c + (size_t)j * d, xs + (size_t)pick * d, (size_t)d * sizeof(float));
        if (j == k - 1) break;
        const float *cj = c + (size_t)j * d;
        double total = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total) if (m * d >= 65536)
        for (int64_t i = 0; i < m; i++) {
            float di = kern->l2sq(xs + (size_t)i * d, cj, (size_t)d);
            if (di < mind[i]) mind[i] = di;
            total += mind[i];
        }
        if (!(total > 0)) {
            /* every point sits on a chosen centroid: duplicates in the data;
             * any point will do */
            pick = (int64_t)osp_rng_below(rng, (uint64_t)m);
            continue;
        }
        double r = (double)osp_rng_uniform(rng) * total, acc = 0;
        pick = m - 1;
        for (int64_t i = 0; i < m; i++) {
            acc += mind[i];
            if (acc > r) {
                pick = i;
                break;
            }
        }
    }
    osp_free(mind);
    return OSP_OK;
}

int osp__kmeans_train(const float *x, int64_t n, int d, int k, int iters, int max_per_centroid,
                      uint64_t seed, int threads, int spherical, float *centroids) {
    if (k < 1 || n < k) return osp_error(OSP_EINVAL, "k-means: %lld points for %d clusters",
                                          (long long)n, k);
    if (threads < 1) threads = 1;
    const osp__kernels *kern = osp__kernels_best();
    osp_rng rng;
    osp_rng_seed(&rng, seed);
    int rc = OSP_OK;

    /* Training sample: all points, or a random subset of m. */
    int64_t m = n;
    if (max_per_centroid > 0 && n / k > max_per_centroid) m = (int64_t)k * max_per_centroid;
    float *xs = NULL;
    int64_t *perm = NULL;
    if (m < n) {
        perm = osp_alloc((size_t)n * sizeof *perm);
        xs = osp_alloc((size_t)m * d * sizeof *xs);
        if (!perm || !xs) {
            rc = OSP_ENOMEM;
            goto out;
        }
        for (int64_t i = 0; i < n; i++) perm[i] = i;
        /* a partial Fisher-Yates shuffle draws m distinct points */
        for (int64_t i = 0; i < m; i++) {
            int64_t j = i + (int64_t)osp_rng_below(&rng, (uint64_t)(n - i));
            int64_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
            memcpy(xs + (size_t)i * d, x + (size_t)perm[i] * d, (size_t)d * sizeof(float));
        }
    }
    const float *xt = xs ? xs : x;

    /* Seeding is sequential in k, so it runs on a smaller prefix of the
     * (already random) sample: 32 points per centroid seed as well as all. */
    int64_t m_seed = m;
    if (m_seed > (int64_t)k * 32) m_seed = (int64_t)k * 32;
    rc = seed_plusplus(xt, m_seed, d, k, &rng, threads, kern, centroids);
    if (rc) goto out;
    if (spherical) normalize_rows(centroids, k, d);

    int32_t *assign = osp_alloc((size_t)m * sizeof *assign);
    float *cnorms = osp_alloc((size_t)k * sizeof *cnorms);
    double *sums = osp_calloc((size_t)k * d, sizeof *sums);
    int64_t *counts = osp_calloc((size_t)k, sizeof *counts);
    if (!assign || !cnorms || !sums || !counts) {
        rc = OSP_ENOMEM;
        goto out2;
    }
    for (int it = 0; it < iters; it++) {
        osp__norms(centroids, k, d, kern, cnorms);
        rc = osp__kmeans_nearest(xt, m, d, centroids, cnorms, k, 1, 0, threads, kern, assign, NULL);
        if (rc) goto out2;
        memset(sums, 0, (size_t)k * d * sizeof *sums);
        memset(counts, 0, (size_t)k * sizeof *counts);
        /* Sums in this thread: m x d adds are cheap next to the sgemm, and
         * an OpenMP region right after sgemm would fight BLAS's threads. */
        for (int64_t i = 0; i < m; i++) {
            const float *xi = xt + (size_t)i * d;
            double *s = sums + (size_t)assign[i] * d;
            for (int j = 0; j < d; j++) s[j] += xi[j];
            counts[assign[i]]++;
        }
        for (int j = 0; j < k; j++) {
            if (!counts[j]) continue;
            float *cj = centroids + (size_t)j * d;
            for (int i = 0; i < d; i++) cj[i] = (float)(sums[(size_t)j * d + i] / (double)counts[j]);
        }
        /* Empty clusters take half of the largest one: a copy of its
         * centroid nudged apart, as FAISS does. */
        for (int j = 0; j < k; j++) {
            if (counts[j]) continue;
            int big = 0;
            for (int i = 1; i < k; i++)
                if (counts[i] > counts[big]) big = i;
            float *cj = centroids + (size_t)j * d, *cb = centroids + (size_t)big * d;
            for (int i = 0; i < d; i++) {
                float eps = (i % 2 ? 1.0f : -1.0f) / 1024.0f;
                cj[i] = cb[i] * (1.0f + eps) + eps * 1e-3f;
                cb[i] = cb[i] * (1.0f - eps) - eps * 1e-3f;
            }
            counts[j] = counts[big] / 2;
            counts[big] -= counts[j];
        }
        if (spherical) normalize_rows(centroids, k, d);
    }
out2:
    osp_free(assign);
    osp_free(cnorms);
    osp_free(sums);
    osp_free(counts);
out:
    osp_free(xs);
    osp_free(perm);
    if (rc == OSP_ENOMEM) osp_error(rc, "k-means: out of memory (%lld x %d points, %d clusters)",
                                    (long long)n, d, k);
    return rc;
}
