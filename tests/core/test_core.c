/* Core: errors, allocation, shapes, tensors, RNG. */
#include <criterion/criterion.h>
#include <string.h>

#include "osprey/core.h"

Test(error, message_and_code) {
    int rc = osp_error(OSP_EFORMAT, "%s: bad magic at byte %d", "x.idx", 4);
    cr_assert_eq(rc, OSP_EFORMAT);
    cr_assert_str_eq(osp_last_error(), "x.idx: bad magic at byte 4");
    cr_assert_str_eq(osp_err_name(OSP_ENOMEM), "OSP_ENOMEM");
    cr_assert_str_eq(osp_strerror(OSP_ENOMEM), "out of memory");
    osp_error_clear();
    cr_assert_str_eq(osp_last_error(), "");
}

Test(alloc, aligned_and_overflow_checked) {
    float *p = osp_alloc(100);
    cr_assert_not_null(p);
    cr_assert_eq((uintptr_t)p % OSP_ALIGN, 0);
    osp_free(p);
    cr_assert_null(osp_calloc(SIZE_MAX / 2, 4));
    cr_assert_eq(osp_mul_size(SIZE_MAX, 2, &(size_t){0}), OSP_ERANGE);
}

/* Blocks of 2 MiB and more start on a huge page (alloc.c), whole and
 * zeroed by osp_calloc. */
Test(alloc, large_blocks_on_huge_pages) {
    const size_t bytes = ((size_t)3 << 20) + 5;
    unsigned char *p = osp_calloc(bytes, 1);
    cr_assert_not_null(p);
    cr_assert_eq((uintptr_t)p % ((size_t)2 << 20), 0);
    for (size_t i = 0; i < bytes; i += 4096) cr_assert_eq(p[i], 0);
    cr_assert_eq(p[bytes - 1], 0);
    memset(p, 0xab, bytes);
    osp_free(p);
}

Test(tensor, new_wrap_free) {
    osp_shape s = osp_shape4(2, 3, 4, 5);
    osp_tensor *t;
    cr_assert_eq(osp_tensor_new(&s, &t), 0);
    cr_assert_eq(t->numel, 120);
    for (int i = 0; i < 120; i++) cr_assert_eq(t->data[i], 0.0f);
    char buf[64];
    osp_shape_format(&s, buf, sizeof buf);
    cr_assert_str_eq(buf, "2x3x4x5");
    osp_tensor_free(t);
    int64_t bad[2] = {-1, 3};
    osp_shape b = osp_shape_make(2, bad);
    cr_assert_eq(osp_tensor_new(&b, &t), OSP_ERANGE);
    cr_assert_null(t);
}

Test(rng, reproducible_and_restorable) {
    osp_rng a, b;
    osp_rng_seed(&a, 42);
    osp_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) cr_assert_eq(osp_rng_u64(&a), osp_rng_u64(&b));
    osp_rng saved = a;
    uint64_t next = osp_rng_u64(&a);
    cr_assert_eq(osp_rng_u64(&saved), next);
    osp_rng_derive(&a, 1, 2, 3);
    osp_rng_derive(&b, 1, 2, 4);
    cr_assert_neq(osp_rng_u64(&a), osp_rng_u64(&b));
}

Test(rng, distributions) {
    osp_rng r;
    osp_rng_seed(&r, 7);
    double sum = 0, sq = 0;
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        float u = osp_rng_uniform(&r);
        cr_assert(u >= 0.0f && u < 1.0f);
        float z = osp_rng_normal(&r);
        sum += z;
        sq += (double)z * z;
    }
    cr_assert_lt(sum / n < 0 ? -sum / n : sum / n, 0.02);
    cr_assert_lt(sq / n > 1 ? sq / n - 1 : 1 - sq / n, 0.03);
    int64_t idx[50];
    int seen[50] = {0};
    for (int i = 0; i < 50; i++) idx[i] = i;
    osp_rng_shuffle(&r, idx, 50);
    for (int i = 0; i < 50; i++) seen[idx[i]]++;
    for (int i = 0; i < 50; i++) cr_assert_eq(seen[i], 1);
}

Test(error, wraps_its_own_message) {
    osp_error(OSP_EIO, "disk full");
    osp_error(OSP_EIO, "saving checkpoint: %s", osp_last_error());
    cr_assert_str_eq(osp_last_error(), "saving checkpoint: disk full");
}

/* Half precision: every binary16 value survives the round trip through
 * float, and rounding is to nearest, ties to even. */
Test(half, round_trip_and_rounding) {
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t in = (uint16_t)h, out;
        float f;
        osp_float_from_half(&in, &f, 1);
        osp_half_from_float(&f, &out, 1);
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) cr_assert(f != f && (out & 0x7c00u) == 0x7c00u && (out & 0x3ffu));
        else cr_assert_eq(out, in, "half 0x%04x -> %g -> 0x%04x", h, (double)f, out);
    }
    const float v[] = {65504.0f, 65519.0f, 65520.0f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048,
                       5.9604645e-8f, 2.9802322e-8f, 2.9802326e-8f, -0.0f, 1e10f};
    const uint16_t want[] = {0x7bff, 0x7bff, 0x7c00, 0x3c00, 0x3c02, 0x0001, 0x0000, 0x0001, 0x8000, 0x7c00};
    uint16_t got[10];
    osp_half_from_float(v, got, 10);
    for (int i = 0; i < 10; i++) cr_assert_eq(got[i], want[i], "%g -> 0x%04x, want 0x%04x", (double)v[i], got[i], want[i]);
}
