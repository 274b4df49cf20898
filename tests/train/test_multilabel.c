/* Multi-label training: bce chosen for multi-label data, the network
 * marked multi-label, thresholds chosen on validation data and kept by a
 * saved model; Hogwild; the metrics of osp_train_evaluate_multilabel; and
 * refusals before training starts. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/io.h"
#include "osprey/train.h"

static const char *SPEC = "[net]\ninput = 1x4x4\n[fc]\noutputs = 16\n[relu]\n[fc]\noutputs = 3\n";

/* Sample i of a small in-memory set: labels are the bits of (i % 8), so
 * 0 is a negative; the pixels show each bit in its own place, with a
 * little noise. first offsets the indexes (another first: other samples). */
typedef struct mem {
    int64_t first;
    int multi;
} mem;

static int bits_of(const osp_dataset *ds, int64_t i) {
    const mem *m = ds->impl;
    return (int)((i + m->first) % 8);
}

static int mem_get(osp_dataset *ds, int64_t i, float *out, int32_t *label) {
    const mem *m = ds->impl;
    int b = bits_of(ds, i);
    osp_rng r;
    osp_rng_seed(&r, (uint64_t)(i + m->first) * 977 + 1);
    for (int k = 0; k < 16; k++) out[k] = 0.3f * osp_rng_uniform(&r);
    for (int c = 0; c < 3; c++)
        if (b >> c & 1) out[c * 5] += 1.0f;
    int32_t first = -1;
    for (int c = 2; c >= 0; c--)
        if (b >> c & 1) first = c;
    *label = m->multi ? first : b % 3;
    return OSP_OK;
}

static int mem_hot(const osp_dataset *ds, int64_t i, uint8_t *hot) {
    int b = bits_of(ds, i);
    for (int c = 0; c < 3; c++) hot[c] = (uint8_t)(b >> c & 1);
    return OSP_OK;
}

static void mem_destroy(osp_dataset *ds) {
    free(ds->impl);
    free(ds);
}

static const char *NAMES[3] = {"a", "b", "c"};

static osp_dataset *mem_new(int64_t first, int64_t count, int multi) {
    osp_dataset *ds = calloc(1, sizeof *ds);
    mem *m = calloc(1, sizeof *m);
    cr_assert(ds && m);
    m->first = first;
    m->multi = multi;
    int64_t dims[3] = {1, 4, 4};
    ds->sample_shape = osp_shape_make(3, dims);
    ds->count = count;
    ds->n_classes = 3;
    ds->class_names = (char **)NAMES;
    ds->source = "mem";
    ds->get = mem_get;
    ds->destroy = mem_destroy;
    ds->impl = m;
    if (multi) {
        ds->multi_label = 1;
        ds->labels_multi = mem_hot;
    }
    return ds;
}

static osp_net *new_net(void) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 3, &net), 0, "%s", osp_last_error());
    return net;
}

static osp_train_config config(void) {
    osp_train_config c = osp_train_defaults();
    c.epochs = 30;
    c.batch = 16;
    c.lr = 0.1f;
    c.seed = 4;
    return c;
}

Test(multilabel_train, learns_and_stores_thresholds) {
    osp_net *net = new_net();
    osp_dataset *data = mem_new(0, 256, 1), *val = mem_new(1000, 64, 1);
    osp_train_config c = config();
    cr_assert_eq(osp_net_multi_label(net), 0);
    cr_assert_eq(osp_train(net, data, val, &c, NULL, 0), 0, "%s", osp_last_error());
    cr_assert_eq(osp_net_multi_label(net), 1);
    cr_assert_not_null(net->thresholds);
    osp_multilabel_eval *e;
    cr_assert_eq(osp_train_evaluate_multilabel(net, val, 32, &e), 0, "%s", osp_last_error());
    cr_assert_eq(e->count, 64);
    cr_assert_eq(e->n_labels, 3);
    cr_assert_gt(e->map, 0.95, "mAP %g", e->map);
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(e->positives[k], 32);
        cr_assert_gt(e->f1[k], 0.9, "label %d F1 %g", k, e->f1[k]);
        cr_assert_float_eq(e->threshold[k], net->thresholds[k], 0);
        cr_assert(e->best_f1[k] >= e->f1[k] - 1e-12);
    }
    cr_assert_gt(e->micro_f1, 0.9);
    osp_eval_result r;
    cr_assert_eq(osp_train_evaluate(net, val, 32, &r), 0, "%s", osp_last_error());
    cr_assert_float_eq(r.top1, e->subset_accuracy, 1e-12);
    cr_assert(isnan(r.top5));
    cr_assert_float_eq(r.loss, e->loss, 1e-9);
    osp_multilabel_eval_free(e);

    /* The model file keeps the flag and the thresholds. */
    char path[] = "/tmp/osp-ml-model-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    cr_assert_eq(osp_model_save(net, path), 0, "%s", osp_last_error());
    osp_net *back;
    cr_assert_eq(osp_model_load(path, &back), 0, "%s", osp_last_error());
    cr_assert_eq(osp_net_multi_label(back), 1);
    for (int k = 0; k < 3; k++) cr_assert_eq(osp_net_threshold(back, k), net->thresholds[k]);
    osp_net_free(back);
    unlink(path);
    osp_net_free(net);
    osp_dataset_free(data);
    osp_dataset_free(val);
}

Test(multilabel_train, reproducible_bit_for_bit) {
    float *w[2];
    for (int run = 0; run < 2; run++) {
        osp_net *net = new_net();
        osp_dataset *data = mem_new(0, 100, 1);
        osp_train_config c = config();
        c.epochs = 3;
        cr_assert_eq(osp_train(net, data, NULL, &c, NULL, 0), 0, "%s", osp_last_error());
        cr_assert_null(net->thresholds); /* no validation set: 0.5 */
        cr_assert_eq(osp_net_threshold(net, 1), 0.5f);
        int64_t n;
        const float *p = osp_graph_weights(net->graph, &n);
        w[run] = malloc((size_t)n * sizeof(float));
        memcpy(w[run], p, (size_t)n * sizeof(float));
        if (run) cr_assert_eq(memcmp(w[0], w[1], (size_t)n * sizeof(float)), 0);
        osp_net_free(net);
        osp_dataset_free(data);
    }
    free(w[0]);
    free(w[1]);
}

/* Hogwild workers take multi-hot batches too: the model learns the labels
 * (it was refused before). */
Test(multilabel_train, hogwild_learns) {
    osp_net *net = new_net();
    osp_dataset *data = mem_new(0, 256, 1), *val = mem_new(1000, 64, 1);
    osp_train_config c = config();
    c.hogwild = 2;
    cr_assert_eq(osp_train(net, data, val, &c, NULL, 0), 0, "%s", osp_last_error());
    cr_assert_eq(osp_net_multi_label(net), 1);
    cr_assert_not_null(net->thresholds);
    osp_multilabel_eval *e;
    cr_assert_eq(osp_train_evaluate_multilabel(net, val, 32, &e), 0, "%s", osp_last_error());
    cr_assert_gt(e->map, 0.9, "mAP %g", e->map);
    cr_assert_gt(e->micro_f1, 0.85, "micro-F1 %g", e->micro_f1);
    osp_multilabel_eval_free(e);
    osp_net_free(net);
    osp_dataset_free(data);
    osp_dataset_free(val);
}

Test(multilabel_train, refusals_before_training) {
    osp_net *net = new_net();
    osp_dataset *multi = mem_new(0, 64, 1), *single = mem_new(0, 64, 0);
    osp_train_config c = config();
    c.loss = OSP_LOSS_SOFTMAX;
    cr_assert_eq(osp_train(net, multi, NULL, &c, NULL, 0), OSP_EINVAL);
    cr_assert(strstr(osp_last_error(), "--loss bce"), "%s", osp_last_error());
    c.loss = OSP_LOSS_BCE;
    cr_assert_eq(osp_train(net, single, NULL, &c, NULL, 0), OSP_EINVAL);
    cr_assert(strstr(osp_last_error(), "one label per image"), "%s", osp_last_error());
    c.loss = OSP_LOSS_AUTO;
    cr_assert_eq(osp_train(net, multi, single, &c, NULL, 0), OSP_EINVAL);
    cr_assert(strstr(osp_last_error(), "single-label"), "%s", osp_last_error());
    cr_assert_eq(osp_net_multi_label(net), 0); /* nothing happened to it */
    /* a single-label model does not evaluate multi-label data */
    osp_multilabel_eval *e = (osp_multilabel_eval *)1;
    cr_assert_eq(osp_train_evaluate_multilabel(net, multi, 16, &e), OSP_EINVAL);
    cr_assert_null(e);
    cr_assert_eq(osp_net_set_thresholds(net, (float[]){0.5f, 0.5f, 0.5f}, 3), OSP_EINVAL);
    osp_net_set_multi_label(net, 1);
    cr_assert_eq(osp_net_set_thresholds(net, (float[]){0.5f, 1.0f, 0.5f}, 3), OSP_EINVAL);
    cr_assert_eq(osp_net_set_thresholds(net, (float[]){0.5f, 0.5f}, 2), OSP_EINVAL);
    osp_loss l;
    cr_assert_eq(osp_loss_parse("bce", &l), 0);
    cr_assert_eq(l, OSP_LOSS_BCE);
    cr_assert_eq(osp_loss_parse("nope", &l), OSP_EINVAL);
    cr_assert_str_eq(osp_loss_name(OSP_LOSS_SOFTMAX), "softmax");
    osp_net_free(net);
    osp_dataset_free(multi);
    osp_dataset_free(single);
}

/* A network whose logits are its inputs (fc with identity weights): the
 * scores are the sigmoids of the samples' values, so AP, F1 and the best
 * thresholds can be worked out by hand. Label 0, by descending score:
 * positive, negative, positive, negative: AP = (1/1 + 2/3) / 2; F1 is best
 * (0.8) keeping the top three, with a threshold half-way between the third
 * and the fourth score. Label 1 has no positive; label 2 is perfect. */
static const float LOGITS[4][3] = {{3, 0, 2}, {1, 0, -2}, {0, 0, 1}, {-1, 0, -1}};
static const uint8_t TRUTH[4][3] = {{1, 0, 1}, {0, 0, 0}, {1, 0, 1}, {0, 0, 0}};

static int fixed_get(osp_dataset *ds, int64_t i, float *out, int32_t *label) {
    (void)ds;
    memcpy(out, LOGITS[i], sizeof LOGITS[i]);
    *label = -1;
    return OSP_OK;
}

static int fixed_hot(const osp_dataset *ds, int64_t i, uint8_t *hot) {
    (void)ds;
    memcpy(hot, TRUTH[i], 3);
    return OSP_OK;
}

/* The dataset below lives on the stack: osp_dataset_free releases only the
 * skip log its loader made. */
static void stack_destroy(osp_dataset *ds) { (void)ds; }

static float sig(float x) { return 1.0f / (1.0f + expf(-x)); }

Test(multilabel_train, metrics_by_hand) {
    const char *spec = "[net]\ninput = 3\n[fc]\noutputs = 3\n";
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(spec, strlen(spec), "spec", 1, &net), 0, "%s", osp_last_error());
    float *w = osp_graph_param_data(net->graph, 0), *b = osp_graph_param_data(net->graph, 1);
    memset(w, 0, 9 * sizeof(float));
    for (int k = 0; k < 3; k++) w[k * 3 + k] = 1, b[k] = 0;
    osp_graph_weights_changed(net->graph);
    osp_net_set_multi_label(net, 1);
    osp_dataset ds = {.count = 4, .n_classes = 3, .source = "fixed", .get = fixed_get,
                      .destroy = stack_destroy, .multi_label = 1, .labels_multi = fixed_hot};
    int64_t d = 3;
    ds.sample_shape = osp_shape_make(1, &d);
    osp_multilabel_eval *e;
    cr_assert_eq(osp_multilabel_thresholds(net, &ds, 4, &e), 0, "%s", osp_last_error());
    cr_assert_float_eq(e->ap[0], (1 + 2.0 / 3) / 2, 1e-12);
    cr_assert(isnan(e->ap[1]));
    cr_assert_float_eq(e->ap[2], 1.0, 1e-12);
    cr_assert_float_eq(e->map, ((1 + 2.0 / 3) / 2 + 1) / 2, 1e-12);
    /* at 0.5: label 0 says yes to logits 3, 1 (0 is exactly 0.5: yes too) */
    cr_assert_float_eq(e->precision[0], 2.0 / 3, 1e-12);
    cr_assert_float_eq(e->recall[0], 1.0, 1e-12);
    cr_assert_float_eq(e->f1[0], 0.8, 1e-12);
    cr_assert_float_eq(e->best_f1[0], 0.8, 1e-12);
    cr_assert_float_eq(e->best_threshold[0], 0.5f * (sig(0) + sig(-1)), 1e-6);
    cr_assert_eq(e->best_threshold[1], 0.5f); /* no positive: the default */
    cr_assert_float_eq(e->best_f1[2], 1.0, 1e-12);
    cr_assert(e->best_threshold[2] > sig(-1) && e->best_threshold[2] <= sig(1));
    cr_assert_eq(e->positives[1], 0);
    cr_assert_float_eq(e->macro_f1, (0.8 + 1.0) / 2, 1e-12);
    /* tp 2 + 0 + 2; fp 1 + 4 (label 1 says yes to its 0.5 scores) + 0 */
    cr_assert_float_eq(e->micro_precision, 4.0 / 9, 1e-12);
    /* the thresholds were stored */
    for (int k = 0; k < 3; k++) cr_assert_eq(osp_net_threshold(net, k), e->best_threshold[k]);
    osp_multilabel_eval_free(e);
    osp_net_free(net);
    osp_dataset_free(&ds); /* the loader's log of unreadable samples */
}
