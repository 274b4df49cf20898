/* Training is reproducible: the same seed gives the same losses and weights,
 * and a run stopped at a checkpoint and resumed gives exactly the losses and
 * weights of a run that never stopped. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/train.h"
#include "synth.h"

static const char *SPEC =
    "[net]\ninput = 1x8x8\n"
    "[conv]\nfilters = 4\nsize = 3\npad = 1\n"
    "[batchnorm]\n[relu]\n[maxpool]\nsize = 2\n"
    "[fc]\noutputs = 16\n[dropout]\np = 0.25\n[relu]\n"
    "[fc]\noutputs = 4\n";

#define MAX_STEPS 64

typedef struct record {
    int n;
    double loss[MAX_STEPS];
} record;

static void keep_loss(const osp_train_progress *p, void *user) {
    record *r = user;
    if (r->n < MAX_STEPS) r->loss[r->n++] = p->step_loss;
}

static osp_train_config config(record *rec, osp_optim_kind kind) {
    osp_train_config cfg = osp_train_defaults();
    cfg.epochs = 3;
    cfg.batch = 16;
    cfg.lr = 0.05f;
    cfg.optim = osp_optim_defaults(kind);
    cfg.schedule.kind = OSP_SCHED_COSINE;
    cfg.warmup_epochs = 1;
    cfg.seed = 99;
    cfg.on_step = keep_loss;
    cfg.user = rec;
    return cfg;
}

static float *run_full(osp_dataset *ds, record *rec, osp_optim_kind kind, int64_t *n) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 99, &net), 0, "%s", osp_last_error());
    osp_train_config cfg = config(rec, kind);
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, NULL, 0), 0, "%s", osp_last_error());
    float *w = osp_graph_weights(net->graph, n);
    float *copy = malloc((size_t)*n * sizeof(float));
    memcpy(copy, w, (size_t)*n * sizeof(float));
    osp_net_free(net);
    return copy;
}

static void check_resume(osp_optim_kind kind) {
    osp_threads_set(2);
    osp_dataset *ds = synth_dataset(100, 1, 8, 8, 4, 5);
    record full = {0}, again = {0}, part = {0};
    int64_t n;
    float *w_full = run_full(ds, &full, kind, &n);
    float *w_again = run_full(ds, &again, kind, &n);
    cr_assert_eq(full.n, 21);
    cr_assert(!memcmp(full.loss, again.loss, sizeof full.loss), "same seed, different losses");
    cr_assert(!memcmp(w_full, w_again, (size_t)n * sizeof(float)), "same seed, different weights");

    char dir[] = "/tmp/osp-resume-XXXXXX", path[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/run.ckpt", dir);
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 99, &net), 0);
    osp_train_config cfg = config(&part, kind);
    cfg.checkpoint = path;
    cfg.stop_after = 10; /* mid-epoch: 7 steps per epoch */
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, NULL, 0), 0, "%s", osp_last_error());
    osp_net_free(net);
    cr_assert_eq(part.n, 10);

    osp_optim *opt;
    osp_train_state st;
    cr_assert_eq(osp_checkpoint_load(path, &net, &opt, &st), 0, "%s", osp_last_error());
    cr_assert_eq(st.step, 10);
    cr_assert_eq(st.seed, 99);
    cfg.stop_after = 0;
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, opt, st.step), 0, "%s", osp_last_error());
    cr_assert_eq(part.n, 21);
    for (int i = 0; i < 21; i++)
        cr_expect_eq(part.loss[i], full.loss[i], "step %d: %.9g vs %.9g", i, part.loss[i], full.loss[i]);
    float *w = osp_graph_weights(net->graph, NULL);
    cr_assert(!memcmp(w, w_full, (size_t)n * sizeof(float)), "resumed weights differ");
    osp_net_free(net);
    osp_optim_free(opt);
    osp_free(st.config);
    unlink(path);
    rmdir(dir);
    free(w_full);
    free(w_again);
    osp_dataset_free(ds);
}

Test(resume, sgd_bit_exact) { check_resume(OSP_OPTIM_SGD); }

Test(resume, adam_bit_exact) { check_resume(OSP_OPTIM_ADAM); }

Test(train, learns_synthetic) {
    osp_dataset *ds = synth_dataset(200, 1, 8, 8, 4, 7);
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 3, &net), 0);
    record rec = {0};
    osp_train_config cfg = config(&rec, OSP_OPTIM_SGD);
    cfg.epochs = 5;
    cfg.on_step = NULL;
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, NULL, 0), 0, "%s", osp_last_error());
    osp_eval_result r;
    cr_assert_eq(osp_train_evaluate(net, ds, 32, &r), 0, "%s", osp_last_error());
    cr_expect_gt(r.top1, 0.9, "top-1 %g", r.top1);
    cr_expect_eq(r.count, 200);
    cr_expect_eq(r.top5, 1.0); /* 4 classes: always in the top 5 */
    osp_net_free(net);
    osp_dataset_free(ds);
}

Test(train, rejects_mismatched_data) {
    osp_dataset *ds = synth_dataset(10, 1, 6, 6, 4, 7);
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 3, &net), 0);
    osp_train_config cfg = osp_train_defaults();
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, NULL, 0), OSP_ESHAPE);
    cr_assert(strstr(osp_last_error(), "1x6x6") && strstr(osp_last_error(), "1x8x8"), "%s", osp_last_error());
    osp_net_free(net);
    osp_dataset_free(ds);
}
