/* osprey graph: a DAG of ops in topological order, reverse-mode autodiff,
 * and memory planning.
 *
 * Node 0 is the input (batch x input shape). Every other node applies one op
 * to earlier nodes. Shapes are per sample (C x H x W, or D); the batch size
 * is chosen when the graph is planned.
 *
 * Parameters live in one flat array (weights) with a twin (grads) of the
 * same layout, so that optimizers, checkpoints and gradient exchange are one
 * loop over one buffer. Non-trained state (batch-norm running statistics)
 * lives in a second flat array (buffers).
 *
 * Activations are carved from one arena allocated by osp_graph_plan() for a
 * batch size and mode; forward and backward never allocate. */
#ifndef OSPREY_GRAPH_H
#define OSPREY_GRAPH_H

#include "osprey/core.h"
#include "osprey/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define OSP_NAME_MAX 64
/* Inputs of one node: densely connected networks concatenate dozens of
 * earlier outputs (DenseNet-201's third block ends in a Concat of 49). */
#define OSP_MAX_INPUTS 64
#define OSP_MAX_NODE_PARAMS 4

typedef struct osp_graph osp_graph;
typedef struct osp_node osp_node;
typedef struct osp_onnx_writer osp_onnx_writer; /* osprey/onnx.h */

typedef enum osp_mode { OSP_MODE_INFER = 0, OSP_MODE_TRAIN = 1 } osp_mode;

/* Seconds spent in each node's op, for profiling (osprey bench --layers).
 * Each array, where not NULL, has one double per node
 * (osp_graph_node_count), and the executor adds to it: forward[id] the
 * time of the node's forward, backward[id] that of its backward. A node
 * fused into another (inference plans) adds nothing to forward: the
 * chain's head computes it and counts it. The caller zeroes the arrays
 * and divides by the steps it ran. */
typedef struct osp_node_times {
    double *forward;
    double *backward;
} osp_node_times;

/* What an op hands to its caller when a training batch is cut over
 * several replicas (the MPI ranks of src/train/): the trainer installs
 * these; the graph and the ops know nothing of how they are done. Every
 * replica calls them in the same order. NULL in every other run. */
typedef struct osp_exec_hooks {
    void *user;
    /* Sums v[0..n) over the replicas, in place, identically on each.
     * grad: v holds sums of this replica's loss gradients, which the
     * caller weighs by the replica's share of the batch (synchronised
     * batch norm: statistics in forward, gradient sums in backward). */
    void (*sum)(void *user, double *v, int n, int grad);
    /* A fully connected node's forward and backward, as the backend's
     * fc_forward and fc_backward on this replica's rows; the hook may do
     * them across the replicas (model parallelism) and return 1, or
     * return 0 to leave them to the op. */
    int (*fc_forward)(void *user, const osp_node *n, int rows, int in, int out, const float *x,
                      const float *w, const float *bias, float *y);
    int (*fc_backward)(void *user, const osp_node *n, int rows, int in, int out, const float *x,
                       const float *w, const float *dy, float *dx, float *dw, float *db);
    /* Called by osp_graph_forward before node `node` runs (lazy update:
     * the node's weights are brought up to date there). Training plans
     * fuse no nodes, so each node with weights gets its own call. */
    void (*before_node)(void *user, int node);
} osp_exec_hooks;

/* Everything an op needs at run time besides its node. */
typedef struct osp_exec {
    /* NULL: the graph's backend (osp_graph_backend). Otherwise a table
     * whose memory is the graph's (another CPU table, for comparing
     * kernels); osp_graph_forward and the backward hand the ops the one
     * that runs. */
    const osp_backend *be;
    osp_mode mode;
    int batch;
    uint64_t seed; /* with step, seeds the random ops (dropout) */
    uint64_t step;
    void *workspace; /* shared scratch, size = max over ops of workspace_bytes */
    /* Optional: where osp_graph_forward and osp_graph_backward* add each
     * node's time (borrowed); NULL, as usual, times nothing. */
    osp_node_times *times;
    /* Optional: distributed training's hooks (borrowed), NULL otherwise. */
    const osp_exec_hooks *hooks;
} osp_exec;

/* How a parameter starts (PyTorch's defaults for each layer). */
typedef enum osp_init {
    OSP_INIT_ZERO = 0,
    OSP_INIT_ONE = 1,
    OSP_INIT_UNIFORM = 2, /* U(-scale, scale) */
    OSP_INIT_NORMAL = 3,  /* N(0, scale^2) */
} osp_init;

typedef enum osp_param_kind {
    OSP_PARAM_WEIGHT = 0, /* trained: in weights[], has a gradient */
    OSP_PARAM_BUFFER = 1, /* state: in buffers[], no gradient (BN running stats) */
} osp_param_kind;

typedef struct osp_param {
    char name[2 * OSP_NAME_MAX]; /* "<node>.<what>", e.g. "conv1.weight" */
    osp_param_kind kind;
    osp_shape shape;
    int64_t numel;
    int64_t offset; /* in weights[] / grads[] or buffers[] */
    osp_init init;
    float init_scale;
    int node; /* owner */
} osp_param;

/* One op kind. Ops live in src/nn/op_<name>.c, one file each. */
typedef struct osp_op {
    const char *name; /* also the spec section name: "conv", "relu", ... */
    /* Shape rule: checks the inputs, sets n->shape and declares parameters
     * with osp_graph_add_param. Returns 0 or an error (message set). */
    int (*setup)(osp_graph *g, osp_node *n);
    /* Bytes kept from forward to backward for a batch (max-pool argmax,
     * BN statistics, dropout mask); NULL = none. Allocated in train mode only. */
    size_t (*saved_bytes)(const osp_graph *g, const osp_node *n, int batch);
    /* Scratch bytes needed inside forward or backward only; NULL = none. */
    size_t (*workspace_bytes)(const osp_graph *g, const osp_node *n, int batch);
    void (*forward)(osp_graph *g, osp_node *n, const osp_exec *ex);
    /* Accumulates into the inputs' dout (where osp_node_needs_grad) and into
     * the parameters' grads. NULL for ops that have no gradient. */
    void (*backward)(osp_graph *g, osp_node *n, const osp_exec *ex);
    /* Frees n->attrs; NULL means osp_free. */
    void (*free_attrs)(void *attrs);
    /* Inference fusion (optional). osp_graph_plan in inference mode offers
     * n the node `next` that alone reads n's output (or the output of a
     * node already fused into n); returning 1 means n's forward now also
     * computes next's output in the same pass (a conv folding a batch norm
     * into its weights, adding a residual, or applying an activation in
     * its epilogue): next is skipped and shares n's output buffer. next may
     * read other nodes too: the op accepts it only if their values exist
     * when n runs. next == NULL resets n to
     * compute only itself (every plan starts so). Folded copies are made
     * when an inference plan is made (a backend's prepared filters at the
     * plan's first forward); after changing weights, call
     * osp_graph_weights_changed. Training is never fused. */
    int (*fuse)(osp_graph *g, osp_node *n, const osp_node *next);
    /* 1 for an op that reads no other node (a [constant]): its nodes have
     * n_inputs = 0, and a spec section of it may not name an `input`. */
    int no_inputs;
    /* ONNX export (optional): writes n as ONNX nodes through w
     * (osprey/onnx.h) from its inputs' values in[] to the value out.
     * Returns 0 or an error. NULL: networks with the op cannot be
     * exported. */
    int (*onnx_export)(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                       char *const *in, char *out);
} osp_op;

struct osp_node {
    const osp_op *op;   /* NULL for the input node */
    char name[OSP_NAME_MAX];
    int id;
    int n_inputs;
    int inputs[OSP_MAX_INPUTS]; /* ids of earlier nodes */
    osp_shape shape;            /* per sample */
    int64_t size;               /* elements per sample */
    void *attrs;                /* op-specific, owned by the node */
    int n_params;
    int params[OSP_MAX_NODE_PARAMS]; /* indices into the graph's params */
    int needs_grad;             /* 1 if a gradient must flow into this node */
    int keep;                   /* inference planning: never reuse this output */
    int fused_into;             /* inference plans: the node whose forward computes
                                   this output (0 = this node runs itself) */
    /* Set by osp_graph_plan for the planned batch: */
    float *out;  /* batch x size */
    float *dout; /* batch x size, train mode; NULL where no gradient flows */
    void *saved; /* saved_bytes, train mode */
    int frozen;  /* osp_graph_freeze: parameters kept fixed, run as in inference */
};

/* New graph whose input has the per-sample shape given; OSP_EINVAL for a
 * shape without 1 to OSP_MAX_DIMS - 1 positive dimensions. */
OSP_API int osp_graph_new(const osp_shape *input_shape, osp_graph **out);
OSP_API void osp_graph_free(osp_graph *g);

/* The backend g runs on (borrowed: a table outlives every graph): its
 * slots run every op, and its memory holds the weights, gradients,
 * buffers and activations, so that the pointers the graph hands out
 * (osp_graph_weights, a node's out) are that backend's memory. A new
 * graph takes osp_backend_default(). */
OSP_API const osp_backend *osp_graph_backend(const osp_graph *g);
/* Runs g on be from now on. Parameters already initialised move into
 * be's memory (copied through the host; OSP_ESTATE for a graph that
 * shares another's, osp_graph_share_params) unless be uses the same
 * memory (the CPU tables all use host memory). Any plan is stale
 * afterwards: the next one allocates its activations from be, and
 * prepared filters belong to a backend. */
OSP_API int osp_graph_set_backend(osp_graph *g, const osp_backend *be);
/* Copies count floats from graph memory (a pointer the graph gave, such
 * as a node's out or osp_graph_weights, plus an offset) to the host, and
 * from the host into graph memory: the host's only way to read or write
 * activations and parameters. */
OSP_API void osp_graph_read(const osp_graph *g, float *host, const float *src, int64_t count);
OSP_API void osp_graph_write(const osp_graph *g, float *dst, const float *host, int64_t count);

/* Appends a node applying op to the inputs (node ids); the node owns attrs
 * from this call on, even on failure. Calls op->setup. Returns the new
 * node's id, or a negative error. */
OSP_API int osp_graph_add(osp_graph *g, const osp_op *op, const char *name, const int *inputs,
                          int n_inputs, void *attrs);
/* Makes a gradient flow into the input node too (gradient checks, saliency).
 * Call before planning. */
OSP_API void osp_graph_require_input_grad(osp_graph *g);
/* Freezes nodes 1..until (0: none) for training, as when fine-tuning a
 * network's last layers only: their parameters get no gradient, no
 * backward work is done below the first node that still needs one, and in
 * training mode they run as in inference (batch norm normalises with, and
 * keeps, its running statistics; dropout passes its input through). Any
 * plan is stale afterwards. OSP_EINVAL if until is not a node. */
OSP_API int osp_graph_freeze(osp_graph *g, int until);
/* The number of leading nodes frozen (0 if none). */
OSP_API int osp_graph_frozen_until(const osp_graph *g);
/* For op setup functions: declares a parameter of the node and returns its
 * index, or a negative error. */
OSP_API int osp_graph_add_param(osp_graph *g, osp_node *n, const char *what, osp_param_kind kind,
                                const osp_shape *shape, osp_init init, float init_scale);
/* Allocates weights, grads and buffers (after the last osp_graph_add) and
 * initialises them from seed. */
OSP_API int osp_graph_init_params(osp_graph *g, uint64_t seed);

OSP_API int osp_graph_node_count(const osp_graph *g);
OSP_API osp_node *osp_graph_node(osp_graph *g, int id);
OSP_API const osp_node *osp_graph_node_const(const osp_graph *g, int id);
/* Node by name, or NULL. */
OSP_API osp_node *osp_graph_find(osp_graph *g, const char *name);
OSP_API osp_node *osp_graph_output(osp_graph *g); /* the last node */

OSP_API int osp_graph_param_count(const osp_graph *g);
OSP_API const osp_param *osp_graph_param(const osp_graph *g, int i);
/* Index of the parameter called name, or -1. */
OSP_API int osp_graph_find_param(const osp_graph *g, const char *name);
/* Flat arrays (borrowed; valid until the graph is freed), in the graph
 * backend's memory: read and write them on the host with osp_graph_read
 * and osp_graph_write. */
OSP_API float *osp_graph_weights(osp_graph *g, int64_t *count);
OSP_API float *osp_graph_grads(osp_graph *g, int64_t *count);
OSP_API float *osp_graph_buffers(osp_graph *g, int64_t *count);
/* The data of parameter i (weights[] or buffers[] by its kind), its grad
 * (NULL for buffers). */
OSP_API float *osp_graph_param_data(osp_graph *g, int i);
OSP_API float *osp_graph_param_grad(osp_graph *g, int i);

/* Plans activations for batch and mode, reusing the arena when neither
 * changed. Inference mode keeps only what later ops need (plus nodes marked
 * keep and the output). Returns 0 or an error. */
OSP_API int osp_graph_plan(osp_graph *g, int batch, osp_mode mode);
/* Tells the graph its weights were changed outside training (loaded,
 * edited): the next plan refolds what inference fusion derived from them.
 * Switching between training and inference plans refolds by itself. */
OSP_API void osp_graph_weights_changed(osp_graph *g);
/* g reads and updates owner's weights and buffers from now on (it keeps
 * its own gradients and activations): replicas of one network, such as
 * Hogwild workers. Both must have their parameters, in the same layout;
 * owner must outlive g. After changing the shared weights, call
 * osp_graph_weights_changed on each graph that reads them. */
OSP_API int osp_graph_share_params(osp_graph *g, osp_graph *owner);
/* As osp_graph_share_params for the weights only: g keeps its own
 * buffers (batch norm's running statistics), which training updates, so
 * that replicas stepping at the same time never write one buffer. */
OSP_API int osp_graph_share_weights(osp_graph *g, osp_graph *owner);
/* The bytes osp_graph_plan would allocate for batch in training mode
 * (activations, their gradients, what backward saves, the workspace),
 * without allocating them: for choosing a batch that fits in memory. */
OSP_API int osp_graph_train_bytes(const osp_graph *g, int batch, size_t *out);
/* Bytes of the current activation arena (for tests and reports). */
OSP_API size_t osp_graph_arena_bytes(const osp_graph *g);
OSP_API int osp_graph_planned_batch(const osp_graph *g);
/* The mode of the current plan (meaningful once planned). */
OSP_API osp_mode osp_graph_planned_mode(const osp_graph *g);

/* Runs every op on the input batch (batch x input size floats in host
 * memory, copied into the input node; or the input node's own out, which
 * is not copied). The graph must be planned for this batch size. */
OSP_API int osp_graph_forward(osp_graph *g, const float *input, const osp_exec *ex);
/* Reverse pass. The caller has written the output node's dout (e.g. from
 * softmax_xent); parameter grads are zeroed first, then filled. */
OSP_API int osp_graph_backward(osp_graph *g, const osp_exec *ex);
/* The same, starting from node `from` (whose dout the caller has written):
 * later nodes are ignored. Training reads the loss from the logits, which
 * is not the output when a network ends in [softmax]. */
OSP_API int osp_graph_backward_from(osp_graph *g, int from, const osp_exec *ex);
/* The same, calling done(user, node) once each node's parameter gradients
 * are final: for every node from the last down to 1, in that order, whether
 * or not a gradient flowed through it (a data-parallel trainer starts
 * exchanging gradients while backward goes on). */
typedef void (*osp_node_done_fn)(void *user, int node);
OSP_API int osp_graph_backward_each(osp_graph *g, int from, const osp_exec *ex,
                                    osp_node_done_fn done, void *user);

/* ---- helpers for op implementations ------------------------------------- */

static inline osp_node *osp_node_input(osp_graph *g, const osp_node *n, int i) {
    return osp_graph_node(g, n->inputs[i]);
}
OSP_API float *osp_node_weight(osp_graph *g, const osp_node *n, int i);
OSP_API float *osp_node_grad(osp_graph *g, const osp_node *n, int i);

/* Looks up an op by spec name ("conv"); NULL if unknown. */
OSP_API const osp_op *osp_op_find(const char *name);

#ifdef __cplusplus
}
#endif

#endif
