/* The worker's request bodies, parsed from untrusted JSON into C structs
 * (private to src/serve; docs/http-api.md is the contract; the fuzz
 * target fuzz/fuzz_annotate.c runs every parser here).
 *
 * Each parser takes the whole body (len bytes, need not be terminated)
 * and either fills *out and returns 0, or returns OSP_EINVAL with a message
 * that names the field ("requests[1].features[0].type: 'FACE_DETECTION'
 * is not supported ...") and leaves *out empty: a request is well formed
 * as a whole or refused as a whole (HTTP 400). What the body names is not
 * looked at here (files, ids, the index's dimension): the worker does that.
 *
 * Limits checked here, before anything big is allocated:
 *  - at most OSP__MAX_JSON_VALUES values (numbers, strings, ...) in a body,
 *    counted by a scan before cJSON parses it (cJSON spends some 70 bytes a
 *    value: 10 MB of "0," would otherwise take 350 MB);
 *  - OSP__MAX_IMAGES images per annotate or add request, OSP__MAX_QUERIES
 *    queries per search, k and maxResults 1..OSP__MAX_RESULTS;
 *  - base64 content strict (osp__base64_decode) and at most max_image_bytes
 *    decoded;
 *  - vectors of 1..OSP__MAX_DIM finite float32 values;
 *  - strings (paths, labels) of at most OSP__MAX_PATH bytes, no control
 *    characters (below 0x20). */
#ifndef OSP_SERVE_REQUEST_H
#define OSP_SERVE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#define OSP__MAX_IMAGES 16
#define OSP__MAX_QUERIES 64
#define OSP__MAX_RESULTS 1000
#define OSP__MAX_DIM 65536
#define OSP__MAX_PATH 4096
#define OSP__MAX_JSON_VALUES 1000000
/* Cloud Vision's limit on one image file. */
#define OSP__MAX_IMAGE_BYTES ((size_t)20 * 1000 * 1000)
/* Results when maxResults or k is not given. */
#define OSP__DEFAULT_RESULTS 10

/* The features of an annotate request, as bits. */
enum {
    OSP__FEATURE_LABELS = 1 << 0,     /* LABEL_DETECTION */
    OSP__FEATURE_WEB = 1 << 1,        /* WEB_DETECTION */
    OSP__FEATURE_PROPERTIES = 1 << 2, /* IMAGE_PROPERTIES */
    OSP__FEATURE_EMBEDDING = 1 << 3,  /* EMBEDDING (osprey's) */
};
#define OSP__N_FEATURES 4

/* An image: its bytes (from "content") or a path (from
 * "source.imageUri"), exactly one. */
typedef struct osp__image_ref {
    uint8_t *content; /* osp_alloc'ed, content_len bytes; NULL for a uri */
    size_t content_len;
    char *uri;        /* NUL-terminated; NULL for content */
} osp__image_ref;

typedef struct osp__annotate_item {
    osp__image_ref image;
    unsigned features;                    /* OSP__FEATURE_* */
    int max_results[OSP__N_FEATURES];     /* by feature bit index; always 1..OSP__MAX_RESULTS */
} osp__annotate_item;

typedef struct osp__annotate_request {
    int n;
    osp__annotate_item items[OSP__MAX_IMAGES];
} osp__annotate_request;

typedef struct osp__search_query {
    float *vector;    /* dim floats (malloc) */
    int dim;
    int k;            /* 1..OSP__MAX_RESULTS (default OSP__DEFAULT_RESULTS) */
    int ef, nprobe;   /* 0: the index's default */
    int64_t id_min, id_max; /* the allowed ids, inclusive: 0 and INT64_MAX if not given */
    char *label;      /* NULL: any */
} osp__search_query;

typedef struct osp__search_request {
    int n;
    osp__search_query queries[OSP__MAX_QUERIES];
} osp__search_request;

typedef struct osp__add_item {
    osp__image_ref image;
    char *path; /* the catalogue path */
} osp__add_item;

typedef struct osp__add_request {
    int n;
    osp__add_item items[OSP__MAX_IMAGES];
} osp__add_request;

/* {"requests": [{"image": {"content": B64} | {"source": {"imageUri": PATH}},
 *   "features": [{"type": T, "maxResults": N}], "imageContext": any}]} */
int osp__parse_annotate(const char *body, size_t len, size_t max_image_bytes, osp__annotate_request *out);
void osp__annotate_request_free(osp__annotate_request *r);

/* {"queries": [{"vector": [floats], "k": N, "ef": N, "nprobe": N,
 *   "filter": {"idMin": ID, "idMax": ID, "label": S}}]} */
int osp__parse_search(const char *body, size_t len, osp__search_request *out);
void osp__search_request_free(osp__search_request *r);

/* {"requests": [{"image": {...as annotate}, "path": PATH}]} */
int osp__parse_add(const char *body, size_t len, size_t max_image_bytes, osp__add_request *out);
void osp__add_request_free(osp__add_request *r);

/* An image id: decimal digits, 0 .. 2^63 - 1, no sign, no spaces; -1 if s
 * is not one. */
int64_t osp__parse_id(const char *s);

/* The number of JSON values in text, counted without parsing (a bound:
 * malformed text is left to the parser). */
size_t osp__json_count_values(const char *text, size_t len);

#endif
