/* The activations that the AVX2 convolution kernels (conv_gemm_avx2.h,
 * conv_winograd_avx2.h, conv_depthwise_avx2.h, conv_depthwise_c8_avx2.h)
 * apply in registers before their one store; any other is left to conv.c's
 * epilogue over the finished plane. */
#ifndef OSPREY_ACT_AVX2_H
#define OSPREY_ACT_AVX2_H

#include <immintrin.h>

static inline int avx2_act_in_registers(int act) {
    return act == OSP_ACT_NONE || act == OSP_ACT_RELU || act == OSP_ACT_RELU6 ||
           act == OSP_ACT_LEAKY_RELU;
}

/* act (one that avx2_act_in_registers accepts) of v; slope: leaky ReLU's. */
static inline __attribute__((always_inline)) __m256 avx2_act(__m256 v, int act, __m256 slope) {
    const __m256 zero = _mm256_setzero_ps();
    if (act == OSP_ACT_RELU) return _mm256_max_ps(v, zero);
    if (act == OSP_ACT_RELU6) return _mm256_min_ps(_mm256_max_ps(v, zero), _mm256_set1_ps(6.0f));
    if (act == OSP_ACT_LEAKY_RELU)
        return _mm256_blendv_ps(v, _mm256_mul_ps(v, slope), _mm256_cmp_ps(v, zero, _CMP_LT_OQ));
    return v;
}

#endif
