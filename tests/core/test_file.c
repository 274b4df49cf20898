/* Files: atomic replacement, whole-file reads, maps, CRC-32C. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "osprey/core.h"

uint32_t osp__crc32c_portable(uint32_t crc, const void *buf, size_t len);

#include "tmpdir.h"

static int count_entries(void) {
    DIR *d = opendir(tmpdir_name);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void atomic_put(const char *path, const void *buf, size_t len) {
    osp_atomic_file f;
    cr_assert_eq(osp_atomic_open(&f, path), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(osp_atomic_write(&f, buf, len), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(osp_atomic_commit(&f), OSP_OK, "%s", osp_last_error());
}

TestSuite(file, .init = tmpdir_make, .fini = tmpdir_remove);

Test(file, atomic_write_round_trip_leaves_no_temporary) {
    char path[512];
    strcpy(path, tmpdir_path("out.bin"));
    size_t len = 3 * 1000 * 1000 + 7;
    unsigned char *data = malloc(len);
    for (size_t i = 0; i < len; i++) data[i] = (unsigned char)(i * 31 + 7);
    osp_atomic_file f;
    cr_assert_eq(osp_atomic_open(&f, path), OSP_OK);
    cr_assert_not_null(strstr(f.tmp_path, "out.bin.tmp."));
    cr_assert_eq(osp_atomic_write(&f, data, 10), OSP_OK);
    cr_assert_eq(osp_atomic_write(&f, data + 10, len - 10), OSP_OK);
    cr_assert_eq(osp_atomic_commit(&f), OSP_OK);
    cr_assert_null(f.path);
    cr_assert_null(f.tmp_path);
    void *back;
    size_t back_len;
    cr_assert_eq(osp_file_read_all(path, len, &back, &back_len), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(back_len, len);
    cr_assert_eq(memcmp(back, data, len), 0);
    osp_free(back);
    free(data);
    cr_assert_eq(count_entries(), 1);
}

Test(file, atomic_replace_and_abort) {
    char path[512];
    strcpy(path, tmpdir_path("x"));
    atomic_put(path, "old", 3);
    atomic_put(path, "newer", 5);
    osp_atomic_file f;
    cr_assert_eq(osp_atomic_open(&f, path), OSP_OK);
    cr_assert_eq(osp_atomic_write(&f, "garbage", 7), OSP_OK);
    cr_assert_eq(count_entries(), 2);
    osp_atomic_abort(&f);
    osp_atomic_abort(&f); /* twice is harmless */
    cr_assert_eq(count_entries(), 1);
    void *back;
    size_t len;
    cr_assert_eq(osp_file_read_all(path, 100, &back, &len), OSP_OK);
    cr_assert_eq(len, 5);
    cr_assert_eq(memcmp(back, "newer", 5), 0);
    osp_free(back);
}

Test(file, atomic_temporaries_are_distinct) {
    char path[512];
    strcpy(path, tmpdir_path("same"));
    osp_atomic_file a, b;
    cr_assert_eq(osp_atomic_open(&a, path), OSP_OK);
    cr_assert_eq(osp_atomic_open(&b, path), OSP_OK);
    cr_assert_str_neq(a.tmp_path, b.tmp_path);
    osp_atomic_abort(&a);
    osp_atomic_abort(&b);
    cr_assert_eq(count_entries(), 0);
}

Test(file, atomic_bare_name_in_working_directory) {
    char old[512];
    cr_assert_not_null(getcwd(old, sizeof old));
    cr_assert_eq(chdir(tmpdir_name), 0);
    atomic_put("bare.bin", "abc", 3);
    cr_assert_eq(chdir(old), 0);
    cr_assert_eq(count_entries(), 1);
}

Test(file, atomic_errors_name_the_path) {
    osp_atomic_file f;
    char path[512];
    strcpy(path, tmpdir_path("missing/sub/file"));
    cr_assert_eq(osp_atomic_open(&f, path), OSP_ENOENT);
    cr_assert_not_null(strstr(osp_last_error(), "missing/sub/file"));
    cr_assert_not_null(strstr(osp_last_error(), "No such file"));
    osp_atomic_abort(&f); /* safe after a failed open */
    cr_assert_eq(osp_atomic_write(&f, "x", 1), OSP_ESTATE);
    cr_assert_eq(osp_atomic_commit(&f), OSP_ESTATE);
    cr_assert_eq(osp_atomic_open(&f, ""), OSP_EINVAL);
}

Test(file, read_all_checks_size_before_reading) {
    char path[512];
    strcpy(path, tmpdir_path("big"));
    char buf[100] = {0};
    tmpdir_write(path, buf, sizeof buf);
    void *out = (void *)1;
    size_t len = 1;
    cr_assert_eq(osp_file_read_all(path, 99, &out, &len), OSP_ERANGE);
    cr_assert_null(out);
    cr_assert_eq(len, 0);
    cr_assert_not_null(strstr(osp_last_error(), path));
    cr_assert_not_null(strstr(osp_last_error(), "limit"));
    cr_assert_eq(osp_file_read_all(path, 100, &out, &len), OSP_OK);
    cr_assert_eq(len, 100);
    osp_free(out);
}

Test(file, read_all_refusals) {
    void *out;
    size_t len;
    char path[512];
    strcpy(path, tmpdir_path("nope"));
    cr_assert_eq(osp_file_read_all(path, 10, &out, &len), OSP_ENOENT);
    cr_assert_not_null(strstr(osp_last_error(), "nope"));
    cr_assert_not_null(strstr(osp_last_error(), "No such file"));
    cr_assert_eq(osp_file_read_all(tmpdir_name, 10, &out, &len), OSP_EINVAL);
    cr_assert_not_null(strstr(osp_last_error(), "not a regular file"));
    strcpy(path, tmpdir_path("empty"));
    tmpdir_write(path, "", 0);
    cr_assert_eq(osp_file_read_all(path, 0, &out, &len), OSP_OK);
    cr_assert_eq(len, 0);
    osp_free(out);
}

Test(file, map_and_unmap) {
    char path[512];
    strcpy(path, tmpdir_path("m"));
    tmpdir_write(path, "hello map", 9);
    osp_mapped_file m;
    cr_assert_eq(osp_file_map(path, &m), OSP_OK);
    cr_assert_eq(m.len, 9);
    cr_assert_eq(memcmp(m.data, "hello map", 9), 0);
    osp_file_unmap(&m);
    cr_assert_null(m.data);
    osp_file_unmap(&m);

    strcpy(path, tmpdir_path("zero"));
    tmpdir_write(path, "", 0);
    cr_assert_eq(osp_file_map(path, &m), OSP_OK);
    cr_assert_null(m.data);
    cr_assert_eq(m.len, 0);
    osp_file_unmap(&m);

    strcpy(path, tmpdir_path("absent"));
    cr_assert_eq(osp_file_map(path, &m), OSP_ENOENT);
    cr_assert_not_null(strstr(osp_last_error(), "absent"));
}

Test(crc32c, known_values) {
    /* The check value of CRC-32C and the iSCSI test vectors (RFC 3720). */
    cr_assert_eq(osp_crc32c(0, "123456789", 9), 0xe3069283u);
    unsigned char zeros[32] = {0}, ones[32], inc[32];
    memset(ones, 0xff, sizeof ones);
    for (int i = 0; i < 32; i++) inc[i] = (unsigned char)i;
    cr_assert_eq(osp_crc32c(0, zeros, 32), 0x8a9136aau);
    cr_assert_eq(osp_crc32c(0, ones, 32), 0x62a8ab43u);
    cr_assert_eq(osp_crc32c(0, inc, 32), 0x46dd794eu);
    cr_assert_eq(osp_crc32c(0x1234u, "", 0), 0x1234u);
}

Test(crc32c, running_value_and_paths_agree) {
    unsigned char buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (unsigned char)(i * 131 + i / 7);
    for (size_t off = 0; off < 9; off++)
        for (size_t len = 0; len + off <= 1000; len += 37) {
            uint32_t a = osp_crc32c(0, buf + off, len);
            cr_assert_eq(a, osp__crc32c_portable(0, buf + off, len), "off %zu len %zu", off, len);
            size_t half = len / 3;
            uint32_t b = osp_crc32c(osp_crc32c(0, buf + off, half), buf + off + half, len - half);
            cr_assert_eq(a, b);
        }
}

/* What a file is, from its first bytes: the formats osprey meets, and
 * text or noise left unknown. */
Test(sniff, kinds) {
    static const unsigned char onnx[] = {0x08, 0x07, 0x12, 0x07, 'p', 'y', 't', 'o', 'r', 'c', 'h'};
    static const unsigned char st[] = {12, 0, 0, 0, 0, 0, 0, 0, '{', '"', 'a', '"', ':', '1', '}', ' '};
    static const struct {
        const void *bytes;
        size_t len;
        osp_file_kind kind;
    } cases[] = {
        {onnx, sizeof onnx, OSP_FILE_ONNX},
        {st, sizeof st, OSP_FILE_SAFETENSORS},
        {"# LeNet\n\n[net]\ninput = 1x28x28\n", 31, OSP_FILE_NETSPEC},
        {"\x93NUMPY\x01\x00", 8, OSP_FILE_NPY},
        {"\xff\xd8\xff\xe0", 4, OSP_FILE_JPEG},
        {"\x89PNG\r\n\x1a\n\0\0", 10, OSP_FILE_PNG},
        {"RIFF\0\0\0\0WEBPVP8 ", 16, OSP_FILE_WEBP},
        {"\0\0\x08\x03\0\0\0\x01", 8, OSP_FILE_IDX_IMAGES},
        {"\0\0\x08\x01\0\0\0\x01", 8, OSP_FILE_IDX_LABELS},
        {"OSPINDEX\x01\0\0\0", 12, OSP_FILE_INDEX},
        {"\x1f\x8b\x08\0", 4, OSP_FILE_GZIP},
        {"SQLite format 3\0", 16, OSP_FILE_SQLITE},
        {"a.jpg\tcat\nb.jpg\tdog\n", 20, OSP_FILE_UNKNOWN},
        {"[conv]\nsize = 3\n", 16, OSP_FILE_UNKNOWN}, /* a spec starts with [net] */
        {"", 0, OSP_FILE_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        osp_file_kind k = osp_file_sniff(cases[i].bytes, cases[i].len);
        cr_assert_eq(k, cases[i].kind, "case %zu: %d, expected %d", i, (int)k, (int)cases[i].kind);
        cr_assert_eq(*osp_file_kind_phrase(k) == '\0', k == OSP_FILE_UNKNOWN, "case %zu", i);
    }
    cr_assert_str_eq(osp_file_kind_phrase(OSP_FILE_ONNX), "an ONNX model");
    cr_assert_eq(osp_file_sniff(NULL, 10), OSP_FILE_UNKNOWN);
}

TestSuite(sniff_path, .init = tmpdir_make, .fini = tmpdir_remove);

Test(sniff_path, reads_the_start_of_a_file) {
    char path[512];
    strcpy(path, tmpdir_path("x.cfg"));
    tmpdir_write(path, "[net]\ninput = 3x8x8\n", 20);
    cr_assert_eq(osp_file_sniff_path(path), OSP_FILE_NETSPEC);
    cr_assert_eq(osp_file_sniff_path(tmpdir_path("missing")), OSP_FILE_UNKNOWN);
    cr_assert_eq(osp_file_sniff_path(tmpdir_name), OSP_FILE_UNKNOWN); /* a folder */
}
