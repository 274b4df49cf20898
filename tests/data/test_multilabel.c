/* Multi-label datasets: list files with label,label fields and JSON Lines,
 * the rule that makes a file multi-label, negatives, renumbering against a
 * model's labels, held-out views and the loader's multi-hot targets. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imagegen.h"
#include "osprey/data.h"

static osp_image_data_options options(void) {
    osp_image_data_options o = {.transform = osp_transform_defaults(3, 8, 8)};
    return o;
}

static osp_dataset *parse(const char *text, const osp_image_data_options *o) {
    osp_image_data_options d = options();
    osp_dataset *ds = NULL;
    int rc = osp_dataset_list_parse(text, strlen(text), "l.txt", ".", o ? o : &d, &ds);
    cr_assert_eq(rc, OSP_OK, "%s: %s", text, osp_last_error());
    return ds;
}

/* Sample i's labels as "a,b" by name. */
static void expect_hot(osp_dataset *ds, int64_t i, const char *want) {
    uint8_t hot[64];
    cr_assert_leq(ds->n_classes, 64);
    cr_assert_eq(ds->labels_multi(ds, i, hot), OSP_OK, "%s", osp_last_error());
    char got[256] = "";
    for (int c = 0; c < ds->n_classes; c++)
        if (hot[c]) {
            if (*got) strcat(got, ",");
            strcat(got, ds->class_names[c]);
        }
    cr_assert_str_eq(got, want, "sample %lld", (long long)i);
}

Test(multilabel, single_label_lists_stay_single) {
    osp_dataset *ds = parse("a.png\tcat\nb.png\tdog\n", NULL);
    cr_assert_eq(ds->multi_label, 0);
    cr_assert_null(ds->labels_multi);
    cr_assert_eq(ds->n_classes, 2);
    int32_t label;
    cr_assert_eq(ds->label(ds, 1, &label), OSP_OK);
    cr_assert_eq(label, 1);
    osp_dataset_free(ds);
}

Test(multilabel, comma_makes_a_list_multi_label) {
    osp_dataset *ds = parse("# tags\na.png\tdog, cat\nb.png\t\nc.png\tbird\nd.png\tcat,cat,\n"
                            "e.png\t,\n", NULL);
    cr_assert_eq(ds->multi_label, 1);
    cr_assert_not_null(ds->labels_multi);
    cr_assert_eq(ds->count, 5);
    cr_assert_eq(ds->n_classes, 3);
    cr_assert_str_eq(ds->class_names[0], "bird");
    cr_assert_str_eq(ds->class_names[1], "cat");
    cr_assert_str_eq(ds->class_names[2], "dog");
    expect_hot(ds, 0, "cat,dog");
    expect_hot(ds, 1, ""); /* a negative */
    expect_hot(ds, 2, "bird");
    expect_hot(ds, 3, "cat"); /* repeats and empty items are dropped */
    expect_hot(ds, 4, "");
    /* the single label is the lowest one, -1 for none */
    int32_t label;
    ds->label(ds, 0, &label);
    cr_assert_eq(label, 1);
    ds->label(ds, 1, &label);
    cr_assert_eq(label, -1);
    osp_dataset_free(ds);
}

Test(multilabel, trailing_comma_marks_one_label_lines) {
    osp_dataset *ds = parse("a.png\tcat,\nb.png\tdog\nc.png\t\n", NULL);
    cr_assert_eq(ds->multi_label, 1);
    expect_hot(ds, 0, "cat");
    expect_hot(ds, 1, "dog");
    expect_hot(ds, 2, "");
    osp_dataset_free(ds);
}

Test(multilabel, numeric_labels) {
    osp_dataset *ds = parse("a.png\t0,3\nb.png\t2\n", NULL);
    cr_assert_eq(ds->n_classes, 4);
    cr_assert_str_eq(ds->class_names[3], "3");
    uint8_t hot[4];
    ds->labels_multi(ds, 0, hot);
    cr_assert(hot[0] && !hot[1] && !hot[2] && hot[3]);
    osp_dataset_free(ds);
}

Test(multilabel, json_lines) {
    osp_dataset *ds = parse("{\"path\": \"a.png\", \"labels\": [\"sky\", \"grass\"]}\n"
                            "\n# a comment\n"
                            "{\"path\": \"/abs/b.png\", \"labels\": []}\n"
                            "{\"path\": \"c.png\"}\n"
                            "{\"path\": \"d.png\", \"labels\": [\"sky\"], \"other\": 1}\r\n", NULL);
    cr_assert_eq(ds->multi_label, 1);
    cr_assert_eq(ds->count, 4);
    cr_assert_eq(ds->n_classes, 2);
    expect_hot(ds, 0, "grass,sky");
    expect_hot(ds, 1, "");
    expect_hot(ds, 2, "");
    expect_hot(ds, 3, "sky");
    cr_assert_str_eq(ds->name(ds, 0), "a.png");
    cr_assert_str_eq(ds->name(ds, 1), "/abs/b.png");
    osp_dataset_free(ds);
}

Test(multilabel, renumbered_by_the_models_labels) {
    const char *names[] = {"dog", "cat", "bird", "fish"};
    osp_image_data_options o = options();
    o.class_names = names;
    o.n_classes = 4;
    osp_dataset *ds = parse("a.png\tcat,dog\nb.png\t\nc.png\tbird,\n", &o);
    cr_assert_eq(ds->n_classes, 4);
    uint8_t hot[4];
    ds->labels_multi(ds, 0, hot);
    cr_assert(hot[0] && hot[1] && !hot[2] && !hot[3]);
    int32_t label;
    ds->label(ds, 2, &label);
    cr_assert_eq(label, 2);
    osp_dataset_free(ds);
    /* a label the model does not have */
    const char *few[] = {"cat", "dog"};
    o.class_names = few;
    o.n_classes = 2;
    osp_dataset *bad = (osp_dataset *)1;
    const char *text = "a.png\tcat,dog\nb.png\tcat,zebra\n";
    cr_assert_eq(osp_dataset_list_parse(text, strlen(text), "l.txt", ".", &o, &bad), OSP_EINVAL);
    cr_assert_null(bad);
    cr_assert(strstr(osp_last_error(), "'zebra'"), "%s", osp_last_error());
}

static void list_error(const char *text, const char *words) {
    osp_image_data_options o = options();
    osp_dataset *ds = (osp_dataset *)1;
    cr_assert_eq(osp_dataset_list_parse(text, strlen(text), "l.txt", ".", &o, &ds), OSP_EFORMAT,
                 "%s", text);
    cr_assert_null(ds);
    cr_assert(strstr(osp_last_error(), words), "'%s' lacks '%s'", osp_last_error(), words);
}

Test(multilabel, errors) {
    /* no comma anywhere: an empty field is an error, as before */
    list_error("a.png\tcat\nb.png\t\n", "l.txt:2: empty label");
    list_error("a.png\t\nb.png\t\n", "empty label");
    list_error("a.png\t,\nb.png\t\n", "no image has a label");
    list_error("{\"path\": \"a.png\", \"labels\": [\"x\"]}\nb.png\tcat\n", "l.txt:2: expected a JSON object");
    list_error("{\"labels\": [\"x\"]}\n", "l.txt:1: no \"path\"");
    list_error("{\"path\": \"a.png\", \"labels\": \"x\"}\n", "not a list of strings");
    list_error("{\"path\": \"a.png\", \"labels\": [3]}\n", "other than a non-empty string");
    list_error("{\"path\": \"a.png\", \"labels\": [\"\"]}\n", "other than a non-empty string");
    char long_label[400];
    memset(long_label, 'x', sizeof long_label);
    memcpy(long_label, "a.png\tcat,", 10);
    long_label[sizeof long_label - 1] = '\0';
    list_error(long_label, "longer than");
}

static char root[64];

static void make_root(void) {
    strcpy(root, "/tmp/osp-ml-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
}

static void remove_root(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    cr_assert_eq(system(cmd), 0);
}

Test(multilabel, split_and_loader_give_multi_hot_targets, .init = make_root, .fini = remove_root) {
    char path[256], list[4096] = "";
    size_t n;
    uint8_t *png = gen_png_rgb(8, 8, &n);
    static const char *tags[] = {"a,b", "", "c,", "a", "b,c", "a,b,c", "", "c"};
    for (int i = 0; i < 24; i++) {
        snprintf(path, sizeof path, "%s/%02d.png", root, i);
        gen_write(path, png, n);
        char line[64];
        snprintf(line, sizeof line, "%02d.png\t%s\n", i, tags[i % 8]);
        strcat(list, line);
    }
    free(png);
    snprintf(path, sizeof path, "%s/l.txt", root);
    gen_write(path, list, strlen(list));
    osp_image_data_options o = options();
    osp_dataset *ds, *train, *held;
    cr_assert_eq(osp_dataset_open(path, OSP_SPLIT_TRAIN, &o, &ds), OSP_OK, "%s", osp_last_error());
    cr_assert_eq(ds->multi_label, 1);
    cr_assert_eq(osp_dataset_split(ds, 0.25, &train, &held), OSP_OK, "%s", osp_last_error());
    cr_assert(train->multi_label && held->multi_label && train->labels_multi && held->labels_multi);
    cr_assert_eq(train->count + held->count, 24);
    for (int workers = 0; workers <= 2; workers += 2) {
        osp_loader_config c = osp_loader_defaults(train);
        c.batch = 5;
        c.workers = workers;
        c.n_classes = 4; /* wider than the data: the rest are 0 */
        c.multi_hot = 1;
        osp_loader *l;
        cr_assert_eq(osp_loader_new(train, &c, &l), OSP_OK, "%s", osp_last_error());
        cr_assert_eq(osp_loader_start(l, 0, NULL, train->count, 0), OSP_OK);
        float x[5 * 3 * 8 * 8], t[5 * 4];
        int32_t labels[5];
        int got, seen = 0;
        while (osp_loader_next_hot(l, x, t, &got) == OSP_OK && got > 0) {
            for (int k = 0; k < got; k++) {
                uint8_t hot[3];
                train->labels_multi(train, seen + k, hot);
                for (int c2 = 0; c2 < 3; c2++) cr_assert_eq(t[k * 4 + c2], (float)hot[c2]);
                cr_assert_eq(t[k * 4 + 3], 0.0f);
            }
            seen += got;
        }
        cr_assert_eq(seen, train->count);
        /* the int interface still works (first label or -1, unchecked) */
        cr_assert_eq(osp_loader_start(l, 0, NULL, train->count, 0), OSP_OK);
        cr_assert_eq(osp_loader_next(l, x, labels, &got), OSP_OK, "%s", osp_last_error());
        osp_loader_free(l);
    }
    /* multi-hot from a single-label dataset is refused */
    osp_dataset *single;
    const char *text = "00.png\tcat\n";
    cr_assert_eq(osp_dataset_list_parse(text, strlen(text), "s.txt", root, &o, &single), OSP_OK);
    osp_loader_config c = osp_loader_defaults(single);
    c.multi_hot = 1;
    c.n_classes = 1;
    osp_loader *l = NULL;
    cr_assert_eq(osp_loader_new(single, &c, &l), OSP_EINVAL);
    osp_dataset_free(single);
    osp_dataset_free(train);
    osp_dataset_free(held);
}
