/* osprey serve, the worker: loading and checking what it serves, routing
 * requests, the bearer token, images from files under the allowed root,
 * inference, /healthz and /metrics (docs/http-api.md). The endpoints that
 * do the work are in worker_api.c. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "osprey/model.h"
#include "osprey/pipeline.h"
#include "worker.h"

void osp_serve_worker_defaults(osp_serve_worker_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->listen = "127.0.0.1:8080";
    cfg->threads = OSP__HTTP_DEFAULT_THREADS;
    cfg->max_connections = OSP__HTTP_DEFAULT_MAX_CONNECTIONS;
    cfg->timeout_s = OSP__HTTP_DEFAULT_TIMEOUT_S;
    cfg->max_body_bytes = OSP__HTTP_DEFAULT_MAX_BODY;
    cfg->max_image_bytes = OSP__MAX_IMAGE_BYTES;
    cfg->drain_s = 30;
}

cJSON *osp__id_string(int64_t id) {
    char s[24];
    snprintf(s, sizeof s, "%lld", (long long)id);
    return cJSON_CreateString(s);
}

/* ---- images ------------------------------------------------------------------- */

/* 1 if path (absolute, resolved) is root or below it. */
static int under_root(const char *root, const char *path) {
    const size_t n = strlen(root);
    if (n == 1 && root[0] == '/') return path[0] == '/';
    return !strncmp(path, root, n) && (path[n] == 0 || path[n] == '/');
}

int osp__worker_image_bytes(osp__worker *w, const osp__image_ref *im, const uint8_t **buf, size_t *len, int *owned,
                            int *rpc, int *http) {
    *buf = NULL;
    *len = 0;
    *owned = 0;
    *rpc = OSP__RPC_INVALID_ARGUMENT;
    *http = 400;
    if (im->content) {
        if (im->content_len > w->cfg.max_image_bytes)
            return osp_error(OSP_ERANGE, "the image is %zu bytes: the limit is %zu", im->content_len,
                             w->cfg.max_image_bytes);
        *buf = im->content;
        *len = im->content_len;
        return OSP_OK;
    }
    const char *uri = im->uri;
    if (!w->allow_root) {
        *rpc = OSP__RPC_PERMISSION_DENIED;
        *http = 403;
        return osp_error(OSP_EINVAL, "imageUri is refused: this worker reads no files (it was started without "
                                     "--allow-root); send the image's content instead");
    }
    /* relative paths are taken from the allowed root */
    char joined[PATH_MAX * 2];
    if (uri[0] == '/') snprintf(joined, sizeof joined, "%s", uri);
    else snprintf(joined, sizeof joined, "%s/%s", w->allow_root, uri);
    char real[PATH_MAX];
    if (!realpath(joined, real)) {
        const int err = errno;
        /* "no such file" only where the folder it would be in is allowed:
         * no probing of what exists elsewhere */
        char dir[PATH_MAX * 2], real_dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", joined);
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir) *slash = 0;
        else snprintf(dir, sizeof dir, "/");
        if ((err == ENOENT || err == ENOTDIR) && realpath(dir, real_dir) && under_root(w->allow_root, real_dir)) {
            *rpc = OSP__RPC_NOT_FOUND;
            *http = 404;
            return osp_error(OSP_ENOENT, "imageUri '%s': no such file", uri);
        }
        *rpc = OSP__RPC_PERMISSION_DENIED;
        *http = 403;
        return osp_error(OSP_EINVAL, "imageUri '%s' is not a file under the allowed root", uri);
    }
    if (!under_root(w->allow_root, real)) {
        *rpc = OSP__RPC_PERMISSION_DENIED;
        *http = 403;
        return osp_error(OSP_EINVAL, "imageUri '%s' is not a file under the allowed root", uri);
    }
    /* opened without following a last link, without blocking on a FIFO;
     * then checked again through the descriptor, so that a link swapped
     * in between cannot lead out of the root */
    int fd = open(real, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        *rpc = errno == ENOENT ? OSP__RPC_NOT_FOUND : OSP__RPC_PERMISSION_DENIED;
        *http = errno == ENOENT ? 404 : 403;
        return osp_error(OSP_EIO, "imageUri '%s': cannot open: %s", uri, strerror(errno));
    }
    char fd_link[64], again[PATH_MAX];
    snprintf(fd_link, sizeof fd_link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(fd_link, again, sizeof again - 1);
    struct stat st;
    int rc = OSP_OK;
    if (n <= 0 || (again[n] = 0, !under_root(w->allow_root, again))) {
        *rpc = OSP__RPC_PERMISSION_DENIED;
        *http = 403;
        rc = osp_error(OSP_EINVAL, "imageUri '%s' is not a file under the allowed root", uri);
    } else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = osp_error(OSP_EINVAL, "imageUri '%s' is not a regular file", uri);
    } else if ((uint64_t)st.st_size > w->cfg.max_image_bytes) {
        rc = osp_error(OSP_ERANGE, "imageUri '%s' is %lld bytes: the limit is %zu", uri, (long long)st.st_size,
                       w->cfg.max_image_bytes);
    } else if (st.st_size == 0) {
        rc = osp_error(OSP_EFORMAT, "imageUri '%s' is an empty file", uri);
    }
    uint8_t *data = NULL;
    size_t got = 0;
    if (!rc && !(data = osp_alloc((size_t)st.st_size))) rc = OSP_ENOMEM;
    while (!rc && got < (size_t)st.st_size) {
        ssize_t r = read(fd, data + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            *rpc = OSP__RPC_INTERNAL;
            *http = 500;
            rc = osp_error(OSP_EIO, "imageUri '%s': read failed: %s", uri, r < 0 ? strerror(errno) : "file shrank");
        }
        else got += (size_t)r;
    }
    close(fd);
    if (rc) {
        osp_free(data);
        return rc;
    }
    *buf = data;
    *len = got;
    *owned = 1;
    return OSP_OK;
}

/* ---- inference ------------------------------------------------------------------ */

void osp__worker_scores(const osp__worker *w, const float *logits, float *out) {
    osp_scores_from_logits(logits, w->n_classes, w->sigmoid, out);
}

int osp__worker_top(const float *p, int64_t k, int want, int *order) { return osp_top_k(p, k, want, order); }

double osp__worker_score(osp_index_metric metric, float d) {
    switch (metric) {
    case OSP_INDEX_METRIC_IP: return -(double)d;
    case OSP_INDEX_METRIC_COSINE: return 1.0 - (double)d;
    default: return 1.0 / (1.0 + (double)d);
    }
}

int osp__worker_infer(osp__worker *w, const float *x, int n, float *logits, float *vectors) {
    if (n <= 0) return OSP_OK;
    float *feat = NULL;
    if (vectors && !(feat = osp_alloc((size_t)n * (size_t)w->feat_size * sizeof *feat))) return OSP_ENOMEM;
    const char *layers[2];
    float *outs[2];
    int n_layers = 0;
    if (logits) {
        layers[n_layers] = OSP_LAYER_LOGITS;
        outs[n_layers++] = logits;
    }
    if (vectors) {
        layers[n_layers] = w->layer;
        outs[n_layers++] = feat;
    }
    osp__metrics_gauge_add(w->metrics, w->gauge_waiting, 1);
    pthread_mutex_lock(&w->infer_lock);
    int rc = osp_net_run(w->net, x, n, n, layers, n_layers, outs);
    pthread_mutex_unlock(&w->infer_lock);
    osp__metrics_gauge_add(w->metrics, w->gauge_waiting, -1);
    /* pooled over the plane, normalised: exactly the pipeline's vectors */
    for (int i = 0; !rc && vectors && i < n; i++)
        osp_embedding_pool(feat + (size_t)i * (size_t)w->feat_size, &w->embed_shape, w->normalize,
                           vectors + (size_t)i * (size_t)w->dim);
    osp_free(feat);
    return rc;
}

/* ---- health and metrics ------------------------------------------------------------ */

static int64_t image_count(osp__worker *w) {
    int64_t n = 0;
    if (w->index) n = osp_index_count(w->index);
    else if (w->store) osp__store_count(w->store, &n);
    return n;
}

static enum MHD_Result healthz(osp__worker *w, osp__http_request *req) {
    cJSON *o = cJSON_CreateObject();
    const char *shard = w->store ? osp__store_setting(w->store, "shard") : NULL;
    if (o) {
        pthread_rwlock_rdlock(&w->index_lock);
        const int64_t n = image_count(w);
        pthread_rwlock_unlock(&w->index_lock);
        cJSON_AddStringToObject(o, "status", osp_serve_stopping() ? "stopping" : "ok");
        cJSON_AddStringToObject(o, "model", w->model_field);
        if (shard) cJSON_AddStringToObject(o, "shard", shard);
        else cJSON_AddNullToObject(o, "shard");
        cJSON_AddNumberToObject(o, "images", (double)n);
        cJSON_AddNumberToObject(o, "dim", (double)(w->index ? w->index_dim : w->layer ? w->dim : 0));
        if (w->index) {
            cJSON_AddStringToObject(o, "metric", osp_index_metric_name(w->metric));
        }
        if (w->layer) cJSON_AddStringToObject(o, "layer", w->layer);
        cJSON_AddBoolToObject(o, "writable", w->has_token);
    }
    return osp__http_send_json(req, osp_serve_stopping() ? 503 : 200, o);
}

static enum MHD_Result metrics(osp__worker *w, osp__http_request *req) {
    if (w->index) {
        pthread_rwlock_rdlock(&w->index_lock);
        osp__metrics_gauge_set(w->metrics, w->gauge_images, (double)osp_index_count(w->index));
        pthread_rwlock_unlock(&w->index_lock);
    }
    size_t len;
    char *text = osp__metrics_render(w->metrics, &len);
    if (!text) return osp__http_send_error(req, 500, "out of memory");
    enum MHD_Result r = osp__http_send_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
    return r;
}

/* ---- the token ------------------------------------------------------------------------ */

/* 1 if the request carries "Authorization: Bearer <the token>". The
 * digests are compared in constant time, which also hides the length. */
static int authorized(const osp__worker *w, const osp__http_request *req) {
    if (!w->has_token) return 0;
    const char *h = osp__http_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7)) return 0;
    h += 7;
    while (*h == ' ') h++;
    size_t n = strlen(h);
    while (n && isspace((unsigned char)h[n - 1])) n--;
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)h, n, d);
    return CRYPTO_memcmp(d, w->token_digest, sizeof d) == 0;
}

static enum MHD_Result refuse_write(osp__worker *w, osp__http_request *req) {
    if (!w->has_token)
        return osp__http_send_error(req, 401, "this worker takes no writes (it was started without --token-file)");
    return osp__http_send_error(req, 401, "writes need the header 'Authorization: Bearer <token>' with the "
                                          "worker's token");
}

/* ---- routing ---------------------------------------------------------------------------- */

/* The route of a path, for metrics. */
static const char *route_of(void *ctx, const char *method, const char *p) {
    (void)ctx;
    (void)method;
    if (!strcmp(p, "/v1/images:annotate")) return "annotate";
    if (!strcmp(p, "/v1/vectors:search")) return "search";
    if (!strcmp(p, "/v1/images")) return "add";
    if (!strncmp(p, "/v1/images/", 11)) return "remove";
    if (!strcmp(p, "/healthz")) return "healthz";
    if (!strcmp(p, "/metrics")) return "metrics";
    return NULL;
}

static enum MHD_Result handle(void *ctx, osp__http_request *req) {
    osp__worker *w = ctx;
    const char *p = req->path, *m = req->method;
    if (!strcmp(p, "/v1/images:annotate")) {
        req->route = "annotate";
        if (strcmp(m, "POST")) return osp__http_send_method_not_allowed(req, "POST");
        return osp__worker_annotate(w, req);
    }
    if (!strcmp(p, "/v1/vectors:search")) {
        req->route = "search";
        if (strcmp(m, "POST")) return osp__http_send_method_not_allowed(req, "POST");
        return osp__worker_search(w, req);
    }
    if (!strcmp(p, "/v1/images")) {
        req->route = "add";
        if (strcmp(m, "POST")) return osp__http_send_method_not_allowed(req, "POST");
        if (!authorized(w, req)) return refuse_write(w, req);
        return osp__worker_add(w, req);
    }
    if (!strncmp(p, "/v1/images/", 11) && p[11] && !strchr(p + 11, '/')) {
        req->route = "remove";
        if (strcmp(m, "DELETE")) return osp__http_send_method_not_allowed(req, "DELETE");
        if (!authorized(w, req)) return refuse_write(w, req);
        return osp__worker_remove(w, req, p + 11);
    }
    if (!strcmp(p, "/healthz")) {
        req->route = "healthz";
        if (strcmp(m, "GET")) return osp__http_send_method_not_allowed(req, "GET");
        return healthz(w, req);
    }
    if (!strcmp(p, "/metrics")) {
        req->route = "metrics";
        if (strcmp(m, "GET")) return osp__http_send_method_not_allowed(req, "GET");
        return metrics(w, req);
    }
    return osp__http_send_error(req, 404, "no such endpoint: %s %.200s (see docs/http-api.md)", m, p);
}

/* ---- setting up ------------------------------------------------------------------------------ */

static void model_name_of(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(out, cap, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = 0;
}

static int read_token(osp__worker *w, const char *path) {
    void *buf = NULL;
    size_t len = 0;
    int rc = osp_file_read_all(path, 4096, &buf, &len);
    if (rc == OSP_ERANGE) return osp_error(OSP_EINVAL, "%s: a token file of more than 4096 bytes", path);
    if (rc) return rc;
    const char *s = buf;
    size_t a = 0, b = len;
    while (a < b && isspace((unsigned char)s[a])) a++;
    while (b > a && isspace((unsigned char)s[b - 1])) b--;
    rc = OSP_OK;
    if (b - a < 16) rc = osp_error(OSP_EINVAL, "%s: the token is shorter than 16 characters: too easy to guess", path);
    for (size_t i = a; !rc && i < b; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            rc = osp_error(OSP_EINVAL, "%s: the token must be printable ASCII without spaces", path);
    if (!rc) {
        SHA256((const unsigned char *)s + a, b - a, w->token_digest);
        w->has_token = 1;
    }
    memset(buf, 0, len);
    osp_free(buf);
    return rc;
}

static int setting_int(osp__store *s, const char *key, long long def, long long *out) {
    const char *v = osp__store_setting(s, key);
    if (!v || !*v) {
        *out = def;
        return OSP_OK;
    }
    char *end;
    errno = 0;
    *out = strtoll(v, &end, 10);
    if (errno || *end) return osp_error(OSP_EFORMAT, "catalog.db: setting %s = '%s' is not a number", key, v);
    return OSP_OK;
}

static int setup(osp__worker *w) {
    const osp_serve_worker_config *c = &w->cfg;
    if (!c->model_path) return osp_error(OSP_EINVAL, "no model: give --model");
    if (c->index_path && !c->catalog_dir)
        return osp_error(OSP_EINVAL, "--index needs --catalog: the output folder the index was built from (it names "
                                     "the images)");
    if (c->token_file && !c->index_path)
        return osp_error(OSP_EINVAL, "--token-file needs --index and --catalog: writes go to them");
    int rc = osp_model_load(c->model_path, &w->net);
    if (rc) return rc;
    if ((rc = osp_model_content_hash(w->net, w->hash))) return rc;
    char name[96];
    model_name_of(c->model_path, name, sizeof name);
    snprintf(w->model_field, sizeof w->model_field, "%s@%.16s", name, w->hash);
    w->in_size = osp_shape_numel(&w->net->input);
    osp_transform t;
    if ((rc = osp_net_transform(w->net, &t))) return rc;
    if ((rc = osp_net_find_layer(w->net, OSP_LAYER_LOGITS, NULL, &w->n_classes))) return rc;
    if (w->n_classes <= 0 || w->n_classes > (1 << 24))
        return osp_error(OSP_EFORMAT, "%s: %lld classes", c->model_path, (long long)w->n_classes);
    if (!(w->class_names = calloc((size_t)w->n_classes, sizeof *w->class_names)))
        return osp_error(OSP_ENOMEM, "out of memory");
    for (int64_t k = 0; k < w->n_classes; k++) {
        char num[24];
        snprintf(num, sizeof num, "%lld", (long long)k);
        const char *label = w->net->labels && k < w->net->n_classes ? w->net->labels[k] : num;
        if (!(w->class_names[k] = strdup(label))) return osp_error(OSP_ENOMEM, "out of memory");
    }
    w->top_k = 5;
    w->tags = 1;
    const char *layer = c->layer;
    osp_pool pool = OSP_POOL_DEFAULT;
    w->normalize = c->normalize;
    if (c->catalog_dir) {
        if ((rc = osp__store_open(c->catalog_dir, c->token_file != NULL, &w->store))) return rc;
        const char *want = osp__store_setting(w->store, "model_sha256");
        if (!want || strcmp(want, w->hash))
            return osp_error(OSP_EINVAL,
                             "%s is not the model %s was made with (content hash %.16s..., the folder's %.16s...): "
                             "its vectors would not be comparable",
                             c->model_path, c->catalog_dir, w->hash, want ? want : "(none)");
        const char *cl = osp__store_setting(w->store, "layer");
        if (cl && *cl) {
            if (layer && strcmp(layer, cl))
                return osp_error(OSP_EINVAL, "--layer %s: %s holds vectors of layer '%s'", layer, c->catalog_dir, cl);
            layer = cl;
        }
        const char *norm = osp__store_setting(w->store, "normalize");
        w->normalize = norm && !strcmp(norm, "1");
        /* a token layer's pooling (embed --pool); none in older folders */
        if ((rc = osp_pool_parse(osp__store_setting(w->store, "pool"), &pool))) return rc;
        const char *sig = osp__store_setting(w->store, "sigmoid");
        w->sigmoid = sig && !strcmp(sig, "1");
        const char *tags = osp__store_setting(w->store, "tags");
        w->tags = !tags || !strcmp(tags, "1");
        long long top_k;
        if ((rc = setting_int(w->store, "top_k", 5, &top_k))) return rc;
        w->top_k = top_k < 0 ? 0 : top_k > 1000 ? 1000 : (int)top_k;
        const char *th = osp__store_setting(w->store, "threshold");
        w->threshold = th ? strtof(th, NULL) : 0;
    }
    if (layer) {
        if ((rc = osp_net_embed_shape(w->net, layer, pool, &w->embed_shape))) return rc;
        w->feat_size = w->embed_shape.size;
        w->dim = w->embed_shape.dim;
        if (w->dim <= 0) return osp_error(OSP_ESHAPE, "layer '%s' gives no values", layer);
        if (!(w->layer = strdup(layer))) return osp_error(OSP_ENOMEM, "out of memory");
    }
    if (w->store) {
        long long dim;
        if ((rc = setting_int(w->store, "dim", 0, &dim))) return rc;
        if (c->index_path && dim <= 0)
            return osp_error(OSP_EINVAL, "%s holds no vectors (a run of 'osprey tag' without --embed): nothing to "
                                         "search", c->catalog_dir);
        if (w->layer && dim > 0 && dim != w->dim)
            return osp_error(OSP_EINVAL, "layer '%s' gives %lld values, but %s holds vectors of %lld", w->layer,
                             (long long)w->dim, c->catalog_dir, dim);
    }
    if (c->index_path) {
        if ((rc = osp_index_load(c->index_path, &w->index))) return rc;
        osp_index_info info;
        osp_index_info_get(w->index, &info);
        if (info.params.type == OSP_INDEX_BINARY)
            return osp_error(OSP_EINVAL, "%s is a binary index: a worker searches float vectors", c->index_path);
        w->metric = info.params.metric;
        w->index_dim = info.params.dim;
        if (!w->layer)
            return osp_error(OSP_EINVAL, "%s records no embedding layer: WEB_DETECTION could not embed images",
                             c->catalog_dir);
        if (w->index_dim != w->dim)
            return osp_error(OSP_EINVAL, "%s has vectors of %d values, %s of %lld: build the index from this folder",
                             c->index_path, w->index_dim, c->catalog_dir, (long long)w->dim);
        /* writes rewrite the index file: it must be writable, and a mapped
         * file is copied on the first change anyway */
        if (c->token_file && access(c->index_path, W_OK) != 0)
            return osp_error(OSP_EINVAL, "%s: cannot write it (%s), and writes go there", c->index_path,
                             strerror(errno));
    }
    if (c->allow_root) {
        char real[PATH_MAX];
        struct stat st;
        if (!realpath(c->allow_root, real) || stat(real, &st) != 0 || !S_ISDIR(st.st_mode))
            return osp_error(OSP_EINVAL, "--allow-root %s: not a folder", c->allow_root);
        if (!(w->allow_root = strdup(real))) return osp_error(OSP_ENOMEM, "out of memory");
    }
    if (c->token_file && (rc = read_token(w, c->token_file))) return rc;
    static const char *const routes[] = {"annotate", "search", "add", "remove", "healthz", "metrics"};
    if (!(w->metrics = osp__metrics_new("osprey_worker", routes, 6))) return OSP_ENOMEM;
    w->gauge_waiting = osp__metrics_gauge(w->metrics, "inference_queue",
                                          "Requests waiting for or holding the network (it runs one batch at a time).");
    w->gauge_images = osp__metrics_gauge(w->metrics, "index_images", "Images in this worker's index.");
    return OSP_OK;
}

static void teardown(osp__worker *w) {
    osp__metrics_free(w->metrics);
    osp_index_free(w->index);
    osp__store_close(w->store);
    for (int64_t k = 0; w->class_names && k < w->n_classes; k++) free(w->class_names[k]);
    free(w->class_names);
    free(w->layer);
    free(w->allow_root);
    osp_net_free(w->net);
    OPENSSL_cleanse(w->token_digest, sizeof w->token_digest);
}

int osp_serve_worker_run(const osp_serve_worker_config *cfg) {
    osp__worker *w = calloc(1, sizeof *w);
    if (!w) return osp_error(OSP_ENOMEM, "out of memory");
    w->cfg = *cfg;
    osp_serve_worker_config def;
    osp_serve_worker_defaults(&def);
    if (!w->cfg.listen) w->cfg.listen = def.listen;
    if (w->cfg.threads <= 0) w->cfg.threads = def.threads;
    if (w->cfg.max_connections <= 0) w->cfg.max_connections = def.max_connections;
    if (w->cfg.timeout_s <= 0) w->cfg.timeout_s = def.timeout_s;
    if (!w->cfg.max_body_bytes) w->cfg.max_body_bytes = def.max_body_bytes;
    if (!w->cfg.max_image_bytes) w->cfg.max_image_bytes = def.max_image_bytes;
    if (!(w->cfg.drain_s > 0)) w->cfg.drain_s = def.drain_s;
    pthread_mutex_init(&w->write_lock, NULL);
    pthread_mutex_init(&w->infer_lock, NULL);
    /* writers first: a steady stream of searches must not starve a write */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&w->index_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    w->gauge_waiting = w->gauge_images = -1;
    int rc = setup(w);
    osp__http_server *server = NULL;
    if (!rc) {
        osp__http_config hc = {.listen = w->cfg.listen,
                               .threads = w->cfg.threads,
                               .max_connections = w->cfg.max_connections,
                               .timeout_s = w->cfg.timeout_s,
                               .max_body = w->cfg.max_body_bytes,
                               .handler = handle,
                               .ctx = w,
                               .metrics = w->metrics,
                               .route = route_of};
        rc = osp__http_start(&hc, &server);
    }
    if (!rc) {
        if (w->cfg.on_ready) w->cfg.on_ready(osp__http_address(server), w->cfg.user);
        osp__http_run(server, w->cfg.drain_s);
    }
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", osp_last_error());
    teardown(w);
    pthread_rwlock_destroy(&w->index_lock);
    pthread_mutex_destroy(&w->infer_lock);
    pthread_mutex_destroy(&w->write_lock);
    free(w);
    if (rc) osp_error(rc, "%s", msg);
    return rc;
}
