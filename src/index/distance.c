/* Run-time choice of the distance kernels (see distance.h). The tables are
 * constant: choosing a level reads the CPU, it stores nothing. */
#include <stdlib.h>
#include <string.h>

#include "index/distance.h"

static float l2sq_c(const float *a, const float *b, size_t d) { return osp__l2sq_c(a, b, d); }
static float ndot_c(const float *a, const float *b, size_t d) { return -osp__dot_c(a, b, d); }
static uint32_t hamming_c(const uint8_t *a, const uint8_t *b, size_t n) {
    return osp__hamming_c(a, b, n);
}

static void l2sq_many_c(const float *q, const float *x, size_t n, size_t d, float *out) {
    for (size_t i = 0; i < n; i++) out[i] = osp__l2sq_c(q, x + i * d, d);
}
static void ndot_many_c(const float *q, const float *x, size_t n, size_t d, float *out) {
    for (size_t i = 0; i < n; i++) out[i] = -osp__dot_c(q, x + i * d, d);
}

static const osp__kernels kernels_scalar = {OSP__SIMD_SCALAR, "scalar", l2sq_c, ndot_c, hamming_c,
                                            l2sq_many_c, ndot_many_c};

#ifdef OSP__X86

OSP__TARGET_AVX2 static float l2sq_avx2(const float *a, const float *b, size_t d) {
    return osp__l2sq_avx2(a, b, d);
}
OSP__TARGET_AVX2 static float ndot_avx2(const float *a, const float *b, size_t d) {
    return -osp__dot_avx2(a, b, d);
}
OSP__TARGET_AVX2 static uint32_t hamming_popcnt(const uint8_t *a, const uint8_t *b, size_t n) {
    return osp__hamming_popcnt(a, b, n);
}
OSP__TARGET_AVX2 static void l2sq_many_avx2(const float *q, const float *x, size_t n, size_t d,
                                            float *out) {
    for (size_t i = 0; i < n; i++) out[i] = osp__l2sq_avx2(q, x + i * d, d);
}
OSP__TARGET_AVX2 static void ndot_many_avx2(const float *q, const float *x, size_t n, size_t d,
                                            float *out) {
    for (size_t i = 0; i < n; i++) out[i] = -osp__dot_avx2(q, x + i * d, d);
}
OSP__TARGET_AVX512 static void l2sq_many_avx512(const float *q, const float *x, size_t n, size_t d,
                                                float *out) {
    for (size_t i = 0; i < n; i++) out[i] = osp__l2sq_avx512(q, x + i * d, d);
}
OSP__TARGET_AVX512 static void ndot_many_avx512(const float *q, const float *x, size_t n, size_t d,
                                                float *out) {
    for (size_t i = 0; i < n; i++) out[i] = -osp__dot_avx512(q, x + i * d, d);
}
OSP__TARGET_AVX512 static float l2sq_avx512(const float *a, const float *b, size_t d) {
    return osp__l2sq_avx512(a, b, d);
}
OSP__TARGET_AVX512 static float ndot_avx512(const float *a, const float *b, size_t d) {
    return -osp__dot_avx512(a, b, d);
}

/* 512 bits per step with VPOPCNTDQ; codes shorter than 64 bytes (most hash
 * codes) go through the scalar popcount loop, which is faster for them. */
__attribute__((target("avx512f,avx512vpopcntdq,avx2,fma,popcnt"))) static uint32_t
hamming_vpopcnt(const uint8_t *a, const uint8_t *b, size_t n) {
    if (n < 64) return osp__hamming_popcnt(a, b, n);
    __m512i acc = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i x = _mm512_xor_si512(_mm512_loadu_si512((const void *)(a + i)),
                                     _mm512_loadu_si512((const void *)(b + i)));
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
    }
    uint64_t c = (uint64_t)_mm512_reduce_add_epi64(acc);
    if (i < n) c += osp__hamming_popcnt(a + i, b + i, n - i);
    return (uint32_t)c;
}

static const osp__kernels kernels_avx2 = {OSP__SIMD_AVX2, "avx2", l2sq_avx2, ndot_avx2,
                                          hamming_popcnt, l2sq_many_avx2, ndot_many_avx2};
static const osp__kernels kernels_avx512 = {OSP__SIMD_AVX512, "avx512", l2sq_avx512, ndot_avx512,
                                            hamming_popcnt, l2sq_many_avx512, ndot_many_avx512};
static const osp__kernels kernels_avx512_vpopcnt = {OSP__SIMD_AVX512, "avx512", l2sq_avx512,
                                                    ndot_avx512, hamming_vpopcnt,
                                                    l2sq_many_avx512, ndot_many_avx512};

static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("popcnt");
}

static int cpu_has_avx512(void) {
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
}

#endif /* OSP__X86 */

osp__simd_level osp__simd_best(void) {
    osp__simd_level best = OSP__SIMD_SCALAR;
#ifdef OSP__X86
    if (cpu_has_avx512())
        best = OSP__SIMD_AVX512;
    else if (cpu_has_avx2())
        best = OSP__SIMD_AVX2;
#endif
    const char *cap = getenv("OSP_SIMD");
    if (cap) {
        osp__simd_level c = best;
        if (!strcmp(cap, "scalar"))
            c = OSP__SIMD_SCALAR;
        else if (!strcmp(cap, "avx2"))
            c = OSP__SIMD_AVX2;
        if (c < best) best = c;
    }
    return best;
}

const osp__kernels *osp__kernels_for(osp__simd_level level) {
    switch (level) {
    case OSP__SIMD_SCALAR: return &kernels_scalar;
#ifdef OSP__X86
    case OSP__SIMD_AVX2: return cpu_has_avx2() ? &kernels_avx2 : NULL;
    case OSP__SIMD_AVX512:
        if (!cpu_has_avx512()) return NULL;
        return __builtin_cpu_supports("avx512vpopcntdq") ? &kernels_avx512_vpopcnt
                                                         : &kernels_avx512;
#endif
    default: return NULL;
    }
}

const osp__kernels *osp__kernels_best(void) {
    const osp__kernels *k = osp__kernels_for(osp__simd_best());
    return k ? k : &kernels_scalar;
}
