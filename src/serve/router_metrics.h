/* The router's metrics (GET /metrics): the request counters, latency
 * histograms and in-flight gauge of metrics.h, plus what metrics.h has no
 * labels for: per worker, its state and the calls made to it. */
#ifndef OSP_SERVE_ROUTER_METRICS_H
#define OSP_SERVE_ROUTER_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "serve/metrics.h"

struct rt_router;
struct rt_worker;

typedef struct rt_metrics {
    osp__metrics *http; /* requests by route, latency, in flight */
    atomic_long retries, partial;
} rt_metrics;

/* The routes the router counts its requests under. */
extern const char *const osp__rt_metric_routes[];
extern const int osp__rt_metric_n_routes;

/* NULL metrics: these do nothing. */
void osp__rt_metrics_retry(rt_metrics *m);
void osp__rt_metrics_partial(rt_metrics *m);
void osp__rt_metrics_upstream(rt_metrics *m, struct rt_worker *w, long status, int answered,
                              int64_t ms);
void osp__rt_metrics_worker_up(rt_metrics *m, struct rt_worker *w, int up);

/* The exposition text (free()), NULL when out of memory. */
char *osp__rt_metrics_render(struct rt_router *r, size_t *len);

#endif
