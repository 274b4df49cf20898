/* Top-k selection from a row of scores, vectorised: the row is compared with
 * the heap's bound 16 (or 8) values at a time and only the few that pass are
 * offered to the heap. This is what turns an sgemm tile into results without
 * a thread pool of its own: sgemm runs on BLAS's threads, the scan in the
 * calling thread, and the two never wait on each other's spinning threads. */
#ifndef OSPREY_INDEX_SELECT_H
#define OSPREY_INDEX_SELECT_H

#include <stdint.h>

#include "index/index_impl.h"
#include "index/topk.h"

/* Offers d_j = add[j] + scale * row[j] (add may be NULL: 0) for j < n, with
 * ids[j] (or id0 + j when ids is NULL), to the heap h of *nh <= k hits. A
 * filter (sc may be NULL) is asked only about values that beat the bound. */
typedef void (*osp__select_fn)(const float *row, const float *add, float scale, int n,
                               const int64_t *ids, int64_t id0, const osp__search_ctx *sc,
                               osp__hit *h, int *nh, int k);

/* The best variant for this CPU (same levels as the distance kernels). */
osp__select_fn osp__select_for(osp__simd_level level);

#endif
