/* NumPy .npy files: a magic string, a version, a header that is a Python
 * dict literal ({'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), })
 * padded with spaces and a newline, then the raw C-order array. */
#include <stdio.h>
#include <string.h>

#include "io/io_impl.h"

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* Header dicts longer than this are not something NumPy writes for the
 * dtypes we read; refusing them bounds the parser's work. */
#define NPY_MAX_HEADER (1u << 20)

/* ---- the header dict ---------------------------------------------------- */

typedef struct header_parser {
    const char *p, *end;
    const char *name; /* for messages */
} header_parser;

static void skip_space(header_parser *h) {
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n' || *h->p == '\r'))
        h->p++;
}

/* Consumes c (after any spaces); returns 1 if it was there. */
static int accept(header_parser *h, char c) {
    skip_space(h);
    if (h->p < h->end && *h->p == c) {
        h->p++;
        return 1;
    }
    return 0;
}

static int fail(header_parser *h, const char *what) {
    return osp_error(OSP_EFORMAT, "%s: bad .npy header: %s", h->name, what);
}

/* A quoted Python string without escapes, copied into buf. */
static int parse_string(header_parser *h, char *buf, size_t cap) {
    skip_space(h);
    if (h->p >= h->end || (*h->p != '\'' && *h->p != '"')) return fail(h, "expected a string");
    char quote = *h->p++;
    size_t n = 0;
    while (h->p < h->end && *h->p != quote) {
        if (*h->p == '\\' || n + 1 >= cap) return fail(h, "unexpected string");
        buf[n++] = *h->p++;
    }
    if (h->p >= h->end) return fail(h, "unterminated string");
    h->p++;
    buf[n] = '\0';
    return OSP_OK;
}

static int parse_bool(header_parser *h, int *out) {
    skip_space(h);
    size_t left = (size_t)(h->end - h->p);
    if (left >= 4 && memcmp(h->p, "True", 4) == 0) {
        h->p += 4;
        *out = 1;
        return OSP_OK;
    }
    if (left >= 5 && memcmp(h->p, "False", 5) == 0) {
        h->p += 5;
        *out = 0;
        return OSP_OK;
    }
    return fail(h, "fortran_order is not True or False");
}

/* A tuple of non-negative integers: (), (3,), (3, 4) or (3, 4,). */
static int parse_shape(header_parser *h, osp_shape *shape) {
    shape->ndim = 0;
    if (!accept(h, '(')) return fail(h, "shape is not a tuple");
    if (accept(h, ')')) return OSP_OK;
    for (;;) {
        skip_space(h);
        if (h->p >= h->end || *h->p < '0' || *h->p > '9')
            return fail(h, "shape holds something other than a non-negative integer");
        int64_t v = 0;
        while (h->p < h->end && *h->p >= '0' && *h->p <= '9') {
            int digit = *h->p++ - '0';
            if (v > (INT64_MAX - digit) / 10)
                return osp_error(OSP_ERANGE, "%s: .npy shape dimension is too large", h->name);
            v = v * 10 + digit;
        }
        if (shape->ndim == OSP_MAX_DIMS)
            return osp_error(OSP_ENOTSUP, "%s: .npy array has more than %d dimensions", h->name,
                             OSP_MAX_DIMS);
        shape->dim[shape->ndim++] = v;
        if (accept(h, ')')) break;
        if (!accept(h, ',')) return fail(h, "shape is not a tuple");
        if (accept(h, ')')) break;
    }
    /* Python writes a one-element tuple as (3,): a bare (3) is an int. */
    return OSP_OK;
}

static int parse_descr(const char *descr, const char *name, osp_dtype *out) {
    static const struct {
        const char *descr;
        osp_dtype dtype;
    } known[] = {
        {"<f4", OSP_DTYPE_F32}, {"<f8", OSP_DTYPE_F64}, {"<i4", OSP_DTYPE_I32},
        {"<i8", OSP_DTYPE_I64}, {"|u1", OSP_DTYPE_U8},  {"<u1", OSP_DTYPE_U8},
        {"<f2", OSP_DTYPE_F16},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(descr, known[i].descr) == 0) {
            *out = known[i].dtype;
            return OSP_OK;
        }
    if (descr[0] == '>')
        return osp_error(OSP_ENOTSUP, "%s: big-endian .npy arrays ('%s') are not supported", name,
                         descr);
    return osp_error(OSP_ENOTSUP,
                     "%s: unsupported .npy dtype '%s' (expected <f4, <f8, <f2, <i4, <i8 or |u1)", name,
                     descr);
}

/* Parses the dict into dtype and shape; every key exactly once, no others. */
static int parse_header(const char *text, size_t len, const char *name, osp_dtype *dtype,
                        osp_shape *shape) {
    header_parser h = {text, text + len, name};
    int have_descr = 0, have_order = 0, have_shape = 0, fortran = 0;
    char descr[16];
    int rc;
    if (!accept(&h, '{')) return fail(&h, "not a dict");
    while (!accept(&h, '}')) {
        char key[32];
        if ((rc = parse_string(&h, key, sizeof key)) != OSP_OK) return rc;
        if (!accept(&h, ':')) return fail(&h, "expected ':' after a key");
        if (strcmp(key, "descr") == 0 && !have_descr) {
            if ((rc = parse_string(&h, descr, sizeof descr)) != OSP_OK) return rc;
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
            if ((rc = parse_bool(&h, &fortran)) != OSP_OK) return rc;
            have_order = 1;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            if ((rc = parse_shape(&h, shape)) != OSP_OK) return rc;
            have_shape = 1;
        } else {
            return osp_error(OSP_EFORMAT, "%s: bad .npy header: unexpected or repeated key '%s'",
                             name, key);
        }
        if (!accept(&h, ',')) {
            if (!accept(&h, '}')) return fail(&h, "expected ',' or '}'");
            break;
        }
    }
    skip_space(&h);
    if (h.p != h.end) return fail(&h, "text after the dict");
    if (!have_descr || !have_order || !have_shape)
        return fail(&h, "missing one of 'descr', 'fortran_order', 'shape'");
    if (fortran)
        return osp_error(OSP_ENOTSUP, "%s: Fortran-order .npy arrays are not supported", name);
    return parse_descr(descr, name, dtype);
}

/* ---- reading ------------------------------------------------------------ */

int osp_npy_parse(const void *buf, size_t len, const char *name, osp_array *out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_npy_parse: no output");
    memset(out, 0, sizeof *out);
    if (!name) name = "(memory)";
    if (!buf && len > 0) return osp_error(OSP_EINVAL, "%s: NULL buffer", name);
    const unsigned char *b = buf;
    if (len < 10 || memcmp(b, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
        return osp_error(OSP_EFORMAT, "%s: not a .npy file (bad magic)", name);
    unsigned major = b[6], minor = b[7];
    size_t start, header_len;
    if (major == 1 && minor == 0) {
        start = 10;
        header_len = (size_t)b[8] | (size_t)b[9] << 8;
    } else if ((major == 2 || major == 3) && minor == 0) {
        if (len < 12) return osp_error(OSP_EFORMAT, "%s: truncated .npy header", name);
        start = 12;
        header_len = osp__load_le32(b + 8);
    } else {
        return osp_error(OSP_ENOTSUP, "%s: unsupported .npy version %u.%u", name, major, minor);
    }
    if (header_len > len - start)
        return osp_error(OSP_EFORMAT, "%s: .npy header of %zu bytes runs past the end of the "
                         "file (%zu bytes)", name, header_len, len);
    if (header_len > NPY_MAX_HEADER)
        return osp_error(OSP_EFORMAT, "%s: .npy header of %zu bytes is too large", name,
                         header_len);

    osp_dtype dtype = OSP_DTYPE_F32;
    osp_shape shape = {0};
    int rc = parse_header((const char *)b + start, header_len, name, &dtype, &shape);
    if (rc != OSP_OK) return rc;
    size_t nbytes;
    if ((rc = osp__array_nbytes(dtype, &shape, name, &nbytes)) != OSP_OK) return rc;
    size_t data_len = len - start - header_len;
    if (nbytes != data_len)
        return osp_error(OSP_EFORMAT, "%s: .npy data is %zu bytes, expected %zu for its shape",
                         name, data_len, nbytes);
    void *data = osp_alloc(nbytes);
    if (!data) return osp_error(OSP_ENOMEM, "%s: out of memory for %zu bytes", name, nbytes);
    if (nbytes) memcpy(data, b + start + header_len, nbytes);
    out->dtype = dtype;
    out->shape = shape;
    out->data = data;
    return OSP_OK;
}

int osp_npy_read(const char *path, osp_array *out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_npy_read: no output");
    memset(out, 0, sizeof *out);
    osp_mapped_file m;
    int rc = osp_file_map(path, &m);
    if (rc != OSP_OK) return rc;
    rc = osp_npy_parse(m.data, m.len, path, out);
    osp_file_unmap(&m);
    return rc;
}

/* ---- writing ------------------------------------------------------------ */

static const char *descr_of(osp_dtype t) {
    switch (t) {
    case OSP_DTYPE_F32: return "<f4";
    case OSP_DTYPE_F64: return "<f8";
    case OSP_DTYPE_I32: return "<i4";
    case OSP_DTYPE_I64: return "<i8";
    case OSP_DTYPE_U8: return "|u1";
    case OSP_DTYPE_F16: return "<f2";
    }
    return "?";
}

/* Writes the 10-byte preamble and the dict, padded with spaces to end in a
 * newline at a multiple of 64 bytes, as NumPy does; returns the total. */
static size_t format_header(char *buf, size_t cap, osp_dtype dtype, const osp_shape *shape) {
    char dims[OSP_MAX_DIMS * 24 + 4];
    size_t n = 0;
    dims[n++] = '(';
    for (int i = 0; i < shape->ndim; i++)
        n += (size_t)snprintf(dims + n, sizeof dims - n, i ? ", %lld" : "%lld",
                              (long long)shape->dim[i]);
    if (shape->ndim == 1) dims[n++] = ',';
    dims[n++] = ')';
    dims[n] = '\0';
    memcpy(buf, NPY_MAGIC "\x01\x00", 8);
    int dict = snprintf(buf + 10, cap - 10,
                        "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr_of(dtype),
                        dims);
    size_t total = 10 + (size_t)dict + 1; /* + the newline */
    size_t padded = (total + 63) / 64 * 64;
    memset(buf + 10 + dict, ' ', padded - total);
    buf[padded - 1] = '\n';
    size_t header_len = padded - 10;
    buf[8] = (char)(header_len & 0xff);
    buf[9] = (char)(header_len >> 8);
    return padded;
}

static int write_array(const char *path, osp_dtype dtype, const osp_shape *shape,
                       const void *data) {
    if (!path || !shape) return osp_error(OSP_EINVAL, "osp_npy_write: no path or shape");
    size_t nbytes;
    int rc = osp__array_nbytes(dtype, shape, path, &nbytes);
    if (rc != OSP_OK) return rc;
    if (nbytes > 0 && !data) return osp_error(OSP_EINVAL, "%s: array has no data", path);
    char header[512]; /* at most 8 dims of 20 digits: far below 512 */
    size_t header_size = format_header(header, sizeof header, dtype, shape);
    osp_atomic_file f;
    if ((rc = osp_atomic_open(&f, path)) != OSP_OK) return rc;
    if ((rc = osp_atomic_write(&f, header, header_size)) != OSP_OK ||
        (rc = osp_atomic_write(&f, data, nbytes)) != OSP_OK) {
        osp_atomic_abort(&f);
        return rc;
    }
    return osp_atomic_commit(&f);
}

int osp_npy_write(const char *path, const osp_array *a) {
    if (!a) return osp_error(OSP_EINVAL, "osp_npy_write: no array");
    return write_array(path, a->dtype, &a->shape, a->data);
}

int osp_npy_write_f32(const char *path, const float *data, const osp_shape *shape) {
    return write_array(path, OSP_DTYPE_F32, shape, data);
}
