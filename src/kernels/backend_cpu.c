/* The CPU backend table and the choice of backend at start. */
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"


int osp_conv_out_size(int in, int kernel, int stride, int pad, int dil, int ceil_mode) {
    if (in <= 0 || kernel <= 0 || stride <= 0 || pad < 0 || dil <= 0) return -1;
    int64_t span = (int64_t)dil * (kernel - 1) + 1;
    int64_t room = (int64_t)in + 2 * (int64_t)pad - span;
    if (room < 0) return -1;
    int64_t out = (ceil_mode ? (room + stride - 1) / stride : room / stride) + 1;
    /* ceil mode: the last window must start inside the input or left padding */
    if (ceil_mode && (out - 1) * stride >= (int64_t)in + pad) out--;
    return out > (1 << 24) ? -1 : (int)out;
}

static const osp_backend cpu_reference = {
    .name = "cpu-ref",
    .sgemm = osp__cpu_sgemm,
    .conv2d_workspace = osp__cpu_conv2d_workspace,
    .conv2d_forward = osp__cpu_conv2d_forward,
    .conv2d_backward_data = osp__cpu_conv2d_backward_data,
    .conv2d_backward_filter = osp__cpu_conv2d_backward_filter,
    .maxpool_forward = osp__cpu_maxpool_forward,
    .maxpool_backward = osp__cpu_maxpool_backward,
    .avgpool_forward = osp__cpu_avgpool_forward,
    .avgpool_backward = osp__cpu_avgpool_backward,
    .fc_forward = osp__cpu_fc_forward,
    .fc_backward = osp__cpu_fc_backward,
    .activation_forward = osp__cpu_activation_forward,
    .activation_backward = osp__cpu_activation_backward,
    .batchnorm_forward_train = osp__cpu_batchnorm_forward_train,
    .batchnorm_forward_infer = osp__cpu_batchnorm_forward_infer,
    .batchnorm_backward = osp__cpu_batchnorm_backward,
    .softmax_forward = osp__cpu_softmax_forward,
    .softmax_backward = osp__cpu_softmax_backward,
    .softmax_xent = osp__cpu_softmax_xent,
    .l2norm_forward = osp__cpu_l2norm_forward,
    .l2norm_backward = osp__cpu_l2norm_backward,
};

const osp_backend *osp_backend_cpu_reference(void) { return &cpu_reference; }

const osp_backend *osp_backend_default(void) {
    /* SIMD variants come with the speed work; until then the reference
     * backend is the only one. OSP_BACKEND=reference will force it. */
    return &cpu_reference;
}
