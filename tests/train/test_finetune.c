/* Fine-tuning in the library: finding and resizing a network's classifier,
 * frozen layers (no gradient, no optimizer state, batch-norm statistics
 * fixed, no backward work below them) and per-group learning rates. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/train.h"

static const char *SPEC =
    "[net]\ninput = 1x8x8\n"
    "[conv]\nname = conv\nfilters = 4\nsize = 3\npad = 1\n[batchnorm]\nname = bn\n[relu]\nname = relu\n"
    "[maxpool]\nname = pool\nsize = 2\n"
    "[fc]\nname = fc1\noutputs = 16\n[relu]\nname = relu2\n[fc]\nname = head\noutputs = 4\n";

/* A fully convolutional classifier: a 1x1 conv, then global pooling. */
static const char *FCN =
    "[net]\ninput = 1x8x8\n"
    "[conv]\nname = conv\nfilters = 4\nsize = 3\npad = 1\n[relu]\n"
    "[conv]\nname = cls\nfilters = 10\nsize = 1\n[globalavgpool]\nname = gap\n[softmax]\n";

static osp_net *make(const char *spec) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(spec, strlen(spec), "spec", 3, &net), 0, "%s", osp_last_error());
    return net;
}

static const float *param(osp_net *net, const char *name) {
    int k = osp_graph_find_param(net->graph, name);
    cr_assert(k >= 0, "no parameter %s", name);
    return osp_graph_param_data(net->graph, k);
}

static int64_t numel(osp_net *net, const char *name) {
    return osp_graph_param(net->graph, osp_graph_find_param(net->graph, name))->numel;
}

Test(finetune, finds_and_resizes_the_head) {
    osp_net *net = make(SPEC);
    int head;
    cr_assert_eq(osp_net_find_head(net, NULL, &head), 0, "%s", osp_last_error());
    cr_assert_str_eq(osp_graph_node(net->graph, head)->name, "head");
    cr_assert_eq(osp_net_find_head(net, "fc1", &head), 0); /* a classifier, if not the last */
    cr_assert_neq(osp_net_find_head(net, "relu2", &head), 0);
    cr_assert(strstr(osp_last_error(), "not a classifier"), "%s", osp_last_error());
    cr_assert_neq(osp_net_find_head(net, "conv", &head), 0); /* 3x3 */
    cr_assert_eq(osp_net_find_head(net, "nosuch", &head), OSP_ENOENT);

    cr_assert_eq(osp_net_find_head(net, NULL, &head), 0);
    osp_net *small;
    cr_assert_eq(osp_net_resize_head(net, head, 3, 9, &small), 0, "%s", osp_last_error());
    cr_assert_eq(small->n_classes, 3);
    cr_assert_null(small->labels);
    cr_assert(strstr(small->spec_text, "outputs = 3"));
    cr_assert_eq(numel(small, "head.weight"), 3 * 16);
    for (const char *const *p = (const char *const[]){"conv.weight", "bn.running_mean", "fc1.weight", NULL}; *p; p++)
        cr_assert(memcmp(param(net, *p), param(small, *p), (size_t)numel(net, *p) * sizeof(float)) == 0, "%s", *p);
    /* fc1 does not produce the logits: resizing it is refused */
    int fc1;
    osp_net_find_head(net, "fc1", &fc1);
    osp_net *bad;
    cr_assert_neq(osp_net_resize_head(net, fc1, 3, 9, &bad), 0);
    cr_assert(strstr(osp_last_error(), "does not produce the logits"), "%s", osp_last_error());
    osp_net_free(small);
    osp_net_free(net);

    osp_net *fcn = make(FCN);
    cr_assert_eq(osp_net_find_head(fcn, NULL, &head), 0, "%s", osp_last_error());
    cr_assert_str_eq(osp_graph_node(fcn->graph, head)->name, "cls");
    cr_assert_eq(osp_net_resize_head(fcn, head, 2, 1, &small), 0, "%s", osp_last_error());
    cr_assert_eq(small->n_classes, 2);
    cr_assert(strstr(small->spec_text, "filters = 2"));
    osp_net_free(small);
    osp_net_free(fcn);
}

Test(finetune, optimizer_groups_step_only_their_slices) {
    enum { N = 40 };
    float w[N], g[N], w2[N];
    for (int i = 0; i < N; i++) {
        w[i] = w2[i] = 0.1f * (float)i;
        g[i] = 1.0f - 0.05f * (float)i;
    }
    osp_optim_config oc = osp_optim_defaults(OSP_OPTIM_ADAM);
    osp_optim *a, *b;
    cr_assert_eq(osp_optim_new(&oc, N, &a), 0);
    cr_assert_eq(osp_optim_new(&oc, 30, &b), 0);
    osp_param_group groups[2] = {{10, 20, 0.1f}, {20, 40, 1.0f}};
    osp_optim_step_groups(a, w, g, 0.01f, groups, 2);
    cr_assert_eq(a->t, 1);
    for (int i = 0; i < 10; i++) cr_assert_eq(w[i], w2[i]);
    for (int i = 0; i < 10; i++) cr_assert_eq(a->m[i], 0.0f);
    for (int i = 0; i < 10; i++) cr_assert_eq(a->v[i], 0.0f);
    /* the head's slice is what a plain step at lr gives */
    osp_optim head = *b;
    head.n = 20;
    osp_optim_step(&head, w2 + 20, g + 20, 0.01f);
    for (int i = 20; i < N; i++) cr_assert_eq(w[i], w2[i]);
    for (int i = 10; i < 20; i++) cr_assert(w[i] != 0.1f * (float)i);
    osp_optim_free(a);
    osp_optim_free(b);
}

/* Trains net on a synthetic set with cfg's fine-tuning settings. */
static void train(osp_net *net, osp_train_config *cfg, osp_optim *opt) {
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_synthetic(&net->input, net->n_classes, 0, 64, 11, &ds), 0);
    cfg->epochs = 2;
    cfg->batch = 16;
    cfg->lr = 0.05f;
    cr_assert_eq(osp_train(net, ds, NULL, cfg, opt, 0), 0, "%s", osp_last_error());
    osp_dataset_free(ds);
}

Test(finetune, frozen_layers_keep_their_weights_and_statistics) {
    osp_net *before = make(SPEC), *net = make(SPEC);
    osp_train_config cfg = osp_train_defaults();
    cfg.freeze_until = "pool";
    int64_t nw;
    osp_graph_weights(net->graph, &nw);
    osp_optim *opt;
    cr_assert_eq(osp_optim_new(&cfg.optim, nw, &opt), 0);
    train(net, &cfg, opt);
    const char *frozen[] = {"conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean",
                            "bn.running_var"};
    int64_t n_frozen = 0;
    for (int i = 0; i < 6; i++) {
        cr_assert(memcmp(param(before, frozen[i]), param(net, frozen[i]),
                         (size_t)numel(net, frozen[i]) * sizeof(float)) == 0, "%s changed", frozen[i]);
        if (!strstr(frozen[i], "running")) n_frozen += numel(net, frozen[i]);
    }
    cr_assert(memcmp(param(before, "fc1.weight"), param(net, "fc1.weight"),
                     (size_t)numel(net, "fc1.weight") * sizeof(float)) != 0, "fc1 did not train");
    for (int64_t i = 0; i < n_frozen; i++) cr_assert_eq(opt->m[i], 0.0f, "optimizer state at %lld", (long long)i);
    /* the network is whole again afterwards */
    cr_assert_eq(osp_graph_frozen_until(net->graph), 0);
    osp_optim_free(opt);
    osp_net_free(before);
    osp_net_free(net);
}

Test(finetune, no_backward_work_below_the_frozen_layers) {
    osp_net *net = make(SPEC);
    osp_node *pool = osp_graph_find(net->graph, "pool");
    cr_assert_eq(osp_graph_freeze(net->graph, pool->id), 0);
    cr_assert_eq(osp_graph_frozen_until(net->graph), pool->id);
    cr_assert_eq(osp_graph_plan(net->graph, 4, OSP_MODE_TRAIN), 0);
    for (int i = 1; i <= pool->id; i++) {
        cr_assert_not(osp_graph_node(net->graph, i)->needs_grad);
        cr_assert_null(osp_graph_node(net->graph, i)->dout);
    }
    cr_assert(osp_graph_find(net->graph, "fc1")->needs_grad);
    cr_assert_eq(osp_graph_freeze(net->graph, 0), 0);
    cr_assert(osp_graph_find(net->graph, "conv")->needs_grad);
    osp_net_free(net);
}

Test(finetune, bad_settings_are_refused) {
    osp_net *net = make(SPEC);
    osp_train_config cfg = osp_train_defaults();
    osp_dataset *ds;
    cr_assert_eq(osp_dataset_synthetic(&net->input, 4, 0, 32, 11, &ds), 0);
    cfg.freeze_until = "nosuch";
    cr_assert_eq(osp_train(net, ds, NULL, &cfg, NULL, 0), OSP_ENOENT);
    cr_assert(strstr(osp_last_error(), "nosuch"));
    cfg.freeze_until = "head";
    cr_assert_neq(osp_train(net, ds, NULL, &cfg, NULL, 0), 0);
    cr_assert(strstr(osp_last_error(), "nothing to train"), "%s", osp_last_error());
    cfg.freeze_until = "fc1";
    cfg.lr_backbone = 0.001f;
    cfg.head_layer = "relu2";
    cr_assert_neq(osp_train(net, ds, NULL, &cfg, NULL, 0), 0);
    cr_assert(strstr(osp_last_error(), "not a classifier"), "%s", osp_last_error());
    osp_dataset_free(ds);
    osp_net_free(net);
}

Test(finetune, the_backbone_learns_at_its_own_rate) {
    osp_net *before = make(SPEC), *slow = make(SPEC), *fast = make(SPEC);
    osp_train_config cfg = osp_train_defaults();
    cfg.lr_backbone = 1e-5f;
    train(slow, &cfg, NULL);
    osp_train_config plain = osp_train_defaults();
    train(fast, &plain, NULL);
    double d_slow = 0, d_fast = 0;
    const float *w0 = param(before, "conv.weight"), *ws = param(slow, "conv.weight"),
                *wf = param(fast, "conv.weight");
    for (int64_t i = 0; i < numel(before, "conv.weight"); i++) {
        d_slow = fmax(d_slow, fabs(ws[i] - w0[i]));
        d_fast = fmax(d_fast, fabs(wf[i] - w0[i]));
    }
    cr_assert(d_slow > 0 && d_slow < d_fast / 100, "backbone moved %g (slow) vs %g", d_slow, d_fast);
    osp_net_free(before);
    osp_net_free(slow);
    osp_net_free(fast);
}
