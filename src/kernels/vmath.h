/* exp, erf and the GELUs of one float, written without branches or calls
 * so that a loop over them vectorises: the kernel families that include
 * this header (gelu.c, layernorm.c, attention.c) are compiled once per
 * instruction set (cpu_kernels.h), and each copy runs these as 4, 8 or 16
 * lanes. libm's expf and erff are calls the compiler cannot vectorise.
 *
 * Accuracy, checked against libm over dense ranges in
 * tests/kernels/test_transformer_kernels.c (docs/kernels.md has the figures):
 * - osp__vexp: relative error below 2e-7 for x in [-87, 88]; 0 below -87.
 * - osp__verf: absolute error below 2e-7 everywhere.
 * The polynomials' coefficients come from scripts/fit-erf (least squares
 * in double precision against Python's math.erf and math.erfc). */
#ifndef OSPREY_KERNELS_VMATH_H
#define OSPREY_KERNELS_VMATH_H

#include <stdint.h>
#include <string.h>

static inline float osp__vfloat_bits(int32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* e^x = 2^n e^r with n = round(x / ln 2) and |r| <= ln 2 / 2; e^r by its
 * Taylor series to r^7 (truncation below 1e-8 relative), 2^n built in the
 * exponent bits. */
static inline float osp__vexp(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    /* adding 1.5 * 2^23 rounds to an integer in the low mantissa bits */
    const float magic = 12582912.0f;
    const float t = x * 1.44269504088896341f + magic;
    const float n = t - magic;
    /* ln 2 in two parts: n * LN2_HI is exact for |n| < 2^9 */
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* n in [-126, 127]: 2^n is a normal float; a NaN x (p is NaN) must
     * not reach the conversion to int */
    const float nn = n == n ? n : 0.0f;
    return p * osp__vfloat_bits(((int32_t)nn + 127) << 23);
}

/* erf: for |x| < 1, x P(x^2); above, 1 - e^(-x^2) K(u) with u = 1 / (1 +
 * |x|/2), K fitted to erfc(a) e^(a^2) on [1, 4] (erfc(4) = 1.5e-8 is below
 * half a unit in the last place of 1, so |x| is clamped at 4). */
static inline float osp__verf(float x) {
    const float a0 = x < 0.0f ? -x : x;
    const float a = a0 > 4.0f ? 4.0f : a0;
    const float s = a * a;
    float p = 7.84726243e-05f;
    p = p * s - 0.000800819334f;
    p = p * s + 0.00518809977f;
    p = p * s - 0.0268536919f;
    p = p * s + 0.112835823f;
    p = p * s - 0.376126256f;
    p = p * s + 1.12837917f;
    const float small = a * p;
    const float u = 1.0f / (1.0f + 0.5f * a);
    float k = 0.119280607f;
    k = k * u - 0.471049816f;
    k = k * u + 0.563166907f;
    k = k * u - 0.103617773f;
    k = k * u + 0.34784363f;
    k = k * u + 0.259666718f;
    k = k * u + 0.28491701f;
    k = k * u - 0.000154543564f;
    const float large = 1.0f - osp__vexp(-s) * k;
    const float e = a < 1.0f ? small : large;
    return x < 0.0f ? -e : e;
}

/* Exact GELU, x Phi(x) = x (1 + erf(x / sqrt 2)) / 2. */
static inline float osp__vgelu(float x) {
    return 0.5f * x * (1.0f + osp__verf(x * 0.70710678118654752f));
}

/* PyTorch's tanh GELU, 0.5 x (1 + tanh u) with u = sqrt(2/pi) (x + 0.044715
 * x^3), written as x / (1 + e^(-2u)): the same value, one exp, and no
 * cancellation for negative x. */
static inline float osp__vgelu_tanh(float x) {
    const float u = 0.79788456080286535588f * (x + 0.044715f * x * x * x);
    return x / (1.0f + osp__vexp(-2.0f * u));
}

#endif
