/* Training on an image folder through the prefetching loader: with random
 * crops, flips and jitter, and an unreadable file among the images, a run
 * is the same bit for bit whatever the number of decoding workers, and a
 * run stopped mid-epoch and resumed matches one that never stopped. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "imagegen.h"
#include "osprey/train.h"

static char root[64];

static const char *SPEC =
    "[net]\ninput = 3x8x8\nmean = 0.5, 0.5, 0.5\nstd = 0.25, 0.25, 0.25\n"
    "[conv]\nfilters = 4\nsize = 3\npad = 1\n[relu]\n[maxpool]\nsize = 2\n"
    "[fc]\noutputs = 2\n";

/* 20 red-ish and 20 blue-ish noisy images, JPEG and PNG, and one broken. */
static void make_data(void) {
    strcpy(root, "/tmp/osp-train-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
    char path[256];
    osp_rng r;
    osp_rng_seed(&r, 3);
    for (int c = 0; c < 2; c++) {
        snprintf(path, sizeof path, "%s/%s", root, c ? "red" : "blue");
        mkdir(path, 0755);
        for (int i = 0; i < 20; i++) {
            int w = 12 + i % 7, h = 10 + i % 5;
            uint8_t *px = malloc((size_t)w * h * 3);
            for (int k = 0; k < w * h; k++) {
                uint8_t noise = (uint8_t)osp_rng_below(&r, 100);
                px[3 * k] = (uint8_t)(c ? 150 + noise : noise);
                px[3 * k + 1] = (uint8_t)osp_rng_below(&r, 256);
                px[3 * k + 2] = (uint8_t)(c ? noise : 150 + noise);
            }
            size_t n;
            uint8_t *f = i % 2 ? gen_png(px, w, h, 8, PNG_COLOR_TYPE_RGB, 0, NULL, 0, NULL, 0, &n)
                               : gen_jpeg(px, w, h, TJPF_RGB, TJSAMP_420, 90, &n);
            snprintf(path, sizeof path, "%s/%s/%02d.%s", root, c ? "red" : "blue", i, i % 2 ? "png" : "jpg");
            gen_write(path, f, n);
            free(f);
            free(px);
        }
    }
    snprintf(path, sizeof path, "%s/red/05-broken.jpg", root);
    gen_write(path, "\xff\xd8\xff\xe0 cut short", 14);
}

static void remove_data(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    cr_assert_eq(system(cmd), 0);
}

#define MAX_STEPS 64

typedef struct record {
    int n;
    double loss[MAX_STEPS];
} record;

static void keep_loss(const osp_train_progress *p, void *user) {
    record *r = user;
    if (r->n < MAX_STEPS) r->loss[r->n++] = p->step_loss;
}

static osp_dataset *open_data(int workers, int prefetch) {
    osp_image_data_options o = {.transform = osp_transform_defaults(3, 8, 8)};
    o.transform.augment.crop = 1;
    o.transform.augment.scale_min = 0.3f;
    o.transform.augment.flip = 1;
    o.transform.augment.jitter = 0.2f;
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_open_folder(root, &o, &ds), OSP_OK, "%s", osp_last_error());
    ds->load_workers = workers;
    ds->load_prefetch = prefetch;
    return ds;
}

static osp_train_config config(record *rec, const char *checkpoint, int64_t stop) {
    osp_train_config cfg = osp_train_defaults();
    cfg.epochs = 3;
    cfg.batch = 8;
    cfg.lr = 0.05f;
    cfg.seed = 11;
    cfg.on_step = keep_loss;
    cfg.user = rec;
    cfg.checkpoint = checkpoint;
    cfg.stop_after = stop;
    return cfg;
}

static float *train(int workers, int prefetch, record *rec, int64_t *n) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 11, &net), 0);
    osp_dataset *ds = open_data(workers, prefetch);
    osp_train_config cfg = config(rec, NULL, 0);
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, NULL, 0), 0, "%s", osp_last_error());
    cr_assert_eq(osp_dataset_skipped(ds), 1);
    float *w = osp_graph_weights(net->graph, n);
    float *copy = malloc((size_t)*n * sizeof(float));
    memcpy(copy, w, (size_t)*n * sizeof(float));
    osp_dataset_free(ds);
    osp_net_free(net);
    return copy;
}

Test(train_images, same_run_for_any_workers, .init = make_data, .fini = remove_data) {
    osp_threads_set(2);
    osp_log_set_level(OSP_LOG_ERROR); /* the skipped-file warnings */
    record a = {0}, b = {0}, c = {0};
    int64_t n;
    float *wa = train(1, 1, &a, &n);
    float *wb = train(2, 3, &b, &n);
    float *wc = train(0, 0, &c, &n);
    cr_assert_eq(a.n, 18); /* 3 epochs of ceil(41 / 8) steps */
    cr_assert(!memcmp(a.loss, b.loss, sizeof a.loss), "losses differ with 2 workers");
    cr_assert(!memcmp(a.loss, c.loss, sizeof a.loss), "losses differ without workers");
    cr_assert(!memcmp(wa, wb, (size_t)n * sizeof(float)));
    cr_assert(!memcmp(wa, wc, (size_t)n * sizeof(float)));
    cr_assert_lt(a.loss[17], a.loss[0], "it did not learn: %g -> %g", a.loss[0], a.loss[17]);
    free(wa);
    free(wb);
    free(wc);
}

Test(train_images, resume_mid_epoch, .init = make_data, .fini = remove_data) {
    osp_threads_set(2);
    osp_log_set_level(OSP_LOG_ERROR);
    record full = {0}, part = {0};
    int64_t n;
    float *w_full = train(2, 2, &full, &n);
    char path[128];
    snprintf(path, sizeof path, "%s.ckpt", root);
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 11, &net), 0);
    osp_dataset *ds = open_data(2, 2);
    osp_train_config cfg = config(&part, path, 9); /* mid-epoch 2 (6 steps an epoch) */
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, NULL, 0), 0, "%s", osp_last_error());
    osp_net_free(net);
    osp_optim *opt;
    osp_train_state st;
    cr_assert_eq(osp_checkpoint_load(path, &net, &opt, &st), 0, "%s", osp_last_error());
    cr_assert_eq(st.step, 9);
    cfg = config(&part, path, 0);
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, opt, st.step), 0, "%s", osp_last_error());
    cr_assert_eq(part.n, 18);
    cr_assert(!memcmp(full.loss, part.loss, sizeof full.loss), "the resumed run differs");
    cr_assert(!memcmp(w_full, osp_graph_weights(net->graph, NULL), (size_t)n * sizeof(float)));
    osp_net_free(net);
    osp_optim_free(opt);
    osp_free(st.config);
    osp_dataset_free(ds);
    remove(path);
    free(w_full);
}

Test(train_images, evaluation_leaves_out_unreadable, .init = make_data, .fini = remove_data) {
    osp_threads_set(2);
    osp_log_set_level(OSP_LOG_ERROR);
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 11, &net), 0);
    osp_dataset *ds = open_data(2, 2);
    osp_eval_result r;
    cr_assert_eq(osp_train_evaluate(net, ds, 16, &r), 0, "%s", osp_last_error());
    cr_assert_eq(r.count, 40);
    cr_assert_eq(osp_dataset_skipped(ds), 1);
    osp_dataset_free(ds);
    osp_net_free(net);
}
