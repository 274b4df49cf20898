/* The one osp_index API over all types: argument checks, locking, id
 * bookkeeping, cosine normalisation and persistence of the common fields;
 * the types (flat.c, ivf_flat.c, ...) do the rest through their vtables. */
#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np: writer preference */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "index/index_impl.h"

/* ---- small shared helpers ----------------------------------------------- */

void *osp__realloc(void *p, size_t old_bytes, size_t new_bytes) {
    void *q = osp_alloc(new_bytes);
    if (!q) return NULL;
    if (p && old_bytes) memcpy(q, p, old_bytes < new_bytes ? old_bytes : new_bytes);
    osp_free(p);
    return q;
}

void *osp__dup(const void *p, size_t bytes) {
    void *q = osp_alloc(bytes);
    if (q && bytes) memcpy(q, p, bytes);
    return q;
}

/* ---- names and parameters ---------------------------------------------- */

const char *osp_index_type_name(osp_index_type t) {
    switch (t) {
    case OSP_INDEX_FLAT: return "flat";
    case OSP_INDEX_IVF_FLAT: return "ivf";
    case OSP_INDEX_IVF_PQ: return "ivfpq";
    case OSP_INDEX_LSH: return "lsh";
    case OSP_INDEX_BINARY: return "binary";
    case OSP_INDEX_HNSW: return "hnsw";
    }
    return "unknown";
}

const char *osp_index_metric_name(osp_index_metric m) {
    switch (m) {
    case OSP_INDEX_METRIC_L2: return "l2";
    case OSP_INDEX_METRIC_IP: return "ip";
    case OSP_INDEX_METRIC_COSINE: return "cos";
    case OSP_INDEX_METRIC_HAMMING: return "hamming";
    }
    return "unknown";
}

int osp_index_type_parse(const char *s, osp_index_type *t) {
    static const struct {
        const char *name;
        osp_index_type type;
    } names[] = {{"flat", OSP_INDEX_FLAT},     {"ivf", OSP_INDEX_IVF_FLAT},
                 {"ivf-flat", OSP_INDEX_IVF_FLAT}, {"ivfflat", OSP_INDEX_IVF_FLAT},
                 {"ivfpq", OSP_INDEX_IVF_PQ},  {"ivf-pq", OSP_INDEX_IVF_PQ},
                 {"lsh", OSP_INDEX_LSH},       {"binary", OSP_INDEX_BINARY},
                 {"hnsw", OSP_INDEX_HNSW}};
    for (size_t i = 0; s && i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(s, names[i].name)) {
            *t = names[i].type;
            return OSP_OK;
        }
    return osp_error(OSP_EINVAL, "unknown index type '%s' (flat, ivf, ivfpq, lsh, binary, hnsw)",
                     s ? s : "");
}

int osp_index_metric_parse(const char *s, osp_index_metric *m) {
    static const struct {
        const char *name;
        osp_index_metric metric;
    } names[] = {{"l2", OSP_INDEX_METRIC_L2},         {"ip", OSP_INDEX_METRIC_IP},
                 {"inner", OSP_INDEX_METRIC_IP},      {"dot", OSP_INDEX_METRIC_IP},
                 {"cos", OSP_INDEX_METRIC_COSINE},    {"cosine", OSP_INDEX_METRIC_COSINE},
                 {"hamming", OSP_INDEX_METRIC_HAMMING}};
    for (size_t i = 0; s && i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(s, names[i].name)) {
            *m = names[i].metric;
            return OSP_OK;
        }
    return osp_error(OSP_EINVAL, "unknown metric '%s' (l2, ip, cos, hamming)", s ? s : "");
}

static int default_pq_m(int dim) {
    /* about 8 dimensions per sub-quantizer, the usual trade of recall for
     * bytes, on a divisor of dim */
    for (int m = dim / 8 > 0 ? dim / 8 : 1; m > 1; m--)
        if (dim % m == 0) return m;
    return 1;
}

void osp_index_params_init(osp_index_params *p, osp_index_type type, osp_index_metric metric,
                           int dim) {
    memset(p, 0, sizeof *p);
    p->type = type;
    p->metric = metric;
    p->dim = dim;
    p->nlist = 0;
    p->pq_m = dim > 0 ? default_pq_m(dim) : 0;
    p->pq_nbits = 8;
    p->lsh_nbits = 0;
    p->lsh_tables = 8;
    p->hnsw_m = 16;
    p->hnsw_ef_construction = 200;
    p->kmeans_iters = 10;
    p->threads = 0;
    p->seed = 1234;
}

void osp_index_search_params_init(osp_index_search_params *sp, int k) {
    memset(sp, 0, sizeof *sp);
    sp->k = k;
}

void osp_index_search_params_resolve(const osp_index *cix, osp_index_search_params *sp) {
    if (!cix || !sp) return;
    osp_index *ix = (osp_index *)cix; /* the lock is the one mutable part */
    pthread_rwlock_rdlock(&ix->lock);
    const osp_index_type type = ix->params.type;
    const int nlist = ix->params.nlist;
    pthread_rwlock_unlock(&ix->lock);
    if (type == OSP_INDEX_HNSW) {
        if (sp->ef_search <= 0) sp->ef_search = OSP__DEFAULT_EF;
        if (sp->ef_search < sp->k) sp->ef_search = sp->k;
    } else {
        sp->ef_search = 0;
    }
    if (type == OSP_INDEX_IVF_FLAT || type == OSP_INDEX_IVF_PQ) {
        if (sp->nprobe <= 0) sp->nprobe = OSP__IVF_DEFAULT_NPROBE;
        if (nlist > 0 && sp->nprobe > nlist) sp->nprobe = nlist;
    } else if (type == OSP_INDEX_LSH) {
        if (sp->nprobe <= 0) sp->nprobe = OSP__LSH_DEFAULT_PROBES;
    } else {
        sp->nprobe = 0;
    }
    if (sp->threads <= 0) sp->threads = 1;
}

static const osp__index_ops *ops_for(osp_index_type t) {
    switch (t) {
    case OSP_INDEX_FLAT: return &osp__flat_ops;
    case OSP_INDEX_IVF_FLAT: return &osp__ivf_flat_ops;
    case OSP_INDEX_IVF_PQ: return &osp__ivf_pq_ops;
    case OSP_INDEX_LSH: return &osp__lsh_ops;
    case OSP_INDEX_BINARY: return &osp__binary_ops;
    case OSP_INDEX_HNSW: return &osp__hnsw_ops;
    }
    return NULL;
}

/* Every parameter is checked here, for new indexes and for loaded files. */
static int check_params(osp_index_params *p, const char *name) {
    if (!ops_for(p->type)) return osp_error(OSP_EINVAL, "%s: unknown index type %d", name, (int)p->type);
    const char *tn = osp_index_type_name(p->type);
    if (p->metric < OSP_INDEX_METRIC_L2 || p->metric > OSP_INDEX_METRIC_HAMMING)
        return osp_error(OSP_EINVAL, "%s: unknown metric %d", name, (int)p->metric);
    if ((p->type == OSP_INDEX_BINARY) != (p->metric == OSP_INDEX_METRIC_HAMMING))
        return osp_error(OSP_EINVAL, "%s: the %s index does not take the %s metric "
                         "(hamming goes with binary only)", name, tn,
                         osp_index_metric_name(p->metric));
    if (p->type == OSP_INDEX_LSH && p->metric != OSP_INDEX_METRIC_COSINE)
        return osp_error(OSP_EINVAL, "%s: lsh (SimHash) indexes take the cos metric only", name);
    if (p->dim < 1 || p->dim > OSP_INDEX_MAX_DIM)
        return osp_error(OSP_EINVAL, "%s: dimension %d outside 1..%d", name, p->dim, OSP_INDEX_MAX_DIM);
    if (p->type == OSP_INDEX_BINARY && p->dim % 8)
        return osp_error(OSP_EINVAL, "%s: binary codes need a multiple of 8 bits, not %d", name, p->dim);
    if (p->threads < 0) p->threads = 0;
    if (p->type == OSP_INDEX_IVF_FLAT || p->type == OSP_INDEX_IVF_PQ) {
        if (p->nlist < 0 || p->nlist > (1 << 20))
            return osp_error(OSP_EINVAL, "%s: nlist %d outside 0..%d", name, p->nlist, 1 << 20);
        if (p->kmeans_iters < 1 || p->kmeans_iters > 1000)
            return osp_error(OSP_EINVAL, "%s: k-means iterations %d outside 1..1000", name,
                             p->kmeans_iters);
    }
    if (p->type == OSP_INDEX_IVF_PQ) {
        if (p->pq_m < 1 || p->pq_m > p->dim || p->dim % p->pq_m)
            return osp_error(OSP_EINVAL, "%s: PQ m %d must divide the dimension %d", name, p->pq_m,
                             p->dim);
        if (p->pq_nbits < 1 || p->pq_nbits > 8)
            return osp_error(OSP_EINVAL, "%s: PQ nbits %d outside 1..8", name, p->pq_nbits);
    }
    if (p->type == OSP_INDEX_LSH) {
        if (p->lsh_nbits < 0 || p->lsh_nbits > 20)
            return osp_error(OSP_EINVAL, "%s: LSH bits per table %d outside 0..20", name, p->lsh_nbits);
        if (p->lsh_tables < 1 || p->lsh_tables > 64)
            return osp_error(OSP_EINVAL, "%s: LSH tables %d outside 1..64", name, p->lsh_tables);
    }
    if (p->type == OSP_INDEX_HNSW) {
        if (p->hnsw_m < 2 || p->hnsw_m > 128)
            return osp_error(OSP_EINVAL, "%s: HNSW M %d outside 2..128", name, p->hnsw_m);
        if (p->hnsw_ef_construction < 1 || p->hnsw_ef_construction > OSP_INDEX_MAX_K)
            return osp_error(OSP_EINVAL, "%s: HNSW efConstruction %d outside 1..%d", name,
                             p->hnsw_ef_construction, OSP_INDEX_MAX_K);
    }
    return OSP_OK;
}

/* ---- life cycle --------------------------------------------------------- */

static int index_create(const osp_index_params *params, const char *name, osp_index **out) {
    osp_index_params p = *params;
    int rc = check_params(&p, name);
    if (rc) return rc;
    const osp__index_ops *ops = ops_for(p.type);
    osp_index *ix = osp_calloc(1, ops->struct_size);
    if (!ix) return OSP_ENOMEM;
    ix->ops = ops;
    ix->params = p;
    ix->trained = ops->train == NULL;
    ix->kern = osp__kernels_best();
    ix->dist = p.metric == OSP_INDEX_METRIC_L2 ? ix->kern->l2sq : ix->kern->ndot;
    ix->dist_many = p.metric == OSP_INDEX_METRIC_L2 ? ix->kern->l2sq_many : ix->kern->ndot_many;
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    /* a steady stream of searches must not starve an add or remove */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    rc = pthread_rwlock_init(&ix->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rc) {
        osp_free(ix);
        return osp_error(OSP_ENOMEM, "index: cannot create a lock");
    }
    rc = ops->init(ix);
    if (rc) {
        ops->destroy(ix);
        pthread_rwlock_destroy(&ix->lock);
        osp_free(ix);
        return rc;
    }
    *out = ix;
    return OSP_OK;
}

int osp_index_new(const osp_index_params *p, osp_index **out) {
    if (!p || !out) return osp_error(OSP_EINVAL, "osp_index_new: NULL argument");
    *out = NULL;
    return index_create(p, "index", out);
}

void osp_index_free(osp_index *ix) {
    if (!ix) return;
    ix->ops->destroy(ix);
    osp__idmap_free(&ix->map);
    pthread_rwlock_destroy(&ix->lock);
    if (ix->mapping.data) osp_file_unmap(&ix->mapping);
    osp_free(ix->backing_copy);
    osp_free(ix);
}

int osp_index_is_trained(const osp_index *ix) { return ix && ix->trained; }

void osp_index_set_progress(osp_index *ix, osp_index_progress_cb cb, void *ctx) {
    if (!ix) return;
    pthread_rwlock_wrlock(&ix->lock);
    ix->progress = cb;
    ix->progress_ctx = ctx;
    pthread_rwlock_unlock(&ix->lock);
}

/* OSP_OK if every value of x (n rows of d) is a finite number; else an
 * OSP_EINVAL that names the first row holding NaN or an infinity (rows
 * count from 0), so that no NaN distance ever reaches a result. */
static int check_finite(const float *x, int64_t n, int d, const char *what) {
    for (int64_t i = 0; i < n; i++) {
        const float *row = x + (size_t)i * (size_t)d;
        uint32_t bad = 0;
        for (int j = 0; j < d; j++) {
            uint32_t u;
            memcpy(&u, row + j, sizeof u);
            bad |= (u & 0x7f800000u) == 0x7f800000u;
        }
        if (!bad) continue;
        int j = 0;
        while (j < d && isfinite(row[j])) j++;
        return osp_error(OSP_EINVAL, "index: row %lld of the %s holds %s at dimension %d: %s must "
                         "be finite numbers", (long long)i, what,
                         isnan(row[j]) ? "NaN" : row[j] > 0 ? "+infinity" : "-infinity", j, what);
    }
    return OSP_OK;
}

/* Unit-length copies for the cosine metric (zero vectors stay zero). */
static float *normalized_copy(const float *x, int64_t n, int d) {
    size_t bytes;
    if (osp_mul_size((size_t)n, (size_t)d * sizeof(float), &bytes)) {
        osp_error(OSP_ENOMEM, "index: %lld vectors are too many", (long long)n);
        return NULL;
    }
    float *y = osp_alloc(bytes);
    if (!y) return NULL;
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *yi = y + (size_t)i * d;
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)xi[j] * xi[j];
        float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
        for (int j = 0; j < d; j++) yi[j] = xi[j] * inv;
    }
    return y;
}

int osp_index_train(osp_index *ix, const float *x, int64_t n) {
    if (!ix) return osp_error(OSP_EINVAL, "osp_index_train: NULL index");
    if (!ix->ops->train) return OSP_OK;
    if ((!x && n > 0) || n < 0) return osp_error(OSP_EINVAL, "osp_index_train: bad argument");
    int finite = check_finite(x, n, ix->params.dim, "vectors");
    if (finite) return finite;
    pthread_rwlock_wrlock(&ix->lock);
    int rc = OSP_OK;
    if (ix->map.count > 0 || ix->removed_total > 0) {
        rc = osp_error(OSP_ESTATE, "index: cannot train again after vectors were added");
        goto out;
    }
    const float *xt = x;
    float *norm = NULL;
    if (ix->params.metric == OSP_INDEX_METRIC_COSINE) {
        norm = normalized_copy(x, n, ix->params.dim);
        if (!norm) {
            rc = OSP_ENOMEM;
            goto out;
        }
        xt = norm;
    }
    rc = ix->ops->train(ix, xt, n);
    if (!rc) ix->trained = 1;
    osp_free(norm);
out:
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

/* Checks ids (>= 0, not present, not repeated) or makes them from next_id. */
static int prepare_ids(osp_index *ix, const int64_t *ids, int64_t n, int64_t **made) {
    *made = NULL;
    if (!ids) {
        if (ix->next_id > INT64_MAX - n) return osp_error(OSP_ERANGE, "index: ids exhausted");
        int64_t *m = osp_alloc((size_t)n * sizeof *m);
        if (!m) return OSP_ENOMEM;
        for (int64_t i = 0; i < n; i++) m[i] = ix->next_id + i;
        *made = m;
        return OSP_OK;
    }
    osp__idmap seen = {0};
    int rc = osp__idmap_reserve(&seen, (size_t)n);
    for (int64_t i = 0; !rc && i < n; i++) {
        if (ids[i] < 0)
            rc = osp_error(OSP_EINVAL, "index: id %lld at position %lld is negative",
                           (long long)ids[i], (long long)i);
        else if (osp__idmap_get(&ix->map, ids[i], NULL))
            rc = osp_error(OSP_EINVAL, "index: id %lld is already in the index (remove it first)",
                           (long long)ids[i]);
        else if (osp__idmap_get(&seen, ids[i], NULL))
            rc = osp_error(OSP_EINVAL, "index: id %lld appears twice in the batch", (long long)ids[i]);
        else
            osp__idmap_put(&seen, ids[i], 0);
    }
    osp__idmap_free(&seen);
    return rc;
}

static int add_common(osp_index *ix, const void *x, const int64_t *ids, int64_t n, int codes) {
    if (!ix || n < 0 || (n > 0 && !x)) return osp_error(OSP_EINVAL, "osp_index_add: bad argument");
    if (codes != (ix->params.type == OSP_INDEX_BINARY))
        return osp_error(OSP_ENOTSUP, codes ? "index: only binary indexes take codes"
                                            : "index: a binary index takes codes (osp_index_add_codes)");
    if (n == 0) return OSP_OK;
    if (!codes) {
        int finite = check_finite(x, n, ix->params.dim, "vectors");
        if (finite) return finite;
    }
    pthread_rwlock_wrlock(&ix->lock);
    int64_t *made = NULL;
    float *norm = NULL;
    int rc = OSP_OK;
    if (!ix->trained) {
        rc = osp_error(OSP_ESTATE, "index: the %s index must be trained before adding",
                       osp_index_type_name(ix->params.type));
        goto out;
    }
    rc = prepare_ids(ix, ids, n, &made);
    if (rc) goto out;
    if (made) ids = made;
    rc = osp__idmap_reserve(&ix->map, (size_t)n);
    if (rc) goto out;
    if (ix->params.metric == OSP_INDEX_METRIC_COSINE) {
        norm = normalized_copy(x, n, ix->params.dim);
        if (!norm) {
            rc = OSP_ENOMEM;
            goto out;
        }
        x = norm;
    }
    rc = ix->ops->add(ix, x, ids, n);
    if (!rc)
        for (int64_t i = 0; i < n; i++)
            if (ids[i] >= ix->next_id) ix->next_id = ids[i] + 1;
out:
    pthread_rwlock_unlock(&ix->lock);
    osp_free(made);
    osp_free(norm);
    return rc;
}

int osp_index_add(osp_index *ix, const float *x, const int64_t *ids, int64_t n) {
    return add_common(ix, x, ids, n, 0);
}

int osp_index_add_codes(osp_index *ix, const uint8_t *codes, const int64_t *ids, int64_t n) {
    return add_common(ix, codes, ids, n, 1);
}

int osp_index_remove(osp_index *ix, const int64_t *ids, int64_t n, int64_t *removed) {
    if (removed) *removed = 0;
    if (!ix || n < 0 || (n > 0 && !ids)) return osp_error(OSP_EINVAL, "osp_index_remove: bad argument");
    if (n == 0) return OSP_OK;
    pthread_rwlock_wrlock(&ix->lock);
    int64_t got = 0;
    int rc = ix->ops->remove(ix, ids, n, &got);
    ix->removed_total += got;
    pthread_rwlock_unlock(&ix->lock);
    if (removed) *removed = got;
    return rc;
}

/* Estimates the share of live ids a filter allows from a sample of them. */
static void estimate_filter(const osp_index *ix, osp__search_ctx *sc) {
    sc->allowed_fraction = 1.0;
    sc->allowed_estimate = (int64_t)ix->map.count;
    if (!sc->filter) return;
    int64_t sample[512];
    size_t n = osp__idmap_sample(&ix->map, sample, sizeof sample / sizeof sample[0]);
    if (!n) return;
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) ok += (size_t)osp__allowed(sc, sample[i]);
    sc->allowed_fraction = (double)ok / (double)n;
    sc->allowed_estimate = (int64_t)(sc->allowed_fraction * (double)ix->map.count + 0.5);
}

static int search_common(const osp_index *cix, const void *q, int64_t nq,
                         const osp_index_search_params *sp, int64_t *ids, float *dist, int codes) {
    if (!cix || !sp || nq < 0 || (nq > 0 && (!q || !ids)))
        return osp_error(OSP_EINVAL, "osp_index_search: bad argument");
    if (codes != (cix->params.type == OSP_INDEX_BINARY))
        return osp_error(OSP_ENOTSUP, codes ? "index: only binary indexes take code queries"
                                            : "index: a binary index takes code queries "
                                              "(osp_index_search_codes)");
    if (sp->k < 1 || sp->k > OSP_INDEX_MAX_K)
        return osp_error(OSP_EINVAL, "index: k %d outside 1..%d", sp->k, OSP_INDEX_MAX_K);
    if (sp->ef_search < 0 || sp->ef_search > OSP_INDEX_MAX_K || sp->nprobe < 0)
        return osp_error(OSP_EINVAL, "index: efSearch %d or nprobe %d out of range", sp->ef_search,
                         sp->nprobe);
    if (sp->filter && sp->filter->bitmap && sp->filter->bitmap_bits < 0)
        return osp_error(OSP_EINVAL, "index: negative filter bitmap size");
    if (nq == 0) return OSP_OK;
    if (!codes) {
        int finite = check_finite(q, nq, cix->params.dim, "queries");
        if (finite) return finite;
    }
    size_t out_n;
    if (osp_mul_size((size_t)nq, (size_t)sp->k, &out_n))
        return osp_error(OSP_EINVAL, "index: %lld queries x k %d is too many", (long long)nq, sp->k);

    osp_index *ix = (osp_index *)cix; /* the lock is the one mutable part */
    osp__search_ctx sc = {0};
    sc.k = sp->k;
    sc.ef = sp->ef_search > 0 ? sp->ef_search : OSP__DEFAULT_EF;
    if (sc.ef < sc.k) sc.ef = sc.k;
    sc.nprobe = sp->nprobe;
    sc.threads = sp->threads > 0 ? sp->threads : 1;
    if (sc.threads > nq) sc.threads = (int)nq;
    sc.filter = sp->filter && (sp->filter->bitmap || sp->filter->allow) ? sp->filter : NULL;

    float *tmp_dist = NULL, *norm = NULL;
    int rc = OSP_OK;
    if (!dist) {
        dist = tmp_dist = osp_alloc(out_n * sizeof *dist);
        if (!dist) return OSP_ENOMEM;
    }
    if (ix->params.metric == OSP_INDEX_METRIC_COSINE) {
        norm = normalized_copy(q, nq, ix->params.dim);
        if (!norm) {
            osp_free(tmp_dist);
            return OSP_ENOMEM;
        }
        q = norm;
    }
    pthread_rwlock_rdlock(&ix->lock);
    estimate_filter(ix, &sc);
    if (ix->map.count == 0) {
        for (size_t i = 0; i < out_n; i++) {
            ids[i] = OSP_INDEX_NO_ID;
            dist[i] = INFINITY;
        }
    } else if (!ix->trained) {
        rc = osp_error(OSP_ESTATE, "index: not trained");
    } else {
        rc = ix->ops->search(ix, q, nq, &sc, ids, dist);
    }
    pthread_rwlock_unlock(&ix->lock);
    if (!rc && ix->params.metric == OSP_INDEX_METRIC_COSINE)
        for (size_t i = 0; i < out_n; i++)
            if (ids[i] >= 0) dist[i] += 1.0f; /* -cos -> 1 - cos */
    osp_free(norm);
    osp_free(tmp_dist);
    return rc;
}

int osp_index_search(const osp_index *ix, const float *q, int64_t nq,
                     const osp_index_search_params *sp, int64_t *ids, float *dist) {
    return search_common(ix, q, nq, sp, ids, dist, 0);
}

int osp_index_search_codes(const osp_index *ix, const uint8_t *q, int64_t nq,
                           const osp_index_search_params *sp, int64_t *ids, float *dist) {
    return search_common(ix, q, nq, sp, ids, dist, 1);
}

int osp_index_contains(const osp_index *cix, int64_t id) {
    if (!cix) return 0;
    osp_index *ix = (osp_index *)cix;
    pthread_rwlock_rdlock(&ix->lock);
    int r = osp__idmap_get(&ix->map, id, NULL);
    pthread_rwlock_unlock(&ix->lock);
    return r;
}

int64_t osp_index_count(const osp_index *cix) {
    if (!cix) return 0;
    osp_index *ix = (osp_index *)cix;
    pthread_rwlock_rdlock(&ix->lock);
    int64_t n = (int64_t)ix->map.count;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

int osp_index_info_get(const osp_index *cix, osp_index_info *info) {
    if (!cix || !info) return osp_error(OSP_EINVAL, "osp_index_info_get: NULL argument");
    osp_index *ix = (osp_index *)cix;
    memset(info, 0, sizeof *info);
    pthread_rwlock_rdlock(&ix->lock);
    info->params = ix->params;
    info->count = (int64_t)ix->map.count;
    info->removed = ix->removed_total;
    info->next_id = ix->next_id;
    info->trained = ix->trained;
    info->max_level = -1;
    info->mapped = ix->mapping.data != NULL || ix->backing_copy != NULL;
    info->memory_bytes = ix->ops->struct_size + ix->map.cap * 16 + ix->backing_len;
    ix->ops->info(ix, info);
    pthread_rwlock_unlock(&ix->lock);
    return OSP_OK;
}

/* ---- persistence --------------------------------------------------------- */

#define N_PARAMS 16

int osp_index_save(const osp_index *cix, const char *path) {
    if (!cix || !path) return osp_error(OSP_EINVAL, "osp_index_save: NULL argument");
    osp_index *ix = (osp_index *)cix;
    pthread_rwlock_rdlock(&ix->lock);
    const osp_index_params *p = &ix->params;
    uint64_t prm[N_PARAMS] = {(uint64_t)p->type,        (uint64_t)p->metric,
                              (uint64_t)p->dim,         (uint64_t)p->nlist,
                              (uint64_t)p->pq_m,        (uint64_t)p->pq_nbits,
                              (uint64_t)p->lsh_nbits,   (uint64_t)p->lsh_tables,
                              (uint64_t)p->hnsw_m,      (uint64_t)p->hnsw_ef_construction,
                              (uint64_t)p->kmeans_iters, p->seed,
                              (uint64_t)ix->next_id,    (uint64_t)ix->removed_total,
                              (uint64_t)ix->trained,    0};
    osp__writer w;
    osp__writer_init(&w);
    osp__writer_add(&w, OSP__TAG_PARAMS, prm, sizeof prm);
    int rc = ix->ops->save(ix, &w);
    if (!rc) rc = osp__writer_write(&w, ix, path);
    osp__writer_free(&w);
    pthread_rwlock_unlock(&ix->lock);
    return rc;
}

static int in_range(uint64_t v, uint64_t lo, uint64_t hi) { return v >= lo && v <= hi; }

static int load_from(const void *buf, size_t len, const char *name, osp_index **out) {
    osp__reader r;
    int rc = osp__reader_open(&r, buf, len, name);
    if (rc) return rc;
    const uint64_t *prm;
    rc = osp__reader_get(&r, OSP__TAG_PARAMS, N_PARAMS * sizeof(uint64_t), (const void **)&prm);
    if (rc) return rc;
    for (int i = 0; i < 11; i++)
        if (!in_range(prm[i], 0, INT32_MAX))
            return osp_error(OSP_ECORRUPT, "%s: parameter %d out of range", name, i);
    if (prm[0] != r.type || prm[1] != r.metric || prm[2] != r.dim)
        return osp_error(OSP_ECORRUPT, "%s: parameters disagree with the header", name);
    if (prm[12] > INT64_MAX || prm[13] > INT64_MAX || prm[14] > 1)
        return osp_error(OSP_ECORRUPT, "%s: counters out of range", name);
    osp_index_params p;
    memset(&p, 0, sizeof p);
    p.type = (osp_index_type)prm[0];
    p.metric = (osp_index_metric)prm[1];
    p.dim = (int)prm[2];
    p.nlist = (int)prm[3];
    p.pq_m = (int)prm[4];
    p.pq_nbits = (int)prm[5];
    p.lsh_nbits = (int)prm[6];
    p.lsh_tables = (int)prm[7];
    p.hnsw_m = (int)prm[8];
    p.hnsw_ef_construction = (int)prm[9];
    p.kmeans_iters = (int)prm[10];
    p.seed = prm[11];
    osp_index *ix;
    rc = index_create(&p, name, &ix);
    if (rc == OSP_EINVAL) {
        /* bad parameters in a file are damage, not a caller's mistake; the
         * message is copied since osp_error writes the same buffer */
        char msg[256];
        snprintf(msg, sizeof msg, "%s", osp_last_error());
        return osp_error(OSP_ECORRUPT, "%s", msg);
    }
    if (rc) return rc;
    ix->next_id = (int64_t)prm[12];
    ix->removed_total = (int64_t)prm[13];
    ix->trained = ix->ops->train == NULL || prm[14];
    rc = ix->ops->load(ix, &r);
    if (!rc && ix->map.count != r.count)
        rc = osp_error(OSP_ECORRUPT, "%s: header says %llu vectors, the body holds %zu", name,
                       (unsigned long long)r.count, ix->map.count);
    if (!rc && ix->map.count > 0 && !ix->trained)
        rc = osp_error(OSP_ECORRUPT, "%s: vectors in an untrained index", name);
    if (rc) {
        osp_index_free(ix);
        return rc;
    }
    *out = ix;
    return OSP_OK;
}

int osp_index_load(const char *path, osp_index **out) {
    if (!path || !out) return osp_error(OSP_EINVAL, "osp_index_load: NULL argument");
    *out = NULL;
    osp_mapped_file m = {0};
    int rc = osp_file_map(path, &m);
    if (rc) return rc;
    osp_index *ix;
    rc = load_from(m.data, m.len, path, &ix);
    if (rc) {
        osp_file_unmap(&m);
        return rc;
    }
    ix->mapping = m;
    ix->backing_len = m.len;
    *out = ix;
    return OSP_OK;
}

int osp_index_load_memory(const void *buf, size_t len, const char *name, osp_index **out) {
    if (!buf || !out) return osp_error(OSP_EINVAL, "osp_index_load_memory: NULL argument");
    *out = NULL;
    if (!name) name = "index";
    /* a copy: aligned for the sections, and owned for as long as the index */
    void *copy = osp__dup(buf, len);
    if (!copy) return OSP_ENOMEM;
    osp_index *ix;
    int rc = load_from(copy, len, name, &ix);
    if (rc) {
        osp_free(copy);
        return rc;
    }
    ix->backing_copy = copy;
    ix->backing_len = len;
    *out = ix;
    return OSP_OK;
}
