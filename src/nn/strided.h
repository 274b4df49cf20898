/* A walk over an N-d block in row-major order that also tracks an offset
 * into another buffer moving with its own strides: the copy behind
 * [slice] (strides step x the input's), [expand] (stride 0 on broadcast
 * axes) and [reduce] (stride 0 on reduced axes of the output). */
#ifndef OSPREY_NN_STRIDED_H
#define OSPREY_NN_STRIDED_H

#include "osprey/core.h"

/* Calls BODY with o, the row-major offset of each element of a block of
 * nd >= 1 axes of sizes dim (in order), and x = base + sum idx[k] *
 * stride[k], the matching offset in the other buffer. The last axis is a
 * plain loop. */
#define OSP_STRIDED_FOR(nd_, dim_, stride_, base_, BODY)                                      \
    do {                                                                                     \
        const int nd = (nd_);                                                                \
        const int64_t *const sdim = (dim_), *const sstr = (stride_);                         \
        const int64_t len = sdim[nd - 1], step = sstr[nd - 1];                               \
        int64_t idx[OSP_MAX_DIMS] = {0}, base = (base_), o = 0;                              \
        for (;;) {                                                                           \
            for (int64_t j = 0; j < len; j++, o++) {                                         \
                const int64_t x = base + j * step;                                           \
                BODY;                                                                        \
            }                                                                                \
            int k = nd - 2;                                                                  \
            for (; k >= 0; k--) {                                                            \
                base += sstr[k];                                                             \
                if (++idx[k] < sdim[k]) break;                                               \
                base -= sstr[k] * sdim[k];                                                   \
                idx[k] = 0;                                                                  \
            }                                                                                \
            if (k < 0) break;                                                                \
        }                                                                                    \
    } while (0)

/* Row-major strides (in values) of a shape. */
static inline void osp__row_strides(const osp_shape *s, int64_t *stride) {
    int64_t t = 1;
    for (int k = s->ndim - 1; k >= 0; k--) {
        stride[k] = t;
        t *= s->dim[k];
    }
}

#endif
