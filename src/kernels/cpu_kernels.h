/* The CPU kernels behind the backend table (see include/osprey/kernels.h for
 * each slot's contract). One file per family: gemm.c, conv.c, pool.c, fc.c,
 * activation.c, batchnorm.c, softmax.c, l2norm.c. */
#ifndef OSPREY_CPU_KERNELS_H
#define OSPREY_CPU_KERNELS_H

#include "osprey/kernels.h"

void osp__cpu_sgemm(osp_gemm_trans ta, osp_gemm_trans tb, int m, int n, int k, float alpha,
                    const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

size_t osp__cpu_conv2d_workspace(const osp_conv_desc *d);
void osp__cpu_conv2d_forward(const osp_conv_desc *d, const float *x, const float *w,
                             const float *bias, float *y, void *workspace);
void osp__cpu_conv2d_backward_data(const osp_conv_desc *d, const float *dy, const float *w,
                                   float *dx, void *workspace);
void osp__cpu_conv2d_backward_filter(const osp_conv_desc *d, const float *x, const float *dy,
                                     float *dw, float *db, void *workspace);

void osp__cpu_maxpool_forward(const osp_conv_desc *d, const float *x, float *y, int32_t *argmax);
void osp__cpu_maxpool_backward(const osp_conv_desc *d, const float *dy, const int32_t *argmax,
                               float *dx);
void osp__cpu_avgpool_forward(const osp_conv_desc *d, int exclude_pad, const float *x, float *y);
void osp__cpu_avgpool_backward(const osp_conv_desc *d, int exclude_pad, const float *dy, float *dx);

void osp__cpu_fc_forward(int n, int in, int out, const float *x, const float *w,
                         const float *bias, float *y);
void osp__cpu_fc_backward(int n, int in, int out, const float *x, const float *w,
                          const float *dy, float *dx, float *dw, float *db);

void osp__cpu_activation_forward(osp_activation act, float alpha, int64_t count, const float *x,
                                 float *y);
void osp__cpu_activation_backward(osp_activation act, float alpha, int64_t count, const float *x,
                                  const float *y, const float *dy, float *dx);

void osp__cpu_batchnorm_forward_train(int n, int c, int s, const float *x, const float *gamma,
                                      const float *beta, float momentum, float eps,
                                      float *running_mean, float *running_var, float *save_mean,
                                      float *save_invstd, float *y);
void osp__cpu_batchnorm_forward_infer(int n, int c, int s, const float *x, const float *gamma,
                                      const float *beta, const float *running_mean,
                                      const float *running_var, float eps, float *y);
void osp__cpu_batchnorm_backward(int n, int c, int s, const float *x, const float *dy,
                                 const float *gamma, const float *save_mean,
                                 const float *save_invstd, float *dx, float *dgamma, float *dbeta);

void osp__cpu_softmax_forward(int rows, int cols, const float *x, float *y);
void osp__cpu_softmax_backward(int rows, int cols, const float *y, const float *dy, float *dx);
double osp__cpu_softmax_xent(int rows, int cols, const float *logits, const int32_t *labels,
                             float *probs, float *dlogits);

void osp__cpu_l2norm_forward(int rows, int cols, float eps, const float *x, float *y);
void osp__cpu_l2norm_backward(int rows, int cols, float eps, const float *x, const float *y,
                              const float *dy, float *dx);

#endif
