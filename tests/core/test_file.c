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
