/* Running a planned graph: forward in order, backward in reverse. All the
 * memory work (the input's copy, zeroing gradients) goes through the
 * graph's backend. */
#include "graph_impl.h"

static int check_plan(const osp_graph *g, const osp_exec *ex, osp_mode need) {
    if (!g->weights) return osp_error(OSP_ESTATE, "graph parameters are not initialised");
    if (ex->be && (ex->be->mem_alloc != g->be->mem_alloc || ex->be->ctx != g->be->ctx))
        return osp_error(OSP_EINVAL, "backend %s cannot run a graph in the memory of %s",
                         ex->be->name, g->be->name);
    if (g->planned_batch != ex->batch || (need == OSP_MODE_TRAIN && g->planned_mode != need))
        return osp_error(OSP_ESTATE, "graph is not planned for batch %d in this mode", ex->batch);
    return OSP_OK;
}

int osp_graph_forward(osp_graph *g, const float *input, const osp_exec *ex) {
    int rc = check_plan(g, ex, ex->mode);
    if (rc) return rc;
    if (ex->mode == OSP_MODE_TRAIN && g->planned_mode != OSP_MODE_TRAIN)
        return osp_error(OSP_ESTATE, "graph is planned for inference, not training");
    osp_exec run = *ex;
    if (!run.be) run.be = g->be;
    run.workspace = g->workspace;
    osp_node *in = &g->nodes[0];
    if (input != in->out)
        g->be->copy_h2d(g->be->ctx, in->out, input,
                        (size_t)ex->batch * (size_t)in->size * sizeof(float));
    const int infer = ex->mode == OSP_MODE_INFER;
    const int token = run.be->run_begin ? run.be->run_begin(run.be->ctx, infer) : 0;
    /* Frozen nodes (osp_graph_freeze) run as in inference even in training. */
    osp_exec frozen = run;
    frozen.mode = OSP_MODE_INFER;
    double *times = ex->times ? ex->times->forward : NULL;
    for (int i = 1; i < g->n_nodes; i++) {
        osp_node *n = &g->nodes[i];
        if (n->fused_into) continue;
        if (ex->hooks && ex->hooks->before_node) ex->hooks->before_node(ex->hooks->user, i);
        /* The clock is read only when asked: untimed runs pay one branch. */
        double t0 = times ? osp_now() : 0;
        n->op->forward(g, n, n->frozen ? &frozen : &run);
        if (times) times[i] += osp_now() - t0;
    }
    if (run.be->run_end) run.be->run_end(run.be->ctx, token);
    return OSP_OK;
}

/* Ops add into their inputs' gradients, so each gradient but the starting
 * node's (written by the caller) starts at zero. Gradients share memory
 * (plan.c), so each is cleared when its life begins: before the backward
 * of the node that writes it first (grad_from), or at once when that node
 * lies past from and never runs. Clearing there also finds the buffer in
 * cache just before it is written. */
static void zero_gradient(osp_graph *g, int j, int batch) {
    g->be->mem_zero(g->be->ctx, g->nodes[j].dout,
                    (size_t)batch * (size_t)g->nodes[j].size * sizeof(float));
}

int osp_graph_backward(osp_graph *g, const osp_exec *ex) {
    return osp_graph_backward_from(g, g->n_nodes - 1, ex);
}

int osp_graph_backward_each(osp_graph *g, int from, const osp_exec *ex, osp_node_done_fn done,
                            void *user) {
    int rc = check_plan(g, ex, OSP_MODE_TRAIN);
    if (rc) return rc;
    if (from < 1 || from >= g->n_nodes || !g->nodes[from].dout)
        return osp_error(OSP_EINVAL, "no gradient can flow from node %d", from);
    osp_exec run = *ex;
    if (!run.be) run.be = g->be;
    run.workspace = g->workspace;
    g->be->mem_zero(g->be->ctx, g->grads, (size_t)g->n_weights * sizeof(float));
    for (int j = 0; j < from; j++)
        if (g->nodes[j].dout && g->grad_from[j] > from) zero_gradient(g, j, ex->batch);
    if (done)
        for (int i = g->n_nodes - 1; i > from; i--) done(user, i);
    double *times = ex->times ? ex->times->backward : NULL;
    for (int i = from; i > 0; i--) {
        osp_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_inputs; k++) { /* the gradients whose life begins here */
            const int j = n->inputs[k];
            if (g->nodes[j].dout && g->grad_from[j] == i) zero_gradient(g, j, ex->batch);
        }
        if (i != from && g->grad_from[i] == i && n->dout) zero_gradient(g, i, ex->batch);
        if (n->needs_grad) {
            if (!n->op->backward)
                return osp_error(OSP_ENOTSUP, "layer '%s' (%s) has no gradient", n->name, n->op->name);
            double t0 = times ? osp_now() : 0;
            n->op->backward(g, n, &run);
            if (times) times[i] += osp_now() - t0;
        }
        if (done) done(user, i);
    }
    return OSP_OK;
}

int osp_graph_backward_from(osp_graph *g, int from, const osp_exec *ex) {
    return osp_graph_backward_each(g, from, ex, NULL, NULL);
}
