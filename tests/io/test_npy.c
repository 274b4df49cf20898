/* .npy: round trips, the exact header NumPy expects, and refusal of every
 * kind of bad header or size. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/io.h"

#include "tmpdir.h"

/* A .npy image: magic, version 1.0, the dict padded to 64 bytes, data. */
static size_t make_npy(unsigned char *out, const char *dict, const void *data, size_t len) {
    size_t dict_len = strlen(dict);
    size_t total = (10 + dict_len + 1 + 63) / 64 * 64;
    memcpy(out, "\x93NUMPY\x01\x00", 8);
    size_t header_len = total - 10;
    out[8] = (unsigned char)(header_len & 0xff);
    out[9] = (unsigned char)(header_len >> 8);
    memcpy(out + 10, dict, dict_len);
    memset(out + 10 + dict_len, ' ', total - 10 - dict_len);
    out[total - 1] = '\n';
    if (len) memcpy(out + total, data, len);
    return total + len;
}

static void expect_refused(const unsigned char *buf, size_t len, int code, const char *words) {
    osp_array a;
    int rc = osp_npy_parse(buf, len, "bad.npy", &a);
    cr_assert_eq(rc, code, "got %s (%s), expected %s", osp_err_name(rc), osp_last_error(),
                 osp_err_name(code));
    cr_assert_null(a.data);
    cr_assert_not_null(strstr(osp_last_error(), "bad.npy"), "%s", osp_last_error());
    cr_assert_not_null(strstr(osp_last_error(), words), "'%s' lacks '%s'", osp_last_error(), words);
}

TestSuite(npy, .init = tmpdir_make, .fini = tmpdir_remove);

Test(npy, round_trip_every_dtype) {
    float f[6] = {1.5f, -2, 3, 4, 5e30f, -0.0f};
    double d[3] = {1e300, -1, 0.25};
    int32_t i4[1] = {-7};
    int64_t i8[1] = {0};
    uint8_t u1[24];
    for (int i = 0; i < 24; i++) u1[i] = (uint8_t)(i * 11);
    struct {
        osp_dtype dtype;
        int ndim;
        int64_t dim[3];
        void *data;
    } cases[] = {
        {OSP_DTYPE_F32, 2, {2, 3}, f},    {OSP_DTYPE_F64, 1, {3}, d},
        {OSP_DTYPE_I32, 0, {0}, i4},      {OSP_DTYPE_I64, 2, {4, 0}, i8},
        {OSP_DTYPE_U8, 3, {2, 3, 4}, u1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        osp_array a = {cases[c].dtype, osp_shape_make(cases[c].ndim, cases[c].dim), cases[c].data};
        const char *path = tmpdir_path("a.npy");
        cr_assert_eq(osp_npy_write(path, &a), OSP_OK, "%s", osp_last_error());
        osp_array b;
        cr_assert_eq(osp_npy_read(path, &b), OSP_OK, "%s", osp_last_error());
        cr_assert_eq(b.dtype, a.dtype);
        cr_assert(osp_shape_equal(&a.shape, &b.shape));
        size_t bytes = (size_t)osp_array_numel(&b) * osp_dtype_size(b.dtype);
        cr_assert_eq(memcmp(a.data, b.data, bytes), 0);
        osp_array_free(&b);
        cr_assert_null(b.data);
    }
}

Test(npy, header_is_what_numpy_writes) {
    float v[6] = {0};
    osp_shape s = osp_shape_make(2, (int64_t[]){2, 3});
    const char *path = tmpdir_path("h.npy");
    cr_assert_eq(osp_npy_write_f32(path, v, &s), OSP_OK);
    void *buf;
    size_t len;
    cr_assert_eq(osp_file_read_all(path, 1 << 20, &buf, &len), OSP_OK);
    const unsigned char *b = buf;
    cr_assert_eq(len, 128 + 24);
    cr_assert_eq(memcmp(b, "\x93NUMPY\x01\x00", 8), 0);
    size_t header_len = b[8] | b[9] << 8;
    cr_assert_eq((10 + header_len) % 64, 0);
    cr_assert_eq(b[10 + header_len - 1], '\n');
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    cr_assert_eq(memcmp(b + 10, dict, strlen(dict)), 0);
    osp_free(buf);

    osp_shape one = osp_shape_make(1, (int64_t[]){5});
    cr_assert_eq(osp_npy_write_f32(path, (float[5]){0}, &one), OSP_OK);
    cr_assert_eq(osp_file_read_all(path, 1 << 20, &buf, &len), OSP_OK);
    cr_assert_eq(memcmp((char *)buf + 10 + 41, "'shape': (5,), }", 16), 0);
    osp_free(buf);
}

Test(npy, accepts_other_spellings) {
    unsigned char buf[256];
    float v[2] = {1, 2};
    const char *dicts[] = {
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
        "{\"shape\": (2,), \"descr\": \"<f4\", \"fortran_order\": False}",
        "{'descr':'<f4','fortran_order':False,'shape':(1,2)}",
    };
    for (int i = 0; i < 3; i++) {
        size_t len = make_npy(buf, dicts[i], v, sizeof v);
        osp_array a;
        cr_assert_eq(osp_npy_parse(buf, len, "ok.npy", &a), OSP_OK, "%s: %s", dicts[i],
                     osp_last_error());
        cr_assert_eq(osp_array_numel(&a), 2);
        cr_assert_eq(((float *)a.data)[1], 2.0f);
        osp_array_free(&a);
    }
    /* Version 2.0: a 4-byte header length. */
    size_t len = make_npy(buf + 2, dicts[0], v, sizeof v);
    memcpy(buf, "\x93NUMPY\x02\x00", 8);
    size_t header_len = len - 10 - sizeof v;
    buf[8] = (unsigned char)header_len;
    buf[9] = buf[10] = buf[11] = 0;
    osp_array a;
    cr_assert_eq(osp_npy_parse(buf, len + 2, "v2.npy", &a), OSP_OK, "%s", osp_last_error());
    osp_array_free(&a);
}

Test(npy, refuses_bad_headers) {
    unsigned char buf[512];
    float v[4] = {0};
    struct {
        const char *dict;
        size_t data;
        int code;
        const char *words;
    } cases[] = {
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (4,), }", 16, OSP_ENOTSUP, "Fortran"},
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }", 16, OSP_ENOTSUP,
         "big-endian"},
        {"{'descr': '<u2', 'fortran_order': False, 'shape': (4,), }", 8, OSP_ENOTSUP, "dtype"},
        {"{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", 16, OSP_ENOTSUP, "dtype"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,), }", 16, OSP_EFORMAT,
         "header"},
        {"{'fortran_order': False, 'shape': (4,), }", 16, OSP_EFORMAT, "missing"},
        {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4,)}", 16,
         OSP_EFORMAT, "repeated"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}", 16, OSP_EFORMAT,
         "unexpected"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,)} junk", 16, OSP_EFORMAT,
         "after"},
        {"{'descr': '<f4', 'fortran_order': 0, 'shape': (4,)}", 16, OSP_EFORMAT, "fortran"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-4,)}", 16, OSP_EFORMAT, "shape"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': 4}", 16, OSP_EFORMAT, "tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4 4)}", 16, OSP_EFORMAT, "tuple"},
        {"{'descr': '<f4, 'fortran_order': False, 'shape': (4,)}", 16, OSP_EFORMAT, "header"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,4)}", 16,
         OSP_ENOTSUP, "dimensions"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", 16,
         OSP_ERANGE, "too large"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", 16,
         OSP_ERANGE, "overflow"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,)}", 12, OSP_EFORMAT,
         "expected 16"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}", 16, OSP_EFORMAT,
         "expected 12"},
        {"[1, 2]", 16, OSP_EFORMAT, "not a dict"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = make_npy(buf, cases[i].dict, v, cases[i].data);
        expect_refused(buf, len, cases[i].code, cases[i].words);
    }
}

Test(npy, refuses_bad_preambles) {
    unsigned char buf[256];
    float v[2] = {0};
    size_t len = make_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", v, 8);
    expect_refused(buf, 0, OSP_EFORMAT, "magic");
    buf[1] = 'n';
    expect_refused(buf, len, OSP_EFORMAT, "magic");
    buf[1] = 'N';
    buf[6] = 4;
    expect_refused(buf, len, OSP_ENOTSUP, "version");
    buf[6] = 1;
    buf[8] = 0xff;
    buf[9] = 0xff; /* header length past the end */
    expect_refused(buf, len, OSP_EFORMAT, "past the end");
    buf[6] = 2;
    buf[10] = 0xff;
    buf[11] = 0x7f; /* a 2 GB header in a version 2 file */
    expect_refused(buf, len, OSP_EFORMAT, "past the end");
}

Test(npy, every_truncation_is_refused) {
    unsigned char buf[256];
    float v[5] = {1, 2, 3, 4, 5};
    size_t len = make_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (5,)}", v, 20);
    for (size_t k = 0; k < len; k++) {
        osp_array a;
        cr_assert_neq(osp_npy_parse(buf, k, "cut.npy", &a), OSP_OK, "length %zu", k);
        cr_assert_null(a.data);
        cr_assert_not_null(strstr(osp_last_error(), "cut.npy"));
    }
    osp_array a;
    cr_assert_eq(osp_npy_parse(buf, len, "whole.npy", &a), OSP_OK);
    osp_array_free(&a);
}

Test(npy, write_errors) {
    float v[2] = {0};
    osp_shape bad = osp_shape_make(1, (int64_t[]){-2});
    cr_assert_eq(osp_npy_write_f32(tmpdir_path("neg.npy"), v, &bad), OSP_ERANGE);
    osp_shape s = osp_shape_make(1, (int64_t[]){2});
    cr_assert_eq(osp_npy_write_f32(tmpdir_path("null.npy"), NULL, &s), OSP_EINVAL);
    cr_assert_eq(osp_npy_write_f32(tmpdir_path("no/such/dir.npy"), v, &s), OSP_ENOENT);
    cr_assert_not_null(strstr(osp_last_error(), "no/such/dir.npy"));
    osp_array a = {(osp_dtype)42, s, v};
    cr_assert_eq(osp_npy_write(tmpdir_path("dtype.npy"), &a), OSP_EINVAL);
    osp_array out;
    cr_assert_eq(osp_npy_read(tmpdir_path("absent.npy"), &out), OSP_ENOENT);
    cr_assert_not_null(strstr(osp_last_error(), "absent.npy"));
}

/* NumPy reads what we write and we read what it writes, where NumPy is. */
Test(npy, numpy_interop) {
    if (system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0)
        cr_skip_test("no python3-numpy");
    float v[6] = {1, 2, 3, 4, 5, 6.5f};
    osp_shape s = osp_shape_make(2, (int64_t[]){3, 2});
    char ours[512], theirs[512], cmd[2048];
    strcpy(ours, tmpdir_path("ours.npy"));
    strcpy(theirs, tmpdir_path("theirs.npy"));
    cr_assert_eq(osp_npy_write_f32(ours, v, &s), OSP_OK);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import numpy as np; a = np.load('%s'); "
             "assert a.dtype == np.float32 and a.shape == (3, 2) and a[2, 1] == 6.5; "
             "np.save('%s', np.arange(12, dtype=np.int64).reshape(3, 4))\"",
             ours, theirs);
    cr_assert_eq(system(cmd), 0);
    osp_array a;
    cr_assert_eq(osp_npy_read(theirs, &a), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(a.dtype, OSP_DTYPE_I64);
    cr_assert_eq(a.shape.ndim, 2);
    cr_assert_eq(((int64_t *)a.data)[11], 11);
    osp_array_free(&a);
}

/* Any number type becomes float32, in place, as 'osprey run' and 'osprey
 * index' read their arrays. */
Test(npy, array_to_f32) {
    const double f64[4] = {0.5, -2.25, 1e10, 3.0};
    const int32_t i32[4] = {-7, 0, 65536, 2};
    const int64_t i64[4] = {-1, 1, 1 << 20, 5};
    const uint8_t u8[4] = {0, 1, 200, 255};
    const uint16_t f16[4] = {0x3c00, 0xc000, 0x3800, 0x0000}; /* 1, -2, 0.5, 0 */
    const float want[5][4] = {{0.5f, -2.25f, 1e10f, 3.0f},
                              {-7, 0, 65536, 2},
                              {-1, 1, 1 << 20, 5},
                              {0, 1, 200, 255},
                              {1, -2, 0.5f, 0}};
    const struct {
        osp_dtype dtype;
        const void *data;
        size_t size;
    } in[5] = {{OSP_DTYPE_F64, f64, 8}, {OSP_DTYPE_I32, i32, 4}, {OSP_DTYPE_I64, i64, 8},
               {OSP_DTYPE_U8, u8, 1},   {OSP_DTYPE_F16, f16, 2}};
    for (int t = 0; t < 5; t++) {
        osp_array a = {.dtype = in[t].dtype};
        a.shape.ndim = 2;
        a.shape.dim[0] = 2;
        a.shape.dim[1] = 2;
        a.data = osp_alloc(4 * in[t].size);
        memcpy(a.data, in[t].data, 4 * in[t].size);
        cr_assert_eq(osp_array_to_f32(&a), OSP_OK, "%s", osp_last_error());
        cr_assert_eq(a.dtype, OSP_DTYPE_F32);
        cr_assert_eq(a.shape.ndim, 2);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(((float *)a.data)[i], want[t][i], "dtype %d, element %d", (int)in[t].dtype, i);
        float *same = a.data;
        cr_assert_eq(osp_array_to_f32(&a), OSP_OK); /* float32 stays as it is */
        cr_assert_eq(a.data, same);
        osp_array_free(&a);
    }
    osp_array bad = {.dtype = (osp_dtype)99};
    cr_assert_eq(osp_array_to_f32(&bad), OSP_EINVAL);
}
