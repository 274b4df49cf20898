/* catalog.db: opening, the settings a folder is bound to, committed
 * state, and the rows of each batch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "catalog.h"

static const char *const SCHEMA =
    "CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS runs(id INTEGER PRIMARY KEY, started TEXT NOT NULL, ended TEXT,"
    " command TEXT, options TEXT, images INTEGER NOT NULL DEFAULT 0,"
    " errors INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS images(id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,"
    " bytes INTEGER, sha256 TEXT, width INTEGER, height INTEGER,"
    " status TEXT NOT NULL CHECK (status IN ('ok', 'error')), error_code TEXT, error TEXT,"
    " row INTEGER, run INTEGER);"
    "CREATE TABLE IF NOT EXISTS labels(image INTEGER NOT NULL, rank INTEGER NOT NULL,"
    " description TEXT NOT NULL, score REAL NOT NULL, PRIMARY KEY (image, rank)) WITHOUT ROWID;"
    "INSERT OR IGNORE INTO state VALUES ('tags_bytes', 0), ('rows', 0);";

int osp__sqlite_error(sqlite3 *db, const char *what) {
    return osp_error(OSP_EIO, "%s: %s", what, db ? sqlite3_errmsg(db) : "cannot open the database");
}

static int exec(osp_catalog *c, const char *sql) {
    char *msg = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = osp_error(OSP_EIO, "%s/catalog.db: %s", c->dir, msg ? msg : "error");
        sqlite3_free(msg);
        return rc;
    }
    return OSP_OK;
}

static int prepare(osp_catalog *c, const char *sql, sqlite3_stmt **st) {
    if (sqlite3_prepare_v2(c->db, sql, -1, st, NULL) != SQLITE_OK)
        return osp_error(OSP_EIO, "%s/catalog.db: %s", c->dir, sqlite3_errmsg(c->db));
    return OSP_OK;
}

void osp_catalog_close(osp_catalog *c) {
    if (!c) return;
    sqlite3_finalize(c->by_path);
    sqlite3_finalize(c->by_id);
    sqlite3_finalize(c->has_path);
    sqlite3_finalize(c->add_image);
    sqlite3_finalize(c->add_label);
    sqlite3_finalize(c->set_state);
    sqlite3_close(c->db);
    for (int i = 0; i < c->n_settings; i++) {
        free(c->keys[i]);
        free(c->values[i]);
    }
    free(c->dir);
    free(c);
}

static int load_settings(osp_catalog *c) {
    sqlite3_stmt *st;
    int rc = prepare(c, "SELECT key, value FROM settings ORDER BY key", &st);
    if (rc) return rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && c->n_settings < OSP__SETTINGS_MAX) {
        c->keys[c->n_settings] = strdup((const char *)sqlite3_column_text(st, 0));
        c->values[c->n_settings] = strdup((const char *)sqlite3_column_text(st, 1));
        if (!c->keys[c->n_settings] || !c->values[c->n_settings]) {
            sqlite3_finalize(st);
            return osp_error(OSP_ENOMEM, "out of memory");
        }
        c->n_settings++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return osp__sqlite_error(c->db, c->dir);
    const char *format = osp_catalog_setting(c, "format");
    if (!format || strcmp(format, OSP__CATALOG_FORMAT))
        return osp_error(OSP_EFORMAT, "%s/catalog.db is not an osprey catalogue", c->dir);
    const char *version = osp_catalog_setting(c, "version");
    if (!version || strcmp(version, OSP__CATALOG_VERSION))
        return osp_error(OSP_ENOTSUP, "%s/catalog.db: catalogue version %s, this osprey reads %s",
                         c->dir, version ? version : "(none)", OSP__CATALOG_VERSION);
    return OSP_OK;
}

static int open_db(const char *dir, int flags, osp_catalog **out) {
    *out = NULL;
    osp_catalog *c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(dir))) {
        free(c);
        return osp_error(OSP_ENOMEM, "out of memory");
    }
    char path[4096];
    if (snprintf(path, sizeof path, "%s/catalog.db", dir) >= (int)sizeof path) {
        osp_catalog_close(c);
        return osp_error(OSP_EINVAL, "%s: path too long", dir);
    }
    if (sqlite3_open_v2(path, &c->db, flags, NULL) != SQLITE_OK) {
        int rc = osp__sqlite_error(c->db, path);
        osp_catalog_close(c);
        return rc;
    }
    sqlite3_busy_timeout(c->db, 10000);
    sqlite3_extended_result_codes(c->db, 1);
    *out = c;
    return OSP_OK;
}

static int prepare_readers(osp_catalog *c) {
    int rc = prepare(c, "SELECT id, row FROM images WHERE path = ?", &c->by_path);
    if (!rc) rc = prepare(c, "SELECT path, row FROM images WHERE id = ?", &c->by_id);
    return rc;
}

int osp_catalog_open(const char *dir, osp_catalog **out) {
    osp_catalog *c;
    int rc = open_db(dir, SQLITE_OPEN_READONLY, &c);
    if (rc) {
        if (rc == OSP_EIO) return osp_error(OSP_ENOENT, "%s: no catalog.db (not an output folder of 'osprey tag' or 'osprey embed')", dir);
        return rc;
    }
    if (!rc) rc = load_settings(c);
    if (!rc) rc = prepare_readers(c);
    if (rc) {
        osp_catalog_close(c);
        return rc;
    }
    *out = c;
    return OSP_OK;
}

const char *osp_catalog_setting(osp_catalog *c, const char *key) {
    for (int i = 0; i < c->n_settings; i++)
        if (!strcmp(c->keys[i], key)) return c->values[i];
    return NULL;
}

int osp__catalog_open_rw(const char *dir, const osp__setting *settings, int n,
                         const char *const *check, osp_catalog **out) {
    osp_catalog *c;
    int rc = open_db(dir, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, &c);
    if (rc) return rc;
    /* WAL: readers (a server, 'osprey similar') see the last committed
     * batch while a run goes on; FULL: a commit is on disk when it returns. */
    rc = exec(c, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
    if (!rc) rc = exec(c, "BEGIN IMMEDIATE");
    if (!rc) rc = exec(c, SCHEMA);
    sqlite3_stmt *st = NULL;
    int fresh = 0;
    if (!rc) rc = prepare(c, "SELECT count(*) FROM settings", &st);
    if (!rc && sqlite3_step(st) == SQLITE_ROW) fresh = sqlite3_column_int(st, 0) == 0;
    sqlite3_finalize(st);
    if (!rc && fresh) {
        rc = prepare(c, "INSERT INTO settings VALUES (?, ?)", &st);
        for (int i = 0; !rc && i < n; i++) {
            sqlite3_bind_text(st, 1, settings[i].key, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, settings[i].value ? settings[i].value : "", -1, SQLITE_STATIC);
            if (sqlite3_step(st) != SQLITE_DONE) rc = osp__sqlite_error(c->db, dir);
            sqlite3_reset(st);
        }
        sqlite3_finalize(st);
    }
    if (!rc) rc = exec(c, "COMMIT");
    else exec(c, "ROLLBACK");
    if (!rc) rc = load_settings(c);
    /* A folder is one model's answers: mixing two would make neither true. */
    for (const char *const *k = check; !rc && k && *k; k++) {
        const char *want = NULL;
        for (int i = 0; i < n; i++)
            if (!strcmp(settings[i].key, *k)) want = settings[i].value ? settings[i].value : "";
        const char *have = osp_catalog_setting(c, *k);
        /* a setting newer than the folder reads as empty there */
        if (want && (have ? strcmp(have, want) : *want != '\0'))
            rc = osp_error(OSP_ESTATE,
                           "%s holds a run with %s = '%s', not '%s': give another --out for this one",
                           dir, *k, have ? have : "(none)", want);
    }
    if (!rc) rc = prepare_readers(c);
    if (!rc) rc = prepare(c, "SELECT sha256 FROM images WHERE path = ?", &c->has_path);
    if (!rc)
        rc = prepare(c,
                     "INSERT INTO images (id, path, bytes, sha256, width, height, status, error_code,"
                     " error, row, run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     &c->add_image);
    if (!rc) rc = prepare(c, "INSERT INTO labels VALUES (?, ?, ?, ?)", &c->add_label);
    if (!rc) rc = prepare(c, "UPDATE state SET value = ? WHERE key = ?", &c->set_state);
    if (rc) {
        osp_catalog_close(c);
        return rc;
    }
    *out = c;
    return OSP_OK;
}

static int state_value(osp_catalog *c, const char *key, int64_t *v) {
    sqlite3_stmt *st;
    int rc = prepare(c, "SELECT value FROM state WHERE key = ?", &st);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) *v = sqlite3_column_int64(st, 0);
    else rc = osp_error(OSP_ECORRUPT, "%s/catalog.db: no state '%s'", c->dir, key);
    sqlite3_finalize(st);
    return rc;
}

int osp__catalog_state(osp_catalog *c, int64_t *tags_bytes, int64_t *rows) {
    int rc = state_value(c, "tags_bytes", tags_bytes);
    if (!rc) rc = state_value(c, "rows", rows);
    if (!rc && (*tags_bytes < 0 || *rows < 0))
        rc = osp_error(OSP_ECORRUPT, "%s/catalog.db: negative committed sizes", c->dir);
    return rc;
}

static void utc_now(char *buf, size_t cap) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int osp__catalog_run_begin(osp_catalog *c, const char *command, const char *options, int64_t *run) {
    sqlite3_stmt *st;
    char now[32];
    utc_now(now, sizeof now);
    int rc = prepare(c, "INSERT INTO runs (started, command, options) VALUES (?, ?, ?)", &st);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, now, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, command, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, options, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) rc = osp__sqlite_error(c->db, c->dir);
    sqlite3_finalize(st);
    *run = sqlite3_last_insert_rowid(c->db);
    return rc;
}

int osp__catalog_run_end(osp_catalog *c, int64_t run, int64_t images, int64_t errors) {
    sqlite3_stmt *st;
    char now[32];
    utc_now(now, sizeof now);
    int rc = prepare(c, "UPDATE runs SET ended = ?, images = ?, errors = ? WHERE id = ?", &st);
    if (rc) return rc;
    sqlite3_bind_text(st, 1, now, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, images);
    sqlite3_bind_int64(st, 3, errors);
    sqlite3_bind_int64(st, 4, run);
    if (sqlite3_step(st) != SQLITE_DONE) rc = osp__sqlite_error(c->db, c->dir);
    sqlite3_finalize(st);
    return rc;
}

int osp__catalog_begin(osp_catalog *c) { return exec(c, "BEGIN IMMEDIATE"); }

void osp__catalog_rollback(osp_catalog *c) { exec(c, "ROLLBACK"); }

static int step_done(osp_catalog *c, sqlite3_stmt *st, const char *what) {
    int rc = sqlite3_step(st) == SQLITE_DONE ? OSP_OK : osp__sqlite_error(c->db, what);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

int osp__catalog_add_image(osp_catalog *c, const osp__image_row *r) {
    sqlite3_stmt *st = c->add_image;
    sqlite3_bind_int64(st, 1, r->id);
    sqlite3_bind_text(st, 2, r->path, -1, SQLITE_STATIC);
    if (r->bytes >= 0) sqlite3_bind_int64(st, 3, r->bytes);
    if (r->sha256) sqlite3_bind_text(st, 4, r->sha256, -1, SQLITE_STATIC);
    if (r->width > 0) sqlite3_bind_int(st, 5, r->width);
    if (r->height > 0) sqlite3_bind_int(st, 6, r->height);
    sqlite3_bind_text(st, 7, r->error_code ? "error" : "ok", -1, SQLITE_STATIC);
    if (r->error_code) sqlite3_bind_text(st, 8, r->error_code, -1, SQLITE_STATIC);
    if (r->error) sqlite3_bind_text(st, 9, r->error, -1, SQLITE_STATIC);
    if (r->row >= 0) sqlite3_bind_int64(st, 10, r->row);
    sqlite3_bind_int64(st, 11, r->run);
    return step_done(c, st, r->path);
}

int osp__catalog_add_label(osp_catalog *c, int64_t image, int rank, const char *description,
                           double score) {
    sqlite3_stmt *st = c->add_label;
    sqlite3_bind_int64(st, 1, image);
    sqlite3_bind_int(st, 2, rank);
    sqlite3_bind_text(st, 3, description, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 4, score);
    return step_done(c, st, "labels");
}

int osp__catalog_commit(osp_catalog *c, int64_t tags_bytes, int64_t rows) {
    sqlite3_stmt *st = c->set_state;
    sqlite3_bind_int64(st, 1, tags_bytes);
    sqlite3_bind_text(st, 2, "tags_bytes", -1, SQLITE_STATIC);
    int rc = step_done(c, st, "state");
    sqlite3_bind_int64(st, 1, rows);
    sqlite3_bind_text(st, 2, "rows", -1, SQLITE_STATIC);
    if (!rc) rc = step_done(c, st, "state");
    if (!rc) rc = exec(c, "COMMIT");
    if (rc) osp__catalog_rollback(c);
    return rc;
}

int osp__catalog_has_path(osp_catalog *c, const char *path, int *found, char *sha) {
    sqlite3_stmt *st = c->has_path;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
    int r = sqlite3_step(st), rc = OSP_OK;
    *found = r == SQLITE_ROW;
    if (*found && sha) {
        const unsigned char *s = sqlite3_column_text(st, 0);
        snprintf(sha, 65, "%s", s ? (const char *)s : "");
    }
    if (r != SQLITE_ROW && r != SQLITE_DONE) rc = osp__sqlite_error(c->db, path);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

int osp_catalog_by_path(osp_catalog *c, const char *path, int64_t *id, int64_t *row) {
    sqlite3_stmt *st = c->by_path;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
    int r = sqlite3_step(st), rc = OSP_OK;
    if (r == SQLITE_ROW) {
        if (id) *id = sqlite3_column_int64(st, 0);
        if (row) *row = sqlite3_column_type(st, 1) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 1);
    } else if (r == SQLITE_DONE) {
        rc = osp_error(OSP_ENOENT, "%s is not in the catalogue %s", path, c->dir);
    } else {
        rc = osp__sqlite_error(c->db, path);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

int osp_catalog_by_id(osp_catalog *c, int64_t id, char *path, size_t cap, int64_t *row) {
    sqlite3_stmt *st = c->by_id;
    sqlite3_bind_int64(st, 1, id);
    int r = sqlite3_step(st), rc = OSP_OK;
    if (r == SQLITE_ROW) {
        if (path && cap) snprintf(path, cap, "%s", (const char *)sqlite3_column_text(st, 0));
        if (row) *row = sqlite3_column_type(st, 1) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 1);
    } else if (r == SQLITE_DONE) {
        rc = osp_error(OSP_ENOENT, "no image has id %lld in the catalogue %s", (long long)id, c->dir);
    } else {
        rc = osp__sqlite_error(c->db, c->dir);
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

int osp_catalog_counts(osp_catalog *c, int64_t *ok, int64_t *errors) {
    sqlite3_stmt *st;
    int rc = prepare(c, "SELECT sum(status = 'ok'), sum(status = 'error') FROM images", &st);
    if (rc) return rc;
    if (sqlite3_step(st) == SQLITE_ROW) {
        if (ok) *ok = sqlite3_column_int64(st, 0);
        if (errors) *errors = sqlite3_column_int64(st, 1);
    } else {
        rc = osp__sqlite_error(c->db, c->dir);
    }
    sqlite3_finalize(st);
    return rc;
}
