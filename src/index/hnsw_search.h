/* Template of the HNSW layer search, included by hnsw.c once per SIMD target
 * (and once with locks, for inserts running beside other inserts) so that
 * the distance kernel inlines into the loop instead of being called through
 * a pointer. Parameters:
 *   HS_NAME    function name
 *   HS_TARGET  target attribute (may be empty)
 *   HS_L2      inline squared-L2 kernel
 *   HS_DOT     inline dot-product kernel
 *   HS_LOCKED  1: copy each link list under its node's lock (build time)
 *
 * The search keeps one sorted pool of the L best nodes seen (NSG's "retset"):
 * expand the closest node not yet expanded, insert its unseen neighbours
 * that beat the pool's worst, stop when all L are expanded. This gives the
 * same result as HNSW's two heaps (candidates, results) with less work per
 * step. Neighbours are gathered first and their vectors prefetched, so the
 * memory loads of one expansion overlap. Returns the pool size. */

HS_TARGET static int HS_NAME(const hnsw *h, const float *q, int level, uint32_t ep, float epd,
                             int L, hcand *pool, osp__visited *vis, uint32_t *buf) {
    const size_t d = (size_t)h->base.params.dim;
    const int l2 = h->base.params.metric == OSP_INDEX_METRIC_L2;
    uint32_t *todo = buf + h->M0 + 1;
    int n = 1;
    pool[0].d = epd;
    pool[0].id = ep;
    osp__visited_test_set(vis, ep);
    int k = 0;
    while (k < n) {
        int nk = n;
        if (!(pool[k].id & HNSW_EXPANDED)) {
            uint32_t c = pool[k].id;
            pool[k].id |= HNSW_EXPANDED;
#if HS_LOCKED
            pthread_mutex_t *mu = node_lock(h, c);
            pthread_mutex_lock(mu);
            const uint32_t *src = links_of(h, c, level);
            memcpy(buf, src, ((size_t)src[0] + 1) * sizeof(uint32_t));
            pthread_mutex_unlock(mu);
            const uint32_t *ln = buf;
#else
            const uint32_t *ln = links_of(h, c, level);
#endif
            uint32_t cnt = ln[0];
            int m = 0;
            for (uint32_t j = 1; j <= cnt; j++) {
                uint32_t nb = ln[j];
                if (osp__visited_test_set(vis, nb)) continue;
                todo[m++] = nb;
                hnsw_prefetch(vector_of(h, nb));
            }
            for (int j = 0; j < m; j++) {
                if (j + 1 < m) hnsw_prefetch_all(vector_of(h, todo[j + 1]), d);
                const float *v = vector_of(h, todo[j]);
                float dd = l2 ? HS_L2(q, v, d) : -HS_DOT(q, v, d);
                if (n == L && !(dd < pool[n - 1].d)) continue;
                /* binary search: first position whose distance is larger */
                int lo = 0, hi = n;
                while (lo < hi) {
                    int mid = (lo + hi) >> 1;
                    if (pool[mid].d <= dd)
                        lo = mid + 1;
                    else
                        hi = mid;
                }
                int moved = (n == L ? n - 1 : n) - lo;
                if (moved > 0) memmove(pool + lo + 1, pool + lo, (size_t)moved * sizeof *pool);
                pool[lo].d = dd;
                pool[lo].id = todo[j];
                if (n < L) n++;
                if (lo < nk) nk = lo;
            }
        }
        k = nk <= k ? nk : k + 1;
    }
    return n;
}

#undef HS_NAME
#undef HS_TARGET
#undef HS_L2
#undef HS_DOT
#undef HS_LOCKED
