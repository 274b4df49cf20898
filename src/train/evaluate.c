/* Evaluation: top-1, top-5 and mean cross-entropy over a whole dataset. */
#include <stdint.h>

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
    int64_t *idx = osp_alloc((size_t)batch * sizeof(int64_t));
    if (!x || !labels || !idx) rc = OSP_ENOMEM;
    double loss_sum = 0;
    int64_t top1 = 0, top5 = 0;
    const osp_backend *be = osp_backend_default();
    for (int64_t first = 0; !rc && first < data->count; first += batch) {
        int n = (int)(data->count - first < batch ? data->count - first : batch);
        for (int i = 0; i < n; i++) idx[i] = first + i;
        if ((rc = osp_load_batch(net, data, idx, n, x, labels))) break;
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
    osp_free(x);
    osp_free(labels);
    osp_free(idx);
    if (rc) return rc;
    out->count = data->count;
    out->top1 = (double)top1 / (double)data->count;
    out->top5 = (double)top5 / (double)data->count;
    out->loss = loss_sum / (double)data->count;
    return OSP_OK;
}
