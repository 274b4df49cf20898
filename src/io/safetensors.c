/* safetensors: an 8-byte little-endian header length N, N bytes of JSON
 * ({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
 * {str: str}}, padded with spaces), then the data area that the offsets index.
 *
 * The reader is as strict as the reference implementation: offsets must tile
 * the data area exactly, in some order, with no gaps or overlaps, so that a
 * file it accepts is one every other reader accepts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "io/io_impl.h"

/* The reference implementation's limit; it bounds the JSON parser's work. */
#define ST_MAX_HEADER (100u * 1000u * 1000u)
/* Integers above 2^53 do not survive JSON readers that use doubles. */
#define ST_MAX_INT 9007199254740992.0

typedef struct st_meta {
    const char *key, *value; /* strings of the JSON tree */
} st_meta;

struct osp_safetensors {
    unsigned char *buf; /* the whole file; tensors point into it */
    size_t len;
    cJSON *root;            /* owns the tensor names and metadata strings */
    osp_st_tensor *tensors; /* n_tensors, in the order of their data */
    const osp_st_tensor **by_name; /* the same, sorted by name, for find */
    int n_tensors;
    st_meta *meta; /* n_meta, sorted by key */
    int n_meta;
};

/* ---- reading ------------------------------------------------------------ */

static const struct {
    const char *name;
    osp_dtype dtype;
} st_dtypes[] = {
    {"F32", OSP_DTYPE_F32}, {"F64", OSP_DTYPE_F64}, {"I32", OSP_DTYPE_I32},
    {"I64", OSP_DTYPE_I64}, {"U8", OSP_DTYPE_U8},
};

/* 1 if s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code points
 * past U+10FFFF): JSON readers elsewhere refuse anything else. */
static int utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

/* A JSON number that is an exact non-negative integer a double can hold. */
static int get_count(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return 0;
    double v = item->valuedouble;
    if (!(v >= 0 && v <= ST_MAX_INT) || (double)(uint64_t)v != v) return 0;
    *out = (uint64_t)v;
    return 1;
}

static int parse_tensor(const cJSON *item, const unsigned char *data, size_t data_len,
                        const char *name, osp_st_tensor *t) {
    const char *tname = item->string;
    if (!cJSON_IsObject(item))
        return osp_error(OSP_EFORMAT, "%s: tensor '%s' is not a JSON object", name, tname);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offsets))
        return osp_error(OSP_EFORMAT, "%s: tensor '%s' needs a string dtype and arrays shape "
                         "and data_offsets", name, tname);
    t->name = tname;
    size_t i;
    for (i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(dtype->valuestring, st_dtypes[i].name) == 0) break;
    if (i == sizeof st_dtypes / sizeof st_dtypes[0])
        return osp_error(OSP_ENOTSUP, "%s: tensor '%s' has unsupported dtype '%.16s'", name,
                         tname, dtype->valuestring);
    t->dtype = st_dtypes[i].dtype;

    int rank = cJSON_GetArraySize(shape);
    if (rank > OSP_MAX_DIMS)
        return osp_error(OSP_ENOTSUP, "%s: tensor '%s' has %d dimensions, more than %d", name,
                         tname, rank, OSP_MAX_DIMS);
    t->shape.ndim = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape) {
        uint64_t v;
        if (!get_count(d, &v))
            return osp_error(OSP_EFORMAT, "%s: tensor '%s' has a shape entry that is not a "
                             "non-negative integer", name, tname);
        t->shape.dim[t->shape.ndim++] = (int64_t)v;
    }
    int rc = osp__array_nbytes(t->dtype, &t->shape, name, &t->nbytes);
    if (rc != OSP_OK) return rc;

    uint64_t begin, end;
    if (cJSON_GetArraySize(offsets) != 2 || !get_count(offsets->child, &begin) ||
        !get_count(offsets->child->next, &end))
        return osp_error(OSP_EFORMAT, "%s: tensor '%s' data_offsets is not [begin, end]", name,
                         tname);
    if (begin > end || end > data_len)
        return osp_error(OSP_EFORMAT, "%s: tensor '%s' data_offsets [%llu, %llu] lie outside "
                         "the data area of %zu bytes", name, tname, (unsigned long long)begin,
                         (unsigned long long)end, data_len);
    if (end - begin != t->nbytes)
        return osp_error(OSP_EFORMAT, "%s: tensor '%s' has %llu bytes of data, its shape "
                         "needs %zu", name, tname, (unsigned long long)(end - begin),
                         t->nbytes);
    t->data = data + begin;
    return OSP_OK;
}

static int parse_metadata(osp_safetensors *st, const cJSON *item, const char *name) {
    if (!cJSON_IsObject(item))
        return osp_error(OSP_EFORMAT, "%s: __metadata__ is not a JSON object", name);
    int n = cJSON_GetArraySize(item);
    st->meta = calloc(n ? (size_t)n : 1, sizeof *st->meta);
    if (!st->meta) return osp_error(OSP_ENOMEM, "%s: out of memory for metadata", name);
    const cJSON *v;
    cJSON_ArrayForEach(v, item) {
        if (!cJSON_IsString(v))
            return osp_error(OSP_EFORMAT, "%s: __metadata__ value '%s' is not a string", name,
                             v->string);
        st->meta[st->n_meta].key = v->string;
        st->meta[st->n_meta].value = v->valuestring;
        st->n_meta++;
    }
    return OSP_OK;
}

static int cmp_data_order(const void *a, const void *b) {
    const osp_st_tensor *x = a, *y = b;
    if (x->data != y->data) return (uintptr_t)x->data < (uintptr_t)y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int cmp_name(const void *a, const void *b) {
    const osp_st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int cmp_meta(const void *a, const void *b) {
    const st_meta *x = a, *y = b;
    return strcmp(x->key, y->key);
}

/* Parses the JSON header into st's tables. */
static int parse_header(osp_safetensors *st, const char *json, size_t json_len,
                        const unsigned char *data, size_t data_len, const char *name) {
    /* cJSON wants a terminated string; a NUL inside the header would hide
     * whatever follows it. */
    if (memchr(json, '\0', json_len))
        return osp_error(OSP_EFORMAT, "%s: safetensors header contains a NUL byte", name);
    if (!utf8_valid((const unsigned char *)json, json_len))
        return osp_error(OSP_EFORMAT, "%s: safetensors header is not valid UTF-8", name);
    /* The reference reader wants the object at byte 0, not after spaces. */
    if (json_len == 0 || json[0] != '{')
        return osp_error(OSP_EFORMAT, "%s: safetensors header does not start with '{'", name);
    char *text = malloc(json_len + 1);
    if (!text) return osp_error(OSP_ENOMEM, "%s: out of memory for the header", name);
    memcpy(text, json, json_len);
    text[json_len] = '\0';
    const char *end = NULL;
    st->root = cJSON_ParseWithOpts(text, &end, 1);
    size_t at = end ? (size_t)(end - text) : 0;
    free(text);
    if (!st->root)
        return osp_error(OSP_EFORMAT, "%s: safetensors header is not valid JSON (near byte %zu)",
                         name, 8 + at);
    if (!cJSON_IsObject(st->root))
        return osp_error(OSP_EFORMAT, "%s: safetensors header is not a JSON object", name);

    int n = cJSON_GetArraySize(st->root);
    st->tensors = calloc(n ? (size_t)n : 1, sizeof *st->tensors);
    st->by_name = calloc(n ? (size_t)n : 1, sizeof *st->by_name);
    if (!st->tensors || !st->by_name)
        return osp_error(OSP_ENOMEM, "%s: out of memory for %d tensors", name, n);
    const cJSON *item;
    int rc, seen_meta = 0;
    cJSON_ArrayForEach(item, st->root) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (seen_meta++)
                return osp_error(OSP_EFORMAT, "%s: __metadata__ appears twice", name);
            if ((rc = parse_metadata(st, item, name)) != OSP_OK) return rc;
            continue;
        }
        rc = parse_tensor(item, data, data_len, name, &st->tensors[st->n_tensors]);
        if (rc != OSP_OK) return rc;
        st->n_tensors++;
    }

    qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, cmp_data_order);
    size_t expected = 0;
    for (int i = 0; i < st->n_tensors; i++) {
        const osp_st_tensor *t = &st->tensors[i];
        size_t begin = (size_t)((const unsigned char *)t->data - data);
        if (begin != expected)
            return osp_error(OSP_EFORMAT, "%s: tensor '%s' starts at byte %zu of the data area, "
                             "expected %zu (tensors must not overlap or leave gaps)", name,
                             t->name, begin, expected);
        expected = begin + t->nbytes;
        st->by_name[i] = t;
    }
    if (expected != data_len)
        return osp_error(OSP_EFORMAT, "%s: tensors cover %zu bytes, but the data area has %zu",
                         name, expected, data_len);

    qsort(st->by_name, (size_t)st->n_tensors, sizeof *st->by_name, cmp_name);
    for (int i = 1; i < st->n_tensors; i++)
        if (strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0)
            return osp_error(OSP_EFORMAT, "%s: tensor name '%s' appears twice", name,
                             st->by_name[i]->name);
    if (st->meta) {
        qsort(st->meta, (size_t)st->n_meta, sizeof *st->meta, cmp_meta);
        for (int i = 1; i < st->n_meta; i++)
            if (strcmp(st->meta[i - 1].key, st->meta[i].key) == 0)
                return osp_error(OSP_EFORMAT, "%s: metadata key '%s' appears twice", name,
                                 st->meta[i].key);
    }
    return OSP_OK;
}

/* A file that is plainly something else (an ONNX model, a network spec, a
 * NumPy array, an image...): says what it is and what to do with it rather
 * than how its first bytes fail as a safetensors header. OSP_OK if the
 * file is not recognised. */
static int not_safetensors(const unsigned char *buf, size_t len, const char *name) {
    osp_file_kind kind = osp_file_sniff(buf, len);
    const char *what = osp_file_kind_phrase(kind);
    switch (kind) {
    case OSP_FILE_UNKNOWN:
    case OSP_FILE_SAFETENSORS: return OSP_OK;
    case OSP_FILE_ONNX:
        return osp_error(OSP_EFORMAT, "%s is %s, not an osprey model (.osp, safetensors): "
                         "import it with 'osprey import %s --out MODEL.osp'", name, what, name);
    case OSP_FILE_NETSPEC:
        return osp_error(OSP_EFORMAT, "%s is %s, not an osprey model (.osp, safetensors): "
                         "train a model from it with 'osprey train --net %s'", name, what, name);
    case OSP_FILE_INDEX:
        return osp_error(OSP_EFORMAT, "%s is %s, not an osprey model or checkpoint (.osp, "
                         "safetensors): 'osprey index info' describes it", name, what);
    default:
        return osp_error(OSP_EFORMAT, "%s is %s, not an osprey model or checkpoint (.osp, "
                         "safetensors)", name, what);
    }
}

/* Takes ownership of buf (osp_alloc'd), also on failure. */
static int parse_owned(unsigned char *buf, size_t len, const char *name, osp_safetensors **out) {
    if (len < 10 || osp__load_le64(buf) > len - 8 || buf[8] != '{') {
        int rc = not_safetensors(buf, len, name);
        if (rc) {
            osp_free(buf);
            return rc;
        }
    }
    if (len < 8) {
        osp_free(buf);
        return osp_error(OSP_EFORMAT, "%s: %zu bytes is too short for a safetensors file", name,
                         len);
    }
    uint64_t header_len = osp__load_le64(buf);
    if (header_len > ST_MAX_HEADER) {
        osp_free(buf);
        return osp_error(OSP_EFORMAT, "%s: safetensors header length %llu is over the limit "
                         "of %u bytes", name, (unsigned long long)header_len, ST_MAX_HEADER);
    }
    if (header_len > len - 8) {
        osp_free(buf);
        return osp_error(OSP_EFORMAT, "%s: safetensors header length %llu exceeds the file "
                         "size %zu", name, (unsigned long long)header_len, len);
    }
    osp_safetensors *st = calloc(1, sizeof *st);
    if (!st) {
        osp_free(buf);
        return osp_error(OSP_ENOMEM, "%s: out of memory", name);
    }
    st->buf = buf;
    st->len = len;
    size_t data_start = 8 + (size_t)header_len;
    int rc = parse_header(st, (const char *)buf + 8, (size_t)header_len, buf + data_start,
                          len - data_start, name);
    if (rc != OSP_OK) {
        osp_st_free(st);
        return rc;
    }
    *out = st;
    return OSP_OK;
}

int osp_st_parse(const void *buf, size_t len, const char *name, osp_safetensors **out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_st_parse: no output");
    *out = NULL;
    if (!name) name = "(memory)";
    if (!buf && len > 0) return osp_error(OSP_EINVAL, "%s: NULL buffer", name);
    unsigned char *copy = osp_alloc(len);
    if (!copy) return osp_error(OSP_ENOMEM, "%s: out of memory for %zu bytes", name, len);
    if (len) memcpy(copy, buf, len);
    return parse_owned(copy, len, name, out);
}

int osp_st_load(const char *path, osp_safetensors **out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_st_load: no output");
    *out = NULL;
    void *buf;
    size_t len;
    int rc = osp_file_read_all(path, SIZE_MAX, &buf, &len);
    if (rc != OSP_OK) return rc;
    return parse_owned(buf, len, path, out);
}

void osp_st_free(osp_safetensors *st) {
    if (!st) return;
    cJSON_Delete(st->root);
    free(st->tensors);
    free(st->by_name);
    free(st->meta);
    osp_free(st->buf);
    free(st);
}

int osp_st_count(const osp_safetensors *st) { return st ? st->n_tensors : 0; }

const osp_st_tensor *osp_st_get(const osp_safetensors *st, int i) {
    if (!st || i < 0 || i >= st->n_tensors) return NULL;
    return &st->tensors[i];
}

const osp_st_tensor *osp_st_find(const osp_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    osp_st_tensor key = {.name = name};
    const osp_st_tensor *pkey = &key;
    const osp_st_tensor **hit =
        bsearch(&pkey, st->by_name, (size_t)st->n_tensors, sizeof *st->by_name, cmp_name);
    return hit ? *hit : NULL;
}

const char *osp_st_meta(const osp_safetensors *st, const char *key) {
    if (!st || !key || !st->meta) return NULL;
    st_meta probe = {.key = key};
    const st_meta *hit = bsearch(&probe, st->meta, (size_t)st->n_meta, sizeof *st->meta, cmp_meta);
    return hit ? hit->value : NULL;
}

int osp_st_meta_count(const osp_safetensors *st) { return st ? st->n_meta : 0; }

const char *osp_st_meta_key(const osp_safetensors *st, int i) {
    if (!st || i < 0 || i >= st->n_meta) return NULL;
    return st->meta[i].key;
}

/* ---- writing ------------------------------------------------------------ */

typedef struct st_entry {
    char *name;
    osp_dtype dtype;
    osp_shape shape;
    const void *data; /* borrowed */
    size_t nbytes;
} st_entry;

struct osp_st_writer {
    st_entry *entries;
    int n, cap;
    cJSON *meta; /* object of strings */
};

int osp_st_writer_new(osp_st_writer **out) {
    *out = NULL;
    osp_st_writer *w = calloc(1, sizeof *w);
    if (!w) return osp_error(OSP_ENOMEM, "out of memory for a safetensors writer");
    w->meta = cJSON_CreateObject();
    if (!w->meta) {
        free(w);
        return osp_error(OSP_ENOMEM, "out of memory for a safetensors writer");
    }
    *out = w;
    return OSP_OK;
}

void osp_st_writer_free(osp_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->entries[i].name);
    free(w->entries);
    cJSON_Delete(w->meta);
    free(w);
}

int osp_st_writer_add(osp_st_writer *w, const char *name, osp_dtype dtype, const osp_shape *shape,
                      const void *data) {
    if (!w || !name || !shape) return osp_error(OSP_EINVAL, "osp_st_writer_add: missing argument");
    if (!*name || strcmp(name, "__metadata__") == 0)
        return osp_error(OSP_EINVAL, "safetensors: '%s' cannot name a tensor", name);
    if (!utf8_valid((const unsigned char *)name, strlen(name)))
        return osp_error(OSP_EINVAL, "safetensors: tensor name is not valid UTF-8");
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->entries[i].name, name) == 0)
            return osp_error(OSP_EINVAL, "safetensors: tensor '%s' added twice", name);
    size_t nbytes;
    int rc = osp__array_nbytes(dtype, shape, name, &nbytes);
    if (rc != OSP_OK) return rc;
    if (nbytes > 0 && !data)
        return osp_error(OSP_EINVAL, "safetensors: tensor '%s' has no data", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        st_entry *e = realloc(w->entries, (size_t)cap * sizeof *e);
        if (!e) return osp_error(OSP_ENOMEM, "safetensors: out of memory adding '%s'", name);
        w->entries = e;
        w->cap = cap;
    }
    size_t name_len = strlen(name) + 1;
    char *copy = malloc(name_len);
    if (!copy) return osp_error(OSP_ENOMEM, "safetensors: out of memory adding '%s'", name);
    memcpy(copy, name, name_len);
    w->entries[w->n++] = (st_entry){copy, dtype, *shape, data, nbytes};
    return OSP_OK;
}

int osp_st_writer_meta(osp_st_writer *w, const char *key, const char *value) {
    if (!w || !key || !value) return osp_error(OSP_EINVAL, "osp_st_writer_meta: missing argument");
    if (!utf8_valid((const unsigned char *)key, strlen(key)) ||
        !utf8_valid((const unsigned char *)value, strlen(value)))
        return osp_error(OSP_EINVAL, "safetensors: metadata '%s' is not valid UTF-8", key);
    cJSON *s = cJSON_CreateString(value);
    if (!s) return osp_error(OSP_ENOMEM, "safetensors: out of memory for metadata '%s'", key);
    /* A key set twice keeps the last value, as a dict would. */
    int ok = cJSON_GetObjectItemCaseSensitive(w->meta, key)
                 ? cJSON_ReplaceItemInObjectCaseSensitive(w->meta, key, s)
                 : cJSON_AddItemToObject(w->meta, key, s);
    if (!ok) {
        cJSON_Delete(s);
        return osp_error(OSP_ENOMEM, "safetensors: out of memory for metadata '%s'", key);
    }
    return OSP_OK;
}

/* Appends v to arr as an exact integer: cJSON would print doubles, and
 * offsets past 2^31 must not come out in exponent form. */
static int add_int(cJSON *arr, uint64_t v) {
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)v);
    cJSON *raw = cJSON_CreateRaw(text);
    return raw && cJSON_AddItemToArray(arr, raw);
}

/* The header JSON, or NULL (out of memory). */
static char *build_header(const osp_st_writer *w) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    int ok = 1;
    if (w->meta->child) {
        cJSON *meta = cJSON_Duplicate(w->meta, 1);
        ok = meta && cJSON_AddItemToObject(root, "__metadata__", meta);
    }
    uint64_t offset = 0;
    for (int i = 0; ok && i < w->n; i++) {
        const st_entry *e = &w->entries[i];
        cJSON *t = cJSON_AddObjectToObject(root, e->name);
        ok = t && cJSON_AddStringToObject(t, "dtype", osp_dtype_name(e->dtype));
        cJSON *shape = ok ? cJSON_AddArrayToObject(t, "shape") : NULL;
        ok = ok && shape;
        for (int d = 0; ok && d < e->shape.ndim; d++)
            ok = add_int(shape, (uint64_t)e->shape.dim[d]);
        cJSON *offsets = ok ? cJSON_AddArrayToObject(t, "data_offsets") : NULL;
        ok = ok && offsets && add_int(offsets, offset) && add_int(offsets, offset + e->nbytes);
        offset += e->nbytes;
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return text;
}

int osp_st_writer_save(osp_st_writer *w, const char *path) {
    if (!w || !path) return osp_error(OSP_EINVAL, "osp_st_writer_save: missing argument");
    char *header = build_header(w);
    if (!header) return osp_error(OSP_ENOMEM, "%s: out of memory building the header", path);
    size_t len = strlen(header);
    /* Spaces up to a multiple of 8 keep the data area 8-byte aligned. */
    size_t padded = (len + 7) / 8 * 8;
    unsigned char prefix[8];
    for (int i = 0; i < 8; i++) prefix[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";
    osp_atomic_file f;
    int rc = osp_atomic_open(&f, path);
    if (rc == OSP_OK) rc = osp_atomic_write(&f, prefix, sizeof prefix);
    if (rc == OSP_OK) rc = osp_atomic_write(&f, header, len);
    if (rc == OSP_OK) rc = osp_atomic_write(&f, spaces, padded - len);
    for (int i = 0; rc == OSP_OK && i < w->n; i++)
        rc = osp_atomic_write(&f, w->entries[i].data, w->entries[i].nbytes);
    cJSON_free(header);
    if (rc != OSP_OK) {
        osp_atomic_abort(&f);
        return rc;
    }
    return osp_atomic_commit(&f);
}
