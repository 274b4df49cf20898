/* HNSW: recall on clustered data, multi-threaded build, remove with relinking
 * and slot reuse, filtered search and its exact fallback. */
#include <criterion/criterion.h>

#include "index_testutil.h"

#define N 5000
#define D 32
#define NQ 200
#define K 10

static float *base_x, *queries;
static int64_t gt[NQ * K];

static void setup(void) {
    base_x = tu_clustered(N, D, 50, 0.5f, 21);
    queries = tu_clustered(NQ, D, 50, 0.5f, 22);
    tu_brute(OSP_INDEX_METRIC_L2, base_x, NULL, N, queries, NQ, D, K, NULL, NULL, gt, NULL);
}

static void teardown(void) {
    osp_free(base_x);
    osp_free(queries);
}

static double recall_of(osp_index *ix, int ef, int threads, const int64_t *truth) {
    int64_t ids[NQ * K];
    float dist[NQ * K];
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, K);
    sp.ef_search = ef;
    sp.threads = threads;
    cr_assert_eq(osp_index_search(ix, queries, NQ, &sp, ids, dist), 0, "%s", osp_last_error());
    for (int i = 0; i < NQ; i++)
        for (int j = 1; j < K; j++)
            if (ids[i * K + j] >= 0) cr_assert(dist[i * K + j] >= dist[i * K + j - 1]);
    return tu_recall(ids, truth, NQ, K);
}

static osp_index *build(int threads, int m) {
    osp_index_params p;
    osp_index_params_init(&p, OSP_INDEX_HNSW, OSP_INDEX_METRIC_L2, D);
    p.hnsw_m = m;
    p.hnsw_ef_construction = 100;
    p.threads = threads;
    osp_index *ix = tu_build(&p, base_x, N);
    cr_assert_not_null(ix, "%s", osp_last_error());
    return ix;
}

TestSuite(hnsw, .init = setup, .fini = teardown);

Test(hnsw, recall_single_thread_build) {
    osp_index *ix = build(1, 16);
    double r = recall_of(ix, 64, 1, gt);
    cr_assert(r >= 0.95, "recall@10 %.3f at ef 64", r);
    cr_assert(recall_of(ix, 200, 2, gt) >= 0.99);
    osp_index_info info;
    osp_index_info_get(ix, &info);
    cr_assert_eq(info.count, N);
    cr_assert(info.max_level >= 1);
    osp_index_free(ix);
}

Test(hnsw, recall_parallel_build) {
    osp_index *ix = build(2, 12);
    double r = recall_of(ix, 64, 2, gt);
    /* the parallel build's graph depends on thread timing: about 0.95,
     * with a margin below */
    cr_assert(r >= 0.92, "recall@10 %.3f at ef 64", r);
    osp_index_free(ix);
}

Test(hnsw, metrics_ip_and_cosine) {
    for (int mi = 0; mi < 2; mi++) {
        osp_index_metric m = mi ? OSP_INDEX_METRIC_COSINE : OSP_INDEX_METRIC_IP;
        osp_index_params p;
        osp_index_params_init(&p, OSP_INDEX_HNSW, m, D);
        p.hnsw_ef_construction = 100;
        osp_index *ix = tu_build(&p, base_x, N);
        cr_assert_not_null(ix);
        int64_t truth[NQ * K];
        tu_brute(m, base_x, NULL, N, queries, NQ, D, K, NULL, NULL, truth, NULL);
        double r = recall_of(ix, 128, 1, truth);
        cr_assert(r >= 0.9, "%s recall %.3f", osp_index_metric_name(m), r);
        osp_index_free(ix);
    }
}

Test(hnsw, remove_relinks_and_reuses_slots) {
    /* One thread: a threaded build's graph depends on the scheduling, and
     * this test is about removal, so it should see the same graph every run. */
    osp_index *ix = build(1, 16);
    /* remove every third vector, in two batches */
    int64_t rm[N / 3 + 1];
    int nrm = 0;
    for (int i = 0; i < N; i += 3) rm[nrm++] = i;
    int64_t removed = 0, r2 = 0;
    cr_assert_eq(osp_index_remove(ix, rm, nrm / 2, &removed), 0);
    cr_assert_eq(osp_index_remove(ix, rm + nrm / 2, nrm - nrm / 2, &r2), 0);
    cr_assert_eq(removed + r2, nrm);
    osp_index_info info;
    osp_index_info_get(ix, &info);
    cr_assert_eq(info.count, N - nrm);
    cr_assert_eq(info.removed, nrm);
    cr_assert_eq(info.free_slots, nrm);
    /* recall against the survivors stays up: the graph was relinked */
    int64_t live_ids[N];
    float *live = osp_alloc((size_t)N * D * sizeof *live);
    int nl = 0;
    for (int i = 0; i < N; i++)
        if (i % 3) {
            memcpy(live + (size_t)nl * D, base_x + (size_t)i * D, D * sizeof(float));
            live_ids[nl++] = i;
        }
    int64_t truth[NQ * K];
    tu_brute(OSP_INDEX_METRIC_L2, live, live_ids, nl, queries, NQ, D, K, NULL, NULL, truth, NULL);
    double r = recall_of(ix, 64, 1, truth);
    cr_assert(r >= 0.95, "recall after removing a third: %.3f", r);
    /* adding them back takes the freed slots */
    cr_assert_eq(osp_index_add(ix, base_x, rm, 1), 0);
    osp_index_info_get(ix, &info);
    cr_assert_eq(info.free_slots, nrm - 1);
    float *back = osp_alloc((size_t)nrm * D * sizeof *back);
    for (int i = 1; i < nrm; i++) memcpy(back + (size_t)i * D, base_x + (size_t)rm[i] * D, D * sizeof(float));
    cr_assert_eq(osp_index_add(ix, back + D, rm + 1, nrm - 1), 0);
    osp_index_info_get(ix, &info);
    cr_assert_eq(info.free_slots, 0);
    cr_assert_eq(info.count, N);
    r = recall_of(ix, 64, 1, gt);
    cr_assert(r >= 0.95, "recall after re-adding: %.3f", r);
    /* remove everything, then the index is empty and usable again */
    int64_t all[N];
    for (int i = 0; i < N; i++) all[i] = i;
    cr_assert_eq(osp_index_remove(ix, all, N, &removed), 0);
    cr_assert_eq(removed, N);
    int64_t ids[K];
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, K);
    cr_assert_eq(osp_index_search(ix, queries, 1, &sp, ids, NULL), 0);
    cr_assert_eq(ids[0], -1);
    cr_assert_eq(osp_index_add(ix, base_x, NULL, 100), 0);
    cr_assert_eq(osp_index_search(ix, base_x, 1, &sp, ids, NULL), 0);
    cr_assert(ids[0] >= N);
    osp_index_free(ix);
    osp_free(live);
    osp_free(back);
}

static int mod_filter(int64_t id, void *ctx) { return id % *(int *)ctx == 0; }

Test(hnsw, filtered_search_keeps_recall) {
    osp_index *ix = build(1, 16); /* one thread: the same graph every run */
    /* a mild filter (1 in 2) goes through the graph, a selective one (1 in
     * 100, 50 ids) falls back to an exact scan of the allowed ids */
    int mods[2] = {2, 100};
    for (int t = 0; t < 2; t++) {
        int64_t truth[NQ * K], ids[NQ * K];
        tu_brute(OSP_INDEX_METRIC_L2, base_x, NULL, N, queries, NQ, D, K, mod_filter, &mods[t], truth, NULL);
        osp_index_filter f = {.allow = mod_filter, .ctx = &mods[t]};
        osp_index_search_params sp;
        osp_index_search_params_init(&sp, K);
        sp.ef_search = 64;
        sp.filter = &f;
        cr_assert_eq(osp_index_search(ix, queries, NQ, &sp, ids, NULL), 0);
        for (int i = 0; i < NQ * K; i++) cr_assert(ids[i] < 0 || ids[i] % mods[t] == 0);
        double r = tu_recall(ids, truth, NQ, K);
        cr_assert(r >= (t ? 0.999 : 0.95), "filter 1/%d: recall %.3f", mods[t], r);
    }
    osp_index_free(ix);
}
