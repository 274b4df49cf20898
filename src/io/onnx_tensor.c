/* ONNX tensors and attributes, read with every size checked: a tensor's
 * declared dims must match the data it carries, whatever the file says. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/onnx_impl.h"

int osp__onnx_const_alloc(onnx_const *c, int ndim, const int64_t *dim, int is_int) {
    memset(c, 0, sizeof *c);
    if (ndim < 0 || ndim > ONNX_MAX_RANK)
        return osp_error(OSP_ERANGE, "a constant of rank %d (at most %d)", ndim, ONNX_MAX_RANK);
    int64_t numel = 1;
    for (int k = 0; k < ndim; k++) {
        if (dim[k] < 0 || dim[k] > ONNX_MAX_ELEMENTS)
            return osp_error(OSP_ERANGE, "a constant with dimension %lld", (long long)dim[k]);
        c->dim[k] = dim[k];
        numel *= dim[k];
        if (numel > ONNX_MAX_ELEMENTS)
            return osp_error(OSP_ERANGE, "a constant of more than %lld elements",
                             (long long)ONNX_MAX_ELEMENTS);
    }
    c->ndim = ndim;
    c->numel = numel;
    c->is_int = is_int;
    size_t bytes = (size_t)(numel ? numel : 1) * (is_int ? sizeof(int64_t) : sizeof(float));
    void *p = osp_calloc(1, bytes);
    if (!p) return OSP_ENOMEM;
    if (is_int) c->i = p;
    else c->f = p;
    return OSP_OK;
}

void osp__onnx_const_free(onnx_const *c) {
    osp_free(c->f);
    osp_free(c->i);
    memset(c, 0, sizeof *c);
}

double osp__onnx_const_get(const onnx_const *c, int64_t i) {
    return c->is_int ? (double)c->i[i] : (double)c->f[i];
}

/* Bytes per element of the types a constant may have. */
static size_t elem_size(int32_t type) {
    switch (type) {
    case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return 4;
    case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return 8;
    case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return 8;
    case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT32: return 4;
    case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT8: return 1;
    case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__UINT8: return 1;
    case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: return 1;
    default: return 0;
    }
}

/* n little-endian elements of `type` (es bytes each) into the constant;
 * ONNX raw data is little-endian, as is every machine osprey runs on. */
static void convert_raw(int32_t type, size_t es, const uint8_t *p, int64_t n, onnx_const *out) {
    for (int64_t k = 0; k < n; k++, p += es) {
        switch (type) {
        case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: memcpy(&out->f[k], p, 4); break;
        case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: {
            double d;
            memcpy(&d, p, 8);
            out->f[k] = (float)d;
            break;
        }
        case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT64: memcpy(&out->i[k], p, 8); break;
        case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT32: {
            int32_t v;
            memcpy(&v, p, 4);
            out->i[k] = v;
            break;
        }
        case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT8: out->i[k] = (int8_t)*p; break;
        default: out->i[k] = *p; break;
        }
    }
}

/* A non-negative decimal that fits in int64, or -1. */
static int64_t parse_count(const char *s) {
    if (!s || !*s) return -1;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

/* A location the model may name: a relative path below the model's folder
 * (no absolute path, no ".." component, no empty name), as ONNX requires;
 * a hostile model must not read /etc/shadow through it. */
static int location_ok(const char *loc) {
    if (!loc || !*loc || loc[0] == '/' || strlen(loc) >= 1024) return 0;
    for (const char *c = loc; *c;) {
        const char *end = strchr(c, '/');
        size_t len = end ? (size_t)(end - c) : strlen(c);
        if (len == 2 && c[0] == '.' && c[1] == '.') return 0;
        if (!end) break;
        c = end + 1;
    }
    return 1;
}

/* The tensor's data from the file its external_data names (location,
 * offset, length), every number checked against the file and the
 * importer's limit. */
static int read_external(const onnx_importer *im, const Osp__Onnx__TensorProto *t, const char *name,
                         int32_t type, size_t es, onnx_const *out) {
    const char *loc = NULL;
    int64_t offset = 0, length = -1;
    for (size_t k = 0; k < t->n_external_data; k++) {
        const Osp__Onnx__StringStringEntryProto *e = t->external_data[k];
        if (!e || !e->key) continue;
        if (!strcmp(e->key, "location")) loc = e->value;
        else if (!strcmp(e->key, "offset")) offset = parse_count(e->value);
        else if (!strcmp(e->key, "length")) length = parse_count(e->value);
    }
    if (!im->dir)
        return osp_error(OSP_ENOTSUP, "%s: tensor '%s' keeps its data in an external file; "
                         "import the model from its file so that the data can be found",
                         im->file, name);
    if (!location_ok(loc))
        return osp_error(OSP_ECORRUPT, "%s: tensor '%s' names its external data '%s': a "
                         "relative path below the model's folder is required", im->file, name,
                         loc ? loc : "");
    const uint64_t want = (uint64_t)out->numel * es;
    if (offset < 0 || (length >= 0 && (uint64_t)length != want))
        return osp_error(OSP_ECORRUPT, "%s: tensor '%s': its external data's offset or length "
                         "does not fit its %lld elements", im->file, name, (long long)out->numel);
    if (want > im->external_max - *im->external_read)
        return osp_error(OSP_ERANGE, "%s: more than %zu bytes of external data", im->file,
                         im->external_max);
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", im->dir, loc) >= (int)sizeof path)
        return osp_error(OSP_ERANGE, "%s: tensor '%s': the path of its data is too long", im->file,
                         name);
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) return osp_error(OSP_EIO, "%s: tensor '%s': cannot open its data %s: %s", im->file,
                                 name, path, strerror(errno));
    int rc = OSP_OK;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode))
        rc = osp_error(OSP_EFORMAT, "%s: tensor '%s': its data %s is not a file", im->file, name,
                       path);
    else if ((uint64_t)offset > (uint64_t)st.st_size || want > (uint64_t)st.st_size - (uint64_t)offset)
        rc = osp_error(OSP_ECORRUPT, "%s: tensor '%s': its data %s holds %lld bytes, not %llu "
                       "from offset %lld", im->file, name, path, (long long)st.st_size,
                       (unsigned long long)want, (long long)offset);
    /* float32 lands in place; other types through a buffer, converted */
    uint8_t *buf = NULL;
    if (!rc && type != OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT &&
        !(buf = osp_alloc(want ? (size_t)want : 1)))
        rc = OSP_ENOMEM;
    uint8_t *dst = buf ? buf : (uint8_t *)out->f;
    for (uint64_t got = 0; !rc && got < want;) {
        const size_t chunk = want - got > ((size_t)1 << 30) ? (size_t)1 << 30 : (size_t)(want - got);
        const ssize_t r = pread(fd, dst + got, chunk, (off_t)((uint64_t)offset + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            rc = osp_error(OSP_EIO, "%s: tensor '%s': reading %s: %s", im->file, name, path,
                           r < 0 ? strerror(errno) : "the file ended early");
        else got += (uint64_t)r;
    }
    close(fd);
    if (!rc && buf) convert_raw(type, es, buf, out->numel, out);
    osp_free(buf);
    if (!rc) *im->external_read += (size_t)want;
    return rc;
}

int osp__onnx_const_from_tensor(const onnx_importer *im, const Osp__Onnx__TensorProto *t,
                                onnx_const *out) {
    const char *name = t->name ? t->name : "(unnamed)";
    memset(out, 0, sizeof *out);
    int32_t type = t->has_data_type ? t->data_type : 0;
    size_t es = elem_size(type);
    if (!es)
        return osp_error(OSP_ENOTSUP, "%s: tensor '%s' has data type %d; osprey reads float, "
                         "double and integer tensors", im->file, name, (int)type);
    const int external = t->has_data_location &&
                         t->data_location == OSP__ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    if (t->segment)
        return osp_error(OSP_ENOTSUP, "%s: tensor '%s' is segmented", im->file, name);
    if (t->n_dims > ONNX_MAX_RANK)
        return osp_error(OSP_ERANGE, "%s: tensor '%s' has %zu dimensions (at most %d)", im->file,
                         name, t->n_dims, ONNX_MAX_RANK);
    int is_int = type != OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT &&
                 type != OSP__ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE;
    int rc = osp__onnx_const_alloc(out, (int)t->n_dims, t->dims, is_int);
    if (rc) return osp_error(rc, "%s: tensor '%s': %s", im->file, name, osp_last_error());
    int64_t n = out->numel;
    if (external) {
        if ((rc = read_external(im, t, name, type, es, out))) osp__onnx_const_free(out);
        return rc;
    }
    if (t->has_raw_data) {
        if ((uint64_t)t->raw_data.len != (uint64_t)n * es) {
            osp__onnx_const_free(out);
            return osp_error(OSP_ECORRUPT, "%s: tensor '%s' declares %lld elements but holds "
                             "%zu bytes of data", im->file, name, (long long)n, t->raw_data.len);
        }
        convert_raw(type, es, t->raw_data.data, n, out);
        return OSP_OK;
    }
    size_t have;
    switch (type) {
    case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: have = t->n_float_data; break;
    case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: have = t->n_double_data; break;
    case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT64: have = t->n_int64_data; break;
    default: have = t->n_int32_data; break; /* int32, int8, uint8, bool */
    }
    if ((uint64_t)have != (uint64_t)n) {
        osp__onnx_const_free(out);
        return osp_error(OSP_ECORRUPT, "%s: tensor '%s' declares %lld elements but holds %zu",
                         im->file, name, (long long)n, have);
    }
    for (int64_t k = 0; k < n; k++) {
        switch (type) {
        case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: out->f[k] = t->float_data[k]; break;
        case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
            out->f[k] = (float)t->double_data[k];
            break;
        case OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT64: out->i[k] = t->int64_data[k]; break;
        default: out->i[k] = t->int32_data[k]; break;
        }
    }
    return OSP_OK;
}

const Osp__Onnx__AttributeProto *osp__onnx_attr(const Osp__Onnx__NodeProto *n, const char *name) {
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, name)) return n->attribute[i];
    return NULL;
}

int64_t osp__onnx_attr_int(const Osp__Onnx__NodeProto *n, const char *name, int64_t def) {
    const Osp__Onnx__AttributeProto *a = osp__onnx_attr(n, name);
    return a && a->has_i ? a->i : def;
}

float osp__onnx_attr_float(const Osp__Onnx__NodeProto *n, const char *name, float def) {
    const Osp__Onnx__AttributeProto *a = osp__onnx_attr(n, name);
    return a && a->has_f ? a->f : def;
}

const int64_t *osp__onnx_attr_ints(const Osp__Onnx__NodeProto *n, const char *name,
                                   size_t *count) {
    const Osp__Onnx__AttributeProto *a = osp__onnx_attr(n, name);
    *count = a ? a->n_ints : 0;
    return a && a->n_ints ? a->ints : NULL;
}

const char *osp__onnx_attr_string(const Osp__Onnx__NodeProto *n, const char *name, const char *def,
                                  char *buf, size_t len) {
    const Osp__Onnx__AttributeProto *a = osp__onnx_attr(n, name);
    if (!a || !a->has_s) return def;
    size_t k = a->s.len < len - 1 ? a->s.len : len - 1;
    memcpy(buf, a->s.data, k);
    buf[k] = '\0';
    return buf;
}

const char *osp__onnx_node_desc(const Osp__Onnx__NodeProto *n, char *buf, size_t len) {
    const char *name = n->name && *n->name ? n->name
                       : n->n_output && n->output[0] ? n->output[0] : "(unnamed)";
    snprintf(buf, len, "node '%.100s' (%.40s)", name, n->op_type ? n->op_type : "?");
    return buf;
}
