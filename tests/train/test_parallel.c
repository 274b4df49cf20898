/* Parallel training without MPI: Hogwild workers learn, stop and resume;
 * checkpoints are found, checked and pruned; a run's step carries over to
 * another batch size; the synthetic dataset is the same for every reader.
 * (MPI runs are end-to-end tests: tests/cli/distributed.sh, fault.sh.) */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/train.h"
#include "synth.h"
#include "tmpdir.h"

static const char *SPEC =
    "[net]\ninput = 1x8x8\n"
    "[conv]\nfilters = 4\nsize = 3\npad = 1\n"
    "[batchnorm]\n[relu]\n[maxpool]\nsize = 2\n"
    "[fc]\noutputs = 16\n[relu]\n"
    "[fc]\noutputs = 4\n";

static osp_train_config config(void) {
    osp_train_config cfg = osp_train_defaults();
    cfg.epochs = 5;
    cfg.batch = 16;
    cfg.lr = 0.05f;
    cfg.seed = 5;
    return cfg;
}

typedef struct seen {
    int calls, epoch_ends, ranks;
    int64_t last_step;
} seen;

static void count_steps(const osp_train_progress *p, void *user) {
    seen *s = user;
    s->calls++;
    s->epoch_ends += p->epoch_end;
    s->ranks = p->ranks;
    s->last_step = p->step;
}

Test(hogwild, learns_synthetic) {
    osp_dataset *ds = synth_dataset(400, 1, 8, 8, 4, 7);
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 3, &net), 0, "%s", osp_last_error());
    osp_train_config cfg = config();
    seen s = {0};
    cfg.hogwild = 3;
    cfg.lr = 0.02f;
    cfg.on_step = count_steps;
    cfg.user = &s;
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, NULL, 0), 0, "%s", osp_last_error());
    cr_expect_eq(s.epoch_ends, 5);
    cr_expect_eq(s.ranks, 3);
    cr_expect_eq(s.last_step, 5 * 25);
    osp_eval_result r;
    cr_assert_eq(osp_train_evaluate(net, ds, 64, &r), 0, "%s", osp_last_error());
    cr_expect_gt(r.top1, 0.9, "top-1 %g", r.top1);
    osp_net_free(net);
    osp_dataset_free(ds);
}

Test(hogwild, stops_checkpoints_and_resumes) {
    osp_dataset *ds = synth_dataset(200, 1, 8, 8, 4, 9);
    char path[300];
    tmpdir_make();
    snprintf(path, sizeof path, "%s", tmpdir_path("hog.ckpt"));
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 3, &net), 0);
    osp_train_config cfg = config();
    cfg.hogwild = 2;
    cfg.checkpoint = path;
    cfg.stop_after = 20; /* mid-epoch 2: 13 steps an epoch */
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, NULL, 0), 0, "%s", osp_last_error());
    osp_net_free(net);
    osp_optim *opt;
    osp_train_state st;
    cr_assert_eq(osp_checkpoint_load(path, &net, &opt, &st), 0, "%s", osp_last_error());
    cr_expect_eq(st.step, 20);
    cr_expect_eq(osp_checkpoint_verify(net, opt, &st, path), 0, "%s", osp_last_error());
    cfg.stop_after = 0;
    seen s = {0};
    cfg.on_step = count_steps;
    cfg.user = &s;
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, opt, st.step), 0, "%s", osp_last_error());
    cr_expect_eq(s.last_step, 65);
    cr_expect_eq(s.epoch_ends, 4); /* epochs 2 to 5 */
    osp_net_free(net);
    osp_optim_free(opt);
    osp_free(st.config);
    tmpdir_remove();
    osp_dataset_free(ds);
}

static void corrupt(const char *path, long from_end) {
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    fseek(f, -from_end, SEEK_END);
    fputs("XXXX", f);
    fclose(f);
}

Test(checkpoints, newest_valid_is_found) {
    osp_dataset *ds = synth_dataset(64, 1, 8, 8, 4, 9);
    char path[300], other[400];
    tmpdir_make();
    snprintf(path, sizeof path, "%s", tmpdir_path("run.ckpt"));
    char *found = NULL;
    int64_t step = -1;
    cr_expect_eq(osp_checkpoint_find_latest(path, &found, &step), OSP_ENOENT);
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 3, &net), 0);
    osp_train_config cfg = config();
    cfg.checkpoint = path;
    cfg.checkpoint_every = 2;
    cfg.keep_checkpoints = 2;
    cfg.stop_after = 7; /* 4 steps an epoch: checkpoints at 2, 4, 6, 7 */
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, NULL, 0), 0, "%s", osp_last_error());
    osp_net_free(net);
    /* kept: the newest two numbered copies */
    for (int s = 2; s <= 7; s++) {
        snprintf(other, sizeof other, "%s-step%09d", path, s);
        cr_expect_eq(access(other, F_OK) == 0, s >= 6, "step %d", s);
    }
    cr_assert_eq(osp_checkpoint_find_latest(path, &found, &step), 0, "%s", osp_last_error());
    cr_expect_eq(step, 7);
    osp_free(found);
    /* The newest two damaged: the step-6 copy is the newest valid one, and
     * a leftover temporary file goes. */
    snprintf(other, sizeof other, "%s-step%09d", path, 7);
    unlink(other); /* a hard link to run.ckpt: replace it with a damaged copy */
    corrupt(path, 64);
    snprintf(other, sizeof other, "%s.tmp.999.0", path);
    FILE *f = fopen(other, "w");
    fputs("partial", f);
    fclose(f);
    cr_assert_eq(osp_checkpoint_find_latest(path, &found, &step), 0, "%s", osp_last_error());
    cr_expect_eq(step, 6);
    cr_expect(strstr(found, "-step000000006") != NULL, "%s", found);
    cr_expect_neq(access(other, F_OK), 0, "the temporary file is still there");
    osp_free(found);
    tmpdir_remove();
    osp_dataset_free(ds);
}

Test(train, convert_step) {
    /* 100 samples: batch 10 has 10 steps an epoch, batch 40 has 3. */
    cr_expect_eq(osp_train_convert_step(100, 10, 10, 37), 37);
    cr_expect_eq(osp_train_convert_step(100, 10, 40, 20), 6);  /* epoch 2 start */
    cr_expect_eq(osp_train_convert_step(100, 10, 40, 25), 7);  /* 50 done: batch 1 of epoch 2 */
    cr_expect_eq(osp_train_convert_step(100, 40, 10, 4), 14);  /* 40 done in epoch 1 */
}

Test(data, synthetic_is_deterministic) {
    osp_shape shape = osp_shape_make(3, (int64_t[]){3, 4, 4});
    osp_dataset *a, *b;
    cr_assert_eq(osp_dataset_synthetic(&shape, 10, 0, 100, 1, &a), 0);
    cr_assert_eq(osp_dataset_synthetic(&shape, 10, 0, 100, 1, &b), 0);
    float x[48], y[48];
    int32_t la, lb;
    cr_assert_eq(a->get(a, 57, x, &la), 0);
    cr_assert_eq(b->get(b, 57, y, &lb), 0);
    cr_expect_eq(la, 7);
    cr_expect_eq(lb, 7);
    cr_expect(!memcmp(x, y, sizeof x));
    cr_expect_neq(a->get(a, 100, x, &la), 0);
    osp_dataset_free(b);
    cr_assert_eq(osp_dataset_synthetic(&shape, 10, 50, 100, 1, &b), 0);
    cr_assert_eq(b->get(b, 7, y, &lb), 0);
    cr_expect_eq(lb, 7);
    cr_expect(!memcmp(x, y, sizeof x), "sample 57 is sample 7 of a set from 50");
    osp_dataset_free(a);
    osp_dataset_free(b);
}
