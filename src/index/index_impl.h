/* Internals shared by the index types: the common index header and the
 * vtable every type fills, the id map, and the file container. Distance
 * kernels, top-k heaps, visited sets and k-means have their own headers. */
#ifndef OSPREY_INDEX_IMPL_H
#define OSPREY_INDEX_IMPL_H

#include <pthread.h>
#include <stdint.h>

#include "index/distance.h"
#include "osprey/index.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "index files are little-endian; a big-endian port needs byte swapping in format.c"
#endif

/* ---- id map: 64-bit id -> 64-bit location -------------------------------- */

/* Open addressing with linear probing and backward-shift deletion, so that
 * removing never leaves tombstones that slow later lookups. The location's
 * meaning is up to the type (a slot, or list << 32 | position). */
typedef struct osp__idmap {
    int64_t *keys; /* cap; -1 = empty */
    uint64_t *vals;
    size_t cap;    /* power of two, or 0 */
    size_t count;
} osp__idmap;

void osp__idmap_free(osp__idmap *m);
/* Makes room for n more entries without rehashing. */
int osp__idmap_reserve(osp__idmap *m, size_t n);
/* 1 and *val if present, else 0. */
int osp__idmap_get(const osp__idmap *m, int64_t id, uint64_t *val);
/* Inserts or overwrites (id >= 0). Needs room: call reserve first. */
void osp__idmap_put(osp__idmap *m, int64_t id, uint64_t val);
/* 1 if it was there. */
int osp__idmap_del(osp__idmap *m, int64_t id);
/* For loaders: puts an id read from file `name`, refusing a negative or
 * repeated one with OSP_ECORRUPT. Needs room: call reserve first. */
int osp__idmap_put_loaded(osp__idmap *m, int64_t id, uint64_t val, const char *name);
/* The i-th occupied entry of a deterministic sample, used to estimate filter
 * selectivity: fills up to n ids, returns how many. */
size_t osp__idmap_sample(const osp__idmap *m, int64_t *ids, size_t n);

/* ---- index file container -------------------------------------------------- */

/* File layout (little-endian):
 *   header 64 bytes: magic "OSPINDEX", version, type, metric, dim, count,
 *                    file bytes, section count, body CRC-32C, header CRC-32C
 *   section table:   per section {u32 tag, u32 reserved, u64 offset, u64 bytes}
 *   sections:        each starting at a multiple of 64 bytes, so that arrays
 *                    in a mapped file are aligned for SIMD loads. */
/* Search defaults where the caller leaves a setting 0
 * (osp_index_search_params_resolve reports them). */
#define OSP__DEFAULT_EF 64          /* HNSW candidate list, raised to k */
#define OSP__IVF_DEFAULT_NPROBE 8   /* IVF lists probed */
#define OSP__LSH_DEFAULT_PROBES 16  /* LSH buckets per table */

#define OSP__FILE_MAGIC "OSPINDEX"
#define OSP__FILE_VERSION 1
#define OSP__FILE_HEADER 64
#define OSP__FILE_MAX_SECTIONS 64

/* Section tags: four characters, read as a little-endian u32. */
#define OSP__TAG(a, b, c, d) \
    ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)

typedef struct osp__chunk {
    const void *data;
    size_t bytes;
} osp__chunk;

typedef struct osp__wsection {
    uint32_t tag;
    size_t first_chunk, n_chunks;
    uint64_t bytes;
} osp__wsection;

/* Collects borrowed sections (each one or more chunks) and writes them. */
typedef struct osp__writer {
    osp__wsection sections[OSP__FILE_MAX_SECTIONS];
    int n_sections;
    osp__chunk *chunks;
    size_t n_chunks, cap_chunks;
    void *owned[OSP__FILE_MAX_SECTIONS]; /* copies made by writer_add_copy */
    int n_owned;
    int failed; /* an allocation failed: write reports it */
} osp__writer;

void osp__writer_init(osp__writer *w);
void osp__writer_free(osp__writer *w);
/* A section of one chunk; data is borrowed until write returns. */
void osp__writer_add(osp__writer *w, uint32_t tag, const void *data, size_t bytes);
/* A section of one chunk copied now (for small blocks built on the stack). */
void osp__writer_add_copy(osp__writer *w, uint32_t tag, const void *data, size_t bytes);
/* A section assembled from chunks added by writer_chunk until the next
 * writer_begin or write. */
void osp__writer_begin(osp__writer *w, uint32_t tag);
void osp__writer_chunk(osp__writer *w, const void *data, size_t bytes);
/* Writes header, table and sections atomically to path. */
int osp__writer_write(osp__writer *w, const osp_index *ix, const char *path);

typedef struct osp__rsection {
    uint32_t tag;
    const uint8_t *data;
    uint64_t bytes;
} osp__rsection;

typedef struct osp__reader {
    const char *name; /* for messages */
    const uint8_t *base;
    size_t len;
    uint32_t type, metric, dim, version;
    uint64_t count;
    osp__rsection sections[OSP__FILE_MAX_SECTIONS];
    int n_sections;
} osp__reader;

/* Checks magic, version, sizes, table and both checksums. */
int osp__reader_open(osp__reader *r, const void *buf, size_t len, const char *name);
/* The section with this tag whose size must be exactly bytes; an error naming
 * the section otherwise. */
int osp__reader_get(const osp__reader *r, uint32_t tag, size_t bytes, const void **data);
/* The section with this tag of any size (*bytes), or OSP_EFORMAT. */
int osp__reader_get_any(const osp__reader *r, uint32_t tag, const void **data, size_t *bytes);

/* Fixed-width little-endian parameter blocks: each type saves its own
 * parameters as an array of u64 and checks every value on load. */
#define OSP__TAG_PARAMS OSP__TAG('P', 'R', 'M', 'S')

/* ---- the common index header ----------------------------------------------- */

struct osp__search_ctx;

typedef struct osp__index_ops {
    osp_index_type type;
    size_t struct_size; /* the type's struct, which starts with osp_index */
    /* Sets up an empty index from ix->params (already checked). */
    int (*init)(osp_index *ix);
    /* Optional: NULL for types that need no training. */
    int (*train)(osp_index *ix, const float *x, int64_t n);
    /* x: n vectors (normalised already for COSINE) or codes for BINARY; ids
     * are checked fresh and distinct; the id map has room for n more. */
    int (*add)(osp_index *ix, const void *x, const int64_t *ids, int64_t n);
    /* Removes ids present in the id map (absent ones skipped); counts them. */
    int (*remove)(osp_index *ix, const int64_t *ids, int64_t n, int64_t *removed);
    /* nq queries (normalised for COSINE), distances always filled. */
    int (*search)(const osp_index *ix, const void *q, int64_t nq,
                  const struct osp__search_ctx *sc, int64_t *ids, float *dist);
    int (*save)(const osp_index *ix, osp__writer *w);
    /* Fills the type's state from the sections (borrowing them is allowed:
     * the backing memory lives as long as the index). */
    int (*load)(osp_index *ix, const osp__reader *r);
    void (*destroy)(osp_index *ix);
    /* Owned bytes beyond the common header, and type-specific info fields. */
    void (*info)(const osp_index *ix, osp_index_info *info);
} osp__index_ops;

struct osp_index {
    const osp__index_ops *ops;
    osp_index_params params;
    int trained;
    int64_t next_id;
    int64_t removed_total;
    osp__idmap map;            /* every live id -> type-specific location */
    const osp__kernels *kern;  /* chosen once from the CPU's features */
    osp__dist_fn dist;         /* the metric's kernel (L2 or negated dot) */
    osp__dist_many_fn dist_many; /* the same over a run of vectors */
    pthread_rwlock_t lock;     /* shared by searches, exclusive for changes */
    osp_index_progress_cb progress;
    void *progress_ctx;
    /* The loaded file's bytes when the index borrows from them. */
    osp_mapped_file mapping;
    void *backing_copy;        /* osp_load_memory's copy (osp_free) */
    size_t backing_len;
};

/* What a search call resolved once for all its queries. */
typedef struct osp__search_ctx {
    int k;
    int ef;
    int nprobe;
    int threads;
    const osp_index_filter *filter; /* NULL: all */
    double allowed_fraction;        /* estimate over live ids, 1 without a filter */
    int64_t allowed_estimate;       /* live ids allowed, estimated */
} osp__search_ctx;

/* 1 if the filter allows id (or there is none). */
static inline int osp__allowed(const osp__search_ctx *sc, int64_t id) {
    const osp_index_filter *f = sc->filter;
    if (!f) return 1;
    if (f->bitmap) {
        if (id < 0 || id >= f->bitmap_bits) return 0;
        if (!((f->bitmap[id >> 6] >> (id & 63)) & 1)) return 0;
    }
    if (f->allow && !f->allow(id, f->ctx)) return 0;
    return 1;
}

/* Graph and list types search the allowed set exhaustively when the filter
 * leaves fewer than this fraction, or this many, of the live vectors: below
 * that a graph walk visits mostly rejected nodes and recall collapses, while
 * an exact scan of the few allowed ones is cheap. */
#define OSP__EXACT_FRACTION 0.05
#define OSP__EXACT_COUNT 2048
static inline int osp__use_exact(const osp__search_ctx *sc) {
    if (!sc->filter) return 0;
    return sc->allowed_fraction < OSP__EXACT_FRACTION || sc->allowed_estimate < OSP__EXACT_COUNT;
}

/* Progress report for long adds. */
static inline void osp__progress(const osp_index *ix, int64_t done, int64_t total) {
    if (ix->progress) ix->progress(done, total, ix->progress_ctx);
}

static inline int osp__threads(const osp_index *ix) {
    int t = ix->params.threads > 0 ? ix->params.threads : osp_threads_get();
    return t > 0 ? t : 1;
}

/* Bytes per stored vector or code. */
static inline size_t osp__vec_bytes(const osp_index *ix) {
    return ix->params.metric == OSP_INDEX_METRIC_HAMMING ? (size_t)ix->params.dim / 8
                                                         : (size_t)ix->params.dim * sizeof(float);
}

/* Growth policy for the types' arrays: 1.5x, at least need. */
static inline size_t osp__grow(size_t cap, size_t need) {
    size_t c = cap < 16 ? 16 : cap + cap / 2;
    return c < need ? need : c;
}

/* Reallocates an osp_alloc'd block to new_bytes, keeping old_bytes. */
void *osp__realloc(void *p, size_t old_bytes, size_t new_bytes);
/* An owned copy of bytes (for copy-on-write of mapped arrays). */
void *osp__dup(const void *p, size_t bytes);

/* The vtables. */
extern const osp__index_ops osp__flat_ops;
extern const osp__index_ops osp__binary_ops;
extern const osp__index_ops osp__ivf_flat_ops;
extern const osp__index_ops osp__ivf_pq_ops;
extern const osp__index_ops osp__lsh_ops;
extern const osp__index_ops osp__hnsw_ops;

#endif
