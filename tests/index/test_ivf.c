/* IVF-Flat, IVF-PQ and LSH: recall floors on clustered data, exactness of
 * IVF-Flat when every list is probed, remove, filters, k-means. */
#include <criterion/criterion.h>

#include "index/kmeans.h"
#include "index_testutil.h"

#define N 5000
#define D 32
#define NQ 200
#define K 10

static float *base_x, *queries;
static int64_t gt[NQ * K];

static void setup(void) {
    base_x = tu_clustered(N, D, 50, 0.5f, 31);
    queries = tu_clustered(NQ, D, 50, 0.5f, 32);
    tu_brute(OSP_INDEX_METRIC_L2, base_x, NULL, N, queries, NQ, D, K, NULL, NULL, gt, NULL);
}

static void teardown(void) {
    osp_free(base_x);
    osp_free(queries);
}

TestSuite(ivf, .init = setup, .fini = teardown);

static double recall_at(osp_index *ix, int nprobe, const int64_t *truth, int threads) {
    int64_t ids[NQ * K];
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, K);
    sp.nprobe = nprobe;
    sp.threads = threads;
    cr_assert_eq(osp_index_search(ix, queries, NQ, &sp, ids, NULL), 0, "%s", osp_last_error());
    return tu_recall(ids, truth, NQ, K);
}

Test(ivf, kmeans_finds_separated_clusters) {
    /* 8 tight clusters far apart: k-means++ then Lloyd puts one centroid in each */
    int k = 8, n = 4000, d = 16;
    float *x = tu_clustered(n, d, k, 0.01f, 41);
    float c[8 * 16];
    cr_assert_eq(osp__kmeans_train(x, n, d, k, 10, 0, 5, 2, 0, c), 0);
    int32_t a[4000];
    float dist[4000];
    float cn[8];
    const osp__kernels *kern = osp__kernels_best();
    osp__norms(c, k, d, kern, cn);
    cr_assert_eq(osp__kmeans_nearest(x, n, d, c, cn, k, 1, 0, 2, kern, a, dist), 0);
    for (int i = 0; i < n; i++) cr_assert(dist[i] < 0.05f, "point %d is %g from its centroid", i, dist[i]);
    osp_free(x);
}

Test(ivf, flat_recall_and_exact_when_all_probed) {
    osp_index_params p;
    osp_index_params_init(&p, OSP_INDEX_IVF_FLAT, OSP_INDEX_METRIC_L2, D);
    p.nlist = 64;
    osp_index *ix;
    cr_assert_eq(osp_index_new(&p, &ix), 0);
    float q[D] = {0};
    cr_assert_eq(osp_index_add(ix, q, NULL, 1), OSP_ESTATE, "adding before training is refused");
    cr_assert_eq(osp_index_train(ix, base_x, N), 0, "%s", osp_last_error());
    cr_assert_eq(osp_index_add(ix, base_x, NULL, N), 0);
    double r8 = recall_at(ix, 8, gt, 1);
    cr_assert(r8 >= 0.85, "nprobe 8: %.3f", r8);
    cr_assert(recall_at(ix, 64, gt, 2) >= 0.999);
    osp_index_free(ix);
}

Test(ivf, pq_recall) {
    osp_index_params p;
    osp_index_params_init(&p, OSP_INDEX_IVF_PQ, OSP_INDEX_METRIC_L2, D);
    p.nlist = 32;
    p.pq_m = 8; /* 4 dims per byte: 8 bytes for 128 bytes of floats */
    osp_index *ix = tu_build(&p, base_x, N);
    cr_assert_not_null(ix, "%s", osp_last_error());
    double r = recall_at(ix, 16, gt, 2);
    cr_assert(r >= 0.5, "ivfpq m=8 recall %.3f", r);
    /* more bytes per vector, better recall */
    osp_index_params_init(&p, OSP_INDEX_IVF_PQ, OSP_INDEX_METRIC_L2, D);
    p.nlist = 32;
    p.pq_m = 16;
    osp_index *ix2 = tu_build(&p, base_x, N);
    double r2 = recall_at(ix2, 16, gt, 1);
    cr_assert(r2 >= 0.7 && r2 > r, "ivfpq m=16 recall %.3f (m=8 %.3f)", r2, r);
    /* inner product goes through its own tables */
    osp_index_params_init(&p, OSP_INDEX_IVF_PQ, OSP_INDEX_METRIC_IP, D);
    p.nlist = 32;
    p.pq_m = 16;
    osp_index *ix3 = tu_build(&p, base_x, N);
    int64_t truth[NQ * K];
    tu_brute(OSP_INDEX_METRIC_IP, base_x, NULL, N, queries, NQ, D, K, NULL, NULL, truth, NULL);
    double r3 = recall_at(ix3, 16, truth, 1);
    cr_assert(r3 >= 0.5, "ivfpq ip recall %.3f", r3);
    osp_index_free(ix);
    osp_index_free(ix2);
    osp_index_free(ix3);
}

Test(ivf, remove_and_filter_fallback) {
    for (int type = 0; type < 2; type++) {
        osp_index_params p;
        osp_index_params_init(&p, type ? OSP_INDEX_IVF_PQ : OSP_INDEX_IVF_FLAT, OSP_INDEX_METRIC_L2, D);
        p.nlist = 64;
        osp_index *ix = tu_build(&p, base_x, N);
        cr_assert_not_null(ix);
        int64_t rm[N / 2];
        for (int i = 0; i < N / 2; i++) rm[i] = 2 * i;
        int64_t removed;
        cr_assert_eq(osp_index_remove(ix, rm, N / 2, &removed), 0);
        cr_assert_eq(removed, N / 2);
        cr_assert_eq(osp_index_count(ix), N / 2);
        int64_t ids[NQ * K];
        osp_index_search_params sp;
        osp_index_search_params_init(&sp, K);
        sp.nprobe = 64;
        cr_assert_eq(osp_index_search(ix, queries, NQ, &sp, ids, NULL), 0);
        for (int i = 0; i < NQ * K; i++) cr_assert(ids[i] % 2 == 1);
        /* 5 allowed ids: the nprobe default would miss most, the fallback
         * scans every list */
        uint64_t bits[N / 64 + 1] = {0};
        int64_t allow[5] = {1, 999, 2001, 3333, 4999};
        for (int i = 0; i < 5; i++) bits[allow[i] / 64] |= 1ull << (allow[i] % 64);
        osp_index_filter f = {.bitmap = bits, .bitmap_bits = N};
        sp.nprobe = 1;
        sp.filter = &f;
        cr_assert_eq(osp_index_search(ix, queries, 3, &sp, ids, NULL), 0);
        for (int q = 0; q < 3; q++) {
            for (int i = 0; i < 5; i++) {
                int found = 0;
                for (int j = 0; j < 5; j++) found |= ids[q * K + j] == allow[i];
                cr_assert(found, "type %d query %d: allowed id %lld missing", type, q, (long long)allow[i]);
            }
            cr_assert_eq(ids[q * K + 5], -1);
        }
        osp_index_free(ix);
    }
}

Test(ivf, lsh_recall_remove_reuse) {
    osp_index_params p;
    osp_index_params_init(&p, OSP_INDEX_LSH, OSP_INDEX_METRIC_COSINE, D);
    p.lsh_nbits = 8;
    p.lsh_tables = 8;
    osp_index *ix = tu_build(&p, base_x, N);
    cr_assert_not_null(ix, "%s", osp_last_error());
    int64_t truth[NQ * K];
    tu_brute(OSP_INDEX_METRIC_COSINE, base_x, NULL, N, queries, NQ, D, K, NULL, NULL, truth, NULL);
    double r1 = recall_at(ix, 1, truth, 1);
    double r16 = recall_at(ix, 16, truth, 2);
    cr_assert(r16 >= 0.9 && r16 > r1, "lsh recall %.3f with 16 probes, %.3f with 1", r16, r1);
    /* key width from the data when not given */
    osp_index_params_init(&p, OSP_INDEX_LSH, OSP_INDEX_METRIC_COSINE, D);
    osp_index *auto_ix = tu_build(&p, base_x, N);
    osp_index_info info;
    osp_index_info_get(auto_ix, &info);
    cr_assert_eq(info.params.lsh_nbits, 8, "5000 vectors: 2^8 buckets of about 16");
    cr_assert(recall_at(auto_ix, 16, truth, 1) >= 0.9);
    osp_index_free(auto_ix);
    int64_t rm[100];
    for (int i = 0; i < 100; i++) rm[i] = i;
    int64_t removed;
    cr_assert_eq(osp_index_remove(ix, rm, 100, &removed), 0);
    cr_assert_eq(removed, 100);
    osp_index_info_get(ix, &info);
    cr_assert_eq(info.free_slots, 100);
    int64_t ids[K];
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, K);
    cr_assert_eq(osp_index_search(ix, base_x, 1, &sp, ids, NULL), 0);
    cr_assert_neq(ids[0], 0);
    cr_assert_eq(osp_index_add(ix, base_x, rm, 100), 0);
    osp_index_info_get(ix, &info);
    cr_assert_eq(info.free_slots, 0);
    cr_assert_eq(osp_index_search(ix, base_x, 1, &sp, ids, NULL), 0);
    cr_assert_eq(ids[0], 0, "vector 0 is back and is its own nearest");
    osp_index_free(ix);
}
