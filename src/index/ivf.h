/* The inverted-file machinery shared by IVF-Flat and IVF-PQ: a coarse
 * quantizer (k-means centroids) and one list per centroid of fixed-size
 * codes (a full vector for IVF-Flat, m PQ bytes for IVF-PQ) with their ids.
 * The id map holds list << 32 | position; remove moves a list's last entry
 * into the hole. */
#ifndef OSPREY_INDEX_IVF_H
#define OSPREY_INDEX_IVF_H

#include "index/index_impl.h"

typedef struct osp__ivf_list {
    uint8_t *codes; /* n x code_size */
    int64_t *ids;   /* n */
    uint32_t n, cap;
    int owned;      /* 0 while borrowed from a loaded file */
} osp__ivf_list;

typedef struct osp__ivf {
    int nlist, d;
    size_t code_size;
    int ip;                /* assign by largest inner product (IP, cosine), else L2 */
    float *centroids;      /* nlist x d */
    float *cnorms;         /* nlist squared norms */
    int centroids_owned;
    osp__ivf_list *lists;  /* nlist */
} osp__ivf;

#define OSP__IVF_LOC(list, pos) ((uint64_t)(list) << 32 | (uint64_t)(pos))
#define OSP__IVF_LIST(loc) ((int)((loc) >> 32))
#define OSP__IVF_POS(loc) ((uint32_t)(loc))

/* Sets d, code size and the assignment rule from the index. */
void osp__ivf_setup(osp__ivf *v, const osp_index *ix, size_t code_size);
void osp__ivf_destroy(osp__ivf *v);
/* k-means on x (n x d): picks nlist when params.nlist is 0 (written back),
 * allocates the empty lists. */
int osp__ivf_train(osp__ivf *v, osp_index *ix, const float *x, int64_t n);
/* The p nearest lists for each of n vectors (n x p), and their coarse
 * distances (may be NULL). */
int osp__ivf_probe(const osp__ivf *v, const osp_index *ix, const float *x, int64_t n, int p,
                   int threads, int32_t *lists, float *dist);
/* Room in each list for the entries about to be appended, so that appends
 * cannot fail half-way through a batch. */
int osp__ivf_reserve(osp__ivf *v, const int32_t *assign, int64_t n);
/* Appends one entry (room reserved) and records its id in the map. */
void osp__ivf_append(osp__ivf *v, osp_index *ix, int list, const void *code, int64_t id);
int osp__ivf_remove(osp__ivf *v, osp_index *ix, const int64_t *ids, int64_t n, int64_t *removed);
/* Sections: centroids, list sizes, all codes and all ids, list after list. */
void osp__ivf_save(const osp__ivf *v, osp__writer *w);
/* Lists borrow from the file; fills the id map. Needs nlist set. */
int osp__ivf_load(osp__ivf *v, osp_index *ix, const osp__reader *r);
size_t osp__ivf_bytes(const osp__ivf *v);
/* nprobe for a query: the requested (default 8), widened when a filter
 * leaves a small share of the vectors, all lists for an exact fallback. */
int osp__ivf_nprobe(const osp__ivf *v, const osp__search_ctx *sc);

#endif
