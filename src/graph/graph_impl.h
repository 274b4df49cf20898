/* Internals of the graph shared by its files. */
#ifndef OSPREY_GRAPH_IMPL_H
#define OSPREY_GRAPH_IMPL_H

#include "osprey/graph.h"

struct osp_graph {
    /* Runs every op and owns weights, grads, buffers and the arena:
     * all of them come from its mem_alloc. */
    const osp_backend *be;

    int n_nodes, cap_nodes;
    osp_node *nodes;

    int n_params, cap_params;
    osp_param *params;
    int64_t n_weights; /* floats in weights[] and grads[] */
    int64_t n_buffers;
    float *weights; /* NULL until osp_graph_init_params */
    float *grads;
    float *buffers;
    /* Set by osp_graph_share_params: the graph's own weights and buffers,
     * freed with it, while weights and buffers point at another graph's. */
    float *own_weights, *own_buffers;

    /* The current plan. */
    void *arena;
    size_t arena_bytes;
    int planned_batch; /* 0 = not planned */
    osp_mode planned_mode;
    size_t workspace_bytes;
    void *workspace;
    /* Training plans: per node with a gradient, the node whose backward
     * writes into that gradient first (itself if none does). Gradients
     * share memory (plan.c), so each is zeroed there, not up front. */
    int *grad_from;
};

/* Frees p from the graph's backend (NULL is a no-op). */
static inline void osp__graph_mem_free(const osp_graph *g, void *p) {
    if (p) g->be->mem_free(g->be->ctx, p);
}

#endif
