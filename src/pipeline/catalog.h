/* catalog.db: the SQLite record of an output folder (private to
 * src/pipeline; readers outside use osprey/pipeline.h).
 *
 *   settings(key, value)   fixed when the folder is made: format, version,
 *                          model, model_name, model_sha256, layer, dim,
 *                          dtype, hash, bits, hash_file, normalize,
 *                          sigmoid, top_k, threshold, tags, shard, merged
 *   state(key, value)      tags_bytes and rows: how much of tags.jsonl and
 *                          of vectors.npy / ids.npy is committed
 *   runs(id, started, ended, command, options, images, errors)
 *   images(id, path UNIQUE, bytes, sha256, width, height, status 'ok' |
 *          'error', error_code, error, row, run)
 *   labels(image, rank, description, score)
 *
 * WAL mode with synchronous=FULL: a committed transaction survives a
 * crash or a power cut. */
#ifndef OSPREY_PIPELINE_CATALOG_H
#define OSPREY_PIPELINE_CATALOG_H

#include <sqlite3.h>

#include "osprey/pipeline.h"

#define OSP__CATALOG_FORMAT "osprey-catalog"
#define OSP__CATALOG_VERSION "1"
#define OSP__SETTINGS_MAX 24

struct osp_catalog {
    sqlite3 *db;
    char *dir;
    int n_settings;
    char *keys[OSP__SETTINGS_MAX], *values[OSP__SETTINGS_MAX];
    sqlite3_stmt *by_path, *by_id, *has_path, *add_image, *add_label, *set_state;
};

typedef struct osp__setting {
    const char *key, *value;
} osp__setting;

/* One image row. */
typedef struct osp__image_row {
    int64_t id;
    const char *path;
    int64_t bytes;     /* -1: unknown (unreadable) */
    const char *sha256; /* hex, or NULL */
    int width, height; /* 0: unknown */
    const char *error_code, *error; /* NULL for an ok row */
    int64_t row;       /* in vectors.npy, -1 for none */
    int64_t run;
} osp__image_row;

/* Opens (creating if missing) dir/catalog.db for writing. A new catalogue
 * records settings; an existing one must hold the same values for each
 * key in check (a NULL-terminated list), else OSP_ESTATE with a message
 * saying what differs. */
int osp__catalog_open_rw(const char *dir, const osp__setting *settings, int n,
                         const char *const *check, osp_catalog **out);
/* The committed ends. */
int osp__catalog_state(osp_catalog *c, int64_t *tags_bytes, int64_t *rows);
int osp__catalog_run_begin(osp_catalog *c, const char *command, const char *options, int64_t *run);
int osp__catalog_run_end(osp_catalog *c, int64_t run, int64_t images, int64_t errors);
/* A batch: begin, rows and labels, commit with the new ends (or rollback). */
int osp__catalog_begin(osp_catalog *c);
int osp__catalog_add_image(osp_catalog *c, const osp__image_row *r);
int osp__catalog_add_label(osp_catalog *c, int64_t image, int rank, const char *description,
                           double score);
int osp__catalog_commit(osp_catalog *c, int64_t tags_bytes, int64_t rows);
void osp__catalog_rollback(osp_catalog *c);
/* Whether path is catalogued; its sha256 (hex, 65 bytes) if sha is given. */
int osp__catalog_has_path(osp_catalog *c, const char *path, int *found, char *sha);
/* "sqlite: what" as an osprey error. */
int osp__sqlite_error(sqlite3 *db, const char *what);

#endif
