/* The configuration advisor: times real training steps at candidate batch
 * sizes and thread counts on this machine, counts the memory each would
 * plan, and recommends a batch size, a thread count and, for mpirun, a
 * split of the cores into ranks (docs/advise.md).
 *
 * The measuring (osp_advise) and the choosing (osp_advise_recommend, a pure
 * function of the table) are apart, so that the choice can be tested on
 * given tables. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__ /* defined by the headers above */
#include <malloc.h>
#endif

#include "osprey/train.h"

/* A batch (or thread count) must beat the best before it by this fraction
 * to count as an improvement; two in a row that do not end the sweep, so
 * one noisy measurement on a shared machine does not. */
#define IMPROVEMENT 0.02
#define STALE_LIMIT 2
/* Timed steps per point: at least 2 for a median, at most 100. */
#define MIN_STEPS 2
#define MAX_STEPS 100
/* Samples decoded once and repeated to fill every batch: the step's time
 * does not depend on which samples it sees. */
#define POOL_MAX 256
/* Input batches a training process holds: the one trained on and the
 * loader's two decoded ahead (its default prefetch). */
#define INPUT_BATCHES 3

osp_advise_config osp_advise_defaults(void) {
    osp_advise_config c = {0};
    c.seconds = 10;
    c.min_batch = 8;
    c.max_batch = 1024;
    c.optim = OSP_OPTIM_SGD;
    c.tolerance = 0.05;
    c.seed = 1;
    return c;
}

void osp_advice_free(osp_advice *a) {
    if (!a) return;
    osp_free(a->points);
    osp_free(a);
}

int osp_advise_planned_bytes(const osp_net *net, int batch, osp_optim_kind optim, int64_t *out) {
    if (!net || !out || batch <= 0) return osp_error(OSP_EINVAL, "osp_advise_planned_bytes: bad arguments");
    size_t arena;
    int rc = osp_graph_train_bytes(net->graph, batch, &arena);
    if (rc) return rc;
    /* The flat arrays' lengths, padding included (the accessors only read). */
    int64_t weights = 0, buffers = 0;
    osp_graph_weights((osp_graph *)net->graph, &weights);
    osp_graph_buffers((osp_graph *)net->graph, &buffers);
    /* weights and gradients, plus a moment (SGD momentum) or two (Adam) */
    const int64_t per_weight = optim == OSP_OPTIM_SGD ? 3 : 4;
    const double input = (double)INPUT_BATCHES * batch *
                         ((double)osp_shape_numel(&net->input) * sizeof(float) + sizeof(int32_t));
    const double total = (double)arena + (double)sizeof(float) * (per_weight * weights + buffers) + input;
    if (total > (double)INT64_MAX / 2) return osp_error(OSP_ERANGE, "batch %d needs too much memory", batch);
    *out = (int64_t)total;
    return OSP_OK;
}

/* "12.3 MiB" */
static void format_bytes(double bytes, char *buf, size_t len) {
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
}

static int fits(const osp_advise_point *p, int64_t budget) {
    return p->steps > 0 && p->images_per_s > 0 && (budget <= 0 || p->planned_bytes <= budget);
}

/* The fastest point that fits at batch (fewer threads on a tie), or -1. */
static int best_at_batch(const osp_advise_point *p, int n, int batch, int64_t budget) {
    int best = -1;
    for (int i = 0; i < n; i++) {
        if (p[i].batch != batch || !fits(&p[i], budget)) continue;
        if (best < 0 || p[i].images_per_s > p[best].images_per_s ||
            (p[i].images_per_s == p[best].images_per_s && p[i].threads < p[best].threads))
            best = i;
    }
    return best;
}

int osp_advise_recommend(const osp_advise_point *points, int n, int cores, int64_t budget,
                         double tolerance, osp_advice *out) {
    if (!points || n < 0 || cores < 1 || !out || !(tolerance >= 0 && tolerance < 1))
        return osp_error(OSP_EINVAL, "osp_advise_recommend: bad arguments");
    /* The fastest batch (its best thread count), then the smallest batch
     * within tolerance of it. */
    int best = -1;
    for (int i = 0; i < n; i++) {
        int b = best_at_batch(points, n, points[i].batch, budget);
        if (b >= 0 && (best < 0 || points[b].images_per_s > points[best].images_per_s ||
                       (points[b].images_per_s == points[best].images_per_s &&
                        points[b].batch < points[best].batch)))
            best = b;
    }
    if (best < 0) {
        char want[32];
        format_bytes((double)budget, want, sizeof want);
        return osp_error(OSP_ERANGE, "no measured batch size fits the memory budget of %s", want);
    }
    const double floor_ips = (1 - tolerance) * points[best].images_per_s;
    int chosen = best;
    for (int i = 0; i < n; i++) {
        int b = best_at_batch(points, n, points[i].batch, budget);
        if (b >= 0 && points[b].images_per_s >= floor_ips && points[b].batch < points[chosen].batch)
            chosen = b;
    }
    const osp_advise_point *c = &points[chosen];
    out->cores = cores;
    out->batch = c->batch;
    out->threads = c->threads;
    out->images_per_s = c->images_per_s;
    out->planned_bytes = c->planned_bytes;
    out->best_batch = points[best].batch;
    out->best_images_per_s = points[best].images_per_s;

    /* mpirun: cores / t ranks of t threads each, for every t measured at
     * the chosen batch. More ranks exchange more gradients, which the
     * prediction leaves out: a split must beat one process by more than
     * the tolerance, and fewer ranks within tolerance of the best split
     * are preferred. */
    out->ranks = 1;
    out->rank_threads = c->threads;
    out->ranks_images_per_s = c->images_per_s;
    const double bar = (1 + tolerance) * c->images_per_s;
    double best_split = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            const osp_advise_point *p = &points[i];
            if (p->batch != c->batch || !fits(p, 0) || p->threads > cores) continue;
            const int ranks = cores / p->threads;
            if (ranks < 2 || (budget > 0 && (double)ranks * (double)p->planned_bytes > (double)budget))
                continue;
            const double predicted = ranks * p->images_per_s;
            if (predicted <= bar) continue;
            if (pass == 0 && predicted > best_split) best_split = predicted;
            if (pass == 1 && predicted >= (1 - tolerance) * best_split &&
                (out->ranks == 1 || ranks < out->ranks ||
                 (ranks == out->ranks && predicted > out->ranks_images_per_s))) {
                out->ranks = ranks;
                out->rank_threads = p->threads;
                out->ranks_images_per_s = predicted;
            }
        }

    int len = 0;
    if (chosen == best)
        len = snprintf(out->reason, sizeof out->reason,
                       "batch %d at %d thread%s gave the most images/s (%.0f)", c->batch, c->threads,
                       c->threads == 1 ? "" : "s", c->images_per_s);
    else
        len = snprintf(out->reason, sizeof out->reason,
                       "batch %d at %d thread%s (%.0f images/s) is within %.0f%% of the fastest, "
                       "batch %d (%.0f); the smaller batch is preferred", c->batch, c->threads,
                       c->threads == 1 ? "" : "s", c->images_per_s, 100 * tolerance,
                       points[best].batch, points[best].images_per_s);
    if (budget > 0 && len > 0 && (size_t)len < sizeof out->reason) {
        char planned[32], want[32];
        format_bytes((double)c->planned_bytes, planned, sizeof planned);
        format_bytes((double)budget, want, sizeof want);
        snprintf(out->reason + len, sizeof out->reason - (size_t)len, "; it plans %s of the %s budget",
                 planned, want);
    }
    return OSP_OK;
}

/* ---- measuring -------------------------------------------------------------- */

/* A field of /proc/self/status in bytes ("VmRSS:", "VmHWM:"), or -1. */
static int64_t proc_status_bytes(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    int64_t kib = -1;
    const size_t len = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, len)) {
            kib = strtoll(line + len, NULL, 10);
            break;
        }
    fclose(f);
    return kib < 0 ? -1 : kib * 1024;
}

/* Sets the peak resident size back to the current one (Linux 4.0 and
 * later); 0 if it did. */
static int reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

typedef struct advisor {
    const osp_net *net;
    const osp_advise_config *cfg;
    int64_t size;      /* floats per sample */
    float *pool;       /* pool_n normalised samples */
    int32_t *pool_labels;
    int pool_n;
    double started, per_point_s;
    osp_advise_point *points;
    int n_points, cap_points;
} advisor;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Times training steps at (batch, threads) on a network of its own and
 * adds the point. */
static int measure(advisor *a, int batch, int threads, osp_advise_point **out) {
    const osp_net *net = a->net;
    osp_advise_point p = {.batch = batch, .threads = threads, .rss_bytes = -1};
    int rc = osp_advise_planned_bytes(net, batch, a->cfg->optim, &p.planned_bytes);
    if (rc) return rc;
    if (a->n_points == a->cap_points) {
        int cap = a->cap_points ? 2 * a->cap_points : 16;
        osp_advise_point *bigger = osp_calloc((size_t)cap, sizeof *bigger);
        if (!bigger) return OSP_ENOMEM;
        if (a->n_points) memcpy(bigger, a->points, (size_t)a->n_points * sizeof *bigger);
        osp_free(a->points);
        a->points = bigger;
        a->cap_points = cap;
    }
    osp_threads_set(threads);
#ifdef __GLIBC__
    malloc_trim(0); /* what the last point freed goes back, so its pages do not hide this one's */
#endif
    const int reset = reset_peak_rss() == 0;
    const int64_t rss0 = proc_status_bytes("VmRSS:"), hwm0 = proc_status_bytes("VmHWM:");

    osp_net *rep = NULL;
    osp_optim *opt = NULL;
    float *x = NULL;
    int32_t *labels = NULL;
    double times[MAX_STEPS];
    rc = osp_net_from_spec(net->spec_text, strlen(net->spec_text), "advise", a->cfg->seed, &rep);
    int64_t nw = 0;
    if (!rc) {
        osp_graph_weights(rep->graph, &nw);
        osp_optim_config oc = osp_optim_defaults(a->cfg->optim);
        rc = osp_optim_new(&oc, nw, &opt);
    }
    if (!rc) {
        x = osp_alloc((size_t)batch * (size_t)a->size * sizeof(float));
        labels = osp_alloc((size_t)batch * sizeof(int32_t));
        if (!x || !labels) rc = OSP_ENOMEM;
    }
    if (!rc) {
        for (int b = 0; b < batch; b++) {
            memcpy(x + (int64_t)b * a->size, a->pool + (int64_t)(b % a->pool_n) * a->size,
                   (size_t)a->size * sizeof(float));
            labels[b] = a->pool_labels[b % a->pool_n];
        }
        /* The warm-up step plans the graph and starts the thread pools;
         * lr 0 keeps the weights (and so the loss) as they are while
         * doing all of the update's work. Then steps until the point's
         * share of the time is spent. */
        const double start = osp_now();
        rc = osp_train_step(rep, opt, x, labels, batch, 0.0f, 0, a->cfg->seed, NULL);
        while (!rc && p.steps < MAX_STEPS &&
               (p.steps < MIN_STEPS || osp_now() - start < a->per_point_s)) {
            const double t0 = osp_now();
            rc = osp_train_step(rep, opt, x, labels, batch, 0.0f, p.steps + 1, a->cfg->seed, NULL);
            times[p.steps++] = osp_now() - t0;
        }
    }
    if (!rc) {
        qsort(times, (size_t)p.steps, sizeof *times, cmp_double);
        p.step_s = p.steps % 2 ? times[p.steps / 2] : 0.5 * (times[p.steps / 2 - 1] + times[p.steps / 2]);
        p.images_per_s = batch / fmax(p.step_s, 1e-9);
        const int64_t hwm = proc_status_bytes("VmHWM:");
        /* Without the reset, the peak says something only if this point
         * raised it. */
        if (rss0 >= 0 && hwm >= 0 && (reset || hwm > hwm0)) p.rss_bytes = hwm - rss0;
    }
    osp_free(x);
    osp_free(labels);
    osp_optim_free(opt);
    osp_net_free(rep);
    if (rc) return rc;
    a->points[a->n_points] = p;
    *out = &a->points[a->n_points++];
    if (a->cfg->on_point) a->cfg->on_point(*out, a->cfg->user);
    return OSP_OK;
}

static int out_of_time(const advisor *a) { return osp_now() - a->started >= a->cfg->seconds; }

static int largest_power_of_two(int64_t n) {
    int p = 1;
    while ((int64_t)p * 2 <= n && p < (1 << 30)) p *= 2;
    return p;
}

/* Batches grow at full threads while images/s improves and the memory
 * budget and time allow. */
static int sweep_batches(advisor *a, int lo, int hi, int threads) {
    double best = 0;
    int stale = 0;
    for (int batch = lo; batch <= hi; batch *= 2) {
        if (batch > lo) {
            int64_t planned;
            int rc = osp_advise_planned_bytes(a->net, batch, a->cfg->optim, &planned);
            if (rc) return rc;
            if (a->cfg->memory_budget > 0 && planned > a->cfg->memory_budget) break;
            /* Twice the batch takes about twice the time: warm-up and the
             * least steps of it must fit the time left. */
            const double least = (1 + MIN_STEPS) * 2 * a->points[a->n_points - 1].step_s;
            if (out_of_time(a) || osp_now() - a->started + least > a->cfg->seconds) break;
        }
        osp_advise_point *p;
        int rc = measure(a, batch, threads, &p);
        if (rc) return rc;
        if (p->images_per_s > best * (1 + IMPROVEMENT)) stale = 0;
        else if (++stale >= STALE_LIMIT) break;
        if (p->images_per_s > best) best = p->images_per_s;
        if (batch > (1 << 29)) break;
    }
    return OSP_OK;
}

/* Thread counts grow from 1 (always measured: the mpirun prediction needs
 * it) by doubling, below the count already measured, while images/s
 * improves and time allows. */
static int sweep_threads(advisor *a, int batch, int max_threads) {
    double last = 0;
    for (int t = 1; t < max_threads; t *= 2) {
        if (t > 1 && out_of_time(a)) break;
        osp_advise_point *p;
        int rc = measure(a, batch, t, &p);
        if (rc) return rc;
        if (t > 1 && p->images_per_s <= last * (1 + IMPROVEMENT)) break;
        last = p->images_per_s;
    }
    return OSP_OK;
}

/* Decodes the pool: samples spread over the data (a sorted folder gives
 * several classes). Unreadable samples are left out, as the trainer skips
 * them; labels the loss cannot take (a multi-label sample without labels
 * is -1) become any valid class: the step's time does not depend on them. */
static int load_pool(advisor *a, osp_dataset *data) {
    const int n = a->pool_n, k = a->net->n_classes;
    char *ok = osp_calloc((size_t)n, 1);
    if (!ok) return OSP_ENOMEM;
#pragma omp parallel for schedule(dynamic, 4)
    for (int i = 0; i < n; i++) {
        const int64_t at = (int64_t)((double)i * (double)data->count / n);
        int32_t label;
        if (data->get(data, at, a->pool + (int64_t)i * a->size, &label) == OSP_OK) {
            a->pool_labels[i] = label >= 0 && label < k ? label : i % k;
            ok[i] = 1;
        }
    }
    int kept = 0;
    for (int i = 0; i < n; i++) {
        if (!ok[i]) continue;
        if (kept != i) {
            memcpy(a->pool + (int64_t)kept * a->size, a->pool + (int64_t)i * a->size,
                   (size_t)a->size * sizeof(float));
            a->pool_labels[kept] = a->pool_labels[i];
        }
        kept++;
    }
    osp_free(ok);
    if (kept == 0)
        return osp_error(OSP_EIO, "%s: none of the %d samples read to measure with could be read",
                         data->source ? data->source : "data", n);
    a->pool_n = kept;
    osp_net_normalize(a->net, a->pool, kept);
    return OSP_OK;
}

static int advise_run(advisor *a, osp_dataset *data, osp_advice *advice) {
    const osp_advise_config *cfg = a->cfg;
    const osp_net *net = a->net;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    const int cores = cfg->max_threads > 0 ? cfg->max_threads : online > 0 ? (int)online : 1;
    const int threads = cfg->threads > 0 ? cfg->threads : cores;
    int lo = largest_power_of_two(cfg->min_batch), hi = largest_power_of_two(cfg->max_batch);
    if (lo < cfg->min_batch) lo *= 2;
    /* A batch larger than the data would repeat samples within a step. */
    const int cap = largest_power_of_two(data->count);
    if (hi > cap) hi = cap;
    if (lo > hi) lo = hi;

    int64_t planned;
    int rc = osp_advise_planned_bytes(net, lo, cfg->optim, &planned);
    if (rc) return rc;
    if (cfg->memory_budget > 0 && planned > cfg->memory_budget) {
        char have[32], want[32];
        format_bytes((double)cfg->memory_budget, have, sizeof have);
        format_bytes((double)planned, want, sizeof want);
        return osp_error(OSP_ERANGE, "the memory budget of %s is smaller than the %s that the "
                         "smallest batch (%d) plans: give a larger budget or a smaller batch", have,
                         want, lo);
    }

    /* Time for each point: the batches and thread counts that may be tried. */
    int candidates = 0;
    for (int b = lo; b <= hi; b *= 2) candidates++;
    if (cfg->threads <= 0)
        for (int t = 1; t < cores; t *= 2) candidates++;
    a->per_point_s = cfg->seconds / candidates;

    a->size = osp_shape_numel(&net->input);
    a->pool_n = (int)(data->count < POOL_MAX ? data->count : POOL_MAX);
    if (a->pool_n > hi) a->pool_n = hi;
    a->pool = osp_alloc((size_t)a->pool_n * (size_t)a->size * sizeof(float));
    a->pool_labels = osp_alloc((size_t)a->pool_n * sizeof(int32_t));
    if (!a->pool || !a->pool_labels) return OSP_ENOMEM;
    if ((rc = load_pool(a, data))) return rc;

    if ((rc = sweep_batches(a, lo, hi, threads))) return rc;
    if ((rc = osp_advise_recommend(a->points, a->n_points, cores, cfg->memory_budget, cfg->tolerance,
                                   advice)))
        return rc;
    if (cfg->threads <= 0 && cores > 1) {
        if ((rc = sweep_threads(a, advice->batch, cores))) return rc;
        rc = osp_advise_recommend(a->points, a->n_points, cores, cfg->memory_budget, cfg->tolerance,
                                  advice);
    }
    return rc;
}

int osp_advise(const osp_net *net, osp_dataset *data, const osp_advise_config *cfg, osp_advice **out) {
    if (!net || !data || !cfg || !out) return osp_error(OSP_EINVAL, "osp_advise: bad arguments");
    *out = NULL;
    if (!net->spec_text)
        return osp_error(OSP_ESTATE, "the network has no spec to build the measured copies from");
    if (cfg->min_batch < 1 || cfg->max_batch < cfg->min_batch || cfg->max_batch > 65536)
        return osp_error(OSP_EINVAL, "batch sizes %d..%d: give 1 <= min <= max <= 65536", cfg->min_batch,
                         cfg->max_batch);
    if (!(cfg->seconds > 0 && cfg->seconds <= 86400))
        return osp_error(OSP_EINVAL, "the time budget must be above 0 and at most a day, not %g s",
                         cfg->seconds);
    if (cfg->threads < 0 || cfg->max_threads < 0 || cfg->memory_budget < 0 ||
        !(cfg->tolerance >= 0 && cfg->tolerance < 1))
        return osp_error(OSP_EINVAL, "osp_advise: bad configuration");
    int rc = osp_train_check_data(net, data);
    if (rc) return rc;
    osp_advice *advice = osp_calloc(1, sizeof *advice);
    if (!advice) return OSP_ENOMEM;
    advisor a = {.net = net, .cfg = cfg, .started = osp_now()};
    const int threads_before = osp_threads_get();
    rc = advise_run(&a, data, advice);
    osp_threads_set(threads_before);
    osp_free(a.pool);
    osp_free(a.pool_labels);
    if (rc) {
        osp_free(a.points);
        osp_free(advice);
        return rc;
    }
    advice->points = a.points;
    advice->n_points = a.n_points;
    *out = advice;
    return OSP_OK;
}
