/* The prefetching loader: worker threads decode and augment samples into a
 * ring of batch buffers while the caller trains on earlier batches.
 *
 * Work is handed out one sample at a time, in order, under one lock: the
 * sample at position p of the pass goes to batch p / B, which lives in slot
 * (p / B) % depth, and a worker may only start on a batch once the batch
 * `depth` before it has been taken by the caller. That bounds memory at
 * depth batches, and it makes every sample's place in its batch fixed, so
 * the batches do not depend on which worker did what or how fast.
 *
 * Idle workers and a waiting caller sleep on condition variables; nothing
 * spins. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/data.h"
#include "skips.h"

/* Stream tag for osp_rng_derive: augmentation, in the high half; the epoch
 * goes in the low half, the sample index is the index. */
#define RNG_STREAM_AUGMENT ((uint64_t)0x61756774u << 32)

typedef struct slot {
    float *x;          /* batch x sample */
    int32_t *labels;   /* (batch) */
    uint8_t *dropped;  /* (batch) 1: unreadable, left out */
    uint8_t *hot;      /* multi_hot: (batch x the dataset's n_classes) */
    int64_t batch_no;  /* which batch of the pass it holds; -1: none */
    int size, done;    /* samples in the batch, samples finished */
} slot;

struct osp_loader {
    osp_dataset *ds;
    osp_loader_config cfg;
    int64_t sample;    /* floats per sample */
    int channels;
    int64_t plane;
    int hot_width;     /* multi_hot: the dataset's n_classes; else 0 */
    /* the pass */
    int64_t *order, order_cap;
    int64_t first, total, n_batches;  /* positions first .. first + total of order */
    int64_t epoch;
    uint64_t generation;               /* bumped by each start: older work is void */
    int64_t next_task, consumed, skipped;
    int busy;                          /* samples being loaded right now */
    int error;                         /* the first hard error met in the pass */
    char message[512];
    /* ring and threads */
    int depth;
    slot *slots;
    pthread_t *threads;
    int n_threads, stop;
    pthread_mutex_t lock;
    pthread_cond_t work, ready, idle;
};

osp_loader_config osp_loader_defaults(const osp_dataset *ds) {
    osp_loader_config c;
    memset(&c, 0, sizeof c);
    c.batch = 64;
    c.workers = ds && ds->load_workers > 0 ? ds->load_workers : 0;
    c.prefetch = ds && ds->load_prefetch > 0 ? ds->load_prefetch : 2;
    c.seed = 1;
    for (int k = 0; k < 4; k++) c.std[k] = 1;
    return c;
}

/* Loads the sample at order position of the pass into x / label. Returns
 * 0, or a hard error (out of memory, a label the network cannot have, no
 * readable sample at all) with its message in err. *replaced: the sample
 * was unreadable and another one took its place; *dropped: it was left out. */
static int load_sample(osp_loader *l, int64_t index, int64_t epoch, float *x, int32_t *label,
                       uint8_t *hot, int *replaced, int *dropped, char *err, size_t err_len) {
    osp_dataset *ds = l->ds;
    const int augment = l->cfg.augment && ds->get_augmented;
    *replaced = *dropped = 0;
    int64_t j = index;
    int rc = OSP_ENOENT;
    for (int64_t tries = 0; tries < ds->count; tries++) {
        if (!osp__skips_is_bad(ds, j)) {
            /* A fresh generator per try: a failed try may have drawn some. */
            osp_rng rng;
            osp_rng_derive(&rng, l->cfg.seed, RNG_STREAM_AUGMENT | (uint32_t)epoch, (uint64_t)index);
            rc = augment ? ds->get_augmented(ds, j, &rng, x, label) : ds->get(ds, j, x, label);
            if (rc == OSP_OK) break;
            if (rc == OSP_ENOMEM) {
                snprintf(err, err_len, "%s", osp_last_error());
                return rc;
            }
            osp__skips_mark(ds, j, osp_last_error());
        }
        if (l->cfg.drop_unreadable) {
            *dropped = 1;
            return OSP_OK;
        }
        j = j + 1 == ds->count ? 0 : j + 1;
        rc = OSP_ENOENT;
    }
    if (rc != OSP_OK) {
        snprintf(err, err_len, "%s: no sample of the %lld is readable", ds->source ? ds->source : "data",
                 (long long)ds->count);
        return OSP_ENOENT;
    }
    *replaced = j != index;
    if (hot) {
        if (ds->labels_multi(ds, j, hot)) {
            snprintf(err, err_len, "%s", osp_last_error());
            return OSP_ERANGE;
        }
    } else if (*label < 0 || (l->cfg.n_classes > 0 && *label >= l->cfg.n_classes)) {
        const char *name = ds->name ? ds->name(ds, j) : NULL;
        snprintf(err, err_len, "%s: sample %lld%s%s has label %d, outside the network's %d outputs",
                 ds->source ? ds->source : "data", (long long)j, name ? " " : "", name ? name : "",
                 *label, l->cfg.n_classes);
        return OSP_ERANGE;
    }
    if (l->cfg.normalize) osp_image_normalize(x, l->channels, l->plane, l->cfg.mean, l->cfg.std);
    return OSP_OK;
}

static int has_task(const osp_loader *l) {
    return l->next_task < l->total && l->next_task / l->cfg.batch < l->consumed + l->depth;
}

static void *worker(void *arg) {
    osp_loader *l = arg;
    char err[512];
    pthread_mutex_lock(&l->lock);
    for (;;) {
        while (!l->stop && (l->error || !has_task(l))) pthread_cond_wait(&l->work, &l->lock);
        if (l->stop) break;
        /* Claim the next sample; everything it needs is copied now, since
         * a new pass may replace the order while it is being loaded. */
        int64_t p = l->next_task++;
        int64_t b = p / l->cfg.batch;
        slot *s = &l->slots[b % l->depth];
        if (p % l->cfg.batch == 0) {
            int64_t left = l->total - b * l->cfg.batch;
            s->batch_no = b;
            s->size = (int)(left < l->cfg.batch ? left : l->cfg.batch);
            s->done = 0;
        }
        const int k = (int)(p % l->cfg.batch);
        const int64_t index = l->order[l->first + p], epoch = l->epoch;
        const uint64_t generation = l->generation;
        l->busy++;
        pthread_mutex_unlock(&l->lock);

        int replaced, dropped;
        int rc = load_sample(l, index, epoch, s->x + (int64_t)k * l->sample, &s->labels[k],
                             s->hot ? s->hot + (int64_t)k * l->hot_width : NULL, &replaced,
                             &dropped, err, sizeof err);

        pthread_mutex_lock(&l->lock);
        l->busy--;
        if (generation == l->generation) {
            s->dropped[k] = (uint8_t)dropped;
            l->skipped += replaced || dropped;
            if (rc && !l->error) {
                l->error = rc;
                snprintf(l->message, sizeof l->message, "%s", err);
            }
            if (++s->done == s->size || rc) pthread_cond_broadcast(&l->ready);
        }
        if (l->busy == 0) pthread_cond_broadcast(&l->idle);
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

static void free_slots(osp_loader *l) {
    for (int i = 0; l->slots && i < l->depth; i++) {
        osp_free(l->slots[i].x);
        osp_free(l->slots[i].labels);
        osp_free(l->slots[i].dropped);
        osp_free(l->slots[i].hot);
    }
    free(l->slots);
}

void osp_loader_free(osp_loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->lock);
    l->stop = 1;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->lock);
    for (int i = 0; i < l->n_threads; i++) pthread_join(l->threads[i], NULL);
    free(l->threads);
    free_slots(l);
    free(l->order);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->work);
    pthread_cond_destroy(&l->ready);
    pthread_cond_destroy(&l->idle);
    free(l);
}

int osp_loader_new(osp_dataset *ds, const osp_loader_config *cfg, osp_loader **out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_loader_new: no output");
    *out = NULL;
    if (!ds || !cfg) return osp_error(OSP_EINVAL, "osp_loader_new: no dataset");
    if (cfg->batch < 1 || cfg->workers < 0 || cfg->workers > 1024 || cfg->prefetch < 1 ||
        cfg->prefetch > 1024)
        return osp_error(OSP_EINVAL, "loader: batch %d, %d workers and %d batches ahead are not "
                         "possible", cfg->batch, cfg->workers, cfg->prefetch);
    if (ds->count <= 0) return osp_error(OSP_EINVAL, "%s: the dataset is empty", ds->source);
    if (cfg->multi_hot && (!ds->multi_label || !ds->labels_multi || cfg->n_classes < ds->n_classes ||
                           ds->n_classes <= 0))
        return osp_error(OSP_EINVAL, "%s: multi-hot targets need a multi-label dataset and at least "
                         "its %d labels (the loader has %d)", ds->source ? ds->source : "data",
                         ds->n_classes, cfg->n_classes);
    int rc = osp__skips_init(ds);
    if (rc) return rc;
    osp_loader *l = calloc(1, sizeof *l);
    if (!l) return osp_error(OSP_ENOMEM, "out of memory for the loader");
    l->ds = ds;
    l->cfg = *cfg;
    l->sample = osp_shape_numel(&ds->sample_shape);
    l->channels = ds->sample_shape.ndim == 3 ? (int)ds->sample_shape.dim[0] : 1;
    l->plane = l->sample / (l->channels > 0 ? l->channels : 1);
    l->hot_width = cfg->multi_hot ? ds->n_classes : 0;
    /* Without workers the caller loads each batch itself: one slot. */
    l->depth = cfg->workers > 0 ? cfg->prefetch : 1;
    if (pthread_mutex_init(&l->lock, NULL) || pthread_cond_init(&l->work, NULL) ||
        pthread_cond_init(&l->ready, NULL) || pthread_cond_init(&l->idle, NULL)) {
        free(l);
        return osp_error(OSP_ENOMEM, "cannot make the loader's locks");
    }
    l->slots = calloc((size_t)l->depth, sizeof *l->slots);
    rc = l->slots ? OSP_OK : OSP_ENOMEM;
    size_t floats;
    if (!rc && osp_mul_size((size_t)cfg->batch, (size_t)l->sample, &floats)) rc = OSP_ENOMEM;
    for (int i = 0; !rc && i < l->depth; i++) {
        slot *s = &l->slots[i];
        s->x = osp_alloc(floats * sizeof(float));
        s->labels = osp_alloc((size_t)cfg->batch * sizeof(int32_t));
        s->dropped = osp_calloc((size_t)cfg->batch, 1);
        s->batch_no = -1;
        if (l->hot_width) s->hot = osp_calloc((size_t)cfg->batch, (size_t)l->hot_width);
        if (!s->x || !s->labels || !s->dropped || (l->hot_width && !s->hot)) rc = OSP_ENOMEM;
    }
    if (!rc && cfg->workers > 0) {
        l->threads = calloc((size_t)cfg->workers, sizeof *l->threads);
        if (!l->threads) rc = OSP_ENOMEM;
        for (int i = 0; !rc && i < cfg->workers; i++) {
            if (pthread_create(&l->threads[i], NULL, worker, l)) rc = OSP_ENOMEM;
            else l->n_threads++;
        }
    }
    if (rc) {
        osp_loader_free(l);
        return osp_error(OSP_ENOMEM, "out of memory for the loader's %d batches of %d samples",
                         cfg->prefetch, cfg->batch);
    }
    *out = l;
    return OSP_OK;
}

int osp_loader_start(osp_loader *l, int64_t epoch, const int64_t *order, int64_t n, int64_t first) {
    if (!l) return osp_error(OSP_EINVAL, "osp_loader_start: no loader");
    if (n < 0 || first < 0 || first > n)
        return osp_error(OSP_EINVAL, "loader: samples %lld..%lld are not a range", (long long)first,
                         (long long)n);
    int64_t *copy = NULL;
    if (n > l->order_cap) {
        copy = malloc((size_t)n * sizeof *copy);
        if (!copy) return osp_error(OSP_ENOMEM, "out of memory for the loader's order");
    }
    for (int64_t i = 0; order && i < n; i++)
        if (order[i] < 0 || order[i] >= l->ds->count) {
            free(copy);
            return osp_error(OSP_ERANGE, "loader: sample %lld is outside the dataset's %lld",
                             (long long)order[i], (long long)l->ds->count);
        }
    pthread_mutex_lock(&l->lock);
    /* Void what is left of the last pass and wait out samples in flight:
     * they write into the slots that the new pass is about to use. */
    l->generation++;
    l->total = 0;
    while (l->busy > 0) pthread_cond_wait(&l->idle, &l->lock);
    if (copy) {
        free(l->order);
        l->order = copy;
        l->order_cap = n;
    }
    for (int64_t i = 0; i < n; i++) l->order[i] = order ? order[i] : i;
    l->first = first;
    l->total = n - first;
    l->n_batches = (l->total + l->cfg.batch - 1) / l->cfg.batch;
    l->epoch = epoch;
    l->next_task = l->consumed = l->skipped = 0;
    l->error = 0;
    for (int i = 0; i < l->depth; i++) l->slots[i].batch_no = -1;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->lock);
    return OSP_OK;
}

/* Without workers: the caller loads batch b into its slot itself, on the
 * OpenMP threads that the kernels use, so no thread is added. Right for
 * samples in memory, where a handful of copies costs less than waking a
 * thread. */
static int load_here(osp_loader *l, slot *s, int64_t b) {
    int64_t left = l->total - b * l->cfg.batch;
    s->batch_no = b;
    s->size = (int)(left < l->cfg.batch ? left : l->cfg.batch);
    s->done = 0;
    int failed = 0, failed_at = s->size;
    int64_t skipped = 0;
    char message[512] = "";
#pragma omp parallel for schedule(dynamic, 4) reduction(+ : skipped)
    for (int k = 0; k < s->size; k++) {
        char err[512];
        int replaced, dropped;
        int64_t index = l->order[l->first + b * l->cfg.batch + k];
        int rc = load_sample(l, index, l->epoch, s->x + (int64_t)k * l->sample, &s->labels[k],
                             s->hot ? s->hot + (int64_t)k * l->hot_width : NULL, &replaced,
                             &dropped, err, sizeof err);
        s->dropped[k] = (uint8_t)dropped;
        skipped += replaced || dropped;
        if (rc) {
#pragma omp critical(osp_loader_error)
            if (k < failed_at) { /* the first by position, whatever the threads did */
                failed = rc;
                failed_at = k;
                snprintf(message, sizeof message, "%s", err);
            }
        }
    }
    if (failed) return osp_error(failed, "%s", message);
    s->done = s->size;
    l->skipped += skipped;
    return OSP_OK;
}

static int next_batch(osp_loader *l, float *x, int32_t *labels, float *targets, int *n) {
    *n = 0;
    pthread_mutex_lock(&l->lock);
    if (l->consumed >= l->n_batches) {
        pthread_mutex_unlock(&l->lock);
        return OSP_OK;
    }
    const int64_t b = l->consumed;
    slot *s = &l->slots[b % l->depth];
    if (l->n_threads == 0) {
        pthread_mutex_unlock(&l->lock);
        int rc = load_here(l, s, b);
        if (rc) return rc;
        pthread_mutex_lock(&l->lock);
    }
    while (!l->error && !(s->batch_no == b && s->done == s->size))
        pthread_cond_wait(&l->ready, &l->lock);
    if (l->error) {
        int rc = osp_error(l->error, "%s", l->message);
        pthread_mutex_unlock(&l->lock);
        return rc;
    }
    pthread_mutex_unlock(&l->lock);
    /* The slot is ours until consumed moves on: no worker can claim batch
     * b + depth before that. */
    int m = 0;
    for (int k = 0; k < s->size; k++) {
        if (s->dropped[k]) continue;
        if (m != k || x != s->x)
            memcpy(x + (int64_t)m * l->sample, s->x + (int64_t)k * l->sample,
                   (size_t)l->sample * sizeof(float));
        if (labels) labels[m] = s->labels[k];
        if (targets) {
            float *t = targets + (int64_t)m * l->cfg.n_classes;
            const uint8_t *h = s->hot + (int64_t)k * l->hot_width;
            for (int c = 0; c < l->cfg.n_classes; c++) t[c] = c < l->hot_width && h[c] ? 1.0f : 0.0f;
        }
        m++;
    }
    *n = m;
    pthread_mutex_lock(&l->lock);
    l->consumed++;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->lock);
    return OSP_OK;
}

int osp_loader_next(osp_loader *l, float *x, int32_t *labels, int *n) {
    if (!l || !x || !labels || !n) return osp_error(OSP_EINVAL, "osp_loader_next: no output");
    return next_batch(l, x, labels, NULL, n);
}

int osp_loader_next_hot(osp_loader *l, float *x, float *targets, int *n) {
    if (!l || !x || !targets || !n) return osp_error(OSP_EINVAL, "osp_loader_next_hot: no output");
    if (!l->hot_width)
        return osp_error(OSP_EINVAL, "osp_loader_next_hot: the loader was not made with multi_hot");
    return next_batch(l, x, NULL, targets, n);
}

int64_t osp_loader_skipped(const osp_loader *l) {
    if (!l) return 0;
    pthread_mutex_lock((pthread_mutex_t *)&l->lock);
    int64_t n = l->skipped;
    pthread_mutex_unlock((pthread_mutex_t *)&l->lock);
    return n;
}

/* Quiet once every unreadable file has been named: later epochs meet the
 * same files, and the CLI sums them up at the end. */
void osp_loader_report(osp_loader *l, const char *what) {
    if (!l || osp__skips_pending(l->ds) == 0) return;
    int64_t n = osp_loader_skipped(l);
    osp_log(OSP_LOG_WARN, "%s: %lld unreadable sample%s %s; each file is named once:", what,
            (long long)n, n == 1 ? "" : "s",
            l->cfg.drop_unreadable ? "left out" : "replaced by the next readable ones");
    osp_dataset_report_skipped(l->ds);
}
