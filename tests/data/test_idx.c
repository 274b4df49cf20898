/* IDX datasets: small files made here, the fetched MNIST where it is, and
 * refusal of truncated, mismatched and malformed files. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/data.h"

#include "tmpdir.h"

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* n images of rows x cols with pixel (i, k) = (i * 7 + k) mod 256, and labels
 * label[i] = labels[i]. Returns the two lengths through il, ll. */
static void make_idx(unsigned char *img, size_t *il, unsigned char *lbl, size_t *ll, uint32_t n,
                     uint32_t rows, uint32_t cols, const uint8_t *labels) {
    put_be32(img, 0x803);
    put_be32(img + 4, n);
    put_be32(img + 8, rows);
    put_be32(img + 12, cols);
    size_t per = (size_t)rows * cols;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < per; k++) img[16 + i * per + k] = (unsigned char)(i * 7 + k);
    *il = 16 + n * per;
    put_be32(lbl, 0x801);
    put_be32(lbl + 4, n);
    if (n) memcpy(lbl + 8, labels, n);
    *ll = 8 + n;
}

static void expect_refused(const void *img, size_t il, const void *lbl, size_t ll, int code,
                           const char *words) {
    osp_dataset *ds = (osp_dataset *)1;
    int rc = osp_dataset_idx_parse(img, il, lbl, ll, "bad", &ds);
    cr_assert_eq(rc, code, "got %s (%s)", osp_err_name(rc), osp_last_error());
    cr_assert_null(ds);
    cr_assert_not_null(strstr(osp_last_error(), "bad"), "%s", osp_last_error());
    cr_assert_not_null(strstr(osp_last_error(), words), "'%s' lacks '%s'", osp_last_error(), words);
}

static unsigned char img[16 + 5 * 12], lbl[8 + 5];
static size_t il, ll;
static const uint8_t five_labels[5] = {0, 3, 1, 2, 3};

static void setup(void) {
    tmpdir_make();
    make_idx(img, &il, lbl, &ll, 5, 3, 4, five_labels);
}

TestSuite(idx, .init = setup, .fini = tmpdir_remove);

static void check_small(osp_dataset *ds) {
    cr_assert_eq(ds->count, 5);
    cr_assert_eq(ds->sample_shape.ndim, 3);
    cr_assert_eq(ds->sample_shape.dim[0], 1);
    cr_assert_eq(ds->sample_shape.dim[1], 3);
    cr_assert_eq(ds->sample_shape.dim[2], 4);
    cr_assert_eq(ds->n_classes, 4);
    cr_assert_not_null(ds->class_names);
    cr_assert_str_eq(ds->class_names[3], "3");
    float x[12];
    int32_t label;
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(ds->get(ds, i, x, &label), OSP_OK);
        cr_assert_eq(label, five_labels[i]);
        for (int k = 0; k < 12; k++) cr_assert_eq(x[k], (float)((i * 7 + k) & 255) / 255.0f);
    }
    cr_assert_eq(ds->get(ds, 5, x, &label), OSP_ERANGE);
    cr_assert_eq(ds->get(ds, -1, x, &label), OSP_ERANGE);
    cr_assert_not_null(ds->label);
    cr_assert_eq(ds->label(ds, 1, &label), OSP_OK);
    cr_assert_eq(label, 3);
    cr_assert_eq(ds->label(ds, 5, &label), OSP_ERANGE);
}

Test(idx, parse_and_get) {
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_idx_parse(img, il, lbl, ll, "mem", &ds), OSP_OK, "%s",
                 osp_last_error());
    check_small(ds);
    osp_dataset_free(ds);
    osp_dataset_free(NULL);
}

Test(idx, open_images_file_and_directory) {
    char path[512];
    strcpy(path, tmpdir_path("small-images-idx3-ubyte"));
    tmpdir_write(path, img, il);
    tmpdir_write(tmpdir_path("small-labels-idx1-ubyte"), lbl, ll);
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_open_idx(path, OSP_SPLIT_TRAIN, &ds), OSP_OK, "%s", osp_last_error());
    check_small(ds);
    cr_assert_str_eq(ds->source, path);
    osp_dataset_free(ds);

    tmpdir_write(tmpdir_path("train-images-idx3-ubyte"), img, il);
    tmpdir_write(tmpdir_path("train-labels-idx1-ubyte"), lbl, ll);
    unsigned char img2[16 + 2 * 4], lbl2[8 + 2];
    size_t il2, ll2;
    make_idx(img2, &il2, lbl2, &ll2, 2, 2, 2, (const uint8_t[]){9, 0});
    tmpdir_write(tmpdir_path("t10k-images-idx3-ubyte"), img2, il2);
    tmpdir_write(tmpdir_path("t10k-labels-idx1-ubyte"), lbl2, ll2);
    cr_assert_eq(osp_dataset_open_idx(tmpdir_name, OSP_SPLIT_TRAIN, &ds), OSP_OK, "%s", osp_last_error());
    check_small(ds);
    osp_dataset_free(ds);
    cr_assert_eq(osp_dataset_open_idx(tmpdir_name, OSP_SPLIT_TEST, &ds), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(ds->count, 2);
    cr_assert_eq(ds->n_classes, 10);
    cr_assert_str_eq(ds->class_names[9], "9");
    osp_dataset_free(ds);
}

Test(idx, missing_and_gzipped_files) {
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_open_idx(tmpdir_name, OSP_SPLIT_TEST, &ds), OSP_ENOENT);
    cr_assert_null(ds);
    cr_assert_not_null(strstr(osp_last_error(), "t10k-images-idx3-ubyte"), "%s", osp_last_error());
    tmpdir_write(tmpdir_path("t10k-images-idx3-ubyte.gz"), "\x1f\x8b", 2);
    cr_assert_eq(osp_dataset_open_idx(tmpdir_name, OSP_SPLIT_TEST, &ds), OSP_ENOENT);
    cr_assert_not_null(strstr(osp_last_error(), "decompressed"), "%s", osp_last_error());
    cr_assert_eq(osp_dataset_open_idx(tmpdir_path("pictures.bin"), OSP_SPLIT_TEST, &ds), OSP_EINVAL);
    cr_assert_not_null(strstr(osp_last_error(), "images-idx3"), "%s", osp_last_error());
    char path[512];
    strcpy(path, tmpdir_path("x-images-idx3-ubyte"));
    tmpdir_write(path, img, il);
    cr_assert_eq(osp_dataset_open_idx(path, OSP_SPLIT_TEST, &ds), OSP_ENOENT);
    cr_assert_not_null(strstr(osp_last_error(), "x-labels-idx1-ubyte"), "%s", osp_last_error());
}

Test(idx, truncated_file_message) {
    char path[512];
    strcpy(path, tmpdir_path("t-images-idx3-ubyte"));
    tmpdir_write(path, img, il - 5);
    tmpdir_write(tmpdir_path("t-labels-idx1-ubyte"), lbl, ll);
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_open_idx(path, OSP_SPLIT_TRAIN, &ds), OSP_EFORMAT);
    char want[700];
    snprintf(want, sizeof want, "%s: truncated IDX file: expected %zu bytes, found %zu", path, il,
             il - 5);
    cr_assert_str_eq(osp_last_error(), want);
}

Test(idx, refuses_malformed_files) {
    unsigned char bad[sizeof img + 8];
    memcpy(bad, img, il);
    expect_refused(img, il, lbl, ll - 1, OSP_EFORMAT,
                   "truncated IDX file: expected 13 bytes, found 12");
    memcpy(bad, lbl, ll);
    bad[ll] = 0;
    expect_refused(img, il, bad, ll + 1, OSP_EFORMAT, "trailing bytes");
    expect_refused(lbl, ll, img, il, OSP_EFORMAT, "magic");
    expect_refused(img, 10, lbl, ll, OSP_EFORMAT, "expected at least 16 bytes");

    memcpy(bad, img, il);
    put_be32(bad + 8, 0);
    expect_refused(bad, il, lbl, ll, OSP_EFORMAT, "outside 1..4096");
    put_be32(bad + 8, 4097);
    expect_refused(bad, il, lbl, ll, OSP_EFORMAT, "outside 1..4096");
    put_be32(bad + 8, 3);
    put_be32(bad + 4, 0xffffffffu); /* a huge count must not be believed */
    expect_refused(bad, il, lbl, ll, OSP_EFORMAT, "truncated");

    unsigned char l4[8 + 4];
    memcpy(l4, lbl, 12);
    put_be32(l4 + 4, 4);
    expect_refused(img, il, l4, 12, OSP_EFORMAT, "5 images but");

    unsigned char i0[16], l0[8];
    size_t il0, ll0;
    make_idx(i0, &il0, l0, &ll0, 0, 2, 2, NULL);
    expect_refused(i0, il0, l0, ll0, OSP_EFORMAT, "no images");
}

Test(idx, every_truncation_is_refused) {
    for (size_t k = 0; k < il; k++) {
        osp_dataset *ds;
        cr_assert_eq(osp_dataset_idx_parse(img, k, lbl, ll, "cut", &ds), OSP_EFORMAT);
        cr_assert_null(ds);
    }
    for (size_t k = 0; k < ll; k++) {
        osp_dataset *ds;
        cr_assert_eq(osp_dataset_idx_parse(img, il, lbl, k, "cut", &ds), OSP_EFORMAT);
        cr_assert_null(ds);
    }
}

typedef struct reader_arg {
    osp_dataset *ds;
    int failures;
} reader_arg;

static void *read_all_samples(void *p) {
    reader_arg *a = p;
    float x[12];
    int32_t label;
    for (int round = 0; round < 2000; round++)
        for (int i = 0; i < 5; i++)
            if (a->ds->get(a->ds, i, x, &label) != OSP_OK || label != five_labels[i] ||
                x[11] != (float)((i * 7 + 11) & 255) / 255.0f)
                a->failures++;
    return NULL;
}

Test(idx, get_from_many_threads) {
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_idx_parse(img, il, lbl, ll, "mem", &ds), OSP_OK);
    pthread_t th[4];
    reader_arg args[4];
    for (int t = 0; t < 4; t++) {
        args[t] = (reader_arg){ds, 0};
        cr_assert_eq(pthread_create(&th[t], NULL, read_all_samples, &args[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        cr_assert_eq(args[t].failures, 0);
    }
    osp_dataset_free(ds);
}

/* The digits scripts/fetch-mnist writes (9,000/1,000), or the original
 * MNIST files (60,000/10,000) if someone put those there instead. */
Test(idx, fetched_mnist) {
    const char *src = getenv("OSP_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/data/mnist", src ? src : OSP_SOURCE_DIR);
    if (access(path, R_OK) != 0) cr_skip_test("no %s: run scripts/fetch-mnist", path);
    osp_dataset *train, *test;
    cr_assert_eq(osp_dataset_open_idx(path, OSP_SPLIT_TRAIN, &train), OSP_OK, "%s",
                 osp_last_error());
    cr_assert_eq(osp_dataset_open_idx(path, OSP_SPLIT_TEST, &test), OSP_OK, "%s",
                 osp_last_error());
    cr_assert(train->count == 9000 || train->count == 60000, "%lld", (long long)train->count);
    cr_assert(test->count == 1000 || test->count == 10000, "%lld", (long long)test->count);
    cr_assert_eq(train->n_classes, 10);
    cr_assert_eq(test->n_classes, 10);
    cr_assert_eq(train->sample_shape.dim[1], 28);
    cr_assert_eq(train->sample_shape.dim[2], 28);
    int counts[10] = {0};
    float x[784];
    for (int64_t i = 0; i < test->count; i++) {
        int32_t label;
        cr_assert_eq(test->get(test, i, x, &label), OSP_OK);
        counts[label]++;
    }
    for (int c = 0; c < 10; c++) cr_assert_gt(counts[c], test->count / 20, "class %d", c);
    /* the train file is interleaved by class, not sorted */
    int32_t first[10];
    for (int i = 0; i < 10; i++) train->get(train, i, x, &first[i]);
    cr_assert_neq(first[0], first[1]);
    osp_dataset_free(train);
    osp_dataset_free(test);
}
