/* The attributes of the layers whose spec keys are not visible in their
 * shapes and parameters (a convolution's stride, a pool's window), as their
 * ops store them in osp_node.attrs. Only src/nn reads them (its fusion and
 * heads), and only the owning op file writes them. A node built without a
 * spec section may have attrs == NULL: its op then uses the defaults given
 * here. */
#ifndef OSPREY_NN_ATTRS_H
#define OSPREY_NN_ATTRS_H

#include "osprey/core.h"
#include "osprey/graph.h"
#include "osprey/kernels.h"
#include "osprey/onnx.h" /* the ops' onnx_export, which read these */

/* For an op's ONNX export of a layer whose attributes have no defaults
 * (a convolution's window): OSP_OK, or OSP_EINVAL when n has none. */
static inline int osp__export_needs_attrs(const osp_node *n) {
    if (n->attrs) return OSP_OK;
    return osp_error(OSP_EINVAL, "layer '%s' ([%s]) has no attributes to export", n->name,
                     n->op->name);
}

/* [conv] (op_conv.c) */
typedef struct conv_attrs {
    int filters;
    int kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
    int groups;
    int bias;
    /* inference fusion, set by conv_fuse */
    int folded_bn;     /* 1: forward uses folded (w', b') */
    int act;           /* an osp_activation applied in the epilogue */
    float act_alpha;
    float *folded;     /* K x R weights then K biases; NULL until needed */
    /* the backend whose memory folded and prepared are (freed by it) */
    const osp_backend *folded_mem, *prepared_mem;
    int residual_node; /* a fused add's other input (node id), or -1 */
    /* the backend's prepared filters (conv2d_prepare) of the weights the
     * forward uses; made at the first inference forward after a plan */
    float *prepared;
    size_t prepared_floats;          /* allocated */
    const osp_backend *prepared_for; /* made by, or NULL: to be made */
    /* int8 inference (quantize.c, docs/quantization.md): the input's
     * per-tensor scale and zero point from calibration; the backend's
     * quantised filters, made like prepared */
    int quant;
    float in_scale;
    int in_zero;
    void *qprepared;
    size_t qprepared_bytes;
    const osp_backend *qprepared_for;
    /* int8 activations (op_conv.c): the int8 convolution that reads this
     * layer's output packed for it, or -1; decided for backend qout_for
     * (NULL: not yet, under this plan). Where it alone reads the output,
     * the bytes take the output's own buffer; where others read it too,
     * the output stays float32 and the bytes are in qbytes. */
    int qout_node;
    const osp_backend *qout_for;
    uint8_t *qbytes;
    size_t qbytes_size;
    /* while calibrating: the statistics of this layer's input */
    struct osp_calib_stats *calib;
} conv_attrs;

/* [maxpool], [avgpool], [globalavgpool] (op_pool.c) */
typedef enum pool_kind { POOL_MAX, POOL_AVG, POOL_GLOBAL_AVG } pool_kind;

typedef struct pool_attrs {
    pool_kind kind;
    int kh, kw, stride_h, stride_w, pad_h, pad_w;
    int ceil;
    int exclude_pad;
} pool_attrs;

/* [leakyrelu] (op_activation.c) */
typedef struct leaky_attrs {
    float alpha; /* slope for x < 0 */
} leaky_attrs;

#define LEAKY_DEFAULT_ALPHA 0.01f

/* [batchnorm] (op_batchnorm.c; NULL attrs: eps 1e-5, momentum 0.1) */
typedef struct bn_attrs {
    float eps;      /* added to the variance */
    float momentum; /* running = (1 - momentum) * running + momentum * batch */
} bn_attrs;

/* [l2norm] (op_l2norm.c) */
typedef struct l2norm_attrs {
    float eps; /* lower bound of the divisor */
} l2norm_attrs;

#define L2NORM_DEFAULT_EPS 1e-12f

/* [hardsigmoid], [clip] (op_activation_extra.c; NULL attrs: PyTorch's
 * nn.Hardsigmoid, alpha 1/6 and beta 0.5, and an unbounded clip) */
/* hardsigmoid: y = clamp(alpha * x + beta, 0, 1); clip: y = clamp(x, lo, hi). */
typedef struct extra_attrs {
    float alpha, beta;
    float lo, hi;
} extra_attrs;

/* [pad] (op_pad.c) */
typedef enum pad_mode { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE } pad_mode;

typedef struct pad_attrs {
    int top, left, bottom, right;
    pad_mode mode;
    float value;
} pad_attrs;

/* [transpose] (op_transpose.c) */
#define PERM_MAX_DIMS (OSP_MAX_DIMS - 1) /* the batch takes one axis */

typedef struct transpose_attrs {
    int ndim;
    int perm[PERM_MAX_DIMS];
} transpose_attrs;

#endif
