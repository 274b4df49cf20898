/* Checks every index type shares: vectors and queries holding NaN or an
 * infinity are refused, naming the row, and nothing is added; the search
 * settings that osp_index_search_params_resolve reports are the ones a
 * search uses. */
#include <criterion/criterion.h>

#include "index_testutil.h"

#define N 300
#define D 8

static const osp_index_type FLOAT_TYPES[] = {OSP_INDEX_FLAT, OSP_INDEX_IVF_FLAT, OSP_INDEX_IVF_PQ,
                                             OSP_INDEX_LSH, OSP_INDEX_HNSW};

static osp_index *make(osp_index_type type, const float *x) {
    osp_index_params p;
    osp_index_params_init(&p, type, type == OSP_INDEX_LSH ? OSP_INDEX_METRIC_COSINE : OSP_INDEX_METRIC_L2, D);
    p.nlist = 4;
    p.pq_m = 2;
    p.pq_nbits = 4;
    p.threads = 1;
    osp_index *ix = tu_build(&p, x, N);
    cr_assert_not_null(ix, "%s: %s", osp_index_type_name(type), osp_last_error());
    return ix;
}

static void expect_refused(int rc, const char *type, const char *words) {
    cr_assert_eq(rc, OSP_EINVAL, "%s: %s", type, osp_last_error());
    cr_assert(strstr(osp_last_error(), words), "%s: '%s' lacks '%s'", type, osp_last_error(), words);
}

Test(input, non_finite_vectors_and_queries_refused) {
    float *x = tu_clustered(N, D, 4, 0.3f, 7);
    float bad[3 * D];
    memcpy(bad, x, sizeof bad);
    for (size_t t = 0; t < sizeof FLOAT_TYPES / sizeof FLOAT_TYPES[0]; t++) {
        const char *name = osp_index_type_name(FLOAT_TYPES[t]);
        osp_index *ix = make(FLOAT_TYPES[t], x);
        const int64_t count = osp_index_count(ix);
        const float poison[3] = {NAN, INFINITY, -INFINITY};
        const char *said[3] = {"holds NaN at dimension 5", "holds +infinity at dimension 5",
                               "holds -infinity at dimension 5"};
        for (int k = 0; k < 3; k++) {
            memcpy(bad, x, sizeof bad);
            bad[2 * D + 5] = poison[k];
            /* add: row 2 named, nothing added (not even rows 0 and 1) */
            expect_refused(osp_index_add(ix, bad, NULL, 3), name, "row 2 of the vectors");
            cr_assert(strstr(osp_last_error(), said[k]), "%s", osp_last_error());
            cr_assert_eq(osp_index_count(ix), count, "%s", name);
            /* search: no ids with nan distances, an error naming the query */
            int64_t ids[3 * 5];
            float dist[3 * 5];
            osp_index_search_params sp;
            osp_index_search_params_init(&sp, 5);
            expect_refused(osp_index_search(ix, bad, 3, &sp, ids, dist), name, "row 2 of the queries");
            cr_assert_eq(osp_index_search(ix, bad, 2, &sp, ids, dist), OSP_OK, "%s", osp_last_error());
        }
        osp_index_free(ix);
    }
    /* training (IVF) refuses them too */
    osp_index_params p;
    osp_index_params_init(&p, OSP_INDEX_IVF_FLAT, OSP_INDEX_METRIC_L2, D);
    p.nlist = 4;
    osp_index *ix;
    cr_assert_eq(osp_index_new(&p, &ix), OSP_OK);
    x[(N - 1) * D] = NAN;
    expect_refused(osp_index_train(ix, x, N), "ivf", "row 299 of the vectors holds NaN at dimension 0");
    cr_assert_eq(osp_index_is_trained(ix), 0);
    osp_index_free(ix);
    osp_free(x);
}

Test(input, resolved_search_settings) {
    float *x = tu_clustered(N, D, 4, 0.3f, 8);
    for (size_t t = 0; t < sizeof FLOAT_TYPES / sizeof FLOAT_TYPES[0]; t++) {
        osp_index *ix = make(FLOAT_TYPES[t], x);
        osp_index_search_params sp;
        osp_index_search_params_init(&sp, 10);
        osp_index_search_params_resolve(ix, &sp);
        switch (FLOAT_TYPES[t]) {
        case OSP_INDEX_HNSW:
            cr_assert_eq(sp.ef_search, 64);
            cr_assert_eq(sp.nprobe, 0);
            osp_index_search_params_init(&sp, 100);
            osp_index_search_params_resolve(ix, &sp);
            cr_assert_eq(sp.ef_search, 100); /* raised to k */
            break;
        case OSP_INDEX_IVF_FLAT:
        case OSP_INDEX_IVF_PQ:
            cr_assert_eq(sp.nprobe, 4); /* the default 8, but only 4 lists */
            cr_assert_eq(sp.ef_search, 0);
            break;
        case OSP_INDEX_LSH:
            cr_assert_eq(sp.nprobe, 16);
            cr_assert_eq(sp.ef_search, 0);
            break;
        default:
            cr_assert_eq(sp.nprobe, 0);
            cr_assert_eq(sp.ef_search, 0);
        }
        cr_assert_eq(sp.threads, 1);
        /* given settings stay; ones the type does not use become 0 */
        osp_index_search_params_init(&sp, 10);
        sp.ef_search = 32;
        sp.nprobe = 2;
        sp.threads = 3;
        osp_index_search_params_resolve(ix, &sp);
        cr_assert_eq(sp.ef_search, FLOAT_TYPES[t] == OSP_INDEX_HNSW ? 32 : 0);
        cr_assert_eq(sp.nprobe, FLOAT_TYPES[t] == OSP_INDEX_HNSW || FLOAT_TYPES[t] == OSP_INDEX_FLAT ? 0 : 2);
        cr_assert_eq(sp.threads, 3);
        osp_index_free(ix);
    }
    osp_free(x);
}
