/* A batch's loss through a backend, wherever its memory is. The loss
 * slots take their labels (or targets) and write the mean loss in the
 * backend's memory: a backend with memory of its own gets the host's
 * labels copied there first and hands the loss back through copy_d2h;
 * the CPU's tables, whose memory is the host's, are called directly. */
#include <string.h>

#include "osprey/core.h"
#include "train_impl.h"

int osp__batch_loss(const osp_backend *be, int multi_hot, int rows, int cols,
                    const float *logits, const void *truth, float *probs, float *dlogits,
                    double *loss) {
    *loss = 0;
    if (rows <= 0) return OSP_OK;
    if (be->host_memory) {
        if (multi_hot) be->sigmoid_bce(rows, cols, logits, truth, probs, dlogits, loss);
        else be->softmax_xent(rows, cols, logits, truth, probs, dlogits, loss);
        return OSP_OK;
    }
    const size_t bytes = multi_hot ? sizeof(float) * (size_t)rows * (size_t)cols
                                   : sizeof(int32_t) * (size_t)rows;
    void *dev_truth = be->mem_alloc(be->ctx, bytes);
    double *dev_loss = be->mem_alloc(be->ctx, sizeof(double));
    if (!dev_truth || !dev_loss) {
        be->mem_free(be->ctx, dev_truth);
        be->mem_free(be->ctx, dev_loss);
        return osp_error(OSP_ENOMEM, "no backend memory for a batch's %s",
                         multi_hot ? "targets" : "labels");
    }
    be->copy_h2d(be->ctx, dev_truth, truth, bytes);
    if (multi_hot) be->sigmoid_bce(rows, cols, logits, dev_truth, probs, dlogits, dev_loss);
    else be->softmax_xent(rows, cols, logits, dev_truth, probs, dlogits, dev_loss);
    be->copy_d2h(be->ctx, loss, dev_loss, sizeof(double));
    be->mem_free(be->ctx, dev_truth);
    be->mem_free(be->ctx, dev_loss);
    return OSP_OK;
}
