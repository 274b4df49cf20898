/* safetensors: writer/reader round trips, the layout other readers expect,
 * and refusal of hostile headers. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/io.h"

#include "tmpdir.h"

/* A file image: 8-byte length, json, then data_len bytes 0, 1, 2, ... */
static size_t make_st(unsigned char *out, const char *json, size_t data_len) {
    uint64_t n = strlen(json);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(n >> (8 * i));
    memcpy(out + 8, json, n);
    for (size_t i = 0; i < data_len; i++) out[8 + n + i] = (unsigned char)i;
    return 8 + n + data_len;
}

static void expect_refused(const char *json, size_t data_len, int code, const char *words) {
    static unsigned char buf[4096];
    size_t len = make_st(buf, json, data_len);
    osp_safetensors *st = (osp_safetensors *)1;
    int rc = osp_st_parse(buf, len, "bad.safetensors", &st);
    cr_assert_eq(rc, code, "%s: got %s (%s)", json, osp_err_name(rc), osp_last_error());
    cr_assert_null(st);
    cr_assert_not_null(strstr(osp_last_error(), "bad.safetensors"), "%s", osp_last_error());
    cr_assert_not_null(strstr(osp_last_error(), words), "'%s' lacks '%s'", osp_last_error(), words);
}

/* One tensor's header entry. */
#define T(dtype, shape, offsets) \
    "{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offsets "}"

TestSuite(safetensors, .init = tmpdir_make, .fini = tmpdir_remove);

Test(safetensors, round_trip_in_add_order) {
    float w[6] = {1, 2, 3, 4, 5, 6};
    int64_t steps[4] = {1, -2, 1LL << 40, 4};
    uint8_t flag = 7;
    double none[1];
    int32_t ids[3] = {-1, 0, 1};
    osp_st_writer *wr;
    cr_assert_eq(osp_st_writer_new(&wr), 0);
    cr_assert_eq(osp_st_writer_add(wr, "conv1.weight", OSP_DTYPE_F32,
                                   &(osp_shape){2, {2, 3}}, w), OSP_OK);
    cr_assert_eq(osp_st_writer_add(wr, "step", OSP_DTYPE_I64, &(osp_shape){1, {4}}, steps), OSP_OK);
    cr_assert_eq(osp_st_writer_add(wr, "flag", OSP_DTYPE_U8, &(osp_shape){0, {0}}, &flag), OSP_OK);
    cr_assert_eq(osp_st_writer_add(wr, "empty", OSP_DTYPE_F64, &(osp_shape){2, {0, 5}}, none),
                 OSP_OK);
    cr_assert_eq(osp_st_writer_add(wr, "a.ids", OSP_DTYPE_I32, &(osp_shape){1, {3}}, ids), OSP_OK);
    cr_assert_eq(osp_st_writer_meta(wr, "spec", "old"), OSP_OK);
    cr_assert_eq(osp_st_writer_meta(wr, "labels", "cat\ndog \"quoted\" \xc3\xa9"), OSP_OK);
    cr_assert_eq(osp_st_writer_meta(wr, "spec", "[conv]\nfilters=6"), OSP_OK);
    cr_assert_eq(osp_st_writer_save(wr, tmpdir_path("m.safetensors")), OSP_OK, "%s", osp_last_error());
    osp_st_writer_free(wr);

    osp_safetensors *st;
    cr_assert_eq(osp_st_load(tmpdir_path("m.safetensors"), &st), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(osp_st_count(st), 5);
    const char *order[] = {"conv1.weight", "step", "flag", "empty", "a.ids"};
    for (int i = 0; i < 5; i++) cr_assert_str_eq(osp_st_get(st, i)->name, order[i]);
    cr_assert_null(osp_st_get(st, 5));
    cr_assert_null(osp_st_get(st, -1));

    const osp_st_tensor *t = osp_st_find(st, "conv1.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->dtype, OSP_DTYPE_F32);
    cr_assert_eq(t->shape.ndim, 2);
    cr_assert_eq(t->shape.dim[1], 3);
    cr_assert_eq(t->nbytes, sizeof w);
    cr_assert_eq(memcmp(t->data, w, sizeof w), 0);
    cr_assert_eq(((uintptr_t)t->data) % 8, 0, "data area is 8-byte aligned");
    t = osp_st_find(st, "step");
    cr_assert_eq(memcmp(t->data, steps, sizeof steps), 0);
    t = osp_st_find(st, "flag");
    cr_assert_eq(t->shape.ndim, 0);
    cr_assert_eq(*(const uint8_t *)t->data, 7);
    t = osp_st_find(st, "empty");
    cr_assert_eq(t->nbytes, 0);
    cr_assert_eq(t->shape.dim[0], 0);
    t = osp_st_find(st, "a.ids");
    cr_assert_eq(memcmp(t->data, ids, sizeof ids), 0);
    cr_assert_null(osp_st_find(st, "absent"));

    cr_assert_eq(osp_st_meta_count(st), 2);
    cr_assert_str_eq(osp_st_meta(st, "spec"), "[conv]\nfilters=6");
    cr_assert_str_eq(osp_st_meta(st, "labels"), "cat\ndog \"quoted\" \xc3\xa9");
    cr_assert_null(osp_st_meta(st, "nothing"));
    cr_assert_str_eq(osp_st_meta_key(st, 0), "labels");
    cr_assert_str_eq(osp_st_meta_key(st, 1), "spec");
    cr_assert_null(osp_st_meta_key(st, 2));
    osp_st_free(st);
}

Test(safetensors, layout_is_padded_and_consecutive) {
    float w[3] = {1, 2, 3};
    osp_st_writer *wr;
    cr_assert_eq(osp_st_writer_new(&wr), 0);
    osp_st_writer_add(wr, "x", OSP_DTYPE_F32, &(osp_shape){1, {3}}, w);
    osp_st_writer_add(wr, "y", OSP_DTYPE_F32, &(osp_shape){1, {2}}, w);
    cr_assert_eq(osp_st_writer_save(wr, tmpdir_path("l.safetensors")), OSP_OK);
    osp_st_writer_free(wr);
    void *buf;
    size_t len;
    cr_assert_eq(osp_file_read_all(tmpdir_path("l.safetensors"), 1 << 20, &buf, &len), OSP_OK);
    const unsigned char *b = buf;
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)b[i] << (8 * i);
    cr_assert_eq(n % 8, 0);
    cr_assert_eq(len, 8 + n + 20);
    cr_assert_eq(b[8], '{');
    cr_assert_eq(b[8 + n - 1], ' ');
    char json[256] = {0};
    memcpy(json, b + 8, n < 255 ? n : 255);
    cr_assert_not_null(strstr(json, "\"x\":" T("F32", "[3]", "[0,12]")), "%s", json);
    cr_assert_not_null(strstr(json, "\"y\":" T("F32", "[2]", "[12,20]")), "%s", json);
    osp_free(buf);

    /* An empty file is still a valid one. */
    cr_assert_eq(osp_st_writer_new(&wr), 0);
    cr_assert_eq(osp_st_writer_save(wr, tmpdir_path("e.safetensors")), OSP_OK);
    osp_st_writer_free(wr);
    osp_safetensors *st;
    cr_assert_eq(osp_st_load(tmpdir_path("e.safetensors"), &st), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(osp_st_count(st), 0);
    cr_assert_eq(osp_st_meta_count(st), 0);
    osp_st_free(st);
}

Test(safetensors, parse_copies_its_input) {
    unsigned char buf[256];
    size_t len = make_st(buf, "{\"t\":" T("U8", "[4]", "[0,4]") "}   ", 4);
    osp_safetensors *st;
    cr_assert_eq(osp_st_parse(buf, len, "mem", &st), OSP_OK, "%s", osp_last_error());
    memset(buf, 0xee, len);
    const osp_st_tensor *t = osp_st_find(st, "t");
    cr_assert_eq(((const uint8_t *)t->data)[3], 3);
    osp_st_free(st);
}

Test(safetensors, refuses_bad_lengths) {
    unsigned char buf[64] = {0};
    osp_safetensors *st;
    cr_assert_eq(osp_st_parse(buf, 7, "bad.safetensors", &st), OSP_EFORMAT);
    cr_assert_not_null(strstr(osp_last_error(), "too short"));
    size_t len = make_st(buf, "{}", 0);
    buf[0] = 3; /* longer than the file */
    cr_assert_eq(osp_st_parse(buf, len, "bad.safetensors", &st), OSP_EFORMAT);
    cr_assert_not_null(strstr(osp_last_error(), "exceeds the file size"));
    memset(buf, 0, 8);
    buf[4] = 1; /* 4 GiB: over the 100 MB limit */
    cr_assert_eq(osp_st_parse(buf, len, "bad.safetensors", &st), OSP_EFORMAT);
    cr_assert_not_null(strstr(osp_last_error(), "over the limit"));
    memset(buf, 0xff, 8);
    cr_assert_eq(osp_st_parse(buf, len, "bad.safetensors", &st), OSP_EFORMAT);
    cr_assert_null(st);
}

Test(safetensors, refuses_bad_headers) {
    expect_refused("{\"a\":", 0, OSP_EFORMAT, "not valid JSON");
    expect_refused("[1,2]", 0, OSP_EFORMAT, "start with");
    expect_refused("{} x", 0, OSP_EFORMAT, "not valid JSON");
    expect_refused("{\"a\":1}", 0, OSP_EFORMAT, "not a JSON object");
    expect_refused("{\"a\":{\"dtype\":\"F32\"}}", 0, OSP_EFORMAT, "needs");
    expect_refused("{\"a\":" T("F16", "[2]", "[0,4]") "}", 4, OSP_ENOTSUP, "F16");
    expect_refused("{\"a\":" T("BF16", "[2]", "[0,4]") "}", 4, OSP_ENOTSUP, "dtype");
    expect_refused("{\"a\":" T("F32", "[-1]", "[0,4]") "}", 4, OSP_EFORMAT, "non-negative");
    expect_refused("{\"a\":" T("F32", "[1.5]", "[0,4]") "}", 4, OSP_EFORMAT, "non-negative");
    expect_refused("{\"a\":" T("F32", "[\"1\"]", "[0,4]") "}", 4, OSP_EFORMAT, "non-negative");
    expect_refused("{\"a\":" T("F32", "[1e300]", "[0,4]") "}", 4, OSP_EFORMAT, "non-negative");
    expect_refused("{\"a\":" T("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 4, OSP_ENOTSUP,
                   "dimensions");
    expect_refused("{\"a\":" T("F32", "[1048576,1048576,1048576,1048576]", "[0,4]") "}", 4,
                   OSP_ERANGE, "overflow");
    expect_refused("{\"a\":" T("F32", "[1]", "[0]") "}", 4, OSP_EFORMAT, "[begin, end]");
    expect_refused("{\"a\":" T("F32", "[1]", "[0,4,8]") "}", 4, OSP_EFORMAT, "[begin, end]");
    expect_refused("{\"a\":" T("F32", "[1]", "[4,0]") "}", 4, OSP_EFORMAT, "outside");
    expect_refused("{\"a\":" T("F32", "[1]", "[0,8]") "}", 4, OSP_EFORMAT, "outside");
    expect_refused("{\"a\":" T("F32", "[2]", "[0,4]") "}", 4, OSP_EFORMAT, "needs 8");
    expect_refused("{\"a\":" T("F32", "[1]", "[0,4]") ",\"b\":" T("F32", "[1]", "[2,6]") "}", 8,
                   OSP_EFORMAT, "overlap");
    expect_refused("{\"a\":" T("F32", "[1]", "[4,8]") "}", 8, OSP_EFORMAT, "gaps");
    expect_refused("{\"a\":" T("F32", "[1]", "[0,4]") "}", 6, OSP_EFORMAT, "cover 4 bytes");
    expect_refused("{\"a\":" T("U8", "[1]", "[0,1]") ",\"a\":" T("U8", "[1]", "[1,2]") "}", 2,
                   OSP_EFORMAT, "appears twice");
    expect_refused("{\"__metadata__\":{\"k\":1}}", 0, OSP_EFORMAT, "not a string");
    expect_refused("{\"__metadata__\":[\"k\"]}", 0, OSP_EFORMAT, "not a JSON object");
    expect_refused("{\"__metadata__\":{},\"__metadata__\":{}}", 0, OSP_EFORMAT, "twice");
    expect_refused("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, OSP_EFORMAT, "twice");
}

Test(safetensors, refuses_what_other_readers_refuse) {
    expect_refused(" {}", 0, OSP_EFORMAT, "start with '{'");
    expect_refused("", 0, OSP_EFORMAT, "start with '{'");
    expect_refused("{\"\xff\":" T("U8", "[1]", "[0,1]") "}", 1, OSP_EFORMAT, "UTF-8");
    expect_refused("{\"\xc0\xaf\":" T("U8", "[1]", "[0,1]") "}", 1, OSP_EFORMAT, "UTF-8");
    expect_refused("{\"\xed\xa0\x80\":" T("U8", "[1]", "[0,1]") "}", 1, OSP_EFORMAT, "UTF-8");
    unsigned char buf[128];
    size_t len = make_st(buf, "{\"\xe2\x82\xac\xf0\x9f\x98\x80\":" T("U8", "[1]", "[0,1]") "}", 1);
    osp_safetensors *st;
    cr_assert_eq(osp_st_parse(buf, len, "utf8", &st), OSP_OK, "%s", osp_last_error());
    cr_assert_not_null(osp_st_find(st, "\xe2\x82\xac\xf0\x9f\x98\x80"));
    osp_st_free(st);

    osp_st_writer *wr;
    cr_assert_eq(osp_st_writer_new(&wr), 0);
    uint8_t x = 1;
    cr_assert_eq(osp_st_writer_add(wr, "bad\xff", OSP_DTYPE_U8, &(osp_shape){0, {0}}, &x),
                 OSP_EINVAL);
    cr_assert_eq(osp_st_writer_meta(wr, "k", "\xc3"), OSP_EINVAL);
    osp_st_writer_free(wr);
}

Test(safetensors, refuses_nul_in_header) {
    unsigned char buf[64];
    size_t len = make_st(buf, "{}      ", 0);
    buf[10] = '\0';
    osp_safetensors *st;
    cr_assert_eq(osp_st_parse(buf, len, "nul", &st), OSP_EFORMAT);
    cr_assert_not_null(strstr(osp_last_error(), "NUL"));
}

Test(safetensors, every_truncation_is_refused) {
    float w[4] = {1, 2, 3, 4};
    osp_st_writer *wr;
    cr_assert_eq(osp_st_writer_new(&wr), 0);
    osp_st_writer_add(wr, "w", OSP_DTYPE_F32, &(osp_shape){2, {2, 2}}, w);
    osp_st_writer_meta(wr, "k", "v");
    cr_assert_eq(osp_st_writer_save(wr, tmpdir_path("t.safetensors")), OSP_OK);
    osp_st_writer_free(wr);
    void *buf = NULL;
    size_t len = 0;
    cr_assert_eq(osp_file_read_all(tmpdir_path("t.safetensors"), 1 << 20, &buf, &len), OSP_OK);
    for (size_t k = 0; k < len; k++) {
        osp_safetensors *st;
        cr_assert_eq(osp_st_parse(buf, k, "cut", &st), OSP_EFORMAT, "length %zu", k);
        cr_assert_null(st);
    }
    osp_free(buf);
}

Test(safetensors, writer_errors) {
    float w[2] = {0};
    osp_st_writer *wr;
    cr_assert_eq(osp_st_writer_new(&wr), 0);
    osp_shape s = {1, {2}};
    cr_assert_eq(osp_st_writer_add(wr, "w", OSP_DTYPE_F32, &s, w), OSP_OK);
    cr_assert_eq(osp_st_writer_add(wr, "w", OSP_DTYPE_F32, &s, w), OSP_EINVAL);
    cr_assert_not_null(strstr(osp_last_error(), "twice"));
    cr_assert_eq(osp_st_writer_add(wr, "__metadata__", OSP_DTYPE_F32, &s, w), OSP_EINVAL);
    cr_assert_eq(osp_st_writer_add(wr, "", OSP_DTYPE_F32, &s, w), OSP_EINVAL);
    cr_assert_eq(osp_st_writer_add(wr, "n", OSP_DTYPE_F32, &s, NULL), OSP_EINVAL);
    cr_assert_eq(osp_st_writer_add(wr, "d", (osp_dtype)9, &s, w), OSP_EINVAL);
    cr_assert_eq(osp_st_writer_add(wr, "neg", OSP_DTYPE_F32, &(osp_shape){1, {-1}}, w), OSP_ERANGE);
    cr_assert_eq(osp_st_writer_meta(wr, NULL, "v"), OSP_EINVAL);
    cr_assert_eq(osp_st_writer_save(wr, tmpdir_path("missing/x.safetensors")), OSP_ENOENT);
    cr_assert_not_null(strstr(osp_last_error(), "missing/x.safetensors"));
    osp_st_writer_free(wr);
    osp_safetensors *st;
    cr_assert_eq(osp_st_load(tmpdir_path("absent.safetensors"), &st), OSP_ENOENT);
    cr_assert_null(st);
}

/* Other readers take what we write: Python's json for the header, and the
 * reference library's rules for the offsets, where Python is. */
Test(safetensors, python_reads_the_header) {
    if (system("/usr/bin/python3 -c 'import json, struct' 2>/dev/null") != 0)
        cr_skip_test("no python3");
    float w[6] = {1, 2, 3, 4, 5, 6};
    int64_t big[2] = {1, 2};
    osp_st_writer *wr;
    cr_assert_eq(osp_st_writer_new(&wr), 0);
    osp_st_writer_add(wr, "w", OSP_DTYPE_F32, &(osp_shape){2, {3, 2}}, w);
    osp_st_writer_add(wr, "b", OSP_DTYPE_I64, &(osp_shape){1, {2}}, big);
    osp_st_writer_meta(wr, "format", "osprey \"1\"\n");
    char path[512], cmd[2048];
    strcpy(path, tmpdir_path("py.safetensors"));
    cr_assert_eq(osp_st_writer_save(wr, path), OSP_OK);
    osp_st_writer_free(wr);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c '\n"
             "import json, struct, sys\n"
             "b = open(sys.argv[1], \"rb\").read()\n"
             "n, = struct.unpack(\"<Q\", b[:8])\n"
             "h = json.loads(b[8:8 + n])\n"
             "assert h[\"__metadata__\"] == {\"format\": \"osprey \\\"1\\\"\\n\"}, h\n"
             "assert h[\"w\"] == {\"dtype\": \"F32\", \"shape\": [3, 2],\n"
             "                  \"data_offsets\": [0, 24]}\n"
             "assert h[\"b\"][\"data_offsets\"] == [24, 40]\n"
             "assert struct.unpack(\"<6f\", b[8 + n:8 + n + 24])[5] == 6.0\n"
             "assert len(b) == 8 + n + 40\n"
             "' %s",
             path);
    cr_assert_eq(system(cmd), 0);
}
