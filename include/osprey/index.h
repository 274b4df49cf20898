/* osprey index: exact and approximate nearest-neighbour search.
 *
 * One API over every index type: create, train (IVF types), add vectors with
 * 64-bit ids, remove by id, search k-NN, save, load. The library depends only
 * on osprey/core.h and BLAS; it can be used on its own by C programs.
 *
 * Distances are "smaller is closer" for every metric:
 *   L2       squared Euclidean distance
 *   IP       the negated inner product, -<q, x>
 *   COSINE   1 - cos(q, x); vectors and queries are normalised on the way in
 *   HAMMING  the number of differing bits (binary codes)
 *
 * Thread safety: every call may be made from any thread. Searches hold a
 * shared lock and run concurrently; add, remove and train hold an exclusive
 * lock, so they wait for running searches and block new ones until they end
 * (a long add blocks searches for its whole duration: add in batches to keep
 * searches flowing). Search parameters travel with each call, so threads with
 * different k, ef or nprobe never race.
 */
#ifndef OSPREY_INDEX_H
#define OSPREY_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "osprey/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct osp_index osp_index;

/* Stable numbers: they are written into index files. */
typedef enum osp_index_type {
    OSP_INDEX_FLAT = 1,     /* exact search */
    OSP_INDEX_IVF_FLAT = 2, /* k-means lists, full vectors */
    OSP_INDEX_IVF_PQ = 3,   /* k-means lists, product-quantized residuals */
    OSP_INDEX_LSH = 4,      /* SimHash tables with multi-probe (cosine) */
    OSP_INDEX_BINARY = 5,   /* exact Hamming search over packed codes */
    OSP_INDEX_HNSW = 6,     /* hierarchical navigable small-world graph */
} osp_index_type;

typedef enum osp_index_metric {
    OSP_INDEX_METRIC_L2 = 1,
    OSP_INDEX_METRIC_IP = 2,
    OSP_INDEX_METRIC_COSINE = 3,
    OSP_INDEX_METRIC_HAMMING = 4,
} osp_index_metric;

/* The id reported where a query has fewer than k results. */
#define OSP_INDEX_NO_ID ((int64_t)-1)
/* Largest accepted dimension (floats per vector, or bits per binary code). */
#define OSP_INDEX_MAX_DIM 65536
/* Largest k (and efSearch) accepted by a search. */
#define OSP_INDEX_MAX_K 65536

/* How to build an index. Fill with osp_index_params_init, then change what
 * you need; fields that do not apply to the type are ignored. */
typedef struct osp_index_params {
    osp_index_type type;
    osp_index_metric metric;
    int dim;                  /* floats per vector; bits per code for BINARY (multiple of 8) */
    int nlist;                /* IVF: coarse clusters; 0 = about 4 sqrt(n) at train */
    int pq_m;                 /* IVF-PQ: sub-quantizers, dim % pq_m == 0 (default: dim/8 bytes) */
    int pq_nbits;             /* IVF-PQ: bits per sub-code, 1..8 (default 8: one byte each) */
    int lsh_nbits;            /* LSH: hyperplanes per table (key width), 1..20; 0 = from the first add */
    int lsh_tables;           /* LSH: hash tables, 1..64 (tables x 2^nbits <= 2^22) */
    int hnsw_m;               /* HNSW: links per node on upper levels (2M at level 0), 2..128 */
    int hnsw_ef_construction; /* HNSW: candidate list size while inserting */
    int kmeans_iters;         /* IVF: Lloyd iterations for training */
    int threads;              /* threads for train and add; 0 = osp_threads_get() */
    uint64_t seed;            /* k-means, PQ, hyperplanes and HNSW levels */
} osp_index_params;

/* Defaults for a type: nlist 0 (auto), pq_nbits 8, lsh auto bits x 8 tables,
 * HNSW M 16 efConstruction 200, 10 k-means iterations, seed 1234. */
OSP_API void osp_index_params_init(osp_index_params *p, osp_index_type type,
                                   osp_index_metric metric, int dim);

/* Restricts a search to allowed ids: an id-indexed bitmap (bit id%64 of word
 * id/64; ids at or past bitmap_bits are not allowed), a predicate, or both
 * (then both must allow). Borrowed for the duration of the search; the
 * predicate may be called from several threads at once. */
typedef struct osp_index_filter {
    const uint64_t *bitmap;
    int64_t bitmap_bits;
    int (*allow)(int64_t id, void *ctx); /* nonzero = allowed */
    void *ctx;
} osp_index_filter;

/* Per-call search settings (never stored on the index). */
typedef struct osp_index_search_params {
    int k;                          /* neighbours per query, 1..OSP_INDEX_MAX_K */
    int ef_search;                  /* HNSW candidate list (raised to k); 0 = max(k, 64) */
    int nprobe;                     /* IVF: lists probed; LSH: buckets probed per table; 0 = default */
    int threads;                    /* threads for a batch of queries; 0 = 1 */
    const osp_index_filter *filter; /* NULL: every id */
} osp_index_search_params;

OSP_API void osp_index_search_params_init(osp_index_search_params *sp, int k);
/* Fills in the settings a search of index with sp uses where sp leaves
 * them 0, for reports: ef_search (HNSW: max(k, 64), and never below k),
 * nprobe (IVF: 8, at most nlist; LSH: 16) and threads (1). Settings the
 * index type does not use become 0. */
OSP_API void osp_index_search_params_resolve(const osp_index *index, osp_index_search_params *sp);

/* Called now and then by a long add with the vectors done so far, from the
 * calling thread. */
typedef void (*osp_index_progress_cb)(int64_t done, int64_t total, void *ctx);

/* What an index holds. */
typedef struct osp_index_info {
    osp_index_params params; /* as resolved (nlist after training, ...) */
    int64_t count;           /* live vectors */
    int64_t removed;         /* vectors removed since the index was created */
    int64_t free_slots;      /* slots freed by remove, reused by the next adds */
    int64_t next_id;         /* the id an add without ids gives its first vector */
    int trained;             /* 1 once add is allowed */
    int max_level;           /* HNSW: top level of the graph (-1 when empty) */
    size_t memory_bytes;     /* bytes held: owned memory plus mapped file */
    int mapped;              /* 1 if loaded by mapping a file (copied on first change) */
} osp_index_info;

/* ---- life cycle ------------------------------------------------------- */

/* A new empty index; the caller owns it (osp_index_free). Checks that the
 * metric suits the type (HAMMING only with BINARY; LSH only with COSINE). */
OSP_API int osp_index_new(const osp_index_params *p, osp_index **out);
OSP_API void osp_index_free(osp_index *index);

/* IVF types learn their clusters (and PQ codebooks) from x (n x dim); other
 * types accept and ignore the call. Training again is refused once vectors
 * were added. x is only read during the call. */
OSP_API int osp_index_train(osp_index *index, const float *x, int64_t n);
OSP_API int osp_index_is_trained(const osp_index *index);

/* Adds n vectors (n x dim floats) with their ids (n ids >= 0, not already
 * present and not repeated), or with ids next_id, next_id+1, ... when ids is
 * NULL. On an error nothing is added. Every value must be finite: a row
 * holding NaN or an infinity is refused (OSP_EINVAL, naming the row), as
 * it is by train and search. BINARY indexes take codes instead. */
OSP_API int osp_index_add(osp_index *index, const float *x, const int64_t *ids, int64_t n);
/* Adds n packed binary codes (n x dim/8 bytes, bit i of a code is bit i%8 of
 * byte i/8) to a BINARY index. */
OSP_API int osp_index_add_codes(osp_index *index, const uint8_t *codes, const int64_t *ids,
                                int64_t n);

/* Removes the vectors with these ids; ids not in the index are skipped.
 * *removed (may be NULL) gets the number found and removed. Their slots are
 * reused by later adds; HNSW relinks the neighbours of removed nodes. */
OSP_API int osp_index_remove(osp_index *index, const int64_t *ids, int64_t n, int64_t *removed);

/* k nearest neighbours of nq queries (nq x dim floats). ids (nq x k) gets the
 * ids closest first, OSP_INDEX_NO_ID past the last result; distances (nq x k,
 * may be NULL) the matching distances, INFINITY past the last result. A
 * query holding NaN or an infinity is refused (OSP_EINVAL, naming its row). */
OSP_API int osp_index_search(const osp_index *index, const float *queries, int64_t nq,
                             const osp_index_search_params *sp, int64_t *ids, float *distances);
/* The same for a BINARY index, with nq packed codes. */
OSP_API int osp_index_search_codes(const osp_index *index, const uint8_t *codes, int64_t nq,
                                   const osp_index_search_params *sp, int64_t *ids,
                                   float *distances);

/* 1 if id is in the index. */
OSP_API int osp_index_contains(const osp_index *index, int64_t id);
/* Live vectors. */
OSP_API int64_t osp_index_count(const osp_index *index);
OSP_API int osp_index_info_get(const osp_index *index, osp_index_info *info);
OSP_API void osp_index_set_progress(osp_index *index, osp_index_progress_cb cb, void *ctx);

/* ---- persistence -------------------------------------------------------- */

/* Writes the index to path atomically (temporary file, fsync, rename).
 * Searches may run during a save. */
OSP_API int osp_index_save(const osp_index *index, const char *path);
/* Loads an index written by osp_index_save. The file is memory-mapped and the
 * large arrays are used in place until the first add or remove copies them.
 * The header, the checksum of the whole file and every size and link are
 * checked: a truncated or corrupted file gives OSP_EFORMAT or OSP_ECORRUPT,
 * never a crash. */
OSP_API int osp_index_load(const char *path, osp_index **out);
/* The same from a buffer (copied); name is used in error messages. */
OSP_API int osp_index_load_memory(const void *buf, size_t len, const char *name,
                                  osp_index **out);

/* ---- names -------------------------------------------------------------- */

/* "flat", "ivf", "ivfpq", "lsh", "binary", "hnsw" */
OSP_API const char *osp_index_type_name(osp_index_type t);
/* "l2", "ip", "cos", "hamming" */
OSP_API const char *osp_index_metric_name(osp_index_metric m);
/* Parse the names above (also "ivf-flat", "ivf-pq", "cosine", "inner").
 * Return 0 or OSP_EINVAL. */
OSP_API int osp_index_type_parse(const char *s, osp_index_type *t);
OSP_API int osp_index_metric_parse(const char *s, osp_index_metric *m);

#ifdef __cplusplus
}
#endif

#endif
