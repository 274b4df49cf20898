/* Shared by the index tests: seeded clustered data, a brute-force reference
 * in double precision, and recall. Header-only (static) so that each test
 * program stays one file plus this. */
#ifndef OSPREY_TESTS_INDEX_TESTUTIL_H
#define OSPREY_TESTS_INDEX_TESTUTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/core.h"
#include "osprey/index.h"

#define TU_FN static __attribute__((unused))

/* n x d vectors from a mixture of `clusters` Gaussians (centres N(0, 1),
 * spread sigma): the shape of real embeddings, where graph and list indexes
 * behave as they do in practice. Caller frees with osp_free. */
TU_FN float *tu_clustered(int64_t n, int d, int clusters, float sigma, uint64_t seed) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    float *centres = malloc((size_t)clusters * d * sizeof *centres);
    for (int64_t i = 0; i < (int64_t)clusters * d; i++) centres[i] = osp_rng_normal(&r);
    float *x = osp_alloc((size_t)n * d * sizeof *x);
    for (int64_t i = 0; i < n; i++) {
        int c = (int)osp_rng_below(&r, (uint64_t)clusters);
        for (int j = 0; j < d; j++)
            x[(size_t)i * d + j] = centres[(size_t)c * d + j] + sigma * osp_rng_normal(&r);
    }
    free(centres);
    return x;
}

/* Distance as the index reports it, in double precision. */
TU_FN double tu_dist(osp_index_metric m, const float *a, const float *b, int d) {
    double s = 0, na = 0, nb = 0;
    for (int j = 0; j < d; j++) {
        if (m == OSP_INDEX_METRIC_L2) {
            double t = (double)a[j] - b[j];
            s += t * t;
        } else {
            s += (double)a[j] * b[j];
            na += (double)a[j] * a[j];
            nb += (double)b[j] * b[j];
        }
    }
    if (m == OSP_INDEX_METRIC_L2) return s;
    if (m == OSP_INDEX_METRIC_IP) return -s;
    double den = sqrt(na) * sqrt(nb);
    return den > 0 ? 1.0 - s / den : 1.0;
}

typedef struct tu_pair {
    double d;
    int64_t id;
} tu_pair;

TU_FN int tu_cmp_pair(const void *a, const void *b) {
    const tu_pair *x = a, *y = b;
    if (x->d != y->d) return x->d < y->d ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Exact k-NN of each query among x (ids[i] or i), in double precision:
 * gt_ids / gt_d are nq x k. allowed (may be NULL) filters by id. */
TU_FN void tu_brute(osp_index_metric m, const float *x, const int64_t *ids, int64_t n,
                     const float *q, int64_t nq, int d, int k, int (*allowed)(int64_t, void *),
                     void *ctx, int64_t *gt_ids, double *gt_d) {
    tu_pair *p = malloc((size_t)n * sizeof *p);
    for (int64_t i = 0; i < nq; i++) {
        int64_t c = 0;
        for (int64_t j = 0; j < n; j++) {
            int64_t id = ids ? ids[j] : j;
            if (allowed && !allowed(id, ctx)) continue;
            p[c].d = tu_dist(m, q + (size_t)i * d, x + (size_t)j * d, d);
            p[c].id = id;
            c++;
        }
        qsort(p, (size_t)c, sizeof *p, tu_cmp_pair);
        for (int j = 0; j < k; j++) {
            gt_ids[i * k + j] = j < c ? p[j].id : -1;
            if (gt_d) gt_d[i * k + j] = j < c ? p[j].d : INFINITY;
        }
    }
    free(p);
}

/* Share of the true k nearest found among the k returned. */
TU_FN double tu_recall(const int64_t *got, const int64_t *gt, int64_t nq, int k) {
    int64_t hit = 0, total = 0;
    for (int64_t i = 0; i < nq; i++)
        for (int j = 0; j < k; j++) {
            if (gt[i * k + j] < 0) continue;
            total++;
            for (int l = 0; l < k; l++)
                if (got[i * k + l] == gt[i * k + j]) {
                    hit++;
                    break;
                }
        }
    return total ? (double)hit / (double)total : 1.0;
}

/* A temporary file path under /tmp, unique per process and call. */
TU_FN void tu_tmpname(char *buf, size_t len, const char *tag) {
    static int counter;
    snprintf(buf, len, "/tmp/osprey-test-%s-%d-%d.idx", tag, (int)getpid(), counter++);
}

/* Reads a whole file (malloc); NULL on failure. */
TU_FN unsigned char *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* An index of the type over x with ids 0..n-1 (trained on x if needed). */
TU_FN osp_index *tu_build(osp_index_params *p, const float *x, int64_t n) {
    osp_index *ix = NULL;
    if (osp_index_new(p, &ix)) return NULL;
    if (osp_index_train(ix, x, n) || osp_index_add(ix, x, NULL, n)) {
        osp_index_free(ix);
        return NULL;
    }
    return ix;
}

#endif
