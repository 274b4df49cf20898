/* Bounded top-k selection: a max-heap of the k closest hits seen so far,
 * whose root is the farthest kept, so a new hit costs one comparison unless
 * it gets in. Ties are broken by id so results do not depend on scan order. */
#ifndef OSPREY_INDEX_TOPK_H
#define OSPREY_INDEX_TOPK_H

#include <math.h>
#include <stdint.h>

typedef struct osp__hit {
    float d;
    int64_t id;
} osp__hit;

/* a is farther than b */
static inline int osp__hit_after(osp__hit a, osp__hit b) {
    return a.d > b.d || (a.d == b.d && a.id > b.id);
}

static inline void osp__topk_sift_down(osp__hit *h, int n, int i) {
    osp__hit x = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && osp__hit_after(h[c + 1], h[c])) c++;
        if (!osp__hit_after(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Offers (d, id) to the heap h of *n <= k hits. */
static inline void osp__topk_push(osp__hit *h, int *n, int k, float d, int64_t id) {
    osp__hit x = {d, id};
    if (*n < k) {
        int i = (*n)++;
        while (i > 0) {
            int p = (i - 1) / 2;
            if (!osp__hit_after(x, h[p])) break;
            h[i] = h[p];
            i = p;
        }
        h[i] = x;
    } else if (osp__hit_after(h[0], x)) {
        h[0] = x;
        osp__topk_sift_down(h, *n, 0);
    }
}

/* The distance a hit must beat to get in. */
static inline float osp__topk_bound(const osp__hit *h, int n, int k) {
    return n < k ? INFINITY : h[0].d;
}

/* Empties the heap into ids/dist closest first, padding to k with
 * OSP_INDEX_NO_ID and INFINITY. dist may be NULL. */
static inline void osp__topk_finish(osp__hit *h, int n, int k, int64_t *ids, float *dist) {
    for (int i = n - 1; i >= 0; i--) {
        osp__hit top = h[0];
        h[0] = h[i];
        osp__topk_sift_down(h, i, 0);
        ids[i] = top.id;
        if (dist) dist[i] = top.d;
    }
    for (int i = n; i < k; i++) {
        ids[i] = -1;
        if (dist) dist[i] = INFINITY;
    }
}

#endif
