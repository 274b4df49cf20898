/* Evaluation: top-1, top-5 and mean cross-entropy over a whole dataset. */
#include <stdint.h>

#include "loader.h"
#include "osprey/train.h"

/* Rank of the true class among the scores (0 = best); ties count against it
 * only when strictly greater, as torch.topk's accuracy does in practice. */
static int rank_of(const float *v, int n, int label) {
    int rank = 0;
    for (int i = 0; i < n; i++)
        if (v[i] > v[label]) rank++;
    return rank;
}

int osp_evaluate(osp_net *net, osp_dataset *data, int batch, osp_eval_result *out) {
    int rc = osp_check_data(net, data);
    if (rc) return rc;
    if (batch <= 0) return osp_error(OSP_EINVAL, "batch size must be positive");
    if (batch > data->count) batch = (int)data->count;
    osp_graph *g = net->graph;
    osp_node *logits = osp_graph_node(g, net->logits_node);
    logits->keep = 1; /* inference planning must not recycle the logits */
    const int64_t size = osp_shape_numel(&net->input);
    const int k = (int)logits->size;
    float *x = osp_alloc((size_t)batch * (size_t)size * sizeof(float));
    int32_t *labels = osp_alloc((size_t)batch * sizeof(int32_t));
    if (!x || !labels) rc = OSP_ENOMEM;
    /* Unreadable samples are left out (and logged in data's skip log). */
    osp_loader *loader = NULL;
    osp_loader_config lc = osp__loader_config(net, data, batch, 0, 0);
    if (!rc) rc = osp_loader_new(data, &lc, &loader);
    if (!rc) rc = osp_loader_start(loader, 0, NULL, data->count, 0);
    double loss_sum = 0;
    int64_t top1 = 0, top5 = 0, evaluated = 0;
    const osp_backend *be = osp_backend_default();
    while (!rc) {
        int n;
        if ((rc = osp_loader_next(loader, x, labels, &n)) || n == 0) break;
        evaluated += n;
        /* A changed batch size re-plans within the same arena. */
        if ((rc = osp_graph_plan(g, n, OSP_MODE_INFER))) break;
        osp_exec ex = {.be = be, .mode = OSP_MODE_INFER, .batch = n};
        if ((rc = osp_graph_forward(g, x, &ex))) break;
        loss_sum += be->softmax_xent(n, k, logits->out, labels, NULL, NULL) * n;
        for (int i = 0; i < n; i++) {
            int r = rank_of(logits->out + (int64_t)i * k, k, labels[i]);
            top1 += r < 1;
            top5 += r < 5;
        }
    }
    osp_loader_free(loader);
    osp_free(x);
    osp_free(labels);
    if (rc) return rc;
    if (evaluated == 0)
        return osp_error(OSP_ENOENT, "%s: no sample is readable", data->source ? data->source : "data");
    out->count = evaluated;
    out->top1 = (double)top1 / (double)evaluated;
    out->top5 = (double)top5 / (double)evaluated;
    out->loss = loss_sum / (double)evaluated;
    return OSP_OK;
}
