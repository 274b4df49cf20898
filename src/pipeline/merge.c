/* Joining the output folders of one run's shards into one folder.
 *
 * Each source is read as its catalogue last committed it: one read
 * transaction gives the committed ends (state) and the images together,
 * and only those bytes of tags.jsonl, vectors.npy and ids.npy are read.
 * The sources' catalogues are attached to the new one, so that images,
 * labels and runs are copied by SQLite without holding a corpus in memory.
 *
 * Everything is written into OUT/.merge-tmp-XXXXXX, synced, then renamed
 * into OUT, catalog.db last (the catalogue is what makes the files count).
 * An earlier merge in OUT is first moved aside as .merge-old-catalog.db,
 * so that a merge killed while renaming leaves a folder that the next
 * merge recognises as its own and replaces; readers meanwhile see no
 * catalog.db rather than a catalogue that disagrees with the files. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "folder.h"
#include "lock.h"

#define TMP_PREFIX ".merge-tmp-"
#define OLD_CATALOG ".merge-old-catalog.db"
/* Rows and tags bytes moved per read. */
#define CHUNK_BYTES (8u << 20)

/* The settings every source must share with the first. */
static const char *const SAME[] = {"model_sha256", "layer", "pool", "dim", "dtype", "hash", "normalize", "tags", "sigmoid",
                                   "top_k", "threshold", NULL};
/* The files a folder's catalogue makes count, and the SQLite files beside it. */
static const char *const DATA_FILES[] = {"tags.jsonl", "vectors.npy", "ids.npy", NULL};
static const char *const SQLITE_SIDE[] = {"catalog.db-wal", "catalog.db-shm", "catalog.db-journal", NULL};

typedef struct merger {
    const char *out;
    const char *const *srcs;
    int n;
    char tmp[4096];          /* OUT/.merge-tmp-XXXXXX, "" until made */
    osp_catalog *cat;        /* the new catalogue, in tmp */
    int tags_fd, vectors_fd, ids_fd;
    int tags;
    int64_t dim;
    osp_dtype dtype;
    size_t row_bytes;
    int64_t out_rows, out_tags_bytes;
    int64_t *run_lo, *run_hi; /* each source's runs, renumbered */
    int64_t *dup;            /* ids of this source already merged, sorted */
    int64_t n_dup;
    char *buf;               /* I/O scratch */
    size_t buf_cap;
    char *wbuf;
    size_t wbuf_cap;
} merger;

/* ---- small helpers ----------------------------------------------------------- */

static int path_join(char *buf, size_t cap, const char *dir, const char *name) {
    if (snprintf(buf, cap, "%s/%s", dir, name) >= (int)cap)
        return osp_error(OSP_EINVAL, "%s/%s: path too long", dir, name);
    return OSP_OK;
}

static int exists(const char *dir, const char *name) {
    char p[4096];
    struct stat st;
    return !path_join(p, sizeof p, dir, name) && lstat(p, &st) == 0;
}

static int write_all(int fd, const void *buf, size_t len, const char *dir, const char *name) {
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return osp_error(OSP_EIO, "%s/%s: %s", dir, name, w < 0 ? strerror(errno) : "short write");
        p += w;
        len -= (size_t)w;
    }
    return OSP_OK;
}

static int sync_path(const char *path, int directory) {
    int fd = open(path, (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) return osp_error(OSP_EIO, "%s: %s", path, strerror(errno));
    int rc = OSP_OK;
    /* some file systems cannot sync a folder (EINVAL): the rename is then as durable as it gets */
    if (fsync(fd) != 0 && !(directory && errno == EINVAL)) rc = osp_error(OSP_EIO, "%s: fsync: %s", path, strerror(errno));
    close(fd);
    return rc;
}

static int exec_sql(merger *m, const char *sql, const char *what) {
    char *msg = NULL;
    if (sqlite3_exec(m->cat->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = osp_error(OSP_EIO, "merging %s: %s", what, msg ? msg : sqlite3_errmsg(m->cat->db));
        sqlite3_free(msg);
        return rc;
    }
    return OSP_OK;
}

static int prepare(merger *m, const char *sql, sqlite3_stmt **st, const char *what) {
    if (sqlite3_prepare_v2(m->cat->db, sql, -1, st, NULL) != SQLITE_OK)
        return osp_error(OSP_EIO, "merging %s: %s", what, sqlite3_errmsg(m->cat->db));
    return OSP_OK;
}

/* One integer from a query with one bound integer (or none). */
static int query_int64(merger *m, const char *sql, int64_t arg, int bind, int64_t *v, const char *what) {
    sqlite3_stmt *st;
    int rc = prepare(m, sql, &st, what);
    if (rc) return rc;
    if (bind) sqlite3_bind_int64(st, 1, arg);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) *v = sqlite3_column_int64(st, 0);
    else rc = osp_error(OSP_EIO, "merging %s: %s", what, r == SQLITE_DONE ? "no answer" : sqlite3_errmsg(m->cat->db));
    sqlite3_finalize(st);
    return rc;
}

static int is_dup(const merger *m, int64_t id) {
    int64_t lo = 0, hi = m->n_dup;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (m->dup[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < m->n_dup && m->dup[lo] == id;
}

static int grow(char **buf, size_t *cap, size_t want) {
    if (want <= *cap) return OSP_OK;
    size_t c = *cap ? *cap : 1u << 16;
    while (c < want) c *= 2;
    char *p = realloc(*buf, c);
    if (!p) return osp_error(OSP_ENOMEM, "out of memory");
    *buf = p;
    *cap = c;
    return OSP_OK;
}

/* ---- checking the sources and OUT ----------------------------------------------- */

static int check_sources(merger *m, osp_catalog **first) {
    struct stat out_st;
    const int out_exists = stat(m->out, &out_st) == 0;
    if (out_exists && !S_ISDIR(out_st.st_mode)) return osp_error(OSP_EINVAL, "%s exists and is not a folder", m->out);
    dev_t *dev = calloc((size_t)m->n, sizeof *dev);
    ino_t *ino = calloc((size_t)m->n, sizeof *ino);
    int rc = dev && ino ? OSP_OK : osp_error(OSP_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < m->n; i++) {
        const char *src = m->srcs[i];
        struct stat st;
        if (!src || stat(src, &st) != 0) {
            rc = osp_error(OSP_ENOENT, "%s: no such folder", src ? src : "(null)");
            break;
        }
        if (!S_ISDIR(st.st_mode)) {
            rc = osp_error(OSP_EINVAL, "%s is not a folder (give the output folders of the shards)", src);
            break;
        }
        if (out_exists && st.st_dev == out_st.st_dev && st.st_ino == out_st.st_ino) {
            rc = osp_error(OSP_EINVAL, "%s is the output folder %s itself: merge into another folder", src, m->out);
            break;
        }
        dev[i] = st.st_dev;
        ino[i] = st.st_ino;
        for (int j = 0; j < i; j++)
            if (dev[j] == dev[i] && ino[j] == ino[i]) {
                rc = osp_error(OSP_EINVAL, "%s is given twice (also as %s)", src, m->srcs[j]);
                break;
            }
    }
    free(dev);
    free(ino);
    for (int i = 0; !rc && i < m->n; i++) {
        osp_catalog *c = NULL;
        if ((rc = osp_catalog_open(m->srcs[i], &c))) break;
        if (i == 0) {
            *first = c;
            rc = osp__folder_layout(c, &m->tags, &m->dim, &m->dtype);
            continue;
        }
        for (const char *const *k = SAME; !rc && *k; k++) {
            const char *want = osp_catalog_setting(*first, *k), *have = osp_catalog_setting(c, *k);
            /* a setting newer than a folder reads as empty there */
            if (strcmp(want ? want : "", have ? have : ""))
                rc = osp_error(OSP_ESTATE,
                               "%s: %s is '%s', but '%s' in %s: not shards of one run, they cannot be merged",
                               m->srcs[i], *k, have ? have : "(none)", want ? want : "(none)", m->srcs[0]);
        }
        osp_catalog_close(c);
    }
    return rc;
}

/* Removes the files of an interrupted merge's folder in OUT. */
static void remove_tmp_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && !path_join(p, sizeof p, dir, e->d_name))
            unlink(p);
    closedir(d);
    rmdir(dir);
}

/* OUT may be new, empty, or hold an earlier merge (whole, or interrupted
 * while being put in place); anything else is refused. Stale temporary
 * folders of interrupted merges are removed. */
static int check_out(merger *m) {
    int interrupted = exists(m->out, OLD_CATALOG);
    DIR *d = opendir(m->out);
    if (!d) return osp_error(OSP_EIO, "%s: %s", m->out, strerror(errno));
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) && !path_join(p, sizeof p, m->out, e->d_name)) {
            interrupted = 1;
            remove_tmp_dir(p);
        }
    closedir(d);
    if (exists(m->out, "catalog.db")) {
        osp_catalog *c = NULL;
        int rc = osp_catalog_open(m->out, &c);
        if (rc) {
            char why[1024];
            snprintf(why, sizeof why, "%s", osp_last_error());
            return osp_error(rc, "%s holds a catalog.db that is not an earlier merge's (%s): give another output folder",
                             m->out, why);
        }
        const char *merged = osp_catalog_setting(c, "merged");
        const int ours = merged && !strcmp(merged, "1");
        osp_catalog_close(c);
        if (!ours)
            return osp_error(OSP_ESTATE,
                             "%s holds a run of 'osprey tag' or 'osprey embed', not a merge: it is not replaced; "
                             "give another output folder",
                             m->out);
        return OSP_OK;
    }
    for (const char *const *f = DATA_FILES; !interrupted && *f; f++)
        if (exists(m->out, *f))
            return osp_error(OSP_ESTATE,
                             "%s holds %s but no catalog.db: not an earlier merge, so it is not replaced; "
                             "give another output folder",
                             m->out, *f);
    return OSP_OK;
}

/* ---- the new folder ---------------------------------------------------------------- */

static int open_tmp_file(merger *m, const char *name, int *fd) {
    char p[4096];
    int rc = path_join(p, sizeof p, m->tmp, name);
    if (rc) return rc;
    *fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (*fd < 0) return osp_error(OSP_EIO, "%s: %s", p, strerror(errno));
    return OSP_OK;
}

static int write_headers(merger *m, int64_t rows) {
    char h[OSP__NPY_HEADER];
    osp__npy_header(h, m->dtype, rows, m->dim);
    if (pwrite(m->vectors_fd, h, sizeof h, 0) != (ssize_t)sizeof h)
        return osp_error(OSP_EIO, "%s/vectors.npy: %s", m->tmp, strerror(errno));
    osp__npy_header(h, OSP_DTYPE_I64, rows, 0);
    if (pwrite(m->ids_fd, h, sizeof h, 0) != (ssize_t)sizeof h)
        return osp_error(OSP_EIO, "%s/ids.npy: %s", m->tmp, strerror(errno));
    return OSP_OK;
}

static int create_tmp(merger *m, osp_catalog *first) {
    if (mkdir(m->out, 0755) != 0 && errno != EEXIST)
        return osp_error(OSP_EIO, "%s: cannot make the folder: %s", m->out, strerror(errno));
    int rc = path_join(m->tmp, sizeof m->tmp, m->out, TMP_PREFIX "XXXXXX");
    if (rc) return rc;
    if (!mkdtemp(m->tmp)) {
        rc = osp_error(OSP_EIO, "%s: cannot make a temporary folder: %s", m->out, strerror(errno));
        m->tmp[0] = '\0';
        return rc;
    }
    /* The first source's settings, as one unsharded, merged folder. */
    osp__setting settings[OSP__SETTINGS_MAX + 2];
    int n = 0, has_shard = 0, has_merged = 0;
    for (int i = 0; i < first->n_settings; i++) {
        settings[n].key = first->keys[i];
        settings[n].value = first->values[i];
        if (!strcmp(first->keys[i], "shard")) {
            settings[n].value = "0/1";
            has_shard = 1;
        }
        if (!strcmp(first->keys[i], "merged")) {
            settings[n].value = "1";
            has_merged = 1;
        }
        n++;
    }
    if (!has_shard) settings[n++] = (osp__setting){"shard", "0/1"};
    if (!has_merged) settings[n++] = (osp__setting){"merged", "1"};
    if ((rc = osp__catalog_open_rw(m->tmp, settings, n, NULL, &m->cat))) return rc;
    if (m->tags && (rc = open_tmp_file(m, "tags.jsonl", &m->tags_fd))) return rc;
    if (m->dim > 0) {
        m->row_bytes = (size_t)m->dim * osp_dtype_size(m->dtype);
        if ((rc = open_tmp_file(m, "vectors.npy", &m->vectors_fd))) return rc;
        if ((rc = open_tmp_file(m, "ids.npy", &m->ids_fd))) return rc;
        if ((rc = write_headers(m, 0))) return rc;
        if (lseek(m->vectors_fd, OSP__NPY_HEADER, SEEK_SET) < 0 || lseek(m->ids_fd, OSP__NPY_HEADER, SEEK_SET) < 0)
            return osp_error(OSP_EIO, "%s: %s", m->tmp, strerror(errno));
    }
    return OSP_OK;
}

/* ---- one source ------------------------------------------------------------------------ */

/* The source that merged run id came from, for messages. */
static const char *source_of_run(const merger *m, int upto, int64_t run) {
    for (int i = 0; i < upto; i++)
        if (run >= m->run_lo[i] && run <= m->run_hi[i]) return m->srcs[i];
    return "an earlier source";
}

/* Ids in two sources: the same path is the same image (kept once, from the
 * first); two paths with one id cannot both be kept. */
static int find_duplicates(merger *m, int s) {
    const char *src = m->srcs[s];
    sqlite3_stmt *st;
    int rc = prepare(m,
                     "SELECT s.id, s.path, m.path, m.run FROM src.images s JOIN main.images m ON m.id = s.id"
                     " WHERE s.path <> m.path LIMIT 1",
                     &st, src);
    if (rc) return rc;
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW)
        rc = osp_error(OSP_ESTATE, "%s: image id %lld is '%s' there but '%s' in %s: they cannot be merged", src,
                       (long long)sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
                       (const char *)sqlite3_column_text(st, 2), source_of_run(m, s, sqlite3_column_int64(st, 3)));
    else if (r != SQLITE_DONE)
        rc = osp__sqlite_error(m->cat->db, src);
    sqlite3_finalize(st);
    if (rc) return rc;
    rc = prepare(m,
                 "SELECT s.path, s.id, m.id FROM src.images s JOIN main.images m ON m.path = s.path"
                 " WHERE s.id <> m.id LIMIT 1",
                 &st, src);
    if (rc) return rc;
    r = sqlite3_step(st);
    if (r == SQLITE_ROW)
        rc = osp_error(OSP_ECORRUPT, "%s/catalog.db: '%s' has the id %lld there but %lld in an earlier source", src,
                       (const char *)sqlite3_column_text(st, 0), (long long)sqlite3_column_int64(st, 1),
                       (long long)sqlite3_column_int64(st, 2));
    else if (r != SQLITE_DONE)
        rc = osp__sqlite_error(m->cat->db, src);
    sqlite3_finalize(st);
    if (rc) return rc;
    if ((rc = exec_sql(m,
                       "DELETE FROM temp.dup; DELETE FROM temp.map;"
                       "INSERT INTO temp.dup SELECT s.id FROM src.images s JOIN main.images m ON m.id = s.id;",
                       src)))
        return rc;
    int64_t count = 0;
    if ((rc = query_int64(m, "SELECT count(*) FROM temp.dup", 0, 0, &count, src))) return rc;
    free(m->dup);
    m->dup = malloc((size_t)(count ? count : 1) * sizeof *m->dup);
    m->n_dup = 0;
    if (!m->dup) return osp_error(OSP_ENOMEM, "out of memory");
    if ((rc = prepare(m, "SELECT id FROM temp.dup ORDER BY id", &st, src))) return rc;
    while ((r = sqlite3_step(st)) == SQLITE_ROW && m->n_dup < count) m->dup[m->n_dup++] = sqlite3_column_int64(st, 0);
    if (r != SQLITE_ROW && r != SQLITE_DONE) rc = osp__sqlite_error(m->cat->db, src);
    sqlite3_finalize(st);
    return rc;
}

/* The committed rows of the source's vectors and ids, less the ids merged
 * already; temp.map records every row's id and its new row. */
static int copy_vectors(merger *m, const char *src, int64_t rows) {
    int vfd = -1, ifd = -1;
    int rc = osp__folder_npy_open(src, "vectors.npy", m->dtype, m->dim, rows, &vfd);
    if (!rc) rc = osp__folder_npy_open(src, "ids.npy", OSP_DTYPE_I64, 0, rows, &ifd);
    sqlite3_stmt *st = NULL;
    if (!rc) rc = prepare(m, "INSERT INTO temp.map (old_row, id, new_row) VALUES (?, ?, ?)", &st, src);
    /* a chunk of rows, then their ids (at an 8-byte boundary) */
    const size_t per = m->row_bytes + sizeof(int64_t);
    const int64_t chunk = CHUNK_BYTES / per > 0 ? (int64_t)(CHUNK_BYTES / per) : 1;
    const size_t ids_at = ((size_t)chunk * m->row_bytes + 7) / 8 * 8, need = ids_at + (size_t)chunk * sizeof(int64_t);
    if (!rc) rc = grow(&m->buf, &m->buf_cap, need);
    if (!rc) rc = grow(&m->wbuf, &m->wbuf_cap, need);
    for (int64_t at = 0; !rc && at < rows; at += chunk) {
        const int64_t k = rows - at < chunk ? rows - at : chunk;
        char *vec = m->buf;
        int64_t *ids = (int64_t *)(void *)(m->buf + ids_at);
        char *wvec = m->wbuf;
        int64_t *wids = (int64_t *)(void *)(m->wbuf + ids_at);
        rc = osp__folder_read(vfd, vec, (size_t)k * m->row_bytes, (off_t)(OSP__NPY_HEADER + (size_t)at * m->row_bytes),
                              src, "vectors.npy");
        if (!rc)
            rc = osp__folder_read(ifd, ids, (size_t)k * sizeof *ids, (off_t)(OSP__NPY_HEADER + (size_t)at * sizeof *ids),
                                  src, "ids.npy");
        int64_t kept = 0;
        for (int64_t i = 0; !rc && i < k; i++) {
            const int dup = is_dup(m, ids[i]);
            sqlite3_bind_int64(st, 1, at + i);
            sqlite3_bind_int64(st, 2, ids[i]);
            if (dup) sqlite3_bind_null(st, 3);
            else sqlite3_bind_int64(st, 3, m->out_rows + kept);
            if (sqlite3_step(st) != SQLITE_DONE) rc = osp__sqlite_error(m->cat->db, src);
            sqlite3_reset(st);
            if (dup) continue;
            memcpy(wvec + (size_t)kept * m->row_bytes, vec + (size_t)i * m->row_bytes, m->row_bytes);
            wids[kept++] = ids[i];
        }
        if (!rc) rc = write_all(m->vectors_fd, wvec, (size_t)kept * m->row_bytes, m->tmp, "vectors.npy");
        if (!rc) rc = write_all(m->ids_fd, wids, (size_t)kept * sizeof *wids, m->tmp, "ids.npy");
        if (!rc) m->out_rows += kept;
    }
    sqlite3_finalize(st);
    if (vfd >= 0) close(vfd);
    if (ifd >= 0) close(ifd);
    return rc;
}

/* Every image with a row must be the id at that row of ids.npy, and every
 * committed row some image's: else the files are not the catalogue's. */
static int check_rows(merger *m, const char *src, int64_t rows) {
    int64_t with_row = 0;
    int rc = query_int64(m, "SELECT count(*) FROM src.images WHERE row IS NOT NULL", 0, 0, &with_row, src);
    if (rc) return rc;
    sqlite3_stmt *st;
    if ((rc = prepare(m,
                      "SELECT s.path, s.row, m.id FROM src.images s LEFT JOIN temp.map m ON m.old_row = s.row"
                      " WHERE s.row IS NOT NULL AND (m.id IS NULL OR m.id <> s.id) LIMIT 1",
                      &st, src)))
        return rc;
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        const int64_t row = sqlite3_column_int64(st, 1);
        if (sqlite3_column_type(st, 2) == SQLITE_NULL)
            rc = osp_error(OSP_ECORRUPT, "%s/catalog.db: '%s' has row %lld, not one of the %lld committed", src,
                           (const char *)sqlite3_column_text(st, 0), (long long)row, (long long)rows);
        else
            rc = osp_error(OSP_ECORRUPT, "%s: '%s' has row %lld in catalog.db, but ids.npy holds id %lld there", src,
                           (const char *)sqlite3_column_text(st, 0), (long long)row,
                           (long long)sqlite3_column_int64(st, 2));
    } else if (r != SQLITE_DONE) {
        rc = osp__sqlite_error(m->cat->db, src);
    }
    sqlite3_finalize(st);
    if (!rc && with_row != rows)
        rc = osp_error(OSP_ECORRUPT, "%s/catalog.db: %lld images have vectors, but %lld rows are committed", src,
                       (long long)with_row, (long long)rows);
    return rc;
}

/* The committed lines of tags.jsonl, less those of ids merged already. */
static int copy_tags(merger *m, const char *src, int64_t tags_bytes, int64_t images) {
    char path[4096];
    int rc = path_join(path, sizeof path, src, "tags.jsonl");
    if (rc) return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && tags_bytes == 0) return images == 0 ? OSP_OK
                                                                   : osp_error(OSP_ECORRUPT, "%s is missing, but the catalogue holds %lld images",
                                                                               path, (long long)images);
        return osp_error(errno == ENOENT ? OSP_ECORRUPT : OSP_EIO, "%s: %s", path, strerror(errno));
    }
    size_t have = 0; /* bytes of a line not yet ended, at the front of buf */
    int64_t at = 0, lines = 0;
    while (!rc && at < tags_bytes) {
        size_t want = (size_t)(tags_bytes - at < CHUNK_BYTES ? tags_bytes - at : CHUNK_BYTES);
        if ((rc = grow(&m->buf, &m->buf_cap, have + want))) break;
        if ((rc = osp__folder_read(fd, m->buf + have, want, (off_t)at, src, "tags.jsonl"))) break;
        const int64_t base = at - (int64_t)have; /* file offset of buf[0] */
        at += (int64_t)want;
        have += want;
        size_t start = 0, out = 0;
        if ((rc = grow(&m->wbuf, &m->wbuf_cap, have))) break;
        for (;;) {
            const char *nl = memchr(m->buf + start, '\n', have - start);
            if (!nl) break;
            const size_t end = (size_t)(nl - m->buf) + 1;
            const char *line = m->buf + start;
            static const char prefix[] = "{\"id\":";
            int64_t id = -1;
            if (end - start > sizeof prefix && !memcmp(line, prefix, sizeof prefix - 1)) {
                const char *p = line + sizeof prefix - 1;
                while (*p == ' ') p++;
                if (*p >= '0' && *p <= '9') {
                    char *e;
                    errno = 0;
                    long long v = strtoll(p, &e, 10);
                    if (!errno && (*e == ',' || *e == '}')) id = v;
                }
            }
            if (id < 0) {
                rc = osp_error(OSP_ECORRUPT, "%s: the line at byte %lld does not start with {\"id\": <number>,", path,
                               (long long)(base + (int64_t)start));
                break;
            }
            lines++;
            if (!is_dup(m, id)) {
                memcpy(m->wbuf + out, line, end - start);
                out += end - start;
            }
            start = end;
        }
        if (!rc) rc = write_all(m->tags_fd, m->wbuf, out, m->tmp, "tags.jsonl");
        if (!rc) m->out_tags_bytes += (int64_t)out;
        memmove(m->buf, m->buf + start, have - start);
        have -= start;
    }
    close(fd);
    if (!rc && have)
        rc = osp_error(OSP_ECORRUPT, "%s: the committed %lld bytes end inside a line", path, (long long)tags_bytes);
    if (!rc && lines != images)
        rc = osp_error(OSP_ECORRUPT, "%s: %lld committed lines, but the catalogue holds %lld images", path,
                       (long long)lines, (long long)images);
    return rc;
}

/* A committed end of the attached source. */
static int src_state(merger *m, const char *path, const char *key, int64_t *v) {
    sqlite3_stmt *st;
    int rc = prepare(m, "SELECT value FROM src.state WHERE key = ?", &st, path);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_INTEGER) *v = sqlite3_column_int64(st, 0);
    else if (r == SQLITE_ROW || r == SQLITE_DONE) rc = osp_error(OSP_ECORRUPT, "%s: no committed '%s' in its state", path, key);
    else rc = osp__sqlite_error(m->cat->db, path);
    sqlite3_finalize(st);
    if (!rc && *v < 0) rc = osp_error(OSP_ECORRUPT, "%s: committed '%s' is negative", path, key);
    return rc;
}

static int merge_source(merger *m, int s) {
    const char *src = m->srcs[s];
    char path[4096];
    int rc = path_join(path, sizeof path, src, "catalog.db");
    if (rc) return rc;
    sqlite3_stmt *st;
    if ((rc = prepare(m, "ATTACH ? AS src", &st, src))) return rc;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE) rc = osp__sqlite_error(m->cat->db, path);
    sqlite3_finalize(st);
    if (rc) return rc;
    /* One read transaction: the state and the images it commits. */
    rc = exec_sql(m, "BEGIN", src);
    int64_t tags_bytes = 0, rows = 0, images = 0, off = 0, lo = 0, hi = 0;
    if (!rc) rc = src_state(m, path, "tags_bytes", &tags_bytes);
    if (!rc) rc = src_state(m, path, "rows", &rows);
    if (!rc) rc = query_int64(m, "SELECT count(*) FROM src.images", 0, 0, &images, src);
    if (!rc) rc = find_duplicates(m, s);
    if (!rc && m->dim > 0) rc = copy_vectors(m, src, rows);
    if (!rc) rc = check_rows(m, src, rows);
    if (!rc && m->tags) rc = copy_tags(m, src, tags_bytes, images);
    /* runs renumbered after those merged so far, fields kept */
    if (!rc) rc = query_int64(m, "SELECT coalesce(max(id), 0) FROM main.runs", 0, 0, &off, src);
    if (!rc) rc = query_int64(m, "SELECT coalesce(min(id), 1) FROM src.runs", 0, 0, &lo, src);
    if (!rc) rc = query_int64(m, "SELECT coalesce(max(id), 0) FROM src.runs", 0, 0, &hi, src);
    if (!rc && (lo < 1 || hi > INT64_MAX / 2 || off > INT64_MAX / 2))
        rc = osp_error(OSP_ECORRUPT, "%s/catalog.db: run ids out of range", src);
    if (!rc) {
        off -= lo - 1;
        m->run_lo[s] = lo + off;
        m->run_hi[s] = hi + off;
        rc = prepare(m,
                     "INSERT INTO main.runs (id, started, ended, command, options, images, errors)"
                     " SELECT id + ?1, started, ended, command, options, images, errors FROM src.runs",
                     &st, src);
        if (!rc) {
            sqlite3_bind_int64(st, 1, off);
            if (sqlite3_step(st) != SQLITE_DONE) rc = osp__sqlite_error(m->cat->db, src);
            sqlite3_finalize(st);
        }
    }
    if (!rc) {
        rc = prepare(m,
                     "INSERT INTO main.images (id, path, bytes, sha256, width, height, status, error_code, error,"
                     " row, run) SELECT s.id, s.path, s.bytes, s.sha256, s.width, s.height, s.status, s.error_code,"
                     " s.error, m.new_row, s.run + ?1 FROM src.images s LEFT JOIN temp.map m ON m.old_row = s.row"
                     " WHERE s.id NOT IN (SELECT id FROM temp.dup)",
                     &st, src);
        if (!rc) {
            sqlite3_bind_int64(st, 1, off);
            if (sqlite3_step(st) != SQLITE_DONE) rc = osp__sqlite_error(m->cat->db, src);
            sqlite3_finalize(st);
        }
    }
    if (!rc)
        rc = exec_sql(m,
                      "INSERT INTO main.labels (image, rank, description, score)"
                      " SELECT image, rank, description, score FROM src.labels"
                      " WHERE image IN (SELECT id FROM src.images) AND image NOT IN (SELECT id FROM temp.dup)",
                      src);
    if (!rc) rc = exec_sql(m, "COMMIT", src);
    else sqlite3_exec(m->cat->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_exec(m->cat->db, "DETACH src", NULL, NULL, NULL);
    return rc;
}

/* ---- putting it in place ---------------------------------------------------------------- */

static int finish_tmp(merger *m) {
    /* what the files hold is what the catalogue says they hold */
    int64_t with_row = -1;
    int rc = query_int64(m, "SELECT count(*) FROM main.images WHERE row IS NOT NULL", 0, 0, &with_row, m->out);
    if (!rc && with_row != m->out_rows)
        rc = osp_error(OSP_ESTATE, "merging into %s: %lld rows written for %lld images with vectors (a bug)", m->out,
                       (long long)m->out_rows, (long long)with_row);
    if (!rc) rc = osp__catalog_begin(m->cat);
    if (!rc) rc = osp__catalog_commit(m->cat, m->out_tags_bytes, m->out_rows);
    if (!rc && m->dim > 0) rc = write_headers(m, m->out_rows);
    int fds[] = {m->tags_fd, m->vectors_fd, m->ids_fd};
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0 && !rc && fsync(fds[i]) != 0) rc = osp_error(OSP_EIO, "%s: fsync: %s", m->tmp, strerror(errno));
    /* No WAL beside the catalogue once it is renamed: a rollback journal,
     * and the connection closed. */
    if (!rc) rc = exec_sql(m, "DROP TABLE temp.map; DROP TABLE temp.dup; PRAGMA journal_mode=DELETE", m->out);
    osp_catalog_close(m->cat);
    m->cat = NULL;
    char p[4096];
    if (!rc) rc = path_join(p, sizeof p, m->tmp, "catalog.db");
    if (!rc) rc = sync_path(p, 0);
    for (const char *const *f = SQLITE_SIDE; !rc && *f; f++)
        if (exists(m->tmp, *f)) rc = osp_error(OSP_EIO, "%s/%s was left by SQLite", m->tmp, *f);
    if (!rc) rc = sync_path(m->tmp, 1);
    return rc;
}

static int move(const char *from_dir, const char *from, const char *to_dir, const char *to) {
    char a[4096], b[4096];
    int rc = path_join(a, sizeof a, from_dir, from);
    if (!rc) rc = path_join(b, sizeof b, to_dir, to);
    if (!rc && rename(a, b) != 0) rc = osp_error(OSP_EIO, "cannot rename %s to %s: %s", a, b, strerror(errno));
    return rc;
}

static int remove_file(const char *dir, const char *name) {
    char p[4096];
    int rc = path_join(p, sizeof p, dir, name);
    if (!rc && unlink(p) != 0 && errno != ENOENT) rc = osp_error(OSP_EIO, "%s: cannot remove it: %s", p, strerror(errno));
    return rc;
}

static int install(merger *m) {
    int rc = OSP_OK;
    /* An earlier merge's catalogue goes aside first: from here until the
     * new one is in place OUT has no catalog.db, and no reader takes the
     * new files for the old catalogue's. */
    if (exists(m->out, "catalog.db")) {
        rc = move(m->out, "catalog.db", m->out, OLD_CATALOG);
        if (!rc) rc = sync_path(m->out, 1);
    }
    for (const char *const *f = SQLITE_SIDE; !rc && *f; f++) rc = remove_file(m->out, *f);
    for (const char *const *f = DATA_FILES; !rc && *f; f++) {
        if (exists(m->tmp, *f)) rc = move(m->tmp, *f, m->out, *f);
        else rc = remove_file(m->out, *f); /* an earlier merge's, of another kind */
    }
    if (!rc) rc = sync_path(m->out, 1);
    if (!rc) rc = move(m->tmp, "catalog.db", m->out, "catalog.db");
    if (!rc) rc = sync_path(m->out, 1);
    if (!rc) rc = remove_file(m->out, OLD_CATALOG);
    if (!rc && rmdir(m->tmp) != 0) rc = osp_error(OSP_EIO, "%s: cannot remove it: %s", m->tmp, strerror(errno));
    if (!rc) m->tmp[0] = '\0';
    if (!rc) rc = sync_path(m->out, 1);
    return rc;
}

int osp_pipeline_merge(const char *out, const char *const *srcs, int n, double lock_timeout_s) {
    if (!out || !*out) return osp_error(OSP_EINVAL, "merge: no output folder");
    if (!srcs || n < 1) return osp_error(OSP_EINVAL, "merge into %s: no source folders", out);
    merger m = {.out = out, .srcs = srcs, .n = n, .tags_fd = -1, .vectors_fd = -1, .ids_fd = -1};
    osp_catalog *first = NULL;
    int lock_fd = -1;
    int rc = check_sources(&m, &first);
    if (!rc && mkdir(out, 0755) != 0 && errno != EEXIST)
        rc = osp_error(OSP_EIO, "%s: cannot make the folder: %s", out, strerror(errno));
    /* One writer at a time into OUT. */
    if (!rc) rc = osp__folder_lock(out, lock_timeout_s, &lock_fd);
    if (!rc) rc = check_out(&m);
    if (!rc) {
        m.run_lo = calloc((size_t)n, sizeof *m.run_lo);
        m.run_hi = calloc((size_t)n, sizeof *m.run_hi);
        if (!m.run_lo || !m.run_hi) rc = osp_error(OSP_ENOMEM, "out of memory");
    }
    if (!rc) rc = create_tmp(&m, first);
    osp_catalog_close(first);
    if (!rc)
        rc = exec_sql(&m,
                      "CREATE TEMP TABLE map(old_row INTEGER PRIMARY KEY, id INTEGER NOT NULL, new_row INTEGER);"
                      "CREATE TEMP TABLE dup(id INTEGER PRIMARY KEY);",
                      out);
    for (int s = 0; !rc && s < n; s++) rc = merge_source(&m, s);
    if (!rc) rc = finish_tmp(&m);
    if (m.tags_fd >= 0) close(m.tags_fd);
    if (m.vectors_fd >= 0) close(m.vectors_fd);
    if (m.ids_fd >= 0) close(m.ids_fd);
    /* A failure before the renames leaves OUT as it was; one while renaming
     * leaves the temporary folder, which tells the next merge that OUT's
     * files are an unfinished merge's. */
    int installing = 0;
    if (!rc) {
        installing = 1;
        rc = install(&m);
    }
    if (m.cat) osp_catalog_close(m.cat);
    if (rc && m.tmp[0] && !installing) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", osp_last_error());
        remove_tmp_dir(m.tmp);
        osp_error(rc, "%s", keep);
    }
    osp__folder_unlock(lock_fd);
    free(m.run_lo);
    free(m.run_hi);
    free(m.dup);
    free(m.buf);
    free(m.wbuf);
    return rc;
}
