/* Distance kernels: a portable C version and AVX2 / AVX-512 variants chosen at
 * run time from the CPU's features (and the OSP_SIMD environment variable,
 * which can lower the level: "scalar", "avx2", "avx512").
 *
 * The SIMD kernels are static inline with target attributes so that hot loops
 * compiled for the same target (the HNSW search) inline them instead of
 * calling through a pointer; everyone else goes through osp__kernels. */
#ifndef OSPREY_INDEX_DISTANCE_H
#define OSPREY_INDEX_DISTANCE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define OSP__X86 1
#include <immintrin.h>
#endif

typedef float (*osp__dist_fn)(const float *a, const float *b, size_t d);
/* out[i] = dist(q, x + i * d) for n vectors stored one after another. */
typedef void (*osp__dist_many_fn)(const float *q, const float *x, size_t n, size_t d, float *out);
typedef uint32_t (*osp__hamming_fn)(const uint8_t *a, const uint8_t *b, size_t nbytes);

typedef enum osp__simd_level {
    OSP__SIMD_SCALAR = 0,
    OSP__SIMD_AVX2 = 1,   /* AVX2 + FMA + POPCNT */
    OSP__SIMD_AVX512 = 2, /* AVX-512 F/BW/VL (+ VPOPCNTDQ for Hamming when present) */
} osp__simd_level;

typedef struct osp__kernels {
    osp__simd_level level;
    const char *name;
    osp__dist_fn l2sq; /* squared Euclidean distance */
    osp__dist_fn ndot; /* negated inner product: smaller is closer */
    osp__hamming_fn hamming;
    osp__dist_many_fn l2sq_many; /* the same over a run of vectors, without a */
    osp__dist_many_fn ndot_many; /* call per vector (flat scans, IVF lists)  */
} osp__kernels;

/* The best level this CPU runs, capped by OSP_SIMD. */
osp__simd_level osp__simd_best(void);
/* The kernels of a level, or NULL if this CPU cannot run it. */
const osp__kernels *osp__kernels_for(osp__simd_level level);
/* osp__kernels_for(osp__simd_best()). */
const osp__kernels *osp__kernels_best(void);

/* ---- portable C -------------------------------------------------------- */

/* Eight independent sums break the add dependency chain, which the compiler
 * may not reorder without -ffast-math. */
static inline float osp__l2sq_c(const float *a, const float *b, size_t d) {
    float s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= d; i += 8)
        for (int j = 0; j < 8; j++) {
            float t = a[i + j] - b[i + j];
            s[j] += t * t;
        }
    for (; i < d; i++) {
        float t = a[i] - b[i];
        s[0] += t * t;
    }
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static inline float osp__dot_c(const float *a, const float *b, size_t d) {
    float s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= d; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
    for (; i < d; i++) s[0] += a[i] * b[i];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static inline uint32_t osp__hamming_c(const uint8_t *a, const uint8_t *b, size_t n) {
    uint32_t c = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        c += (uint32_t)__builtin_popcountll(x ^ y);
    }
    for (; i < n; i++) c += (uint32_t)__builtin_popcount((unsigned)(a[i] ^ b[i]));
    return c;
}

#ifdef OSP__X86

#define OSP__TARGET_AVX2 __attribute__((target("avx2,fma,popcnt")))
#define OSP__TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,popcnt")))
#define OSP__INLINE static inline __attribute__((always_inline))

/* ---- AVX2 + FMA: four 8-float accumulators ------------------------------ */

OSP__INLINE OSP__TARGET_AVX2 float osp__hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

OSP__INLINE OSP__TARGET_AVX2 float osp__l2sq_avx2(const float *a, const float *b, size_t d) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m256 t0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 t1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        __m256 t2 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16));
        __m256 t3 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24));
        s0 = _mm256_fmadd_ps(t0, t0, s0);
        s1 = _mm256_fmadd_ps(t1, t1, s1);
        s2 = _mm256_fmadd_ps(t2, t2, s2);
        s3 = _mm256_fmadd_ps(t3, t3, s3);
    }
    for (; i + 8 <= d; i += 8) {
        __m256 t = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        s0 = _mm256_fmadd_ps(t, t, s0);
    }
    float r = osp__hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < d; i++) {
        float t = a[i] - b[i];
        r += t * t;
    }
    return r;
}

OSP__INLINE OSP__TARGET_AVX2 float osp__dot_avx2(const float *a, const float *b, size_t d) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= d; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float r = osp__hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < d; i++) r += a[i] * b[i];
    return r;
}

OSP__INLINE OSP__TARGET_AVX2 uint32_t osp__hamming_popcnt(const uint8_t *a, const uint8_t *b,
                                                         size_t n) {
    uint64_t c0 = 0, c1 = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint64_t x0, y0, x1, y1;
        memcpy(&x0, a + i, 8);
        memcpy(&y0, b + i, 8);
        memcpy(&x1, a + i + 8, 8);
        memcpy(&y1, b + i + 8, 8);
        c0 += (uint64_t)_mm_popcnt_u64(x0 ^ y0);
        c1 += (uint64_t)_mm_popcnt_u64(x1 ^ y1);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        c0 += (uint64_t)_mm_popcnt_u64(x ^ y);
    }
    for (; i < n; i++) c1 += (uint64_t)_mm_popcnt_u32((unsigned)(a[i] ^ b[i]));
    return (uint32_t)(c0 + c1);
}

/* ---- AVX-512: four 16-float accumulators, masked tail -------------------- */

OSP__INLINE OSP__TARGET_AVX512 float osp__l2sq_avx512(const float *a, const float *b, size_t d) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 64 <= d; i += 64) {
        __m512 t0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 t1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        __m512 t2 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32));
        __m512 t3 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48));
        s0 = _mm512_fmadd_ps(t0, t0, s0);
        s1 = _mm512_fmadd_ps(t1, t1, s1);
        s2 = _mm512_fmadd_ps(t2, t2, s2);
        s3 = _mm512_fmadd_ps(t3, t3, s3);
    }
    for (; i + 16 <= d; i += 16) {
        __m512 t = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        s1 = _mm512_fmadd_ps(t, t, s1);
    }
    if (i < d) {
        __mmask16 m = (__mmask16)((1u << (d - i)) - 1u);
        __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        s2 = _mm512_fmadd_ps(t, t, s2);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

OSP__INLINE OSP__TARGET_AVX512 float osp__dot_avx512(const float *a, const float *b, size_t d) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 64 <= d; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= d; i += 16)
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s1);
    if (i < d) {
        __mmask16 m = (__mmask16)((1u << (d - i)) - 1u);
        s2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s2);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

#endif /* OSP__X86 */

#endif
