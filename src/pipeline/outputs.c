/* The data files of an output folder, appended batch by batch. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "outputs.h"

void osp__npy_header(char *buf, osp_dtype dtype, int64_t rows, int64_t dim) {
    const char *descr = dtype == OSP_DTYPE_F16   ? "<f2"
                        : dtype == OSP_DTYPE_I64 ? "<i8"
                        : dtype == OSP_DTYPE_U8  ? "|u1"
                                                 : "<f4";
    char dict[OSP__NPY_HEADER];
    int n = dim > 0 ? snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%lld, %lld), }",
                               descr, (long long)rows, (long long)dim)
                    : snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%lld,), }",
                               descr, (long long)rows);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    const int len = OSP__NPY_HEADER - 10;
    buf[8] = (char)(len & 0xff);
    buf[9] = (char)(len >> 8);
    memset(buf + 10, ' ', (size_t)len);
    memcpy(buf + 10, dict, (size_t)n);
    buf[OSP__NPY_HEADER - 1] = '\n';
}

static int open_file(const char *dir, const char *name, int *fd) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*fd < 0) return osp_error(OSP_EIO, "%s: %s", path, strerror(errno));
    return OSP_OK;
}

/* Cuts fd to want bytes; a file shorter than the catalogue says was
 * damaged after its commit (the catalogue is written last). */
static int cut(int fd, const char *dir, const char *name, off_t want) {
    off_t have = lseek(fd, 0, SEEK_END);
    if (have < want)
        return osp_error(OSP_ECORRUPT, "%s/%s has %lld bytes, but the catalogue committed %lld",
                         dir, name, (long long)have, (long long)want);
    if (have > want && ftruncate(fd, want) != 0)
        return osp_error(OSP_EIO, "%s/%s: %s", dir, name, strerror(errno));
    return OSP_OK;
}

static int write_all(int fd, const void *buf, size_t len, off_t at) {
    const char *p = buf;
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, at);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return osp_error(OSP_EIO, "writing the outputs: %s", w < 0 ? strerror(errno) : "short write");
        p += w;
        len -= (size_t)w;
        at += w;
    }
    return OSP_OK;
}

static int write_headers(osp__outputs *o, int64_t rows) {
    if (o->vectors_fd < 0) return OSP_OK;
    char h[OSP__NPY_HEADER];
    osp__npy_header(h, o->dtype, rows, o->dim);
    int rc = write_all(o->vectors_fd, h, sizeof h, 0);
    osp__npy_header(h, OSP_DTYPE_I64, rows, 0);
    if (!rc) rc = write_all(o->ids_fd, h, sizeof h, 0);
    return rc;
}

int osp__outputs_open(osp__outputs *o, const char *dir, int tags, int64_t dim, osp_dtype dtype,
                      int64_t tags_bytes, int64_t rows) {
    memset(o, 0, sizeof *o);
    o->tags_fd = o->vectors_fd = o->ids_fd = -1;
    o->dim = dim;
    o->dtype = dtype;
    o->tags_bytes = tags_bytes;
    o->rows = rows;
    int rc = OSP_OK;
    if (tags) {
        rc = open_file(dir, "tags.jsonl", &o->tags_fd);
        if (!rc) rc = cut(o->tags_fd, dir, "tags.jsonl", (off_t)tags_bytes);
    }
    if (!rc && dim > 0) {
        const int64_t row_bytes = dim * (int64_t)osp_dtype_size(dtype);
        rc = open_file(dir, "vectors.npy", &o->vectors_fd);
        if (!rc) rc = open_file(dir, "ids.npy", &o->ids_fd);
        /* A new file has no header yet: 0 committed rows means header only. */
        if (!rc && lseek(o->vectors_fd, 0, SEEK_END) < OSP__NPY_HEADER && rows == 0) rc = write_headers(o, 0);
        if (!rc && lseek(o->ids_fd, 0, SEEK_END) < OSP__NPY_HEADER && rows == 0) rc = write_headers(o, 0);
        if (!rc) rc = cut(o->vectors_fd, dir, "vectors.npy", (off_t)(OSP__NPY_HEADER + rows * row_bytes));
        if (!rc) rc = cut(o->ids_fd, dir, "ids.npy", (off_t)(OSP__NPY_HEADER + rows * 8));
        if (!rc) rc = write_headers(o, rows);
    }
    if (rc) osp__outputs_close(o);
    return rc;
}

int osp__outputs_write(osp__outputs *o, const char *tags, size_t tags_len, const void *vectors,
                       const int64_t *ids, int64_t n) {
    int rc = OSP_OK;
    if (o->tags_fd >= 0 && tags_len) {
        rc = write_all(o->tags_fd, tags, tags_len, (off_t)o->tags_bytes);
        if (!rc && fdatasync(o->tags_fd) != 0) rc = osp_error(OSP_EIO, "tags.jsonl: %s", strerror(errno));
    }
    if (!rc && o->vectors_fd >= 0 && n > 0) {
        const size_t row_bytes = (size_t)o->dim * osp_dtype_size(o->dtype);
        rc = write_all(o->vectors_fd, vectors, (size_t)n * row_bytes,
                       (off_t)(OSP__NPY_HEADER + (size_t)o->rows * row_bytes));
        if (!rc) rc = write_all(o->ids_fd, ids, (size_t)n * 8, (off_t)(OSP__NPY_HEADER + o->rows * 8));
        if (!rc && (fdatasync(o->vectors_fd) != 0 || fdatasync(o->ids_fd) != 0))
            rc = osp_error(OSP_EIO, "vectors.npy: %s", strerror(errno));
    }
    return rc;
}

int osp__outputs_committed(osp__outputs *o, int64_t tags_bytes, int64_t rows) {
    const int grew = rows != o->rows;
    o->tags_bytes = tags_bytes;
    o->rows = rows;
    /* Not synced: a header that lags is set right when the folder is next
     * opened, from the catalogue. */
    return grew ? write_headers(o, rows) : OSP_OK;
}

void osp__outputs_close(osp__outputs *o) {
    if (o->tags_fd >= 0) close(o->tags_fd);
    if (o->vectors_fd >= 0) close(o->vectors_fd);
    if (o->ids_fd >= 0) close(o->ids_fd);
    o->tags_fd = o->vectors_fd = o->ids_fd = -1;
}
