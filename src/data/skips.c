/* The skip log: one state byte per sample and a list of messages waiting
 * to be reported. A file is named once however often it is met; the count
 * of replacements per epoch is the loader's. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "skips.h"

enum { STATE_UNKNOWN = 0, STATE_BAD = 1 };

typedef struct pending {
    int64_t index;
    char *message;
} pending;

struct osp_skip_log {
    pthread_mutex_t lock;
    int64_t count;     /* samples in the dataset */
    uint8_t *state;    /* (count) */
    int64_t n_bad;
    pending *queue;    /* messages not reported yet */
    size_t n_queue, cap_queue;
};

int osp__skips_init(osp_dataset *ds) {
    if (ds->skips) return OSP_OK;
    osp_skip_log *s = calloc(1, sizeof *s);
    if (!s) return osp_error(OSP_ENOMEM, "out of memory for the skip log");
    s->count = ds->count > 0 ? ds->count : 0;
    s->state = calloc((size_t)s->count + 1, 1);
    if (!s->state || pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s->state);
        free(s);
        return osp_error(OSP_ENOMEM, "out of memory for the skip log");
    }
    ds->skips = s;
    return OSP_OK;
}

/* Asked for every sample loaded, from every loading thread: a lock-free
 * read, so that loaders never queue on the lock for this. */
int osp__skips_is_bad(osp_dataset *ds, int64_t i) {
    osp_skip_log *s = ds->skips;
    if (!s || i < 0 || i >= s->count) return 0;
    return __atomic_load_n(&s->state[i], __ATOMIC_ACQUIRE) == STATE_BAD;
}

void osp__skips_mark(osp_dataset *ds, int64_t i, const char *message) {
    osp_skip_log *s = ds->skips;
    if (!s || i < 0 || i >= s->count) return;
    pthread_mutex_lock(&s->lock);
    if (s->state[i] != STATE_BAD) {
        __atomic_store_n(&s->state[i], STATE_BAD, __ATOMIC_RELEASE);
        s->n_bad++;
        if (s->n_queue == s->cap_queue) {
            size_t cap = s->cap_queue ? 2 * s->cap_queue : 16;
            pending *q = realloc(s->queue, cap * sizeof *q);
            if (q) {
                s->queue = q;
                s->cap_queue = cap;
            }
        }
        /* Without memory for the message the sample is still skipped; only
         * its line in the report is lost. */
        if (s->n_queue < s->cap_queue) {
            char *m = strdup(message ? message : "unreadable");
            if (m) s->queue[s->n_queue++] = (pending){i, m};
        }
    }
    pthread_mutex_unlock(&s->lock);
}

void osp__skips_free(osp_skip_log *s) {
    if (!s) return;
    for (size_t k = 0; k < s->n_queue; k++) free(s->queue[k].message);
    free(s->queue);
    free(s->state);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int64_t osp_dataset_skipped(const osp_dataset *ds) {
    osp_skip_log *s = ds ? ds->skips : NULL;
    if (!s) return 0;
    pthread_mutex_lock(&s->lock);
    int64_t n = s->n_bad;
    pthread_mutex_unlock(&s->lock);
    return n;
}

int64_t osp__skips_pending(const osp_dataset *ds) {
    osp_skip_log *s = ds ? ds->skips : NULL;
    if (!s) return 0;
    pthread_mutex_lock(&s->lock);
    int64_t n = (int64_t)s->n_queue;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static int by_index(const void *a, const void *b) {
    const pending *x = a, *y = b;
    return (x->index > y->index) - (x->index < y->index);
}

int64_t osp_dataset_report_skipped(osp_dataset *ds) {
    osp_skip_log *s = ds ? ds->skips : NULL;
    if (!s) return 0;
    pthread_mutex_lock(&s->lock);
    /* in dataset order, so that the report reads the same in every run */
    if (s->n_queue > 1) qsort(s->queue, s->n_queue, sizeof *s->queue, by_index);
    size_t n = s->n_queue;
    for (size_t k = 0; k < n; k++) {
        osp_log(OSP_LOG_WARN, "skipped %s", s->queue[k].message);
        free(s->queue[k].message);
    }
    s->n_queue = 0;
    pthread_mutex_unlock(&s->lock);
    return (int64_t)n;
}
