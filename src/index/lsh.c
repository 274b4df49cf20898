/* LSH: random-hyperplane (SimHash) hash tables with multi-probe, for cosine.
 *
 * Each of T tables hashes a vector to nbits sign bits of its projections on
 * random Gaussian hyperplanes; vectors at a small angle share buckets. A
 * query looks in its own bucket and, per table, in the nprobe - 1 buckets
 * next most likely to hold neighbours: those reached by flipping the bits
 * whose projections were closest to zero, in increasing order of the summed
 * |projection| (the perturbation sequence of Lv et al., "Multi-probe LSH",
 * VLDB 2007). Candidates are ranked by their exact cosine distance, so the
 * vectors are kept.
 *
 * Slots: a removed vector's slot goes on a free list and is taken by the
 * next add; buckets hold slots, and a removed slot leaves its buckets at
 * once, so searches never meet it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "index/index_impl.h"
#include "index/topk.h"
#include "index/visited.h"

#define TAG_PLANES OSP__TAG('P', 'L', 'N', 'S')
#define TAG_VECS OSP__TAG('V', 'E', 'C', 'S')
#define TAG_IDS OSP__TAG('I', 'D', 'S', ' ')
#define TAG_KEYS OSP__TAG('K', 'E', 'Y', 'S')

/* Buckets over all tables; past this the empty buckets alone would cost
 * more memory than they save time. */
#define MAX_BUCKETS ((size_t)1 << 22)

typedef struct bucket {
    uint32_t *slots;
    uint32_t n, cap;
} bucket;

typedef struct lsh {
    osp_index base;
    int nbits, ntables;
    float *planes;      /* (ntables * nbits) x d */
    float *x;           /* cap x d */
    int64_t *ids;       /* cap; -1 = free slot */
    uint32_t *keys;     /* cap x ntables */
    bucket *buckets;    /* ntables x 2^nbits */
    uint32_t *free_slots;
    int64_t n_free, cap_free;
    int64_t n_slots, cap;
    int owned;          /* planes, x, ids, keys are owned (else borrowed from a file) */
    int pool_ready;
    osp__visited_pool vpool;
} lsh;

static size_t n_buckets(const lsh *h) { return (size_t)h->ntables << h->nbits; }

/* Tables and hyperplanes for nbits per key. */
static int lsh_setup(lsh *h, int nbits) {
    osp_index *ix = &h->base;
    h->nbits = nbits;
    ix->params.lsh_nbits = nbits;
    if (n_buckets(h) > MAX_BUCKETS)
        return osp_error(OSP_EINVAL, "lsh: %d tables x 2^%d buckets is too many (at most 2^22)",
                         h->ntables, h->nbits);
    h->buckets = osp_calloc(n_buckets(h), sizeof *h->buckets);
    size_t np = (size_t)h->ntables * h->nbits * ix->params.dim;
    h->planes = osp_alloc(np * sizeof *h->planes);
    if (!h->buckets || !h->planes) return osp_error(OSP_ENOMEM, "lsh: out of memory for the tables");
    osp_rng rng;
    osp_rng_seed(&rng, ix->params.seed);
    for (size_t i = 0; i < np; i++) h->planes[i] = osp_rng_normal(&rng);
    return OSP_OK;
}

static int lsh_init(osp_index *ix) {
    lsh *h = (lsh *)ix;
    h->ntables = ix->params.lsh_tables;
    h->owned = 1;
    if (osp__visited_pool_init(&h->vpool)) return OSP_ENOMEM;
    h->pool_ready = 1;
    /* nbits 0: chosen by the first add from its size */
    return ix->params.lsh_nbits ? lsh_setup(h, ix->params.lsh_nbits) : OSP_OK;
}

static void lsh_destroy(osp_index *ix) {
    lsh *h = (lsh *)ix;
    if (h->owned) {
        osp_free(h->planes);
        osp_free(h->x);
        osp_free(h->ids);
        osp_free(h->keys);
    }
    if (h->buckets)
        for (size_t b = 0; b < n_buckets(h); b++) osp_free(h->buckets[b].slots);
    osp_free(h->buckets);
    osp_free(h->free_slots);
    if (h->pool_ready) osp__visited_pool_destroy(&h->vpool);
    h->planes = NULL;
    h->x = NULL;
    h->ids = NULL;
    h->keys = NULL;
    h->buckets = NULL;
    h->free_slots = NULL;
}

/* Projections of v on table t's planes (proj: nbits) and the key. */
static uint32_t hash_table(const lsh *h, int t, const float *v, float *proj) {
    size_t d = (size_t)h->base.params.dim;
    uint32_t key = 0;
    for (int b = 0; b < h->nbits; b++) {
        float p = -h->base.kern->ndot(v, h->planes + ((size_t)t * h->nbits + b) * d, d);
        if (proj) proj[b] = p;
        key |= (uint32_t)(p > 0) << b;
    }
    return key;
}

/* Owned arrays with room for need slots. */
static int lsh_reserve(lsh *h, int64_t need) {
    if (h->owned && need <= h->cap) return OSP_OK;
    size_t d = (size_t)h->base.params.dim, T = (size_t)h->ntables;
    size_t cap = h->owned ? osp__grow((size_t)h->cap, (size_t)need) : (size_t)need;
    if (cap >= UINT32_MAX) return osp_error(OSP_ERANGE, "lsh: more than 2^32 slots");
    float *x = osp_alloc(cap * d * sizeof *x);
    int64_t *ids = osp_alloc(cap * sizeof *ids);
    uint32_t *keys = osp_alloc(cap * T * sizeof *keys);
    float *planes = h->owned ? h->planes : osp__dup(h->planes, T * h->nbits * d * sizeof(float));
    if (!x || !ids || !keys || !planes) {
        osp_free(x);
        osp_free(ids);
        osp_free(keys);
        if (planes != h->planes) osp_free(planes);
        return osp_error(OSP_ENOMEM, "lsh: out of memory for %zu vectors", cap);
    }
    size_t n = (size_t)h->n_slots;
    if (n) {
        memcpy(x, h->x, n * d * sizeof *x);
        memcpy(ids, h->ids, n * sizeof *ids);
        memcpy(keys, h->keys, n * T * sizeof *keys);
    }
    if (h->owned) {
        osp_free(h->x);
        osp_free(h->ids);
        osp_free(h->keys);
    }
    h->x = x;
    h->ids = ids;
    h->keys = keys;
    h->planes = planes;
    h->cap = (int64_t)cap;
    h->owned = 1;
    return OSP_OK;
}

static int bucket_push(bucket *b, uint32_t slot) {
    if (b->n == b->cap) {
        size_t cap = osp__grow(b->cap, (size_t)b->n + 1);
        uint32_t *s = osp__realloc(b->slots, b->n * sizeof *s, cap * sizeof *s);
        if (!s) return OSP_ENOMEM;
        b->slots = s;
        b->cap = (uint32_t)cap;
    }
    b->slots[b->n++] = slot;
    return OSP_OK;
}

static void bucket_drop(bucket *b, uint32_t slot) {
    for (uint32_t i = 0; i < b->n; i++)
        if (b->slots[i] == slot) {
            b->slots[i] = b->slots[--b->n];
            return;
        }
}

static int lsh_add(osp_index *ix, const void *xv, const int64_t *ids, int64_t n) {
    lsh *h = (lsh *)ix;
    const float *x = xv;
    size_t d = (size_t)ix->params.dim, T = (size_t)h->ntables;
    if (!h->nbits) {
        /* about 16 vectors per bucket: fewer bits leave long buckets to
         * scan, more leave neighbours in buckets the probes never reach */
        int nbits = 4;
        while (nbits < 16 && ((int64_t)16 << (nbits + 1)) <= n) nbits++;
        while (((size_t)h->ntables << nbits) > MAX_BUCKETS) nbits--;
        int rc = lsh_setup(h, nbits);
        if (rc) return rc;
    }
    int64_t reuse = n < h->n_free ? n : h->n_free;
    int rc = lsh_reserve(h, h->n_slots + (n - reuse));
    if (rc) return rc;
    uint32_t *slots = osp_alloc((size_t)n * sizeof *slots);
    if (!slots) return OSP_ENOMEM;
    for (int64_t i = 0; i < n; i++)
        slots[i] = i < reuse ? h->free_slots[h->n_free - 1 - i] : (uint32_t)(h->n_slots + i - reuse);
    /* keys in parallel; buckets after, in one thread */
#pragma omp parallel for num_threads(osp__threads(ix)) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        uint32_t s = slots[i];
        memcpy(h->x + (size_t)s * d, x + (size_t)i * d, d * sizeof(float));
        for (size_t t = 0; t < T; t++) h->keys[s * T + t] = hash_table(h, (int)t, x + (size_t)i * d, NULL);
    }
    int64_t done = 0;
    for (; done < n && !rc; done++) {
        uint32_t s = slots[done];
        for (size_t t = 0; t < T && !rc; t++) {
            rc = bucket_push(&h->buckets[(t << h->nbits) + h->keys[s * T + t]], s);
            if (rc)
                for (size_t u = 0; u < t; u++)
                    bucket_drop(&h->buckets[(u << h->nbits) + h->keys[s * T + u]], s);
        }
        if (rc) break;
    }
    if (rc) {
        /* take the added ones back out so the index is as before */
        for (int64_t i = 0; i < done; i++)
            for (size_t t = 0; t < T; t++)
                bucket_drop(&h->buckets[(t << h->nbits) + h->keys[(size_t)slots[i] * T + t]], slots[i]);
        osp_free(slots);
        return osp_error(OSP_ENOMEM, "lsh: out of memory growing buckets");
    }
    for (int64_t i = 0; i < n; i++) {
        h->ids[slots[i]] = ids[i];
        osp__idmap_put(&ix->map, ids[i], slots[i]);
    }
    h->n_free -= reuse;
    h->n_slots += n - reuse;
    osp_free(slots);
    return OSP_OK;
}

static int lsh_remove(osp_index *ix, const int64_t *ids, int64_t n, int64_t *removed) {
    lsh *h = (lsh *)ix;
    size_t T = (size_t)h->ntables;
    int rc = lsh_reserve(h, h->n_slots);
    if (rc) return rc;
    if (h->cap_free < h->n_free + n) {
        size_t cap = osp__grow((size_t)h->cap_free, (size_t)(h->n_free + n));
        uint32_t *f = osp__realloc(h->free_slots, (size_t)h->n_free * sizeof *f, cap * sizeof *f);
        if (!f) return OSP_ENOMEM;
        h->free_slots = f;
        h->cap_free = (int64_t)cap;
    }
    for (int64_t i = 0; i < n; i++) {
        uint64_t slot;
        if (!osp__idmap_get(&ix->map, ids[i], &slot)) continue;
        osp__idmap_del(&ix->map, ids[i]);
        for (size_t t = 0; t < T; t++)
            bucket_drop(&h->buckets[(t << h->nbits) + h->keys[slot * T + t]], (uint32_t)slot);
        h->ids[slot] = -1;
        h->free_slots[h->n_free++] = (uint32_t)slot;
        (*removed)++;
    }
    return OSP_OK;
}

/* The multi-probe sequence for one table: masks of bits to flip, in
 * increasing order of the sum of |projection| over the flipped bits. */
typedef struct pset {
    float score;
    uint32_t set; /* over positions in sorted order */
    int max;      /* largest position in set */
} pset;

static void pset_push(pset *heap, int *n, pset p) {
    int i = (*n)++;
    while (i > 0 && heap[(i - 1) / 2].score > p.score) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = p;
}

static pset pset_pop(pset *heap, int *n) {
    pset top = heap[0], x = heap[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap[c + 1].score < heap[c].score) c++;
        if (heap[c].score >= x.score) break;
        heap[i] = heap[c];
        i = c;
    }
    if (*n) heap[i] = x;
    return top;
}

static int cmp_abs(const void *a, const void *b) {
    float x = ((const float *)a)[0], y = ((const float *)b)[0];
    return (x > y) - (x < y);
}

/* Fills masks[0..probes) (masks[0] = 0, the home bucket). */
static int probe_masks(int nbits, const float *proj, int probes, uint32_t *masks, pset *heap) {
    float order[2 * 20]; /* (|proj|, bit) pairs */
    for (int b = 0; b < nbits; b++) {
        order[2 * b] = fabsf(proj[b]);
        order[2 * b + 1] = (float)b;
    }
    qsort(order, (size_t)nbits, 2 * sizeof(float), cmp_abs);
    int got = 0, nh = 0;
    masks[got++] = 0;
    if (probes > 1) pset_push(heap, &nh, (pset){order[0], 1u, 0});
    while (got < probes && nh > 0) {
        pset p = pset_pop(heap, &nh);
        uint32_t m = 0;
        for (int i = 0; i <= p.max; i++)
            if (p.set >> i & 1) m |= 1u << (int)order[2 * i + 1];
        masks[got++] = m;
        if (p.max + 1 < nbits) {
            float next = order[2 * (p.max + 1)];
            /* shift: replace the largest position by the next one */
            pset_push(heap, &nh, (pset){p.score - order[2 * p.max] + next,
                                        (p.set & ~(1u << p.max)) | 1u << (p.max + 1), p.max + 1});
            /* expand: add the next position */
            pset_push(heap, &nh, (pset){p.score + next, p.set | 1u << (p.max + 1), p.max + 1});
        }
    }
    return got;
}

static void search_exact(const lsh *h, const float *q, const osp__search_ctx *sc, osp__hit *heap,
                         int64_t *ids, float *dist) {
    size_t d = (size_t)h->base.params.dim;
    int nh = 0, k = sc->k;
    for (int64_t s = 0; s < h->n_slots; s++) {
        if (h->ids[s] < 0 || !osp__allowed(sc, h->ids[s])) continue;
        osp__topk_push(heap, &nh, k, h->base.kern->ndot(q, h->x + (size_t)s * d, d), h->ids[s]);
    }
    osp__topk_finish(heap, nh, k, ids, dist);
}

static void search_one(const lsh *h, const float *q, const osp__search_ctx *sc, int probes,
                       osp__visited *vis, float *proj, uint32_t *masks, pset *ph, osp__hit *heap,
                       int64_t *ids, float *dist) {
    size_t d = (size_t)h->base.params.dim;
    int nh = 0, k = sc->k;
    float bound = INFINITY;
    for (int t = 0; t < h->ntables; t++) {
        uint32_t key = hash_table(h, t, q, proj);
        int np = probe_masks(h->nbits, proj, probes, masks, ph);
        for (int p = 0; p < np; p++) {
            const bucket *b = &h->buckets[((size_t)t << h->nbits) + (key ^ masks[p])];
            for (uint32_t i = 0; i < b->n; i++) {
                uint32_t s = b->slots[i];
                if (osp__visited_test_set(vis, s)) continue;
                float ds = h->base.kern->ndot(q, h->x + (size_t)s * d, d);
                if (!(ds <= bound)) continue;
                if (sc->filter && !osp__allowed(sc, h->ids[s])) continue;
                osp__topk_push(heap, &nh, k, ds, h->ids[s]);
                bound = osp__topk_bound(heap, nh, k);
            }
        }
    }
    osp__topk_finish(heap, nh, k, ids, dist);
}

static int lsh_search(const osp_index *ix, const void *qv, int64_t nq, const osp__search_ctx *sc,
                      int64_t *ids, float *dist) {
    lsh *h = (lsh *)ix;
    const float *q = qv;
    size_t d = (size_t)ix->params.dim;
    int k = sc->k, exact = osp__use_exact(sc);
    int probes = sc->nprobe > 0 ? sc->nprobe : OSP__LSH_DEFAULT_PROBES;
    if (!h->nbits) exact = 1; /* nothing added yet: an empty scan */
    if (probes > (1 << h->nbits)) probes = 1 << h->nbits;
    int T = sc->threads;
    /* per thread: top-k heap, projections, masks, perturbation heap */
    size_t per = (size_t)k * sizeof(osp__hit) + 32 * sizeof(float) + (size_t)probes * sizeof(uint32_t) +
                 (2 * (size_t)probes + 2) * sizeof(pset);
    per = (per + 63) & ~(size_t)63;
    uint8_t *scratch = osp_alloc((size_t)T * per);
    if (!scratch) return OSP_ENOMEM;
    int rc = OSP_OK;
#pragma omp parallel num_threads(T) if (T > 1)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        uint8_t *w = scratch + (size_t)t * per;
        osp__hit *heap = (osp__hit *)w;
        float *proj = (float *)(w + (size_t)k * sizeof(osp__hit));
        uint32_t *masks = (uint32_t *)(proj + 32);
        pset *ph = (pset *)(((uintptr_t)(masks + probes) + 7) & ~(uintptr_t)7);
        osp__visited *vis = exact ? NULL : osp__visited_get(&h->vpool, (size_t)h->n_slots);
        int fresh = 1; /* the set from the pool starts with a new epoch */
        if (!exact && !vis) {
#pragma omp atomic write
            rc = OSP_ENOMEM;
        } else {
#pragma omp for schedule(dynamic, 1)
            for (int64_t i = 0; i < nq; i++) {
                const float *qi = q + (size_t)i * d;
                if (exact) {
                    search_exact(h, qi, sc, heap, ids + (size_t)i * k, dist + (size_t)i * k);
                } else {
                    if (!fresh) osp__visited_next(vis);
                    fresh = 0;
                    search_one(h, qi, sc, probes, vis, proj, masks, ph, heap, ids + (size_t)i * k,
                               dist + (size_t)i * k);
                }
            }
        }
        osp__visited_put(&h->vpool, vis);
    }
    osp_free(scratch);
    return rc;
}

static int lsh_save(const osp_index *ix, osp__writer *w) {
    const lsh *h = (const lsh *)ix;
    if (!h->nbits) return OSP_OK; /* nothing added yet */
    size_t d = (size_t)ix->params.dim, n = (size_t)h->n_slots, T = (size_t)h->ntables;
    osp__writer_add(w, TAG_PLANES, h->planes, T * h->nbits * d * sizeof(float));
    osp__writer_add(w, TAG_VECS, h->x, n * d * sizeof(float));
    osp__writer_add(w, TAG_IDS, h->ids, n * sizeof(int64_t));
    osp__writer_add(w, TAG_KEYS, h->keys, n * T * sizeof(uint32_t));
    return OSP_OK;
}

static int lsh_load(osp_index *ix, const osp__reader *r) {
    lsh *h = (lsh *)ix;
    size_t d = (size_t)ix->params.dim, T = (size_t)h->ntables;
    if (!h->nbits) return OSP_OK; /* saved before the first add */
    const void *planes, *x, *ids, *keys;
    size_t ids_bytes;
    int rc = osp__reader_get(r, TAG_PLANES, T * h->nbits * d * sizeof(float), &planes);
    if (!rc) rc = osp__reader_get_any(r, TAG_IDS, &ids, &ids_bytes);
    if (rc) return rc;
    size_t n = ids_bytes / sizeof(int64_t);
    if (ids_bytes % sizeof(int64_t) || n >= UINT32_MAX)
        return osp_error(OSP_ECORRUPT, "%s: bad id section", r->name);
    rc = osp__reader_get(r, TAG_VECS, n * d * sizeof(float), &x);
    if (!rc) rc = osp__reader_get(r, TAG_KEYS, n * T * sizeof(uint32_t), &keys);
    if (rc) return rc;
    osp_free(h->planes); /* the seeded ones from init */
    h->owned = 0;
    h->planes = (float *)planes;
    h->x = (float *)x;
    h->ids = (int64_t *)ids;
    h->keys = (uint32_t *)keys;
    h->n_slots = h->cap = (int64_t)n;
    rc = osp__idmap_reserve(&ix->map, n);
    if (rc) return rc;
    size_t n_free = 0;
    for (size_t s = 0; s < n; s++) {
        int64_t id = h->ids[s];
        if (id == -1) {
            n_free++;
            continue;
        }
        for (size_t t = 0; t < T; t++)
            if (h->keys[s * T + t] >> h->nbits)
                return osp_error(OSP_ECORRUPT, "%s: hash key past %d bits", r->name, h->nbits);
        if ((rc = osp__idmap_put_loaded(&ix->map, id, s, r->name))) return rc;
    }
    h->free_slots = osp_alloc((n_free ? n_free : 1) * sizeof *h->free_slots);
    if (!h->free_slots) return OSP_ENOMEM;
    h->cap_free = (int64_t)(n_free ? n_free : 1);
    /* free slots in decreasing order, so the lowest is reused first */
    for (size_t s = n; s-- > 0;)
        if (h->ids[s] == -1) h->free_slots[h->n_free++] = (uint32_t)s;
    for (size_t s = 0; s < n; s++) {
        if (h->ids[s] == -1) continue;
        for (size_t t = 0; t < T; t++)
            if (bucket_push(&h->buckets[(t << h->nbits) + h->keys[s * T + t]], (uint32_t)s))
                return osp_error(OSP_ENOMEM, "%s: out of memory for the buckets", r->name);
    }
    return OSP_OK;
}

static void lsh_info(const osp_index *ix, osp_index_info *info) {
    const lsh *h = (const lsh *)ix;
    size_t d = (size_t)ix->params.dim, T = (size_t)h->ntables;
    info->free_slots = h->n_free;
    info->memory_bytes += n_buckets(h) * sizeof(bucket) + (size_t)h->cap_free * 4;
    for (size_t b = 0; b < n_buckets(h); b++) info->memory_bytes += h->buckets[b].cap * 4;
    if (h->owned)
        info->memory_bytes += (size_t)h->cap * (d * 4 + 8 + T * 4) + T * h->nbits * d * 4;
}

const osp__index_ops osp__lsh_ops = {
    .type = OSP_INDEX_LSH,
    .struct_size = sizeof(lsh),
    .init = lsh_init,
    .train = NULL,
    .add = lsh_add,
    .remove = lsh_remove,
    .search = lsh_search,
    .save = lsh_save,
    .load = lsh_load,
    .destroy = lsh_destroy,
    .info = lsh_info,
};
