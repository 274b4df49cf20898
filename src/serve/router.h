/* The router's private parts (src/serve/router*.c): its workers, the calls
 * made to them over libcurl's multi interface, and the merge of the
 * shards' answers. docs/serving.md tells the design. */
#ifndef OSP_SERVE_ROUTER_H
#define OSP_SERVE_ROUTER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "serve/request.h"

/* The worker's limits (request.h), which the router keeps too: results
 * when k or maxResults is not given, their largest value, images per
 * annotate or add request (Cloud Vision's 16), queries per search. */
#define RT_DEFAULT_K OSP__DEFAULT_RESULTS
#define RT_MAX_K OSP__MAX_RESULTS
#define RT_MAX_IMAGES OSP__MAX_IMAGES
#define RT_MAX_QUERIES OSP__MAX_QUERIES
/* A worker's answer larger than this is a failed call. */
#define RT_MAX_ANSWER (64u << 20)

/* One worker: an `osprey serve` process, a replica of one shard. */
typedef struct rt_worker {
    char addr[128]; /* host:port as given */
    char url[144];  /* http://host:port */
    int index;      /* in the router's worker array */
    int shard, replica;
    atomic_int up;  /* 1 while it answers; health checks and failed calls set it */
    atomic_long calls, failures, downs;
    atomic_llong call_ms; /* time spent in calls to it, summed */
    pthread_mutex_t lock; /* guards last_error */
    char last_error[256];
} rt_worker;

typedef struct rt_shard {
    int n;                /* replicas */
    rt_worker **replicas; /* into the router's worker array */
    atomic_uint next;     /* round robin */
} rt_shard;

struct rt_client;
struct rt_metrics;

typedef struct rt_router {
    int n_shards;
    rt_shard *shards;
    int n_workers;
    rt_worker *workers;
    atomic_uint next_worker; /* round robin of inference over all workers */
    int health_ms, connect_ms;
    /* Idle clients (a curl multi handle each, with its connection cache
     * and easy handles): a request takes one, uses it, gives it back. */
    pthread_mutex_t pool_lock;
    struct rt_client *idle;
    struct rt_metrics *metrics; /* NULL in unit tests */
} rt_router;

/* ---- workers ---- */

/* Sets up r's workers from shard specs ("HOST:PORT[,HOST:PORT...]"). */
int osp__rt_router_init(rt_router *r, const char *const *shards, int n_shards);
void osp__rt_router_free(rt_router *r);
void osp__rt_worker_set_up(rt_router *r, rt_worker *w, int up, const char *why);
/* Live replicas of shard s. */
int osp__rt_shard_live(const rt_router *r, int s);

/* ---- calls to workers ---- */

enum { RT_ANY_WORKER = -1, RT_FIXED_WORKER = -2 };

/* One HTTP exchange with a worker, retried on another one where that is
 * allowed. */
typedef struct rt_call {
    /* what */
    const char *method; /* "GET", "POST", "DELETE" */
    const char *path;   /* "/v1/vectors:search" */
    const char *body;   /* NULL: none */
    size_t body_len;
    const char *auth;   /* an Authorization header's value, or NULL */
    /* where: a shard index (a live replica of it, another on failure),
     * RT_ANY_WORKER (any live worker, another on failure) or
     * RT_FIXED_WORKER (exactly `fixed`, once, live or not) */
    int target;
    rt_worker *fixed;
    int timeout_ms;     /* of one attempt; 0: until the deadline */
    /* An answer with a 2xx status is checked by this, when set: it returns
     * 0 to take it, or nonzero (with osp_error) to try another worker. */
    int (*check)(struct rt_call *call, void *ctx);
    void *check_ctx;
    /* the result */
    int ok;             /* an answer came (status set) */
    long status;        /* HTTP status of the answer taken */
    char *answer;       /* its body, NUL-terminated (free) */
    size_t answer_len;
    cJSON *json;        /* for the check's use; freed by osp__rt_call_clear */
    rt_worker *served_by;
    int attempts;
    char error[256];    /* why no answer came (ok == 0) */
    /* private */
    unsigned char *tried;
} rt_call;

/* Runs the calls at once and returns when each has an answer or has run
 * out of workers or time (deadline: osp__rt_now_ms() clock). An answer with a
 * 4xx status is final; no connection, a timeout, a 5xx or an answer the
 * check refuses makes the call try another live worker of its target
 * (the worker is marked down unless it answered at all). */
void osp__rt_run(rt_router *r, rt_call *calls, int n, int64_t deadline);
void osp__rt_call_clear(rt_call *call);
void osp__rt_clients_free(rt_router *r);
int64_t osp__rt_now_ms(void);

/* ---- health ---- */

/* One round of health checks of every worker (GET /healthz, timeout_ms
 * each, all at once), setting each one's state. */
void osp__rt_health_round(rt_router *r, int timeout_ms);

/* ---- answers ---- */

/* 0 if answer is a well-formed vectors:search answer to n_queries queries:
 * {"results": [{"hits": [{"id": "<decimal>", "score": number, ...}]}]};
 * else an OSP_EFORMAT with why. */
int osp__rt_check_search_answer(const cJSON *answer, int n_queries);

/* Merges the shards' answers into one: for each query the k[q] best hits
 * over all shards by score (higher first), then id (smaller first), which
 * is the order and the top-k of one index over all the shards' vectors.
 * answers[s] is shard s's checked answer, or NULL for a missing shard.
 * Returns a new {"results": [{"hits": [...]}]} (hits copied), or NULL if
 * out of memory. */
cJSON *osp__rt_merge_search(const cJSON *const *answers, int n_shards, const int *k,
                            int n_queries);

/* The hit's id, parsed from its decimal string; -1 if it is not one. */
int64_t osp__rt_hit_id(const cJSON *hit);

#endif
