/* The worker's catalogue: an output folder's catalog.db (the schema of
 * docs/pipeline.md), read for paths and labels and written by the add and
 * remove endpoints. One connection; its statements are guarded by a mutex
 * (SQLite statements are not to be shared between threads). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "worker.h"

#define MAX_SETTINGS 32

struct osp__store {
    sqlite3 *db;
    pthread_mutex_t lock;
    char *dir;
    int n_settings;
    char *keys[MAX_SETTINGS], *values[MAX_SETTINGS];
    sqlite3_stmt *path_of, *id_of, *with_label, *count;
};

static int db_error(osp__store *s, const char *what) {
    return osp_error(OSP_EIO, "%s/catalog.db: %s: %s", s->dir, what, s->db ? sqlite3_errmsg(s->db) : "cannot open");
}

static int exec(osp__store *s, const char *sql) {
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = osp_error(OSP_EIO, "%s/catalog.db: %s", s->dir, msg ? msg : "error");
        sqlite3_free(msg);
        return rc;
    }
    return OSP_OK;
}

void osp__store_close(osp__store *s) {
    if (!s) return;
    sqlite3_finalize(s->path_of);
    sqlite3_finalize(s->id_of);
    sqlite3_finalize(s->with_label);
    sqlite3_finalize(s->count);
    sqlite3_close(s->db);
    for (int i = 0; i < s->n_settings; i++) {
        free(s->keys[i]);
        free(s->values[i]);
    }
    pthread_mutex_destroy(&s->lock);
    free(s->dir);
    free(s);
}

const char *osp__store_setting(osp__store *s, const char *key) {
    for (int i = 0; i < s->n_settings; i++)
        if (!strcmp(s->keys[i], key)) return s->values[i];
    return NULL;
}

int osp__store_open(const char *dir, int writable, osp__store **out) {
    *out = NULL;
    osp__store *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        return osp_error(OSP_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&s->lock, NULL);
    char path[4200];
    snprintf(path, sizeof path, "%s/catalog.db", dir);
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        osp__store_close(s);
        return osp_error(OSP_ENOENT, "%s: no catalog.db (not an output folder of 'osprey tag' or 'osprey embed')", dir);
    }
    fclose(probe);
    int flags = (writable ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY) | SQLITE_OPEN_FULLMUTEX;
    int rc = OSP_OK;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) rc = db_error(s, "open");
    if (!rc) {
        sqlite3_busy_timeout(s->db, 10000);
        sqlite3_extended_result_codes(s->db, 1);
    }
    /* WAL, as the pipeline leaves it; FULL: a commit is on disk when it returns */
    if (!rc && writable) rc = exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
    sqlite3_stmt *st = NULL;
    if (!rc && sqlite3_prepare_v2(s->db, "SELECT key, value FROM settings ORDER BY key", -1, &st, NULL) != SQLITE_OK)
        rc = osp_error(OSP_EFORMAT, "%s/catalog.db is not an osprey catalogue: %s", dir, sqlite3_errmsg(s->db));
    while (!rc && sqlite3_step(st) == SQLITE_ROW && s->n_settings < MAX_SETTINGS) {
        const char *k = (const char *)sqlite3_column_text(st, 0), *v = (const char *)sqlite3_column_text(st, 1);
        s->keys[s->n_settings] = strdup(k ? k : "");
        s->values[s->n_settings] = strdup(v ? v : "");
        if (!s->keys[s->n_settings] || !s->values[s->n_settings]) rc = osp_error(OSP_ENOMEM, "out of memory");
        s->n_settings++;
    }
    sqlite3_finalize(st);
    if (!rc) {
        const char *format = osp__store_setting(s, "format"), *version = osp__store_setting(s, "version");
        if (!format || strcmp(format, "osprey-catalog"))
            rc = osp_error(OSP_EFORMAT, "%s/catalog.db is not an osprey catalogue", dir);
        else if (!version || strcmp(version, "1"))
            rc = osp_error(OSP_ENOTSUP, "%s/catalog.db: catalogue version %s, this osprey reads 1", dir,
                           version ? version : "(none)");
    }
    const struct {
        sqlite3_stmt **st;
        const char *sql;
    } stmts[] = {
        {&s->path_of, "SELECT path FROM images WHERE id = ?"},
        {&s->id_of, "SELECT id FROM images WHERE path = ?"},
        {&s->with_label, "SELECT DISTINCT image FROM labels WHERE description = ? ORDER BY image"},
        {&s->count, "SELECT count(*) FROM images WHERE status = 'ok'"},
    };
    for (size_t i = 0; !rc && i < sizeof stmts / sizeof stmts[0]; i++)
        if (sqlite3_prepare_v2(s->db, stmts[i].sql, -1, stmts[i].st, NULL) != SQLITE_OK) rc = db_error(s, "prepare");
    if (rc) {
        osp__store_close(s);
        return rc;
    }
    *out = s;
    return OSP_OK;
}

int osp__store_paths(osp__store *s, const int64_t *ids, int n, char **paths) {
    int rc = OSP_OK;
    for (int i = 0; i < n; i++) paths[i] = NULL;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; !rc && i < n; i++) {
        sqlite3_reset(s->path_of);
        sqlite3_bind_int64(s->path_of, 1, ids[i]);
        int step = sqlite3_step(s->path_of);
        if (step == SQLITE_ROW) {
            const char *p = (const char *)sqlite3_column_text(s->path_of, 0);
            if (p && !(paths[i] = strdup(p))) rc = osp_error(OSP_ENOMEM, "out of memory");
        } else if (step != SQLITE_DONE) {
            rc = db_error(s, "reading a path");
        }
    }
    sqlite3_reset(s->path_of);
    pthread_mutex_unlock(&s->lock);
    if (rc)
        for (int i = 0; i < n; i++) {
            free(paths[i]);
            paths[i] = NULL;
        }
    return rc;
}

int osp__store_id_of(osp__store *s, const char *path, int64_t *id, int *found) {
    int rc = OSP_OK;
    *found = 0;
    pthread_mutex_lock(&s->lock);
    sqlite3_reset(s->id_of);
    sqlite3_bind_text(s->id_of, 1, path, -1, SQLITE_TRANSIENT);
    int step = sqlite3_step(s->id_of);
    if (step == SQLITE_ROW) {
        *id = sqlite3_column_int64(s->id_of, 0);
        *found = 1;
    } else if (step != SQLITE_DONE) {
        rc = db_error(s, "reading an id");
    }
    sqlite3_reset(s->id_of);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int osp__store_ids_with_label(osp__store *s, const char *label, int64_t **ids, size_t *n) {
    int rc = OSP_OK;
    size_t cap = 256, count = 0;
    int64_t *v = malloc(cap * sizeof *v);
    if (!v) return osp_error(OSP_ENOMEM, "out of memory");
    pthread_mutex_lock(&s->lock);
    sqlite3_reset(s->with_label);
    sqlite3_bind_text(s->with_label, 1, label, -1, SQLITE_TRANSIENT);
    int step = SQLITE_DONE;
    while (!rc && (step = sqlite3_step(s->with_label)) == SQLITE_ROW) {
        if (count == cap) {
            int64_t *b = realloc(v, cap * 2 * sizeof *v);
            if (!b) {
                rc = osp_error(OSP_ENOMEM, "out of memory");
                break;
            }
            v = b;
            cap *= 2;
        }
        v[count++] = sqlite3_column_int64(s->with_label, 0);
    }
    if (!rc && step != SQLITE_DONE) rc = db_error(s, "reading labels");
    sqlite3_reset(s->with_label);
    pthread_mutex_unlock(&s->lock);
    if (rc) {
        free(v);
        return rc;
    }
    *ids = v;
    *n = count;
    return OSP_OK;
}

int osp__store_count(osp__store *s, int64_t *n) {
    int rc = OSP_OK;
    pthread_mutex_lock(&s->lock);
    sqlite3_reset(s->count);
    if (sqlite3_step(s->count) == SQLITE_ROW) *n = sqlite3_column_int64(s->count, 0);
    else rc = db_error(s, "counting images");
    sqlite3_reset(s->count);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Runs sql with one int64 bound. */
static int exec_id(osp__store *s, const char *sql, int64_t id) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return db_error(s, "prepare");
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st) == SQLITE_DONE ? OSP_OK : db_error(s, "write");
    sqlite3_finalize(st);
    return rc;
}

int osp__store_add(osp__store *s, const osp__store_image *images, int n) {
    pthread_mutex_lock(&s->lock);
    int rc = exec(s, "BEGIN IMMEDIATE");
    if (rc) {
        pthread_mutex_unlock(&s->lock);
        return rc;
    }
    sqlite3_stmt *ins = NULL, *lab = NULL, *del_path = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO images (id, path, bytes, sha256, width, height, status, error_code, error,"
                           " row, run) VALUES (?, ?, ?, ?, ?, ?, 'ok', NULL, NULL, NULL, NULL)",
                           -1, &ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, "INSERT INTO labels VALUES (?, ?, ?, ?)", -1, &lab, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, "DELETE FROM labels WHERE image IN (SELECT id FROM images WHERE path = ?)", -1,
                           &del_path, NULL) != SQLITE_OK)
        rc = db_error(s, "prepare");
    for (int i = 0; !rc && i < n; i++) {
        const osp__store_image *im = &images[i];
        /* a row left by an earlier add that did not reach the index, or an
         * image the pipeline could not read: replaced */
        sqlite3_reset(del_path);
        sqlite3_bind_text(del_path, 1, im->path, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(del_path) != SQLITE_DONE) rc = db_error(s, "write");
        if (!rc) rc = exec_id(s, "DELETE FROM labels WHERE image = ?", im->id);
        if (!rc) rc = exec_id(s, "DELETE FROM images WHERE id = ?", im->id);
        if (!rc) {
            sqlite3_stmt *dp;
            if (sqlite3_prepare_v2(s->db, "DELETE FROM images WHERE path = ?", -1, &dp, NULL) != SQLITE_OK) {
                rc = db_error(s, "prepare");
            } else {
                sqlite3_bind_text(dp, 1, im->path, -1, SQLITE_TRANSIENT);
                if (sqlite3_step(dp) != SQLITE_DONE) rc = db_error(s, "write");
                sqlite3_finalize(dp);
            }
        }
        if (rc) break;
        sqlite3_reset(ins);
        sqlite3_bind_int64(ins, 1, im->id);
        sqlite3_bind_text(ins, 2, im->path, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 3, im->bytes);
        sqlite3_bind_text(ins, 4, im->sha256, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(ins, 5, im->width);
        sqlite3_bind_int(ins, 6, im->height);
        if (sqlite3_step(ins) != SQLITE_DONE) rc = db_error(s, "adding an image");
        for (int k = 0; !rc && k < im->n_labels; k++) {
            sqlite3_reset(lab);
            sqlite3_bind_int64(lab, 1, im->id);
            sqlite3_bind_int(lab, 2, k);
            sqlite3_bind_text(lab, 3, im->labels[k], -1, SQLITE_TRANSIENT);
            sqlite3_bind_double(lab, 4, (double)im->scores[k]);
            if (sqlite3_step(lab) != SQLITE_DONE) rc = db_error(s, "adding a label");
        }
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(lab);
    sqlite3_finalize(del_path);
    if (!rc) rc = exec(s, "COMMIT");
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", osp_last_error());
        exec(s, "ROLLBACK");
        osp_error(rc, "%s", msg);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int osp__store_remove(osp__store *s, const int64_t *ids, int n) {
    pthread_mutex_lock(&s->lock);
    int rc = exec(s, "BEGIN IMMEDIATE");
    for (int i = 0; !rc && i < n; i++) {
        rc = exec_id(s, "DELETE FROM labels WHERE image = ?", ids[i]);
        if (!rc) rc = exec_id(s, "DELETE FROM images WHERE id = ?", ids[i]);
    }
    if (!rc) rc = exec(s, "COMMIT");
    else {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", osp_last_error());
        exec(s, "ROLLBACK");
        osp_error(rc, "%s", msg);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}
