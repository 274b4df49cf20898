/* Resampling 8-bit RGB into float planes, one axis at a time.
 *
 * Each axis gets a plan: for every output pixel, `taps` source indices and
 * weights. Shrinking averages by area (each output pixel is the mean of
 * the source pixels it covers, partial pixels weighted by their overlap),
 * which does not alias the way sampling does; enlarging interpolates
 * bilinearly between pixel centres. The horizontal pass turns a source
 * row into floats at the output width; the vertical pass combines the
 * rows an output row needs into the output planes.
 *
 * The rows an output row needs are `taps` consecutive source rows (fewer
 * at the clamped edges), and they only move down as the output row does:
 * so the horizontal pass keeps them in a ring of `taps` rows, each source
 * row done once, and the working memory is a few output rows (kilobytes,
 * in L1), not the whole source window.
 *
 * Both passes have an AVX2 variant, used where the CPU has it. They do the
 * reference's arithmetic in the reference's order (multiplies and adds,
 * no fused multiply-add), lane by lane, so their results are the same to
 * the bit (tests/data/test_resample.c checks it). */
#include <math.h>
#include <string.h>

#include "resample_impl.h"

typedef struct axis_plan {
    int n, taps;
    int lo, hi; /* the first and last source index used */
    int *index; /* n x taps source indices, clamped to the image */
    float *w;   /* n x taps weights, summing to 1 for each output */
} axis_plan;

static int taps_for(float len, int out_n) {
    double s = (double)len / out_n;
    return s > 1 ? (int)ceil(s) + 1 : 2;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Convex combinations of values <= 1 can round a hair above it. (fminf is
 * a libm call here: it must handle NaN, which cannot occur.) */
static float at_most_1(float v) { return v < 1.0f ? v : 1.0f; }

/* Plans out_n outputs over source [x0, x0 + len) of an axis whose src_n
 * pixels start at pixel `first` of the whole (a part of a decode); index
 * and w have room for out_n x taps. Positions are worked out on the whole
 * axis, so that a part gives the weights the whole would, to the bit. */
static void plan_axis(axis_plan *p, double x0, double len, int first, int src_n) {
    double s = len / p->n;
    for (int o = 0; o < p->n; o++) {
        int *ix = p->index + (size_t)o * p->taps;
        float *w = p->w + (size_t)o * p->taps;
        double sum = 0;
        if (s > 1) {
            double a = x0 + o * s, b = a + s;
            double k0 = floor(a);
            for (int t = 0; t < p->taps; t++) {
                double lo = fmax(a, k0 + t), hi = fmin(b, k0 + t + 1);
                w[t] = hi > lo ? (float)(hi - lo) : 0.0f;
                ix[t] = clampi((int)k0 + t - first, 0, src_n - 1);
                sum += w[t];
            }
        } else {
            double c = x0 + (o + 0.5) * s - 0.5, k0 = floor(c), f = c - k0;
            w[0] = (float)(1 - f);
            w[1] = (float)f;
            ix[0] = clampi((int)k0 - first, 0, src_n - 1);
            ix[1] = clampi((int)k0 + 1 - first, 0, src_n - 1);
            sum = (double)w[0] + w[1];
        }
        for (int t = 0; t < p->taps; t++) w[t] = sum > 0 ? (float)(w[t] / sum) : (float)(t == 0);
    }
    /* indices only grow along the axis, and are clamped */
    p->lo = p->index[0];
    p->hi = p->index[(size_t)p->n * p->taps - 1];
}

typedef struct passes {
    /* a source row s through the horizontal plan into r: dst_w x 3 floats,
     * interleaved, mirrored when flip; scratch holds (hi - lo + 1) x 3 + 1
     * floats */
    void (*row)(const uint8_t *s, const axis_plan *px, int flip, float *r, float *scratch);
    /* acc (n floats) = sum over t of rows[t] * w[t] / 255 */
    void (*combine)(const float *const *rows, const float *w, int taps, size_t n, float *acc);
} passes;

static void row_ref(const uint8_t *s, const axis_plan *px, int flip, float *r, float *scratch) {
    (void)scratch;
    for (int o = 0; o < px->n; o++) {
        const int *ix = px->index + (size_t)o * px->taps;
        const float *w = px->w + (size_t)o * px->taps;
        float a = 0, b = 0, c = 0;
        for (int t = 0; t < px->taps; t++) {
            const uint8_t *p = s + (size_t)ix[t] * 3;
            a += w[t] * p[0];
            b += w[t] * p[1];
            c += w[t] * p[2];
        }
        float *d = r + (size_t)(flip ? px->n - 1 - o : o) * 3;
        d[0] = a;
        d[1] = b;
        d[2] = c;
    }
}

static void combine_ref(const float *const *rows, const float *w, int taps, size_t n, float *acc) {
    memset(acc, 0, n * sizeof(float));
    for (int t = 0; t < taps; t++) {
        const float *r = rows[t];
        const float wt = w[t] * (1.0f / 255.0f);
        for (size_t j = 0; j < n; j++) acc[j] += wt * r[j];
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* The row's pixels become floats first, eight bytes at a time, into
 * scratch; then each tap is one load of a pixel's R, G, B (and the next
 * value, ignored) and a multiply-add in the low lanes. */
__attribute__((target("avx2"))) static void row_avx2(const uint8_t *s, const axis_plan *px, int flip, float *r,
                                                      float *scratch) {
    const int lo = px->lo, n = (px->hi - px->lo + 1) * 3;
    const uint8_t *src = s + (size_t)lo * 3;
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m128i b = _mm_loadl_epi64((const __m128i *)(src + j));
        _mm256_storeu_ps(scratch + j, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)));
    }
    for (; j < n; j++) scratch[j] = src[j];
    scratch[n] = 0; /* read with the last pixel, never used */
    for (int o = 0; o < px->n; o++) {
        const int *ix = px->index + (size_t)o * px->taps;
        const float *w = px->w + (size_t)o * px->taps;
        __m128 acc = _mm_setzero_ps();
        for (int t = 0; t < px->taps; t++)
            acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(w[t]), _mm_loadu_ps(scratch + (size_t)(ix[t] - lo) * 3)));
        float *d = r + (size_t)(flip ? px->n - 1 - o : o) * 3;
        _mm_storel_pi((__m64 *)d, acc);
        _mm_store_ss(d + 2, _mm_movehl_ps(acc, acc));
    }
}

__attribute__((target("avx2"))) static void combine_avx2(const float *const *rows, const float *w, int taps,
                                                          size_t n, float *acc) {
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 a = _mm256_setzero_ps();
        for (int t = 0; t < taps; t++)
            a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_set1_ps(w[t] * (1.0f / 255.0f)), _mm256_loadu_ps(rows[t] + j)));
        _mm256_storeu_ps(acc + j, a);
    }
    for (; j < n; j++) {
        float a = 0;
        for (int t = 0; t < taps; t++) a += w[t] * (1.0f / 255.0f) * rows[t][j];
        acc[j] = a;
    }
}

static const passes AVX2 = {row_avx2, combine_avx2};
#endif

static const passes REF = {row_ref, combine_ref};

static const passes *passes_for(osp__resample_isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (isa == OSP__RESAMPLE_AUTO && __builtin_cpu_supports("avx2")) return &AVX2;
#endif
    (void)isa;
    return &REF;
}

int osp__image_resample_isa(const osp_image *img, int img_x, int img_y, osp_rect src, int flip, int channels,
                            float *out, int out_h, int out_w, int dst_x, int dst_y, int dst_w, int dst_h,
                            osp__resample_isa isa) {
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0 || !out)
        return osp_error(OSP_EINVAL, "osp_image_resample: empty image or output");
    if (channels != 1 && channels != 3)
        return osp_error(OSP_EINVAL, "osp_image_resample: %d channels (1 or 3 are possible)", channels);
    if (!(src.w > 0) || !(src.h > 0) || !isfinite(src.x) || !isfinite(src.y) || !isfinite(src.w) ||
        !isfinite(src.h))
        return osp_error(OSP_EINVAL, "osp_image_resample: empty or invalid source rectangle");
    /* a pixel of slack for rounding in the caller's arithmetic */
    const double left = (double)src.x - img_x, top = (double)src.y - img_y;
    if (left < -1 || top < -1 || left + src.w > img->width + 1.0 || top + src.h > img->height + 1.0)
        return osp_error(OSP_EINVAL, "osp_image_resample: source rectangle outside the image");
    if (dst_w <= 0 || dst_h <= 0 || dst_x < 0 || dst_y < 0 || dst_x > out_w - dst_w ||
        dst_y > out_h - dst_h)
        return osp_error(OSP_EINVAL, "osp_image_resample: destination outside the output");
    const passes *ps = passes_for(isa);
    axis_plan px = {.n = dst_w, .taps = taps_for(src.w, dst_w)};
    axis_plan py = {.n = dst_h, .taps = taps_for(src.h, dst_h)};
    size_t nx = (size_t)px.n * px.taps, ny = (size_t)py.n * py.taps;
    const size_t row_len = (size_t)dst_w * 3;
    /* One block: both plans, the ring of horizontal rows (which source row
     * each slot holds, the rows themselves), the accumulator, and the
     * scratch of a source row as floats. */
    const size_t plans = ((nx + ny) * (sizeof(int) + sizeof(float)) + 7) / 8 * 8; /* the pointers' alignment */
    size_t head = plans + (size_t)py.taps * (sizeof(float *) + sizeof(int));
    head = (head + 63) / 64 * 64;
    size_t row_bytes = (row_len * sizeof(float) + 63) / 64 * 64;
    size_t scratch_bytes = ((size_t)img->width * 3 + 1) * sizeof(float);
    unsigned char *block = osp_alloc(head + ((size_t)py.taps + 1) * row_bytes + scratch_bytes);
    if (!block) return OSP_ENOMEM;
    px.index = (int *)block;
    py.index = px.index + nx;
    px.w = (float *)(py.index + ny);
    py.w = px.w + nx;
    const float **rows = (const float **)(block + plans);
    int *held = (int *)(rows + py.taps);
    float *ring = (float *)(block + head), *acc = (float *)(block + head + (size_t)py.taps * row_bytes);
    float *scratch = acc + row_bytes / sizeof(float);
    plan_axis(&px, src.x, src.w, img_x, img->width);
    plan_axis(&py, src.y, src.h, img_y, img->height);
    for (int k = 0; k < py.taps; k++) held[k] = -1;

    const size_t plane = (size_t)out_h * out_w;
    for (int o = 0; o < dst_h; o++) {
        const int *iy = py.index + (size_t)o * py.taps;
        for (int t = 0; t < py.taps; t++) {
            /* the rows of one output lie within taps consecutive ones, so
             * they never share a slot */
            const int y = iy[t], k = y % py.taps;
            float *r = (float *)((unsigned char *)ring + (size_t)k * row_bytes);
            if (held[k] != y) {
                ps->row(img->pixels + (size_t)y * img->width * 3, &px, flip, r, scratch);
                held[k] = y;
            }
            rows[t] = r;
        }
        ps->combine(rows, py.w + (size_t)o * py.taps, py.taps, row_len, acc);
        float *d = out + (size_t)(dst_y + o) * out_w + dst_x;
        if (channels == 3) {
            for (int x = 0; x < dst_w; x++) {
                d[x] = at_most_1(acc[3 * x]);
                d[plane + x] = at_most_1(acc[3 * x + 1]);
                d[2 * plane + x] = at_most_1(acc[3 * x + 2]);
            }
        } else {
            for (int x = 0; x < dst_w; x++)
                d[x] = at_most_1(0.299f * acc[3 * x] + 0.587f * acc[3 * x + 1] + 0.114f * acc[3 * x + 2]);
        }
    }
    osp_free(block);
    return OSP_OK;
}

int osp_image_resample(const osp_image *img, osp_rect src, int flip, int channels, float *out,
                       int out_h, int out_w, int dst_x, int dst_y, int dst_w, int dst_h) {
    return osp__image_resample_isa(img, 0, 0, src, flip, channels, out, out_h, out_w, dst_x, dst_y, dst_w, dst_h,
                                   OSP__RESAMPLE_AUTO);
}
