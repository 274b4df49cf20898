/* osprey serve: real-time answers over HTTP (docs/http-api.md,
 * docs/serving.md). A worker (osprey serve) holds a model and one shard of
 * an index and its catalogue; a router (osprey route) fans queries out to
 * one live replica of every shard, merges the top-k, and serves the web
 * page. Both stop cleanly on osp_serve_stop (SIGTERM): in-flight requests
 * finish, then the call returns. */
#ifndef OSPREY_SERVE_H
#define OSPREY_SERVE_H

#include <stdint.h>

#include "osprey/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Asks every running worker and router in the process to stop
 * (async-signal-safe: call it from a SIGTERM handler). */
OSP_API void osp_serve_stop(void);
/* 1 once osp_serve_stop was called. */
OSP_API int osp_serve_stopping(void);

/* ---- the worker ------------------------------------------------------------ */

/* osprey serve: one worker, the HTTP API of docs/http-api.md over a model
 * and (optionally) one shard's index and catalogue, the output folder of
 * `osprey tag --embed` / `osprey embed` and an index built from it:
 *   POST /v1/images:annotate   labels, similar images, colours, embeddings
 *   POST /v1/vectors:search    nearest images of vectors
 *   POST /v1/images            add images (bearer token)
 *   DELETE /v1/images/{id}     remove one (bearer token)
 *   GET /healthz, GET /metrics
 * The network runs one request's images as one batch, one request at a
 * time (a mutex: the graph is not thread-safe); searches share the index,
 * writes hold it alone and are durable (catalog.db committed, the index
 * file rewritten atomically) before they are answered. */
typedef struct osp_serve_worker_config {
    const char *model_path;  /* the model (required) */
    /* the index file and the output folder it was built from (both or
     * neither; the catalogue alone is allowed: it gives EMBEDDING its layer
     * and normalisation). The model must be the one the folder was made
     * with (its content hash is checked). */
    const char *index_path;
    const char *catalog_dir;
    /* EMBEDDING's layer where there is no catalogue (with one, it must be
     * the catalogue's layer or NULL); its vectors are then averaged over H
     * x W and not normalised unless normalize is set. */
    const char *layer;
    int normalize;
    const char *listen;      /* HOST:PORT (default "127.0.0.1:8080"; port 0: any free port) */
    /* imageUri is accepted only for files that resolve (symbolic links
     * followed) under this folder; NULL: imageUri is refused. */
    const char *allow_root;
    /* A file holding the bearer token that writes need (surrounding white
     * space ignored; at least 16 characters). NULL: every write is
     * refused. Needs index_path. */
    const char *token_file;
    int threads;             /* HTTP threads (default 4) */
    int max_connections;     /* default 256 */
    int timeout_s;           /* idle connection and request body limit (default 30) */
    size_t max_body_bytes;   /* a JSON body (default 10 MB, as Cloud Vision) */
    size_t max_image_bytes;  /* an image's bytes (default 20 MB, as Cloud Vision) */
    int64_t max_pixels;      /* an image's width x height (0: osprey's default, 64 Mi) */
    double drain_s;          /* at a stop, the longest wait for requests in flight (default 30) */
    /* Called once the worker listens, with its address ("127.0.0.1:PORT",
     * the real port when 0 was asked), from the calling thread. */
    void (*on_ready)(const char *address, void *user);
    void *user;
} osp_serve_worker_config;

OSP_API void osp_serve_worker_defaults(osp_serve_worker_config *cfg);
/* Loads what cfg names, checks it (a clear error before listening), serves
 * until osp_serve_stop, then finishes the requests in flight and returns
 * 0. Errors: OSP_EINVAL (bad settings), OSP_ENOENT / OSP_EFORMAT (files),
 * OSP_EIO (cannot listen), with osp_last_error() saying what. */
OSP_API int osp_serve_worker_run(const osp_serve_worker_config *cfg);

/* ---- the router ------------------------------------------------------------ */

/* osprey route: one HTTP front over shard workers (docs/serving.md). Shard
 * i holds the images whose id % n_shards == i; each of its replicas is an
 * `osprey serve` holding the same shard. Searches go to one live replica
 * of every shard (round robin, another on failure) and the hits are
 * merged; annotations are balanced over all live workers; writes go to
 * every live replica of the owning shard. */
typedef struct osp_serve_router_config {
    const char *listen;          /* "HOST:PORT"; port 0 picks a free one */
    /* n_shards strings, one per shard: its replicas' "HOST:PORT" (or
     * "http://HOST:PORT"), comma-separated. Borrowed. */
    const char *const *shards;
    int n_shards;
    const char *allow_root;      /* catalogue images served from below this
                                    folder only; NULL: none are served */
    int timeout_ms;              /* deadline of one client request, retries
                                    included (default 10000) */
    int health_ms;               /* period of the workers' health checks
                                    (default 1000) */
    int threads;                 /* HTTP threads, each serving one request at
                                    a time (default 16) */
    /* Called once, when the router accepts connections, with the address
     * it listens on (the real port where listen asked for 0). */
    void (*on_listening)(const char *host_port, void *ctx);
    void *ctx;
} osp_serve_router_config;

/* The defaults above (listen, shards: NULL). */
OSP_API osp_serve_router_config osp_serve_router_defaults(void);

/* Runs the router until osp_serve_stop() is called; then requests in
 * flight finish and it returns 0. Returns a negative OSP_E... code with
 * osp_last_error() set if it cannot start (a bad address, a port in use). */
OSP_API int osp_serve_router_run(const osp_serve_router_config *cfg);

#ifdef __cplusplus
}
#endif

#endif
