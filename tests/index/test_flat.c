/* Flat and binary indexes: exact search equals a brute-force reference. */
#include <criterion/criterion.h>

#include "index_testutil.h"

#define N 3000
#define D 32
#define NQ 50
#define K 10

/* The returned neighbours are the true ones: every returned distance matches
 * the reference at its rank (ties may swap ids, distances cannot differ). */
static void check_exact(osp_index_metric m, const float *x, const int64_t *xids, int64_t n,
                        const float *q, int64_t nq, const int64_t *ids, const float *dist, int k) {
    int64_t *gt = malloc((size_t)nq * k * sizeof *gt);
    double *gd = malloc((size_t)nq * k * sizeof *gd);
    tu_brute(m, x, xids, n, q, nq, D, k, NULL, NULL, gt, gd);
    for (int64_t i = 0; i < nq * k; i++) {
        double tol = 1e-3 * (fabs(gd[i]) + 1.0);
        cr_assert(fabs(dist[i] - gd[i]) <= tol, "rank %lld: %g vs %g", (long long)i, dist[i], gd[i]);
        cr_assert(ids[i] >= 0);
        /* the id's own distance equals the reported one */
        int64_t slot = -1;
        for (int64_t j = 0; j < n; j++)
            if ((xids ? xids[j] : j) == ids[i]) slot = j;
        cr_assert(slot >= 0);
        double own = tu_dist(m, q + (size_t)(i / k) * D, x + (size_t)slot * D, D);
        cr_assert(fabs(own - dist[i]) <= tol);
    }
    cr_assert(tu_recall(ids, gt, nq, k) > 0.99);
    free(gt);
    free(gd);
}

static void run_metric(osp_index_metric m) {
    float *x = tu_clustered(N, D, 20, 0.3f, 1);
    float *q = tu_clustered(NQ, D, 20, 0.3f, 2);
    osp_index_params p;
    osp_index_params_init(&p, OSP_INDEX_FLAT, m, D);
    osp_index *ix = tu_build(&p, x, N);
    cr_assert_not_null(ix, "%s", osp_last_error());
    int64_t ids[NQ * K];
    float dist[NQ * K];
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, K);
    /* one query at a time (kernel path) and the whole batch (sgemm path) */
    for (int i = 0; i < NQ; i++)
        cr_assert_eq(osp_index_search(ix, q + i * D, 1, &sp, ids + i * K, dist + i * K), 0);
    check_exact(m, x, NULL, N, q, NQ, ids, dist, K);
    sp.threads = 2;
    cr_assert_eq(osp_index_search(ix, q, NQ, &sp, ids, dist), 0, "%s", osp_last_error());
    check_exact(m, x, NULL, N, q, NQ, ids, dist, K);
    osp_index_free(ix);
    osp_free(x);
    osp_free(q);
}

Test(flat, exact_l2) { run_metric(OSP_INDEX_METRIC_L2); }
Test(flat, exact_ip) { run_metric(OSP_INDEX_METRIC_IP); }
Test(flat, exact_cosine) { run_metric(OSP_INDEX_METRIC_COSINE); }

Test(flat, ids_remove_and_padding) {
    float *x = tu_clustered(100, D, 5, 0.3f, 3);
    int64_t xids[100];
    for (int i = 0; i < 100; i++) xids[i] = 1000 + 7 * i;
    osp_index_params p;
    osp_index_params_init(&p, OSP_INDEX_FLAT, OSP_INDEX_METRIC_L2, D);
    osp_index *ix;
    cr_assert_eq(osp_index_new(&p, &ix), 0);
    cr_assert_eq(osp_index_add(ix, x, xids, 100), 0);
    /* duplicates and negative ids are refused, and nothing is added */
    cr_assert_eq(osp_index_add(ix, x, xids, 1), OSP_EINVAL);
    int64_t dup[2] = {5, 5}, neg[1] = {-3};
    cr_assert_eq(osp_index_add(ix, x, dup, 2), OSP_EINVAL);
    cr_assert_eq(osp_index_add(ix, x, neg, 1), OSP_EINVAL);
    cr_assert_eq(osp_index_count(ix), 100);
    /* remove half (and an absent id) */
    int64_t rm[51];
    for (int i = 0; i < 50; i++) rm[i] = xids[2 * i];
    rm[50] = 42;
    int64_t removed;
    cr_assert_eq(osp_index_remove(ix, rm, 51, &removed), 0);
    cr_assert_eq(removed, 50);
    cr_assert_eq(osp_index_count(ix), 50);
    cr_assert(!osp_index_contains(ix, xids[0]));
    cr_assert(osp_index_contains(ix, xids[1]));
    /* k larger than what is left: -1 and INFINITY past the end */
    int64_t ids[60];
    float dist[60];
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, 60);
    cr_assert_eq(osp_index_search(ix, x, 1, &sp, ids, dist), 0);
    for (int i = 0; i < 50; i++) {
        cr_assert(ids[i] >= 1000 && (ids[i] - 1000) % 14 == 7, "only odd ones remain: %lld", (long long)ids[i]);
        if (i) cr_assert(dist[i] >= dist[i - 1]);
    }
    for (int i = 50; i < 60; i++) {
        cr_assert_eq(ids[i], OSP_INDEX_NO_ID);
        cr_assert(isinf(dist[i]));
    }
    /* ids continue after the largest when none are given */
    cr_assert_eq(osp_index_add(ix, x, NULL, 2), 0);
    cr_assert(osp_index_contains(ix, 1000 + 7 * 99 + 1));
    osp_index_info info;
    cr_assert_eq(osp_index_info_get(ix, &info), 0);
    cr_assert_eq(info.count, 52);
    cr_assert_eq(info.removed, 50);
    osp_index_free(ix);
    osp_free(x);
}

static int odd_only(int64_t id, void *ctx) {
    (void)ctx;
    return id % 2 == 1;
}

Test(flat, filters) {
    float *x = tu_clustered(N, D, 20, 0.3f, 4);
    float *q = tu_clustered(NQ, D, 20, 0.3f, 5);
    osp_index_params p;
    osp_index_params_init(&p, OSP_INDEX_FLAT, OSP_INDEX_METRIC_L2, D);
    osp_index *ix = tu_build(&p, x, N);
    int64_t ids[NQ * K], gt[NQ * K];
    float dist[NQ * K];
    osp_index_filter f = {0};
    f.allow = odd_only;
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, K);
    sp.filter = &f;
    cr_assert_eq(osp_index_search(ix, q, NQ, &sp, ids, dist), 0);
    tu_brute(OSP_INDEX_METRIC_L2, x, NULL, N, q, NQ, D, K, odd_only, NULL, gt, NULL);
    for (int i = 0; i < NQ * K; i++) cr_assert(ids[i] % 2 == 1);
    cr_assert(tu_recall(ids, gt, NQ, K) > 0.99);
    /* a bitmap allowing three ids */
    uint64_t bits[N / 64 + 1] = {0};
    int64_t allowed[3] = {17, 1234, 2999};
    for (int i = 0; i < 3; i++) bits[allowed[i] / 64] |= 1ull << (allowed[i] % 64);
    f.allow = NULL;
    f.bitmap = bits;
    f.bitmap_bits = N;
    cr_assert_eq(osp_index_search(ix, q, 1, &sp, ids, dist), 0);
    for (int i = 0; i < 3; i++) cr_assert(ids[i] == 17 || ids[i] == 1234 || ids[i] == 2999);
    for (int i = 3; i < K; i++) cr_assert_eq(ids[i], -1);
    osp_index_free(ix);
    osp_free(x);
    osp_free(q);
}

Test(binary, exact_hamming) {
    enum { NB = 2000, BITS = 256, BYTES = BITS / 8 };
    osp_rng r;
    osp_rng_seed(&r, 11);
    uint8_t *codes = malloc(NB * BYTES), q[5 * BYTES];
    for (int i = 0; i < NB * BYTES; i++) codes[i] = (uint8_t)osp_rng_u64(&r);
    for (int i = 0; i < 5 * BYTES; i++) q[i] = codes[(10 * BYTES) + i] ^ (i % 7 == 0); /* near 10..14 */
    osp_index_params p;
    osp_index_params_init(&p, OSP_INDEX_BINARY, OSP_INDEX_METRIC_HAMMING, BITS);
    osp_index *ix;
    cr_assert_eq(osp_index_new(&p, &ix), 0);
    cr_assert_eq(osp_index_add_codes(ix, codes, NULL, NB), 0, "%s", osp_last_error());
    cr_assert_eq(osp_index_add(ix, (const float *)codes, NULL, 1), OSP_ENOTSUP);
    int64_t ids[5 * K];
    float dist[5 * K];
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, K);
    sp.threads = 2;
    cr_assert_eq(osp_index_search_codes(ix, q, 5, &sp, ids, dist), 0);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(ids[i * K], 10 + i);
        /* every distance equals a brute-force popcount, and they ascend */
        for (int j = 0; j < K; j++) {
            int ref = 0;
            for (int b = 0; b < BYTES; b++)
                ref += __builtin_popcount(q[i * BYTES + b] ^ codes[ids[i * K + j] * BYTES + b]);
            cr_assert_eq((int)dist[i * K + j], ref);
            if (j) cr_assert(dist[i * K + j] >= dist[i * K + j - 1]);
        }
        /* nothing outside the results is closer than the last one */
        for (int c = 0; c < NB; c++) {
            int ref = 0;
            for (int b = 0; b < BYTES; b++) ref += __builtin_popcount(q[i * BYTES + b] ^ codes[c * BYTES + b]);
            cr_assert(ref >= (int)dist[i * K + K - 1] || ref <= (int)dist[i * K + K - 1]);
            if (ref < (int)dist[i * K + K - 1]) {
                int found = 0;
                for (int j = 0; j < K; j++) found |= ids[i * K + j] == c;
                cr_assert(found, "code %d at %d missing", c, ref);
            }
        }
    }
    int64_t rm = 10, removed;
    cr_assert_eq(osp_index_remove(ix, &rm, 1, &removed), 0);
    cr_assert_eq(osp_index_search_codes(ix, q, 1, &sp, ids, dist), 0);
    cr_assert_neq(ids[0], 10);
    osp_index_free(ix);
    free(codes);
}

Test(flat, bad_arguments) {
    osp_index_params p;
    osp_index *ix = NULL;
    osp_index_params_init(&p, OSP_INDEX_FLAT, OSP_INDEX_METRIC_HAMMING, 8);
    cr_assert_eq(osp_index_new(&p, &ix), OSP_EINVAL);
    osp_index_params_init(&p, OSP_INDEX_LSH, OSP_INDEX_METRIC_L2, 8);
    cr_assert_eq(osp_index_new(&p, &ix), OSP_EINVAL);
    osp_index_params_init(&p, OSP_INDEX_FLAT, OSP_INDEX_METRIC_L2, 0);
    cr_assert_eq(osp_index_new(&p, &ix), OSP_EINVAL);
    osp_index_params_init(&p, OSP_INDEX_FLAT, OSP_INDEX_METRIC_L2, 4);
    cr_assert_eq(osp_index_new(&p, &ix), 0);
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, 0);
    float q[4] = {0};
    int64_t ids[1];
    cr_assert_eq(osp_index_search(ix, q, 1, &sp, ids, NULL), OSP_EINVAL);
    sp.k = 1;
    /* an empty index answers with no results */
    cr_assert_eq(osp_index_search(ix, q, 1, &sp, ids, NULL), 0);
    cr_assert_eq(ids[0], -1);
    osp_index_free(ix);
    osp_index_type t;
    osp_index_metric m;
    cr_assert_eq(osp_index_type_parse("hnsw", &t), 0);
    cr_assert_eq(t, OSP_INDEX_HNSW);
    cr_assert_eq(osp_index_type_parse("nope", &t), OSP_EINVAL);
    cr_assert_eq(osp_index_metric_parse("cos", &m), 0);
    cr_assert_eq(m, OSP_INDEX_METRIC_COSINE);
}
