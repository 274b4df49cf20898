/* Image datasets: folders of class folders, list files, the dispatch by
 * path, and held-out splits. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imagegen.h"
#include "osprey/data.h"

static char root[64];

static void make_root(void) {
    strcpy(root, "/tmp/osp-ds-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
}

static void remove_root(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    cr_assert_eq(system(cmd), 0);
}

static const char *at(const char *rel) {
    static char path[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/%s", root, rel);
    return path[k];
}

static void put_png(const char *rel, int w, int h) {
    size_t n;
    uint8_t *p = gen_png_rgb(w, h, &n);
    gen_write(at(rel), p, n);
    free(p);
}

static void put_jpeg(const char *rel, int w, int h) {
    size_t n;
    uint8_t *j = gen_jpeg_rgb(w, h, 90, &n);
    gen_write(at(rel), j, n);
    free(j);
}

static osp_image_data_options options(int c, int h, int w) {
    osp_image_data_options o = {.transform = osp_transform_defaults(c, h, w)};
    return o;
}

/* b/ has 3 images (one in a sub-folder), a/ has 2, c/ none; plus files
 * that are not samples. */
static void make_folder(void) {
    mkdir(at("data"), 0755);
    mkdir(at("data/b"), 0755);
    mkdir(at("data/a"), 0755);
    mkdir(at("data/c"), 0755);
    mkdir(at("data/b/deeper"), 0755);
    put_png("data/b/2.png", 20, 10);
    put_jpeg("data/b/1.JPG", 30, 20);
    put_png("data/b/deeper/0.png", 8, 8);
    put_png("data/a/x.webp.png", 12, 12);
    gen_write(at("data/a/y.jpeg"), "broken", 6);
    gen_write(at("data/a/.hidden.jpg"), "x", 1);
    gen_write(at("data/a/notes.txt"), "x", 1);
    gen_write(at("data/README"), "x", 1);
}

Test(datasets, folder_classes_and_samples, .init = make_root, .fini = remove_root) {
    make_folder();
    osp_image_data_options o = options(3, 16, 16);
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_open_folder(at("data"), &o, &ds), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(ds->n_classes, 3);
    cr_assert_str_eq(ds->class_names[0], "a");
    cr_assert_str_eq(ds->class_names[2], "c");
    cr_assert_eq(ds->count, 5);
    const char *want[5] = {"data/a/x.webp.png", "data/a/y.jpeg", "data/b/1.JPG", "data/b/2.png",
                           "data/b/deeper/0.png"};
    const int labels[5] = {0, 0, 1, 1, 1};
    float x[3 * 16 * 16];
    for (int i = 0; i < 5; i++) {
        cr_assert_str_eq(ds->name(ds, i), at(want[i]));
        int32_t label;
        cr_assert_eq(ds->label(ds, i, &label), OSP_OK);
        cr_assert_eq(label, labels[i]);
        int rc = ds->get(ds, i, x, &label);
        if (i == 1) {
            cr_assert_neq(rc, OSP_OK);
            cr_assert(strstr(osp_last_error(), "y.jpeg"), "%s", osp_last_error());
        } else {
            cr_assert_eq(rc, OSP_OK, "%s", osp_last_error());
            for (int k = 0; k < 3 * 256; k++) cr_assert(x[k] >= 0 && x[k] <= 1);
        }
    }
    cr_assert_eq(ds->sample_shape.dim[0], 3);
    cr_assert_gt(ds->load_workers, 0);
    /* the file of a class folder that is not an image is named, with why
     * (hidden files are not counted; files beside the class folders are not
     * looked at) */
    cr_assert_eq(ds->n_left_out, 1);
    cr_assert_eq(ds->n_left_out_kept, 1);
    cr_assert_str_eq(ds->left_out[0].path, at("data/a/notes.txt"));
    cr_assert(strstr(ds->left_out[0].reason, ".jpg"), "%s", ds->left_out[0].reason);
    osp_dataset_free(ds);

    /* a trailing slash names the same samples */
    char slash[600];
    snprintf(slash, sizeof slash, "%s/", at("data"));
    cr_assert_eq(osp_dataset_open_folder(slash, &o, &ds), OSP_OK);
    cr_assert_str_eq(ds->name(ds, 0), at(want[0]));
    osp_dataset_free(ds);
}

Test(datasets, folder_numbered_by_given_classes, .init = make_root, .fini = remove_root) {
    make_folder();
    osp_image_data_options o = options(1, 8, 8);
    const char *names[4] = {"z", "b", "a", "c"};
    o.class_names = names;
    o.n_classes = 4;
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_open_folder(at("data"), &o, &ds), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(ds->n_classes, 4);
    int32_t label;
    ds->label(ds, 0, &label);
    cr_assert_eq(label, 2); /* a */
    ds->label(ds, 4, &label);
    cr_assert_eq(label, 1); /* b */
    osp_dataset_free(ds);
    const char *other[2] = {"a", "q"};
    o.class_names = other;
    o.n_classes = 2;
    cr_assert_eq(osp_dataset_open_folder(at("data"), &o, &ds), OSP_EINVAL);
    cr_assert(strstr(osp_last_error(), "'b'"), "%s", osp_last_error());
}

Test(datasets, folder_errors, .init = make_root, .fini = remove_root) {
    osp_image_data_options o = options(3, 8, 8);
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_open_folder(at("missing"), &o, &ds), OSP_ENOENT);
    mkdir(at("flat"), 0755);
    put_png("flat/a.png", 4, 4);
    cr_assert_eq(osp_dataset_open_folder(at("flat"), &o, &ds), OSP_EFORMAT);
    cr_assert(strstr(osp_last_error(), "class folders"));
    mkdir(at("empty"), 0755);
    mkdir(at("empty/k"), 0755);
    cr_assert_eq(osp_dataset_open_folder(at("empty"), &o, &ds), OSP_EFORMAT);
    o.transform.channels = 2;
    cr_assert_eq(osp_dataset_open_folder(at("flat"), &o, &ds), OSP_EINVAL);
}

Test(datasets, list_file, .init = make_root, .fini = remove_root) {
    mkdir(at("imgs"), 0755);
    put_png("imgs/p.png", 10, 10);
    put_jpeg("imgs/q.jpg", 10, 10);
    char list[2048];
    snprintf(list, sizeof list,
             "# comment\n"
             "imgs/p.png\tdog\r\n"
             "\n"
             "   \n"
             "%s\tcat \n"
             "imgs/with\ttab.png\tdog\n",
             at("imgs/q.jpg"));
    gen_write(at("list.txt"), list, strlen(list));
    osp_image_data_options o = options(3, 8, 8);
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_open_list(at("list.txt"), &o, &ds), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(ds->count, 3);
    cr_assert_eq(ds->n_classes, 2);
    cr_assert_str_eq(ds->class_names[0], "cat");
    cr_assert_str_eq(ds->name(ds, 0), at("imgs/p.png"));
    cr_assert_str_eq(ds->name(ds, 1), at("imgs/q.jpg"));
    cr_assert_str_eq(ds->name(ds, 2), at("imgs/with\ttab.png")); /* the last tab splits */
    int32_t label;
    float x[3 * 64];
    cr_assert_eq(ds->get(ds, 0, x, &label), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(label, 1);
    osp_dataset_free(ds);
}

Test(datasets, list_numeric_labels) {
    const char *text = "a.png\t3\nb.png\t0\nc.png\t007\n";
    osp_image_data_options o = options(3, 8, 8);
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_list_parse(text, strlen(text), "l.txt", "/base", &o, &ds), OSP_OK);
    cr_assert_eq(ds->n_classes, 8);
    int32_t label;
    ds->label(ds, 2, &label);
    cr_assert_eq(label, 7);
    cr_assert_str_eq(ds->class_names[3], "3");
    cr_assert_str_eq(ds->name(ds, 0), "/base/a.png");
    osp_dataset_free(ds);
}

static void list_error(const char *text, size_t len, const char *words) {
    osp_image_data_options o = options(3, 8, 8);
    osp_dataset *ds = (osp_dataset *)1;
    cr_assert_eq(osp_dataset_list_parse(text, len, "l.txt", ".", &o, &ds), OSP_EFORMAT, "%s", text);
    cr_assert_null(ds);
    cr_assert(strstr(osp_last_error(), words), "'%s' lacks '%s'", osp_last_error(), words);
}

Test(datasets, list_errors) {
    list_error("a.png\t1\nb.png 2\n", 16, "l.txt:2: expected path<TAB>label");
    list_error("a.png\t\n", 7, "l.txt:1: empty label");
    list_error("\tx\n", 3, "l.txt:1: empty path");
    list_error("a.png\t1\0\n", 8, "NUL");
    list_error("# nothing\n", 10, "no samples");
    list_error("", 0, "no samples");
    char big[5000];
    memset(big, 'p', sizeof big);
    big[4990] = '\t';
    big[4991] = '1';
    list_error(big, 4992, "too long");
    char label[300 + 3];
    memset(label, 'x', sizeof label);
    label[0] = 'a';
    label[1] = '\t';
    list_error(label, sizeof label, "longer than");
}

Test(datasets, open_dispatches_by_path, .init = make_root, .fini = remove_root) {
    make_folder();
    gen_write(at("l.txt"), "data/b/2.png\tx\n", 15);
    osp_image_data_options o = options(3, 8, 8);
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_open(at("data"), OSP_SPLIT_TRAIN, &o, &ds), OSP_OK);
    cr_assert_eq(ds->n_classes, 3);
    osp_dataset_free(ds);
    cr_assert_eq(osp_dataset_open(at("l.txt"), OSP_SPLIT_TRAIN, &o, &ds), OSP_OK);
    cr_assert_eq(ds->count, 1);
    osp_dataset_free(ds);
    cr_assert_eq(osp_dataset_open(at("nothing"), OSP_SPLIT_TRAIN, &o, &ds), OSP_ENOENT);
    /* IDX: a folder with the MNIST names */
    mkdir(at("idx"), 0755);
    const uint8_t images[16 + 4] = {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4};
    const uint8_t labels[8 + 1] = {0, 0, 8, 1, 0, 0, 0, 1, 5};
    gen_write(at("idx/train-images-idx3-ubyte"), images, sizeof images);
    gen_write(at("idx/train-labels-idx1-ubyte"), labels, sizeof labels);
    cr_assert_eq(osp_dataset_open(at("idx"), OSP_SPLIT_TRAIN, &o, &ds), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(ds->sample_shape.dim[1], 2);
    osp_dataset_free(ds);
    cr_assert_eq(osp_dataset_open(at("idx/train-images-idx3-ubyte"), OSP_SPLIT_TRAIN, &o, &ds), OSP_OK);
    osp_dataset_free(ds);
}

/* A file that is plainly not a dataset is named for what it is, with what
 * DATA may be, not for how its bytes fail as a list file. */
Test(datasets, open_names_other_files, .init = make_root, .fini = remove_root) {
    put_jpeg("photo.jpg", 8, 8);
    static const unsigned char model[] = {12, 0, 0, 0, 0, 0, 0, 0, '{', '"', 'a', '"', ':', '1', '}', ' '};
    gen_write(at("model.osp"), model, sizeof model);
    gen_write(at("x.npy"), "\x93NUMPY\x01\x00\x10\x00{}", 12);
    gen_write(at("labels"), "\0\0\x08\x01\0\0\0\x01\x05", 9);
    static const struct {
        const char *file, *words;
    } cases[] = {{"photo.jpg", "is a JPEG image, not a dataset"},
                 {"model.osp", "is an osprey model or checkpoint (safetensors), not a dataset"},
                 {"x.npy", "is a NumPy array (.npy), not a dataset"},
                 {"labels", "is an IDX labels file: give the images file"}};
    osp_image_data_options o = options(3, 8, 8);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        osp_dataset *ds = (osp_dataset *)1;
        cr_assert_eq(osp_dataset_open(at(cases[i].file), OSP_SPLIT_TRAIN, &o, &ds), OSP_EFORMAT);
        cr_assert_null(ds);
        const char *e = osp_last_error();
        cr_assert(strstr(e, at(cases[i].file)) && strstr(e, cases[i].words), "'%s' lacks '%s'", e,
                  cases[i].words);
        cr_assert(!strstr(e, "NUL byte"), "%s", e);
    }
}

/* A list of n samples per class over k classes, files not read. */
static osp_dataset *named_list(int k, int n, const char *dir) {
    char *text = malloc((size_t)k * n * 64), *p = text;
    for (int c = 0; c < k; c++)
        for (int i = 0; i < n; i++) p += sprintf(p, "class%d/img%04d.jpg\tclass%d\n", c, i * 7 % n, c);
    osp_image_data_options o = options(3, 8, 8);
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_list_parse(text, (size_t)(p - text), "l", dir, &o, &ds), OSP_OK);
    free(text);
    return ds;
}

Test(datasets, split_is_stratified_and_stable) {
    osp_dataset *a = named_list(3, 50, "/one/path"), *ta, *va;
    cr_assert_eq(osp_dataset_split(a, 0.2, &ta, &va), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(va->count, 30);
    cr_assert_eq(ta->count, 120);
    cr_assert_not_null(ta->get_augmented);
    cr_assert_null(va->get_augmented);
    int per[3] = {0};
    for (int64_t i = 0; i < va->count; i++) {
        int32_t label;
        cr_assert_eq(va->label(va, i, &label), OSP_OK);
        per[label]++;
    }
    cr_assert(per[0] == 10 && per[1] == 10 && per[2] == 10);
    /* the same files held out under another folder spelling */
    osp_dataset *b = named_list(3, 50, "/other/../path"), *tb, *vb;
    cr_assert_eq(osp_dataset_split(b, 0.2, &tb, &vb), OSP_OK);
    for (int64_t i = 0; i < va->count; i++) {
        const char *x = strrchr(va->name(va, i), '/'), *y = strrchr(vb->name(vb, i), '/');
        cr_assert_str_eq(x, y);
    }
    /* train and held-out are disjoint and cover everything */
    for (int64_t i = 0; i < ta->count; i++)
        for (int64_t j = 0; j < va->count; j++)
            cr_assert(strcmp(ta->name(ta, i), va->name(va, j)));
    osp_dataset_free(ta);
    osp_dataset_free(va);
    osp_dataset_free(vb);
    osp_dataset_free(tb);
    osp_dataset *c = named_list(1, 3, "."), *tc, *vc;
    cr_assert_eq(osp_dataset_split(c, 0.01, &tc, &vc), OSP_EINVAL);
    cr_assert_eq(osp_dataset_split(c, 1.5, &tc, &vc), OSP_EINVAL);
    osp_dataset_free(c);
}
