/* The worker's private parts (src/serve/worker*.c, store.c, colors.c):
 * what it holds, and the pieces each endpoint is made of.
 *
 * Locks, always taken in this order, never two of one kind:
 *   write_lock   (mutex)  one write (add, remove) at a time
 *   index_lock   (rwlock) searches and catalogue reads share it; a write
 *                         holds it exclusively while it changes the index,
 *                         the catalogue and the index file
 *   infer_lock   (mutex)  the network: osp_net_run is not thread-safe
 *   store->lock  (mutex)  the catalogue's SQLite statements
 * Inference is never run with index_lock held, so a slow batch of images
 * does not stall searches. */
#ifndef OSP_SERVE_WORKER_H
#define OSP_SERVE_WORKER_H

#include <pthread.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "http.h"
#include "metrics.h"
#include "osprey/index.h"
#include "osprey/nn.h"
#include "osprey/serve.h"
#include "request.h"

/* ---- the catalogue (store.c): catalog.db, read and written with SQLite ---- */

typedef struct osp__store osp__store;

/* Opens dir/catalog.db (writable: WAL, synchronous=FULL) and checks that
 * it is an osprey catalogue. */
int osp__store_open(const char *dir, int writable, osp__store **out);
void osp__store_close(osp__store *s);
/* A setting (borrowed until close), or NULL. */
const char *osp__store_setting(osp__store *s, const char *key);
/* The paths of n ids (strdup'ed into paths[i], NULL for an id it does not
 * know). */
int osp__store_paths(osp__store *s, const int64_t *ids, int n, char **paths);
/* The id of a path: *found 0 if it is not catalogued. */
int osp__store_id_of(osp__store *s, const char *path, int64_t *id, int *found);
/* The ids of the images with this label, ascending (malloc), *n of them. */
int osp__store_ids_with_label(osp__store *s, const char *label, int64_t **ids, size_t *n);
/* Images with status ok. */
int osp__store_count(osp__store *s, int64_t *n);

/* One image to catalogue. */
typedef struct osp__store_image {
    int64_t id;
    const char *path;
    int64_t bytes;
    const char *sha256; /* hex */
    int width, height;
    int n_labels;
    const char *const *labels;
    const float *scores;
} osp__store_image;

/* In one transaction: replaces any row of these ids or paths (and their
 * labels), then inserts the images (status ok, row NULL) and their labels;
 * committed (durable) when it returns 0, rolled back otherwise. */
int osp__store_add(osp__store *s, const osp__store_image *images, int n);
/* In one transaction: deletes the images of these ids and their labels. */
int osp__store_remove(osp__store *s, const int64_t *ids, int n);

/* ---- colours (colors.c) ---- */

/* IMAGE_PROPERTIES: the dominant colours of an encoded image, as Cloud
 * Vision's dominantColors: {"colors": [{"color": {"red", "green", "blue"},
 * "score", "pixelFraction"}]}, at most max_results, largest share first.
 * Deterministic: a histogram of 8 x 8 x 8 colour cells over a copy at most
 * 128 pixels on a side; each cell reported as the mean colour of its
 * pixels, score = pixelFraction = its share. */
int osp__dominant_colors(const void *buf, size_t len, const char *name, int64_t max_pixels, int max_results,
                         cJSON **out);

/* ---- the worker ---- */

typedef struct osp__worker {
    osp_serve_worker_config cfg;
    /* the model */
    osp_net *net;
    char model_field[160]; /* "name@hash16" */
    char hash[65];
    int64_t in_size;       /* floats per network input */
    int64_t n_classes;
    char **class_names;    /* n_classes */
    int sigmoid;           /* scores as sigmoids (the catalogue's setting) */
    int top_k;             /* labels catalogued per added image (the catalogue's top_k) */
    float threshold;
    int tags;              /* the catalogue records labels */
    /* EMBEDDING: the layer, its per-sample size, the vector's dim */
    char *layer;
    int64_t feat_size, dim;
    osp_embed_shape embed_shape; /* the layer pooled as the folder's vectors were */
    int normalize;
    /* the shard */
    osp_index *index;
    osp_index_metric metric;
    int index_dim;
    osp__store *store;
    char *allow_root;      /* realpath, or NULL */
    unsigned char token_digest[32];
    int has_token;
    /* locks (see above) */
    pthread_mutex_t write_lock, infer_lock;
    pthread_rwlock_t index_lock;
    osp__metrics *metrics;
    int gauge_waiting, gauge_images;
} osp__worker;

/* An image's bytes: its content, or the file its uri names under the
 * allowed root. On failure, a google.rpc code in *rpc, an HTTP status in
 * *http, and a message (osp_last_error). *owned is set when *buf must be
 * osp_free'd. */
int osp__worker_image_bytes(osp__worker *w, const osp__image_ref *im, const uint8_t **buf, size_t *len, int *owned,
                            int *rpc, int *http);
/* Runs the network on n inputs (n x in_size floats) under the inference
 * lock: logits (n x n_classes, may be NULL) and vectors (n x dim, pooled
 * and normalised as the catalogue's; may be NULL). */
int osp__worker_infer(osp__worker *w, const float *x, int n, float *logits, float *vectors);
/* Class scores of logits (softmax, or sigmoids with the catalogue's
 * setting), and the top `want` classes by score (ties: the lower class);
 * returns how many. */
void osp__worker_scores(const osp__worker *w, const float *logits, float *scores);
int osp__worker_top(const float *scores, int64_t n, int want, int *order);
/* score of an index distance: higher is more similar (ip: the inner
 * product; cos: the cosine; l2: 1 / (1 + the squared distance)). */
double osp__worker_score(osp_index_metric metric, float distance);

/* One search: hits (score descending, then id ascending) as {"hits":
 * [...]}; with index_lock held shared by the caller. */
int osp__worker_search_one(osp__worker *w, const float *vector, int k, int ef, int nprobe,
                           const osp_index_filter *filter, const char *url_key, cJSON **out);

/* The endpoints. */
enum MHD_Result osp__worker_annotate(osp__worker *w, osp__http_request *req);
enum MHD_Result osp__worker_search(osp__worker *w, osp__http_request *req);
enum MHD_Result osp__worker_add(osp__worker *w, osp__http_request *req);
enum MHD_Result osp__worker_remove(osp__worker *w, osp__http_request *req, const char *id);

/* A decimal string of an id, for JSON (ids pass 2^53: never numbers). */
cJSON *osp__id_string(int64_t id);

#endif
