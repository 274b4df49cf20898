/* .fvecs / .ivecs / .bvecs: reading by extension, and refusal of files whose
 * records disagree or do not fill the file. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/io.h"

#include "tmpdir.h"

/* n records of dimension d with element (i, j) = i + j/8 (F32), i*1000 - j
 * (I32) or i*10 + j (U8). Returns the length. */
static size_t make_vecs(unsigned char *out, int n, int32_t d, osp_dtype t) {
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        memcpy(out + at, &d, 4);
        at += 4;
        for (int j = 0; j < d; j++) {
            float f = (float)i + (float)j / 8;
            int32_t v = i * 1000 - j;
            if (t == OSP_DTYPE_U8)
                out[at] = (unsigned char)(i * 10 + j);
            else
                memcpy(out + at, t == OSP_DTYPE_F32 ? (void *)&f : (void *)&v, 4);
            at += osp_dtype_size(t);
        }
    }
    return at;
}

static void expect_refused(const unsigned char *buf, size_t len, osp_dtype t, int code,
                           const char *words) {
    osp_array a;
    int rc = osp_vecs_parse(buf, len, "bad.fvecs", t, &a);
    cr_assert_eq(rc, code, "got %s (%s)", osp_err_name(rc), osp_last_error());
    cr_assert_null(a.data);
    cr_assert_not_null(strstr(osp_last_error(), "bad.fvecs"), "%s", osp_last_error());
    cr_assert_not_null(strstr(osp_last_error(), words), "'%s' lacks '%s'", osp_last_error(), words);
}

TestSuite(vecs, .init = tmpdir_make, .fini = tmpdir_remove);

Test(vecs, reads_fvecs) {
    unsigned char buf[1024];
    size_t len = make_vecs(buf, 3, 5, OSP_DTYPE_F32);
    tmpdir_write(tmpdir_path("x.fvecs"), buf, len);
    osp_array a;
    cr_assert_eq(osp_vecs_read(tmpdir_path("x.fvecs"), &a), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(a.dtype, OSP_DTYPE_F32);
    cr_assert_eq(a.shape.ndim, 2);
    cr_assert_eq(a.shape.dim[0], 3);
    cr_assert_eq(a.shape.dim[1], 5);
    const float *f = a.data;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) cr_assert_eq(f[i * 5 + j], (float)i + (float)j / 8);
    osp_array_free(&a);
}

Test(vecs, reads_ivecs_and_bvecs) {
    unsigned char buf[1024];
    size_t len = make_vecs(buf, 4, 2, OSP_DTYPE_I32);
    tmpdir_write(tmpdir_path("gt.ivecs"), buf, len);
    osp_array a;
    cr_assert_eq(osp_vecs_read(tmpdir_path("gt.ivecs"), &a), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(a.dtype, OSP_DTYPE_I32);
    cr_assert_eq(a.shape.dim[0], 4);
    cr_assert_eq(((int32_t *)a.data)[7], 3 * 1000 - 1);
    osp_array_free(&a);

    len = make_vecs(buf, 6, 7, OSP_DTYPE_U8);
    tmpdir_write(tmpdir_path("b.bvecs"), buf, len);
    cr_assert_eq(osp_vecs_read(tmpdir_path("b.bvecs"), &a), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(a.dtype, OSP_DTYPE_U8);
    cr_assert_eq(a.shape.dim[0], 6);
    cr_assert_eq(a.shape.dim[1], 7);
    cr_assert_eq(((uint8_t *)a.data)[5 * 7 + 6], 56);
    osp_array_free(&a);
}

Test(vecs, refuses_bad_dimensions_and_lengths) {
    unsigned char buf[1024];
    size_t len = make_vecs(buf, 3, 4, OSP_DTYPE_F32);
    expect_refused(buf, 0, OSP_DTYPE_F32, OSP_EFORMAT, "too short");
    expect_refused(buf, 3, OSP_DTYPE_F32, OSP_EFORMAT, "too short");
    expect_refused(buf, len - 1, OSP_DTYPE_F32, OSP_EFORMAT, "not a multiple");
    expect_refused(buf, len + 0, OSP_DTYPE_U8, OSP_EFORMAT, "not a multiple");
    expect_refused(buf, len, OSP_DTYPE_F64, OSP_EINVAL, "F64");

    unsigned char bad[64];
    memcpy(bad, buf, len);
    int32_t other = 3;
    memcpy(bad + 20, &other, 4); /* second record says d = 3 */
    expect_refused(bad, len, OSP_DTYPE_F32, OSP_EFORMAT, "record 1 has dimension 3");

    int32_t zero = 0, huge = (1 << 20) + 1, negative = -4;
    memcpy(bad, &zero, 4);
    expect_refused(bad, len, OSP_DTYPE_F32, OSP_EFORMAT, "outside");
    memcpy(bad, &huge, 4);
    expect_refused(bad, len, OSP_DTYPE_F32, OSP_EFORMAT, "outside");
    memcpy(bad, &negative, 4);
    expect_refused(bad, len, OSP_DTYPE_F32, OSP_EFORMAT, "outside");
}

Test(vecs, every_truncation_is_refused) {
    unsigned char buf[256];
    size_t len = make_vecs(buf, 4, 3, OSP_DTYPE_F32);
    for (size_t k = 0; k < len; k++) {
        osp_array a;
        int rc = osp_vecs_parse(buf, k, "cut.fvecs", OSP_DTYPE_F32, &a);
        /* whole records are a valid shorter file */
        if (k > 0 && k % 16 == 0) {
            cr_assert_eq(rc, OSP_OK);
            cr_assert_eq(a.shape.dim[0], (int64_t)(k / 16));
            osp_array_free(&a);
        } else {
            cr_assert_eq(rc, OSP_EFORMAT, "length %zu", k);
            cr_assert_null(a.data);
        }
    }
}

Test(vecs, file_errors) {
    osp_array a;
    cr_assert_eq(osp_vecs_read(tmpdir_path("x.txt"), &a), OSP_EINVAL);
    cr_assert_not_null(strstr(osp_last_error(), "x.txt"));
    cr_assert_eq(osp_vecs_read(tmpdir_path("absent.fvecs"), &a), OSP_ENOENT);
    cr_assert_not_null(strstr(osp_last_error(), "absent.fvecs"));
    tmpdir_write(tmpdir_path("empty.fvecs"), "", 0);
    cr_assert_eq(osp_vecs_read(tmpdir_path("empty.fvecs"), &a), OSP_EFORMAT);
    cr_assert_not_null(strstr(osp_last_error(), "empty.fvecs"));
}
