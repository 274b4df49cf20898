/* osp_exec_hooks.before_node: the executor calls it once per node, in
 * order, before the node's forward reads its weights (lazy update brings
 * a layer's weights up to date there). */
#include <criterion/criterion.h>
#include <string.h>

#include "osprey/nn.h"

static const char *SPEC = "[net]\ninput = 2x6x6\n"
                          "[conv]\nfilters = 4\nsize = 3\n[relu]\n[fc]\noutputs = 3\n";

enum { BATCH = 2, IN = 2 * 6 * 6, OUT = 3, MAX_NODES = 8 };

typedef struct seen {
    osp_graph *g;
    int calls[MAX_NODES];
    int order[MAX_NODES];
    int n;
    int target; /* the node whose weights the hook changes */
} seen;

static osp_net *build(void) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "hooks", 1, &net), OSP_OK, "%s",
                 osp_last_error());
    cr_assert_eq(osp_graph_plan(net->graph, BATCH, OSP_MODE_TRAIN), OSP_OK, "%s", osp_last_error());
    return net;
}

/* The weights of node `node` scaled by -0.5: an update the node must see. */
static void change_weights(osp_graph *g, int node) {
    float *w = osp_graph_weights(g, NULL);
    for (int i = 0; i < osp_graph_param_count(g); i++) {
        const osp_param *p = osp_graph_param(g, i);
        if (p->kind != OSP_PARAM_WEIGHT || p->node != node) continue;
        for (int64_t j = 0; j < p->numel; j++) w[p->offset + j] *= -0.5f;
    }
}

static void before(void *user, int node) {
    seen *s = user;
    cr_assert_lt(node, MAX_NODES);
    s->calls[node]++;
    s->order[s->n++] = node;
    if (node == s->target) change_weights(s->g, node);
}

static void forward(osp_net *net, const float *x, const osp_exec_hooks *hooks) {
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = BATCH, .seed = 1,
                   .hooks = hooks};
    cr_assert_eq(osp_graph_forward(net->graph, x, &ex), OSP_OK, "%s", osp_last_error());
}

Test(exec_hooks, before_node_runs_once_per_node_before_its_forward) {
    float x[BATCH * IN];
    for (int i = 0; i < BATCH * IN; i++) x[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
    for (int target = 1; target <= 3; target += 2) { /* the conv, then the fc */
        osp_net *hooked = build(), *plain = build();
        const int nn = osp_graph_node_count(hooked->graph);
        cr_assert_leq(nn, MAX_NODES);
        seen s = {.g = hooked->graph, .target = target};
        osp_exec_hooks hooks = {.user = &s, .before_node = before};
        forward(hooked, x, &hooks);
        /* The same change made before the pass: the same outputs, bit for bit. */
        change_weights(plain->graph, target);
        forward(plain, x, NULL);
        cr_expect_arr_eq(osp_graph_output(hooked->graph)->out, osp_graph_output(plain->graph)->out,
                         BATCH * OUT * sizeof(float), "node %d saw its weights as changed", target);
        cr_expect_eq(s.calls[0], 0, "the input node runs no op");
        cr_expect_eq(s.n, nn - 1);
        for (int i = 1; i < nn; i++) {
            cr_expect_eq(s.calls[i], 1, "node %d", i);
            cr_expect_eq(s.order[i - 1], i, "in order");
        }
        osp_net_free(hooked);
        osp_net_free(plain);
    }
}
