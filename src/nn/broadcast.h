/* Element-wise binary ops with numpy-style broadcasting over the per-sample
 * shapes, shared by [add], [sub], [mul] and [div]. The batch dimension is
 * implicit and the same for both operands.
 *
 * Shapes are right-aligned (the shorter one is padded with leading 1s); on
 * each axis the sizes must be equal or one of them 1, and the output has the
 * larger. The backward sums each operand's gradient over the axes it was
 * broadcast along. */
#ifndef OSPREY_NN_BROADCAST_H
#define OSPREY_NN_BROADCAST_H

#include "osprey/graph.h"

typedef enum osp_binop { OSP_BIN_ADD, OSP_BIN_SUB, OSP_BIN_MUL, OSP_BIN_DIV } osp_binop;

/* The output shape of a op b for node n (named in the message), or
 * OSP_ESHAPE with "layer 'n': cannot multiply 'a' (3x4x5) and 'b' (4x2):
 * ..." set. */
int osp__broadcast_shape(osp_binop op, const osp_node *n, const osp_node *a, const osp_node *b,
                         osp_shape *out);

/* y = a op b over a batch; a and b have the shapes of nodes a_shape and
 * b_shape, y their broadcast shape. */
void osp__broadcast_forward(osp_binop op, const osp_shape *a_shape, const osp_shape *b_shape,
                            int batch, const float *a, const float *b, float *y);

/* Accumulates the gradients of y = a op b into da and db (either may be
 * NULL: no gradient wanted; they may be the same buffer when a and b are the
 * same node). */
void osp__broadcast_backward(osp_binop op, const osp_shape *a_shape, const osp_shape *b_shape,
                             int batch, const float *a, const float *b, const float *dy, float *da,
                             float *db);

#endif
