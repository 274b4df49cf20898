/* A batch run: decoding, inference and writing overlap on threads.
 *
 * Batches move through a ring of RING slots in order. The calling thread
 * fills a free slot with the next inputs (leaving out those already in the
 * catalogue and other shards' ones), decoding threads turn each input into
 * a network input, the calling thread runs the network on a slot once all
 * of it is decoded, and the writing thread appends the slot's rows and
 * commits them (outputs.c, then one catalogue transaction), then frees the
 * slot. Memory is the ring's, whatever the corpus. */
#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog.h"
#include "lock.h"
#include "osprey/hash.h"
#include "outputs.h"
#include "pipeline_impl.h"

#define RING 3
#define MAX_BATCH 4096
#define NAMED_CHANGES 3
#define MAX_VARIANTS 16

enum { SLOT_FREE, SLOT_DECODING, SLOT_INFERRED };
enum { ERR_READ, ERR_DECODE, ERR_TOO_LARGE, ERR_EMPTY };

const char *osp_pipeline_error_code(int kind) {
    static const char *const names[OSP_PIPELINE_ERROR_KINDS] = {"read", "decode", "too_large", "empty"};
    return kind >= 0 && kind < OSP_PIPELINE_ERROR_KINDS ? names[kind] : "unknown";
}

osp_pipeline_options osp_pipeline_defaults(void) {
    osp_pipeline_options o;
    memset(&o, 0, sizeof o);
    o.tags = 1;
    o.top_k = 5;
    o.dtype = OSP_DTYPE_F32;
    o.batch = 32;
    o.shards = 1;
    o.total = -1;
    o.lock_timeout = OSP_PIPELINE_LOCK_TIMEOUT;
    return o;
}

typedef struct item {
    char *path;
    int64_t id, bytes;
    char sha[65];
    int width, height;
    int err; /* -1, or ERR_* */
    char msg[320];
} item;

typedef struct slot {
    int state;
    int n, next, done;
    item *items;
    float *x[MAX_VARIANTS], *logits[MAX_VARIANTS], *feat;
} slot;

/* One network at one input size: a model of the ensemble at one of the
 * scales. Tags average the scores of every variant; vectors come from the
 * first. */
typedef struct variant {
    osp_net *net;
    int owned; /* a rescaled copy, freed with the engine */
    int64_t in_size;
} variant;

typedef struct engine {
    pthread_mutex_t mu;
    pthread_cond_t work, decoded, inferred, freed;
    slot slots[RING];
    int64_t seq_inferred, seq_written; /* slots inferred / written so far */
    int finishing, failed;
    char failure[1024];

    const osp_pipeline_options *opt;
    variant var[MAX_VARIANTS];
    osp_transform transforms[MAX_VARIANTS];
    int n_var;
    int64_t n_classes, feat_size, dim; /* feat: the layer per sample; dim: the vector */
    int64_t row_bytes, out_dim;        /* a row of vectors.npy: bytes, and elements */
    osp_dtype out_dtype;               /* of vectors.npy: float32, float16, or uint8 codes */
    osp_embed_shape embed_shape;                /* how the layer becomes the vector */
    char model_field[160];
    char **class_names; /* labels or numbers */
    float *class_threshold; /* a label is given from this score on */

    osp_catalog *cat;
    int lock_fd; /* the folder's writers' lock */
    osp__outputs out;
    int64_t run;
    osp_pipeline_summary sum;
    double started;
    /* the writer's scratch */
    char *tags;
    size_t tags_len, tags_cap;
    void *vecs;
    int64_t *ids;
    float *vec, *probs, *one;
    int *order;
} engine;

static void fail(engine *e, int rc) {
    pthread_mutex_lock(&e->mu);
    if (!e->failed) {
        e->failed = rc ? rc : OSP_EIO;
        snprintf(e->failure, sizeof e->failure, "%s", osp_last_error());
    }
    pthread_cond_broadcast(&e->work);
    pthread_cond_broadcast(&e->decoded);
    pthread_cond_broadcast(&e->inferred);
    pthread_cond_broadcast(&e->freed);
    pthread_mutex_unlock(&e->mu);
}

/* ---- decoding ------------------------------------------------------------- */

static void hex_of(const unsigned char *d, unsigned n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = 0;
}

void osp__sha256_hex(const void *buf, size_t len, char out[65]) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_Digest(buf, len, d, &n, EVP_sha256(), NULL);
    hex_of(d, n, out);
}

static void item_error(item *it, int kind, const char *msg) {
    it->err = kind;
    snprintf(it->msg, sizeof it->msg, "%s", msg);
}

/* Reads, hashes and decodes one input into its row of x. Bad images
 * become error rows; nothing here stops the run. */
static void clear_inputs(engine *e, float *const *x) {
    for (int v = 0; v < e->n_var; v++) memset(x[v], 0, (size_t)e->var[v].in_size * sizeof(float));
}

static void decode_item(engine *e, item *it, float *const *x) {
    const int64_t max_pixels = e->opt->max_pixels > 0 ? e->opt->max_pixels : OSP_IMAGE_MAX_PIXELS;
    it->err = -1;
    it->bytes = -1;
    void *buf = NULL;
    size_t len = 0;
    int rc = osp_file_read_all(it->path, osp_image_max_file_bytes(max_pixels), &buf, &len);
    if (rc) {
        item_error(it, rc == OSP_ERANGE ? ERR_TOO_LARGE : ERR_READ, osp_last_error());
        clear_inputs(e, x);
        return;
    }
    it->bytes = (int64_t)len;
    osp__sha256_hex(buf, len, it->sha);
    osp_image_info info;
    if (len == 0) {
        item_error(it, ERR_EMPTY, "empty file");
    } else if ((rc = osp_image_probe(buf, len, it->path, max_pixels, &info))) {
        item_error(it, rc == OSP_ERANGE ? ERR_TOO_LARGE : ERR_DECODE, osp_last_error());
    } else {
        it->width = info.width;
        it->height = info.height;
        /* decoded once, rendered at every variant's size and normalised as
         * its network wants */
        /* Vectors come from the first variant and must be what a lone
         * decode at its size gives ('osprey similar' embeds a query so): a
         * decode shared with a larger scale is shrunk less on load. */
        const int alone = e->dim > 0 && e->n_var > 1;
        rc = osp_image_to_samples(buf, len, it->path, e->transforms, alone ? 1 : e->n_var, max_pixels, x);
        if (!rc && alone)
            rc = osp_image_to_samples(buf, len, it->path, e->transforms + 1, e->n_var - 1, max_pixels, x + 1);
        if (rc) item_error(it, rc == OSP_ERANGE ? ERR_TOO_LARGE : ERR_DECODE, osp_last_error());
        for (int v = 0; !rc && v < e->n_var; v++) osp_net_normalize(e->var[v].net, x[v], 1);
    }
    if (it->err >= 0) clear_inputs(e, x);
    osp_free(buf);
}

static void *decoder(void *arg) {
    engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        slot *s = NULL;
        /* the oldest slot with work left, so that batches finish in order */
        for (int64_t q = e->seq_inferred; q < e->seq_inferred + RING && !s; q++) {
            slot *c = &e->slots[q % RING];
            if (c->state == SLOT_DECODING && c->next < c->n) s = c;
        }
        if (e->failed || (!s && e->finishing)) break;
        if (!s) {
            pthread_cond_wait(&e->work, &e->mu);
            continue;
        }
        const int i = s->next++;
        pthread_mutex_unlock(&e->mu);
        float *x[MAX_VARIANTS];
        for (int v = 0; v < e->n_var; v++) x[v] = s->x[v] + (int64_t)i * e->var[v].in_size;
        decode_item(e, &s->items[i], x);
        pthread_mutex_lock(&e->mu);
        if (++s->done == s->n) pthread_cond_broadcast(&e->decoded);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* ---- writing ------------------------------------------------------------ */

static int grow_tags(engine *e, size_t more) {
    if (e->tags_len + more + 1 <= e->tags_cap) return OSP_OK;
    size_t cap = (e->tags_len + more + 1) * 2;
    char *p = realloc(e->tags, cap);
    if (!p) return osp_error(OSP_ENOMEM, "out of memory");
    e->tags = p;
    e->tags_cap = cap;
    return OSP_OK;
}

static int put(engine *e, const char *s, size_t n) {
    int rc = grow_tags(e, n);
    if (rc) return rc;
    memcpy(e->tags + e->tags_len, s, n);
    e->tags_len += n;
    return OSP_OK;
}

static int putf(engine *e, const char *fmt, ...) OSP_PRINTF(2, 3);
static int putf(engine *e, const char *fmt, ...) {
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return put(e, buf, (size_t)(n < (int)sizeof buf ? n : (int)sizeof buf - 1));
}

/* A JSON string: quotes, backslashes and control characters escaped. */
static int put_string(engine *e, const char *s) {
    int rc = put(e, "\"", 1);
    for (; !rc && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            rc = put(e, esc, 2);
        } else if (c < 0x20) {
            rc = putf(e, "\\u%04x", c);
        } else {
            rc = put(e, s, 1);
        }
    }
    return rc ? rc : put(e, "\"", 1);
}

/* Item i's scores: averaged over the variants (models and scales). */
static void item_scores(engine *e, const slot *s, int i) {
    const int64_t k = e->n_classes;
    if (e->n_var == 1) {
        osp_scores_from_logits(s->logits[0] + (int64_t)i * k, k, e->opt->sigmoid, e->probs);
        return;
    }
    for (int64_t j = 0; j < k; j++) e->probs[j] = 0;
    for (int v = 0; v < e->n_var; v++) {
        osp_scores_from_logits(s->logits[v] + (int64_t)i * k, k, e->opt->sigmoid, e->one);
        for (int64_t j = 0; j < k; j++) e->probs[j] += e->one[j] / (float)e->n_var;
    }
}

/* Item i's labels, best first, into e->order: the top k whose scores reach
 * their class's threshold; returns how many. */
static int kept_labels(engine *e, const slot *s, int i) {
    item_scores(e, s, i);
    const int n = osp_top_k(e->probs, e->n_classes, e->opt->top_k, e->order);
    int kept = 0;
    for (int r = 0; r < n; r++)
        if (e->probs[e->order[r]] >= e->class_threshold[e->order[r]]) e->order[kept++] = e->order[r];
    return kept;
}

static int tag_line(engine *e, const slot *s, int i, int *n_labels) {
    const item *it = &s->items[i];
    int rc = putf(e, "{\"id\": %lld, \"path\": ", (long long)it->id);
    if (!rc) rc = put_string(e, it->path);
    *n_labels = 0;
    if (!rc && it->err >= 0) {
        rc = put(e, ", \"error\": {\"code\": ", 20);
        if (!rc) rc = put_string(e, osp_pipeline_error_code(it->err));
        if (!rc) rc = put(e, ", \"message\": ", 13);
        if (!rc) rc = put_string(e, it->msg);
        if (!rc) rc = put(e, "}}\n", 3);
        return rc;
    }
    const int n = kept_labels(e, s, i);
    if (!rc) rc = put(e, ", \"labels\": [", 13);
    int written = 0;
    for (int r = 0; !rc && r < n; r++) {
        const float p = e->probs[e->order[r]];
        if (written++) rc = put(e, ", ", 2);
        if (!rc) rc = put(e, "{\"description\": ", 16);
        if (!rc) rc = put_string(e, e->class_names[e->order[r]]);
        if (!rc) rc = putf(e, ", \"score\": %.6g}", (double)p);
    }
    *n_labels = written;
    if (!rc) rc = put(e, "], \"model\": ", 12);
    if (!rc) rc = put_string(e, e->model_field);
    if (!rc) rc = put(e, "}\n", 2);
    return rc;
}

static int write_slot(engine *e, slot *s) {
    const osp_pipeline_options *opt = e->opt;
    const int embed = e->dim > 0;
    e->tags_len = 0;
    int64_t rows = 0;
    int rc = OSP_OK;
    /* The files first, past the committed ends... */
    for (int i = 0; !rc && i < s->n; i++) {
        const item *it = &s->items[i];
        int n_labels;
        if (opt->tags) rc = tag_line(e, s, i, &n_labels);
        if (rc || !embed || it->err >= 0) continue;
        osp_embedding_pool(s->feat + (int64_t)i * e->feat_size, &e->embed_shape, opt->normalize, e->vec);
        char *dst = (char *)e->vecs + (size_t)rows * (size_t)e->row_bytes;
        if (opt->hash) rc = osp_hash_codes(opt->hash, e->vec, 1, (uint8_t *)dst);
        else if (opt->dtype == OSP_DTYPE_F16) osp_half_from_float(e->vec, (uint16_t *)dst, e->dim);
        else memcpy(dst, e->vec, (size_t)e->dim * sizeof(float));
        if (rc) return osp_error(rc, "%s: %s", it->path, osp_last_error());
        e->ids[rows++] = it->id;
    }
    if (!rc) rc = osp__outputs_write(&e->out, e->tags, e->tags_len, e->vecs, e->ids, rows);
    if (rc) return rc;
    /* ...then one transaction makes them count. */
    if ((rc = osp__catalog_begin(e->cat))) return rc;
    int64_t row = e->out.rows;
    for (int i = 0; !rc && i < s->n; i++) {
        const item *it = &s->items[i];
        osp__image_row r = {.id = it->id, .path = it->path, .bytes = it->bytes,
                            .sha256 = it->bytes >= 0 ? it->sha : NULL, .width = it->width,
                            .height = it->height, .row = -1, .run = e->run};
        if (it->err >= 0) {
            r.error_code = osp_pipeline_error_code(it->err);
            r.error = it->msg;
        } else if (embed) {
            r.row = row++;
        }
        rc = osp__catalog_add_image(e->cat, &r);
        if (!rc && opt->tags && it->err < 0) {
            const int n = kept_labels(e, s, i);
            for (int k = 0; !rc && k < n; k++)
                rc = osp__catalog_add_label(e->cat, it->id, k, e->class_names[e->order[k]],
                                            e->probs[e->order[k]]);
        }
    }
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", osp_last_error());
        osp__catalog_rollback(e->cat);
        return osp_error(rc, "%s", msg);
    }
    const int64_t tags_end = e->out.tags_bytes + (int64_t)e->tags_len, rows_end = e->out.rows + rows;
    if ((rc = osp__catalog_commit(e->cat, tags_end, rows_end))) return rc;
    if ((rc = osp__outputs_committed(&e->out, tags_end, rows_end))) return rc;
    for (int i = 0; i < s->n; i++) {
        e->sum.images++;
        if (s->items[i].err >= 0) {
            e->sum.errors++;
            e->sum.error_kinds[s->items[i].err]++;
        }
    }
    e->sum.total_rows = rows_end;
    if (opt->on_progress) {
        osp_pipeline_progress p = {.done = e->sum.images, .errors = e->sum.errors,
                                   .skipped = e->sum.skipped, .total = opt->total,
                                   .elapsed_s = osp_now() - e->started};
        p.images_per_s = p.elapsed_s > 0 ? (double)p.done / p.elapsed_s : 0;
        opt->on_progress(&p, opt->user);
    }
    return OSP_OK;
}

static void *writer(void *arg) {
    engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        slot *s = &e->slots[e->seq_written % RING];
        if (e->failed) break;
        if (e->seq_written < e->seq_inferred && s->state == SLOT_INFERRED) {
            pthread_mutex_unlock(&e->mu);
            int rc = write_slot(e, s);
            if (rc) fail(e, rc);
            pthread_mutex_lock(&e->mu);
            for (int i = 0; i < s->n; i++) {
                free(s->items[i].path);
                s->items[i].path = NULL;
            }
            s->state = SLOT_FREE;
            e->seq_written++;
            pthread_cond_broadcast(&e->freed);
            continue;
        }
        if (e->finishing && e->seq_written == e->seq_inferred) break;
        pthread_cond_wait(&e->inferred, &e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* ---- filling and inference (the calling thread) ----------------------------- */

/* Whether path is done already (or in a batch on its way): then it is
 * left out, so that every input is in the outputs exactly once. */
static int already_done(engine *e, const char *path, int64_t id, int *done) {
    *done = 0;
    pthread_mutex_lock(&e->mu);
    for (int q = 0; q < RING; q++) {
        const slot *s = &e->slots[q];
        if (s->state == SLOT_FREE) continue;
        for (int i = 0; i < s->n; i++) *done |= s->items[i].id == id;
    }
    pthread_mutex_unlock(&e->mu);
    if (*done) return OSP_OK;
    char sha[65];
    int rc = osp__catalog_has_path(e->cat, path, done, e->opt->verify ? sha : NULL);
    if (rc || !*done || !e->opt->verify) return rc;
    /* --skip-done: the file must also be the one that was done */
    void *buf = NULL;
    size_t len = 0;
    char now[65] = "";
    if (osp_file_read_all(path, osp_image_max_file_bytes(OSP_IMAGE_MAX_PIXELS), &buf, &len) == OSP_OK) {
        osp__sha256_hex(buf, len, now);
        osp_free(buf);
    }
    if (strcmp(now, sha)) {
        if (e->sum.changed++ < NAMED_CHANGES)
            osp_log(OSP_LOG_WARN, "warning: %s changed since it was done; the folder keeps its first answer", path);
    }
    return OSP_OK;
}

/* Fills slot s with up to batch inputs; *n gets how many (0 at the end). */
static int fill(engine *e, osp_inputs *in, slot *s, int *n) {
    const osp_pipeline_options *opt = e->opt;
    const int shards = opt->shards > 1 ? opt->shards : 1;
    *n = 0;
    while (*n < opt->batch) {
        const char *path;
        int rc = osp_inputs_next(in, &path);
        if (rc) return rc;
        if (!path) break;
        const int64_t id = osp_image_id(path);
        if (id % shards != opt->shard) {
            e->sum.not_ours++;
            continue;
        }
        int done;
        if ((rc = already_done(e, path, id, &done))) return rc;
        if (done) {
            e->sum.skipped++;
            continue;
        }
        item *it = &s->items[*n];
        memset(it, 0, sizeof *it);
        if (!(it->path = strdup(path))) return osp_error(OSP_ENOMEM, "out of memory");
        it->id = id;
        (*n)++;
    }
    return OSP_OK;
}

static int infer(engine *e, slot *s) {
    for (int v = 0; v < e->n_var; v++) {
        const char *layers[2];
        float *outs[2];
        int n = 0;
        if (e->opt->tags) {
            layers[n] = OSP_LAYER_LOGITS;
            outs[n++] = s->logits[v];
        }
        if (v == 0 && e->dim > 0) {
            layers[n] = e->opt->embed_layer;
            outs[n++] = s->feat;
        }
        int rc = osp_net_run(e->var[v].net, s->x[v], s->n, s->n, layers, n, outs);
        if (rc) return rc;
    }
    return OSP_OK;
}

static int produce(engine *e, osp_inputs *in) {
    int64_t filled = 0;
    int inputs_done = 0, rc = OSP_OK;
    pthread_mutex_lock(&e->mu);
    while (!e->failed) {
        /* fill every free slot */
        while (!inputs_done && filled - e->seq_written < RING) {
            slot *s = &e->slots[filled % RING];
            pthread_mutex_unlock(&e->mu);
            int n = 0;
            rc = fill(e, in, s, &n);
            pthread_mutex_lock(&e->mu);
            if (rc) break;
            if (n < e->opt->batch) inputs_done = 1;
            if (n == 0) break;
            s->n = n;
            s->next = s->done = 0;
            s->state = SLOT_DECODING;
            filled++;
            pthread_cond_broadcast(&e->work);
        }
        if (rc || e->failed) break;
        if (e->seq_inferred == filled) {
            if (inputs_done) break;
            pthread_cond_wait(&e->freed, &e->mu);
            continue;
        }
        slot *s = &e->slots[e->seq_inferred % RING];
        while (s->done < s->n && !e->failed) pthread_cond_wait(&e->decoded, &e->mu);
        if (e->failed) break;
        pthread_mutex_unlock(&e->mu);
        rc = infer(e, s);
        pthread_mutex_lock(&e->mu);
        if (rc) break;
        s->state = SLOT_INFERRED;
        e->seq_inferred++;
        pthread_cond_broadcast(&e->inferred);
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

/* ---- setting up -------------------------------------------------------------- */

static char *options_json(const osp_pipeline_options *o) {
    char *s = malloc(512);
    if (!s) return NULL;
    snprintf(s, 512,
             "{\"tags\": %d, \"layer\": \"%s\", \"top_k\": %d, \"threshold\": %g, \"sigmoid\": %d, "
             "\"normalize\": %d, \"dtype\": \"%s\", \"batch\": %d, \"workers\": %d, \"shard\": \"%d/%d\", "
             "\"verify\": %d, \"pool\": \"%s\"}",
             o->tags, o->embed_layer ? o->embed_layer : "", o->top_k, (double)o->threshold, o->sigmoid,
             o->normalize, o->dtype == OSP_DTYPE_F16 ? "float16" : "float32", o->batch, o->workers,
             o->shard, o->shards > 1 ? o->shards : 1, o->verify, osp_pool_name(o->pool));
    return s;
}

static int check_options(const osp_net *net, const osp_pipeline_options *o) {
    if (!o->tags && !o->embed_layer)
        return osp_error(OSP_EINVAL, "nothing to do: neither tags nor an embedding layer");
    if (o->batch < 1 || o->batch > MAX_BATCH)
        return osp_error(OSP_EINVAL, "the batch must be 1 to %d images, not %d", MAX_BATCH, o->batch);
    if (o->tags && o->top_k < 1) return osp_error(OSP_EINVAL, "--top-k must be at least 1");
    if (!(o->threshold >= 0 && o->threshold <= 1))
        return osp_error(OSP_EINVAL, "the threshold must lie in [0, 1]");
    if (o->dtype != OSP_DTYPE_F32 && o->dtype != OSP_DTYPE_F16)
        return osp_error(OSP_EINVAL, "vectors are float32 or float16");
    if (o->hash && (!o->embed_layer || o->dtype != OSP_DTYPE_F32))
        return osp_error(OSP_EINVAL, "binary codes come from an embedding layer's float vectors (no --dtype)");
    if (o->shards < 0 || o->shard < 0 || (o->shards > 1 && o->shard >= o->shards) ||
        (o->shards <= 1 && o->shard != 0))
        return osp_error(OSP_EINVAL, "shard %d of %d does not exist", o->shard, o->shards);
    if (o->workers < 0 || o->workers > 256) return osp_error(OSP_EINVAL, "1 to 256 decoding threads");
    if (!(o->lock_timeout >= 0 && o->lock_timeout <= 1e6))
        return osp_error(OSP_EINVAL, "the lock timeout must be 0 to 1e6 seconds");
    (void)net;
    return OSP_OK;
}

static int make_dir(const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return osp_error(OSP_EIO, "%s: cannot make the folder: %s", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return osp_error(OSP_EINVAL, "%s exists and is not a folder", dir);
    if (access(dir, W_OK) != 0) return osp_error(OSP_EIO, "%s: cannot write there", dir);
    return OSP_OK;
}

static void model_name_of(const char *path, char *out, size_t cap) {
    const char *base = path ? strrchr(path, '/') : NULL;
    base = base ? base + 1 : path ? path : "model";
    snprintf(out, cap, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = 0;
}

/* The ensemble's variants: every model at every scale (at its own input
 * size without scales). They must answer with the same classes. */
static int make_variants(engine *e, osp_net *net) {
    const osp_pipeline_options *opt = e->opt;
    const int n_models = 1 + (opt->n_models > 0 ? opt->n_models : 0);
    const int n_scales = opt->n_scales > 0 ? opt->n_scales : 1;
    if (n_models * n_scales > MAX_VARIANTS)
        return osp_error(OSP_EINVAL, "%d models x %d scales: at most %d together", n_models, n_scales, MAX_VARIANTS);
    int rc;
    for (int m = 0; m < n_models; m++) {
        osp_net *model = m == 0 ? net : opt->models[m - 1];
        osp_transform own;
        if ((rc = osp_net_transform(model, &own))) return rc;
        if (m > 0) {
            int64_t k0, k;
            if ((rc = osp_net_find_layer(net, OSP_LAYER_LOGITS, NULL, &k0)) ||
                (rc = osp_net_find_layer(model, OSP_LAYER_LOGITS, NULL, &k)))
                return rc;
            if (k != k0) return osp_error(OSP_ESHAPE, "model %d has %lld classes, the first %lld: an ensemble answers with one set", m + 1, (long long)k, (long long)k0);
            for (int64_t j = 0; net->labels && model->labels && j < k; j++)
                if (strcmp(net->labels[j], model->labels[j]))
                    return osp_error(OSP_ESHAPE, "model %d calls class %lld '%s', the first '%s'", m + 1, (long long)j, model->labels[j], net->labels[j]);
        }
        for (int k = 0; k < n_scales; k++) {
            variant *v = &e->var[e->n_var];
            const int side = opt->n_scales > 0 ? opt->scales[k] : 0;
            if (side <= 0 || (side == own.height && side == own.width)) {
                v->net = model;
            } else {
                if ((rc = osp_net_with_input(model, side, side, &v->net))) return rc;
                v->owned = 1;
            }
            if ((rc = osp_net_transform(v->net, &e->transforms[e->n_var]))) return rc;
            v->in_size = osp_shape_numel(&v->net->input);
            e->n_var++;
        }
    }
    if (opt->embed_layer && opt->n_scales > 0 && e->var[0].owned)
        return osp_error(OSP_EINVAL, "with vectors, the first scale must be the model's own input size "
                                     "(%lld): the vectors come from it", (long long)net->input.dim[1]);
    return OSP_OK;
}

/* The folder's model: the model's content hash, or for an ensemble the
 * hash of its models' hashes and scales. */
static int ensemble_hash(engine *e, char hash[65], char *name, size_t cap) {
    const osp_pipeline_options *opt = e->opt;
    char first[65];
    int rc = osp_model_content_hash(e->var[0].net, first);
    if (rc) return rc;
    model_name_of(opt->model_path, name, cap);
    if (opt->n_models <= 0 && opt->n_scales <= 0) {
        memcpy(hash, first, 65);
        return OSP_OK;
    }
    char text[MAX_VARIANTS * 80 + 256];
    size_t len = (size_t)snprintf(text, sizeof text, "ensemble %s", first);
    for (int m = 0; m < opt->n_models; m++) {
        char h[65], part[96];
        if ((rc = osp_model_content_hash(opt->models[m], h))) return rc;
        len += (size_t)snprintf(text + len, sizeof text - len, " %s", h);
        model_name_of(opt->model_paths ? opt->model_paths[m] : NULL, part, sizeof part);
        size_t used = strlen(name), more = strlen(part);
        if (used + 1 + more < cap) {
            name[used] = '+';
            memcpy(name + used + 1, part, more + 1);
        }
    }
    for (int k = 0; k < opt->n_scales; k++) {
        len += (size_t)snprintf(text + len, sizeof text - len, " %d", opt->scales[k]);
        char part[16];
        snprintf(part, sizeof part, "%s%d", k ? "," : "@", opt->scales[k]);
        size_t used = strlen(name), more = strlen(part);
        if (used + more < cap) memcpy(name + used, part, more + 1);
    }
    osp__sha256_hex(text, len, hash);
    return OSP_OK;
}

static int setup(engine *e, osp_net *net, const char *dir) {
    const osp_pipeline_options *opt = e->opt;
    int rc = make_variants(e, net);
    if (rc) return rc;
    if (opt->tags && (rc = osp_net_find_layer(net, OSP_LAYER_LOGITS, NULL, &e->n_classes))) return rc;
    if (opt->embed_layer) {
        if ((rc = osp_net_embed_shape(net, opt->embed_layer, opt->pool, &e->embed_shape))) return rc;
        e->dim = e->embed_shape.dim;
        e->feat_size = e->embed_shape.size;
    }
    if (opt->tags) {
        if (!(e->class_names = calloc((size_t)e->n_classes, sizeof *e->class_names)))
            return osp_error(OSP_ENOMEM, "out of memory");
        for (int64_t k = 0; k < e->n_classes; k++) {
            char num[24];
            snprintf(num, sizeof num, "%lld", (long long)k);
            const char *name = net->labels && k < net->n_classes ? net->labels[k] : num;
            if (!(e->class_names[k] = strdup(name))) return osp_error(OSP_ENOMEM, "out of memory");
        }
        /* A multi-label model carries a threshold per label, chosen on
         * validation data; --threshold raises them all. */
        if (!(e->class_threshold = malloc((size_t)e->n_classes * sizeof *e->class_threshold)))
            return osp_error(OSP_ENOMEM, "out of memory");
        for (int64_t k = 0; k < e->n_classes; k++) {
            const float own = osp_net_multi_label(net) ? osp_net_threshold(net, (int)k) : 0.0f;
            e->class_threshold[k] = own > opt->threshold ? own : opt->threshold;
        }
    }
    char hash[65], embed_hash[65], name[96], dim[24], top_k[16], threshold[24], shard[32];
    if ((rc = ensemble_hash(e, hash, name, sizeof name))) return rc;
    if ((rc = osp_model_content_hash(net, embed_hash))) return rc;
    snprintf(e->model_field, sizeof e->model_field, "%s@%.16s", name, hash);
    /* vectors.npy's rows: floats of the layer, or its packed codes */
    e->out_dim = e->dim;
    e->out_dtype = opt->dtype;
    char hash_hex[65] = "", bits[16] = "";
    if (opt->hash && e->dim > 0) {
        if (osp_hash_dim(opt->hash) != e->dim)
            return osp_error(OSP_ESHAPE, "the hash takes vectors of %d values, layer '%s' gives %lld",
                             osp_hash_dim(opt->hash), opt->embed_layer, (long long)e->dim);
        const char *hl = osp_hash_layer(opt->hash);
        if (hl && *hl && strcmp(hl, opt->embed_layer))
            return osp_error(OSP_EINVAL, "the hash was trained on layer '%s', not '%s'", hl, opt->embed_layer);
        /* codes of vectors normalised otherwise than its training vectors are noise */
        const int hn = osp_hash_normalize(opt->hash);
        if (hn >= 0 && hn != (opt->normalize != 0))
            return osp_error(OSP_EINVAL, "the hash was trained on vectors that were %s: %s --normalize",
                             hn ? "L2-normalised" : "not L2-normalised", hn ? "add" : "drop");
        e->out_dim = osp_hash_bits(opt->hash) / 8;
        e->out_dtype = OSP_DTYPE_U8;
        snprintf(bits, sizeof bits, "%d", osp_hash_bits(opt->hash));
        /* the hash's identity: its weights and bias */
        if ((rc = osp_hash_content_hash(opt->hash, hash_hex))) return rc;
    }
    e->row_bytes = e->out_dim * (int64_t)osp_dtype_size(e->out_dtype);
    snprintf(dim, sizeof dim, "%lld", (long long)e->out_dim);
    snprintf(top_k, sizeof top_k, "%d", opt->tags ? opt->top_k : 0);
    snprintf(threshold, sizeof threshold, "%g", (double)opt->threshold);
    snprintf(shard, sizeof shard, "%d/%d", opt->shard, opt->shards > 1 ? opt->shards : 1);
    const osp__setting settings[] = {
        {"format", OSP__CATALOG_FORMAT}, {"version", OSP__CATALOG_VERSION},
        {"model", opt->model_path ? opt->model_path : ""}, {"model_name", name},
        {"model_sha256", hash}, {"embed_model_sha256", embed_hash},
        {"layer", opt->embed_layer ? opt->embed_layer : ""},
        {"pool", osp_pool_name(opt->pool)},
        {"dim", dim},
        {"dtype", e->out_dtype == OSP_DTYPE_U8 ? "uint8" : e->out_dtype == OSP_DTYPE_F16 ? "float16" : "float32"},
        {"hash", hash_hex}, {"bits", bits}, {"hash_file", opt->hash && opt->hash_path ? opt->hash_path : ""},
        {"normalize", opt->normalize ? "1" : "0"}, {"sigmoid", opt->sigmoid ? "1" : "0"},
        {"top_k", top_k}, {"threshold", threshold}, {"tags", opt->tags ? "1" : "0"},
        {"shard", shard}, {"merged", "0"},
    };
    static const char *const check[] = {"model_sha256", "layer", "pool", "dim", "dtype", "hash", "normalize", "sigmoid",
                                        "top_k", "threshold", "tags", "shard", "merged", NULL};
    if ((rc = make_dir(dir))) return rc;
    if ((rc = osp__folder_lock(dir, opt->lock_timeout, &e->lock_fd))) return rc;
    if ((rc = osp__catalog_open_rw(dir, settings, (int)(sizeof settings / sizeof settings[0]), check, &e->cat)))
        return rc;
    int64_t tags_bytes, rows;
    if ((rc = osp__catalog_state(e->cat, &tags_bytes, &rows))) return rc;
    if ((rc = osp__outputs_open(&e->out, dir, opt->tags, e->dim ? e->out_dim : 0, e->out_dtype, tags_bytes, rows)))
        return rc;
    /* the ring and the writer's scratch */
    const size_t b = (size_t)opt->batch;
    for (int q = 0; q < RING; q++) {
        slot *s = &e->slots[q];
        s->items = calloc(b, sizeof *s->items);
        for (int v = 0; v < e->n_var; v++) {
            s->x[v] = osp_alloc(b * (size_t)e->var[v].in_size * sizeof(float));
            s->logits[v] = opt->tags ? osp_alloc(b * (size_t)e->n_classes * sizeof(float)) : NULL;
            if (!s->x[v] || (opt->tags && !s->logits[v]))
                return osp_error(OSP_ENOMEM, "out of memory for a batch of %d", opt->batch);
        }
        s->feat = e->dim ? osp_alloc(b * (size_t)e->feat_size * sizeof(float)) : NULL;
        if (!s->items || (e->dim && !s->feat))
            return osp_error(OSP_ENOMEM, "out of memory for a batch of %d", opt->batch);
    }
    e->vecs = malloc(b * (size_t)(e->row_bytes > 0 ? e->row_bytes : 4));
    e->ids = malloc(b * sizeof *e->ids);
    e->vec = malloc((size_t)(e->dim ? e->dim : 1) * sizeof(float));
    e->probs = malloc((size_t)(e->n_classes ? e->n_classes : 1) * sizeof(float));
    e->one = malloc((size_t)(e->n_classes ? e->n_classes : 1) * sizeof(float));
    e->order = malloc((size_t)(opt->top_k > 0 ? opt->top_k : 1) * sizeof(int));
    if (!e->vecs || !e->ids || !e->vec || !e->probs || !e->one || !e->order) return osp_error(OSP_ENOMEM, "out of memory");
    char *options = options_json(opt);
    if (!options) return osp_error(OSP_ENOMEM, "out of memory");
    rc = osp__catalog_run_begin(e->cat, opt->command, options, &e->run);
    free(options);
    return rc;
}

static void teardown(engine *e) {
    for (int q = 0; q < RING; q++) {
        slot *s = &e->slots[q];
        for (int i = 0; s->items && i < s->n; i++) free(s->items[i].path);
        free(s->items);
        for (int v = 0; v < MAX_VARIANTS; v++) {
            osp_free(s->x[v]);
            osp_free(s->logits[v]);
        }
        osp_free(s->feat);
    }
    for (int64_t k = 0; e->class_names && k < e->n_classes; k++) free(e->class_names[k]);
    free(e->class_names);
    free(e->class_threshold);
    free(e->tags);
    free(e->vecs);
    free(e->ids);
    free(e->vec);
    free(e->probs);
    free(e->one);
    for (int v = 0; v < e->n_var; v++)
        if (e->var[v].owned) osp_net_free(e->var[v].net);
    free(e->order);
    osp__outputs_close(&e->out);
    osp_catalog_close(e->cat);
    osp__folder_unlock(e->lock_fd);
}

int osp_pipeline_run(osp_net *net, osp_inputs *in, const char *dir, const osp_pipeline_options *opt,
                     osp_pipeline_summary *summary) {
    int rc = check_options(net, opt);
    if (rc) return rc;
    engine *e = calloc(1, sizeof *e);
    if (!e) return osp_error(OSP_ENOMEM, "out of memory");
    e->opt = opt;
    e->out.tags_fd = e->out.vectors_fd = e->out.ids_fd = -1;
    e->lock_fd = -1;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->work, NULL);
    pthread_cond_init(&e->decoded, NULL);
    pthread_cond_init(&e->inferred, NULL);
    pthread_cond_init(&e->freed, NULL);
    e->started = osp_now();
    rc = setup(e, net, dir);
    int workers = opt->workers > 0 ? opt->workers : osp_threads_get();
    if (workers < 1) workers = 1;
    pthread_t threads[257];
    int started = 0;
    int writer_started = 0;
    if (!rc) {
        if (pthread_create(&threads[0], NULL, writer, e) == 0) writer_started = 1;
        else rc = osp_error(OSP_ENOMEM, "cannot start the writing thread");
    }
    for (int i = 0; !rc && i < workers; i++) {
        if (pthread_create(&threads[1 + i], NULL, decoder, e) != 0) {
            rc = osp_error(OSP_ENOMEM, "cannot start decoding threads");
            break;
        }
        started++;
    }
    if (!rc) rc = produce(e, in);
    if (rc) fail(e, rc);
    pthread_mutex_lock(&e->mu);
    e->finishing = 1;
    pthread_cond_broadcast(&e->work);
    pthread_cond_broadcast(&e->inferred);
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < started; i++) pthread_join(threads[1 + i], NULL);
    if (writer_started) pthread_join(threads[0], NULL);
    if (e->failed) rc = osp_error(e->failed, "%s", e->failure);
    e->sum.seconds = osp_now() - e->started;
    e->sum.images_per_s = e->sum.seconds > 0 ? (double)e->sum.images / e->sum.seconds : 0;
    if (!rc && e->cat) rc = osp__catalog_run_end(e->cat, e->run, e->sum.images, e->sum.errors);
    if (summary) *summary = e->sum;
    teardown(e);
    pthread_cond_destroy(&e->work);
    pthread_cond_destroy(&e->decoded);
    pthread_cond_destroy(&e->inferred);
    pthread_cond_destroy(&e->freed);
    pthread_mutex_destroy(&e->mu);
    free(e);
    return rc;
}
