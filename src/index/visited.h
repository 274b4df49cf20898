/* Visited sets for graph and multi-table searches: one tag per slot and an
 * epoch per query, so starting a query costs an increment instead of clearing
 * the array (hnswlib's visited_list_pool). 16-bit tags keep the array small
 * enough to stay in cache (400 KB for 200k vectors); on wrap-around the array
 * is cleared once. Sets are recycled through a pool so concurrent queries
 * never share one. */
#ifndef OSPREY_INDEX_VISITED_H
#define OSPREY_INDEX_VISITED_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct osp__visited {
    uint16_t *tags; /* cap */
    size_t cap;
    uint16_t epoch;
} osp__visited;

typedef struct osp__visited_pool {
    pthread_mutex_t mu;
    osp__visited **free; /* idle sets */
    int n_free, cap_free;
} osp__visited_pool;

int osp__visited_pool_init(osp__visited_pool *p);
void osp__visited_pool_destroy(osp__visited_pool *p);
/* A set for n slots, with a fresh epoch; NULL on out of memory. */
osp__visited *osp__visited_get(osp__visited_pool *p, size_t n);
void osp__visited_put(osp__visited_pool *p, osp__visited *v);

/* A new epoch for the next query on the same set. */
static inline void osp__visited_next(osp__visited *v) {
    if (++v->epoch == 0) {
        memset(v->tags, 0, v->cap * sizeof *v->tags);
        v->epoch = 1;
    }
}

/* 1 if slot i was already seen in this query; marks it seen. */
static inline int osp__visited_test_set(osp__visited *v, size_t i) {
    if (v->tags[i] == v->epoch) return 1;
    v->tags[i] = v->epoch;
    return 0;
}

static inline int osp__visited_test(const osp__visited *v, size_t i) {
    return v->tags[i] == v->epoch;
}

#endif
