/* osprey kernels: the arithmetic behind every op, reached only through a
 * backend table chosen once at start. The CPU backend fills it from plain C
 * (+ OpenMP + OpenBLAS sgemm); SIMD variants and other devices fill the same
 * slots, so no graph, layer or trainer code changes when a kernel does.
 *
 * Conventions for every kernel:
 *   - tensors are float32, NCHW, contiguous;
 *   - forward kernels overwrite their output;
 *   - backward kernels ACCUMULATE (+=) into dx, dw and db, so that a tensor
 *     read by several ops gets the sum of their gradients; a NULL gradient
 *     pointer means "not needed" and that part is skipped;
 *   - workspace is scratch memory of the size the matching *_workspace
 *     function returned (bytes); kernels never allocate. */
#ifndef OSPREY_KERNELS_H
#define OSPREY_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "osprey/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A 2-D convolution or pooling window over a batch.
 * Input N x C x H x W, output N x K x P x Q (for pooling K == C). */
typedef struct osp_conv_desc {
    int n, c, h, w;        /* input */
    int k, p, q;           /* output channels, height, width */
    int kh, kw;            /* window */
    int stride_h, stride_w;
    int pad_h, pad_w;      /* top/left padding; bottom/right is implied by p, q */
    int dil_h, dil_w;
    int groups;            /* conv only: c and k are multiples of groups */
    /* conv forward only: an activation applied to each output after the
     * bias, in the same pass (inference fusion). OSP_ACT_NONE (0) when the
     * desc is zero-initialised; backward kernels ignore it. */
    int act;               /* an osp_activation */
    float act_alpha;       /* its parameter (leaky ReLU's slope) */
    /* conv forward only: what the same backend's conv2d_prepare made of
     * these filters for this shape, or NULL (then the forward uses w
     * alone). */
    const float *prepared;
    /* conv forward only: values laid out as y added to the output before
     * the activation (a residual connection's add, fused), or NULL. */
    const float *residual;
} osp_conv_desc;

/* Where an int8 convolution (osp_backend.conv2d_int8_forward_io) reads its
 * input and writes its output. Either side may be bytes in the "packed"
 * layout of an int8 convolution's input (conv2d_int8_packed_bytes per
 * image, images one after the other): an int8 layer that feeds another
 * one writes its output already quantised for it (and float32 too where
 * other layers read it), and the next one reads those bytes instead of
 * quantising float32 itself. */
typedef struct osp_int8_io {
    float x_scale;             /* the input's quantisation */
    int x_zero;
    const float *x;            /* float32 input, or NULL: */
    const uint8_t *xq;         /* the input packed for this layer */
    float *y;                  /* float32 output, or NULL; and or: */
    uint8_t *yq;               /* the output packed for next, or NULL, */
    const osp_conv_desc *next; /* the layer that reads it (its n, residual: unused) */
    float y_scale;             /* with next's input quantisation */
    int y_zero;
} osp_int8_io;

/* Output size of a window along one axis, or -1 if the window does not fit.
 * ceil_mode rounds up (as Caffe's pooling and ONNX's ceil_mode do), keeping
 * the last window starting inside the input or left padding. */
OSP_API int osp_conv_out_size(int in, int kernel, int stride, int pad, int dil, int ceil_mode);

typedef enum osp_activation {
    OSP_ACT_NONE = 0,
    OSP_ACT_RELU = 1,
    OSP_ACT_LEAKY_RELU = 2, /* alpha = negative slope */
    OSP_ACT_RELU6 = 3,
    OSP_ACT_SIGMOID = 4,
    OSP_ACT_TANH = 5,
    OSP_ACT_SWISH = 6,      /* x * sigmoid(x) */
} osp_activation;

/* Element-wise functions without a parameter (backend slots special_*):
 * those of transformers, and the plain functions ONNX models apply. */
typedef enum osp_special {
    OSP_FN_GELU = 0,      /* x * Phi(x), through erf (torch's approximate='none') */
    OSP_FN_GELU_TANH = 1, /* torch's approximate='tanh' */
    OSP_FN_ERF = 2,
    OSP_FN_EXP = 3,
    OSP_FN_LOG = 4,
    OSP_FN_SQRT = 5,
    OSP_FN_ABS = 6,        /* gradient 0 at 0, as torch.abs */
    OSP_FN_NEG = 7,
    OSP_FN_RECIPROCAL = 8, /* 1 / x */
    OSP_FN_SOFTPLUS = 9,   /* log(1 + exp(x)) */
    OSP_FN_SOFTSIGN = 10,  /* x / (1 + |x|) */
} osp_special;

/* Scaled dot-product attention over count independent (batch x heads)
 * attentions, each softmax(Q K^T * scale) V with Q tq x d, K tk x d (or,
 * with k_trans, K^T stored d x tk), V tk x dv, the output tq x dv. */
typedef struct osp_attention_desc {
    int64_t count;
    int tq, tk, d, dv;
    float scale;
    int k_trans;
} osp_attention_desc;

/* Piecewise-linear functions (backend slots piecewise_*), with params
 * {alpha, beta, lo, hi}: hardsigmoid clamp(alpha x + beta, 0, 1) (its
 * gradient alpha inside, 0 outside); hardswish x clamp(x + 3, 0, 6) / 6
 * (PyTorch's gradient); clip clamp(x, lo, hi) (gradient 1 where lo <= x
 * <= hi). A NaN input gives a NaN output. */
typedef enum osp_piecewise {
    OSP_PW_HARDSIGMOID = 0,
    OSP_PW_HARDSWISH = 1,
    OSP_PW_CLIP = 2,
} osp_piecewise;

typedef enum osp_gemm_trans { OSP_NO_TRANS = 0, OSP_TRANS = 1 } osp_gemm_trans;

/* 2-D resizing of planes (ONNX Resize, F.interpolate): each of `planes`
 * in_h x in_w planes becomes out_h x out_w. An output coordinate maps to
 * an input one by `coord` with the scale factors given (ONNX uses the
 * model's scales, not out/in, whenever it has them); nearest rounds it by
 * `nearest`, linear blends the two neighbours on each axis (bilinear),
 * clamped to the plane's edge. */
typedef enum osp_interp_mode { OSP_INTERP_NEAREST = 0, OSP_INTERP_LINEAR = 1 } osp_interp_mode;
typedef enum osp_resize_coord {
    OSP_COORD_HALF_PIXEL = 0,         /* (x + 0.5) / scale - 0.5 */
    OSP_COORD_PYTORCH_HALF_PIXEL = 1, /* the same, but 0 for an output of 1 */
    OSP_COORD_ALIGN_CORNERS = 2,      /* x (in - 1) / (out - 1) */
    OSP_COORD_ASYMMETRIC = 3,         /* x / scale */
    OSP_COORD_TF_HALF_PIXEL_FOR_NN = 4 /* (x + 0.5) / scale */
} osp_resize_coord;
typedef enum osp_resize_nearest {
    OSP_NEAREST_ROUND_PREFER_FLOOR = 0,
    OSP_NEAREST_ROUND_PREFER_CEIL = 1,
    OSP_NEAREST_FLOOR = 2,
    OSP_NEAREST_CEIL = 3
} osp_resize_nearest;
typedef struct osp_resize_desc {
    int64_t planes; /* batch x channels */
    int in_h, in_w, out_h, out_w;
    float scale_h, scale_w; /* output / input, > 0 */
    osp_interp_mode mode;
    osp_resize_coord coord;
    osp_resize_nearest nearest;
} osp_resize_desc;

/* One Adam or AdamW update's factors (osp_backend.adam_step), each
 * rounded to float from its double value as torch rounds its Python
 * floats. Per value: d = g (Adam: + weight_decay w; AdamW: w *= decay
 * first), m = beta1 m + one_minus_beta1 d, v = beta2 v +
 * one_minus_beta2 d^2, w -= step_size m / (sqrt(v) / c2_sqrt + eps). */
typedef struct osp_adam_step {
    float beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay;
    int decoupled;   /* AdamW */
    float decay;     /* AdamW: 1 - lr weight_decay */
    float step_size; /* lr / (1 - beta1^t) */
    float c2_sqrt;   /* sqrt(1 - beta2^t) */
} osp_adam_step;

typedef struct osp_backend {
    const char *name; /* "cpu-ref", "cpu-avx2", ... */

    /* C (M x N) = alpha * op(A) (M x K) * op(B) (K x N) + beta * C, row-major. */
    void (*sgemm)(osp_gemm_trans ta, osp_gemm_trans tb, int m, int n, int k, float alpha,
                  const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

    /* Convolution. w is K x (C/groups) x kh x kw; bias (K) may be NULL. */
    size_t (*conv2d_workspace)(const osp_conv_desc *d);
    void (*conv2d_forward)(const osp_conv_desc *d, const float *x, const float *w,
                           const float *bias, float *y, void *workspace);
    /* Filters transformed once for many forwards (inference): the floats
     * conv2d_prepare needs for d's shape (whatever d->n), 0 when this
     * backend has nothing to prepare for it (then conv2d_prepare must not
     * be called). The result depends on w alone: make it again when w
     * changes. */
    size_t (*conv2d_prepared_floats)(const osp_conv_desc *d);
    void (*conv2d_prepare)(const osp_conv_desc *d, const float *w, float *prepared);
    /* Int8 convolution for inference, ungrouped layers only. NULL on a
     * backend without the instructions for it: the layer then runs
     * float32. conv2d_int8_prepare quantises w per output channel
     * (symmetric int8: scale = max |w| / 127) into
     * conv2d_int8_prepared_bytes(d) bytes (0: a shape it does not take:
     * groups, or more than 65536 taps). The forward quantises x per tensor,
     * q = clamp(round(x / x_scale) + x_zero, 0, 255), sums exactly in
     * int32 and writes float32 y with the bias, d's residual and
     * activation, as conv2d_forward. Every backend's int8 forward gives
     * the same bits (src/kernels/conv_int8.h). */
    size_t (*conv2d_int8_prepared_bytes)(const osp_conv_desc *d);
    void (*conv2d_int8_prepare)(const osp_conv_desc *d, const float *w, void *prepared);
    size_t (*conv2d_int8_workspace)(const osp_conv_desc *d);
    void (*conv2d_int8_forward)(const osp_conv_desc *d, float x_scale, int x_zero, const float *x,
                                const void *prepared, const float *bias, float *y,
                                void *workspace);
    /* Int8 activations between layers: the bytes one image's input takes
     * packed for d (0: d does not read packed input: a strided window),
     * and the forward with io's input and output (packed or float32). An
     * output packed for next is the bytes next's forward would make of
     * the float32 output, bit for bit. NULL where conv2d_int8_forward is. */
    size_t (*conv2d_int8_packed_bytes)(const osp_conv_desc *d);
    void (*conv2d_int8_forward_io)(const osp_conv_desc *d, const osp_int8_io *io,
                                   const void *prepared, const float *bias, void *workspace);
    /* dx += conv_transpose(dy, w) */
    void (*conv2d_backward_data)(const osp_conv_desc *d, const float *dy, const float *w,
                                 float *dx, void *workspace);
    /* dw += corr(x, dy); db += sum of dy over N, P, Q (db may be NULL) */
    void (*conv2d_backward_filter)(const osp_conv_desc *d, const float *x, const float *dy,
                                   float *dw, float *db, void *workspace);

    /* Max pooling; argmax (N*C*P*Q) records the winning input offset within
     * each image-channel plane, for the backward pass. Padding never wins. */
    void (*maxpool_forward)(const osp_conv_desc *d, const float *x, float *y, int32_t *argmax);
    void (*maxpool_backward)(const osp_conv_desc *d, const float *dy, const int32_t *argmax,
                             float *dx);
    /* Average pooling; padded positions count in the divisor (PyTorch's
     * count_include_pad=True) unless exclude_pad. Global average pooling is
     * the window kh = h, kw = w. */
    void (*avgpool_forward)(const osp_conv_desc *d, int exclude_pad, const float *x, float *y);
    void (*avgpool_backward)(const osp_conv_desc *d, int exclude_pad, const float *dy, float *dx);

    /* Fully connected: x (n x in), w (out x in, PyTorch's Linear layout),
     * bias (out) may be NULL, y (n x out). */
    void (*fc_forward)(int n, int in, int out, const float *x, const float *w, const float *bias,
                       float *y);
    void (*fc_backward)(int n, int in, int out, const float *x, const float *w, const float *dy,
                        float *dx, float *dw, float *db);
    /* Weights laid out once for many inference forwards (optional: NULL
     * in a backend without them, as are the other two): the floats
     * fc_prepare makes of w (out x in), 0 when this backend prepares
     * nothing for the shape (then fc_prepare must not be called);
     * prepared is 64-byte aligned (as osp_alloc's memory). The
     * result depends on w alone: make it again when w changes.
     * fc_forward_prepared is fc_forward_fused given w and what fc_prepare
     * made of it. */
    size_t (*fc_prepared_floats)(int in, int out);
    void (*fc_prepare)(int in, int out, const float *w, float *prepared);
    void (*fc_forward_prepared)(int n, int in, int out, const float *x, const float *w,
                                const float *prepared, const float *bias, int fn, float *y);

    /* Element-wise activation over count values. The backward gets both the
     * input x and the output y (each activation uses whichever is cheaper). */
    void (*activation_forward)(osp_activation act, float alpha, int64_t count, const float *x,
                               float *y);
    void (*activation_backward)(osp_activation act, float alpha, int64_t count, const float *x,
                                const float *y, const float *dy, float *dx);

    /* Batch normalisation over N x C x S (S = H*W). Training: batch
     * statistics (biased variance to normalise, unbiased to update the
     * running variance, as PyTorch), running stats updated with momentum
     * (running = (1-momentum)*running + momentum*batch); save_mean and
     * save_invstd (C each) kept for the backward. */
    void (*batchnorm_forward_train)(int n, int c, int s, const float *x, const float *gamma,
                                    const float *beta, float momentum, float eps,
                                    float *running_mean, float *running_var, float *save_mean,
                                    float *save_invstd, float *y);
    void (*batchnorm_forward_infer)(int n, int c, int s, const float *x, const float *gamma,
                                    const float *beta, const float *running_mean,
                                    const float *running_var, float eps, float *y);
    void (*batchnorm_backward)(int n, int c, int s, const float *x, const float *dy,
                               const float *gamma, const float *save_mean,
                               const float *save_invstd, float *dx, float *dgamma, float *dbeta);
    /* Batch norm over several replicas' batches (synchronised): the same
     * arithmetic cut where the sums over the whole batch are needed.
     * batchnorm_sums: per channel, sum of x - center and of its square
     * (center NULL: 0). batchnorm_forward_stats: forward_train with the
     * batch's mean and biased variance given (count values per channel).
     * batchnorm_backward_sums: per channel, sum of dy and of
     * dy * (x - save_mean), and adds this replica's dbeta and dgamma.
     * batchnorm_backward_stats: dx (accumulated) from those sums over the
     * whole batch of count values per channel. */
    void (*batchnorm_sums)(int n, int c, int s, const float *x, const double *center, double *sum,
                           double *sq);
    void (*batchnorm_forward_stats)(int n, int c, int s, const float *x, const float *gamma,
                                    const float *beta, float momentum, float eps,
                                    const double *mean, const double *var, double count,
                                    float *running_mean, float *running_var, float *save_mean,
                                    float *save_invstd, float *y);
    void (*batchnorm_backward_sums)(int n, int c, int s, const float *x, const float *dy,
                                    const float *save_mean, const float *save_invstd,
                                    double *sum_dy, double *sum_dy_xm, float *dgamma, float *dbeta);
    void (*batchnorm_backward_stats)(int n, int c, int s, const float *x, const float *dy,
                                     const float *gamma, const float *save_mean,
                                     const float *save_invstd, const double *sum_dy,
                                     const double *sum_dy_xm, double count, float *dx);

    /* Row-wise softmax over rows x cols. */
    void (*softmax_forward)(int rows, int cols, const float *x, float *y);
    void (*softmax_backward)(int rows, int cols, const float *y, const float *dy, float *dx);

    /* Fused softmax + cross-entropy (numerically stable, log-sum-exp).
     * labels: rows ints in [0, cols). Writes the mean loss over rows to
     * *loss; if dlogits is non-NULL it is OVERWRITTEN with d(mean
     * loss)/d(logits); probs (rows x cols) may be NULL. labels and loss (one
     * double), like every pointer a slot takes, are in the backend's
     * memory: a device keeps the loss where it computed it, and the caller
     * reads it back when it needs it (osp__batch_loss in src/train does). */
    void (*softmax_xent)(int rows, int cols, const float *logits, const int32_t *labels,
                         float *probs, float *dlogits, double *loss);

    /* Fused sigmoid + binary cross-entropy on logits (multi-label), as
     * torch.nn.BCEWithLogitsLoss(reduction='mean'): each value's loss is
     * max(x, 0) - x*t + log1p(exp(-|x|)) (stable for any x), averaged over
     * all rows x cols values. targets: rows x cols floats in [0, 1] (a
     * multi-hot vector per row). Writes the mean loss to *loss; if dlogits
     * is non-NULL it is OVERWRITTEN with d(mean loss)/d(logits) =
     * (sigmoid(x) - t) / (rows * cols); probs (rows x cols sigmoids) may be
     * NULL. Sums run in double, in an order that depends only on the
     * thread count. Pointers in the backend's memory, as softmax_xent's. */
    void (*sigmoid_bce)(int rows, int cols, const float *logits, const float *targets,
                        float *probs, float *dlogits, double *loss);

    /* L2 normalisation of each row: y = x / max(||x||, eps). */
    void (*l2norm_forward)(int rows, int cols, float eps, const float *x, float *y);
    void (*l2norm_backward)(int rows, int cols, float eps, const float *x, const float *y,
                            const float *dy, float *dx);

    /* Resizing (osp_resize_desc): y = resize(x); dx += the transpose of
     * the same map applied to dy (each output's gradient scattered to the
     * inputs it read, with their weights). */
    void (*resize_forward)(const osp_resize_desc *d, const float *x, float *y);
    void (*resize_backward)(const osp_resize_desc *d, const float *dy, float *dx);
    /* Transposed convolution (ONNX's ConvTranspose, PyTorch's
     * ConvTranspose2d), the adjoint of conv2d. d describes it as a layer:
     * input x N x C x H x W, output y N x K x P x Q, window kh x kw with
     * stride, dilation and groups; pad_h and pad_w are the rows and columns
     * cut from the top and left of the full result, P and Q imply what is
     * cut from (or added to) the bottom and right. Input position (h, w)
     * and tap (i, j) reach output (h*stride_h - pad_h + i*dil_h,
     * w*stride_w - pad_w + j*dil_w) when it lies inside P x Q. w is
     * C x (K/groups) x kh x kw (ONNX's and PyTorch's layout); bias (K) may
     * be NULL. The backward kernels accumulate as every backward does. */
    size_t (*deconv2d_workspace)(const osp_conv_desc *d);
    void (*deconv2d_forward)(const osp_conv_desc *d, const float *x, const float *w,
                             const float *bias, float *y, void *workspace);
    void (*deconv2d_backward_data)(const osp_conv_desc *d, const float *dy, const float *w,
                                   float *dx, void *workspace);
    /* dw += the correlation of x and dy; db += sum of dy over N, P, Q
     * (dw or db may be NULL). */
    void (*deconv2d_backward_filter)(const osp_conv_desc *d, const float *x, const float *dy,
                                     float *dw, float *db, void *workspace);

    /* Group normalisation of x (N x C x S): each sample's channels in
     * `groups` groups of C/groups, each group normalised over its
     * (C/groups)*S values (mean and biased variance, in double), then
     * y = xhat * gamma[c] + beta[c]. The same in training and inference (no
     * running statistics). save_mean and save_invstd (N*groups each) keep
     * each group's mean and 1/sqrt(var + eps) for the backward; NULL in
     * inference. */
    void (*groupnorm_forward)(int n, int c, int s, int groups, float eps, const float *x,
                              const float *gamma, const float *beta, float *save_mean,
                              float *save_invstd, float *y);
    void (*groupnorm_backward)(int n, int c, int s, int groups, const float *x, const float *dy,
                               const float *gamma, const float *save_mean,
                               const float *save_invstd, float *dx, float *dgamma, float *dbeta);

    /* ---- transformers ---- */
    /* count GEMMs of one shape: C_i = alpha * op(A_i) op(B_i) + beta * C_i
     * with A_i = a + i * stride_a (and so for B and C). A stride of 0
     * broadcasts one matrix; stride_c == 0 sums every product into one C
     * (beta applies once). */
    void (*sgemm_batched)(osp_gemm_trans ta, osp_gemm_trans tb, int m, int n, int k, float alpha,
                          const float *a, int lda, int64_t stride_a, const float *b, int ldb,
                          int64_t stride_b, float beta, float *c, int ldc, int64_t stride_c,
                          int count);
    /* Layer normalisation of each row (rows x cols), as torch.nn.LayerNorm:
     * biased variance; gamma and beta (cols) may be NULL (1 and 0);
     * save_mean and save_invstd (rows each) may be NULL (inference). */
    void (*layernorm_forward)(int64_t rows, int cols, float eps, const float *x,
                              const float *gamma, const float *beta, float *y, float *save_mean,
                              float *save_invstd);
    void (*layernorm_backward)(int64_t rows, int cols, const float *x, const float *dy,
                               const float *gamma, const float *save_mean,
                               const float *save_invstd, float *dx, float *dgamma, float *dbeta);
    /* GELU and erf, value by value (osp_special). */
    void (*special_forward)(osp_special fn, int64_t count, const float *x, float *y);
    void (*special_backward)(osp_special fn, int64_t count, const float *x, const float *dy,
                             float *dx);
    /* Softmax along the middle axis of outer x len x inner values. */
    void (*softmax_axis_forward)(int64_t outer, int len, int64_t inner, const float *x, float *y);
    void (*softmax_axis_backward)(int64_t outer, int len, int64_t inner, const float *y,
                                  const float *dy, float *dx);
    /* Log-softmax along the same outer x len x inner block: y = x - max -
     * log(sum exp(x - max)); the backward adds dy - exp(y) sum(dy). */
    void (*logsoftmax_forward)(int64_t outer, int len, int64_t inner, const float *x, float *y);
    void (*logsoftmax_backward)(int64_t outer, int len, int64_t inner, const float *y,
                                const float *dy, float *dx);
    /* Fused attention (osp_attention_desc), blockwise with an online
     * softmax: never more than a block of scores at once. The forward
     * writes o and, where lse is not NULL, each query's log-sum-exp of its
     * scaled scores (count x tq), which the backward needs; the backward
     * adds into dq, dk (laid out as k) and dv, each of which may be NULL. */
    size_t (*attention_workspace)(const osp_attention_desc *d);
    void (*attention_forward)(const osp_attention_desc *d, const float *q, const float *k,
                              const float *v, float *o, float *lse, void *workspace);
    void (*attention_backward)(const osp_attention_desc *d, const float *q, const float *k,
                               const float *v, const float *o, const float *dout,
                               const float *lse, float *dq, float *dk, float *dv,
                               void *workspace);
    /* Inference's fully connected layer with the element-wise function the
     * plan fused after it: y = fn(x w^T + bias), shapes as fc_forward; fn
     * is OSP_FN_GELU or OSP_FN_GELU_TANH, any other value (-1) none. */
    void (*fc_forward_fused)(int n, int in, int out, const float *x, const float *w,
                             const float *bias, int fn, float *y);

    /* ---- the device seam ----
     * Memory and the host's access to it. Every pointer the slots above
     * take (x, w, y, workspace, labels, ...) is memory from this table's
     * mem_alloc (the "device"), unless a slot says otherwise; the graph,
     * the layers, the optimizer and the trainer reach it only through
     * these slots. ctx is the backend's own state, handed to every slot
     * that takes it (a device backend keeps its stream and allocator
     * there); the CPU tables' is NULL. host_memory is 1 where device
     * memory is host memory (the CPU tables): a caller may then read a
     * result in place instead of copying it out, which saves a copy but
     * changes no value. */
    void *ctx;
    int host_memory;
    /* bytes (> 0) of device memory aligned to OSP_ALIGN, contents
     * undefined, or NULL when there is none left; mem_free(NULL) is a
     * no-op. */
    void *(*mem_alloc)(void *ctx, size_t bytes);
    void (*mem_free)(void *ctx, void *p);
    /* Copies between host and device memory and within the device; the
     * regions do not overlap. They return once the host side may be
     * reused (copy_d2h: once dst holds the values). */
    void (*copy_h2d)(void *ctx, void *dst, const void *src, size_t bytes);
    void (*copy_d2h)(void *ctx, void *dst, const void *src, size_t bytes);
    void (*copy_d2d)(void *ctx, void *dst, const void *src, size_t bytes);
    /* Zero fill (all the graph needs: gradients start at 0). */
    void (*mem_zero)(void *ctx, void *p, size_t bytes);
    /* Optional (NULL: nothing to do): brackets each forward pass, with
     * infer = 1 for an inference pass. run_begin returns a token that
     * run_end gets back. The CPU tables narrow OpenMP's team for
     * inference to the cores other processes leave idle
     * (osp_threads_for_inference) and restore it after. */
    int (*run_begin)(void *ctx, int infer);
    void (*run_end)(void *ctx, int token);
    /* Every byte of p set to value (a mask of ones). */
    void (*fill_bytes)(void *ctx, void *p, int value, size_t bytes);

    /* The ops' own element-wise work. y = a + b (y may be a or b). */
    void (*add)(int64_t count, const float *a, const float *b, float *y);
    /* y += x: a gradient passed through unchanged. */
    void (*accumulate)(int64_t count, const float *x, float *y);
    /* Inverted dropout: mask[i] = 1 where value i is kept (probability
     * 1 - p), y = x / (1 - p) there and 0 elsewhere. The CPU tables draw
     * the mask serially from osp_rng_derive(seed, stream, step), the same
     * for any thread count; another backend may draw it its own way, the
     * same on every forward of one (seed, stream, step). The backward adds
     * dy / (1 - p) into dx where mask is set. */
    void (*dropout_forward)(int64_t count, float p, uint64_t seed, uint64_t stream,
                            uint64_t step, const float *x, float *y, uint8_t *mask);
    void (*dropout_backward)(int64_t count, float p, const uint8_t *mask, const float *dy,
                             float *dx);
    /* osp_piecewise functions; the backward adds into dx. */
    void (*piecewise_forward)(osp_piecewise fn, const float *params, int64_t count,
                              const float *x, float *y);
    void (*piecewise_backward)(osp_piecewise fn, const float *params, int64_t count,
                               const float *x, const float *dy, float *dx);
    /* A permutation of axes, sample by sample: each of `samples` blocks
     * is walked in the output's row-major order over dims (ndim axes,
     * ndim < OSP_MAX_DIMS), stride[i] being the input's stride along
     * output axis i; forward y[o] = x[offset], backward dx[offset] +=
     * dy[o]. */
    void (*permute_forward)(int64_t samples, int ndim, const int64_t *dims,
                            const int64_t *stride, const float *x, float *y);
    void (*permute_backward)(int64_t samples, int ndim, const int64_t *dims,
                             const int64_t *stride, const float *dy, float *dx);
    /* rows rows of len values, row r at x + r ldx and y + r ldy: copied
     * (y = x), or added (y += x). Concatenation along an inner axis; with
     * ldx 0, one row repeated (a [constant] over the batch). */
    void (*copy_rows)(int64_t rows, int64_t len, const float *x, int64_t ldx, float *y,
                      int64_t ldy);
    void (*accumulate_rows)(int64_t rows, int64_t len, const float *x, int64_t ldx, float *y,
                            int64_t ldy);

    /* The optimizers' updates over n parameters w with gradients g, as
     * torch.optim's (src/optim/optimizer.c works out the factors). SGD:
     * d = g + weight_decay w; with momentum, buf = momentum buf + d and
     * d = buf (Nesterov: d + momentum buf); w -= lr d. */
    void (*sgd_step)(int64_t n, float lr, float momentum, float weight_decay, int nesterov,
                     float *w, const float *g, float *buf);
    void (*adam_step)(int64_t n, const osp_adam_step *s, float *w, const float *g, float *m,
                      float *v);
} osp_backend;

/* The portable reference backend: plain C, OpenMP and OpenBLAS sgemm. */
OSP_API const osp_backend *osp_backend_cpu_reference(void);
/* A CPU backend by name: "reference" (or "cpu-ref"), "avx2" ("cpu-avx2"),
 * "avx512" ("cpu-avx512"); NULL if unknown or if this CPU cannot run it. */
OSP_API const osp_backend *osp_backend_find(const char *name);
/* The backend chosen for this machine: the widest instruction set the CPU
 * supports (checked at run time). The environment variable OSP_BACKEND
 * (a name osp_backend_find knows, e.g. OSP_BACKEND=reference for the
 * portable one) overrides the choice. Both are read once, at the first
 * call; later calls return the same table. A graph takes this table when
 * it is made (osp_graph_set_backend chooses another). */
OSP_API const osp_backend *osp_backend_default(void);

#ifdef __cplusplus
}
#endif

#endif
