/* Prometheus metrics of an HTTP server (private to src/serve), rendered in
 * the text exposition format (version 0.0.4) for GET /metrics.
 *
 * One osp__metrics per server, made with the fixed list of its route
 * names ("annotate", "search", ...; anything else is counted as "other")
 * and a prefix for the metric names ("osprey_worker", "osprey_router"):
 *
 *   PREFIX_requests_total{route, code}        counter: requests answered,
 *                                             code the status class "2xx",
 *                                             "3xx", "4xx" or "5xx"
 *   PREFIX_request_errors_total{route, code}  counter: those answered with a
 *                                             status of 400 or more, code the
 *                                             exact status ("413")
 *   PREFIX_request_duration_seconds{route}    histogram: from the request's
 *                                             headers to the end of its
 *                                             answer; fixed buckets
 *                                             OSP__METRICS_BUCKETS
 *   PREFIX_requests_in_flight                 gauge: requests received and
 *                                             not yet answered (the queue
 *                                             depth: includes those waiting
 *                                             for the inference lock)
 *   and the gauges the server adds with osp__metrics_gauge (its own names,
 *   full, with the prefix added).
 *
 * Every call is thread-safe (one mutex per osp__metrics; an observation
 * costs a lock and a few additions). src/serve/http.c calls
 * osp__metrics_begin / osp__metrics_end for each request itself when its
 * config names the metrics; the handler only sets the request's route. */
#ifndef OSP_SERVE_METRICS_H
#define OSP_SERVE_METRICS_H

#include <stddef.h>

/* Upper bounds of the latency buckets, in seconds (+Inf is added). */
#define OSP__METRICS_BUCKETS 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
#define OSP__METRICS_N_BUCKETS 15
/* Routes and extra gauges per osp__metrics, at most. */
#define OSP__METRICS_MAX_ROUTES 24
#define OSP__METRICS_MAX_GAUGES 16

typedef struct osp__metrics osp__metrics;

/* routes: n names (copied; [a-z0-9_] only, "other" is added). prefix:
 * [a-z_] (copied). NULL (with osp_error) when out of memory or a name is
 * not valid. */
osp__metrics *osp__metrics_new(const char *prefix, const char *const *routes, int n);
void osp__metrics_free(osp__metrics *m);

/* A request was received (in flight + 1). */
void osp__metrics_begin(osp__metrics *m);
/* A request begun was answered with status after seconds (in flight - 1).
 * route: one of the names given, or NULL / any other: "other". status 0
 * (no answer: the connection failed) counts as "5xx"-less: only the
 * histogram and in flight change, under code "none". */
void osp__metrics_end(osp__metrics *m, const char *route, int status, double seconds);

/* A gauge of the server's own: PREFIX_name with help text (both copied).
 * Returns its handle (>= 0), or -1 when there are too many. */
int osp__metrics_gauge(osp__metrics *m, const char *name, const char *help);
void osp__metrics_gauge_set(osp__metrics *m, int gauge, double value);
void osp__metrics_gauge_add(osp__metrics *m, int gauge, double delta);

/* The exposition text: a new NUL-terminated string (free()), its length in
 * *len (may be NULL); NULL when out of memory. */
char *osp__metrics_render(osp__metrics *m, size_t *len);

#endif
