/* osp_train_step: a training step on a batch in memory learns, repeats bit
 * for bit, and refuses what would read out of bounds. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/train.h"
#include "synth.h"

static const char *SPEC =
    "[net]\ninput = 1x8x8\n"
    "[conv]\nfilters = 4\nsize = 3\npad = 1\n[batchnorm]\n[relu]\n[maxpool]\nsize = 2\n"
    "[fc]\noutputs = 16\n[dropout]\np = 0.25\n[relu]\n[fc]\noutputs = 4\n";

enum { BATCH = 16, STEPS = 60 };

/* Trains a new network on the synthetic set's first 64 samples; returns
 * it, with the first and last steps' losses. */
static osp_net *train(double *first, double *last) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 5, &net), 0, "%s", osp_last_error());
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_synthetic(&net->input, 4, 0, 64, 11, &ds), 0);
    osp_optim_config oc = osp_optim_defaults(OSP_OPTIM_SGD);
    int64_t nw;
    osp_graph_weights(net->graph, &nw);
    osp_optim *opt;
    cr_assert_eq(osp_optim_new(&oc, nw, &opt), 0);
    float x[BATCH * 64];
    int32_t labels[BATCH];
    for (int s = 0; s < STEPS; s++) {
        for (int b = 0; b < BATCH; b++)
            cr_assert_eq(ds->get(ds, (s * BATCH + b) % 64, x + b * 64, &labels[b]), 0);
        osp_step_result r;
        cr_assert_eq(osp_train_step(net, opt, x, labels, BATCH, 0.05f, s, 5, &r), 0, "%s", osp_last_error());
        cr_assert(r.correct >= 0 && r.correct <= BATCH);
        if (s == 0) *first = r.loss;
        *last = r.loss;
    }
    osp_optim_free(opt);
    osp_dataset_free(ds);
    return net;
}

Test(train_step, learns_and_repeats) {
    double first, last, first2, last2;
    osp_net *a = train(&first, &last), *b = train(&first2, &last2);
    cr_assert(last < first * 0.5, "loss %g -> %g", first, last);
    int64_t n;
    const float *wa = osp_graph_weights(a->graph, &n), *wb = osp_graph_weights(b->graph, NULL);
    cr_assert(memcmp(wa, wb, (size_t)n * sizeof(float)) == 0, "two runs differ");
    cr_assert_eq(first, first2);
    cr_assert_eq(last, last2);
    osp_net_free(a);
    osp_net_free(b);
}

Test(train_step, bad_batches_are_refused_before_any_update) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 5, &net), 0);
    osp_optim_config oc = osp_optim_defaults(OSP_OPTIM_SGD);
    int64_t n;
    float *w = osp_graph_weights(net->graph, &n);
    osp_optim *opt;
    cr_assert_eq(osp_optim_new(&oc, n, &opt), 0);
    float *before = malloc((size_t)n * sizeof(float));
    memcpy(before, w, (size_t)n * sizeof(float));
    float x[2 * 64] = {0};
    int32_t bad[2] = {1, 4};
    cr_assert_eq(osp_train_step(net, opt, x, bad, 2, 0.1f, 0, 1, NULL), OSP_ERANGE);
    cr_assert(strstr(osp_last_error(), "outside the network's 4 outputs"), "%s", osp_last_error());
    int32_t ok[2] = {0, 1};
    cr_assert_eq(osp_train_step(net, opt, x, ok, 0, 0.1f, 0, 1, NULL), OSP_EINVAL);
    cr_assert_eq(osp_train_step(net, opt, x, ok, 2, NAN, 0, 1, NULL), OSP_EINVAL);
    osp_optim *small;
    cr_assert_eq(osp_optim_new(&oc, 10, &small), 0);
    cr_assert_eq(osp_train_step(net, small, x, ok, 2, 0.1f, 0, 1, NULL), OSP_ESHAPE);
    cr_assert(memcmp(before, w, (size_t)n * sizeof(float)) == 0, "weights changed");
    osp_optim_free(small);
    osp_optim_free(opt);
    free(before);
    osp_net_free(net);
}

/* A model whose scores all tie is right only for the class an argmax
 * picks (the first), not for every sample: evaluation breaks ties as
 * training's accuracy does. */
Test(evaluate, ties_are_not_all_right) {
    static const char *flat = "[net]\ninput = 1x8x8\n[fc]\noutputs = 4\n";
    osp_dataset *ds = synth_dataset(200, 1, 8, 8, 4, 3);
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(flat, strlen(flat), "flat", 1, &net), 0, "%s", osp_last_error());
    int64_t count = 0;
    float *w = osp_graph_weights(net->graph, &count);
    memset(w, 0, (size_t)count * sizeof *w);
    osp_graph_weights_changed(net->graph);
    int64_t first = 0;
    for (int64_t i = 0; i < ds->count; i++) {
        float sample[64];
        int32_t label;
        cr_assert_eq(ds->get(ds, i, sample, &label), 0);
        first += label == 0;
    }
    osp_eval_result r;
    cr_assert_eq(osp_train_evaluate(net, ds, 64, &r), 0, "%s", osp_last_error());
    cr_expect_float_eq(r.top1, (double)first / (double)ds->count, 1e-12, "top-1 %g", r.top1);
    cr_expect_lt(r.top1, 0.5);
    osp_net_free(net);
    osp_dataset_free(ds);
}
