/* HNSW: the hierarchical navigable small-world graph (Malkov & Yashunin,
 * 2016), with the neighbour-selection heuristic of hnswlib.
 *
 * Layout, as in hnswlib: level 0 is one flat block per slot,
 *   [vector: d floats | link count: u32 | M0 = 2M links: u32], padded to 64
 * bytes so vectors start on a cache line, and the whole block is written to
 * and mapped from the index file as is. Nodes above level 0 (one in M) keep
 * their upper link lists, (1 + M) u32 per level, in a small array each.
 *
 * Build: inserts run in parallel; each reads a node's links under that
 * node's striped lock and writes them under it, and only one lock is held at
 * a time. Search: the layer search (hnsw_search.h) is compiled per SIMD
 * target so the distance kernel inlines.
 *
 * Remove: the removed node's in-neighbours are relinked (heuristic choice
 * over their remaining links plus the removed node's links, two hops deep),
 * the slot is cleared and goes on a free list that the next add takes from,
 * so the graph never carries tombstones. The entry point moves to another
 * top-level node when it is removed. */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "index/index_impl.h"
#include "index/topk.h"
#include "index/visited.h"

#define TAG_HNSW OSP__TAG('H', 'N', 'S', 'W')
#define TAG_LEVEL0 OSP__TAG('L', 'V', 'L', '0')
#define TAG_IDS OSP__TAG('I', 'D', 'S', ' ')
#define TAG_LEVELS OSP__TAG('L', 'E', 'V', 'S')
#define TAG_UPPER OSP__TAG('U', 'P', 'P', 'R')

#define HNSW_EXPANDED 0x80000000u /* pool flag; slots stay below 2^31 */
#define HNSW_NONE UINT32_MAX
#define HNSW_MAX_LEVEL 32
#define HNSW_LOCKS 4096 /* striped node locks for parallel inserts */

typedef struct hcand {
    float d;
    uint32_t id; /* slot, HNSW_EXPANDED once expanded */
} hcand;

typedef struct hnsw hnsw;
typedef int (*hsearch_fn)(const hnsw *h, const float *q, int level, uint32_t ep, float epd, int L,
                          hcand *pool, osp__visited *vis, uint32_t *buf);

struct hnsw {
    osp_index base;
    int M, M0;
    double level_mult;  /* 1 / ln(M) */
    size_t elem;        /* bytes per level-0 block */
    size_t links_off;   /* offset of the link count in a block */
    uint8_t *l0;        /* cap x elem */
    int64_t *ids;       /* cap; -1 = free slot */
    uint8_t *levels;    /* cap */
    uint32_t **upper;   /* cap; levels[s] x (1 + M) u32, NULL at level 0 */
    int owned;          /* l0, ids, levels owned (else borrowed from a file) */
    int64_t n_slots, cap;
    uint32_t entry;     /* HNSW_NONE when empty */
    int max_level;      /* -1 when empty */
    uint32_t *free_slots;
    int64_t n_free, cap_free;
    uint64_t draws;     /* level draws so far: levels come from (seed, draw) */
    pthread_mutex_t *locks;
    pthread_mutex_t entry_lock;
    int locks_ready, pool_ready;
    osp__visited_pool vpool;
    hsearch_fn search, search_locked;
};

static inline float *vector_of(const hnsw *h, uint32_t s) {
    return (float *)(h->l0 + (size_t)s * h->elem);
}

static inline uint32_t *links_of(const hnsw *h, uint32_t s, int level) {
    if (level == 0) return (uint32_t *)(h->l0 + (size_t)s * h->elem + h->links_off);
    return h->upper[s] + (size_t)(level - 1) * (h->M + 1);
}

static inline pthread_mutex_t *node_lock(const hnsw *h, uint32_t s) {
    return &h->locks[s & (HNSW_LOCKS - 1)];
}

static inline void hnsw_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

/* The first lines of a vector; the hardware prefetcher follows on from
 * there for long vectors. */
static inline void hnsw_prefetch_all(const float *v, size_t d) {
    size_t lines = d < 128 ? (d + 15) / 16 : 8;
    for (size_t i = 0; i < lines; i++) __builtin_prefetch(v + 16 * i, 0, 3);
}

/* ---- the layer search, per target (see hnsw_search.h) -------------------- */

#ifdef OSP__X86
#define HS_NAME search_avx512
#define HS_TARGET OSP__TARGET_AVX512
#define HS_L2 osp__l2sq_avx512
#define HS_DOT osp__dot_avx512
#define HS_LOCKED 0
#include "index/hnsw_search.h"
#define HS_NAME search_avx512_locked
#define HS_TARGET OSP__TARGET_AVX512
#define HS_L2 osp__l2sq_avx512
#define HS_DOT osp__dot_avx512
#define HS_LOCKED 1
#include "index/hnsw_search.h"
#define HS_NAME search_avx2
#define HS_TARGET OSP__TARGET_AVX2
#define HS_L2 osp__l2sq_avx2
#define HS_DOT osp__dot_avx2
#define HS_LOCKED 0
#include "index/hnsw_search.h"
#define HS_NAME search_avx2_locked
#define HS_TARGET OSP__TARGET_AVX2
#define HS_L2 osp__l2sq_avx2
#define HS_DOT osp__dot_avx2
#define HS_LOCKED 1
#include "index/hnsw_search.h"
#endif
#define HS_NAME search_c
#define HS_TARGET
#define HS_L2 osp__l2sq_c
#define HS_DOT osp__dot_c
#define HS_LOCKED 0
#include "index/hnsw_search.h"
#define HS_NAME search_c_locked
#define HS_TARGET
#define HS_L2 osp__l2sq_c
#define HS_DOT osp__dot_c
#define HS_LOCKED 1
#include "index/hnsw_search.h"

/* ---- life cycle ------------------------------------------------------------ */

static int hnsw_init(osp_index *ix) {
    hnsw *h = (hnsw *)ix;
    h->M = ix->params.hnsw_m;
    h->M0 = 2 * h->M;
    h->level_mult = 1.0 / log((double)h->M);
    h->links_off = (size_t)ix->params.dim * sizeof(float);
    h->elem = (h->links_off + (size_t)(h->M0 + 1) * sizeof(uint32_t) + 63) & ~(size_t)63;
    h->entry = HNSW_NONE;
    h->max_level = -1;
    h->owned = 1;
    switch (ix->kern->level) {
#ifdef OSP__X86
    case OSP__SIMD_AVX512:
        h->search = search_avx512;
        h->search_locked = search_avx512_locked;
        break;
    case OSP__SIMD_AVX2:
        h->search = search_avx2;
        h->search_locked = search_avx2_locked;
        break;
#endif
    default:
        h->search = search_c;
        h->search_locked = search_c_locked;
    }
    if (osp__visited_pool_init(&h->vpool)) return OSP_ENOMEM;
    h->pool_ready = 1;
    h->locks = osp_alloc(HNSW_LOCKS * sizeof *h->locks);
    if (!h->locks) return OSP_ENOMEM;
    for (int i = 0; i < HNSW_LOCKS; i++) pthread_mutex_init(&h->locks[i], NULL);
    pthread_mutex_init(&h->entry_lock, NULL);
    h->locks_ready = 1;
    return OSP_OK;
}

static void hnsw_destroy(osp_index *ix) {
    hnsw *h = (hnsw *)ix;
    if (h->upper)
        for (int64_t s = 0; s < h->n_slots; s++) osp_free(h->upper[s]);
    osp_free(h->upper);
    if (h->owned) {
        osp_free(h->l0);
        osp_free(h->ids);
        osp_free(h->levels);
    }
    osp_free(h->free_slots);
    if (h->locks_ready) {
        for (int i = 0; i < HNSW_LOCKS; i++) pthread_mutex_destroy(&h->locks[i]);
        pthread_mutex_destroy(&h->entry_lock);
    }
    osp_free(h->locks);
    if (h->pool_ready) osp__visited_pool_destroy(&h->vpool);
    h->upper = NULL;
    h->l0 = NULL;
    h->ids = NULL;
    h->levels = NULL;
    h->free_slots = NULL;
    h->locks = NULL;
}

/* Owned arrays with room for need slots (copying borrowed ones). */
static int hnsw_reserve(hnsw *h, int64_t need) {
    if (h->owned && need <= h->cap) return OSP_OK;
    if (need >= (int64_t)HNSW_EXPANDED)
        return osp_error(OSP_ERANGE, "hnsw: more than 2^31 vectors");
    size_t cap = h->owned ? osp__grow((size_t)h->cap, (size_t)need) : (size_t)need;
    if (cap >= HNSW_EXPANDED) cap = HNSW_EXPANDED - 1;
    size_t lb;
    if (osp_mul_size(cap, h->elem, &lb)) return osp_error(OSP_ENOMEM, "hnsw: index too large");
    uint8_t *l0 = osp_alloc(lb);
    int64_t *ids = osp_alloc(cap * sizeof *ids);
    uint8_t *levels = osp_alloc(cap);
    uint32_t **upper = osp_calloc(cap, sizeof *upper);
    if (!l0 || !ids || !levels || !upper) {
        osp_free(l0);
        osp_free(ids);
        osp_free(levels);
        osp_free(upper);
        return osp_error(OSP_ENOMEM, "hnsw: out of memory for %zu vectors", cap);
    }
    size_t n = (size_t)h->n_slots;
    if (n) {
        memcpy(l0, h->l0, n * h->elem);
        memcpy(ids, h->ids, n * sizeof *ids);
        memcpy(levels, h->levels, n);
        memcpy(upper, h->upper, n * sizeof *upper);
    }
    if (h->owned) {
        osp_free(h->l0);
        osp_free(h->ids);
        osp_free(h->levels);
    }
    osp_free(h->upper);
    h->l0 = l0;
    h->ids = ids;
    h->levels = levels;
    h->upper = upper;
    h->cap = (int64_t)cap;
    h->owned = 1;
    return OSP_OK;
}

/* ---- building blocks ---------------------------------------------------------- */

static inline float hdist(const hnsw *h, const float *a, const float *b) {
    return h->base.dist(a, b, (size_t)h->base.params.dim);
}

/* Greedy descent on one upper level: move to a closer neighbour while any. */
static uint32_t greedy(const hnsw *h, const float *q, uint32_t ep, float *epd, int level,
                       int locked, uint32_t *buf) {
    for (int changed = 1; changed;) {
        changed = 0;
        const uint32_t *ln = links_of(h, ep, level);
        if (locked) {
            pthread_mutex_t *mu = node_lock(h, ep);
            pthread_mutex_lock(mu);
            memcpy(buf, ln, ((size_t)ln[0] + 1) * sizeof *buf);
            pthread_mutex_unlock(mu);
            ln = buf;
        }
        uint32_t cnt = ln[0];
        for (uint32_t j = 1; j <= cnt; j++) {
            float d = hdist(h, q, vector_of(h, ln[j]));
            if (d < *epd) {
                *epd = d;
                ep = ln[j];
                changed = 1;
            }
        }
    }
    return ep;
}

static void sort_cands(hcand *c, int n) {
    for (int i = 1; i < n; i++) {
        hcand x = c[i];
        int j = i - 1;
        while (j >= 0 && c[j].d > x.d) {
            c[j + 1] = c[j];
            j--;
        }
        c[j + 1] = x;
    }
}

/* hnswlib's heuristic: from candidates sorted closest first (distances to
 * the node being linked), keep at most m, each closer to that node than to
 * any already kept, so links spread in all directions. */
static int select_neighbors(const hnsw *h, const hcand *cand, int n, int m, uint32_t *out) {
    int kept = 0;
    for (int i = 0; i < n && kept < m; i++) {
        uint32_t ci = cand[i].id & ~HNSW_EXPANDED;
        const float *vi = vector_of(h, ci);
        int good = 1;
        for (int j = 0; j < kept && good; j++)
            if (hdist(h, vi, vector_of(h, out[j])) < cand[i].d) good = 0;
        if (good) out[kept++] = ci;
    }
    return kept;
}

/* Per-thread scratch for inserts and repairs. */
typedef struct hwork {
    hcand *pool;   /* efConstruction (or efSearch) */
    uint32_t *buf; /* links copy + neighbours to visit: 2 M0 + 2 */
    hcand *cand;   /* candidates when relinking: cand_cap */
    int cand_cap;
    uint32_t *sel; /* selected links: M0 + 1 */
} hwork;

static void hwork_free(hwork *w) {
    osp_free(w->pool);
    osp_free(w->buf);
    osp_free(w->cand);
    osp_free(w->sel);
}

static int hwork_init(hwork *w, const hnsw *h, int pool, int cand_cap) {
    memset(w, 0, sizeof *w);
    w->pool = osp_alloc((size_t)pool * sizeof *w->pool);
    w->buf = osp_alloc((size_t)(2 * h->M0 + 2) * sizeof *w->buf);
    w->cand = osp_alloc((size_t)cand_cap * sizeof *w->cand);
    w->sel = osp_alloc((size_t)(h->M0 + 1) * sizeof *w->sel);
    w->cand_cap = cand_cap;
    if (!w->pool || !w->buf || !w->cand || !w->sel) {
        hwork_free(w);
        return OSP_ENOMEM;
    }
    return OSP_OK;
}

/* Adds link s -> nb's list at level (under nb's lock); a full list is
 * re-chosen by the heuristic over its links plus s. */
static void link_back(hnsw *h, uint32_t nb, uint32_t s, int level, hwork *w) {
    int mmax = level ? h->M : h->M0;
    pthread_mutex_t *mu = node_lock(h, nb);
    pthread_mutex_lock(mu);
    uint32_t *ln = links_of(h, nb, level);
    uint32_t cnt = ln[0];
    int present = 0;
    for (uint32_t j = 1; j <= cnt; j++) present |= ln[j] == s;
    if (!present) {
        if ((int)cnt < mmax) {
            ln[1 + cnt] = s;
            ln[0] = cnt + 1;
        } else {
            const float *vn = vector_of(h, nb);
            int n = 0;
            for (uint32_t j = 1; j <= cnt; j++)
                w->cand[n++] = (hcand){hdist(h, vn, vector_of(h, ln[j])), ln[j]};
            w->cand[n++] = (hcand){hdist(h, vn, vector_of(h, s)), s};
            sort_cands(w->cand, n);
            int kept = select_neighbors(h, w->cand, n, mmax, w->sel);
            memcpy(ln + 1, w->sel, (size_t)kept * sizeof *ln);
            ln[0] = (uint32_t)kept;
        }
    }
    pthread_mutex_unlock(mu);
}

/* Inserts slot s (vector, level and empty links already in place). */
static void insert(hnsw *h, uint32_t s, osp__visited *vis, hwork *w) {
    const float *v = vector_of(h, s);
    int level = h->levels[s];
    pthread_mutex_lock(&h->entry_lock);
    uint32_t ep = h->entry;
    int maxl = h->max_level;
    int hold = level > maxl; /* s becomes the entry: keep others off until linked */
    if (ep == HNSW_NONE) {
        h->entry = s;
        h->max_level = level;
        pthread_mutex_unlock(&h->entry_lock);
        return;
    }
    if (!hold) pthread_mutex_unlock(&h->entry_lock);
    float epd = hdist(h, v, vector_of(h, ep));
    for (int l = maxl; l > level; l--) ep = greedy(h, v, ep, &epd, l, 1, w->buf);
    int efc = h->base.params.hnsw_ef_construction;
    for (int l = level < maxl ? level : maxl; l >= 0; l--) {
        osp__visited_next(vis);
        int n = h->search_locked(h, v, l, ep, epd, efc, w->pool, vis, w->buf);
        int kept = select_neighbors(h, w->pool, n, h->M, w->sel);
        pthread_mutex_t *mu = node_lock(h, s);
        pthread_mutex_lock(mu);
        uint32_t *ln = links_of(h, s, l);
        memcpy(ln + 1, w->sel, (size_t)kept * sizeof *ln);
        ln[0] = (uint32_t)kept;
        pthread_mutex_unlock(mu);
        /* w->sel is reused by link_back: copy the chosen links first */
        uint32_t chosen[2 * 128 + 1];
        memcpy(chosen, w->sel, (size_t)kept * sizeof *chosen);
        for (int j = 0; j < kept; j++) link_back(h, chosen[j], s, l, w);
        ep = w->pool[0].id & ~HNSW_EXPANDED;
        epd = w->pool[0].d;
    }
    if (hold) {
        h->entry = s;
        h->max_level = level;
        pthread_mutex_unlock(&h->entry_lock);
    }
}

static int draw_level(hnsw *h) {
    osp_rng r;
    osp_rng_derive(&r, h->base.params.seed, 0x68736e77 /* "hnsw" */, h->draws++);
    double u = ((double)(osp_rng_u64(&r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double l = -log(u) * h->level_mult;
    return l >= HNSW_MAX_LEVEL ? HNSW_MAX_LEVEL : (int)l;
}

static int hnsw_add(osp_index *ix, const void *xv, const int64_t *ids, int64_t n) {
    hnsw *h = (hnsw *)ix;
    const float *x = xv;
    size_t d = (size_t)ix->params.dim;
    int64_t reuse = n < h->n_free ? n : h->n_free;
    int64_t need = h->n_slots + (n - reuse);
    int rc = hnsw_reserve(h, need);
    if (rc) return rc;
    int threads = osp__threads(ix);
    if (threads > n) threads = (int)n;
    uint32_t *slots = osp_alloc((size_t)n * sizeof *slots);
    uint8_t *lv = osp_alloc((size_t)n);
    uint32_t **up = osp_calloc((size_t)n, sizeof *up);
    hwork *work = osp_calloc((size_t)threads, sizeof *work);
    osp__visited **vis = osp_calloc((size_t)threads, sizeof *vis);
    uint64_t draws0 = h->draws;
    rc = slots && lv && up && work && vis ? OSP_OK : OSP_ENOMEM;
    /* Everything that can fail is allocated before the index changes. */
    for (int64_t i = 0; !rc && i < n; i++) {
        slots[i] = i < reuse ? h->free_slots[h->n_free - 1 - i] : (uint32_t)(h->n_slots + i - reuse);
        lv[i] = (uint8_t)draw_level(h);
        if (lv[i] && !(up[i] = osp_calloc((size_t)lv[i] * (h->M + 1), sizeof(uint32_t))))
            rc = OSP_ENOMEM;
    }
    for (int t = 0; !rc && t < threads; t++) {
        if (hwork_init(&work[t], h, ix->params.hnsw_ef_construction, h->M0 + 1)) rc = OSP_ENOMEM;
        else if (!(vis[t] = osp__visited_get(&h->vpool, (size_t)need))) rc = OSP_ENOMEM;
    }
    if (rc) {
        h->draws = draws0;
        for (int64_t i = 0; up && i < n; i++) osp_free(up[i]);
        rc = osp_error(OSP_ENOMEM, "hnsw: out of memory adding %lld vectors", (long long)n);
        goto out;
    }
    for (int64_t i = 0; i < n; i++) {
        uint32_t s = slots[i];
        memcpy(vector_of(h, s), x + (size_t)i * d, d * sizeof(float));
        links_of(h, s, 0)[0] = 0;
        h->levels[s] = lv[i];
        osp_free(h->upper[s]);
        h->upper[s] = up[i];
        h->ids[s] = ids[i];
        osp__idmap_put(&ix->map, ids[i], s);
    }
    h->n_free -= reuse;
    h->n_slots = need;
    int64_t done = 0;
#pragma omp parallel num_threads(threads)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
#pragma omp for schedule(dynamic, 16)
        for (int64_t i = 0; i < n; i++) {
            insert(h, slots[i], vis[t], &work[t]);
            int64_t dn;
#pragma omp atomic capture
            dn = ++done;
            if (t == 0 && (dn & 1023) == 0) osp__progress(ix, dn, n);
        }
    }
out:
    for (int t = 0; work && t < threads; t++) {
        hwork_free(&work[t]);
        if (vis) osp__visited_put(&h->vpool, vis[t]);
    }
    osp_free(work);
    osp_free(vis);
    osp_free(slots);
    osp_free(lv);
    osp_free(up);
    return rc;
}

/* ---- remove ------------------------------------------------------------------- */

/* Relinks u at level l, whose links include removed nodes: candidates are
 * its live links and the live links of removed ones (two hops through
 * removed nodes), re-chosen by the heuristic. */
static void repair(hnsw *h, uint32_t u, int l, const uint8_t *gone, osp__visited *vis, hwork *w) {
    osp__visited_next(vis);
    osp__visited_test_set(vis, u);
    const float *vu = vector_of(h, u);
    uint32_t *ln = links_of(h, u, l);
    int n = 0;
    uint32_t hop1[2 * 128 + 1];
    int nh1 = 0;
    for (uint32_t j = 1; j <= ln[0]; j++) {
        uint32_t v = ln[j];
        if (osp__visited_test_set(vis, v)) continue;
        if (gone[v]) hop1[nh1++] = v;
        else if (n < w->cand_cap) w->cand[n++] = (hcand){hdist(h, vu, vector_of(h, v)), v};
    }
    for (int a = 0; a < nh1; a++) {
        const uint32_t *lg = links_of(h, hop1[a], l);
        for (uint32_t j = 1; j <= lg[0]; j++) {
            uint32_t v = lg[j];
            if (osp__visited_test_set(vis, v)) continue;
            if (!gone[v]) {
                if (n < w->cand_cap) w->cand[n++] = (hcand){hdist(h, vu, vector_of(h, v)), v};
                continue;
            }
            const uint32_t *lg2 = links_of(h, v, l);
            for (uint32_t i = 1; i <= lg2[0]; i++) {
                uint32_t z = lg2[i];
                if (gone[z] || osp__visited_test_set(vis, z)) continue;
                if (n < w->cand_cap) w->cand[n++] = (hcand){hdist(h, vu, vector_of(h, z)), z};
            }
        }
    }
    sort_cands(w->cand, n);
    int mmax = l ? h->M : h->M0;
    int kept = select_neighbors(h, w->cand, n, mmax, w->sel);
    /* Fill the list with the nearest candidates the heuristic passed over:
     * a relinked node has lost paths through the removed one, and spare
     * links are the cheapest way to keep it reachable. */
    for (int i = 0; i < n && kept < mmax; i++) {
        int have = 0;
        for (int j = 0; j < kept && !have; j++) have = w->sel[j] == w->cand[i].id;
        if (!have) w->sel[kept++] = w->cand[i].id;
    }
    memcpy(ln + 1, w->sel, (size_t)kept * sizeof *ln);
    ln[0] = (uint32_t)kept;
}

static int hnsw_remove(osp_index *ix, const int64_t *ids, int64_t n, int64_t *removed) {
    hnsw *h = (hnsw *)ix;
    int rc = hnsw_reserve(h, h->n_slots);
    if (rc) return rc;
    if (h->cap_free < h->n_free + n) {
        size_t cap = osp__grow((size_t)h->cap_free, (size_t)(h->n_free + n));
        uint32_t *f = osp__realloc(h->free_slots, (size_t)h->n_free * sizeof *f, cap * sizeof *f);
        if (!f) return OSP_ENOMEM;
        h->free_slots = f;
        h->cap_free = (int64_t)cap;
    }
    int threads = osp__threads(ix);
    /* two hops through removed nodes can reach M0^3 nodes; the cap keeps
     * the heuristic cheap, and such chains of removed nodes are rare */
    int cand_cap = h->M0 * h->M0 + h->M0 + 1;
    uint8_t *gone = osp_calloc((size_t)h->n_slots, 1);
    hwork *work = osp_calloc((size_t)threads, sizeof *work);
    osp__visited **vis = osp_calloc((size_t)threads, sizeof *vis);
    rc = gone && work && vis ? OSP_OK : OSP_ENOMEM;
    for (int t = 0; !rc && t < threads; t++) {
        if (hwork_init(&work[t], h, 1, cand_cap)) rc = OSP_ENOMEM;
        else if (!(vis[t] = osp__visited_get(&h->vpool, (size_t)h->n_slots))) rc = OSP_ENOMEM;
    }
    if (rc) {
        rc = osp_error(OSP_ENOMEM, "hnsw: out of memory removing");
        goto out;
    }
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t s;
        if (!osp__idmap_get(&ix->map, ids[i], &s)) continue;
        osp__idmap_del(&ix->map, ids[i]);
        gone[s] = 1;
        count++;
    }
    if (!count) goto out;
    for (int l = 0; l <= h->max_level; l++) {
#pragma omp parallel num_threads(threads)
        {
            int t = 0;
#ifdef _OPENMP
            t = omp_get_thread_num();
#endif
#pragma omp for schedule(dynamic, 256)
            for (int64_t u = 0; u < h->n_slots; u++) {
                if (h->ids[u] < 0 || gone[u] || h->levels[u] < l) continue;
                const uint32_t *ln = links_of(h, (uint32_t)u, l);
                int hit = 0;
                for (uint32_t j = 1; j <= ln[0] && !hit; j++) hit = gone[ln[j]];
                if (hit) repair(h, (uint32_t)u, l, gone, vis[t], &work[t]);
            }
        }
    }
    for (int64_t s = 0; s < h->n_slots; s++) {
        if (!gone[s]) continue;
        h->ids[s] = -1;
        links_of(h, (uint32_t)s, 0)[0] = 0;
        osp_free(h->upper[s]);
        h->upper[s] = NULL;
        h->levels[s] = 0;
        h->free_slots[h->n_free++] = (uint32_t)s;
    }
    if (h->entry != HNSW_NONE && gone[h->entry]) {
        /* the new entry: a live node on the highest level left */
        h->entry = HNSW_NONE;
        h->max_level = -1;
        for (int64_t s = 0; s < h->n_slots; s++)
            if (h->ids[s] >= 0 && h->levels[s] > h->max_level) {
                h->max_level = h->levels[s];
                h->entry = (uint32_t)s;
            }
    }
    *removed = count;
out:
    for (int t = 0; work && t < threads; t++) {
        hwork_free(&work[t]);
        if (vis) osp__visited_put(&h->vpool, vis[t]);
    }
    osp_free(work);
    osp_free(vis);
    osp_free(gone);
    return rc;
}

/* ---- search --------------------------------------------------------------------- */

static void cand_push(hcand *heap, int *n, hcand c) { /* min-heap */
    int i = (*n)++;
    while (i > 0 && heap[(i - 1) / 2].d > c.d) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = c;
}

static hcand cand_pop(hcand *heap, int *n) {
    hcand top = heap[0], x = heap[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap[c + 1].d < heap[c].d) c++;
        if (heap[c].d >= x.d) break;
        heap[i] = heap[c];
        i = c;
    }
    if (*n) heap[i] = x;
    return top;
}

/* Level-0 search with a filter, hnswlib's way: every node steers the walk,
 * only allowed ones enter the ef results, and the walk goes on until ef
 * allowed results are found and no candidate can improve them. */
static int search_filtered(const hnsw *h, const float *q, uint32_t ep, float epd,
                           const osp__search_ctx *sc, osp__visited *vis, osp__hit *res,
                           hcand **cand, int *cand_cap) {
    int ef = sc->ef, nres = 0, nc = 0;
    osp__visited_test_set(vis, ep);
    (*cand)[nc++] = (hcand){epd, ep};
    if (osp__allowed(sc, h->ids[ep])) osp__topk_push(res, &nres, ef, epd, ep);
    while (nc > 0) {
        hcand c = cand_pop(*cand, &nc);
        if (nres == ef && c.d > res[0].d) break;
        const uint32_t *ln = links_of(h, c.id, 0);
        for (uint32_t j = 1; j <= ln[0]; j++) {
            uint32_t nb = ln[j];
            if (osp__visited_test_set(vis, nb)) continue;
            float d = hdist(h, q, vector_of(h, nb));
            if (nres == ef && !(d < res[0].d)) continue;
            if (nc == *cand_cap) {
                int cap = 2 * *cand_cap;
                hcand *g = osp__realloc(*cand, (size_t)nc * sizeof *g, (size_t)cap * sizeof *g);
                if (!g) return OSP_ENOMEM;
                *cand = g;
                *cand_cap = cap;
            }
            cand_push(*cand, &nc, (hcand){d, nb});
            if (osp__allowed(sc, h->ids[nb])) osp__topk_push(res, &nres, ef, d, nb);
        }
    }
    return nres;
}

typedef struct qwork {
    hcand *pool;
    uint32_t *buf;
    osp__hit *res;
    hcand *cand;
    int cand_cap;
} qwork;

static int search_one(const hnsw *h, const float *q, const osp__search_ctx *sc, int exact,
                      osp__visited *vis, qwork *w, int64_t *ids, float *dist) {
    int k = sc->k, nres = 0;
    if (exact) {
        size_t d = (size_t)h->base.params.dim;
        for (int64_t s = 0; s < h->n_slots; s++) {
            if (h->ids[s] < 0 || !osp__allowed(sc, h->ids[s])) continue;
            osp__topk_push(w->res, &nres, k, h->base.dist(q, vector_of(h, (uint32_t)s), d), h->ids[s]);
        }
        osp__topk_finish(w->res, nres, k, ids, dist);
        return OSP_OK;
    }
    uint32_t ep = h->entry;
    float epd = hdist(h, q, vector_of(h, ep));
    for (int l = h->max_level; l > 0; l--) ep = greedy(h, q, ep, &epd, l, 0, NULL);
    if (sc->filter) {
        int n = search_filtered(h, q, ep, epd, sc, vis, w->res, &w->cand, &w->cand_cap);
        if (n < 0) return n;
        /* res holds slots: sort, then map to ids */
        for (int i = n - 1; i >= 0; i--) {
            osp__hit top = w->res[0];
            w->res[0] = w->res[i];
            osp__topk_sift_down(w->res, i, 0);
            if (i < k) {
                ids[i] = h->ids[top.id];
                dist[i] = top.d;
            }
        }
        for (int i = n; i < k; i++) {
            ids[i] = OSP_INDEX_NO_ID;
            dist[i] = INFINITY;
        }
        return OSP_OK;
    }
    int n = h->search(h, q, 0, ep, epd, sc->ef, w->pool, vis, w->buf);
    for (int i = 0; i < k; i++) {
        if (i < n) {
            ids[i] = h->ids[w->pool[i].id & ~HNSW_EXPANDED];
            dist[i] = w->pool[i].d;
        } else {
            ids[i] = OSP_INDEX_NO_ID;
            dist[i] = INFINITY;
        }
    }
    return OSP_OK;
}

static int hnsw_search(const osp_index *ix, const void *qv, int64_t nq, const osp__search_ctx *sc,
                       int64_t *ids, float *dist) {
    hnsw *h = (hnsw *)ix;
    const float *q = qv;
    size_t d = (size_t)ix->params.dim;
    int exact = osp__use_exact(sc);
    if (h->entry == HNSW_NONE) exact = 1;
    int k = sc->k, rc = OSP_OK;
#pragma omp parallel num_threads(sc->threads) if (sc->threads > 1)
    {
        qwork w = {0};
        w.cand_cap = 4 * sc->ef + 64;
        w.pool = osp_alloc((size_t)sc->ef * sizeof *w.pool);
        w.buf = osp_alloc((size_t)(2 * h->M0 + 2) * sizeof *w.buf);
        w.res = osp_alloc((size_t)sc->ef * sizeof *w.res);
        w.cand = sc->filter ? osp_alloc((size_t)w.cand_cap * sizeof *w.cand) : NULL;
        osp__visited *vis = exact ? NULL : osp__visited_get(&h->vpool, (size_t)h->n_slots);
        int ok = w.pool && w.buf && w.res && (!sc->filter || w.cand) && (exact || vis);
        if (!ok) {
#pragma omp atomic write
            rc = OSP_ENOMEM;
        }
        int fresh = 1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < nq; i++) {
            if (!ok) continue;
            if (!fresh && vis) osp__visited_next(vis);
            fresh = 0;
            int r = search_one(h, q + (size_t)i * d, sc, exact, vis, &w, ids + (size_t)i * k,
                               dist + (size_t)i * k);
            if (r) {
#pragma omp atomic write
                rc = r;
            }
        }
        osp__visited_put(&h->vpool, vis);
        osp_free(w.pool);
        osp_free(w.buf);
        osp_free(w.res);
        osp_free(w.cand);
    }
    return rc == OSP_ENOMEM ? osp_error(rc, "hnsw: out of memory searching") : rc;
}

/* ---- persistence ------------------------------------------------------------------ */

#define N_HNSW_FIELDS 6

static int hnsw_save(const osp_index *ix, osp__writer *w) {
    const hnsw *h = (const hnsw *)ix;
    uint64_t f[N_HNSW_FIELDS] = {(uint64_t)h->n_slots, h->entry, (uint64_t)(h->max_level + 1),
                                 h->draws, h->elem, 0};
    size_t n = (size_t)h->n_slots;
    osp__writer_add_copy(w, TAG_HNSW, f, sizeof f);
    osp__writer_add(w, TAG_LEVEL0, h->l0, n * h->elem);
    osp__writer_add(w, TAG_IDS, h->ids, n * sizeof(int64_t));
    osp__writer_add(w, TAG_LEVELS, h->levels, n);
    osp__writer_begin(w, TAG_UPPER);
    for (size_t s = 0; s < n; s++)
        if (h->levels[s]) osp__writer_chunk(w, h->upper[s], (size_t)h->levels[s] * (h->M + 1) * 4);
    return OSP_OK;
}

/* Every count, link, level and the entry point is checked: a graph read from
 * a file is walked without bounds checks afterwards. */
static int hnsw_load(osp_index *ix, const osp__reader *r) {
    hnsw *h = (hnsw *)ix;
    const uint64_t *f;
    int rc = osp__reader_get(r, TAG_HNSW, N_HNSW_FIELDS * sizeof *f, (const void **)&f);
    if (rc) return rc;
    uint64_t n = f[0], entry = f[1], maxl1 = f[2];
    if (f[4] != h->elem)
        return osp_error(OSP_ECORRUPT, "%s: HNSW block size %llu, expected %zu", r->name,
                         (unsigned long long)f[4], h->elem);
    if (n >= HNSW_EXPANDED || n > r->len / h->elem || maxl1 > HNSW_MAX_LEVEL + 1)
        return osp_error(OSP_ECORRUPT, "%s: HNSW sizes out of range", r->name);
    const void *l0, *ids, *levels, *upper;
    size_t upper_bytes;
    rc = osp__reader_get(r, TAG_LEVEL0, (size_t)n * h->elem, &l0);
    if (!rc) rc = osp__reader_get(r, TAG_IDS, (size_t)n * sizeof(int64_t), &ids);
    if (!rc) rc = osp__reader_get(r, TAG_LEVELS, (size_t)n, &levels);
    if (!rc) rc = osp__reader_get_any(r, TAG_UPPER, &upper, &upper_bytes);
    if (rc) return rc;
    h->owned = 0;
    h->l0 = (uint8_t *)l0;
    h->ids = (int64_t *)ids;
    h->levels = (uint8_t *)levels;
    h->n_slots = h->cap = (int64_t)n;
    h->draws = f[3];
    h->max_level = (int)maxl1 - 1;
    h->entry = (uint32_t)entry;
    h->upper = osp_calloc(n ? n : 1, sizeof *h->upper);
    h->free_slots = osp_alloc((n ? n : 1) * sizeof *h->free_slots);
    h->cap_free = (int64_t)(n ? n : 1);
    if (!h->upper || !h->free_slots) return OSP_ENOMEM;
    rc = osp__idmap_reserve(&ix->map, n);
    if (rc) return rc;
    /* upper links: copied into per-node arrays, since inserts rewrite them */
    const uint8_t *up = upper;
    size_t per_level = (size_t)(h->M + 1) * sizeof(uint32_t), used = 0;
    int top = -1;
    for (uint64_t s = 0; s < n; s++) {
        int lv = h->levels[s];
        int64_t id = h->ids[s];
        if (lv > HNSW_MAX_LEVEL) return osp_error(OSP_ECORRUPT, "%s: HNSW level %d", r->name, lv);
        if (id == -1) {
            if (lv || links_of(h, (uint32_t)s, 0)[0])
                return osp_error(OSP_ECORRUPT, "%s: free HNSW slot with links", r->name);
            continue;
        }
        if ((rc = osp__idmap_put_loaded(&ix->map, id, s, r->name))) return rc;
        if (lv > top) top = lv;
        if (!lv) continue;
        size_t bytes = (size_t)lv * per_level;
        if (bytes > upper_bytes - used)
            return osp_error(OSP_ECORRUPT, "%s: HNSW upper links truncated", r->name);
        h->upper[s] = osp__dup(up + used, bytes);
        if (!h->upper[s]) return OSP_ENOMEM;
        used += bytes;
    }
    if (used != upper_bytes) return osp_error(OSP_ECORRUPT, "%s: HNSW upper links too long", r->name);
    for (uint64_t s = n; s-- > 0;)
        if (h->ids[s] == -1) h->free_slots[h->n_free++] = (uint32_t)s;
    if (ix->map.count == 0) {
        if (entry != HNSW_NONE || h->max_level != -1)
            return osp_error(OSP_ECORRUPT, "%s: entry point in an empty graph", r->name);
        return OSP_OK;
    }
    if (entry >= n || h->ids[entry] < 0 || h->levels[entry] != h->max_level || top != h->max_level)
        return osp_error(OSP_ECORRUPT, "%s: bad HNSW entry point", r->name);
    for (uint64_t s = 0; s < n; s++) {
        if (h->ids[s] < 0) continue;
        for (int l = 0; l <= h->levels[s]; l++) {
            const uint32_t *ln = links_of(h, (uint32_t)s, l);
            if (ln[0] > (uint32_t)(l ? h->M : h->M0))
                return osp_error(OSP_ECORRUPT, "%s: HNSW node %llu has %u links", r->name,
                                 (unsigned long long)s, ln[0]);
            for (uint32_t j = 1; j <= ln[0]; j++)
                if (ln[j] >= n || h->ids[ln[j]] < 0 || h->levels[ln[j]] < l)
                    return osp_error(OSP_ECORRUPT, "%s: HNSW link %u of node %llu is invalid",
                                     r->name, ln[j], (unsigned long long)s);
        }
    }
    return OSP_OK;
}

static void hnsw_info(const osp_index *ix, osp_index_info *info) {
    const hnsw *h = (const hnsw *)ix;
    info->free_slots = h->n_free;
    info->max_level = h->max_level;
    size_t b = (size_t)h->cap * sizeof(uint32_t *) + (size_t)h->cap_free * 4 +
               HNSW_LOCKS * sizeof(pthread_mutex_t);
    if (h->owned) b += (size_t)h->cap * (h->elem + sizeof(int64_t) + 1);
    for (int64_t s = 0; s < h->n_slots; s++)
        if (h->upper[s]) b += (size_t)h->levels[s] * (h->M + 1) * 4;
    info->memory_bytes += b;
}

const osp__index_ops osp__hnsw_ops = {
    .type = OSP_INDEX_HNSW,
    .struct_size = sizeof(hnsw),
    .init = hnsw_init,
    .train = NULL,
    .add = hnsw_add,
    .remove = hnsw_remove,
    .search = hnsw_search,
    .save = hnsw_save,
    .load = hnsw_load,
    .destroy = hnsw_destroy,
    .info = hnsw_info,
};
