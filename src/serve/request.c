/* Parsing the worker's request bodies (request.h). Every check says which
 * field failed, in the JSON path notation of the body ("queries[3].k"). */
#include "request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "http.h"
#include "osprey/core.h"

/* ---- scanning --------------------------------------------------------------- */

static int hex4_zero(const char *p, const char *end) {
    return end - p >= 4 && p[0] == '0' && p[1] == '0' && p[2] == '0' && p[3] == '0';
}

/* Values (bound) and whether a string holds an escaped NUL. */
static size_t scan(const char *text, size_t len, int *nul) {
    size_t n = 1;
    int in_string = 0;
    *nul = 0;
    const char *end = text + len;
    for (const char *p = text; p < end; p++) {
        const char c = *p;
        if (in_string) {
            if (c == '\\' && p + 1 < end) {
                if (p[1] == 'u' && hex4_zero(p + 2, end)) *nul = 1;
                p++;
            } else if (c == '"') {
                in_string = 0;
            }
        } else if (c == '"') {
            in_string = 1;
        } else if (c == ',' || c == ':' || c == '[' || c == '{') {
            n++;
        }
    }
    return n;
}

size_t osp__json_count_values(const char *text, size_t len) {
    int nul;
    return scan(text, len, &nul);
}

static int valid_utf8(const unsigned char *s) {
    while (*s) {
        if (*s < 0x80) {
            s++;
            continue;
        }
        int n;
        unsigned cp;
        if ((*s & 0xe0) == 0xc0) n = 1, cp = *s & 0x1f;
        else if ((*s & 0xf0) == 0xe0) n = 2, cp = *s & 0x0f;
        else if ((*s & 0xf8) == 0xf0) n = 3, cp = *s & 0x07;
        else return 0;
        s++;
        for (int i = 0; i < n; i++, s++) {
            if ((*s & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (*s & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
    }
    return 1;
}

/* ---- fields ------------------------------------------------------------------- */

/* The root object of body, or NULL with an error. */
static cJSON *parse_root(const char *body, size_t len) {
    int nul;
    if (!len) {
        osp_error(OSP_EINVAL, "the body is empty: a JSON object is expected");
        return NULL;
    }
    size_t values = scan(body, len, &nul);
    if (values > OSP__MAX_JSON_VALUES) {
        osp_error(OSP_EINVAL, "the body holds more than %d JSON values", OSP__MAX_JSON_VALUES);
        return NULL;
    }
    if (nul) {
        osp_error(OSP_EINVAL, "strings may not hold NUL characters (\\u0000)");
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        osp_error(OSP_EINVAL, "malformed JSON at byte %zu", at);
        return NULL;
    }
    while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) end++;
    if (end != body + len) {
        osp_error(OSP_EINVAL, "malformed JSON: text after the value at byte %zu", (size_t)(end - body));
        cJSON_Delete(root);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        osp_error(OSP_EINVAL, "the body must be a JSON object");
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

static const char *type_name(const cJSON *v) {
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    return "invalid";
}

/* Refuses members of obj not in names (NULL-terminated), as Google's APIs
 * do ("Unknown name"): a misspelt field would otherwise be silently
 * ignored. */
static int known_fields(const cJSON *obj, const char *where, const char *const *names) {
    for (const cJSON *m = obj->child; m; m = m->next) {
        int ok = 0;
        for (const char *const *n = names; *n && !ok; n++) ok = !strcmp(m->string, *n);
        if (!ok)
            return osp_error(OSP_EINVAL, "%s: unknown field '%.100s'", where, m->string);
        /* a field given twice: the JSON is ambiguous */
        for (const cJSON *o = m->next; o; o = o->next)
            if (!strcmp(o->string, m->string))
                return osp_error(OSP_EINVAL, "%s: field '%.100s' given twice", where, m->string);
    }
    return OSP_OK;
}

static int want_object(const cJSON *v, const char *where) {
    if (!cJSON_IsObject(v)) return osp_error(OSP_EINVAL, "%s must be an object, not %s", where, type_name(v));
    return OSP_OK;
}

/* An array of 1..max items. */
static int want_array(const cJSON *v, const char *where, int max, int *n) {
    if (!v) return osp_error(OSP_EINVAL, "%s is missing", where);
    if (!cJSON_IsArray(v)) return osp_error(OSP_EINVAL, "%s must be an array, not %s", where, type_name(v));
    int count = cJSON_GetArraySize(v);
    if (count < 1) return osp_error(OSP_EINVAL, "%s is empty", where);
    if (count > max) return osp_error(OSP_EINVAL, "%s has %d items: at most %d are allowed", where, count, max);
    *n = count;
    return OSP_OK;
}

/* An integer in [min, max]; missing: def. */
static int get_int(const cJSON *obj, const char *key, const char *where, int def, int min, int max, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) {
        *out = def;
        return OSP_OK;
    }
    if (!cJSON_IsNumber(v)) return osp_error(OSP_EINVAL, "%s.%s must be an integer, not %s", where, key, type_name(v));
    const double d = v->valuedouble;
    if (!(d == floor(d))) return osp_error(OSP_EINVAL, "%s.%s must be an integer, not %g", where, key, d);
    if (d < min || d > max)
        return osp_error(OSP_EINVAL, "%s.%s is %.17g: it must be from %d to %d", where, key, d, min, max);
    *out = (int)d;
    return OSP_OK;
}

/* A string of 1..OSP__MAX_PATH bytes of UTF-8 without control characters. */
static int check_string(const cJSON *v, const char *where) {
    if (!cJSON_IsString(v) || !v->valuestring)
        return osp_error(OSP_EINVAL, "%s must be a string, not %s", where, type_name(v));
    const char *s = v->valuestring;
    size_t n = strlen(s);
    if (!n) return osp_error(OSP_EINVAL, "%s is empty", where);
    if (n > OSP__MAX_PATH) return osp_error(OSP_EINVAL, "%s is longer than %d bytes", where, OSP__MAX_PATH);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return osp_error(OSP_EINVAL, "%s holds a control character at byte %zu", where, i);
    if (!valid_utf8((const unsigned char *)s)) return osp_error(OSP_EINVAL, "%s is not valid UTF-8", where);
    return OSP_OK;
}

static int dup_string(const cJSON *v, const char *where, char **out) {
    int rc = check_string(v, where);
    if (rc) return rc;
    if (!(*out = strdup(v->valuestring))) return osp_error(OSP_ENOMEM, "out of memory");
    return OSP_OK;
}

int64_t osp__parse_id(const char *s) {
    if (!s || !*s || strlen(s) > 19 || strspn(s, "0123456789") != strlen(s)) return -1;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) v = v * 10 + (uint64_t)(*p - '0');
    return v > (uint64_t)INT64_MAX ? -1 : (int64_t)v;
}

/* An id: a decimal string, or a JSON integer below 2^53 (beyond it a
 * double is not exact). */
static int get_id(const cJSON *obj, const char *key, const char *where, int64_t def, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) {
        *out = def;
        return OSP_OK;
    }
    if (cJSON_IsString(v)) {
        int64_t id = osp__parse_id(v->valuestring);
        if (id < 0)
            return osp_error(OSP_EINVAL, "%s.%s: '%.40s' is not an image id (decimal digits, below 2^63)", where, key,
                             v->valuestring);
        *out = id;
        return OSP_OK;
    }
    if (cJSON_IsNumber(v)) {
        const double d = v->valuedouble;
        if (d == floor(d) && d >= 0 && d < 9007199254740992.0) {
            *out = (int64_t)d;
            return OSP_OK;
        }
        return osp_error(OSP_EINVAL, "%s.%s: give ids as decimal strings (a JSON number is exact only up to 2^53)",
                         where, key);
    }
    return osp_error(OSP_EINVAL, "%s.%s must be a decimal string, not %s", where, key, type_name(v));
}

/* ---- images ----------------------------------------------------------------------- */

static void image_free(osp__image_ref *im) {
    osp_free(im->content);
    free(im->uri);
    memset(im, 0, sizeof *im);
}

static int parse_image(const cJSON *v, const char *where, size_t max_bytes, osp__image_ref *im) {
    if (!v) return osp_error(OSP_EINVAL, "%s is missing", where);
    int rc = want_object(v, where);
    static const char *const fields[] = {"content", "source", NULL};
    if (!rc) rc = known_fields(v, where, fields);
    if (rc) return rc;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(v, "content");
    const cJSON *source = cJSON_GetObjectItemCaseSensitive(v, "source");
    char w[96];
    if (content && source) return osp_error(OSP_EINVAL, "%s: give content or source, not both", where);
    if (content) {
        if (!cJSON_IsString(content) || !content->valuestring)
            return osp_error(OSP_EINVAL, "%s.content must be a base64 string, not %s", where, type_name(content));
        const char *s = content->valuestring;
        rc = osp__base64_decode(s, strlen(s), max_bytes, &im->content, &im->content_len);
        if (rc == OSP_ENOMEM) return rc;
        if (rc) return osp_error(OSP_EINVAL, "%s.content: %s", where, osp_last_error());
        if (!im->content_len) return osp_error(OSP_EINVAL, "%s.content is empty", where);
        return OSP_OK;
    }
    if (!source) return osp_error(OSP_EINVAL, "%s: give content (base64) or source.imageUri", where);
    snprintf(w, sizeof w, "%s.source", where);
    static const char *const source_fields[] = {"imageUri", NULL};
    if ((rc = want_object(source, w)) || (rc = known_fields(source, w, source_fields))) return rc;
    const cJSON *uri = cJSON_GetObjectItemCaseSensitive(source, "imageUri");
    snprintf(w, sizeof w, "%s.source.imageUri", where);
    if (!uri) return osp_error(OSP_EINVAL, "%s is missing", w);
    if ((rc = check_string(uri, w))) return rc;
    const char *colon = strstr(uri->valuestring, "://");
    if (colon && strspn(uri->valuestring, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.") ==
                     (size_t)(colon - uri->valuestring))
        return osp_error(OSP_EINVAL, "%s: '%.100s' is a URL: this worker reads file paths (under its --allow-root) only",
                         w, uri->valuestring);
    return dup_string(uri, w, &im->uri);
}

/* ---- annotate ------------------------------------------------------------------------ */

static const char *const FEATURE_NAMES[OSP__N_FEATURES] = {"LABEL_DETECTION", "WEB_DETECTION", "IMAGE_PROPERTIES",
                                                           "EMBEDDING"};

static int parse_features(const cJSON *v, const char *where, osp__annotate_item *it) {
    int n, rc = want_array(v, where, 16, &n);
    if (rc) return rc;
    int i = 0;
    for (const cJSON *f = v->child; f; f = f->next, i++) {
        char w[96];
        snprintf(w, sizeof w, "%s[%d]", where, i);
        static const char *const fields[] = {"type", "maxResults", "model", NULL};
        if ((rc = want_object(f, w)) || (rc = known_fields(f, w, fields))) return rc;
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(f, "type");
        if (!type) return osp_error(OSP_EINVAL, "%s.type is missing", w);
        if (!cJSON_IsString(type) || !type->valuestring)
            return osp_error(OSP_EINVAL, "%s.type must be a string, not %s", w, type_name(type));
        int k = -1;
        for (int j = 0; j < OSP__N_FEATURES; j++)
            if (!strcmp(type->valuestring, FEATURE_NAMES[j])) k = j;
        if (k < 0)
            return osp_error(OSP_EINVAL,
                             "%s.type: '%.60s' is not supported (LABEL_DETECTION, WEB_DETECTION, IMAGE_PROPERTIES or "
                             "EMBEDDING)",
                             w, type->valuestring);
        const cJSON *model = cJSON_GetObjectItemCaseSensitive(f, "model");
        if (model && !cJSON_IsString(model))
            return osp_error(OSP_EINVAL, "%s.model must be a string, not %s", w, type_name(model));
        int max;
        /* 0 is proto3's "not set" */
        if ((rc = get_int(f, "maxResults", w, 0, 0, OSP__MAX_RESULTS, &max))) return rc;
        /* a type given twice: the last one counts */
        it->features |= 1u << k;
        it->max_results[k] = max ? max : OSP__DEFAULT_RESULTS;
    }
    return OSP_OK;
}

void osp__annotate_request_free(osp__annotate_request *r) {
    for (int i = 0; i < r->n; i++) image_free(&r->items[i].image);
    r->n = 0;
}

/* The "requests" array of an annotate or add body. */
static int requests_of(const cJSON *root, const char *const *fields, int *n) {
    int rc = known_fields(root, "the body", fields);
    if (!rc) rc = want_array(cJSON_GetObjectItemCaseSensitive(root, "requests"), "requests", OSP__MAX_IMAGES, n);
    return rc;
}

int osp__parse_annotate(const char *body, size_t len, size_t max_image_bytes, osp__annotate_request *out) {
    memset(out, 0, sizeof *out);
    cJSON *root = parse_root(body, len);
    if (!root) return OSP_EINVAL;
    static const char *const root_fields[] = {"requests", "parent", NULL};
    int n, rc = requests_of(root, root_fields, &n);
    const cJSON *req = rc ? NULL : cJSON_GetObjectItemCaseSensitive(root, "requests")->child;
    for (int i = 0; !rc && req; req = req->next, i++) {
        char w[64];
        snprintf(w, sizeof w, "requests[%d]", i);
        static const char *const fields[] = {"image", "features", "imageContext", NULL};
        if ((rc = want_object(req, w)) || (rc = known_fields(req, w, fields))) break;
        osp__annotate_item *it = &out->items[out->n++];
        char wi[80], wf[80];
        snprintf(wi, sizeof wi, "%s.image", w);
        snprintf(wf, sizeof wf, "%s.features", w);
        rc = parse_image(cJSON_GetObjectItemCaseSensitive(req, "image"), wi, max_image_bytes, &it->image);
        if (!rc) rc = parse_features(cJSON_GetObjectItemCaseSensitive(req, "features"), wf, it);
    }
    cJSON_Delete(root);
    if (rc) osp__annotate_request_free(out);
    return rc == OSP_ENOMEM ? rc : rc ? OSP_EINVAL : OSP_OK;
}

/* ---- add ---------------------------------------------------------------------------------- */

void osp__add_request_free(osp__add_request *r) {
    for (int i = 0; i < r->n; i++) {
        image_free(&r->items[i].image);
        free(r->items[i].path);
    }
    r->n = 0;
}

int osp__parse_add(const char *body, size_t len, size_t max_image_bytes, osp__add_request *out) {
    memset(out, 0, sizeof *out);
    cJSON *root = parse_root(body, len);
    if (!root) return OSP_EINVAL;
    static const char *const root_fields[] = {"requests", NULL};
    int n, rc = requests_of(root, root_fields, &n);
    const cJSON *req = rc ? NULL : cJSON_GetObjectItemCaseSensitive(root, "requests")->child;
    for (int i = 0; !rc && req; req = req->next, i++) {
        char w[64];
        snprintf(w, sizeof w, "requests[%d]", i);
        static const char *const fields[] = {"image", "path", NULL};
        if ((rc = want_object(req, w)) || (rc = known_fields(req, w, fields))) break;
        osp__add_item *it = &out->items[out->n++];
        char wi[80];
        snprintf(wi, sizeof wi, "%s.image", w);
        rc = parse_image(cJSON_GetObjectItemCaseSensitive(req, "image"), wi, max_image_bytes, &it->image);
        if (rc) break;
        const cJSON *path = cJSON_GetObjectItemCaseSensitive(req, "path");
        snprintf(wi, sizeof wi, "%s.path", w);
        if (!path) rc = osp_error(OSP_EINVAL, "%s is missing (the image's path in the catalogue)", wi);
        else rc = dup_string(path, wi, &it->path);
        for (int j = 0; !rc && j < out->n - 1; j++)
            if (!strcmp(out->items[j].path, it->path))
                rc = osp_error(OSP_EINVAL, "%s: '%.200s' is also requests[%d].path", wi, it->path, j);
    }
    cJSON_Delete(root);
    if (rc) osp__add_request_free(out);
    return rc == OSP_ENOMEM ? rc : rc ? OSP_EINVAL : OSP_OK;
}

/* ---- search ----------------------------------------------------------------------------------- */

void osp__search_request_free(osp__search_request *r) {
    for (int i = 0; i < r->n; i++) {
        free(r->queries[i].vector);
        free(r->queries[i].label);
    }
    r->n = 0;
}

static int parse_vector(const cJSON *v, const char *where, osp__search_query *q) {
    int n, rc = want_array(v, where, OSP__MAX_DIM, &n);
    if (rc) return rc;
    if (!(q->vector = malloc((size_t)n * sizeof *q->vector))) return osp_error(OSP_ENOMEM, "out of memory");
    q->dim = n;
    int i = 0;
    for (const cJSON *x = v->child; x; x = x->next, i++) {
        if (!cJSON_IsNumber(x))
            return osp_error(OSP_EINVAL, "%s[%d] must be a number, not %s", where, i, type_name(x));
        const float f = (float)x->valuedouble;
        if (!isfinite(f))
            return osp_error(OSP_EINVAL, "%s[%d] is %g: not a finite float32", where, i, x->valuedouble);
        q->vector[i] = f;
    }
    return OSP_OK;
}

static int parse_filter(const cJSON *v, const char *where, osp__search_query *q) {
    static const char *const fields[] = {"idMin", "idMax", "label", NULL};
    int rc = want_object(v, where);
    if (!rc) rc = known_fields(v, where, fields);
    if (!rc) rc = get_id(v, "idMin", where, 0, &q->id_min);
    if (!rc) rc = get_id(v, "idMax", where, INT64_MAX, &q->id_max);
    if (!rc && q->id_min > q->id_max) rc = osp_error(OSP_EINVAL, "%s: idMin is above idMax", where);
    const cJSON *label = cJSON_GetObjectItemCaseSensitive(v, "label");
    char w[96];
    snprintf(w, sizeof w, "%s.label", where);
    if (!rc && label) rc = dup_string(label, w, &q->label);
    return rc;
}

int osp__parse_search(const char *body, size_t len, osp__search_request *out) {
    memset(out, 0, sizeof *out);
    cJSON *root = parse_root(body, len);
    if (!root) return OSP_EINVAL;
    static const char *const root_fields[] = {"queries", NULL};
    int n, rc = known_fields(root, "the body", root_fields);
    const cJSON *qs = cJSON_GetObjectItemCaseSensitive(root, "queries");
    if (!rc) rc = want_array(qs, "queries", OSP__MAX_QUERIES, &n);
    const cJSON *qv = rc ? NULL : qs->child;
    for (int i = 0; !rc && qv; qv = qv->next, i++) {
        char w[64], wv[80];
        snprintf(w, sizeof w, "queries[%d]", i);
        static const char *const fields[] = {"vector", "k", "ef", "nprobe", "filter", NULL};
        if ((rc = want_object(qv, w)) || (rc = known_fields(qv, w, fields))) break;
        osp__search_query *q = &out->queries[out->n++];
        q->id_max = INT64_MAX;
        snprintf(wv, sizeof wv, "%s.vector", w);
        rc = parse_vector(cJSON_GetObjectItemCaseSensitive(qv, "vector"), wv, q);
        if (!rc) rc = get_int(qv, "k", w, OSP__DEFAULT_RESULTS, 1, OSP__MAX_RESULTS, &q->k);
        if (!rc) rc = get_int(qv, "ef", w, 0, 0, 65536, &q->ef);
        if (!rc) rc = get_int(qv, "nprobe", w, 0, 0, 1 << 20, &q->nprobe);
        const cJSON *filter = cJSON_GetObjectItemCaseSensitive(qv, "filter");
        snprintf(wv, sizeof wv, "%s.filter", w);
        if (!rc && filter) rc = parse_filter(filter, wv, q);
    }
    cJSON_Delete(root);
    if (rc) osp__search_request_free(out);
    return rc == OSP_ENOMEM ? rc : rc ? OSP_EINVAL : OSP_OK;
}
