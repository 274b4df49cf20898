/* What the conv and fc ops need to know of the nodes it fuses at inference time
 * (see osp_op.fuse), from the ops that own those nodes' attributes. */
#ifndef OSPREY_NN_OP_FUSE_H
#define OSPREY_NN_OP_FUSE_H

#include "osprey/graph.h"

/* If n is a [batchnorm] over channels (C x H x W), its eps; else 0 and
 * returns 0. */
int osp__batchnorm_fusable(const osp_node *n, float *eps);
/* If n is an element-wise activation layer, its kind and parameter; else
 * returns 0. */
int osp__activation_of(const osp_node *n, osp_activation *act, float *alpha);
/* If n is a [gelu] (exact or tanh), its function; else returns 0. */
int osp__gelu_of(const osp_node *n, osp_special *fn);
/* 1 if n is an [add] of two inputs of one shape (no broadcasting). */
int osp__add_of_two(const osp_graph *g, const osp_node *n);

#endif
