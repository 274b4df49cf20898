/* The CPU kernels behind the backend table (see include/osprey/kernels.h for
 * each slot's contract). One file per family: gemm.c, conv.c, pool.c, fc.c,
 * activation.c, batchnorm.c, softmax.c, l2norm.c.
 *
 * The families that run over whole activations (conv, pool, batchnorm,
 * activation) are plain C written so that compilers vectorise them. Each is
 * compiled three times: as itself (osp__cpu_*, the portable reference, for
 * baseline x86-64), and by <family>_avx2.c and <family>_avx512.c, which
 * include it under a target pragma with KFN naming the copies osp__avx2_*
 * and osp__avx512_*. backend_cpu.c puts each copy in its backend table and
 * picks one by CPU features at run time. */
#ifndef OSPREY_CPU_KERNELS_H
#define OSPREY_CPU_KERNELS_H

#include "osprey/kernels.h"

/* The name a kernel family file gives its entry points. */
#ifndef KFN
#define KFN(name) osp__cpu_##name
#endif

void osp__cpu_sgemm(osp_gemm_trans ta, osp_gemm_trans tb, int m, int n, int k, float alpha,
                    const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

/* The threads a kernel may use (OpenMP's count, at most the cores) and the
 * per-thread workspace slots a plan provides (one per core), so that a
 * plan made before osp_threads_set stays valid. */
/* y (rows) = a (rows x cols, row stride lda) x + beta y, on the calling
 * thread. */
void osp__cpu_sgemv_rows(int rows, int cols, const float *a, int lda, const float *x, float beta,
                         float *y);
int osp__kernel_team(void);
int osp__kernel_slots(void);

/* The compiled variants of a family, declared for every prefix. */
#define OSP_DECLARE_MULTIVERSIONED(P)                                                        \
    size_t P##conv2d_workspace(const osp_conv_desc *d);                                      \
    void P##conv2d_forward(const osp_conv_desc *d, const float *x, const float *w,           \
                           const float *bias, float *y, void *workspace);                    \
    size_t P##conv2d_prepared_floats(const osp_conv_desc *d);                                \
    void P##conv2d_prepare(const osp_conv_desc *d, const float *w, float *prepared);         \
    void P##conv2d_backward_data(const osp_conv_desc *d, const float *dy, const float *w,    \
                                 float *dx, void *workspace);                                \
    void P##conv2d_backward_filter(const osp_conv_desc *d, const float *x, const float *dy,  \
                                   float *dw, float *db, void *workspace);                   \
    void P##maxpool_forward(const osp_conv_desc *d, const float *x, float *y,                \
                            int32_t *argmax);                                                \
    void P##maxpool_backward(const osp_conv_desc *d, const float *dy, const int32_t *argmax, \
                             float *dx);                                                     \
    void P##avgpool_forward(const osp_conv_desc *d, int exclude_pad, const float *x,         \
                            float *y);                                                       \
    void P##avgpool_backward(const osp_conv_desc *d, int exclude_pad, const float *dy,       \
                             float *dx);                                                     \
    void P##activation_forward(osp_activation act, float alpha, int64_t count,               \
                               const float *x, float *y);                                    \
    void P##activation_backward(osp_activation act, float alpha, int64_t count,              \
                                const float *x, const float *y, const float *dy, float *dx); \
    void P##batchnorm_forward_train(int n, int c, int s, const float *x, const float *gamma, \
                                    const float *beta, float momentum, float eps,            \
                                    float *running_mean, float *running_var,                 \
                                    float *save_mean, float *save_invstd, float *y);         \
    void P##batchnorm_forward_infer(int n, int c, int s, const float *x, const float *gamma, \
                                    const float *beta, const float *running_mean,            \
                                    const float *running_var, float eps, float *y);          \
    void P##batchnorm_backward(int n, int c, int s, const float *x, const float *dy,         \
                               const float *gamma, const float *save_mean,                   \
                               const float *save_invstd, float *dx, float *dgamma,           \
                               float *dbeta);

OSP_DECLARE_MULTIVERSIONED(osp__cpu_)
OSP_DECLARE_MULTIVERSIONED(osp__avx2_)
OSP_DECLARE_MULTIVERSIONED(osp__avx512_)

/* Inference's 3x3/2 max pooling with padding 1 (maxpool3s2_avx512.c):
 * whether it took d (else pool.c's general loop runs). */
int osp__avx512_maxpool3s2(const osp_conv_desc *d, const float *x, float *y);

/* Int8 convolution (conv_int8.c; the VNNI forward in conv_int8_vnni.c). */
size_t osp__conv2d_int8_prepared_bytes(const osp_conv_desc *d);
void osp__conv2d_int8_prepare(const osp_conv_desc *d, const float *w, void *prepared);
size_t osp__conv2d_int8_workspace(const osp_conv_desc *d);
void osp__cpu_conv2d_int8_forward(const osp_conv_desc *d, float x_scale, int x_zero,
                                  const float *x, const void *prepared, const float *bias,
                                  float *y, void *workspace);
void osp__vnni_conv2d_int8_forward(const osp_conv_desc *d, float x_scale, int x_zero,
                                   const float *x, const void *prepared, const float *bias,
                                   float *y, void *workspace);
size_t osp__conv2d_int8_packed_bytes(const osp_conv_desc *d);
void osp__cpu_conv2d_int8_forward_io(const osp_conv_desc *d, const osp_int8_io *io,
                                     const void *prepared, const float *bias, void *workspace);
void osp__vnni_conv2d_int8_forward_io(const osp_conv_desc *d, const osp_int8_io *io,
                                      const void *prepared, const float *bias, void *workspace);

void osp__cpu_fc_forward(int n, int in, int out, const float *x, const float *w,
                         const float *bias, float *y);
void osp__cpu_fc_backward(int n, int in, int out, const float *x, const float *w,
                          const float *dy, float *dx, float *dw, float *db);

void osp__cpu_softmax_forward(int rows, int cols, const float *x, float *y);
void osp__cpu_softmax_backward(int rows, int cols, const float *y, const float *dy, float *dx);
double osp__cpu_softmax_xent(int rows, int cols, const float *logits, const int32_t *labels,
                             float *probs, float *dlogits);
double osp__cpu_sigmoid_bce(int rows, int cols, const float *logits, const float *targets,
                            float *probs, float *dlogits);

void osp__cpu_l2norm_forward(int rows, int cols, float eps, const float *x, float *y);
void osp__cpu_l2norm_backward(int rows, int cols, float eps, const float *x, const float *y,
                              const float *dy, float *dx);

/* resize.c */
void osp__cpu_resize_forward(const osp_resize_desc *d, const float *x, float *y);
void osp__cpu_resize_backward(const osp_resize_desc *d, const float *dy, float *dx);

/* Transposed convolution (deconv.c) and group normalisation
 * (groupnorm.c): one portable copy, shared by every CPU table. */
size_t osp__cpu_deconv2d_workspace(const osp_conv_desc *d);
void osp__cpu_deconv2d_forward(const osp_conv_desc *d, const float *x, const float *w,
                               const float *bias, float *y, void *workspace);
void osp__cpu_deconv2d_backward_data(const osp_conv_desc *d, const float *dy, const float *w,
                                     float *dx, void *workspace);
void osp__cpu_deconv2d_backward_filter(const osp_conv_desc *d, const float *x, const float *dy,
                                       float *dw, float *db, void *workspace);
void osp__cpu_groupnorm_forward(int n, int c, int s, int groups, float eps, const float *x,
                                const float *gamma, const float *beta, float *save_mean,
                                float *save_invstd, float *y);
void osp__cpu_groupnorm_backward(int n, int c, int s, int groups, const float *x,
                                 const float *dy, const float *gamma, const float *save_mean,
                                 const float *save_invstd, float *dx, float *dgamma,
                                 float *dbeta);

/* Synchronised batch norm (batchnorm_sync.c): one portable copy. */
void osp__cpu_batchnorm_sums(int n, int c, int s, const float *x, const double *center,
                             double *sum, double *sq);
void osp__cpu_batchnorm_forward_stats(int n, int c, int s, const float *x, const float *gamma,
                                      const float *beta, float momentum, float eps,
                                      const double *mean, const double *var, double count,
                                      float *running_mean, float *running_var, float *save_mean,
                                      float *save_invstd, float *y);
void osp__cpu_batchnorm_backward_sums(int n, int c, int s, const float *x, const float *dy,
                                      const float *save_mean, const float *save_invstd,
                                      double *sum_dy, double *sum_dy_xm, float *dgamma,
                                      float *dbeta);
void osp__cpu_batchnorm_backward_stats(int n, int c, int s, const float *x, const float *dy,
                                       const float *gamma, const float *save_mean,
                                       const float *save_invstd, const double *sum_dy,
                                       const double *sum_dy_xm, double count, float *dx);

/* Transformers: gemm_batched.c, layernorm.c, gelu.c, softmax_axis.c (and log-softmax), attention.c. */
void osp__cpu_sgemm_batched(osp_gemm_trans ta, osp_gemm_trans tb, int m, int n, int k,
                            float alpha, const float *a, int lda, int64_t stride_a,
                            const float *b, int ldb, int64_t stride_b, float beta, float *c,
                            int ldc, int64_t stride_c, int count);
/* The transformers' element-wise kernels, compiled once per instruction
 * set as the families above: gelu.c (special_*, through vmath.h),
 * fc_fused.c, attention.c and layernorm.c. */
#define OSP_DECLARE_TRANSFORMER_MULTIVERSIONED(P)                                            \
    void P##special_forward(osp_special fn, int64_t count, const float *x, float *y);       \
    void P##special_backward(osp_special fn, int64_t count, const float *x, const float *dy, \
                             float *dx);                                                    \
    void P##fc_forward_fused(int n, int in, int out, const float *x, const float *w,       \
                             const float *bias, int fn, float *y);                   \
    size_t P##attention_workspace(const osp_attention_desc *d);                             \
    void P##attention_forward(const osp_attention_desc *d, const float *q, const float *k,  \
                              const float *v, float *o, float *lse, void *workspace);       \
    void P##attention_backward(const osp_attention_desc *d, const float *q, const float *k, \
                               const float *v, const float *o, const float *dout,           \
                               const float *lse, float *dq, float *dk, float *dv,           \
                               void *workspace);                                            \
    void P##layernorm_forward(int64_t rows, int cols, float eps, const float *x,             \
                              const float *gamma, const float *beta, float *y,              \
                              float *save_mean, float *save_invstd);                        \
    void P##layernorm_backward(int64_t rows, int cols, const float *x, const float *dy,     \
                               const float *gamma, const float *save_mean,                  \
                               const float *save_invstd, float *dx, float *dgamma,          \
                               float *dbeta);

OSP_DECLARE_TRANSFORMER_MULTIVERSIONED(osp__cpu_)
OSP_DECLARE_TRANSFORMER_MULTIVERSIONED(osp__avx2_)
OSP_DECLARE_TRANSFORMER_MULTIVERSIONED(osp__avx512_)
/* The linear layers' weights packed once for the AVX2 and AVX-512 GEMM
 * tiles (fc_packed.h); the reference has no such slots. */
#define OSP_DECLARE_FC_PREPARED(P)                                                          \
    size_t P##fc_prepared_floats(int in, int out);                                          \
    void P##fc_prepare(int in, int out, const float *w, float *prepared);                   \
    void P##fc_forward_prepared(int n, int in, int out, const float *x, const float *w,     \
                                const float *prepared, const float *bias, int fn, float *y);

OSP_DECLARE_FC_PREPARED(osp__avx2_)
OSP_DECLARE_FC_PREPARED(osp__avx512_)
/* unary.c: the special_* functions after GELU and erf (exp, log, ...). */
void osp__cpu_unary_forward(osp_special fn, int64_t count, const float *x, float *y);
void osp__cpu_unary_backward(osp_special fn, int64_t count, const float *x, const float *dy,
                             float *dx);
void osp__cpu_softmax_axis_forward(int64_t outer, int len, int64_t inner, const float *x,
                                   float *y);
void osp__cpu_softmax_axis_backward(int64_t outer, int len, int64_t inner, const float *y,
                                    const float *dy, float *dx);
void osp__cpu_logsoftmax_forward(int64_t outer, int len, int64_t inner, const float *x,
                                 float *y);
void osp__cpu_logsoftmax_backward(int64_t outer, int len, int64_t inner, const float *y,
                                  const float *dy, float *dx);

/* Memory (memory.c): device memory is host memory. */
void *osp__cpu_mem_alloc(void *ctx, size_t bytes);
void osp__cpu_mem_free(void *ctx, void *p);
void osp__cpu_copy(void *ctx, void *dst, const void *src, size_t bytes);
void osp__cpu_mem_zero(void *ctx, void *p, size_t bytes);
int osp__cpu_run_begin(void *ctx, int infer);
void osp__cpu_run_end(void *ctx, int token);
void osp__cpu_fill_bytes(void *ctx, void *p, int value, size_t bytes);
/* The ops' element-wise loops (elementwise.c) and the optimizers'
 * updates (optimizer.c). */
void osp__cpu_add(int64_t count, const float *a, const float *b, float *y);
void osp__cpu_accumulate(int64_t count, const float *x, float *y);
void osp__cpu_dropout_forward(int64_t count, float p, uint64_t seed, uint64_t stream,
                              uint64_t step, const float *x, float *y, uint8_t *mask);
void osp__cpu_dropout_backward(int64_t count, float p, const uint8_t *mask, const float *dy,
                               float *dx);
void osp__cpu_piecewise_forward(osp_piecewise fn, const float *params, int64_t count,
                                const float *x, float *y);
void osp__cpu_piecewise_backward(osp_piecewise fn, const float *params, int64_t count,
                                 const float *x, const float *dy, float *dx);
void osp__cpu_permute_forward(int64_t samples, int ndim, const int64_t *dims,
                              const int64_t *stride, const float *x, float *y);
void osp__cpu_permute_backward(int64_t samples, int ndim, const int64_t *dims,
                               const int64_t *stride, const float *dy, float *dx);
void osp__cpu_copy_rows(int64_t rows, int64_t len, const float *x, int64_t ldx, float *y,
                        int64_t ldy);
void osp__cpu_accumulate_rows(int64_t rows, int64_t len, const float *x, int64_t ldx, float *y,
                              int64_t ldy);
void osp__cpu_sgd_step(int64_t n, float lr, float momentum, float weight_decay, int nesterov,
                       float *w, const float *g, float *buf);
void osp__cpu_adam_step(int64_t n, const osp_adam_step *s, float *w, const float *g, float *m,
                        float *v);

#endif
