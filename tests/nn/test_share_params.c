/* osp_graph_share_params: a replica reads and trains its owner's weights
 * and statistics, keeps its own gradients, and frees only what it owns. */
#include <criterion/criterion.h>
#include <string.h>

#include "osprey/nn.h"

static const char *SPEC = "[net]\ninput = 2x6x6\n"
                          "[conv]\nfilters = 4\nsize = 3\n[batchnorm]\n[relu]\n[fc]\noutputs = 3\n";

static osp_net *build(uint64_t seed) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "share", seed, &net), OSP_OK, "%s",
                 osp_last_error());
    return net;
}

static void forward(osp_net *net, const float *x, float *out) {
    osp_graph *g = net->graph;
    cr_assert_eq(osp_graph_plan(g, 2, OSP_MODE_INFER), OSP_OK, "%s", osp_last_error());
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_INFER, .batch = 2};
    cr_assert_eq(osp_graph_forward(g, x, &ex), OSP_OK, "%s", osp_last_error());
    memcpy(out, osp_graph_output(g)->out, 2 * 3 * sizeof(float));
}

Test(share_params, replica_sees_and_changes_the_owners_weights) {
    osp_net *owner = build(1), *replica = build(2);
    float x[2 * 2 * 6 * 6], a[6], b[6];
    for (int i = 0; i < 2 * 2 * 6 * 6; i++) x[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
    cr_assert_eq(osp_graph_share_params(replica->graph, owner->graph), OSP_OK, "%s",
                 osp_last_error());
    forward(owner, x, a);
    forward(replica, x, b);
    cr_expect_arr_eq(a, b, sizeof a, "the replica computes with the owner's weights");

    int64_t n, m;
    float *w = osp_graph_weights(replica->graph, &n);
    cr_expect_eq(w, osp_graph_weights(owner->graph, &m));
    cr_expect_neq(osp_graph_grads(replica->graph, &n), osp_graph_grads(owner->graph, &m),
                  "gradients stay apart");
    w[0] += 1.0f; /* a change through the replica is the owner's */
    osp_graph_weights_changed(owner->graph); /* both fold the new weights */
    osp_graph_weights_changed(replica->graph);
    forward(owner, x, a);
    forward(replica, x, b);
    cr_expect_arr_eq(a, b, sizeof a);

    cr_expect_eq(osp_graph_share_params(replica->graph, owner->graph), OSP_ESTATE, "only once");
    osp_net_free(replica); /* frees its own arrays, not the owner's */
    forward(owner, x, a);
    osp_net_free(owner);
}

Test(share_params, layouts_must_match) {
    static const char *OTHER = "[net]\ninput = 2x6x6\n[conv]\nfilters = 5\nsize = 3\n[fc]\noutputs = 3\n";
    osp_net *owner = build(1), *other;
    cr_assert_eq(osp_net_from_spec(OTHER, strlen(OTHER), "other", 1, &other), OSP_OK);
    cr_expect_eq(osp_graph_share_params(other->graph, owner->graph), OSP_ESHAPE);
    osp_net_free(other);
    osp_net_free(owner);
}

/* osp_graph_share_weights: the weights are the owner's, the buffers (batch
 * norm's running statistics) stay the replica's own. */
Test(share_params, share_weights_keeps_own_buffers) {
    osp_net *owner = build(1), *replica = build(2);
    cr_assert_eq(osp_graph_share_weights(replica->graph, owner->graph), OSP_OK, "%s", osp_last_error());
    int64_t nb;
    cr_expect_eq(osp_graph_weights(replica->graph, NULL), osp_graph_weights(owner->graph, NULL));
    float *rb = osp_graph_buffers(replica->graph, &nb), *ob = osp_graph_buffers(owner->graph, NULL);
    cr_assert(nb > 0);
    cr_expect_neq(rb, ob);
    rb[0] = 42.0f;
    cr_expect_neq(ob[0], 42.0f);
    cr_expect_neq(osp_graph_share_weights(replica->graph, owner->graph), OSP_OK, "shared twice");
    osp_net_free(replica);
    osp_net_free(owner);
}
