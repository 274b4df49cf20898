/* The fully connected layer's epilogue for inference (fc_fused.c,
 * fc_packed.h): the bias per column and a fused GELU, written for the
 * vectoriser (vmath.h), so that each instruction-set copy of its includer
 * vectorises it. */
#ifndef OSPREY_FC_EPILOGUE_H
#define OSPREY_FC_EPILOGUE_H

#include <stdint.h>

#include "osprey/kernels.h"
#include "vmath.h"

/* y[r][c0..c1) = fn(y + bias) for rows r < n (row stride ldy); bias (the
 * layer's, indexed by column) may be NULL, fn is OSP_FN_GELU,
 * OSP_FN_GELU_TANH or -1 (none). */
static void osp__fc_epilogue(int n, int64_t ldy, int c0, int c1, const float *bias, int fn,
                             float *y) {
    for (int r = 0; r < n; r++) {
        float *yr = y + (int64_t)r * ldy;
        if (bias && fn == OSP_FN_GELU)
            for (int c = c0; c < c1; c++) yr[c] = osp__vgelu(yr[c] + bias[c]);
        else if (bias && fn == OSP_FN_GELU_TANH)
            for (int c = c0; c < c1; c++) yr[c] = osp__vgelu_tanh(yr[c] + bias[c]);
        else if (bias)
            for (int c = c0; c < c1; c++) yr[c] += bias[c];
        else if (fn == OSP_FN_GELU)
            for (int c = c0; c < c1; c++) yr[c] = osp__vgelu(yr[c]);
        else if (fn == OSP_FN_GELU_TANH)
            for (int c = c0; c < c1; c++) yr[c] = osp__vgelu_tanh(yr[c]);
    }
}

#endif
