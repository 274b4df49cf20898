/* Prometheus counters, histograms and gauges of an HTTP server
 * (metrics.h). */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/core.h"

static const double BOUNDS[OSP__METRICS_N_BUCKETS] = {OSP__METRICS_BUCKETS};

/* status classes 2xx..5xx, and "none" (no answer) */
#define N_CLASSES 5
static const char *const CLASSES[N_CLASSES] = {"2xx", "3xx", "4xx", "5xx", "none"};
/* exact error statuses counted per route: 400..599 */
#define N_ERRORS 200

typedef struct route_stats {
    char *name;
    uint64_t requests[N_CLASSES];
    uint64_t errors[N_ERRORS];
    uint64_t buckets[OSP__METRICS_N_BUCKETS + 1]; /* not cumulative; last: +Inf */
    double sum;
    uint64_t count;
} route_stats;

typedef struct gauge {
    char *name, *help;
    double value;
} gauge;

struct osp__metrics {
    pthread_mutex_t lock;
    char *prefix;
    int n_routes; /* the last is "other" */
    route_stats routes[OSP__METRICS_MAX_ROUTES + 1];
    int n_gauges;
    gauge gauges[OSP__METRICS_MAX_GAUGES];
    int64_t in_flight;
};

static int valid_name(const char *s, int digits) {
    if (!s || !*s) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || *p == '_' || (digits && *p >= '0' && *p <= '9'))) return 0;
    return 1;
}

osp__metrics *osp__metrics_new(const char *prefix, const char *const *routes, int n) {
    if (!valid_name(prefix, 0) || n < 0 || n > OSP__METRICS_MAX_ROUTES) {
        osp_error(OSP_EINVAL, "metrics: bad prefix or too many routes");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!valid_name(routes[i], 1)) {
            osp_error(OSP_EINVAL, "metrics: bad route name '%s'", routes[i] ? routes[i] : "(null)");
            return NULL;
        }
    osp__metrics *m = calloc(1, sizeof *m);
    if (!m) goto oom;
    pthread_mutex_init(&m->lock, NULL);
    if (!(m->prefix = strdup(prefix))) goto oom;
    for (int i = 0; i <= n; i++) {
        if (!(m->routes[i].name = strdup(i < n ? routes[i] : "other"))) goto oom;
        m->n_routes = i + 1;
    }
    return m;
oom:
    osp__metrics_free(m);
    osp_error(OSP_ENOMEM, "out of memory");
    return NULL;
}

void osp__metrics_free(osp__metrics *m) {
    if (!m) return;
    for (int i = 0; i < m->n_routes; i++) free(m->routes[i].name);
    for (int i = 0; i < m->n_gauges; i++) {
        free(m->gauges[i].name);
        free(m->gauges[i].help);
    }
    free(m->prefix);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void osp__metrics_begin(osp__metrics *m) {
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    m->in_flight++;
    pthread_mutex_unlock(&m->lock);
}

void osp__metrics_end(osp__metrics *m, const char *route, int status, double seconds) {
    if (!m) return;
    int r = m->n_routes - 1;
    for (int i = 0; route && i < m->n_routes - 1; i++)
        if (!strcmp(m->routes[i].name, route)) r = i;
    int cls = status >= 200 && status < 600 ? status / 100 - 2 : N_CLASSES - 1;
    int b = 0;
    if (!(seconds >= 0)) seconds = 0;
    while (b < OSP__METRICS_N_BUCKETS && seconds > BOUNDS[b]) b++;
    pthread_mutex_lock(&m->lock);
    route_stats *s = &m->routes[r];
    s->requests[cls]++;
    if (status >= 400 && status < 400 + N_ERRORS) s->errors[status - 400]++;
    s->buckets[b]++;
    s->sum += seconds;
    s->count++;
    m->in_flight--;
    pthread_mutex_unlock(&m->lock);
}

int osp__metrics_gauge(osp__metrics *m, const char *name, const char *help) {
    if (!m || !valid_name(name, 1)) return -1;
    pthread_mutex_lock(&m->lock);
    int g = -1;
    if (m->n_gauges < OSP__METRICS_MAX_GAUGES) {
        gauge *x = &m->gauges[m->n_gauges];
        x->name = strdup(name);
        x->help = strdup(help ? help : name);
        if (x->name && x->help) {
            g = m->n_gauges++;
        } else {
            free(x->name);
            free(x->help);
            x->name = x->help = NULL;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return g;
}

void osp__metrics_gauge_set(osp__metrics *m, int g, double value) {
    if (!m || g < 0) return;
    pthread_mutex_lock(&m->lock);
    if (g < m->n_gauges) m->gauges[g].value = value;
    pthread_mutex_unlock(&m->lock);
}

void osp__metrics_gauge_add(osp__metrics *m, int g, double delta) {
    if (!m || g < 0) return;
    pthread_mutex_lock(&m->lock);
    if (g < m->n_gauges) m->gauges[g].value += delta;
    pthread_mutex_unlock(&m->lock);
}

/* A growing string. */
typedef struct text {
    char *buf;
    size_t len, cap;
    int failed;
} text;

static void put(text *t, const char *fmt, ...) OSP_PRINTF(2, 3);
static void put(text *t, const char *fmt, ...) {
    if (t->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)n + 1;
        char *b = realloc(t->buf, cap);
        if (!b) {
            t->failed = 1;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
}

char *osp__metrics_render(osp__metrics *m, size_t *len) {
    text t = {.cap = 4096};
    if (!(t.buf = malloc(t.cap))) return NULL;
    t.buf[0] = 0;
    const char *p = m->prefix;
    pthread_mutex_lock(&m->lock);
    put(&t, "# HELP %s_requests_total Requests answered, by route and status class.\n", p);
    put(&t, "# TYPE %s_requests_total counter\n", p);
    for (int r = 0; r < m->n_routes; r++)
        for (int c = 0; c < N_CLASSES; c++)
            if (m->routes[r].requests[c] || c < 4)
                put(&t, "%s_requests_total{route=\"%s\",code=\"%s\"} %llu\n", p, m->routes[r].name,
                    CLASSES[c], (unsigned long long)m->routes[r].requests[c]);
    put(&t, "# HELP %s_request_errors_total Requests answered with an error status, by route and status.\n", p);
    put(&t, "# TYPE %s_request_errors_total counter\n", p);
    for (int r = 0; r < m->n_routes; r++)
        for (int e = 0; e < N_ERRORS; e++)
            if (m->routes[r].errors[e])
                put(&t, "%s_request_errors_total{route=\"%s\",code=\"%d\"} %llu\n", p, m->routes[r].name,
                    400 + e, (unsigned long long)m->routes[r].errors[e]);
    put(&t, "# HELP %s_request_duration_seconds Time from a request's headers to the end of its answer.\n", p);
    put(&t, "# TYPE %s_request_duration_seconds histogram\n", p);
    for (int r = 0; r < m->n_routes; r++) {
        const route_stats *s = &m->routes[r];
        uint64_t cum = 0;
        for (int b = 0; b <= OSP__METRICS_N_BUCKETS; b++) {
            cum += s->buckets[b];
            if (b < OSP__METRICS_N_BUCKETS)
                put(&t, "%s_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", p, s->name, BOUNDS[b],
                    (unsigned long long)cum);
            else
                put(&t, "%s_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", p, s->name,
                    (unsigned long long)cum);
        }
        put(&t, "%s_request_duration_seconds_sum{route=\"%s\"} %.9g\n", p, s->name, s->sum);
        put(&t, "%s_request_duration_seconds_count{route=\"%s\"} %llu\n", p, s->name,
            (unsigned long long)s->count);
    }
    put(&t, "# HELP %s_requests_in_flight Requests received and not yet answered.\n", p);
    put(&t, "# TYPE %s_requests_in_flight gauge\n", p);
    put(&t, "%s_requests_in_flight %lld\n", p, (long long)m->in_flight);
    for (int g = 0; g < m->n_gauges; g++) {
        put(&t, "# HELP %s_%s %s\n", p, m->gauges[g].name, m->gauges[g].help);
        put(&t, "# TYPE %s_%s gauge\n", p, m->gauges[g].name);
        put(&t, "%s_%s %.17g\n", p, m->gauges[g].name, m->gauges[g].value);
    }
    pthread_mutex_unlock(&m->lock);
    if (t.failed) {
        free(t.buf);
        return NULL;
    }
    if (len) *len = t.len;
    return t.buf;
}
