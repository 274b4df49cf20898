/* Flat index: exact search over all vectors.
 *
 * Vectors sit in one dense array (n x d); remove moves the last vector into
 * the hole, so there are never holes to skip. A few queries are scanned with
 * the SIMD distance kernels (in parallel over queries with OpenMP); batches
 * go through sgemm in tiles (queries x base block), each row of the tile
 * then feeding that query's top-k heap. Batches are parallel through BLAS's
 * threads (osp_threads_set), not the search's thread count: interleaving
 * OpenMP regions with sgemm calls makes the two thread pools spin against
 * each other (MACHINE.md measured 2 threads slower than 1). */
#include <math.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "index/index_impl.h"
#include "index/select.h"
#include "index/topk.h"

/* Batches of at least this many queries use sgemm. */
#define GEMM_MIN_QUERIES 8
/* Tile of the distance matrix: queries x base vectors (4 MB of floats, so it
 * stays in L3 between sgemm writing it and the heaps reading it). */
#define TILE_QUERIES 512
#define TILE_BASE 2048

#define TAG_VECS OSP__TAG('V', 'E', 'C', 'S')
#define TAG_IDS OSP__TAG('I', 'D', 'S', ' ')
#define TAG_NORMS OSP__TAG('N', 'R', 'M', 'S')

typedef struct flat {
    osp_index base;
    float *x;     /* n x d (capacity cap when owned) */
    int64_t *ids; /* n */
    float *norms; /* n squared norms, for L2 batches */
    int64_t n, cap;
    int owned;    /* 0 while the arrays are borrowed from a loaded file */
} flat;

static int flat_init(osp_index *ix) {
    flat *f = (flat *)ix;
    f->owned = 1;
    return OSP_OK;
}

static void flat_destroy(osp_index *ix) {
    flat *f = (flat *)ix;
    if (f->owned) {
        osp_free(f->x);
        osp_free(f->ids);
        osp_free(f->norms);
    }
    f->x = NULL;
    f->ids = NULL;
    f->norms = NULL;
}

/* Owned arrays with room for need vectors (copying borrowed ones). */
static int flat_reserve(flat *f, int64_t need) {
    if (f->owned && need <= f->cap) return OSP_OK;
    size_t d = (size_t)f->base.params.dim;
    size_t cap = f->owned ? osp__grow((size_t)f->cap, (size_t)need) : (size_t)need;
    size_t xb;
    if (osp_mul_size(cap, d * sizeof(float), &xb))
        return osp_error(OSP_ENOMEM, "flat index: %zu vectors are too many", cap);
    float *x = osp_alloc(xb);
    int64_t *ids = osp_alloc(cap * sizeof *ids);
    float *norms = osp_alloc(cap * sizeof *norms);
    if (!x || !ids || !norms) {
        osp_free(x);
        osp_free(ids);
        osp_free(norms);
        return osp_error(OSP_ENOMEM, "flat index: out of memory for %zu vectors", cap);
    }
    size_t n = (size_t)f->n;
    if (n) {
        memcpy(x, f->x, n * d * sizeof(float));
        memcpy(ids, f->ids, n * sizeof *ids);
        memcpy(norms, f->norms, n * sizeof *norms);
    }
    if (f->owned) {
        osp_free(f->x);
        osp_free(f->ids);
        osp_free(f->norms);
    }
    f->x = x;
    f->ids = ids;
    f->norms = norms;
    f->cap = (int64_t)cap;
    f->owned = 1;
    return OSP_OK;
}

static int flat_add(osp_index *ix, const void *xv, const int64_t *ids, int64_t n) {
    flat *f = (flat *)ix;
    const float *x = xv;
    size_t d = (size_t)ix->params.dim;
    int rc = flat_reserve(f, f->n + n);
    if (rc) return rc;
    memcpy(f->x + (size_t)f->n * d, x, (size_t)n * d * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        int64_t s = f->n + i;
        f->ids[s] = ids[i];
        f->norms[s] = -ix->kern->ndot(x + (size_t)i * d, x + (size_t)i * d, d);
        osp__idmap_put(&ix->map, ids[i], (uint64_t)s);
    }
    f->n += n;
    return OSP_OK;
}

static int flat_remove(osp_index *ix, const int64_t *ids, int64_t n, int64_t *removed) {
    flat *f = (flat *)ix;
    size_t d = (size_t)ix->params.dim;
    int rc = flat_reserve(f, f->n);
    if (rc) return rc;
    for (int64_t i = 0; i < n; i++) {
        uint64_t slot;
        if (!osp__idmap_get(&ix->map, ids[i], &slot)) continue;
        osp__idmap_del(&ix->map, ids[i]);
        int64_t last = f->n - 1;
        if ((int64_t)slot != last) {
            memcpy(f->x + slot * d, f->x + (size_t)last * d, d * sizeof(float));
            f->ids[slot] = f->ids[last];
            f->norms[slot] = f->norms[last];
            osp__idmap_put(&ix->map, f->ids[slot], slot);
        }
        f->n--;
        (*removed)++;
    }
    return OSP_OK;
}

/* Vectors per chunk of a one-query scan: distances for a chunk, then the
 * vectorised selection over them (4 KB of distances stays in L1). */
#define SCAN_CHUNK 1024

/* One query against all vectors with the distance kernel. */
static void scan_one(const flat *f, const float *q, const osp__search_ctx *sc, osp__hit *heap,
                     float *buf, int64_t *ids, float *dist) {
    size_t d = (size_t)f->base.params.dim;
    osp__select_fn select = osp__select_for(f->base.kern->level);
    int nh = 0, k = sc->k;
    for (int64_t j = 0; j < f->n; j += SCAN_CHUNK) {
        int c = (int)(f->n - j < SCAN_CHUNK ? f->n - j : SCAN_CHUNK);
        f->base.dist_many(q, f->x + (size_t)j * d, (size_t)c, d, buf);
        select(buf, NULL, 1.0f, c, f->ids + j, 0, sc, heap, &nh, k);
    }
    osp__topk_finish(heap, nh, k, ids, dist);
}

static int search_kernel(const flat *f, const float *q, int64_t nq, const osp__search_ctx *sc,
                         int64_t *ids, float *dist) {
    size_t d = (size_t)f->base.params.dim;
    int k = sc->k;
    osp__hit *heaps = osp_alloc((size_t)sc->threads * (size_t)k * sizeof *heaps);
    float *bufs = osp_alloc((size_t)sc->threads * SCAN_CHUNK * sizeof *bufs);
    if (!heaps || !bufs) {
        osp_free(heaps);
        osp_free(bufs);
        return OSP_ENOMEM;
    }
#pragma omp parallel for num_threads(sc->threads) schedule(dynamic, 1) if (sc->threads > 1)
    for (int64_t i = 0; i < nq; i++) {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        scan_one(f, q + (size_t)i * d, sc, heaps + (size_t)t * k, bufs + (size_t)t * SCAN_CHUNK,
                 ids + (size_t)i * k, dist + (size_t)i * k);
    }
    osp_free(heaps);
    osp_free(bufs);
    return OSP_OK;
}

/* Batched: sgemm fills a tile of products p = q.x^T on BLAS's threads, then
 * each row goes through the vectorised selection as |x|^2 - 2 q.x for L2
 * (|q|^2 added at the end) or -q.x for inner product. */
static int search_gemm(const flat *f, const float *q, int64_t nq, const osp__search_ctx *sc,
                       int64_t *ids, float *dist) {
    int d = f->base.params.dim, k = sc->k;
    int l2 = f->base.params.metric == OSP_INDEX_METRIC_L2;
    osp__select_fn select = osp__select_for(f->base.kern->level);
    size_t qt = TILE_QUERIES, bt = TILE_BASE;
    float *tile = osp_alloc(qt * bt * sizeof *tile);
    osp__hit *heaps = osp_alloc(qt * (size_t)k * sizeof *heaps);
    int *nh = osp_alloc(qt * sizeof *nh);
    if (!tile || !heaps || !nh) {
        osp_free(tile);
        osp_free(heaps);
        osp_free(nh);
        return OSP_ENOMEM;
    }
    for (int64_t q0 = 0; q0 < nq; q0 += (int64_t)qt) {
        int nqt = (int)(nq - q0 < (int64_t)qt ? nq - q0 : (int64_t)qt);
        const float *qb = q + (size_t)q0 * d;
        memset(nh, 0, (size_t)nqt * sizeof *nh);
        for (int64_t b0 = 0; b0 < f->n; b0 += (int64_t)bt) {
            int nbt = (int)(f->n - b0 < (int64_t)bt ? f->n - b0 : (int64_t)bt);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nqt, nbt, d, 1.0f, qb, d,
                        f->x + (size_t)b0 * d, d, 0.0f, tile, nbt);
            for (int i = 0; i < nqt; i++)
                select(tile + (size_t)i * nbt, l2 ? f->norms + b0 : NULL, l2 ? -2.0f : -1.0f, nbt,
                       f->ids + b0, 0, sc, heaps + (size_t)i * k, &nh[i], k);
        }
        for (int i = 0; i < nqt; i++) {
            size_t o = (size_t)(q0 + i) * k;
            osp__topk_finish(heaps + (size_t)i * k, nh[i], k, ids + o, dist + o);
            if (l2) {
                const float *qi = qb + (size_t)i * d;
                float qn = -f->base.kern->ndot(qi, qi, (size_t)d);
                for (int j = 0; j < nh[i]; j++) dist[o + j] = fmaxf(dist[o + j] + qn, 0.0f);
            }
        }
    }
    osp_free(tile);
    osp_free(heaps);
    osp_free(nh);
    return OSP_OK;
}

static int flat_search(const osp_index *ix, const void *qv, int64_t nq, const osp__search_ctx *sc,
                       int64_t *ids, float *dist) {
    const flat *f = (const flat *)ix;
    if (nq >= GEMM_MIN_QUERIES) return search_gemm(f, qv, nq, sc, ids, dist);
    return search_kernel(f, qv, nq, sc, ids, dist);
}

static int flat_save(const osp_index *ix, osp__writer *w) {
    const flat *f = (const flat *)ix;
    size_t n = (size_t)f->n, d = (size_t)ix->params.dim;
    osp__writer_add(w, TAG_VECS, f->x, n * d * sizeof(float));
    osp__writer_add(w, TAG_IDS, f->ids, n * sizeof(int64_t));
    osp__writer_add(w, TAG_NORMS, f->norms, n * sizeof(float));
    return OSP_OK;
}

static int flat_load(osp_index *ix, const osp__reader *r) {
    flat *f = (flat *)ix;
    size_t d = (size_t)ix->params.dim, n = (size_t)r->count, xb;
    if (r->count > (uint64_t)r->len / 8 || osp_mul_size(n, d * sizeof(float), &xb))
        return osp_error(OSP_ECORRUPT, "%s: vector count %llu does not fit the file", r->name,
                         (unsigned long long)r->count);
    const void *x, *ids, *norms;
    int rc = osp__reader_get(r, TAG_VECS, xb, &x);
    if (!rc) rc = osp__reader_get(r, TAG_IDS, n * sizeof(int64_t), &ids);
    if (!rc) rc = osp__reader_get(r, TAG_NORMS, n * sizeof(float), &norms);
    if (rc) return rc;
    f->owned = 0;
    f->x = (float *)x;
    f->ids = (int64_t *)ids;
    f->norms = (float *)norms;
    f->n = f->cap = (int64_t)n;
    rc = osp__idmap_reserve(&ix->map, n);
    if (rc) return rc;
    for (size_t s = 0; s < n; s++) {
        int64_t id = f->ids[s];
        if ((rc = osp__idmap_put_loaded(&ix->map, id, s, r->name))) return rc;
    }
    return OSP_OK;
}

static void flat_info(const osp_index *ix, osp_index_info *info) {
    const flat *f = (const flat *)ix;
    if (f->owned)
        info->memory_bytes +=
            (size_t)f->cap * ((size_t)ix->params.dim * sizeof(float) + sizeof(int64_t) + sizeof(float));
}

const osp__index_ops osp__flat_ops = {
    .type = OSP_INDEX_FLAT,
    .struct_size = sizeof(flat),
    .init = flat_init,
    .train = NULL,
    .add = flat_add,
    .remove = flat_remove,
    .search = flat_search,
    .save = flat_save,
    .load = flat_load,
    .destroy = flat_destroy,
    .info = flat_info,
};
