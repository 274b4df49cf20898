/* The router's metrics (router_metrics.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/router.h"
#include "serve/router_metrics.h"

const char *const osp__rt_metric_routes[] = {"search", "annotate", "images_add", "images_delete",
                                        "healthz", "metrics", "page", "catalog_image"};
const int osp__rt_metric_n_routes = (int)(sizeof osp__rt_metric_routes /
                                          sizeof osp__rt_metric_routes[0]);

void osp__rt_metrics_retry(rt_metrics *m) {
    if (m) atomic_fetch_add(&m->retries, 1);
}

void osp__rt_metrics_partial(rt_metrics *m) {
    if (m) atomic_fetch_add(&m->partial, 1);
}

void osp__rt_metrics_upstream(rt_metrics *m, rt_worker *w, long status, int answered, int64_t ms) {
    (void)m;
    (void)status;
    (void)answered;
    atomic_fetch_add(&w->call_ms, (long long)ms);
}

void osp__rt_metrics_worker_up(rt_metrics *m, rt_worker *w, int up) {
    (void)m;
    if (!up) atomic_fetch_add(&w->downs, 1);
}

/* Appends printf output to a malloc'd buffer; a failure leaves *failed. */
static void put(char **buf, size_t *len, size_t *cap, int *failed, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void put(char **buf, size_t *len, size_t *cap, int *failed, const char *fmt, ...) {
    if (*failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            *failed = 1;
            return;
        }
        if ((size_t)n < *cap - *len) {
            *len += (size_t)n;
            return;
        }
        size_t ncap = *cap * 2 + (size_t)n + 1;
        char *nb = realloc(*buf, ncap);
        if (!nb) {
            *failed = 1;
            return;
        }
        *buf = nb;
        *cap = ncap;
    }
}

char *osp__rt_metrics_render(rt_router *r, size_t *out_len) {
    rt_metrics *m = r->metrics;
    size_t len = 0, cap = 0;
    char *buf = m && m->http ? osp__metrics_render(m->http, &len) : NULL;
    if (!buf) {
        buf = malloc(1);
        if (!buf) return NULL;
        buf[0] = '\0';
        len = 0;
    }
    cap = len + 1;
    int failed = 0;
#define P(...) put(&buf, &len, &cap, &failed, __VA_ARGS__)
    P("# HELP osprey_router_retries_total Calls to a worker retried on another after a failure.\n");
    P("# TYPE osprey_router_retries_total counter\n");
    P("osprey_router_retries_total %ld\n", m ? atomic_load(&m->retries) : 0L);
    P("# HELP osprey_router_partial_total Answers missing a shard whose every replica was down.\n");
    P("# TYPE osprey_router_partial_total counter\n");
    P("osprey_router_partial_total %ld\n", m ? atomic_load(&m->partial) : 0L);
    static const char *const names[][3] = {
        {"worker_up", "gauge", "1 while the worker is taken to be up."},
        {"worker_calls_total", "counter", "Calls made to the worker (health checks included)."},
        {"worker_failures_total", "counter", "Calls to the worker that failed (no answer, 5xx, malformed)."},
        {"worker_downs_total", "counter", "Times the worker was marked down."},
        {"worker_call_seconds_total", "counter", "Time spent in calls to the worker."},
    };
    for (int k = 0; k < 5; k++) {
        P("# HELP osprey_router_%s %s\n# TYPE osprey_router_%s %s\n", names[k][0], names[k][2], names[k][0],
          names[k][1]);
        for (int i = 0; i < r->n_workers; i++) {
            rt_worker *w = &r->workers[i];
            P("osprey_router_%s{worker=\"%s\",shard=\"%d\"} ", names[k][0], w->addr, w->shard);
            switch (k) {
            case 0: P("%d\n", atomic_load(&w->up)); break;
            case 1: P("%ld\n", atomic_load(&w->calls)); break;
            case 2: P("%ld\n", atomic_load(&w->failures)); break;
            case 3: P("%ld\n", atomic_load(&w->downs)); break;
            default: P("%.3f\n", (double)atomic_load(&w->call_ms) / 1000.0); break;
            }
        }
    }
#undef P
    if (failed) {
        free(buf);
        return NULL;
    }
    if (out_len) *out_len = len;
    return buf;
}
