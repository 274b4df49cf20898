/* Vectorised top-k selection (see select.h). */
#include "index/select.h"

static inline void offer(float d, int j, const int64_t *ids, int64_t id0, const osp__search_ctx *sc,
                         osp__hit *h, int *nh, int k, float *bound) {
    if (!(d <= *bound)) return;
    int64_t id = ids ? ids[j] : id0 + j;
    if (sc && sc->filter && !osp__allowed(sc, id)) return;
    osp__topk_push(h, nh, k, d, id);
    *bound = osp__topk_bound(h, *nh, k);
}

static void select_c(const float *row, const float *add, float scale, int n, const int64_t *ids,
                     int64_t id0, const osp__search_ctx *sc, osp__hit *h, int *nh, int k) {
    float bound = osp__topk_bound(h, *nh, k);
    for (int j = 0; j < n; j++) {
        float d = (add ? add[j] : 0.0f) + scale * row[j];
        if (d <= bound) offer(d, j, ids, id0, sc, h, nh, k, &bound);
    }
}

#ifdef OSP__X86

OSP__TARGET_AVX2 static void select_avx2(const float *row, const float *add, float scale, int n,
                                         const int64_t *ids, int64_t id0,
                                         const osp__search_ctx *sc, osp__hit *h, int *nh, int k) {
    float bound = osp__topk_bound(h, *nh, k);
    __m256 vs = _mm256_set1_ps(scale), vb = _mm256_set1_ps(bound);
    float tmp[8];
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_mul_ps(vs, _mm256_loadu_ps(row + j));
        if (add) v = _mm256_add_ps(v, _mm256_loadu_ps(add + j));
        unsigned m = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, vb, _CMP_LE_OQ));
        if (!m) continue;
        _mm256_storeu_ps(tmp, v);
        while (m) {
            int b = __builtin_ctz(m);
            m &= m - 1;
            offer(tmp[b], j + b, ids, id0, sc, h, nh, k, &bound);
        }
        vb = _mm256_set1_ps(bound);
    }
    for (; j < n; j++) {
        float d = (add ? add[j] : 0.0f) + scale * row[j];
        offer(d, j, ids, id0, sc, h, nh, k, &bound);
    }
}

OSP__TARGET_AVX512 static void select_avx512(const float *row, const float *add, float scale,
                                             int n, const int64_t *ids, int64_t id0,
                                             const osp__search_ctx *sc, osp__hit *h, int *nh,
                                             int k) {
    float bound = osp__topk_bound(h, *nh, k);
    __m512 vs = _mm512_set1_ps(scale), vb = _mm512_set1_ps(bound);
    float tmp[16];
    for (int j = 0; j < n; j += 16) {
        __mmask16 live = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        __m512 v = _mm512_mul_ps(vs, _mm512_maskz_loadu_ps(live, row + j));
        if (add) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(live, add + j));
        unsigned m = _mm512_mask_cmp_ps_mask(live, v, vb, _CMP_LE_OQ);
        if (!m) continue;
        _mm512_storeu_ps(tmp, v);
        while (m) {
            int b = __builtin_ctz(m);
            m &= m - 1;
            offer(tmp[b], j + b, ids, id0, sc, h, nh, k, &bound);
        }
        vb = _mm512_set1_ps(bound);
    }
}

#endif

osp__select_fn osp__select_for(osp__simd_level level) {
#ifdef OSP__X86
    if (level == OSP__SIMD_AVX512) return select_avx512;
    if (level == OSP__SIMD_AVX2) return select_avx2;
#endif
    (void)level;
    return select_c;
}
