/* The worker's endpoints: annotate, search, add, remove
 * (docs/http-api.md). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "osprey/image.h"
#include "osprey/pipeline.h"
#include "worker.h"

/* A 400 (or 500 when out of memory) for a request the parser refused. */
static enum MHD_Result parse_failed(osp__http_request *req, int rc) {
    if (rc == OSP_ENOMEM) return osp__http_send_error(req, 500, "out of memory");
    return osp__http_send_error(req, 400, "%s", osp_last_error());
}

/* ---- searching ---------------------------------------------------------------- */

typedef struct hit {
    int64_t id;
    double score;
} hit;

static int by_score(const void *a, const void *b) {
    const hit *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int osp__worker_search_one(osp__worker *w, const float *vector, int k, int ef, int nprobe,
                           const osp_index_filter *filter, const char *url_key, cJSON **out) {
    *out = NULL;
    int64_t *ids = malloc((size_t)k * sizeof *ids);
    float *dist = malloc((size_t)k * sizeof *dist);
    hit *hits = malloc((size_t)k * sizeof *hits);
    char **paths = calloc((size_t)k, sizeof *paths);
    int rc = ids && dist && hits && paths ? OSP_OK : osp_error(OSP_ENOMEM, "out of memory");
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, k);
    sp.ef_search = ef;
    sp.nprobe = nprobe;
    sp.threads = 1;
    sp.filter = filter;
    if (!rc) rc = osp_index_search(w->index, vector, 1, &sp, ids, dist);
    int n = 0;
    for (; !rc && n < k && ids[n] != OSP_INDEX_NO_ID; n++) {
        hits[n].id = ids[n];
        hits[n].score = osp__worker_score(w->metric, dist[n]);
    }
    /* one order for every shard: the router's merge of shards equals the
     * answer of one index over all of them */
    if (!rc) qsort(hits, (size_t)n, sizeof *hits, by_score);
    for (int i = 0; !rc && i < n; i++) ids[i] = hits[i].id;
    if (!rc && w->store) rc = osp__store_paths(w->store, ids, n, paths);
    cJSON *arr = rc ? NULL : cJSON_CreateArray();
    if (!rc && !arr) rc = osp_error(OSP_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < n; i++) {
        cJSON *h = cJSON_CreateObject(), *id = osp__id_string(hits[i].id);
        if (!h || !id) {
            cJSON_Delete(h);
            cJSON_Delete(id);
            rc = osp_error(OSP_ENOMEM, "out of memory");
            break;
        }
        cJSON_AddItemToArray(arr, h);
        cJSON_AddItemToObject(h, "id", id);
        if (paths[i]) cJSON_AddStringToObject(h, url_key, paths[i]);
        else cJSON_AddNullToObject(h, url_key);
        if (!cJSON_AddNumberToObject(h, "score", hits[i].score)) rc = osp_error(OSP_ENOMEM, "out of memory");
    }
    for (int i = 0; paths && i < k; i++) free(paths[i]);
    free(paths);
    free(hits);
    free(dist);
    free(ids);
    if (rc) {
        cJSON_Delete(arr);
        return rc;
    }
    *out = arr;
    return OSP_OK;
}

/* A search's filter: an id range and the ids of one label (ascending). */
typedef struct filter_ctx {
    int64_t lo, hi;
    const int64_t *label_ids; /* NULL: no label */
    size_t n_label;
} filter_ctx;

static int filter_allow(int64_t id, void *ctx) {
    const filter_ctx *f = ctx;
    if (id < f->lo || id > f->hi) return 0;
    if (!f->label_ids) return 1;
    size_t a = 0, b = f->n_label;
    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (f->label_ids[m] < id) a = m + 1;
        else b = m;
    }
    return a < f->n_label && f->label_ids[a] == id;
}

enum MHD_Result osp__worker_search(osp__worker *w, osp__http_request *req) {
    if (!w->index)
        return osp__http_send_status_error(req, 400, "FAILED_PRECONDITION",
                                           "this worker has no index (it was started without --index)");
    osp__search_request sr;
    int rc = osp__parse_search(req->body, req->body_len, &sr);
    if (rc) return parse_failed(req, rc);
    for (int i = 0; i < sr.n; i++)
        if (sr.queries[i].dim != w->index_dim) {
            enum MHD_Result r = osp__http_send_error(req, 400, "queries[%d].vector has %d values: the index holds "
                                                               "vectors of %d",
                                                     i, sr.queries[i].dim, w->index_dim);
            osp__search_request_free(&sr);
            return r;
        }
    cJSON *root = cJSON_CreateObject(), *results = root ? cJSON_AddArrayToObject(root, "results") : NULL;
    if (!results) rc = osp_error(OSP_ENOMEM, "out of memory");
    pthread_rwlock_rdlock(&w->index_lock);
    for (int i = 0; !rc && i < sr.n; i++) {
        const osp__search_query *q = &sr.queries[i];
        filter_ctx fc = {.lo = q->id_min, .hi = q->id_max};
        int64_t *label_ids = NULL;
        size_t n_label = 0;
        if (q->label) {
            /* the images that have the label; the index then searches only
             * among them */
            if (w->store) rc = osp__store_ids_with_label(w->store, q->label, &label_ids, &n_label);
            fc.label_ids = label_ids ? label_ids : (const int64_t *)&fc;
            fc.n_label = n_label;
        }
        const int filtered = q->label || q->id_min > 0 || q->id_max < INT64_MAX;
        osp_index_filter filter = {.allow = filter_allow, .ctx = &fc};
        cJSON *hits = NULL;
        if (!rc) rc = osp__worker_search_one(w, q->vector, q->k, q->ef, q->nprobe, filtered ? &filter : NULL,
                                             "path", &hits);
        free(label_ids);
        cJSON *item = rc ? NULL : cJSON_CreateObject();
        if (item) {
            cJSON_AddItemToObject(item, "hits", hits);
            cJSON_AddItemToArray(results, item);
        } else {
            cJSON_Delete(hits);
            if (!rc) rc = osp_error(OSP_ENOMEM, "out of memory");
        }
    }
    pthread_rwlock_unlock(&w->index_lock);
    osp__search_request_free(&sr);
    if (rc) {
        cJSON_Delete(root);
        return osp__http_send_error(req, rc == OSP_EINVAL ? 400 : 500, "%s", osp_last_error());
    }
    return osp__http_send_json(req, 200, root);
}

/* ---- annotate --------------------------------------------------------------------- */

#define NEEDS_NET (OSP__FEATURE_LABELS | OSP__FEATURE_WEB | OSP__FEATURE_EMBEDDING)

/* What one image of a request came to. */
typedef struct outcome {
    int rpc;         /* 0: fine; else a google.rpc code */
    char msg[512];
    int row;         /* in the batch run by the network; -1: none */
    cJSON *colors;   /* IMAGE_PROPERTIES */
} outcome;

static void fail_image(outcome *o, int rpc, const char *what) {
    o->rpc = rpc;
    snprintf(o->msg, sizeof o->msg, "%s", what);
}

/* {"code": rpc, "message": msg} */
static cJSON *rpc_error(int code, const char *msg) {
    cJSON *e = cJSON_CreateObject();
    if (e) {
        cJSON_AddNumberToObject(e, "code", code);
        cJSON_AddStringToObject(e, "message", msg);
    }
    return e;
}

static cJSON *label_annotations(const osp__worker *w, const float *logits, int want, float *scores, int *order) {
    osp__worker_scores(w, logits, scores);
    const int n = osp__worker_top(scores, w->n_classes, want, order);
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr && i < n; i++) {
        cJSON *l = cJSON_CreateObject();
        if (!l) {
            cJSON_Delete(arr);
            return NULL;
        }
        cJSON_AddItemToArray(arr, l);
        cJSON_AddStringToObject(l, "description", w->class_names[order[i]]);
        cJSON_AddNumberToObject(l, "score", (double)scores[order[i]]);
    }
    return arr;
}

static cJSON *float_array(const float *v, int64_t n) {
    cJSON *arr = cJSON_CreateArray();
    for (int64_t i = 0; arr && i < n; i++) {
        cJSON *x = cJSON_CreateNumber((double)v[i]);
        if (!x) {
            cJSON_Delete(arr);
            return NULL;
        }
        cJSON_AddItemToArray(arr, x);
    }
    return arr;
}

/* The name used in messages about image i. */
static const char *image_name(const osp__image_ref *im, int i, char *buf, size_t cap) {
    if (im->uri) snprintf(buf, cap, "%s", im->uri);
    else snprintf(buf, cap, "requests[%d].image", i);
    return buf;
}

enum MHD_Result osp__worker_annotate(osp__worker *w, osp__http_request *req) {
    osp__annotate_request ar;
    int rc = osp__parse_annotate(req->body, req->body_len, w->cfg.max_image_bytes, &ar);
    if (rc) return parse_failed(req, rc);
    unsigned all = 0;
    for (int i = 0; i < ar.n; i++) all |= ar.items[i].features;
    enum MHD_Result result;
    if ((all & OSP__FEATURE_WEB) && !w->index) {
        result = osp__http_send_status_error(req, 400, "FAILED_PRECONDITION",
                                             "WEB_DETECTION needs an index: this worker was started without --index");
        osp__annotate_request_free(&ar);
        return result;
    }
    if ((all & OSP__FEATURE_EMBEDDING) && !w->layer) {
        result = osp__http_send_status_error(req, 400, "FAILED_PRECONDITION",
                                             "EMBEDDING needs a layer: this worker was started without --layer or "
                                             "--catalog");
        osp__annotate_request_free(&ar);
        return result;
    }
    const int n = ar.n;
    const int want_logits = (all & OSP__FEATURE_LABELS) != 0;
    const int want_vectors = (all & (OSP__FEATURE_WEB | OSP__FEATURE_EMBEDDING)) != 0;
    outcome out[OSP__MAX_IMAGES];
    memset(out, 0, sizeof out);
    float *x = osp_alloc((size_t)n * (size_t)w->in_size * sizeof *x);
    float *logits = want_logits ? osp_alloc((size_t)n * (size_t)w->n_classes * sizeof *logits) : NULL;
    float *vectors = want_vectors ? osp_alloc((size_t)n * (size_t)w->dim * sizeof *vectors) : NULL;
    float *scores = want_logits ? osp_alloc((size_t)w->n_classes * sizeof *scores) : NULL;
    int *order = want_logits ? osp_alloc((size_t)(OSP__MAX_RESULTS + 1) * sizeof *order) : NULL;
    rc = x && (!want_logits || (logits && scores && order)) && (!want_vectors || vectors) ? OSP_OK : OSP_ENOMEM;
    /* each image to the network's input (and its colours), on this thread */
    int rows = 0;
    for (int i = 0; !rc && i < n; i++) {
        const osp__annotate_item *it = &ar.items[i];
        outcome *o = &out[i];
        o->row = -1;
        const uint8_t *buf;
        size_t len;
        int owned, rpc, http;
        char name[256];
        image_name(&it->image, i, name, sizeof name);
        if (osp__worker_image_bytes(w, &it->image, &buf, &len, &owned, &rpc, &http)) {
            fail_image(o, rpc, osp_last_error());
            continue;
        }
        if ((it->features & NEEDS_NET) &&
            osp_net_image_input(w->net, buf, len, name, NULL, w->cfg.max_pixels, x + (size_t)rows * (size_t)w->in_size))
            fail_image(o, OSP__RPC_INVALID_ARGUMENT, osp_last_error());
        else if (it->features & NEEDS_NET)
            o->row = rows++;
        if (!o->rpc && (it->features & OSP__FEATURE_PROPERTIES) &&
            osp__dominant_colors(buf, len, name, w->cfg.max_pixels,
                                 it->max_results[2], &o->colors)) {
            fail_image(o, OSP__RPC_INVALID_ARGUMENT, osp_last_error());
            if (o->row == rows - 1) rows--;
            o->row = -1;
        }
        if (owned) osp_free((void *)buf);
    }
    /* one forward pass for the request's images */
    if (!rc && rows) rc = osp__worker_infer(w, x, rows, logits, vectors);
    cJSON *root = rc ? NULL : cJSON_CreateObject();
    cJSON *responses = root ? cJSON_AddArrayToObject(root, "responses") : NULL;
    if (!rc && !responses) rc = OSP_ENOMEM;
    const int locked = !rc && (all & OSP__FEATURE_WEB);
    if (locked) pthread_rwlock_rdlock(&w->index_lock);
    for (int i = 0; !rc && i < n; i++) {
        const osp__annotate_item *it = &ar.items[i];
        outcome *o = &out[i];
        cJSON *r = cJSON_CreateObject();
        if (!r) {
            rc = OSP_ENOMEM;
            break;
        }
        cJSON_AddItemToArray(responses, r);
        if (o->rpc) {
            cJSON_AddItemToObject(r, "error", rpc_error(o->rpc, o->msg));
            continue;
        }
        const float *lg = o->row >= 0 && logits ? logits + (size_t)o->row * (size_t)w->n_classes : NULL;
        const float *vec = o->row >= 0 && vectors ? vectors + (size_t)o->row * (size_t)w->dim : NULL;
        if (it->features & OSP__FEATURE_LABELS) {
            cJSON *labels = label_annotations(w, lg, it->max_results[0], scores, order);
            if (!labels) rc = OSP_ENOMEM;
            else cJSON_AddItemToObject(r, "labelAnnotations", labels);
        }
        if (!rc && (it->features & OSP__FEATURE_WEB)) {
            cJSON *similar = NULL;
            rc = osp__worker_search_one(w, vec, it->max_results[1], 0, 0, NULL, "url", &similar);
            cJSON *web = rc ? NULL : cJSON_CreateObject();
            if (web) {
                cJSON_AddItemToObject(web, "visuallySimilarImages", similar);
                cJSON_AddItemToObject(r, "webDetection", web);
            } else {
                cJSON_Delete(similar);
                if (!rc) rc = OSP_ENOMEM;
            }
        }
        if (!rc && (it->features & OSP__FEATURE_PROPERTIES)) {
            cJSON *props = cJSON_CreateObject();
            if (!props) {
                rc = OSP_ENOMEM;
            } else {
                cJSON_AddItemToObject(props, "dominantColors", o->colors);
                o->colors = NULL;
                cJSON_AddItemToObject(r, "imagePropertiesAnnotation", props);
            }
        }
        if (!rc && (it->features & OSP__FEATURE_EMBEDDING)) {
            cJSON *emb = cJSON_CreateObject(), *v = float_array(vec, w->dim);
            if (!emb || !v) {
                cJSON_Delete(emb);
                cJSON_Delete(v);
                rc = OSP_ENOMEM;
            } else {
                cJSON_AddItemToObject(emb, "vector", v);
                cJSON_AddStringToObject(emb, "layer", w->layer);
                cJSON_AddItemToObject(r, "embedding", emb);
            }
        }
    }
    if (locked) pthread_rwlock_unlock(&w->index_lock);
    for (int i = 0; i < n; i++) cJSON_Delete(out[i].colors);
    osp_free(x);
    osp_free(logits);
    osp_free(vectors);
    osp_free(scores);
    osp_free(order);
    osp__annotate_request_free(&ar);
    if (rc) {
        cJSON_Delete(root);
        return osp__http_send_error(req, 500, "%s", rc == OSP_ENOMEM ? "out of memory" : osp_last_error());
    }
    return osp__http_send_json(req, 200, root);
}

/* ---- writes ------------------------------------------------------------------------- */

enum MHD_Result osp__worker_add(osp__worker *w, osp__http_request *req) {
    osp__add_request ar;
    int rc = osp__parse_add(req->body, req->body_len, w->cfg.max_image_bytes, &ar);
    if (rc) return parse_failed(req, rc);
    const int n = ar.n;
    float *x = osp_alloc((size_t)n * (size_t)w->in_size * sizeof *x);
    float *logits = w->tags ? osp_alloc((size_t)n * (size_t)w->n_classes * sizeof *logits) : NULL;
    float *vectors = osp_alloc((size_t)n * (size_t)w->dim * sizeof *vectors);
    float *scores = w->tags ? osp_alloc((size_t)n * (size_t)w->n_classes * sizeof *scores) : NULL;
    int *order = w->tags ? osp_alloc((size_t)n * (size_t)(w->top_k + 1) * sizeof *order) : NULL;
    osp__store_image images[OSP__MAX_IMAGES];
    char sha[OSP__MAX_IMAGES][65];
    const char *labels[OSP__MAX_IMAGES][64];
    float label_scores[OSP__MAX_IMAGES][64];
    int64_t ids[OSP__MAX_IMAGES];
    memset(images, 0, sizeof images);
    int status = 500;
    char msg[1024] = "out of memory";
    if (!x || !vectors || (w->tags && (!logits || !scores || !order))) goto done;
    /* every image read and checked before anything is written */
    for (int i = 0; i < n; i++) {
        const osp__add_item *it = &ar.items[i];
        const uint8_t *buf;
        size_t len;
        int owned, rpc, http;
        char name[64];
        snprintf(name, sizeof name, "requests[%d].image", i);
        if (osp__worker_image_bytes(w, &it->image, &buf, &len, &owned, &rpc, &http)) {
            status = http;
            snprintf(msg, sizeof msg, "%s: %s", name, osp_last_error());
            goto done;
        }
        osp_image_info info;
        rc = osp_image_probe(buf, len, name, w->cfg.max_pixels, &info);
        if (!rc) rc = osp_net_image_input(w->net, buf, len, name, NULL, w->cfg.max_pixels,
                                          x + (size_t)i * (size_t)w->in_size);
        unsigned char d[SHA256_DIGEST_LENGTH];
        SHA256(buf, len, d);
        for (int b = 0; b < SHA256_DIGEST_LENGTH; b++) snprintf(sha[i] + 2 * b, 3, "%02x", d[b]);
        if (owned) osp_free((void *)buf);
        if (rc) {
            status = rc == OSP_ENOMEM ? 500 : 400;
            snprintf(msg, sizeof msg, "%s", osp_last_error());
            goto done;
        }
        ids[i] = osp_image_id(it->path);
        images[i] = (osp__store_image){.id = ids[i], .path = it->path, .bytes = (int64_t)len, .sha256 = sha[i],
                                       .width = info.width, .height = info.height};
    }
    if ((rc = osp__worker_infer(w, x, n, logits, vectors))) {
        snprintf(msg, sizeof msg, "%s", osp_last_error());
        goto done;
    }
    for (int i = 0; w->tags && i < n; i++) {
        float *sc = scores + (size_t)i * (size_t)w->n_classes;
        int *ord = order + (size_t)i * (size_t)(w->top_k + 1);
        osp__worker_scores(w, logits + (size_t)i * (size_t)w->n_classes, sc);
        int k = osp__worker_top(sc, w->n_classes, w->top_k < 64 ? w->top_k : 64, ord), m = 0;
        for (; m < k && sc[ord[m]] >= w->threshold; m++) {
            labels[i][m] = w->class_names[ord[m]];
            label_scores[i][m] = sc[ord[m]];
        }
        images[i].n_labels = m;
        images[i].labels = labels[i];
        images[i].scores = label_scores[i];
    }
    pthread_mutex_lock(&w->write_lock);
    pthread_rwlock_wrlock(&w->index_lock);
    for (int i = 0; i < n && status == 500; i++) {
        char *have = NULL;
        if (osp__store_paths(w->store, &ids[i], 1, &have) == OSP_OK && have && strcmp(have, ar.items[i].path)) {
            status = 409;
            snprintf(msg, sizeof msg, "requests[%d].path: its id %lld is that of '%.300s' already (a hash collision)",
                     i, (long long)ids[i], have);
        } else if (osp_index_contains(w->index, ids[i])) {
            status = 409;
            snprintf(msg, sizeof msg, "requests[%d].path: '%.300s' is in the index already (id %lld): remove it first",
                     i, ar.items[i].path, (long long)ids[i]);
        }
        free(have);
    }
    if (status == 500) {
        /* the catalogue first, then the index and its file: a crash in
         * between leaves a catalogued image the index lacks, which a retry
         * of the add replaces */
        if ((rc = osp__store_add(w->store, images, n))) {
            snprintf(msg, sizeof msg, "%s", osp_last_error());
        } else if ((rc = osp_index_add(w->index, vectors, ids, n))) {
            snprintf(msg, sizeof msg, "%s", osp_last_error());
            osp__store_remove(w->store, ids, n);
        } else if ((rc = osp_index_save(w->index, w->cfg.index_path))) {
            snprintf(msg, sizeof msg, "the index could not be saved: %s", osp_last_error());
            osp_index_remove(w->index, ids, n, NULL);
            osp__store_remove(w->store, ids, n);
        } else {
            status = 200;
        }
    }
    pthread_rwlock_unlock(&w->index_lock);
    pthread_mutex_unlock(&w->write_lock);
done:;
    cJSON *root = NULL;
    if (status == 200) {
        root = cJSON_CreateObject();
        cJSON *responses = root ? cJSON_AddArrayToObject(root, "responses") : NULL;
        for (int i = 0; responses && i < n; i++) {
            cJSON *r = cJSON_CreateObject();
            if (!r) break;
            cJSON_AddItemToArray(responses, r);
            cJSON_AddItemToObject(r, "id", osp__id_string(ids[i]));
            cJSON_AddStringToObject(r, "path", ar.items[i].path);
        }
    }
    osp_free(x);
    osp_free(logits);
    osp_free(vectors);
    osp_free(scores);
    osp_free(order);
    osp__add_request_free(&ar);
    if (status == 200) return osp__http_send_json(req, 200, root);
    return osp__http_send_error(req, status, "%s", msg);
}

enum MHD_Result osp__worker_remove(osp__worker *w, osp__http_request *req, const char *id_s) {
    const int64_t id = osp__parse_id(id_s);
    if (id < 0) return osp__http_send_error(req, 400, "'%.40s' is not an image id (decimal digits, below 2^63)", id_s);
    pthread_mutex_lock(&w->write_lock);
    pthread_rwlock_wrlock(&w->index_lock);
    char *path = NULL;
    int status = 200, rc = osp__store_paths(w->store, &id, 1, &path);
    char msg[1024] = "";
    const int in_index = osp_index_contains(w->index, id);
    if (rc) {
        status = 500;
        snprintf(msg, sizeof msg, "%s", osp_last_error());
    } else if (!in_index && !path) {
        status = 404;
        snprintf(msg, sizeof msg, "image %lld is not in this worker's index or catalogue", (long long)id);
    }
    /* the index first, then the catalogue: a crash in between leaves a
     * catalogued image no search finds, which a retry removes */
    if (status == 200 && in_index) {
        if ((rc = osp_index_remove(w->index, &id, 1, NULL)) ||
            (rc = osp_index_save(w->index, w->cfg.index_path))) {
            status = 500;
            snprintf(msg, sizeof msg, "the index could not be saved: %s", osp_last_error());
        }
    }
    if (status == 200 && path && (rc = osp__store_remove(w->store, &id, 1))) {
        status = 500;
        snprintf(msg, sizeof msg, "%s", osp_last_error());
    }
    pthread_rwlock_unlock(&w->index_lock);
    pthread_mutex_unlock(&w->write_lock);
    enum MHD_Result r;
    if (status == 200) {
        cJSON *o = cJSON_CreateObject();
        if (o) {
            cJSON_AddItemToObject(o, "id", osp__id_string(id));
            if (path) cJSON_AddStringToObject(o, "path", path);
            else cJSON_AddNullToObject(o, "path");
        }
        r = osp__http_send_json(req, 200, o);
    } else {
        r = osp__http_send_error(req, status, "%s", msg);
    }
    free(path);
    return r;
}
