/* osprey route: the HTTP router over shard workers (osprey/serve.h,
 * docs/serving.md). Requests come in on http.c's thread pool; each
 * handler calls the workers through router_upstream.c (libcurl multi, a
 * client per request in flight) and answers once they have answered:
 *
 *   POST   /v1/vectors:search     every shard (one live replica each), merged
 *   POST   /v1/images:annotate    one live worker; WEB_DETECTION searched on
 *                                 every shard from the embedding it returns
 *   POST   /v1/images             every live replica of each image's shard
 *   DELETE /v1/images/{id}        every live replica of the id's shard
 *   GET    /healthz, /metrics     the router's own view
 *   GET    /, /v1/catalog/image   the web page and the catalogue's images */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "osprey/pipeline.h"
#include "osprey/serve.h"
#include "serve/http.h"
#include "serve/router.h"
#include "serve/router_metrics.h"
#include "serve/router_page.h"

typedef struct router {
    rt_router r;
    int timeout_ms;
    char *allow_root; /* realpath, or NULL */
    rt_metrics metrics;
    /* the health checker */
    pthread_t health;
    int health_started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stop;
} router;

osp_serve_router_config osp_serve_router_defaults(void) {
    osp_serve_router_config c;
    memset(&c, 0, sizeof c);
    c.timeout_ms = 10000;
    c.health_ms = 1000;
    c.threads = 16;
    return c;
}

/* ---- request helpers ------------------------------------------------------- */

/* The body as JSON; NULL after answering 400 when it is not. */
static cJSON *parse_body(osp__http_request *req, enum MHD_Result *res) {
    if (req->body_len == 0) {
        *res = osp__http_send_error(req, 400, "the request has no body: a JSON object is expected");
        return NULL;
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(req->body, req->body_len, &end, 0);
    if (j && end) {
        /* nothing but white space may follow the value */
        while (end < req->body + req->body_len && strchr(" \t\r\n", *end) && *end) end++;
        if (end != req->body + req->body_len) {
            cJSON_Delete(j);
            j = NULL;
        }
    }
    if (!j) {
        const size_t at = end && end >= req->body ? (size_t)(end - req->body) : 0;
        *res = osp__http_send_error(req, 400, "the body is not valid JSON (at byte %zu)", at);
        return NULL;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        *res = osp__http_send_error(req, 400, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* An optional integer field in [lo, hi]: 0 (with *out = def when absent), or
 * -1 when it is present and not one. */
static int int_field(const cJSON *obj, const char *name, int lo, int hi, int def, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    /* the range first: a cast of a huge double to an integer is undefined */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi) ||
        v->valuedouble != (double)(int)v->valuedouble)
        return -1;
    *out = (int)v->valuedouble;
    return 0;
}

static int check_search(rt_call *call, void *ctx) {
    const int n_queries = *(const int *)ctx;
    call->json = cJSON_ParseWithLength(call->answer, call->answer_len);
    if (!call->json) return osp_error(OSP_EFORMAT, "not JSON");
    return osp__rt_check_search_answer(call->json, n_queries);
}

static int check_annotate(rt_call *call, void *ctx) {
    const int n = *(const int *)ctx;
    call->json = cJSON_ParseWithLength(call->answer, call->answer_len);
    if (!call->json) return osp_error(OSP_EFORMAT, "not JSON");
    const cJSON *resp = cJSON_GetObjectItemCaseSensitive(call->json, "responses");
    if (!cJSON_IsArray(resp) || cJSON_GetArraySize(resp) != n)
        return osp_error(OSP_EFORMAT, "no \"responses\" array of %d", n);
    const cJSON *x;
    cJSON_ArrayForEach(x, resp) if (!cJSON_IsObject(x)) return osp_error(OSP_EFORMAT, "a response is no object");
    return 0;
}

/* A worker's answer with a client-error status, passed on as it is. */
static enum MHD_Result pass_on(osp__http_request *req, const rt_call *call) {
    return osp__http_send_text(req, (int)call->status, "application/json; charset=utf-8", call->answer,
                               call->answer_len);
}

/* The answer to a call that got none. */
static enum MHD_Result send_failed(osp__http_request *req, const rt_call *call, const char *what) {
    if (strstr(call->error, "deadline") || strstr(call->error, "Timeout"))
        return osp__http_send_error(req, 504, "%s: %s", what, call->error);
    return osp__http_send_error(req, 503, "%s: %s", what, call->error);
}

/* ---- search ---------------------------------------------------------------- */

/* The search of one body over every shard: *merged gets the merged answer
 * (with "partial" and "missingShards" when shards had no live replica);
 * or it answers the request itself (a worker's 4xx, no shard at all) and
 * returns 1 with *res set. */
static int search_shards(router *rt, osp__http_request *req, const char *body, size_t len, const int *k,
                         int n_queries, int64_t deadline, cJSON **merged, enum MHD_Result *res) {
    rt_router *r = &rt->r;
    const int n = r->n_shards;
    rt_call *calls = calloc((size_t)n, sizeof *calls);
    const cJSON **answers = calloc((size_t)n, sizeof *answers);
    int answered = 0;
    *merged = NULL;
    if (!calls || !answers) {
        free(calls);
        free(answers);
        *res = osp__http_send_error(req, 500, "out of memory");
        return 1;
    }
    for (int s = 0; s < n; s++) {
        calls[s].method = "POST";
        calls[s].path = "/v1/vectors:search";
        calls[s].body = body;
        calls[s].body_len = len;
        calls[s].target = s;
        calls[s].check = check_search;
        calls[s].check_ctx = &n_queries;
    }
    osp__rt_run(r, calls, n, deadline);
    int done = 0;
    cJSON *missing = cJSON_CreateArray();
    for (int s = 0; s < n && !done; s++) {
        rt_call *c = &calls[s];
        if (c->ok && c->status >= 200 && c->status < 300) {
            answers[s] = c->json;
            answered++;
        } else if (c->ok) {
            *res = pass_on(req, c);
            done = 1;
        } else if (osp__rt_shard_live(r, s) == 0) {
            cJSON_AddItemToArray(missing, cJSON_CreateNumber(s));
        } else {
            char what[64];
            snprintf(what, sizeof what, "shard %d", s);
            *res = send_failed(req, c, what);
            done = 1;
        }
    }
    if (!done && answered == 0) {
        *res = osp__http_send_error(req, 503, "no live worker for any of the %d shards", n);
        done = 1;
    }
    if (!done) {
        *merged = osp__rt_merge_search(answers, n, k, n_queries);
        if (!*merged) {
            *res = osp__http_send_error(req, 500, "out of memory");
            done = 1;
        } else if (answered < n) {
            cJSON_AddBoolToObject(*merged, "partial", 1);
            cJSON_AddItemToObject(*merged, "missingShards", missing);
            missing = NULL;
            osp__rt_metrics_partial(&rt->metrics);
        }
    }
    cJSON_Delete(missing);
    for (int s = 0; s < n; s++) osp__rt_call_clear(&calls[s]);
    free(calls);
    free(answers);
    return done;
}

static enum MHD_Result handle_search(router *rt, osp__http_request *req) {
    req->route = "search";
    if (strcmp(req->method, "POST")) return osp__http_send_method_not_allowed(req, "POST");
    const int64_t deadline = osp__rt_now_ms() + rt->timeout_ms;
    enum MHD_Result res;
    cJSON *j = parse_body(req, &res);
    if (!j) return res;
    const cJSON *queries = cJSON_GetObjectItemCaseSensitive(j, "queries");
    const int n = cJSON_IsArray(queries) ? cJSON_GetArraySize(queries) : -1;
    if (n < 1 || n > RT_MAX_QUERIES) {
        cJSON_Delete(j);
        return osp__http_send_error(req, 400, "\"queries\" must be an array of 1 to %d queries", RT_MAX_QUERIES);
    }
    int k[RT_MAX_QUERIES];
    int q = 0;
    const cJSON *query;
    cJSON_ArrayForEach(query, queries) {
        if (!cJSON_IsObject(query) || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(query, "vector"))) {
            cJSON_Delete(j);
            return osp__http_send_error(req, 400, "queries[%d] must be an object with a \"vector\" array", q);
        }
        if (int_field(query, "k", 1, RT_MAX_K, RT_DEFAULT_K, &k[q])) {
            cJSON_Delete(j);
            return osp__http_send_error(req, 400, "queries[%d].k must be an integer from 1 to %d", q, RT_MAX_K);
        }
        q++;
    }
    cJSON_Delete(j);
    /* the body goes to the shards as it came */
    cJSON *merged;
    if (search_shards(rt, req, req->body, req->body_len, k, n, deadline, &merged, &res)) return res;
    return osp__http_send_json(req, 200, merged);
}

/* ---- annotate -------------------------------------------------------------- */

typedef struct image_ask {
    int web;   /* WEB_DETECTION asked */
    int web_k; /* its maxResults */
    int emb;   /* EMBEDDING asked */
} image_ask;

static int feature_is(const cJSON *f, const char *type) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(f, "type");
    return cJSON_IsString(t) && t->valuestring && !strcmp(t->valuestring, type);
}

static enum MHD_Result handle_annotate(router *rt, osp__http_request *req) {
    req->route = "annotate";
    if (strcmp(req->method, "POST")) return osp__http_send_method_not_allowed(req, "POST");
    const int64_t deadline = osp__rt_now_ms() + rt->timeout_ms;
    enum MHD_Result res;
    cJSON *j = parse_body(req, &res);
    if (!j) return res;
    cJSON *requests = cJSON_GetObjectItemCaseSensitive(j, "requests");
    const int n = cJSON_IsArray(requests) ? cJSON_GetArraySize(requests) : -1;
    if (n < 1) {
        cJSON_Delete(j);
        return osp__http_send_error(req, 400, "\"requests\" must be a non-empty array of image requests");
    }
    if (n > RT_MAX_IMAGES) {
        cJSON_Delete(j);
        return osp__http_send_error(req, 400, "%d images in one request: at most %d are allowed", n,
                                    RT_MAX_IMAGES);
    }
    /* What each image asks. WEB_DETECTION is the router's to answer: the
     * worker is asked for the image's EMBEDDING in its place (the same
     * feature object, its type changed, so that the worker's messages name
     * the client's indexes and check its other fields; EMBEDDING given
     * twice is allowed: the last counts). */
    image_ask ask[RT_MAX_IMAGES];
    memset(ask, 0, sizeof ask);
    int i = 0, any_web = 0;
    cJSON *one;
    cJSON_ArrayForEach(one, requests) {
        if (!cJSON_IsObject(one)) {
            cJSON_Delete(j);
            return osp__http_send_error(req, 400, "requests[%d] must be an object", i);
        }
        cJSON *features = cJSON_GetObjectItemCaseSensitive(one, "features");
        cJSON *list = cJSON_IsArray(features) ? features : NULL, *f;
        int fi = 0;
        cJSON_ArrayForEach(f, list) {
            if (feature_is(f, "EMBEDDING")) ask[i].emb = 1;
            if (feature_is(f, "WEB_DETECTION")) {
                int kk;
                /* 0 is proto3's "not given"; a type given twice: the last
                 * one counts (as the worker) */
                if (int_field(f, "maxResults", 0, RT_MAX_K, 0, &kk)) {
                    cJSON_Delete(j);
                    return osp__http_send_error(req, 400,
                                                "requests[%d].features[%d].maxResults must be an integer from "
                                                "0 to %d",
                                                i, fi, RT_MAX_K);
                }
                ask[i].web_k = kk ? kk : RT_DEFAULT_K;
                ask[i].web = 1;
                cJSON *type = cJSON_CreateString("EMBEDDING");
                if (!type || !cJSON_ReplaceItemInObjectCaseSensitive(f, "type", type)) {
                    cJSON_Delete(type);
                    cJSON_Delete(j);
                    return osp__http_send_error(req, 500, "out of memory");
                }
            }
            fi++;
        }
        any_web |= ask[i].web;
        i++;
    }
    /* without WEB_DETECTION the body goes as it came */
    char *body = any_web ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (any_web && !body) return osp__http_send_error(req, 500, "out of memory");

    rt_call call = {.method = "POST",
                    .path = "/v1/images:annotate",
                    .body = body ? body : req->body,
                    .body_len = body ? strlen(body) : req->body_len,
                    .target = RT_ANY_WORKER,
                    .check = check_annotate,
                    .check_ctx = (void *)&n};
    osp__rt_run(&rt->r, &call, 1, deadline);
    free(body);
    if (!call.ok) {
        res = send_failed(req, &call, "no worker could annotate the images");
        osp__rt_call_clear(&call);
        return res;
    }
    if (call.status < 200 || call.status >= 300 || !any_web) {
        res = pass_on(req, &call);
        osp__rt_call_clear(&call);
        return res;
    }
    cJSON *answer = call.json;
    call.json = NULL;
    osp__rt_call_clear(&call);
    cJSON *responses = cJSON_GetObjectItemCaseSensitive(answer, "responses");

    /* One search of every shard for all the images that asked. */
    cJSON *search = cJSON_CreateObject();
    cJSON *queries = search ? cJSON_AddArrayToObject(search, "queries") : NULL;
    int k[RT_MAX_IMAGES], which[RT_MAX_IMAGES], nq = 0;
    if (!queries) goto oom;
    for (i = 0; i < n; i++) {
        cJSON *resp = cJSON_GetArrayItem(responses, i);
        if (!ask[i].web || cJSON_GetObjectItemCaseSensitive(resp, "error")) continue;
        cJSON *emb = cJSON_GetObjectItemCaseSensitive(resp, "embedding");
        cJSON *vec = cJSON_GetObjectItemCaseSensitive(emb, "vector");
        if (!cJSON_IsArray(vec)) {
            /* the worker cannot embed (a model without the layer): this
             * image's answer says so */
            cJSON *err = osp__http_error_object(500, "the worker gave no embedding to search with");
            if (!err) goto oom;
            cJSON_DeleteItemFromObjectCaseSensitive(err, "status");
            cJSON_ReplaceItemInObjectCaseSensitive(err, "code", cJSON_CreateNumber(OSP__RPC_INTERNAL));
            cJSON_AddItemToObject(resp, "error", err);
            continue;
        }
        cJSON *q = cJSON_CreateObject();
        if (!q || !cJSON_AddItemToArray(queries, q)) {
            cJSON_Delete(q);
            goto oom;
        }
        if (!cJSON_AddItemToObject(q, "vector", cJSON_Duplicate(vec, 1)) || !cJSON_AddNumberToObject(q, "k", ask[i].web_k))
            goto oom;
        k[nq] = ask[i].web_k;
        which[nq++] = i;
    }
    cJSON *merged = NULL;
    if (nq > 0) {
        char *sbody = cJSON_PrintUnformatted(search);
        if (!sbody) goto oom;
        const int done = search_shards(rt, req, sbody, strlen(sbody), k, nq, deadline, &merged, &res);
        free(sbody);
        if (done) {
            cJSON_Delete(search);
            cJSON_Delete(answer);
            return res;
        }
        cJSON *results = cJSON_GetObjectItemCaseSensitive(merged, "results");
        for (int q = 0; q < nq; q++) {
            cJSON *resp = cJSON_GetArrayItem(responses, which[q]);
            cJSON *web = cJSON_CreateObject();
            cJSON *sim = web ? cJSON_AddArrayToObject(web, "visuallySimilarImages") : NULL;
            if (!sim || !cJSON_AddItemToObject(resp, "webDetection", web)) {
                cJSON_Delete(web);
                cJSON_Delete(merged);
                goto oom;
            }
            const cJSON *hit;
            cJSON_ArrayForEach(hit, cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(results, q), "hits")) {
                const cJSON *path = cJSON_GetObjectItemCaseSensitive(hit, "path");
                const cJSON *score = cJSON_GetObjectItemCaseSensitive(hit, "score");
                cJSON *h = cJSON_CreateObject();
                if (!h || !cJSON_AddItemToArray(sim, h)) {
                    cJSON_Delete(h);
                    cJSON_Delete(merged);
                    goto oom;
                }
                /* {id, url, score}, as a worker's own WEB_DETECTION */
                cJSON_AddItemToObject(h, "id", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(hit, "id"), 0));
                cJSON_AddItemToObject(h, "url", cJSON_IsString(path) ? cJSON_CreateString(path->valuestring)
                                                                       : cJSON_CreateNull());
                cJSON_AddNumberToObject(h, "score", score->valuedouble);
            }
        }
        cJSON *partial = cJSON_DetachItemFromObjectCaseSensitive(merged, "partial");
        cJSON *missing = cJSON_DetachItemFromObjectCaseSensitive(merged, "missingShards");
        if (partial) cJSON_AddItemToObject(answer, "partial", partial);
        if (missing) cJSON_AddItemToObject(answer, "missingShards", missing);
        cJSON_Delete(merged);
    }
    cJSON_Delete(search);
    for (i = 0; i < n; i++)
        if (ask[i].web && !ask[i].emb)
            cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetArrayItem(responses, i), "embedding");
    return osp__http_send_json(req, 200, answer);
oom:
    cJSON_Delete(search);
    cJSON_Delete(answer);
    return osp__http_send_error(req, 500, "out of memory");
}

/* ---- writes ---------------------------------------------------------------- */

/* The calls of a write to every live replica of shard s, appended to
 * calls[*n]; 0, or -1 when the shard has none. */
static int write_calls(router *rt, int s, const char *method, const char *path, const char *body, size_t len,
                       const char *auth, rt_call *calls, int *n) {
    const rt_shard *sh = &rt->r.shards[s];
    int added = 0;
    for (int i = 0; i < sh->n; i++) {
        if (!atomic_load(&sh->replicas[i]->up)) {
            osp_log(OSP_LOG_WARN, "route: %s %s: replica %s of shard %d is down and misses the write", method,
                    path, sh->replicas[i]->addr, s);
            continue;
        }
        rt_call *c = &calls[(*n)++];
        c->method = method;
        c->path = path;
        c->body = body;
        c->body_len = len;
        c->auth = auth;
        c->target = RT_FIXED_WORKER;
        c->fixed = sh->replicas[i];
        added++;
    }
    return added ? 0 : -1;
}

/* The worst of the calls' outcomes: a call with no answer first, then the
 * highest status; its index. */
static int worst_call(const rt_call *calls, int n) {
    int w = 0;
    for (int i = 1; i < n; i++) {
        if (!calls[w].ok) break;
        if (!calls[i].ok || calls[i].status > calls[w].status) w = i;
    }
    return w;
}

/* The answer to an add whose images went to several shards, every replica
 * having taken its part: {"responses": [...]} in the request's order, item
 * i being the next of its shard's answer (the first replica's: the
 * replicas give the same ids and paths). NULL if an answer is malformed. */
static cJSON *merge_add_answers(rt_call *calls, int n, const int *item_shard, int n_items) {
    cJSON *out = cJSON_CreateObject();
    cJSON *responses = out ? cJSON_AddArrayToObject(out, "responses") : NULL;
    if (!responses) goto bad;
    for (int i = 0; i < n_items; i++) {
        const cJSON *part = NULL;
        int seen = 0;
        for (int c = 0; c < n; c++) {
            if (calls[c].fixed->shard != item_shard[i]) continue;
            if (!calls[c].json) calls[c].json = cJSON_ParseWithLength(calls[c].answer, calls[c].answer_len);
            part = cJSON_GetObjectItemCaseSensitive(calls[c].json, "responses");
            break;
        }
        for (int j = 0; j < i; j++) seen += item_shard[j] == item_shard[i];
        const cJSON *one = cJSON_GetArrayItem(part, seen);
        if (!one || !cJSON_AddItemToArray(responses, cJSON_Duplicate(one, 1))) goto bad;
    }
    return out;
bad:
    cJSON_Delete(out);
    return NULL;
}

/* Runs the calls of a write and answers: the worst answer (a replica that
 * gave none is worst), passed on; or, when every replica took it and the
 * write was an add split over shards (item_shard: each image's shard),
 * their answers joined in the request's order. */
static enum MHD_Result answer_writes(router *rt, osp__http_request *req, rt_call *calls, int n, int64_t deadline,
                                     const int *item_shard, int n_items) {
    osp__rt_run(&rt->r, calls, n, deadline);
    const int w = worst_call(calls, n);
    int split = 0;
    for (int i = 1; item_shard && i < n_items; i++) split |= item_shard[i] != item_shard[0];
    enum MHD_Result res;
    if (!calls[w].ok) {
        char what[300];
        snprintf(what, sizeof what, "replica %s of shard %d did not take the write", calls[w].fixed->addr,
                 calls[w].fixed->shard);
        res = send_failed(req, &calls[w], what);
    } else if (split && calls[w].status >= 200 && calls[w].status < 300) {
        cJSON *merged = merge_add_answers(calls, n, item_shard, n_items);
        res = merged ? osp__http_send_json(req, (int)calls[w].status, merged)
                     : osp__http_send_error(req, 500, "a worker's answer to the add is malformed");
    } else {
        res = pass_on(req, &calls[w]);
    }
    for (int i = 0; i < n; i++) osp__rt_call_clear(&calls[i]);
    return res;
}

/* The catalogue path of an add request, which names its shard. */
static const char *add_path(const cJSON *one) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(one, "path");
    return cJSON_IsString(p) ? p->valuestring : NULL;
}

/* The Authorization header a write carries to the workers; NULL after
 * answering 401 when there is none or it could not be passed on as it is
 * (control characters, over 1 KB). */
static const char *write_auth(osp__http_request *req, enum MHD_Result *res) {
    const char *auth = osp__http_header(req, "Authorization");
    int ok = auth && *auth && strlen(auth) <= 1024;
    for (const unsigned char *p = (const unsigned char *)auth; ok && *p; p++) ok = *p >= 0x20 && *p != 0x7f;
    if (!ok) *res = osp__http_send_error(req, 401, "writes need an \"Authorization: Bearer TOKEN\" header");
    return ok ? auth : NULL;
}

static enum MHD_Result handle_add(router *rt, osp__http_request *req) {
    req->route = "images_add";
    const int64_t deadline = osp__rt_now_ms() + rt->timeout_ms;
    enum MHD_Result res;
    const char *auth = write_auth(req, &res);
    if (!auth) return res;
    cJSON *j = parse_body(req, &res);
    if (!j) return res;
    cJSON *requests = cJSON_GetObjectItemCaseSensitive(j, "requests");
    const int n = cJSON_IsArray(requests) ? cJSON_GetArraySize(requests) : -1;
    if (n < 1 || n > RT_MAX_IMAGES) {
        cJSON_Delete(j);
        return osp__http_send_error(req, 400, "\"requests\" must be an array of 1 to %d images", RT_MAX_IMAGES);
    }
    const int ns = rt->r.n_shards;
    /* one body per shard holding its images, in the order given */
    int item_shard[RT_MAX_IMAGES];
    cJSON **per = calloc((size_t)ns, sizeof *per);
    if (!per) goto oom;
    int i = 0;
    cJSON *one;
    cJSON_ArrayForEach(one, requests) {
        const char *path = cJSON_IsObject(one) ? add_path(one) : NULL;
        if (!path || !*path) {
            free(per);
            cJSON_Delete(j);
            return osp__http_send_error(req, 400,
                                        "requests[%d].path is missing (the image's path in the catalogue, a string)",
                                        i);
        }
        const int s = (int)(osp_image_id(path) % ns);
        item_shard[i] = s;
        if (!per[s]) {
            per[s] = cJSON_CreateObject();
            if (!per[s] || !cJSON_AddArrayToObject(per[s], "requests")) goto oom;
            /* everything else in the body goes along */
            const cJSON *f;
            cJSON_ArrayForEach(f, j) {
                if (strcmp(f->string, "requests"))
                    cJSON_AddItemToObject(per[s], f->string, cJSON_Duplicate(f, 1));
            }
        }
        cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(per[s], "requests"), cJSON_Duplicate(one, 1));
        i++;
    }
    cJSON_Delete(j);
    j = NULL;
    int n_calls = 0, cap = 0;
    for (int s = 0; s < ns; s++) cap += per[s] ? rt->r.shards[s].n : 0;
    rt_call *calls = calloc((size_t)cap + 1, sizeof *calls);
    char **bodies = calloc((size_t)ns, sizeof *bodies);
    if (!calls || !bodies) {
        free(calls);
        free(bodies);
        goto oom;
    }
    int refused = -1;
    for (int s = 0; s < ns && refused < 0; s++) {
        if (!per[s]) continue;
        bodies[s] = cJSON_PrintUnformatted(per[s]);
        if (!bodies[s] || write_calls(rt, s, "POST", "/v1/images", bodies[s], strlen(bodies[s]), auth, calls,
                                      &n_calls))
            refused = s;
    }
    if (refused >= 0) {
        res = bodies[refused] ? osp__http_send_error(req, 503, "shard %d has no live replica to take the write",
                                                      refused)
                              : osp__http_send_error(req, 500, "out of memory");
    } else {
        res = answer_writes(rt, req, calls, n_calls, deadline, item_shard, n);
    }
    for (int s = 0; s < ns; s++) {
        free(bodies[s]);
        cJSON_Delete(per[s]);
    }
    free(bodies);
    free(calls);
    free(per);
    return res;
oom:
    if (per)
        for (int s = 0; s < ns; s++) cJSON_Delete(per[s]);
    free(per);
    cJSON_Delete(j);
    return osp__http_send_error(req, 500, "out of memory");
}

static enum MHD_Result handle_delete(router *rt, osp__http_request *req, const char *id_s) {
    req->route = "images_delete";
    const int64_t deadline = osp__rt_now_ms() + rt->timeout_ms;
    enum MHD_Result res;
    const char *auth = write_auth(req, &res);
    if (!auth) return res;
    const size_t len = strlen(id_s);
    int64_t id = 0;
    int ok = len > 0 && len <= 19 && strspn(id_s, "0123456789") == len;
    for (size_t i = 0; ok && i < len; i++) {
        const int d = id_s[i] - '0';
        if (id > (INT64_MAX - d) / 10) ok = 0;
        else id = id * 10 + d;
    }
    if (!ok) return osp__http_send_error(req, 400, "'%.40s' is not an image id (a decimal integer)", id_s);
    const int s = (int)(id % rt->r.n_shards);
    rt_call *calls = calloc((size_t)rt->r.shards[s].n, sizeof *calls);
    if (!calls) return osp__http_send_error(req, 500, "out of memory");
    char path[64];
    snprintf(path, sizeof path, "/v1/images/%lld", (long long)id);
    int n = 0;
    if (write_calls(rt, s, "DELETE", path, NULL, 0, auth, calls, &n))
        res = osp__http_send_error(req, 503, "shard %d has no live replica to take the write", s);
    else
        res = answer_writes(rt, req, calls, n, deadline, NULL, 0);
    free(calls);
    return res;
}

/* ---- health and metrics ------------------------------------------------------ */

static enum MHD_Result handle_healthz(router *rt, osp__http_request *req) {
    req->route = "healthz";
    if (strcmp(req->method, "GET")) return osp__http_send_method_not_allowed(req, "GET");
    rt_router *r = &rt->r;
    cJSON *o = cJSON_CreateObject();
    cJSON *shards = o ? cJSON_AddArrayToObject(o, "shards") : NULL;
    if (!shards) {
        cJSON_Delete(o);
        return osp__http_send_error(req, 500, "out of memory");
    }
    int covered = 0, up = 0;
    for (int s = 0; s < r->n_shards; s++) {
        cJSON *sh = cJSON_CreateObject();
        cJSON_AddItemToArray(shards, sh);
        cJSON_AddNumberToObject(sh, "shard", s);
        const int live = osp__rt_shard_live(r, s);
        covered += live > 0;
        up += live;
        cJSON_AddNumberToObject(sh, "live", live);
        cJSON *reps = cJSON_AddArrayToObject(sh, "replicas");
        for (int i = 0; i < r->shards[s].n; i++) {
            rt_worker *w = r->shards[s].replicas[i];
            cJSON *x = cJSON_CreateObject();
            cJSON_AddItemToArray(reps, x);
            cJSON_AddStringToObject(x, "address", w->addr);
            const int wup = atomic_load(&w->up);
            cJSON_AddBoolToObject(x, "up", wup);
            pthread_mutex_lock(&w->lock);
            if (!wup && w->last_error[0]) cJSON_AddStringToObject(x, "lastError", w->last_error);
            pthread_mutex_unlock(&w->lock);
        }
    }
    /* ok: every shard answers; degraded: some answer (answers are
     * partial); unavailable: none does */
    const char *status = covered == r->n_shards ? "ok" : covered > 0 ? "degraded" : "unavailable";
    cJSON_AddStringToObject(o, "status", status);
    cJSON_AddStringToObject(o, "role", "router");
    cJSON_AddNumberToObject(o, "workersUp", up);
    cJSON_AddNumberToObject(o, "workers", r->n_workers);
    return osp__http_send_json(req, covered > 0 ? 200 : 503, o);
}

static enum MHD_Result handle_metrics(router *rt, osp__http_request *req) {
    req->route = "metrics";
    if (strcmp(req->method, "GET")) return osp__http_send_method_not_allowed(req, "GET");
    size_t len = 0;
    char *text = osp__rt_metrics_render(&rt->r, &len);
    if (!text) return osp__http_send_error(req, 500, "out of memory");
    enum MHD_Result res = osp__http_send_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
    return res;
}

/* ---- dispatch ------------------------------------------------------------------ */

static enum MHD_Result handle(void *ctx, osp__http_request *req) {
    router *rt = ctx;
    const char *p = req->path;
    if (!strcmp(p, "/v1/vectors:search")) return handle_search(rt, req);
    if (!strcmp(p, "/v1/images:annotate")) return handle_annotate(rt, req);
    if (!strcmp(p, "/v1/images")) {
        if (strcmp(req->method, "POST")) return osp__http_send_method_not_allowed(req, "POST");
        return handle_add(rt, req);
    }
    if (!strncmp(p, "/v1/images/", 11)) {
        if (strcmp(req->method, "DELETE")) return osp__http_send_method_not_allowed(req, "DELETE");
        return handle_delete(rt, req, p + 11);
    }
    if (!strcmp(p, "/healthz")) return handle_healthz(rt, req);
    if (!strcmp(p, "/metrics")) return handle_metrics(rt, req);
    if (!strcmp(p, "/") || !strcmp(p, "/index.html")) {
        req->route = "page";
        if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD"))
            return osp__http_send_method_not_allowed(req, "GET");
        return osp__rt_send_page(req);
    }
    if (!strcmp(p, "/v1/catalog/image")) {
        req->route = "catalog_image";
        if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD"))
            return osp__http_send_method_not_allowed(req, "GET");
        return osp__rt_send_catalog_image(req, rt->allow_root);
    }
    return osp__http_send_error(req, 404, "no such endpoint: %s %.200s", req->method, p);
}

/* ---- running ------------------------------------------------------------------- */

static void *health_main(void *arg) {
    router *rt = arg;
    const int timeout = rt->r.health_ms < 200 ? 200 : rt->r.health_ms > 2000 ? 2000 : rt->r.health_ms;
    pthread_mutex_lock(&rt->lock);
    while (!rt->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += rt->r.health_ms / 1000;
        until.tv_nsec += (long)(rt->r.health_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
        while (!rt->stop && pthread_cond_timedwait(&rt->wake, &rt->lock, &until) != ETIMEDOUT) {
        }
        if (rt->stop) break;
        pthread_mutex_unlock(&rt->lock);
        osp__rt_health_round(&rt->r, timeout);
        pthread_mutex_lock(&rt->lock);
    }
    pthread_mutex_unlock(&rt->lock);
    return NULL;
}

static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

int osp_serve_router_run(const osp_serve_router_config *cfg) {
    if (!cfg || !cfg->listen || !cfg->shards || cfg->n_shards < 1)
        return osp_error(OSP_EINVAL, "the router needs an address to listen on and at least one shard");
    if (cfg->timeout_ms < 1 || cfg->health_ms < 10 || cfg->threads < 1 || cfg->threads > 1024)
        return osp_error(OSP_EINVAL, "the router's timeout (>= 1 ms), health period (>= 10 ms) or threads "
                                     "(1 to 1024) are out of range");
    static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
    pthread_once(&curl_once, curl_init_once);
    router *rt = calloc(1, sizeof *rt);
    if (!rt) return osp_error(OSP_ENOMEM, "the router");
    pthread_mutex_init(&rt->lock, NULL);
    pthread_cond_init(&rt->wake, NULL);
    osp__http_server *server = NULL;
    int err = osp__rt_router_init(&rt->r, cfg->shards, cfg->n_shards);
    if (err) goto done;
    rt->timeout_ms = cfg->timeout_ms;
    rt->r.health_ms = cfg->health_ms;
    rt->r.connect_ms = cfg->timeout_ms < 1000 ? cfg->timeout_ms : 1000;
    if (cfg->allow_root) {
        rt->allow_root = realpath(cfg->allow_root, NULL);
        if (!rt->allow_root) {
            err = osp_error(OSP_EINVAL, "--allow-root %s: %s", cfg->allow_root, strerror(errno));
            goto done;
        }
    }
    rt->metrics.http = osp__metrics_new("osprey_router", osp__rt_metric_routes,
                                        osp__rt_metric_n_routes);
    if (!rt->metrics.http) {
        err = OSP_ENOMEM;
        goto done;
    }
    rt->r.metrics = &rt->metrics;
    /* where the workers stand before the first request */
    int first_round = cfg->health_ms < 1000 ? 1000 : cfg->health_ms > 2000 ? 2000 : cfg->health_ms;
    osp__rt_health_round(&rt->r, first_round);
    if (pthread_create(&rt->health, NULL, health_main, rt)) {
        err = osp_error(OSP_ENOMEM, "cannot start the health checker");
        goto done;
    }
    rt->health_started = 1;
    osp__http_config hc = {.listen = cfg->listen,
                           .threads = cfg->threads,
                           .max_connections = 4 * cfg->threads > OSP__HTTP_DEFAULT_MAX_CONNECTIONS
                                                  ? 4 * cfg->threads
                                                  : OSP__HTTP_DEFAULT_MAX_CONNECTIONS,
                           .timeout_s = cfg->timeout_ms / 1000 + 30,
                           .max_body = OSP__HTTP_DEFAULT_MAX_BODY,
                           .handler = handle,
                           .ctx = rt,
                           .metrics = rt->metrics.http};
    err = osp__http_start(&hc, &server);
    if (err) goto done;
    int up = 0;
    for (int i = 0; i < rt->r.n_workers; i++) up += atomic_load(&rt->r.workers[i].up);
    osp_log(OSP_LOG_INFO, "route: %d shards, %d workers (%d up)", rt->r.n_shards, rt->r.n_workers, up);
    if (cfg->on_listening) cfg->on_listening(osp__http_address(server), cfg->ctx);
    /* in-flight requests get their whole deadline to finish */
    osp__http_run(server, cfg->timeout_ms / 1000.0 + 1.0);
    server = NULL;
done:
    if (server) osp__http_stop(server, 0);
    if (rt->health_started) {
        pthread_mutex_lock(&rt->lock);
        rt->stop = 1;
        pthread_cond_signal(&rt->wake);
        pthread_mutex_unlock(&rt->lock);
        pthread_join(rt->health, NULL);
    }
    osp__rt_router_free(&rt->r);
    osp__metrics_free(rt->metrics.http);
    free(rt->allow_root);
    pthread_cond_destroy(&rt->wake);
    pthread_mutex_destroy(&rt->lock);
    free(rt);
    return err;
}
