/* Coarse quantizer and inverted lists (see ivf.h). */
#include <math.h>
#include <string.h>

#include "index/ivf.h"
#include "index/kmeans.h"

#define TAG_CENTROIDS OSP__TAG('C', 'E', 'N', 'T')
#define TAG_LIST_SIZES OSP__TAG('L', 'S', 'I', 'Z')
#define TAG_LIST_CODES OSP__TAG('L', 'C', 'O', 'D')
#define TAG_LIST_IDS OSP__TAG('L', 'I', 'D', 'S')

/* k-means sample cap per centroid, as FAISS: more points barely move the
 * centroids but cost training time. */
#define MAX_POINTS_PER_CENTROID 256

void osp__ivf_setup(osp__ivf *v, const osp_index *ix, size_t code_size) {
    v->d = ix->params.dim;
    v->code_size = code_size;
    v->ip = ix->params.metric != OSP_INDEX_METRIC_L2;
    v->nlist = ix->params.nlist;
}

void osp__ivf_destroy(osp__ivf *v) {
    if (v->centroids_owned) {
        osp_free(v->centroids);
    }
    osp_free(v->cnorms);
    if (v->lists)
        for (int i = 0; i < v->nlist; i++)
            if (v->lists[i].owned) {
                osp_free(v->lists[i].codes);
                osp_free(v->lists[i].ids);
            }
    osp_free(v->lists);
    v->centroids = NULL;
    v->cnorms = NULL;
    v->lists = NULL;
}

static int alloc_lists(osp__ivf *v) {
    v->lists = osp_calloc((size_t)v->nlist, sizeof *v->lists);
    v->cnorms = osp_alloc((size_t)v->nlist * sizeof *v->cnorms);
    if (!v->lists || !v->cnorms) return OSP_ENOMEM;
    for (int i = 0; i < v->nlist; i++) v->lists[i].owned = 1;
    return OSP_OK;
}

int osp__ivf_train(osp__ivf *v, osp_index *ix, const float *x, int64_t n) {
    int nlist = ix->params.nlist;
    if (nlist == 0) {
        /* about 4 sqrt(n) lists: the usual balance between probing few
         * centroids and scanning short lists */
        double s = 4.0 * sqrt((double)n);
        nlist = s < 1 ? 1 : s > (1 << 20) ? (1 << 20) : (int)s;
        if (nlist > n) nlist = (int)n;
    }
    if (n < nlist || n < 1)
        return osp_error(OSP_EINVAL, "ivf: %lld training vectors for %d lists (need at least as many)",
                         (long long)n, nlist);
    osp__ivf_destroy(v);
    v->nlist = nlist;
    v->centroids = osp_alloc((size_t)nlist * v->d * sizeof(float));
    v->centroids_owned = 1;
    if (!v->centroids || alloc_lists(v)) return osp_error(OSP_ENOMEM, "ivf: out of memory for %d lists", nlist);
    int rc = osp__kmeans_train(x, n, v->d, nlist, ix->params.kmeans_iters, MAX_POINTS_PER_CENTROID,
                               ix->params.seed, osp__threads(ix),
                               ix->params.metric == OSP_INDEX_METRIC_COSINE, v->centroids);
    if (rc) return rc;
    osp__norms(v->centroids, nlist, v->d, ix->kern, v->cnorms);
    ix->params.nlist = nlist;
    return OSP_OK;
}

int osp__ivf_probe(const osp__ivf *v, const osp_index *ix, const float *x, int64_t n, int p,
                   int threads, int32_t *lists, float *dist) {
    int rc = osp__kmeans_nearest(x, n, v->d, v->centroids, v->cnorms, v->nlist, p, v->ip, threads,
                                 ix->kern, lists, dist);
    return rc == OSP_ENOMEM ? osp_error(rc, "ivf: out of memory probing lists") : rc;
}

/* Makes list l owned with room for need entries. */
static int list_reserve(osp__ivf *v, osp__ivf_list *l, uint32_t need) {
    if (l->owned && need <= l->cap) return OSP_OK;
    size_t cap = l->owned ? osp__grow(l->cap, need) : need;
    if (cap > UINT32_MAX) cap = UINT32_MAX;
    if (cap < need) return osp_error(OSP_ERANGE, "ivf: a list would pass 2^32 entries");
    size_t cb;
    if (osp_mul_size(cap, v->code_size, &cb)) return osp_error(OSP_ENOMEM, "ivf: list too large");
    uint8_t *codes = osp_alloc(cb);
    int64_t *ids = osp_alloc(cap * sizeof *ids);
    if (!codes || !ids) {
        osp_free(codes);
        osp_free(ids);
        return osp_error(OSP_ENOMEM, "ivf: out of memory growing a list to %zu entries", cap);
    }
    if (l->n) {
        memcpy(codes, l->codes, (size_t)l->n * v->code_size);
        memcpy(ids, l->ids, (size_t)l->n * sizeof *ids);
    }
    if (l->owned) {
        osp_free(l->codes);
        osp_free(l->ids);
    }
    l->codes = codes;
    l->ids = ids;
    l->cap = (uint32_t)cap;
    l->owned = 1;
    return OSP_OK;
}

int osp__ivf_reserve(osp__ivf *v, const int32_t *assign, int64_t n) {
    uint32_t *extra = osp_calloc((size_t)v->nlist, sizeof *extra);
    if (!extra) return OSP_ENOMEM;
    int rc = OSP_OK;
    for (int64_t i = 0; i < n; i++) {
        if (extra[assign[i]] == UINT32_MAX) {
            rc = osp_error(OSP_ERANGE, "ivf: a list would pass 2^32 entries");
            break;
        }
        extra[assign[i]]++;
    }
    for (int l = 0; !rc && l < v->nlist; l++) {
        if (!extra[l]) continue;
        uint64_t need = (uint64_t)v->lists[l].n + extra[l];
        if (need > UINT32_MAX) rc = osp_error(OSP_ERANGE, "ivf: a list would pass 2^32 entries");
        else rc = list_reserve(v, &v->lists[l], (uint32_t)need);
    }
    osp_free(extra);
    return rc;
}

void osp__ivf_append(osp__ivf *v, osp_index *ix, int list, const void *code, int64_t id) {
    osp__ivf_list *l = &v->lists[list];
    uint32_t pos = l->n++;
    memcpy(l->codes + (size_t)pos * v->code_size, code, v->code_size);
    l->ids[pos] = id;
    osp__idmap_put(&ix->map, id, OSP__IVF_LOC(list, pos));
}

int osp__ivf_remove(osp__ivf *v, osp_index *ix, const int64_t *ids, int64_t n, int64_t *removed) {
    for (int64_t i = 0; i < n; i++) {
        uint64_t loc;
        if (!osp__idmap_get(&ix->map, ids[i], &loc)) continue;
        osp__ivf_list *l = &v->lists[OSP__IVF_LIST(loc)];
        int rc = list_reserve(v, l, l->n);
        if (rc) return rc;
        uint32_t pos = OSP__IVF_POS(loc), last = l->n - 1;
        osp__idmap_del(&ix->map, ids[i]);
        if (pos != last) {
            memcpy(l->codes + (size_t)pos * v->code_size, l->codes + (size_t)last * v->code_size,
                   v->code_size);
            l->ids[pos] = l->ids[last];
            osp__idmap_put(&ix->map, l->ids[pos], OSP__IVF_LOC(OSP__IVF_LIST(loc), pos));
        }
        l->n--;
        (*removed)++;
    }
    return OSP_OK;
}

void osp__ivf_save(const osp__ivf *v, osp__writer *w) {
    osp__writer_add(w, TAG_CENTROIDS, v->centroids, (size_t)v->nlist * v->d * sizeof(float));
    /* u32 sizes, each borrowed from its list */
    osp__writer_begin(w, TAG_LIST_SIZES);
    for (int i = 0; i < v->nlist; i++) osp__writer_chunk(w, &v->lists[i].n, sizeof(uint32_t));
    osp__writer_begin(w, TAG_LIST_CODES);
    for (int i = 0; i < v->nlist; i++)
        osp__writer_chunk(w, v->lists[i].codes, (size_t)v->lists[i].n * v->code_size);
    osp__writer_begin(w, TAG_LIST_IDS);
    for (int i = 0; i < v->nlist; i++)
        osp__writer_chunk(w, v->lists[i].ids, (size_t)v->lists[i].n * sizeof(int64_t));
}

int osp__ivf_load(osp__ivf *v, osp_index *ix, const osp__reader *r) {
    int trained = ix->trained;
    if (!trained) return OSP_OK; /* an untrained index has no lists */
    if (v->nlist < 1) return osp_error(OSP_ECORRUPT, "%s: trained index with %d lists", r->name, v->nlist);
    const void *cent, *sizes, *codes, *ids;
    size_t codes_bytes, ids_bytes;
    size_t cb = (size_t)v->nlist * v->d * sizeof(float);
    if ((uint64_t)v->nlist * (uint64_t)v->d * 4 > r->len)
        return osp_error(OSP_ECORRUPT, "%s: %d lists do not fit the file", r->name, v->nlist);
    int rc = osp__reader_get(r, TAG_CENTROIDS, cb, &cent);
    if (!rc) rc = osp__reader_get(r, TAG_LIST_SIZES, (size_t)v->nlist * sizeof(uint32_t), &sizes);
    if (!rc) rc = osp__reader_get_any(r, TAG_LIST_CODES, &codes, &codes_bytes);
    if (!rc) rc = osp__reader_get_any(r, TAG_LIST_IDS, &ids, &ids_bytes);
    if (rc) return rc;
    const uint32_t *sz = sizes;
    uint64_t total = 0;
    for (int i = 0; i < v->nlist; i++) total += sz[i];
    if (total != r->count || total > r->len / 8 || total * v->code_size != codes_bytes || total * 8 != ids_bytes)
        return osp_error(OSP_ECORRUPT, "%s: list sizes disagree with the sections", r->name);
    v->centroids = (float *)cent;
    v->centroids_owned = 0;
    if (alloc_lists(v)) return osp_error(OSP_ENOMEM, "%s: out of memory for %d lists", r->name, v->nlist);
    osp__norms(v->centroids, v->nlist, v->d, ix->kern, v->cnorms);
    rc = osp__idmap_reserve(&ix->map, (size_t)total);
    if (rc) return rc;
    const uint8_t *cp = codes;
    const int64_t *ip = ids;
    for (int i = 0; i < v->nlist; i++) {
        osp__ivf_list *l = &v->lists[i];
        l->owned = 0;
        l->n = l->cap = sz[i];
        l->codes = (uint8_t *)cp;
        l->ids = (int64_t *)ip;
        cp += (size_t)sz[i] * v->code_size;
        ip += sz[i];
        for (uint32_t j = 0; j < l->n; j++) {
            int64_t id = l->ids[j];
            if ((rc = osp__idmap_put_loaded(&ix->map, id, OSP__IVF_LOC(i, j), r->name))) return rc;
        }
    }
    return OSP_OK;
}

size_t osp__ivf_bytes(const osp__ivf *v) {
    size_t b = (size_t)v->nlist * (sizeof(osp__ivf_list) + sizeof(float));
    if (v->centroids_owned) b += (size_t)v->nlist * v->d * sizeof(float);
    for (int i = 0; v->lists && i < v->nlist; i++)
        if (v->lists[i].owned) b += (size_t)v->lists[i].cap * (v->code_size + sizeof(int64_t));
    return b;
}

int osp__ivf_nprobe(const osp__ivf *v, const osp__search_ctx *sc) {
    if (osp__use_exact(sc)) return v->nlist;
    double p = sc->nprobe > 0 ? sc->nprobe : OSP__IVF_DEFAULT_NPROBE;
    /* With a filter, the probed lists hold only the allowed share of their
     * vectors: probe that much wider to find as many candidates. */
    if (sc->filter && sc->allowed_fraction > 0) p = ceil(p / sc->allowed_fraction);
    return p >= v->nlist ? v->nlist : p < 1 ? 1 : (int)p;
}
