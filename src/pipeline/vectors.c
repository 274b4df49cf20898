/* Reading an output folder's vectors: the committed rows of vectors.npy and
 * ids.npy, checked against the catalogue; and the content hash of a model
 * that a folder records as model_sha256. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "folder.h"
#include "pipeline_impl.h"
#include "osprey/graph.h"
#include "osprey/hash.h"

/* ---- settings ---------------------------------------------------------------- */

static int bad_setting(osp_catalog *c, const char *key, const char *value) {
    if (!value)
        return osp_error(OSP_ECORRUPT, "%s/catalog.db: no setting '%s'", c->dir, key);
    return osp_error(OSP_ECORRUPT, "%s/catalog.db: setting %s = '%s' is not valid", c->dir, key, value);
}

int osp__folder_layout(osp_catalog *c, int *tags, int64_t *dim, osp_dtype *dtype) {
    const char *t = osp_catalog_setting(c, "tags");
    if (!t || (strcmp(t, "0") && strcmp(t, "1"))) return bad_setting(c, "tags", t);
    *tags = t[0] == '1';
    const char *d = osp_catalog_setting(c, "dim");
    char *end = NULL;
    errno = 0;
    long long v = d ? strtoll(d, &end, 10) : -1;
    if (!d || !*d || errno || *end || v < 0 || v > OSP__FOLDER_MAX_DIM) return bad_setting(c, "dim", d);
    *dim = v;
    const char *ty = osp_catalog_setting(c, "dtype");
    if (ty && !strcmp(ty, "float32")) *dtype = OSP_DTYPE_F32;
    else if (ty && !strcmp(ty, "float16")) *dtype = OSP_DTYPE_F16;
    else if (ty && !strcmp(ty, "uint8")) *dtype = OSP_DTYPE_U8; /* packed binary codes */
    else if (v == 0 && ty && !*ty) *dtype = OSP_DTYPE_F32; /* no vectors: no dtype either */
    else return bad_setting(c, "dtype", ty);
    return OSP_OK;
}

/* ---- the .npy files ------------------------------------------------------------- */

int osp__folder_read(int fd, void *buf, size_t len, off_t at, const char *dir, const char *name) {
    char *p = buf;
    while (len > 0) {
        ssize_t r = pread(fd, p, len, at);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return osp_error(OSP_EIO, "%s/%s: %s", dir, name, strerror(errno));
        if (r == 0)
            return osp_error(OSP_ECORRUPT, "%s/%s ends at byte %lld, before what the catalogue committed",
                             dir, name, (long long)at);
        p += r;
        len -= (size_t)r;
        at += r;
    }
    return OSP_OK;
}

/* The row count a header written by osp__npy_header claims, or -1. */
static int64_t header_rows(const char *h) {
    char text[OSP__NPY_HEADER + 1];
    memcpy(text, h, OSP__NPY_HEADER);
    text[OSP__NPY_HEADER] = '\0';
    for (int i = 0; i < 10; i++) text[i] = ' '; /* magic and lengths hold NULs */
    static const char key[] = "'shape': (";
    const char *s = strstr(text, key);
    if (!s) return -1;
    s += sizeof key - 1;
    if (*s < '0' || *s > '9') return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno) return -1;
    return v;
}

int osp__folder_npy_open(const char *dir, const char *name, osp_dtype dtype, int64_t dim, int64_t rows,
                         int *fd) {
    *fd = -1;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return osp_error(OSP_EINVAL, "%s: path too long", dir);
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0) {
        if (errno == ENOENT && rows == 0) return OSP_OK;
        if (errno == ENOENT)
            return osp_error(OSP_ECORRUPT, "%s is missing, but the catalogue committed %lld rows", path,
                             (long long)rows);
        return osp_error(OSP_EIO, "%s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(f, &st) != 0) {
        int rc = osp_error(OSP_EIO, "%s: %s", path, strerror(errno));
        close(f);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        close(f);
        return osp_error(OSP_EFORMAT, "%s is not a regular file", path);
    }
    char h[OSP__NPY_HEADER];
    int rc = OSP_OK;
    if (st.st_size < OSP__NPY_HEADER) {
        rc = osp_error(OSP_ECORRUPT, "%s has %lld bytes, less than its %d-byte header", path,
                       (long long)st.st_size, OSP__NPY_HEADER);
    } else {
        rc = osp__folder_read(f, h, sizeof h, 0, dir, name);
    }
    if (!rc) {
        /* The header the pipeline writes for this dtype and dim, at the
         * row count this one claims: anything else is another file. */
        int64_t claimed = header_rows(h);
        char want[OSP__NPY_HEADER];
        if (claimed >= 0) osp__npy_header(want, dtype, claimed, dim);
        if (claimed < 0 || memcmp(h, want, sizeof want)) {
            char shown[OSP__NPY_HEADER];
            size_t n = 0;
            for (size_t i = 10; i < sizeof h && n + 2 < sizeof shown; i++) {
                shown[n++] = h[i] >= 32 && h[i] < 127 ? h[i] : '?';
                if (h[i] == '}') break;
            }
            shown[n] = '\0';
            char what[64];
            if (dtype == OSP_DTYPE_I64) snprintf(what, sizeof what, "int64 ids");
            else snprintf(what, sizeof what, "%s, dim %lld", dtype == OSP_DTYPE_F16 ? "float16" : "float32",
                          (long long)dim);
            rc = osp_error(OSP_EFORMAT, "%s: its header %s does not match its catalog.db (%s)", path,
                           memcmp(h, "\x93NUMPY", 6) ? "(not .npy)" : shown, what);
        }
    }
    if (!rc) {
        /* rows x dim x size + header, overflow-checked, within the file */
        size_t row_bytes = (size_t)(dim > 0 ? dim : 1) * osp_dtype_size(dtype), need = 0;
        if (osp_mul_size((size_t)rows, row_bytes, &need) || need > (size_t)INT64_MAX - OSP__NPY_HEADER ||
            (int64_t)need + OSP__NPY_HEADER > (int64_t)st.st_size)
            rc = osp_error(OSP_ECORRUPT, "%s has %lld bytes: fewer rows than the %lld the catalogue committed",
                           path, (long long)st.st_size, (long long)rows);
    }
    if (rc) {
        close(f);
        return rc;
    }
    *fd = f;
    return OSP_OK;
}

/* Converts n rows of dim elements of dtype at raw to float32 at out. */
static void to_float(const void *raw, osp_dtype dtype, size_t count, float *out) {
    if (dtype == OSP_DTYPE_F16) osp_float_from_half(raw, out, (int64_t)count);
    else if (dtype == OSP_DTYPE_U8) /* packed codes: a byte a value */
        for (size_t i = 0; i < count; i++) out[i] = (float)((const uint8_t *)raw)[i];
    else memcpy(out, raw, count * sizeof(float));
}

/* ---- loading ----------------------------------------------------------------------- */

int osp_pipeline_load_vectors(const char *dir, osp_array *vectors, osp_array *ids) {
    memset(vectors, 0, sizeof *vectors);
    memset(ids, 0, sizeof *ids);
    osp_catalog *c = NULL;
    int rc = osp_catalog_open(dir, &c);
    if (rc) return rc;
    int tags = 0, vfd = -1, ifd = -1;
    int64_t dim = 0, tags_bytes = 0, rows = 0;
    osp_dtype dtype = OSP_DTYPE_F32;
    void *raw = NULL;
    float *x = NULL;
    int64_t *id = NULL;
    rc = osp__folder_layout(c, &tags, &dim, &dtype);
    if (!rc && dim == 0)
        rc = osp_error(OSP_ENOENT, "%s holds no vectors: its run wrote tags only (embed a layer to get vectors)",
                       dir);
    if (!rc) rc = osp__catalog_state(c, &tags_bytes, &rows);
    if (!rc) rc = osp__folder_npy_open(dir, "vectors.npy", dtype, dim, rows, &vfd);
    if (!rc) rc = osp__folder_npy_open(dir, "ids.npy", OSP_DTYPE_I64, 0, rows, &ifd);
    size_t count = 0, esize = osp_dtype_size(dtype);
    if (!rc && osp_mul_size((size_t)rows, (size_t)dim, &count))
        rc = osp_error(OSP_ERANGE, "%s: %lld x %lld vectors are too many", dir, (long long)rows, (long long)dim);
    if (!rc) {
        x = osp_alloc(count * sizeof *x);
        id = osp_alloc((size_t)rows * sizeof *id);
        raw = dtype == OSP_DTYPE_F32 ? (void *)x : osp_alloc(count * esize);
        if (!x || !id || !raw) rc = OSP_ENOMEM;
    }
    if (!rc && rows > 0) rc = osp__folder_read(vfd, raw, count * esize, OSP__NPY_HEADER, dir, "vectors.npy");
    if (!rc && rows > 0) rc = osp__folder_read(ifd, id, (size_t)rows * sizeof *id, OSP__NPY_HEADER, dir, "ids.npy");
    for (int64_t i = 0; !rc && i < rows; i++)
        if (id[i] < 0)
            rc = osp_error(OSP_ECORRUPT, "%s/ids.npy: row %lld holds the id %lld (ids are never negative)", dir,
                           (long long)i, (long long)id[i]);
    if (!rc && dtype == OSP_DTYPE_U8) { /* codes stay codes */
        osp_free(x);
        x = raw;
    } else if (!rc && dtype != OSP_DTYPE_F32) {
        to_float(raw, dtype, count, x);
    }
    if (raw != x) osp_free(raw);
    if (vfd >= 0) close(vfd);
    if (ifd >= 0) close(ifd);
    osp_catalog_close(c);
    if (rc) {
        osp_free(x);
        osp_free(id);
        return rc;
    }
    vectors->dtype = dtype == OSP_DTYPE_U8 ? OSP_DTYPE_U8 : OSP_DTYPE_F32;
    vectors->shape.ndim = 2;
    vectors->shape.dim[0] = rows;
    vectors->shape.dim[1] = dim;
    vectors->data = x;
    ids->dtype = OSP_DTYPE_I64;
    ids->shape.ndim = 1;
    ids->shape.dim[0] = rows;
    ids->data = id;
    return OSP_OK;
}

int osp_catalog_read_vectors(osp_catalog *c, const int64_t *rows, int64_t n, float *out) {
    int tags = 0, fd = -1;
    int64_t dim = 0, tags_bytes = 0, committed = 0;
    osp_dtype dtype = OSP_DTYPE_F32;
    int rc = osp__folder_layout(c, &tags, &dim, &dtype);
    if (!rc && dim == 0)
        rc = osp_error(OSP_ENOENT, "%s holds no vectors: its run wrote tags only", c->dir);
    if (!rc) rc = osp__catalog_state(c, &tags_bytes, &committed);
    for (int64_t i = 0; !rc && i < n; i++)
        if (rows[i] < 0 || rows[i] >= committed)
            rc = osp_error(OSP_ERANGE, "%s: row %lld is not one of the %lld committed vectors", c->dir,
                           (long long)rows[i], (long long)committed);
    if (!rc) rc = osp__folder_npy_open(c->dir, "vectors.npy", dtype, dim, committed, &fd);
    const size_t esize = osp_dtype_size(dtype), row_bytes = (size_t)dim * esize;
    void *raw = NULL;
    if (!rc && n > 0 && !(raw = osp_alloc(row_bytes))) rc = OSP_ENOMEM;
    for (int64_t i = 0; !rc && i < n; i++) {
        rc = osp__folder_read(fd, raw, row_bytes, (off_t)(OSP__NPY_HEADER + (size_t)rows[i] * row_bytes), c->dir,
                              "vectors.npy");
        if (!rc) to_float(raw, dtype, (size_t)dim, out + (size_t)i * (size_t)dim);
    }
    osp_free(raw);
    if (fd >= 0) close(fd);
    return rc;
}

/* ---- the model's content hash ------------------------------------------------------- */

int osp_model_content_hash(const osp_net *net, char hex[65]) {
    hex[0] = '\0';
    if (!net || !net->graph) return osp_error(OSP_EINVAL, "model content hash: no network");
    int64_t nw = 0, nb = 0;
    const float *w = osp_graph_weights(net->graph, &nw);
    const float *b = osp_graph_buffers(net->graph, &nb);
    if ((nw > 0 && !w) || (nb > 0 && !b))
        return osp_error(OSP_ESTATE, "model content hash: the network's parameters are not initialised");
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) return osp_error(OSP_ENOMEM, "out of memory");
    int ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    if (ok && net->spec_text) ok = EVP_DigestUpdate(ctx, net->spec_text, strlen(net->spec_text));
    if (ok && nw > 0) ok = EVP_DigestUpdate(ctx, w, (size_t)nw * sizeof(float));
    if (ok && nb > 0) ok = EVP_DigestUpdate(ctx, b, (size_t)nb * sizeof(float));
    for (int i = 0; ok && net->labels && i < net->n_classes; i++) {
        const char *l = net->labels[i] ? net->labels[i] : "";
        ok = EVP_DigestUpdate(ctx, l, strlen(l) + 1);
    }
    /* an int8 model answers differently from its float32 original: another
     * model (float32 models hash as before) */
    if (ok && net->quantization) ok = EVP_DigestUpdate(ctx, net->quantization, strlen(net->quantization));
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (ok) ok = EVP_DigestFinal_ex(ctx, d, &n);
    EVP_MD_CTX_free(ctx);
    if (!ok || n != 32) return osp_error(OSP_EIO, "model content hash: SHA-256 failed");
    for (unsigned int i = 0; i < n; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return OSP_OK;
}

int osp_hash_content_hash(const struct osp_hash *h, char hex[65]) {
    hex[0] = '\0';
    const int64_t bits = osp_hash_bits(h), n = bits * (osp_hash_dim(h) + 1);
    float *wb = malloc((size_t)n * sizeof *wb);
    if (!wb) return osp_error(OSP_ENOMEM, "out of memory");
    memcpy(wb, osp_hash_weight(h), (size_t)(n - bits) * sizeof *wb);
    memcpy(wb + n - bits, osp_hash_bias(h), (size_t)bits * sizeof *wb);
    osp__sha256_hex(wb, (size_t)n * sizeof *wb, hex);
    free(wb);
    return OSP_OK;
}
