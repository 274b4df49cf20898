/* The SIMD distance kernels against a plain double-precision reference, for
 * every level this CPU runs and for lengths around every vector width. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "index/distance.h"
#include "index_testutil.h"

static void fill(float *x, int n, osp_rng *r) {
    for (int i = 0; i < n; i++) x[i] = osp_rng_normal(r);
}

Test(distance, float_kernels_match_reference) {
    osp_rng r;
    osp_rng_seed(&r, 7);
    float a[1100], b[1100];
    int levels = 0;
    for (int lv = OSP__SIMD_SCALAR; lv <= OSP__SIMD_AVX512; lv++) {
        const osp__kernels *k = osp__kernels_for((osp__simd_level)lv);
        if (!k) continue;
        levels++;
        for (int d = 1; d <= 1090; d += (d < 140 ? 1 : 37)) {
            /* unaligned starts too: mapped files and sub-vectors are not aligned */
            for (int off = 0; off < 2; off++) {
                fill(a, d + off, &r);
                fill(b, d + off, &r);
                double l2 = 0, dot = 0;
                for (int i = 0; i < d; i++) {
                    double t = (double)a[off + i] - b[off + i];
                    l2 += t * t;
                    dot += (double)a[off + i] * b[off + i];
                }
                float gl2 = k->l2sq(a + off, b + off, (size_t)d);
                float gdot = -k->ndot(a + off, b + off, (size_t)d);
                cr_assert(fabs(gl2 - l2) <= 1e-5 * (l2 + d), "%s l2 d=%d: %g vs %g", k->name, d, gl2, l2);
                cr_assert(fabs(gdot - dot) <= 1e-5 * (fabs(dot) + d), "%s dot d=%d: %g vs %g", k->name, d,
                          gdot, dot);
            }
        }
    }
    cr_assert(levels >= 1);
}

Test(distance, many_kernels_match_single) {
    osp_rng r;
    osp_rng_seed(&r, 8);
    float q[200], x[7 * 200], out[7];
    fill(x, 7 * 200, &r);
    fill(q, 200, &r);
    for (int lv = OSP__SIMD_SCALAR; lv <= OSP__SIMD_AVX512; lv++) {
        const osp__kernels *k = osp__kernels_for((osp__simd_level)lv);
        if (!k) continue;
        for (int d = 1; d <= 200; d += 13) {
            k->l2sq_many(q, x, 7, (size_t)d, out);
            for (int i = 0; i < 7; i++) cr_assert_eq(out[i], k->l2sq(q, x + i * d, (size_t)d));
            k->ndot_many(q, x, 7, (size_t)d, out);
            for (int i = 0; i < 7; i++) cr_assert_eq(out[i], k->ndot(q, x + i * d, (size_t)d));
        }
    }
}

Test(distance, hamming_matches_reference) {
    osp_rng r;
    osp_rng_seed(&r, 9);
    uint8_t a[300], b[300];
    for (int lv = OSP__SIMD_SCALAR; lv <= OSP__SIMD_AVX512; lv++) {
        const osp__kernels *k = osp__kernels_for((osp__simd_level)lv);
        if (!k) continue;
        for (int n = 1; n <= 260; n++) {
            for (int i = 0; i < n + 1; i++) {
                a[i] = (uint8_t)osp_rng_u64(&r);
                b[i] = (uint8_t)osp_rng_u64(&r);
            }
            for (int off = 0; off < 2; off++) {
                uint32_t ref = 0;
                for (int i = 0; i < n; i++)
                    for (int bit = 0; bit < 8; bit++) ref += ((a[off + i] ^ b[off + i]) >> bit) & 1;
                cr_assert_eq(k->hamming(a + off, b + off, (size_t)n), ref, "%s n=%d", k->name, n);
            }
        }
    }
}

Test(distance, best_level_is_runnable_and_env_caps_it) {
    const osp__kernels *k = osp__kernels_best();
    cr_assert_not_null(k);
    cr_assert_not_null(osp__kernels_for(osp__simd_best()));
    setenv("OSP_SIMD", "scalar", 1);
    cr_assert_eq(osp__simd_best(), OSP__SIMD_SCALAR);
    unsetenv("OSP_SIMD");
}
