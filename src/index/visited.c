/* The pool of visited sets (see visited.h). */
#include "index/visited.h"

#include "osprey/core.h"

int osp__visited_pool_init(osp__visited_pool *p) {
    memset(p, 0, sizeof *p);
    if (pthread_mutex_init(&p->mu, NULL))
        return osp_error(OSP_ENOMEM, "index: cannot create a mutex");
    return OSP_OK;
}

static void visited_free(osp__visited *v) {
    if (!v) return;
    osp_free(v->tags);
    osp_free(v);
}

void osp__visited_pool_destroy(osp__visited_pool *p) {
    for (int i = 0; i < p->n_free; i++) visited_free(p->free[i]);
    osp_free(p->free);
    pthread_mutex_destroy(&p->mu);
    memset(p, 0, sizeof *p);
}

osp__visited *osp__visited_get(osp__visited_pool *p, size_t n) {
    osp__visited *v = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->n_free > 0) v = p->free[--p->n_free];
    pthread_mutex_unlock(&p->mu);
    if (!v) {
        v = osp_calloc(1, sizeof *v);
        if (!v) return NULL;
    }
    if (v->cap < n) {
        /* grow with headroom so an index that keeps growing does not
         * reallocate on every query */
        size_t cap = n + n / 4 + 64;
        uint16_t *tags = osp_calloc(cap, sizeof *tags);
        if (!tags) {
            visited_free(v);
            return NULL;
        }
        osp_free(v->tags);
        v->tags = tags;
        v->cap = cap;
        v->epoch = 0;
    }
    if (++v->epoch == 0) {
        memset(v->tags, 0, v->cap * sizeof *v->tags);
        v->epoch = 1;
    }
    return v;
}

void osp__visited_put(osp__visited_pool *p, osp__visited *v) {
    if (!v) return;
    pthread_mutex_lock(&p->mu);
    if (p->n_free == p->cap_free) {
        int cap = p->cap_free ? 2 * p->cap_free : 8;
        osp__visited **f = osp_alloc((size_t)cap * sizeof *f);
        if (!f) {
            pthread_mutex_unlock(&p->mu);
            visited_free(v); /* dropping a set only costs a later allocation */
            return;
        }
        if (p->n_free) memcpy(f, p->free, (size_t)p->n_free * sizeof *f);
        osp_free(p->free);
        p->free = f;
        p->cap_free = cap;
    }
    p->free[p->n_free++] = v;
    pthread_mutex_unlock(&p->mu);
}
