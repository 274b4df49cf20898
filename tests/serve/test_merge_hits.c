/* The router's merge of shard answers (src/serve/router_merge.c), its
 * checks of a worker's answer, its worker addresses and its catalogue
 * root check. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/router.h"
#include "serve/router_page.h"

/* {"results": [{"hits": [...]}]} of one query from (id, score) pairs. */
static cJSON *answer1(int n, const int64_t *ids, const double *scores) {
    cJSON *a = cJSON_CreateObject();
    cJSON *results = cJSON_AddArrayToObject(a, "results");
    cJSON *r = cJSON_CreateObject();
    cJSON_AddItemToArray(results, r);
    cJSON *hits = cJSON_AddArrayToObject(r, "hits");
    for (int i = 0; i < n; i++) {
        cJSON *h = cJSON_CreateObject();
        char id[32], path[64];
        snprintf(id, sizeof id, "%" PRId64, ids[i]);
        snprintf(path, sizeof path, "/photos/%" PRId64 ".jpg", ids[i]);
        cJSON_AddStringToObject(h, "id", id);
        cJSON_AddStringToObject(h, "path", path);
        cJSON_AddNumberToObject(h, "score", scores[i]);
        cJSON_AddItemToArray(hits, h);
    }
    return a;
}

static const cJSON *hits_of(const cJSON *merged, int q) {
    return cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(merged, "results"), q), "hits");
}

Test(merge, top_k_over_shards_by_score_then_id) {
    const int64_t ia[] = {10, 4, 7}, ib[] = {9, 3, 12};
    const double sa[] = {0.9, 0.5, 0.5}, sb[] = {0.95, 0.5, 0.1};
    cJSON *a = answer1(3, ia, sa), *b = answer1(3, ib, sb);
    cr_assert_eq(osp__rt_check_search_answer(a, 1), 0);
    cr_assert_eq(osp__rt_check_search_answer(b, 1), 0);
    const cJSON *answers[] = {a, b};
    const int k[] = {5};
    cJSON *m = osp__rt_merge_search(answers, 2, k, 1);
    cr_assert_not_null(m);
    const cJSON *hits = hits_of(m, 0);
    cr_assert_eq(cJSON_GetArraySize(hits), 5);
    /* 0.95 (9), 0.9 (10), then the three 0.5 by id: 3, 4, 7 */
    const char *want[] = {"9", "10", "3", "4", "7"};
    for (int i = 0; i < 5; i++) {
        const cJSON *h = cJSON_GetArrayItem(hits, i);
        cr_assert_str_eq(cJSON_GetObjectItem(h, "id")->valuestring, want[i], "hit %d", i);
        cr_assert_not_null(cJSON_GetObjectItem(h, "path")); /* the worker's fields go along */
    }
    cJSON_Delete(m);
    /* k larger than all the hits: all of them; a missing shard: left out */
    const int k2[] = {100};
    const cJSON *one[] = {a, NULL};
    m = osp__rt_merge_search(one, 2, k2, 1);
    cr_assert_eq(cJSON_GetArraySize(hits_of(m, 0)), 3);
    cJSON_Delete(m);
    cJSON_Delete(a);
    cJSON_Delete(b);
}

/* Shards made as osprey tag --shard i/N makes them (id % N), each giving
 * its own top k: the merge equals the top k of one index over them all,
 * ties included. */
Test(merge, equals_one_index) {
    srand(7);
    enum { N = 400, Q = 5, K = 17 };
    int64_t ids[N];
    double scores[Q][N];
    for (int i = 0; i < N; i++) ids[i] = ((int64_t)rand() << 31 | rand()) & INT64_MAX;
    for (int q = 0; q < Q; q++)
        for (int i = 0; i < N; i++) scores[q][i] = (rand() % 50) / 50.0; /* many ties */
    for (int shards = 1; shards <= 4; shards++) {
        cJSON *answers[4];
        for (int s = 0; s < shards; s++) {
            answers[s] = cJSON_CreateObject();
            cJSON *results = cJSON_AddArrayToObject(answers[s], "results");
            for (int q = 0; q < Q; q++) {
                /* the shard's top K by brute force */
                int idx[N], n = 0;
                for (int i = 0; i < N; i++)
                    if (ids[i] % shards == s) idx[n++] = i;
                for (int a = 0; a < n; a++)
                    for (int b = a + 1; b < n; b++) {
                        const int x = idx[a], y = idx[b];
                        if (scores[q][y] > scores[q][x] || (scores[q][y] == scores[q][x] && ids[y] < ids[x])) {
                            idx[a] = y;
                            idx[b] = x;
                        }
                    }
                cJSON *r = cJSON_CreateObject(), *hits = cJSON_AddArrayToObject(r, "hits");
                cJSON_AddItemToArray(results, r);
                for (int i = 0; i < n && i < K; i++) {
                    cJSON *h = cJSON_CreateObject();
                    char id[32];
                    snprintf(id, sizeof id, "%" PRId64, ids[idx[i]]);
                    cJSON_AddStringToObject(h, "id", id);
                    cJSON_AddNumberToObject(h, "score", scores[q][idx[i]]);
                    cJSON_AddItemToArray(hits, h);
                }
            }
            cr_assert_eq(osp__rt_check_search_answer(answers[s], Q), 0, "%s", osp_last_error());
        }
        int k[Q];
        for (int q = 0; q < Q; q++) k[q] = K;
        cJSON *m = osp__rt_merge_search((const cJSON *const *)answers, shards, k, Q);
        cr_assert_not_null(m);
        for (int q = 0; q < Q; q++) {
            int idx[N];
            for (int i = 0; i < N; i++) idx[i] = i;
            for (int a = 0; a < N; a++)
                for (int b = a + 1; b < N; b++) {
                    const int x = idx[a], y = idx[b];
                    if (scores[q][y] > scores[q][x] || (scores[q][y] == scores[q][x] && ids[y] < ids[x])) {
                        idx[a] = y;
                        idx[b] = x;
                    }
                }
            const cJSON *hits = hits_of(m, q);
            cr_assert_eq(cJSON_GetArraySize(hits), K);
            for (int i = 0; i < K; i++) {
                const cJSON *h = cJSON_GetArrayItem(hits, i);
                cr_assert_eq(osp__rt_hit_id(h), ids[idx[i]], "%d shards, query %d, hit %d", shards,
                             q, i);
                cr_assert_eq(cJSON_GetObjectItem(h, "score")->valuedouble, scores[q][idx[i]]);
            }
        }
        cJSON_Delete(m);
        for (int s = 0; s < shards; s++) cJSON_Delete(answers[s]);
    }
}

Test(merge, malformed_answers_are_refused) {
    const char *bad[] = {
        "{}",
        "{\"results\": {}}",
        "{\"results\": []}",                                       /* 0 results for 1 query */
        "{\"results\": [{}]}",                                     /* no hits */
        "{\"results\": [{\"hits\": [{\"id\": 5, \"score\": 1}]}]}", /* id not a string */
        "{\"results\": [{\"hits\": [{\"id\": \"-5\", \"score\": 1}]}]}",
        "{\"results\": [{\"hits\": [{\"id\": \"12a\", \"score\": 1}]}]}",
        "{\"results\": [{\"hits\": [{\"id\": \"\", \"score\": 1}]}]}",
        "{\"results\": [{\"hits\": [{\"id\": \"9223372036854775808\", \"score\": 1}]}]}", /* > INT64_MAX */
        "{\"results\": [{\"hits\": [{\"id\": \"5\", \"score\": \"1\"}]}]}",
        "{\"results\": [{\"hits\": [{\"id\": \"5\"}]}]}",
        "{\"results\": [{\"hits\": [7]}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *j = cJSON_Parse(bad[i]);
        cr_assert_not_null(j, "%s", bad[i]);
        cr_assert_eq(osp__rt_check_search_answer(j, 1), OSP_EFORMAT, "accepted %s", bad[i]);
        cJSON_Delete(j);
    }
    cJSON *ok = cJSON_Parse("{\"results\": [{\"hits\": [{\"id\": \"9223372036854775807\", \"score\": -3.5}]}]}");
    cr_assert_eq(osp__rt_check_search_answer(ok, 1), 0);
    cr_assert_eq(osp__rt_hit_id(cJSON_GetArrayItem(hits_of(ok, 0), 0)), INT64_MAX);
    cJSON_Delete(ok);
}

Test(router, worker_addresses) {
    rt_router r;
    const char *good[] = {"127.0.0.1:8001,http://127.0.0.1:8002/", "localhost:9000", "[::1]:7000"};
    cr_assert_eq(osp__rt_router_init(&r, good, 3), 0, "%s", osp_last_error());
    cr_assert_eq(r.n_shards, 3);
    cr_assert_eq(r.n_workers, 4);
    cr_assert_eq(r.shards[0].n, 2);
    cr_assert_str_eq(r.shards[0].replicas[1]->addr, "127.0.0.1:8002");
    cr_assert_str_eq(r.shards[0].replicas[1]->url, "http://127.0.0.1:8002");
    cr_assert_eq(r.shards[2].replicas[0]->shard, 2);
    osp__rt_router_free(&r);
    const char *bad[] = {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "a b:80",
                         "1.2.3.4:80,", "h:80/x", "h:80,h:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *one[] = {bad[i]};
        cr_assert_neq(osp__rt_router_init(&r, one, 1), 0, "accepted '%s'", bad[i]);
        osp__rt_router_free(&r);
    }
}

Test(router, catalogue_root) {
    cr_assert(osp__rt_path_below("/data/photos/a.jpg", "/data/photos"));
    cr_assert(osp__rt_path_below("/data/photos", "/data/photos"));
    cr_assert(!osp__rt_path_below("/data/photos2/a.jpg", "/data/photos"));
    cr_assert(!osp__rt_path_below("/data/a.jpg", "/data/photos"));
    cr_assert(osp__rt_path_below("/etc/passwd", "/"));
}
