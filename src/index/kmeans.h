/* k-means for the IVF coarse quantizer and the PQ codebooks: k-means++
 * seeding, Lloyd iterations with GEMM-based assignment, multi-threaded. */
#ifndef OSPREY_INDEX_KMEANS_H
#define OSPREY_INDEX_KMEANS_H

#include <stdint.h>

#include "index/distance.h"

/* Trains k centroids (k x d) from x (n x d, n >= k). At most max_per_centroid
 * points per centroid are used (a seeded random sample beyond that);
 * spherical renormalises centroids after every update (for cosine). */
int osp__kmeans_train(const float *x, int64_t n, int d, int k, int iters, int max_per_centroid,
                      uint64_t seed, int threads, int spherical, float *centroids);

/* For n vectors the p nearest of k centroids, nearest first: lists (n x p)
 * and their distances (n x p, may be NULL). ip ranks by largest inner
 * product (distance = -dot), else by squared L2 (cnorms: k squared norms of
 * the centroids, required for L2). Large batches go through sgemm. */
int osp__kmeans_nearest(const float *x, int64_t n, int d, const float *c, const float *cnorms,
                        int k, int p, int ip, int threads, const osp__kernels *kern,
                        int32_t *lists, float *dist);

/* Squared norms of n vectors. */
void osp__norms(const float *x, int64_t n, int d, const osp__kernels *kern, float *out);

#endif
