/* One training step on a batch in memory: the loop's step without the
 * loop, for callers that bring their own data and schedule. */
#include <math.h>
#include <string.h>

#include "osprey/train.h"
#include "train_impl.h"

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* The logits on the host: in place where the backend's memory is host
 * memory, else copied into *copy (osp_free it). NULL when out of memory. */
static const float *host_logits(const osp_graph *g, const osp_node *logits, int batch,
                                float **copy) {
    *copy = NULL;
    if (osp_graph_backend(g)->host_memory) return logits->out;
    const int64_t count = (int64_t)batch * logits->size;
    if (!(*copy = osp_alloc((size_t)count * sizeof(float)))) return NULL;
    osp_graph_read(g, *copy, logits->out, count);
    return *copy;
}

/* The forward of a training step, whichever the loss: plans the graph
 * for the batch and runs it; *logits is the node the loss reads. */
static int forward(osp_net *net, const float *x, const osp_exec *ex, osp_node **logits) {
    osp_graph *g = net->graph;
    *logits = osp_graph_node(g, net->logits_node);
    int rc = osp_graph_plan(g, ex->batch, OSP_MODE_TRAIN);
    return rc ? rc : osp_graph_forward(g, x, ex);
}

int osp__forward_loss(osp_net *net, const float *x, const int32_t *labels, const osp_exec *ex,
                      double *loss, int64_t *correct) {
    osp_node *logits;
    int rc = forward(net, x, ex, &logits);
    if (rc) return rc;
    const int k = (int)logits->size;
    if ((rc = osp__batch_loss(osp_graph_backend(net->graph), 0, ex->batch, k, logits->out, labels,
                              NULL, logits->dout, loss)))
        return rc;
    float *copy;
    const float *z = host_logits(net->graph, logits, ex->batch, &copy);
    if (!z) return OSP_ENOMEM;
    int64_t right = 0;
    for (int b = 0; b < ex->batch; b++) right += argmax(z + (int64_t)b * k, k) == labels[b];
    *correct = right;
    osp_free(copy);
    return OSP_OK;
}

int osp__forward_loss_hot(osp_net *net, const float *x, const float *targets, const osp_exec *ex,
                          double *loss, int64_t *correct) {
    osp_node *logits;
    int rc = forward(net, x, ex, &logits);
    if (rc) return rc;
    const int k = (int)logits->size;
    if ((rc = osp__batch_loss(osp_graph_backend(net->graph), 1, ex->batch, k, logits->out, targets,
                              NULL, logits->dout, loss)))
        return rc;
    float *copy;
    const float *all_z = host_logits(net->graph, logits, ex->batch, &copy);
    if (!all_z) return OSP_ENOMEM;
    int64_t right = 0;
    for (int b = 0; b < ex->batch; b++) {
        const float *z = all_z + (int64_t)b * k, *t = targets + (int64_t)b * k;
        int all = 1;
        for (int c = 0; c < k && all; c++) all = (z[c] > 0) == (t[c] > 0.5f);
        right += all;
    }
    *correct = right;
    osp_free(copy);
    return OSP_OK;
}

const char *osp_loss_name(osp_loss loss) {
    switch (loss) {
    case OSP_LOSS_AUTO: return "auto";
    case OSP_LOSS_SOFTMAX: return "softmax";
    case OSP_LOSS_BCE: return "bce";
    }
    return "?";
}

int osp_loss_parse(const char *name, osp_loss *loss) {
    if (name && !strcmp(name, "auto")) *loss = OSP_LOSS_AUTO;
    else if (name && (!strcmp(name, "softmax") || !strcmp(name, "xent"))) *loss = OSP_LOSS_SOFTMAX;
    else if (name && !strcmp(name, "bce")) *loss = OSP_LOSS_BCE;
    else return osp_error(OSP_EINVAL, "unknown loss '%s' (auto, softmax, bce)", name ? name : "");
    return OSP_OK;
}

int osp_train_step(osp_net *net, osp_optim *opt, const float *x, const int32_t *labels,
                   int batch, float lr, int64_t step, uint64_t seed, osp_step_result *out) {
    if (!net || !opt || !x || !labels || batch <= 0 || step < 0)
        return osp_error(OSP_EINVAL, "osp_train_step: bad arguments");
    int64_t nw;
    float *w = osp_graph_weights(net->graph, &nw);
    if (opt->n != nw)
        return osp_error(OSP_ESHAPE, "the optimizer holds %lld parameters but the network has %lld",
                         (long long)opt->n, (long long)nw);
    const int k = (int)osp_graph_node(net->graph, net->logits_node)->size;
    for (int b = 0; b < batch; b++)
        if (labels[b] < 0 || labels[b] >= k)
            return osp_error(OSP_ERANGE, "label %d of sample %d is outside the network's %d outputs",
                             labels[b], b, k);
    if (!isfinite(lr) || lr < 0) return osp_error(OSP_EINVAL, "the learning rate must be finite and >= 0");
    osp_exec ex = {.be = osp_graph_backend(net->graph), .mode = OSP_MODE_TRAIN, .batch = batch,
                   .seed = seed, .step = (uint64_t)step};
    double loss;
    int64_t correct;
    int rc = osp__forward_loss(net, x, labels, &ex, &loss, &correct);
    if (rc) return rc;
    if (!isfinite(loss))
        return osp_error(OSP_ERANGE, "the loss diverged (%g) at step %lld: lower the learning rate",
                         loss, (long long)step);
    if ((rc = osp_graph_backward_from(net->graph, net->logits_node, &ex))) return rc;
    osp_optim_step(opt, w, osp_graph_grads(net->graph, NULL), lr);
    if (out) {
        out->loss = loss;
        out->correct = correct;
    }
    return OSP_OK;
}
