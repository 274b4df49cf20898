/* The configuration advisor: its choice on given measurement tables (a pure
 * function), its planned memory against the resident memory a training
 * step really takes, and its refusals before any measurement. */
#include <criterion/criterion.h>
#include <string.h>

#include "osprey/train.h"

#define MIB ((int64_t)1 << 20)

/* A measured point; planned memory 1 MiB per 8 samples. */
static osp_advise_point pt(int batch, int threads, double ips) {
    return (osp_advise_point){.batch = batch, .threads = threads, .steps = 5, .step_s = batch / ips,
                              .images_per_s = ips, .planned_bytes = batch / 8 * MIB, .rss_bytes = -1};
}

Test(advise_recommend, fastest_batch_and_its_best_threads) {
    osp_advise_point t[] = {pt(8, 4, 1000), pt(16, 4, 1500), pt(32, 4, 2000), pt(64, 4, 1800),
                            pt(32, 1, 700), pt(32, 2, 2100)};
    osp_advice a;
    cr_assert_eq(osp_advise_recommend(t, 6, 4, 0, 0.05, &a), 0, "%s", osp_last_error());
    cr_assert_eq(a.batch, 32);
    cr_assert_eq(a.threads, 2, "2 threads were fastest at batch 32");
    cr_assert_float_eq(a.images_per_s, 2100, 1e-9);
    cr_assert_eq(a.best_batch, 32);
    cr_assert_eq(a.planned_bytes, 4 * MIB);
}

Test(advise_recommend, smaller_batch_within_tolerance_wins) {
    osp_advise_point t[] = {pt(8, 2, 1000), pt(16, 2, 1930), pt(32, 2, 1990), pt(64, 2, 2000)};
    osp_advice a;
    cr_assert_eq(osp_advise_recommend(t, 4, 2, 0, 0.05, &a), 0);
    cr_assert_eq(a.batch, 16, "1930 is within 5%% of 2000");
    cr_assert_eq(a.best_batch, 64);
    cr_assert(strstr(a.reason, "smaller batch"), "%s", a.reason);
    /* No tolerance: the fastest. */
    cr_assert_eq(osp_advise_recommend(t, 4, 2, 0, 0, &a), 0);
    cr_assert_eq(a.batch, 64);
}

Test(advise_recommend, memory_budget_leaves_out_big_batches) {
    osp_advise_point t[] = {pt(8, 2, 1000), pt(16, 2, 1500), pt(32, 2, 2000), pt(64, 2, 2600)};
    osp_advice a;
    /* batch 64 plans 8 MiB, batch 32 plans 4 */
    cr_assert_eq(osp_advise_recommend(t, 4, 2, 5 * MIB, 0.05, &a), 0);
    cr_assert_eq(a.batch, 32);
    cr_assert_eq(a.best_batch, 32);
    cr_assert(a.planned_bytes <= 5 * MIB);
    cr_assert(strstr(a.reason, "budget"), "%s", a.reason);
    /* Nothing fits. */
    cr_assert_eq(osp_advise_recommend(t, 4, 2, MIB / 2, 0.05, &a), OSP_ERANGE);
    cr_assert(strstr(osp_last_error(), "memory budget"), "%s", osp_last_error());
}

Test(advise_recommend, unmeasured_points_are_ignored) {
    osp_advise_point t[] = {pt(8, 2, 1000), pt(16, 2, 1200), pt(32, 2, 9999)};
    t[2].steps = 0;
    osp_advice a;
    cr_assert_eq(osp_advise_recommend(t, 3, 2, 0, 0.05, &a), 0);
    cr_assert_eq(a.batch, 16);
    cr_assert_eq(osp_advise_recommend(t + 2, 1, 2, 0, 0.05, &a), OSP_ERANGE);
}

Test(advise_recommend, ranks_when_one_thread_scales_better) {
    osp_advice a;
    /* 2 cores: 1 thread 1000/s, 2 threads 1500/s: 2 ranks x 1 thread predict 2000. */
    osp_advise_point t[] = {pt(64, 2, 1500), pt(64, 1, 1000)};
    cr_assert_eq(osp_advise_recommend(t, 2, 2, 0, 0.05, &a), 0);
    cr_assert_eq(a.threads, 2);
    cr_assert_eq(a.ranks, 2);
    cr_assert_eq(a.rank_threads, 1);
    cr_assert_float_eq(a.ranks_images_per_s, 2000, 1e-9);
    /* Threads that scale: 1950 against a prediction of 2000, within 5%: one rank. */
    t[0] = pt(64, 2, 1950);
    cr_assert_eq(osp_advise_recommend(t, 2, 2, 0, 0.05, &a), 0);
    cr_assert_eq(a.ranks, 1);
    cr_assert_eq(a.rank_threads, 2);
    cr_assert_float_eq(a.ranks_images_per_s, 1950, 1e-9);
    /* Two ranks would plan twice the memory: with a budget for one, one rank. */
    t[0] = pt(64, 2, 1500);
    cr_assert_eq(osp_advise_recommend(t, 2, 2, 10 * MIB, 0.05, &a), 0);
    cr_assert_eq(a.ranks, 1);
}

Test(advise_recommend, fewest_ranks_within_tolerance) {
    /* 8 cores: 8 x 1 thread predicts 8000, 4 x 2 predicts 7800 (within 5%),
     * 2 x 4 predicts 6000, 1 x 8 measured 4000. */
    osp_advise_point t[] = {pt(32, 8, 4000), pt(32, 1, 1000), pt(32, 2, 1950), pt(32, 4, 3000)};
    osp_advice a;
    cr_assert_eq(osp_advise_recommend(t, 4, 8, 0, 0.05, &a), 0);
    cr_assert_eq(a.threads, 8);
    cr_assert_eq(a.ranks, 4);
    cr_assert_eq(a.rank_threads, 2);
    cr_assert_float_eq(a.ranks_images_per_s, 7800, 1e-9);
}

Test(advise_recommend, bad_arguments) {
    osp_advise_point t[] = {pt(8, 1, 100)};
    osp_advice a;
    cr_assert_eq(osp_advise_recommend(t, 1, 0, 0, 0.05, &a), OSP_EINVAL);
    cr_assert_eq(osp_advise_recommend(t, 1, 1, 0, 1.5, &a), OSP_EINVAL);
    cr_assert_eq(osp_advise_recommend(NULL, 1, 1, 0, 0.05, &a), OSP_EINVAL);
}

static osp_net *lenet(void) {
    osp_net *net;
    cr_assert_eq(osp_net_load_spec(OSP_SOURCE_DIR "/nets/lenet.cfg", 1, &net), 0, "%s", osp_last_error());
    return net;
}

/* The measurement at one batch (1 thread). */
static osp_advise_point measure_one(osp_net *net, osp_dataset *ds, int batch) {
    osp_advise_config c = osp_advise_defaults();
    c.min_batch = c.max_batch = batch;
    c.threads = 1;
    c.seconds = 0.5;
    osp_advice *a;
    cr_assert_eq(osp_advise(net, ds, &c, &a), 0, "%s", osp_last_error());
    cr_assert_eq(a->n_points, 1);
    osp_advise_point p = a->points[0];
    cr_assert_eq(a->batch, batch);
    cr_assert_eq(a->threads, 1);
    cr_assert(p.steps >= 2 && p.images_per_s > 0);
    osp_advice_free(a);
    return p;
}

Test(advise, planned_memory_grows_with_batch_and_matches_rss) {
    osp_net *net = lenet();
    int64_t last = 0;
    for (int b = 1; b <= 1024; b *= 2) {
        int64_t planned;
        cr_assert_eq(osp_advise_planned_bytes(net, b, OSP_OPTIM_SGD, &planned), 0);
        cr_assert(planned > last, "batch %d plans %lld, batch %d planned %lld", b, (long long)planned,
                  b / 2, (long long)last);
        last = planned;
    }
    int64_t sgd, adam;
    cr_assert_eq(osp_advise_planned_bytes(net, 64, OSP_OPTIM_SGD, &sgd), 0);
    cr_assert_eq(osp_advise_planned_bytes(net, 64, OSP_OPTIM_ADAM, &adam), 0);
    int64_t n_weights;
    osp_graph_weights(net->graph, &n_weights);
    cr_assert(n_weights >= 431080);
    cr_assert_eq(adam - sgd, n_weights * 4, "Adam keeps one more float per weight");

    osp_dataset *ds;
    cr_assert_eq(osp_dataset_synthetic(&net->input, 10, 0, 512, 3, &ds), 0);
    osp_advise_point small = measure_one(net, ds, 64), big = measure_one(net, ds, 512);
    cr_assert(big.planned_bytes > small.planned_bytes);
#if defined(__SANITIZE_ADDRESS__)
    /* The sanitizer's shadow memory and quarantine are in the RSS too. */
    (void)big;
#else
    /* At batch 512 the activations dominate (about 70 MiB): the plan and
     * the resident growth agree within a factor of 2. */
    cr_assert(big.rss_bytes > 0, "the peak RSS was not measured");
    const double ratio = (double)big.rss_bytes / (double)big.planned_bytes;
    cr_assert(ratio > 0.5 && ratio < 2, "planned %lld bytes, RSS grew %lld", (long long)big.planned_bytes,
              (long long)big.rss_bytes);
#endif
    osp_dataset_free(ds);
    osp_net_free(net);
}

Test(advise, train_bytes_is_the_arena_a_training_plan_allocates) {
    for (int b = 1; b <= 256; b *= 4) {
        osp_net *net = lenet();
        size_t bytes;
        cr_assert_eq(osp_graph_train_bytes(net->graph, b, &bytes), 0);
        cr_assert_eq(osp_graph_plan(net->graph, b, OSP_MODE_TRAIN), 0);
        cr_assert_eq(bytes, osp_graph_arena_bytes(net->graph), "batch %d", b);
        osp_net_free(net);
    }
}

Test(advise, refuses_before_measuring) {
    osp_net *net = lenet();
    osp_dataset *ds;
    /* Data of another shape. */
    const osp_shape other = osp_shape_make(3, (const int64_t[]){1, 32, 32});
    cr_assert_eq(osp_dataset_synthetic(&other, 10, 0, 64, 3, &ds), 0);
    osp_advise_config c = osp_advise_defaults();
    osp_advice *a = NULL;
    cr_assert_eq(osp_advise(net, ds, &c, &a), OSP_ESHAPE);
    cr_assert(strstr(osp_last_error(), "input is 1x28x28"), "%s", osp_last_error());
    cr_assert_null(a);
    osp_dataset_free(ds);

    /* A budget below the smallest batch's plan. */
    cr_assert_eq(osp_dataset_synthetic(&net->input, 10, 0, 64, 3, &ds), 0);
    c.memory_budget = 1 << 20;
    const double t0 = osp_now();
    cr_assert_eq(osp_advise(net, ds, &c, &a), OSP_ERANGE);
    cr_assert(osp_now() - t0 < 1, "it measured before refusing");
    cr_assert(strstr(osp_last_error(), "smaller than"), "%s", osp_last_error());
    c = osp_advise_defaults();
    c.min_batch = 64;
    c.max_batch = 32;
    cr_assert_eq(osp_advise(net, ds, &c, &a), OSP_EINVAL);
    osp_dataset_free(ds);
    osp_net_free(net);
}

/* A dataset whose odd samples cannot be read and whose even ones have no
 * label (-1, as a multi-label sample without labels); with impl set, none
 * can be read. */
static int awkward_get(osp_dataset *ds, int64_t i, float *out, int32_t *label) {
    if (ds->impl || i % 2) return osp_error(OSP_EIO, "sample %lld: unreadable", (long long)i);
    for (int j = 0; j < 28 * 28; j++) out[j] = (float)((i + j) % 7) / 7;
    *label = -1;
    return OSP_OK;
}

Test(advise, skips_unreadable_samples_and_needs_no_labels) {
    osp_net *net = lenet();
    static int unreadable;
    osp_dataset ds = {.count = 100, .sample_shape = net->input, .n_classes = 10, .source = "awkward",
                      .get = awkward_get};
    osp_advise_config c = osp_advise_defaults();
    c.min_batch = c.max_batch = 16;
    c.threads = 1;
    c.seconds = 0.2;
    osp_advice *a;
    cr_assert_eq(osp_advise(net, &ds, &c, &a), 0, "%s", osp_last_error());
    cr_assert_eq(a->batch, 16);
    osp_advice_free(a);
    ds.impl = &unreadable;
    cr_assert_eq(osp_advise(net, &ds, &c, &a), OSP_EIO);
    cr_assert(strstr(osp_last_error(), "awkward"), "%s", osp_last_error());
    osp_net_free(net);
}
