/* Files: atomic replacement, whole-file reads and read-only maps. Every error
 * names the path and the system's reason. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "osprey/core.h"

/* Maps an errno to the closest osprey code. */
static int code_of_errno(int e) {
    switch (e) {
    case ENOENT:
    case ENOTDIR: return OSP_ENOENT;
    case ENOMEM: return OSP_ENOMEM;
    default: return OSP_EIO;
    }
}

static char *copy_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (!p) {
        osp_error(OSP_ENOMEM, "out of memory copying a path of %zu bytes", n);
        return NULL;
    }
    memcpy(p, s, n);
    return p;
}

/* The directory holding path ("." for a bare name), for the fsync that makes
 * the rename itself durable. */
static char *directory_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return copy_string(".");
    if (slash == path) return copy_string("/");
    size_t n = (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (!d) {
        osp_error(OSP_ENOMEM, "out of memory copying a path of %zu bytes", n + 1);
        return NULL;
    }
    memcpy(d, path, n);
    d[n] = '\0';
    return d;
}

static int fsync_directory(const char *path) {
    char *dir = directory_of(path);
    if (!dir) return OSP_ENOMEM;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        osp_error(code_of_errno(e), "%s: cannot open directory %s: %s", path, dir, strerror(e));
        free(dir);
        return code_of_errno(e);
    }
    int rc = OSP_OK;
    /* Some file systems cannot fsync a directory (EINVAL); the rename is then
     * as durable as that file system makes it, which is all we can ask. */
    if (fsync(fd) != 0 && errno != EINVAL) {
        int e = errno;
        rc = osp_error(OSP_EIO, "%s: cannot sync directory %s: %s", path, dir, strerror(e));
    }
    close(fd);
    free(dir);
    return rc;
}

static void release_names(osp_atomic_file *f) {
    free(f->path);
    free(f->tmp_path);
    f->path = NULL;
    f->tmp_path = NULL;
}

int osp_atomic_open(osp_atomic_file *f, const char *path) {
    /* Distinct temporary names for several threads writing the same path at
     * once; the pid separates processes. */
    static atomic_uint counter;
    if (!f) return osp_error(OSP_EINVAL, "osp_atomic_open: no file");
    f->fd = -1;
    f->path = NULL;
    f->tmp_path = NULL;
    if (!path || !*path) return osp_error(OSP_EINVAL, "osp_atomic_open: empty path");
    f->path = copy_string(path);
    if (!f->path) return OSP_ENOMEM;
    size_t cap = strlen(path) + 64;
    f->tmp_path = malloc(cap);
    if (!f->tmp_path) {
        release_names(f);
        return osp_error(OSP_ENOMEM, "%s: out of memory naming the temporary file", path);
    }
    /* O_EXCL never reuses a leftover file; a clash (a stale file from an
     * earlier process with the same pid) just moves on to the next number. */
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned n = atomic_fetch_add(&counter, 1u);
        snprintf(f->tmp_path, cap, "%s.tmp.%ld.%u", path, (long)getpid(), n);
        f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (f->fd >= 0) return OSP_OK;
        if (errno != EEXIST) break;
    }
    int e = errno;
    int code = osp_error(code_of_errno(e), "%s: cannot create temporary file %s: %s", path,
                         f->tmp_path, strerror(e));
    release_names(f);
    return code;
}

int osp_atomic_write(osp_atomic_file *f, const void *buf, size_t len) {
    if (!f || f->fd < 0) return osp_error(OSP_ESTATE, "osp_atomic_write: file is not open");
    if (len > 0 && !buf) return osp_error(OSP_EINVAL, "%s: write from a NULL buffer", f->path);
    const unsigned char *p = buf;
    while (len > 0) {
        /* Linux writes at most about 2 GiB at once; ask for no more. */
        size_t chunk = len < ((size_t)1 << 30) ? len : ((size_t)1 << 30);
        ssize_t n = write(f->fd, p, chunk);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            return osp_error(OSP_EIO, "%s: write failed: %s", f->path, strerror(e));
        }
        if (n == 0) return osp_error(OSP_EIO, "%s: write made no progress", f->path);
        p += n;
        len -= (size_t)n;
    }
    return OSP_OK;
}

int osp_atomic_commit(osp_atomic_file *f) {
    if (!f || f->fd < 0 || !f->path || !f->tmp_path) {
        if (f) release_names(f);
        return osp_error(OSP_ESTATE, "osp_atomic_commit: file is not open");
    }
    int rc = OSP_OK;
    if (fsync(f->fd) != 0) {
        int e = errno;
        rc = osp_error(OSP_EIO, "%s: cannot sync %s: %s", f->path, f->tmp_path, strerror(e));
    }
    /* close reports delayed write errors on some file systems (NFS). */
    if (close(f->fd) != 0 && rc == OSP_OK) {
        int e = errno;
        rc = osp_error(OSP_EIO, "%s: cannot close %s: %s", f->path, f->tmp_path, strerror(e));
    }
    f->fd = -1;
    if (rc == OSP_OK && rename(f->tmp_path, f->path) != 0) {
        int e = errno;
        rc = osp_error(OSP_EIO, "%s: cannot rename %s into place: %s", f->path, f->tmp_path,
                       strerror(e));
    }
    if (rc != OSP_OK)
        unlink(f->tmp_path);
    else
        rc = fsync_directory(f->path);
    release_names(f);
    return rc;
}

void osp_atomic_abort(osp_atomic_file *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    if (f->tmp_path) unlink(f->tmp_path);
    release_names(f);
}

/* Opens path for reading and stats it; the file must be a regular file so
 * that its size means something. */
static int open_regular(const char *path, int *fd_out, size_t *size_out) {
    if (!path) return osp_error(OSP_EINVAL, "no path given");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return osp_error(code_of_errno(e), "%s: cannot open: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return osp_error(OSP_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return osp_error(OSP_EINVAL, "%s: not a regular file", path);
    }
    if (st.st_size < 0 || (uintmax_t)st.st_size > SIZE_MAX) {
        close(fd);
        return osp_error(OSP_ERANGE, "%s: file size %lld does not fit in memory", path,
                         (long long)st.st_size);
    }
    *fd_out = fd;
    *size_out = (size_t)st.st_size;
    return OSP_OK;
}

int osp_file_read_all(const char *path, size_t max_bytes, void **buf, size_t *len) {
    if (!buf || !len) return osp_error(OSP_EINVAL, "osp_file_read_all: no output");
    *buf = NULL;
    *len = 0;
    int fd = -1;
    size_t size = 0;
    int rc = open_regular(path, &fd, &size);
    if (rc != OSP_OK) return rc;
    if (size > max_bytes) {
        close(fd);
        return osp_error(OSP_ERANGE, "%s: file is %zu bytes, more than the limit of %zu", path,
                         size, max_bytes);
    }
    unsigned char *data = osp_alloc(size);
    if (!data) {
        close(fd);
        return osp_error(OSP_ENOMEM, "%s: out of memory reading %zu bytes", path, size);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, data + got, size - got);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            osp_free(data);
            close(fd);
            return osp_error(OSP_EIO, "%s: read failed at byte %zu: %s", path, got, strerror(e));
        }
        if (n == 0) {
            osp_free(data);
            close(fd);
            return osp_error(OSP_EIO, "%s: file shrank while reading (%zu of %zu bytes)", path,
                             got, size);
        }
        got += (size_t)n;
    }
    close(fd);
    *buf = data;
    *len = size;
    return OSP_OK;
}

int osp_file_map(const char *path, osp_mapped_file *m) {
    if (!m) return osp_error(OSP_EINVAL, "osp_file_map: no output");
    m->data = NULL;
    m->len = 0;
    int fd = -1;
    size_t size = 0;
    int rc = open_regular(path, &fd, &size);
    if (rc != OSP_OK) return rc;
    /* mmap refuses a length of zero; an empty file is an empty map. */
    if (size == 0) {
        close(fd);
        return OSP_OK;
    }
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the map keeps its own reference to the file */
    if (p == MAP_FAILED)
        return osp_error(e == ENOMEM ? OSP_ENOMEM : OSP_EIO, "%s: cannot map %zu bytes: %s",
                         path, size, strerror(e));
    m->data = p;
    m->len = size;
    return OSP_OK;
}

void osp_file_unmap(osp_mapped_file *m) {
    if (!m) return;
    if (m->data && m->len) munmap((void *)m->data, m->len);
    m->data = NULL;
    m->len = 0;
}
