/* osprey pipeline: tagging and embedding collections of images in batch,
 * into an output folder that survives being killed at any moment
 * (docs/pipeline.md).
 *
 * An output folder (DIR) holds the work of one model:
 *   tags.jsonl   one line per image: {"id", "path", "labels": [{"description",
 *                "score"}], "model"} or {"id", "path", "error": {"code", "message"}}
 *   vectors.npy  N x D float32 or float16, one row per image embedded
 *   ids.npy      N int64, the image id of each row
 *   catalog.db   SQLite: the images (id, path, bytes, sha256, width, height,
 *                status, error), their labels, the runs, and the state that
 *                says how much of the files above is committed
 *
 * Exactly once: each batch's rows are written past the committed ends of
 * the files and fsynced, then one SQLite transaction records the images
 * and the new ends. A run that opens DIR first cuts the files back to the
 * committed ends, so an interrupted batch leaves no trace and is done
 * again; an image whose path is in the catalogue is never done twice.
 *
 * Ids: the first 63 bits of SHA-256 of the image's path as given, so the
 * same image gets the same id in every shard and every rerun. */
#ifndef OSPREY_PIPELINE_H
#define OSPREY_PIPELINE_H

#include <stdint.h>

#include "osprey/core.h"
#include "osprey/io.h"
#include "osprey/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- inputs ---------------------------------------------------------------- */

/* A stream of image paths from a mix of sources, read as it is consumed
 * (a corpus of millions is never held in memory):
 *  - an image file (any name: the content decides);
 *  - a folder: every .jpg, .jpeg, .png and .webp below it, any depth, in
 *    bytewise order of names at each level; hidden entries left out;
 *  - a list file (text that is not an image): one path a line, relative to
 *    the list's folder; blank lines and '#' lines skipped; a TAB and what
 *    follows it (a label) ignored;
 *  - "-": the same list format on standard input, relative to the
 *    current folder. */
typedef struct osp_inputs osp_inputs;

OSP_API int osp_inputs_new(const char *const *sources, int n, osp_inputs **out);
/* The next path (borrowed until the next call) in *path, or NULL at the
 * end. A source that cannot be read at all (a missing file or folder) is
 * an error; entries of a folder that are not images are counted
 * (osp_inputs_skipped), and the first few named in warnings. */
OSP_API int osp_inputs_next(osp_inputs *in, const char **path);
OSP_API int64_t osp_inputs_skipped(const osp_inputs *in);
OSP_API void osp_inputs_free(osp_inputs *in);

/* The id of an image path: SHA-256 of the path's bytes, the first 8 bytes
 * big-endian, top bit cleared (never negative). */
OSP_API int64_t osp_image_id(const char *path);

/* The content hash of a model: SHA-256 (hex, 64 characters and a NUL)
 * over its spec text, its weights, its buffers and its label names (each
 * with its NUL), so the same network saved twice has the same hash. */
OSP_API int osp_model_content_hash(const osp_net *net, char hex[65]);

/* ---- a batch run ----------------------------------------------------------- */

typedef struct osp_pipeline_progress {
    int64_t done;     /* images finished in this run (errors included) */
    int64_t errors;   /* of which could not be read */
    int64_t skipped;  /* inputs already in the catalogue */
    int64_t total;    /* inputs expected, or -1 when unknown */
    double images_per_s;
    double elapsed_s;
} osp_pipeline_progress;

typedef struct osp_pipeline_options {
    /* What to write: tags (tags.jsonl and labels) and/or vectors from
     * embed_layer (NULL = none). At least one. */
    int tags;
    const char *embed_layer;
    int top_k;             /* labels per image (default 5) */
    float threshold;       /* leave out labels scoring below (default 0) */
    int sigmoid;           /* scores as independent sigmoids (multi-label
                              models), not one softmax */
    int normalize;         /* L2-normalise vectors */
    /* Binary codes instead of float vectors: the layer's vector (pooled,
     * normalised as asked) through this learned hash (osprey/hash.h);
     * written as uint8 bits/8 a row, dtype "uint8". Borrowed. */
    const struct osp_hash *hash;
    /* The hash's file, recorded in the catalogue ("hash_file") so that
     * queries can be coded alike; NULL when the hash is the model's own
     * head (osp_hash_from_net). */
    const char *hash_path;
    osp_dtype dtype;       /* of vectors: OSP_DTYPE_F32 or OSP_DTYPE_F16 */
    int batch;             /* images per forward pass (default 32) */
    int workers;           /* decoding threads (0 = the cores) */
    int64_t max_pixels;    /* larger images are error rows (0 = default) */
    int shard, shards;     /* do the inputs whose id % shards == shard (0, 1 = all) */
    int verify;            /* --skip-done: an image in the catalogue is skipped only
                              if its file's SHA-256 is unchanged; a changed one is
                              reported (DIR keeps its first answer) */
    int64_t total;         /* inputs expected, for progress (-1 = unknown) */
    const char *model_path; /* recorded in the catalogue; the model's file */
    /* Ensembles (Deep Image): tags average the scores of net and these
     * models (the same classes), each at every scale of scales (square
     * input sides; none = each model's own size). Vectors come from net at
     * the first scale, which must then be its own input size. */
    osp_net *const *models;
    const char *const *model_paths; /* their files, for the record */
    int n_models;
    const int *scales;
    int n_scales;
    const char *command;   /* recorded with the run (the command line), may be NULL */
    void (*on_progress)(const osp_pipeline_progress *p, void *user);
    void *user;
    /* How embed_layer becomes a vector: for a token layer (T x D), the
     * class token or the tokens' mean (osprey/nn.h); recorded in the
     * catalogue ("pool") so that queries are pooled alike. */
    osp_pool pool;
    /* One run or merge at a time writes into a folder: a run that finds
     * another writer there waits this many seconds for it to end (the
     * processes of a killed job take a moment to go), then gives up; 0
     * gives up at once. */
    double lock_timeout;
} osp_pipeline_options;

/* Defaults: tags, top 5, softmax, float32, batch 32, all cores, a lock
 * timeout of OSP_PIPELINE_LOCK_TIMEOUT seconds. */
OSP_API osp_pipeline_options osp_pipeline_defaults(void);
#define OSP_PIPELINE_LOCK_TIMEOUT 10.0

typedef struct osp_pipeline_summary {
    int64_t images;     /* done in this run: rows written */
    int64_t errors;     /* of which error rows */
    int64_t skipped;    /* already in the catalogue */
    int64_t changed;    /* with verify: in the catalogue, file changed since */
    int64_t not_ours;   /* other shards' inputs */
    int64_t error_kinds[8]; /* by osp_pipeline_error_code index */
    int64_t total_rows; /* rows in DIR after the run */
    double seconds;
    double images_per_s;
} osp_pipeline_summary;

/* Runs net (loaded from opt->model_path) over in into dir (created if
 * missing). A dir that holds another model's run, another layer or
 * dtype, or another shard, is refused before any work starts; so is an
 * unwritable dir or a layer the network lacks. summary may be NULL. */
OSP_API int osp_pipeline_run(osp_net *net, osp_inputs *in, const char *dir,
                             const osp_pipeline_options *opt, osp_pipeline_summary *summary);

/* The error codes of error rows: "read" (the file could not be read),
 * "decode" (not a readable image), "too_large" (over the pixel limit),
 * "empty" (a zero-byte file). */
OSP_API const char *osp_pipeline_error_code(int kind);
#define OSP_PIPELINE_ERROR_KINDS 4

/* Joins the output folders srcs (shards of one model's run) into out,
 * which must not hold a run (an earlier merge there is replaced): ids
 * unchanged, rows in the order of srcs, only what each source committed.
 * The sources must agree on model_sha256, layer, dim, dtype, normalize,
 * tags and sigmoid. An id in two sources is an error, unless both are
 * the same path (then the first is kept). out's files are written under
 * temporary names and renamed into place, catalog.db last. Another
 * writer in out (a merge, or a run) is waited for up to lock_timeout_s
 * seconds, as osp_pipeline_options.lock_timeout says. */
OSP_API int osp_pipeline_merge(const char *out, const char *const *srcs, int n, double lock_timeout_s);

/* ---- reading an output folder ------------------------------------------------ */

typedef struct osp_catalog osp_catalog;

/* Opens dir's catalog.db read-only. */
OSP_API int osp_catalog_open(const char *dir, osp_catalog **out);
OSP_API void osp_catalog_close(osp_catalog *c);
/* A value of the run's settings (borrowed until the catalog is closed), or
 * NULL: "model" (the model's file as given), "model_name", "model_sha256",
 * "layer", "dim", "dtype", "normalize", "sigmoid", "top_k", "shard". */
OSP_API const char *osp_catalog_setting(osp_catalog *c, const char *key);
/* An image by id or by path: its path (copied into path, cap bytes; may
 * be NULL), its id and its row in vectors.npy (-1 if it has none: an
 * error row, or no vectors). OSP_ENOENT if absent. */
OSP_API int osp_catalog_by_id(osp_catalog *c, int64_t id, char *path, size_t cap, int64_t *row);
OSP_API int osp_catalog_by_path(osp_catalog *c, const char *path, int64_t *id, int64_t *row);
/* Images with status ok / error. */
OSP_API int osp_catalog_counts(osp_catalog *c, int64_t *ok, int64_t *errors);

/* Loads dir's vectors as float32 (float16 converted) N x D and their ids
 * (N int64), checked against each other and the catalogue's row count. A
 * folder of binary codes (embedded with a hash) gives them as they are:
 * uint8 N x bits/8, packed as the binary index takes them. */
OSP_API int osp_pipeline_load_vectors(const char *dir, osp_array *vectors, osp_array *ids);
/* The vectors of n committed rows (rows[i] in [0, rows committed)) as
 * float32, dim floats each, into out (n x dim floats): one query's
 * vector without loading them all. A folder of binary codes gives each
 * byte of a code as a float (0 to 255). OSP_ERANGE for a row that is not
 * committed; OSP_ENOENT if the folder holds no vectors. */
OSP_API int osp_catalog_read_vectors(osp_catalog *c, const int64_t *rows, int64_t n, float *out);

/* The content hash a folder records as model_sha256: SHA-256, as 64
 * lower-case hex digits and a NUL, over the network's spec text, its
 * weights and its buffers (the flat float arrays of osp_graph_weights and
 * osp_graph_buffers, raw little-endian bytes) and its label names (each
 * with its terminating NUL), in that order. Take it right after loading:
 * it is of the parameters as they are. */
OSP_API int osp_model_content_hash(const osp_net *net, char hex[65]);
/* The identity a folder of codes records as "hash": SHA-256 (hex) of the
 * hash's weights (bits x dim floats) followed by its bias (bits floats). */
OSP_API int osp_hash_content_hash(const struct osp_hash *h, char hex[65]);

#ifdef __cplusplus
}
#endif

#endif
