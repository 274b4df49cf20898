/* Gradient compression (src/train/compress.c): each format's round trip
 * stays within its rounding bound, and with error feedback the running sum
 * of what was sent follows the running sum of the true values within one
 * step's rounding over a long run, where without feedback it drifts away. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/core.h"
#include "train/compress.h"

enum { N = 512, STEPS = 1000, RANKS = 4 };

/* Half of fp16's relative spacing: |round(x) - x| <= 2^-11 |x| for normal
 * halves; subnormal halves are spaced 2^-24 apart. */
static const double FP16_REL = 1.0 / 2048, FP16_ABS = 1.0 / (1 << 25);

Test(compress, names_and_sizes) {
    osp__compress_kind k;
    cr_assert_eq(osp__compress_parse("fp16", &k), 0);
    cr_assert_eq(k, OSP__COMPRESS_FP16);
    cr_assert_eq(osp__compress_parse("int8", &k), 0);
    cr_assert_eq(k, OSP__COMPRESS_INT8);
    cr_assert_eq(osp__compress_parse("none", &k), 0);
    cr_assert_eq(k, OSP__COMPRESS_NONE);
    cr_assert_eq(osp__compress_parse("int4", &k), OSP_EINVAL);
    cr_assert_eq(osp__compress_size(OSP__COMPRESS_NONE, 1000), 4000);
    cr_assert_eq(osp__compress_size(OSP__COMPRESS_FP16, 1000), 2000);
    cr_assert_eq(osp__compress_size(OSP__COMPRESS_INT8, 1000), 1004);
}

static void fill(osp_rng *rng, float *x, int n, float sigma) {
    for (int i = 0; i < n; i++) x[i] = sigma * osp_rng_normal(rng);
}

Test(compress, round_trip_bounds) {
    osp_rng rng;
    osp_rng_seed(&rng, 7);
    static float x[N], back[N];
    static unsigned char wire[4 * N + 4];
    for (int trial = 0; trial < 20; trial++) {
        const float sigma = powf(10.0f, (float)(trial % 10) - 6.0f); /* 1e-6 .. 1e3 */
        fill(&rng, x, N, sigma);
        x[0] = 0;
        osp__compress(OSP__COMPRESS_FP16, x, NULL, N, wire);
        memset(back, 0, sizeof back);
        osp__decompress_add(OSP__COMPRESS_FP16, wire, N, back);
        for (int i = 0; i < N; i++)
            cr_assert_leq(fabs((double)back[i] - x[i]), FP16_REL * fabs(x[i]) + FP16_ABS,
                          "fp16: %g came back as %g", x[i], back[i]);
        osp__compress(OSP__COMPRESS_INT8, x, NULL, N, wire);
        memset(back, 0, sizeof back);
        osp__decompress_add(OSP__COMPRESS_INT8, wire, N, back);
        float top = 0;
        for (int i = 0; i < N; i++) top = fmaxf(top, fabsf(x[i]));
        for (int i = 0; i < N; i++) /* half a step of max|x| / 127, and float rounding */
            cr_assert_leq(fabs((double)back[i] - x[i]), top / 254.0 * (1 + 1e-5),
                          "int8: %g came back as %g (max %g)", x[i], back[i], top);
        cr_assert_eq(back[0], 0.0f);
        osp__compress(OSP__COMPRESS_NONE, x, NULL, N, wire);
        memset(back, 0, sizeof back);
        osp__decompress_add(OSP__COMPRESS_NONE, wire, N, back);
        cr_assert_eq(memcmp(back, x, sizeof x), 0);
    }
    /* All zeros: int8's scale is 0, and nothing is divided by it. */
    memset(x, 0, sizeof x);
    osp__compress(OSP__COMPRESS_INT8, x, NULL, N, wire);
    memset(back, 0, sizeof back);
    osp__decompress_add(OSP__COMPRESS_INT8, wire, N, back);
    for (int i = 0; i < N; i++) cr_assert_eq(back[i], 0.0f);
}

/* STEPS steps of gradients for RANKS senders, each packing its own with
 * its own residual (or none), summed as the reducer sums them. Half the
 * values are noise, half a constant the format cannot represent (it rounds
 * the same way at every step: the case where lost rounding adds up).
 * Returns max |sum sent - sum true| over the values and sets *bound to the
 * largest single-step rounding error seen, summed over the senders. */
static double run(osp__compress_kind kind, int feedback, double *bound) {
    osp_rng rng;
    osp_rng_seed(&rng, 42);
    static float x[N], got[N], resid[RANKS][N];
    static double truth[N], sent[N];
    static unsigned char wire[4 * N + 4];
    memset(resid, 0, sizeof resid);
    memset(truth, 0, sizeof truth);
    memset(sent, 0, sizeof sent);
    *bound = 0;
    /* fp16 spaces values near 1 by 2^-10; int8 with noise of sigma 1 has a
     * step of about 4/127 */
    const float constant = kind == OSP__COMPRESS_FP16 ? 1.0003f : 0.005f;
    for (int t = 0; t < STEPS; t++) {
        memset(got, 0, sizeof got);
        double step_bound = 0;
        for (int r = 0; r < RANKS; r++) {
            fill(&rng, x, N / 2, 1.0f);
            for (int i = N / 2; i < N; i++) x[i] = constant * (i % 2 ? 1.0f : -1.0f);
            double top = 0; /* of what is packed: the values plus the residual */
            for (int i = 0; i < N; i++) {
                truth[i] += x[i];
                top = fmax(top, fabs((double)x[i] + (feedback ? resid[r][i] : 0)));
            }
            step_bound += kind == OSP__COMPRESS_FP16 ? FP16_REL * top + FP16_ABS : top / 254.0;
            osp__compress(kind, x, feedback ? resid[r] : NULL, N, wire);
            osp__decompress_add(kind, wire, N, got);
        }
        for (int i = 0; i < N; i++) sent[i] += got[i];
        *bound = fmax(*bound, step_bound);
    }
    double worst = 0;
    for (int i = 0; i < N; i++) worst = fmax(worst, fabs(sent[i] - truth[i]));
    return worst;
}

static void check_feedback(osp__compress_kind kind) {
    double bound, bound_nofb;
    const double with = run(kind, 1, &bound);
    const double without = run(kind, 0, &bound_nofb);
    cr_log_info("%s: max |sum sent - sum true| %g with feedback (bound %g), %g without",
                osp__compress_name(kind), with, bound + 1e-3, without);
    /* The residual is exactly what has not been sent yet, so the gap is
     * the last step's rounding; float rounding of the residual's updates
     * over the run adds at most 1e-3 (values of about 1, 1000 steps). */
    cr_assert_leq(with, bound + 1e-3, "%s with feedback: the sums differ by %g (bound %g)",
                  osp__compress_name(kind), with, bound + 1e-3);
    cr_assert_gt(without, 20 * (bound + 1e-3), "%s without feedback drifted only %g",
                 osp__compress_name(kind), without);
}

Test(compress, error_feedback_fp16) { check_feedback(OSP__COMPRESS_FP16); }
Test(compress, error_feedback_int8) { check_feedback(OSP__COMPRESS_INT8); }

Test(compress, any_bytes_decode) {
    osp_rng rng;
    osp_rng_seed(&rng, 3);
    static unsigned char wire[4 * N + 4];
    static float acc[N];
    for (int trial = 0; trial < 50; trial++) {
        for (size_t i = 0; i < sizeof wire; i++) wire[i] = (unsigned char)osp_rng_u64(&rng);
        osp__decompress_add(OSP__COMPRESS_FP16, wire, N, acc);
        osp__decompress_add(OSP__COMPRESS_INT8, wire, N, acc);
    }
}
