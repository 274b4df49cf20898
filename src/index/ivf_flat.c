/* IVF-Flat: k-means lists holding full vectors. A query scans the nprobe
 * lists whose centroids are nearest; with nprobe = nlist it is exact. */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "index/ivf.h"
#include "index/select.h"
#include "index/topk.h"

typedef struct ivf_flat {
    osp_index base;
    osp__ivf ivf;
} ivf_flat;

static int ivff_init(osp_index *ix) {
    osp__ivf_setup(&((ivf_flat *)ix)->ivf, ix, (size_t)ix->params.dim * sizeof(float));
    return OSP_OK;
}

static void ivff_destroy(osp_index *ix) { osp__ivf_destroy(&((ivf_flat *)ix)->ivf); }

static int ivff_train(osp_index *ix, const float *x, int64_t n) {
    return osp__ivf_train(&((ivf_flat *)ix)->ivf, ix, x, n);
}

static int ivff_add(osp_index *ix, const void *xv, const int64_t *ids, int64_t n) {
    osp__ivf *v = &((ivf_flat *)ix)->ivf;
    const float *x = xv;
    int32_t *assign = osp_alloc((size_t)n * sizeof *assign);
    if (!assign) return OSP_ENOMEM;
    int rc = osp__ivf_probe(v, ix, x, n, 1, osp__threads(ix), assign, NULL);
    if (!rc) rc = osp__ivf_reserve(v, assign, n);
    if (!rc)
        for (int64_t i = 0; i < n; i++) {
            osp__ivf_append(v, ix, assign[i], x + (size_t)i * v->d, ids[i]);
            if ((i & 65535) == 65535) osp__progress(ix, i + 1, n);
        }
    osp_free(assign);
    return rc;
}

static int ivff_remove(osp_index *ix, const int64_t *ids, int64_t n, int64_t *removed) {
    return osp__ivf_remove(&((ivf_flat *)ix)->ivf, ix, ids, n, removed);
}

/* Vectors per chunk of a list scan: distances for a chunk, then the
 * vectorised selection over them. */
#define SCAN_CHUNK 256

static void scan_list(const osp_index *ix, const osp__ivf_list *l, const float *q,
                      const osp__search_ctx *sc, osp__select_fn select, float *buf, osp__hit *h,
                      int *nh) {
    size_t d = (size_t)ix->params.dim;
    const float *x = (const float *)l->codes;
    for (uint32_t j = 0; j < l->n; j += SCAN_CHUNK) {
        int c = (int)(l->n - j < SCAN_CHUNK ? l->n - j : SCAN_CHUNK);
        ix->dist_many(q, x + (size_t)j * d, (size_t)c, d, buf);
        select(buf, NULL, 1.0f, c, l->ids + j, 0, sc, h, nh, sc->k);
    }
}

static int ivff_search(const osp_index *ix, const void *qv, int64_t nq, const osp__search_ctx *sc,
                       int64_t *ids, float *dist) {
    const osp__ivf *v = &((const ivf_flat *)ix)->ivf;
    const float *q = qv;
    int k = sc->k, np = osp__ivf_nprobe(v, sc);
    int all = np >= v->nlist;
    int32_t *lists = all ? NULL : osp_alloc((size_t)nq * np * sizeof *lists);
    osp__hit *heaps = osp_alloc((size_t)sc->threads * k * sizeof *heaps);
    float *bufs = osp_alloc((size_t)sc->threads * SCAN_CHUNK * sizeof *bufs);
    osp__select_fn select = osp__select_for(ix->kern->level);
    int rc = heaps && bufs && (all || lists) ? OSP_OK : OSP_ENOMEM;
    if (!rc && !all) rc = osp__ivf_probe(v, ix, q, nq, np, sc->threads, lists, NULL);
    if (!rc) {
#pragma omp parallel for num_threads(sc->threads) schedule(dynamic, 1) if (sc->threads > 1)
        for (int64_t i = 0; i < nq; i++) {
            int t = 0;
#ifdef _OPENMP
            t = omp_get_thread_num();
#endif
            osp__hit *h = heaps + (size_t)t * k;
            int nh = 0;
            const float *qi = q + (size_t)i * v->d;
            for (int p = 0; p < np; p++) {
                int l = all ? p : lists[(size_t)i * np + p];
                if (l >= 0)
                    scan_list(ix, &v->lists[l], qi, sc, select, bufs + (size_t)t * SCAN_CHUNK, h, &nh);
            }
            osp__topk_finish(h, nh, k, ids + (size_t)i * k, dist + (size_t)i * k);
        }
    }
    osp_free(lists);
    osp_free(heaps);
    osp_free(bufs);
    return rc;
}

static int ivff_save(const osp_index *ix, osp__writer *w) {
    if (ix->trained) osp__ivf_save(&((const ivf_flat *)ix)->ivf, w);
    return OSP_OK;
}

static int ivff_load(osp_index *ix, const osp__reader *r) {
    osp__ivf *v = &((ivf_flat *)ix)->ivf;
    v->nlist = ix->params.nlist;
    return osp__ivf_load(v, ix, r);
}

static void ivff_info(const osp_index *ix, osp_index_info *info) {
    info->memory_bytes += osp__ivf_bytes(&((const ivf_flat *)ix)->ivf);
}

const osp__index_ops osp__ivf_flat_ops = {
    .type = OSP_INDEX_IVF_FLAT,
    .struct_size = sizeof(ivf_flat),
    .init = ivff_init,
    .train = ivff_train,
    .add = ivff_add,
    .remove = ivff_remove,
    .search = ivff_search,
    .save = ivff_save,
    .load = ivff_load,
    .destroy = ivff_destroy,
    .info = ivff_info,
};
