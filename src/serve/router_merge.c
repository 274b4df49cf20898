/* The router's merge of the shards' search answers: each shard gives its
 * own top k (score descending, then id ascending); the merged top k under
 * the same total order is the top k of one index over all the vectors,
 * since every hit of the global top k is in its own shard's top k. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/core.h"
#include "serve/router.h"

int64_t osp__rt_hit_id(const cJSON *hit) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(hit, "id");
    if (!cJSON_IsString(id) || !id->valuestring) return -1;
    const char *s = id->valuestring;
    size_t n = strlen(s);
    if (n == 0 || n > 19 || strspn(s, "0123456789") != n) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        const int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    return v;
}

int osp__rt_check_search_answer(const cJSON *answer, int n_queries) {
    const cJSON *results = cJSON_GetObjectItemCaseSensitive(answer, "results");
    if (!cJSON_IsArray(results)) return osp_error(OSP_EFORMAT, "the answer has no \"results\" array");
    if (cJSON_GetArraySize(results) != n_queries)
        return osp_error(OSP_EFORMAT, "the answer has %d results for %d queries", cJSON_GetArraySize(results),
                         n_queries);
    int q = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, results) {
        const cJSON *hits = cJSON_GetObjectItemCaseSensitive(r, "hits");
        if (!cJSON_IsArray(hits)) return osp_error(OSP_EFORMAT, "results[%d] has no \"hits\" array", q);
        int h = 0;
        const cJSON *hit;
        cJSON_ArrayForEach(hit, hits) {
            const cJSON *score = cJSON_GetObjectItemCaseSensitive(hit, "score");
            if (!cJSON_IsObject(hit) || osp__rt_hit_id(hit) < 0)
                return osp_error(OSP_EFORMAT, "results[%d].hits[%d] has no decimal string \"id\"", q, h);
            if (!cJSON_IsNumber(score) || !isfinite(score->valuedouble))
                return osp_error(OSP_EFORMAT, "results[%d].hits[%d] has no numeric \"score\"", q, h);
            h++;
        }
        q++;
    }
    return 0;
}

typedef struct merge_hit {
    double score;
    int64_t id;
    const cJSON *json;
} merge_hit;

static int hit_order(const void *pa, const void *pb) {
    const merge_hit *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    return 0;
}

cJSON *osp__rt_merge_search(const cJSON *const *answers, int n_shards, const int *k,
                            int n_queries) {
    cJSON *out = cJSON_CreateObject();
    cJSON *results = out ? cJSON_AddArrayToObject(out, "results") : NULL;
    if (!results) goto oom;
    size_t cap = 0;
    merge_hit *hits = NULL;
    for (int q = 0; q < n_queries; q++) {
        size_t n = 0;
        for (int s = 0; s < n_shards; s++) {
            if (!answers[s]) continue;
            const cJSON *r = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(answers[s], "results"), q);
            const cJSON *hit;
            cJSON_ArrayForEach(hit, cJSON_GetObjectItemCaseSensitive(r, "hits")) {
                if (n == cap) {
                    size_t ncap = cap ? 2 * cap : 64;
                    merge_hit *nh = realloc(hits, ncap * sizeof *nh);
                    if (!nh) {
                        free(hits);
                        goto oom;
                    }
                    hits = nh;
                    cap = ncap;
                }
                hits[n].score = cJSON_GetObjectItemCaseSensitive(hit, "score")->valuedouble;
                hits[n].id = osp__rt_hit_id(hit);
                hits[n].json = hit;
                n++;
            }
        }
        if (n > 1) qsort(hits, n, sizeof *hits, hit_order);
        cJSON *r = cJSON_CreateObject(), *arr = r ? cJSON_AddArrayToObject(r, "hits") : NULL;
        if (!arr || !cJSON_AddItemToArray(results, r)) {
            cJSON_Delete(r);
            free(hits);
            goto oom;
        }
        /* The same hit from two replicas of one shard cannot occur (one
         * answer per shard), but a catalogue copied into two shards by
         * mistake could: each id is kept once. */
        int kept = 0;
        for (size_t i = 0; i < n && kept < k[q]; i++) {
            if (i > 0 && hits[i].id == hits[i - 1].id) continue;
            cJSON *copy = cJSON_Duplicate(hits[i].json, 1);
            if (!copy || !cJSON_AddItemToArray(arr, copy)) {
                cJSON_Delete(copy);
                free(hits);
                goto oom;
            }
            kept++;
        }
    }
    free(hits);
    return out;
oom:
    cJSON_Delete(out);
    osp_error(OSP_ENOMEM, "merging the shards' answers");
    return NULL;
}
