/* Binary index: exact Hamming search over packed codes with popcount.
 *
 * Codes sit in one dense array (n x dim/8 bytes); remove moves the last code
 * into the hole. This is the base for learned hash codes: anything that maps
 * an image to bits can be searched here. */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "index/index_impl.h"
#include "index/topk.h"

#define TAG_CODES OSP__TAG('C', 'O', 'D', 'E')
#define TAG_IDS OSP__TAG('I', 'D', 'S', ' ')

typedef struct binary {
    osp_index base;
    uint8_t *codes; /* n x nbytes */
    int64_t *ids;   /* n */
    int64_t n, cap;
    int owned;      /* 0 while borrowed from a loaded file */
} binary;

static size_t code_bytes(const osp_index *ix) { return (size_t)ix->params.dim / 8; }

static int binary_init(osp_index *ix) {
    ((binary *)ix)->owned = 1;
    return OSP_OK;
}

static void binary_destroy(osp_index *ix) {
    binary *b = (binary *)ix;
    if (b->owned) {
        osp_free(b->codes);
        osp_free(b->ids);
    }
    b->codes = NULL;
    b->ids = NULL;
}

static int binary_reserve(binary *b, int64_t need) {
    if (b->owned && need <= b->cap) return OSP_OK;
    size_t nb = code_bytes(&b->base);
    size_t cap = b->owned ? osp__grow((size_t)b->cap, (size_t)need) : (size_t)need;
    size_t cb;
    if (osp_mul_size(cap, nb, &cb)) return osp_error(OSP_ENOMEM, "binary index: too many codes");
    uint8_t *codes = osp_alloc(cb);
    int64_t *ids = osp_alloc(cap * sizeof *ids);
    if (!codes || !ids) {
        osp_free(codes);
        osp_free(ids);
        return osp_error(OSP_ENOMEM, "binary index: out of memory for %zu codes", cap);
    }
    if (b->n) {
        memcpy(codes, b->codes, (size_t)b->n * nb);
        memcpy(ids, b->ids, (size_t)b->n * sizeof *ids);
    }
    if (b->owned) {
        osp_free(b->codes);
        osp_free(b->ids);
    }
    b->codes = codes;
    b->ids = ids;
    b->cap = (int64_t)cap;
    b->owned = 1;
    return OSP_OK;
}

static int binary_add(osp_index *ix, const void *x, const int64_t *ids, int64_t n) {
    binary *b = (binary *)ix;
    size_t nb = code_bytes(ix);
    int rc = binary_reserve(b, b->n + n);
    if (rc) return rc;
    memcpy(b->codes + (size_t)b->n * nb, x, (size_t)n * nb);
    for (int64_t i = 0; i < n; i++) {
        b->ids[b->n + i] = ids[i];
        osp__idmap_put(&ix->map, ids[i], (uint64_t)(b->n + i));
    }
    b->n += n;
    return OSP_OK;
}

static int binary_remove(osp_index *ix, const int64_t *ids, int64_t n, int64_t *removed) {
    binary *b = (binary *)ix;
    size_t nb = code_bytes(ix);
    int rc = binary_reserve(b, b->n);
    if (rc) return rc;
    for (int64_t i = 0; i < n; i++) {
        uint64_t slot;
        if (!osp__idmap_get(&ix->map, ids[i], &slot)) continue;
        osp__idmap_del(&ix->map, ids[i]);
        int64_t last = b->n - 1;
        if ((int64_t)slot != last) {
            memcpy(b->codes + slot * nb, b->codes + (size_t)last * nb, nb);
            b->ids[slot] = b->ids[last];
            osp__idmap_put(&ix->map, b->ids[slot], slot);
        }
        b->n--;
        (*removed)++;
    }
    return OSP_OK;
}

static int binary_search(const osp_index *ix, const void *qv, int64_t nq,
                         const osp__search_ctx *sc, int64_t *ids, float *dist) {
    const binary *b = (const binary *)ix;
    const uint8_t *q = qv;
    size_t nb = code_bytes(ix);
    int k = sc->k;
    osp__hamming_fn ham = ix->kern->hamming;
    osp__hit *heaps = osp_alloc((size_t)sc->threads * (size_t)k * sizeof *heaps);
    if (!heaps) return OSP_ENOMEM;
#pragma omp parallel for num_threads(sc->threads) schedule(dynamic, 1) if (sc->threads > 1)
    for (int64_t i = 0; i < nq; i++) {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        osp__hit *h = heaps + (size_t)t * k;
        const uint8_t *qi = q + (size_t)i * nb;
        int nh = 0;
        float bound = INFINITY;
        for (int64_t j = 0; j < b->n; j++) {
            float dj = (float)ham(qi, b->codes + (size_t)j * nb, nb);
            if (dj > bound) continue;
            if (sc->filter && !osp__allowed(sc, b->ids[j])) continue;
            osp__topk_push(h, &nh, k, dj, b->ids[j]);
            bound = osp__topk_bound(h, nh, k);
        }
        osp__topk_finish(h, nh, k, ids + (size_t)i * k, dist + (size_t)i * k);
    }
    osp_free(heaps);
    return OSP_OK;
}

static int binary_save(const osp_index *ix, osp__writer *w) {
    const binary *b = (const binary *)ix;
    osp__writer_add(w, TAG_CODES, b->codes, (size_t)b->n * code_bytes(ix));
    osp__writer_add(w, TAG_IDS, b->ids, (size_t)b->n * sizeof(int64_t));
    return OSP_OK;
}

static int binary_load(osp_index *ix, const osp__reader *r) {
    binary *b = (binary *)ix;
    size_t n = (size_t)r->count, cb;
    if (r->count > (uint64_t)r->len / 8 || osp_mul_size(n, code_bytes(ix), &cb))
        return osp_error(OSP_ECORRUPT, "%s: code count %llu does not fit the file", r->name,
                         (unsigned long long)r->count);
    const void *codes, *ids;
    int rc = osp__reader_get(r, TAG_CODES, cb, &codes);
    if (!rc) rc = osp__reader_get(r, TAG_IDS, n * sizeof(int64_t), &ids);
    if (rc) return rc;
    b->owned = 0;
    b->codes = (uint8_t *)codes;
    b->ids = (int64_t *)ids;
    b->n = b->cap = (int64_t)n;
    rc = osp__idmap_reserve(&ix->map, n);
    if (rc) return rc;
    for (size_t s = 0; s < n; s++) {
        int64_t id = b->ids[s];
        if ((rc = osp__idmap_put_loaded(&ix->map, id, s, r->name))) return rc;
    }
    return OSP_OK;
}

static void binary_info(const osp_index *ix, osp_index_info *info) {
    const binary *b = (const binary *)ix;
    if (b->owned) info->memory_bytes += (size_t)b->cap * (code_bytes(ix) + sizeof(int64_t));
}

const osp__index_ops osp__binary_ops = {
    .type = OSP_INDEX_BINARY,
    .struct_size = sizeof(binary),
    .init = binary_init,
    .train = NULL,
    .add = binary_add,
    .remove = binary_remove,
    .search = binary_search,
    .save = binary_save,
    .load = binary_load,
    .destroy = binary_destroy,
    .info = binary_info,
};
