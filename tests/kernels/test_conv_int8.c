/* The int8 convolution (conv2d_int8_*): every backend that has it gives
 * the same bits as the portable kernel, and every output is within the
 * bound that quantisation allows of the float32 convolution of the same
 * input and filters:
 *
 *   |y8 - y32| <= sum over taps of (|w| ex + |x| ew + ex ew) + 1e-4 |y32| + 1e-5
 *
 * where ex = x_scale / 2 and ew = the channel's weight scale / 2 are the
 * largest rounding errors of one input and one weight (inputs inside the
 * quantised range), and the last terms cover float32's own sums. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/kernels.h"

static void fill(float *v, int64_t n, uint64_t seed, float lo, float hi) {
    osp_rng r;
    osp_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * osp_rng_uniform(&r);
}

typedef struct shape {
    int n, c, h, w, k, kh, kw, stride, pad, dil, act;
    int residual;
} shape;

static osp_conv_desc desc_of(const shape *s) {
    osp_conv_desc d = {.n = s->n, .c = s->c, .h = s->h, .w = s->w, .k = s->k, .kh = s->kh,
                       .kw = s->kw, .stride_h = s->stride, .stride_w = s->stride,
                       .pad_h = s->pad, .pad_w = s->pad, .dil_h = s->dil, .dil_w = s->dil,
                       .groups = 1, .act = s->act, .act_alpha = 0.1f};
    d.p = osp_conv_out_size(s->h, s->kh, s->stride, s->pad, s->dil, 0);
    d.q = osp_conv_out_size(s->w, s->kw, s->stride, s->pad, s->dil, 0);
    return d;
}

/* The int8 output of backend be, or NULL where be has no int8 kernel. */
static float *run_int8(const osp_backend *be, const osp_conv_desc *d, float xs, int xz,
                       const float *x, const float *w, const float *b) {
    if (!be->conv2d_int8_forward) return NULL;
    const size_t pb = be->conv2d_int8_prepared_bytes(d);
    cr_assert(pb > 0);
    void *prep = malloc(pb), *ws = malloc(be->conv2d_int8_workspace(d));
    float *y = malloc(sizeof(float) * (size_t)d->n * d->k * d->p * d->q);
    be->conv2d_int8_prepare(d, w, prep);
    be->conv2d_int8_forward(d, xs, xz, x, prep, b, y, ws);
    free(prep);
    free(ws);
    return y;
}

static void check_shape(const shape *s, uint64_t seed) {
    osp_conv_desc d = desc_of(s);
    const int64_t nx = (int64_t)s->n * s->c * s->h * s->w, r = (int64_t)s->c * s->kh * s->kw;
    const int64_t ny = (int64_t)s->n * s->k * d.p * d.q;
    float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * s->k * r);
    float *b = malloc(sizeof(float) * s->k), *res = malloc(sizeof(float) * ny);
    /* an input range that is not symmetric, so the zero point matters */
    const float lo = -0.7f, hi = 1.9f;
    fill(x, nx, seed, lo, hi);
    fill(w, s->k * r, seed + 1, -0.5f, 0.5f);
    fill(b, s->k, seed + 2, -1, 1);
    fill(res, ny, seed + 3, -1, 1);
    const float xs = (hi - lo) / 255.0f;
    const int xz = (int)lrintf(-lo / xs);
    d.residual = s->residual ? res : NULL;

    const osp_backend *ref = osp_backend_cpu_reference();
    float *want = run_int8(ref, &d, xs, xz, x, w, b);
    cr_assert(want, "the reference backend has an int8 kernel");
    /* float32 without activation or residual, for the bound */
    osp_conv_desc plain = d;
    plain.act = OSP_ACT_NONE;
    plain.residual = NULL;
    float *y32 = malloc(sizeof(float) * ny);
    void *ws = malloc(ref->conv2d_workspace(&plain));
    ref->conv2d_forward(&plain, x, w, b, y32, ws);
    free(ws);

    const int64_t s_out = (int64_t)d.p * d.q;
    for (int n = 0; n < s->n; n++)
        for (int k = 0; k < s->k; k++) {
            float amax = 0;
            for (int64_t i = 0; i < r; i++) amax = fmaxf(amax, fabsf(w[k * r + i]));
            const double ew = amax / 127.0 / 2, ex = xs / 2.0;
            double sw = 0;
            for (int64_t i = 0; i < r; i++) sw += fabs(w[k * r + i]);
            /* |x| <= max(|lo|, |hi|), padding is exact */
            const double bound = sw * ex + r * (1.9 * ew + ex * ew);
            for (int64_t j = 0; j < s_out; j++) {
                const int64_t at = ((int64_t)n * s->k + k) * s_out + j;
                float v = y32[at] + (d.residual ? res[at] : 0.0f);
                if (s->act == OSP_ACT_RELU) v = v > 0 ? v : 0;
                const double err = fabs((double)want[at] - v);
                cr_assert(err <= bound + 1e-4 * fabs(v) + 1e-5,
                          "%dx%d s%d p%d d%d: y[%lld] int8 %.6g float %.6g, error %.3g over %.3g",
                          s->kh, s->kw, s->stride, s->pad, s->dil, (long long)at, want[at], v, err,
                          bound);
            }
        }

    const char *others[] = {"avx2", "avx512"};
    for (int i = 0; i < 2; i++) {
        const osp_backend *be = osp_backend_find(others[i]);
        if (!be) continue;
        float *got = run_int8(be, &d, xs, xz, x, w, b);
        if (!got) continue; /* float32 on this backend */
        for (int64_t j = 0; j < ny; j++)
            cr_assert(memcmp(&got[j], &want[j], sizeof(float)) == 0,
                      "%s %dx%d s%d k%d: y[%lld] = %.9g, the reference %.9g", be->name, s->kh,
                      s->kw, s->stride, s->k, (long long)j, got[j], want[j]);
        free(got);
    }
    free(x), free(w), free(b), free(res), free(y32), free(want);
}

Test(conv_int8, shapes_against_float32_and_between_backends) {
    const shape shapes[] = {
        /* n  c   h   w   k  kh kw s p d act          residual */
        {1, 3, 17, 19, 8, 3, 3, 1, 1, 1, OSP_ACT_NONE, 0},
        {2, 16, 12, 12, 20, 3, 3, 1, 1, 1, OSP_ACT_RELU, 1}, /* 12-row tile + 8 rows */
        {3, 5, 15, 13, 12, 3, 3, 2, 1, 1, OSP_ACT_RELU, 0},  /* stride 2 */
        {1, 32, 7, 7, 64, 1, 1, 1, 0, 1, OSP_ACT_NONE, 1},   /* 1x1, 49 columns */
        {2, 3, 40, 36, 16, 7, 7, 2, 3, 1, OSP_ACT_RELU, 0},  /* a stem */
        {1, 6, 11, 11, 4, 3, 3, 1, 2, 2, OSP_ACT_NONE, 0},   /* dilation */
        {1, 64, 14, 14, 28, 3, 3, 1, 1, 1, OSP_ACT_RELU, 0}, /* team-split image */
        {4, 9, 9, 9, 13, 5, 3, 1, 0, 1, OSP_ACT_NONE, 0},    /* odd K, R */
        {1, 4, 45, 45, 8, 3, 3, 1, 20, 20, OSP_ACT_NONE, 0}, /* a row reach past 32 cells */
        /* strided layers in phases (conv_int8.h) */
        {2, 8, 14, 14, 16, 1, 1, 2, 0, 1, OSP_ACT_NONE, 1},  /* 1x1 s2: one phase read */
        {1, 5, 16, 15, 12, 3, 3, 2, 1, 1, OSP_ACT_RELU, 0},  /* even and odd sides */
        {1, 6, 13, 14, 8, 3, 3, 3, 1, 1, OSP_ACT_NONE, 0},   /* stride 3 */
        {1, 4, 17, 17, 8, 3, 3, 2, 2, 2, OSP_ACT_NONE, 0},   /* s2 d2: one phase */
        {1, 64, 28, 28, 28, 3, 3, 2, 1, 1, OSP_ACT_RELU, 1}, /* team-split image */
        {3, 7, 9, 9, 4, 2, 2, 4, 1, 1, OSP_ACT_NONE, 0},     /* stride 4, a 2x2 window */
        {1, 3, 23, 23, 8, 5, 5, 5, 0, 1, OSP_ACT_NONE, 0},   /* stride 5: a panel */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) check_shape(&shapes[i], 10 + i);
}

Test(conv_int8, activations_match_between_backends) {
    for (int act = OSP_ACT_NONE; act <= OSP_ACT_SWISH; act++) {
        shape s = {2, 8, 9, 9, 16, 3, 3, 1, 1, 1, act, 1};
        osp_conv_desc d = desc_of(&s);
        const int64_t nx = 2 * 8 * 81, ny = 2 * 16 * 81;
        float x[2 * 8 * 81], w[16 * 72], b[16], res[2 * 16 * 81];
        fill(x, nx, 5, -1, 1), fill(w, 16 * 72, 6, -1, 1), fill(b, 16, 7, -1, 1);
        fill(res, ny, 8, -1, 1);
        d.residual = res;
        float *want = run_int8(osp_backend_cpu_reference(), &d, 2.0f / 255, 128, x, w, b);
        const osp_backend *be = osp_backend_find("avx512");
        float *got = be ? run_int8(be, &d, 2.0f / 255, 128, x, w, b) : NULL;
        for (int64_t j = 0; got && j < ny; j++)
            cr_assert(memcmp(&got[j], &want[j], sizeof(float)) == 0,
                      "activation %d: y[%lld] = %.9g, the reference %.9g", act, (long long)j,
                      got[j], want[j]);
        free(got), free(want);
    }
}

Test(conv_int8, shapes_it_does_not_take) {
    const osp_backend *ref = osp_backend_cpu_reference();
    osp_conv_desc d = {.n = 1, .c = 8, .h = 5, .w = 5, .k = 8, .p = 5, .q = 5, .kh = 3, .kw = 3,
                       .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1, .dil_h = 1,
                       .dil_w = 1, .groups = 8};
    cr_assert_eq(ref->conv2d_int8_prepared_bytes(&d), 0, "grouped layers stay float32");
    d.groups = 1;
    d.c = 8000; /* 72000 taps */
    cr_assert_eq(ref->conv2d_int8_prepared_bytes(&d), 0, "too many taps for int32 sums");
}

Test(conv_int8, saturates_out_of_range_inputs) {
    /* inputs far outside the quantised range clamp to 0 and 255 */
    const osp_backend *ref = osp_backend_cpu_reference();
    osp_conv_desc d = {.n = 1, .c = 1, .h = 1, .w = 4, .k = 1, .p = 1, .q = 4, .kh = 1, .kw = 1,
                       .stride_h = 1, .stride_w = 1, .dil_h = 1, .dil_w = 1, .groups = 1};
    float x[4] = {-1e30f, 1e30f, NAN, 0.25f}, w[1] = {1}, y[4];
    void *prep = malloc(ref->conv2d_int8_prepared_bytes(&d)), *ws = malloc(ref->conv2d_int8_workspace(&d));
    ref->conv2d_int8_prepare(&d, w, prep);
    ref->conv2d_int8_forward(&d, 1.0f / 255, 0, x, prep, NULL, y, ws);
    cr_assert_float_eq(y[0], 0.0f, 1e-6);
    cr_assert_float_eq(y[1], 1.0f, 1e-6);
    cr_assert_float_eq(y[2], 0.0f, 1e-6, "NaN quantises to the low end");
    cr_assert_float_eq(y[3], 64.0f / 255, 1e-6);
    free(prep), free(ws);
}

/* Int8 activations between layers (conv2d_int8_forward_io): layer a writes
 * its output packed for layer b (and float32 too, where others read it),
 * and b reads those bytes. b's outputs are then the same bits as when a
 * writes float32 and b quantises it, on every backend, and the same
 * between backends; a's float32 output is the same with the bytes or
 * without. */
typedef struct pair {
    shape a;         /* b's input is a's output */
    int bk, bkh, bpad, bdil;
    int a_residual;  /* a's epilogue adds a residual before it is packed */
} pair;

/* b's float32 output after a, a's output packed for b (packed 1), packed
 * and float32 (2: a's float32 output copied to ya), or float32 only (0). */
static float *run_pair(const osp_backend *be, const osp_conv_desc *da, const osp_conv_desc *db,
                       const float *x, const float *wa, const float *ba, const float *wb,
                       const float *bb, float ys, int yz, int packed, float *ya) {
    void *pa = malloc(be->conv2d_int8_prepared_bytes(da));
    void *pb = malloc(be->conv2d_int8_prepared_bytes(db));
    size_t ws_bytes = be->conv2d_int8_workspace(da);
    if (be->conv2d_int8_workspace(db) > ws_bytes) ws_bytes = be->conv2d_int8_workspace(db);
    void *ws = malloc(ws_bytes);
    be->conv2d_int8_prepare(da, wa, pa);
    be->conv2d_int8_prepare(db, wb, pb);
    const size_t per_image = be->conv2d_int8_packed_bytes(db);
    cr_assert(per_image > 0, "a stride-1 layer reads packed input");
    /* as the graph keeps it: in a's float32 buffer; poisoned, so that a
     * byte the forward leaves unwritten shows */
    const size_t a_bytes = sizeof(float) * (size_t)da->n * da->k * da->p * da->q;
    const size_t bytes = packed && per_image * da->n > a_bytes ? per_image * da->n : a_bytes;
    uint8_t *mid = malloc(bytes);
    memset(mid, 0xa5, bytes);
    float *y = malloc(sizeof(float) * (size_t)db->n * db->k * db->p * db->q);
    float *both = packed == 2 ? malloc(a_bytes) : NULL;
    osp_int8_io io = {.x_scale = 2.6f / 255, .x_zero = 69, .x = x};
    if (packed) {
        io.yq = mid;
        io.y = both;
        io.next = db;
        io.y_scale = ys;
        io.y_zero = yz;
    } else {
        io.y = (float *)mid;
    }
    be->conv2d_int8_forward_io(da, &io, pa, ba, ws);
    if (ya) memcpy(ya, packed == 2 ? both : (float *)mid, a_bytes);
    free(both);
    osp_int8_io in = {.x_scale = ys, .x_zero = yz, .y = y};
    if (packed) in.xq = mid;
    else in.x = (const float *)mid;
    be->conv2d_int8_forward_io(db, &in, pb, bb, ws);
    free(pa), free(pb), free(ws), free(mid);
    return y;
}

static void check_pair(const pair *s, uint64_t seed) {
    osp_conv_desc da = desc_of(&s->a);
    shape sb = {s->a.n, s->a.k, da.p, da.q, s->bk, s->bkh, s->bkh, 1, s->bpad, s->bdil,
                OSP_ACT_NONE, 0};
    osp_conv_desc db = desc_of(&sb);
    const int64_t nx = (int64_t)s->a.n * s->a.c * s->a.h * s->a.w;
    const int64_t ra = (int64_t)s->a.c * s->a.kh * s->a.kw, rb = (int64_t)sb.c * sb.kh * sb.kw;
    const int64_t na = (int64_t)s->a.n * s->a.k * da.p * da.q;
    float *x = malloc(sizeof(float) * nx), *wa = malloc(sizeof(float) * s->a.k * ra);
    float *wb = malloc(sizeof(float) * sb.k * rb), *ba = malloc(sizeof(float) * s->a.k);
    float *bb = malloc(sizeof(float) * sb.k), *res = malloc(sizeof(float) * na);
    fill(x, nx, seed, -0.7f, 1.9f);
    fill(wa, s->a.k * ra, seed + 1, -0.5f, 0.5f);
    fill(wb, sb.k * rb, seed + 2, -0.5f, 0.5f);
    fill(ba, s->a.k, seed + 3, -1, 1);
    fill(bb, sb.k, seed + 4, -1, 1);
    fill(res, na, seed + 5, -1, 1);
    da.residual = s->a_residual ? res : NULL;
    /* a range that clips some of a's outputs, so saturation is compared too */
    const float lo = s->a.act == OSP_ACT_RELU ? 0.0f : -1.5f, ys = (2.0f - lo) / 255;
    const int yz = (int)lrintf(-lo / ys);
    const osp_backend *ref = osp_backend_cpu_reference();
    float *want_a = malloc(sizeof(float) * na), *got_a = malloc(sizeof(float) * na);
    float *want = run_pair(ref, &da, &db, x, wa, ba, wb, bb, ys, yz, 0, want_a);
    const int64_t ny = (int64_t)sb.n * sb.k * db.p * db.q;
    const char *names[] = {"reference", "avx512"};
    for (int i = 0; i < 2; i++) {
        const osp_backend *be = i ? osp_backend_find(names[i]) : ref;
        if (!be || !be->conv2d_int8_forward_io) continue;
        for (int packed = 0; packed < 3; packed++) {
            const char *how[] = {"float32", "packed", "packed and float32"};
            float *got = run_pair(be, &da, &db, x, wa, ba, wb, bb, ys, yz, packed,
                                  packed == 1 ? NULL : got_a);
            for (int64_t j = 0; j < ny; j++)
                cr_assert(memcmp(&got[j], &want[j], sizeof(float)) == 0,
                          "%s, %s, a %dx%d s%d k%d -> b %dx%d p%d: y[%lld] = %.9g, want %.9g",
                          be->name, how[packed], s->a.kh, s->a.kw, s->a.stride, s->a.k, s->bkh,
                          s->bkh, s->bpad, (long long)j, got[j], want[j]);
            for (int64_t j = 0; packed != 1 && j < na; j++)
                cr_assert(memcmp(&got_a[j], &want_a[j], sizeof(float)) == 0,
                          "%s, %s: a's y[%lld] = %.9g, want %.9g", be->name, how[packed],
                          (long long)j, got_a[j], want_a[j]);
            free(got);
        }
    }
    free(x), free(wa), free(wb), free(ba), free(bb), free(res), free(want), free(want_a),
        free(got_a);
}

Test(conv_int8, packed_output_equals_quantised_float32) {
    const pair pairs[] = {
        /* a: n  c  h   w   k  kh kw s p d act           res   b: k kh pad dil a_res */
        {{1, 3, 9, 11, 10, 3, 3, 1, 1, 1, OSP_ACT_RELU, 0}, 8, 3, 1, 1, 0},   /* K % 4 = 2 */
        {{2, 16, 12, 12, 20, 3, 3, 1, 1, 1, OSP_ACT_RELU, 0}, 12, 3, 1, 1, 1}, /* residual */
        {{3, 5, 15, 13, 12, 3, 3, 2, 1, 1, OSP_ACT_NONE, 0}, 7, 1, 0, 1, 0},   /* a strided */
        {{1, 32, 7, 7, 64, 1, 1, 1, 0, 1, OSP_ACT_RELU, 0}, 16, 3, 1, 1, 0},   /* 7 x 7 rows */
        {{2, 8, 20, 37, 24, 3, 3, 1, 1, 1, OSP_ACT_RELU, 0}, 4, 3, 2, 2, 0},   /* dilated b */
        {{1, 64, 14, 14, 28, 3, 3, 1, 1, 1, OSP_ACT_RELU, 0}, 9, 5, 2, 1, 0},  /* team split */
        {{4, 9, 9, 9, 13, 5, 3, 1, 0, 1, OSP_ACT_NONE, 0}, 5, 3, 0, 1, 0},     /* no border */
    };
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) check_pair(&pairs[i], 40 + i);
}
