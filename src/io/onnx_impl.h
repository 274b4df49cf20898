/* The ONNX importer's internals: the value table, constants, and the
 * network being written. onnx_import.c drives, onnx_tensor.c reads tensors
 * and attributes, onnx_fold.c evaluates constant subgraphs, onnx_ops.c maps
 * the computing operators onto layers. */
#ifndef OSP_IO_ONNX_IMPL_H
#define OSP_IO_ONNX_IMPL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "onnx.pb-c.h"
#include "osprey/graph.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

/* Constants hold at most this many dimensions and elements. */
#define ONNX_MAX_RANK 8
#define ONNX_MAX_ELEMENTS ((int64_t)1 << 28)
/* In an integer constant, the batch size (Shape of a symbolic batch). */
#define ONNX_BATCH INT64_MIN
/* k times the batch size (Shape of a value whose batch shares an axis with
 * k per-sample values, or a product of folding): k = 1 is ONNX_BATCH, a
 * larger k ONNX_BATCH_BAND + k (k < 2^40), far from the sentinels
 * exporters write (INT64_MIN + 1 for a Slice to the start). */
#define ONNX_BATCH_BAND (INT64_MIN + ((int64_t)1 << 61))
#define ONNX_BATCH_MAX_FACTOR ((int64_t)1 << 40)
static inline int64_t osp__onnx_batch_factor(int64_t v) {
    if (v == ONNX_BATCH) return 1;
    return v > ONNX_BATCH_BAND + 1 && v < ONNX_BATCH_BAND + ONNX_BATCH_MAX_FACTOR
               ? v - ONNX_BATCH_BAND
               : 0;
}
static inline int64_t osp__onnx_batch_times(int64_t k) {
    return k == 1 ? ONNX_BATCH : ONNX_BATCH_BAND + k;
}

/* Where the batch sits in a computed value: the ONNX tensor is the
 * per-sample osprey tensor with the batch factor N inserted in axis b,
 * whose ONNX size is outer x N x inner. Plain values (the batch first and
 * alone) are all zeros. When outer x inner is 1 the axis holds only the
 * batch and the per-sample tensor lacks it; otherwise the per-sample axis
 * has outer x inner values. */
typedef struct onnx_layout {
    int b;
    int64_t outer, inner;
} onnx_layout;

/* A constant: an initializer, a Constant node or a folded subgraph. */
typedef struct onnx_const {
    int ndim;
    int64_t dim[ONNX_MAX_RANK];
    int64_t numel;
    int is_int; /* int64 data in i, else float data in f */
    float *f;
    int64_t *i;
} onnx_const;

typedef enum onnx_value_kind { ONNX_VAL_UNKNOWN, ONNX_VAL_CONST, ONNX_VAL_LAYER } onnx_value_kind;

/* A named value of the ONNX graph. */
typedef struct onnx_value {
    const char *name; /* borrowed from the model */
    onnx_value_kind kind;
    onnx_const c; /* ONNX_VAL_CONST */
    int node;     /* ONNX_VAL_LAYER: the layer's node id in the shape graph */
    int uses;     /* how many needed nodes read it (+1 for the graph output) */
    int producer; /* index of the ONNX node that makes it, -1 for none */
    int reader;   /* index of a needed ONNX node that reads it (the only one when uses == 1) */
    onnx_layout layout; /* ONNX_VAL_LAYER: where its batch sits */
} onnx_value;

/* A weight waiting for the network to be built: "<layer>.<what>". */
typedef struct onnx_weight {
    char name[2 * OSP_NAME_MAX];
    float *data; /* owned */
    int64_t numel;
} onnx_weight;

typedef struct onnx_importer {
    const char *file; /* for messages */
    /* The model file's folder, where its external data lies (NULL for a
     * model read from memory: external data is refused), and the bytes of
     * it read so far against their limit. */
    const char *dir;
    size_t *external_read, external_max;
    const Osp__Onnx__ModelProto *model;
    const Osp__Onnx__GraphProto *graph;
    int opset;
    const osp_onnx_import_options *opt;

    onnx_value *values; /* hash table, open addressing */
    int64_t cap_values, n_values;

    /* The network so far: one spec section per layer, and a graph built
     * section by section so that each layer's shape is known when the next
     * one is mapped. */
    osp_graph *shapes;
    char **sections; /* [0] is [net] */
    onnx_layout cur_layout; /* of the node being mapped: given to the values it binds */
    int n_sections, cap_sections;
    onnx_weight *weights;
    int n_weights, cap_weights;
} onnx_importer;

/* ---- onnx_tensor.c ---- */
int osp__onnx_const_from_tensor(const onnx_importer *im, const Osp__Onnx__TensorProto *t,
                                onnx_const *out);
int osp__onnx_const_alloc(onnx_const *c, int ndim, const int64_t *dim, int is_int);
void osp__onnx_const_free(onnx_const *c);
double osp__onnx_const_get(const onnx_const *c, int64_t i);
const Osp__Onnx__AttributeProto *osp__onnx_attr(const Osp__Onnx__NodeProto *n, const char *name);
int64_t osp__onnx_attr_int(const Osp__Onnx__NodeProto *n, const char *name, int64_t def);
float osp__onnx_attr_float(const Osp__Onnx__NodeProto *n, const char *name, float def);
/* The attribute's ints (borrowed), or NULL with *count = 0 when absent. */
const int64_t *osp__onnx_attr_ints(const Osp__Onnx__NodeProto *n, const char *name,
                                   size_t *count);
/* The string attribute into buf, or def. */
const char *osp__onnx_attr_string(const Osp__Onnx__NodeProto *n, const char *name, const char *def,
                                  char *buf, size_t len);
/* "node 'name' (Op)" for messages. */
const char *osp__onnx_node_desc(const Osp__Onnx__NodeProto *n, char *buf, size_t len);

/* ---- onnx_import.c ---- */
onnx_value *osp__onnx_value_find(onnx_importer *im, const char *name);
onnx_value *osp__onnx_value_add(onnx_importer *im, const char *name);
/* The node's input i: NULL when absent or given as "". */
onnx_value *osp__onnx_input(onnx_importer *im, const Osp__Onnx__NodeProto *n, size_t i);
/* Input i when it is a constant, else NULL. */
const onnx_const *osp__onnx_const_input(onnx_importer *im, const Osp__Onnx__NodeProto *n,
                                        size_t i);
/* The error code, with "file: node 'name' (Op): message" set. */
int osp__onnx_node_error(onnx_importer *im, const Osp__Onnx__NodeProto *n, int code,
                         const char *fmt, ...) OSP_PRINTF(4, 5);
/* Adds a layer: a spec section "[type]" with its name, inputs and keys
 * (lines "key = value\n"). Returns the node id (>= 0) or an error. The name
 * comes from the ONNX node, with suffix appended when not NULL. */
int osp__onnx_emit(onnx_importer *im, const Osp__Onnx__NodeProto *n, const char *suffix,
                   const char *type, const int *inputs, int n_inputs, const char *keys);
/* Replaces text in an emitted layer's section (folding a batch norm into a
 * convolution turns its "bias = 0" into "bias = 1"). */
int osp__onnx_reemit(onnx_importer *im, int node, const char *old_text, const char *new_text);
/* Queues a weight for "<layer name>.<what>"; takes ownership of data. */
int osp__onnx_weight_add(onnx_importer *im, int node, const char *what, float *data, int64_t numel);
onnx_weight *osp__onnx_weight_find(onnx_importer *im, int node, const char *what);
/* Marks the node's output value as the given layer. */
int osp__onnx_set_layer(onnx_importer *im, const Osp__Onnx__NodeProto *n, int node);
const osp_node *osp__onnx_layer(const onnx_importer *im, int node);

/* A layer's spec keys while they are written: "key = value\n" lines
 * appended by onnx_key (a line that would not fit is cut, never written
 * past the buffer). */
typedef struct onnx_keys {
    char text[2048];
    size_t len;
} onnx_keys;

static inline void onnx_key(onnx_keys *k, const char *fmt, ...) OSP_PRINTF(2, 3);
static inline void onnx_key(onnx_keys *k, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(k->text + k->len, sizeof k->text - k->len, fmt, ap);
    va_end(ap);
    if (w > 0) k->len += (size_t)w < sizeof k->text - k->len ? (size_t)w : sizeof k->text - k->len - 1;
}

/* ---- onnx_fold.c ---- */
/* 1 if the op is evaluated at import whenever its inputs are constant. */
int osp__onnx_is_foldable(const char *op_type);
int osp__onnx_fold(onnx_importer *im, const Osp__Onnx__NodeProto *n);

/* ---- onnx_opset.c: the forms operators take across opsets ---- */
#define ONNX_MIN_OPSET 7
#define ONNX_MAX_OPSET 18
#define ONNX_MAX_SPLIT 64
/* Refuses a node whose operator, attributes or inputs do not belong to the
 * model's opset, or hold old attributes osprey does not compute. */
int osp__onnx_check_version(onnx_importer *im, const Osp__Onnx__NodeProto *n);
/* Argument `arg` of the node (Squeeze's "axes", Pad's "pads" and "value",
 * Clip's "min"/"max", Slice's "starts"/"ends"/"axes"/"steps", Split's
 * "split", the reductions' "axes", Upsample's "scales"), from the attribute
 * or the constant input that the model's opset defines. *given = 0 when
 * absent; otherwise out is a copy the caller frees. */
int osp__onnx_arg(onnx_importer *im, const Osp__Onnx__NodeProto *n, const char *arg,
                  onnx_const *out, int *given);
/* Softmax/LogSoftmax/Hardmax: the axis (normalised for `rank`), and
 * *coerced = 1 when the opset flattens the input at it into 2-D (before 13). */
int osp__onnx_softmax_axis(onnx_importer *im, const Osp__Onnx__NodeProto *n, int rank,
                           int *axis, int *coerced);
/* The axes argument (Squeeze, Unsqueeze, the reductions): *count = -1 when
 * none are given; axes holds ONNX_MAX_RANK. */
int osp__onnx_axes_arg(onnx_importer *im, const Osp__Onnx__NodeProto *n, int64_t *axes,
                       int *count);
/* Clip's bounds, +-infinity where absent. */
int osp__onnx_clip_bounds(onnx_importer *im, const Osp__Onnx__NodeProto *n, double *lo,
                          double *hi);
/* Pad's pads for a rank-`rank` input (begins then ends, 2 x rank values,
 * the axes input of 18 spread out) and constant value. */
int osp__onnx_pad_args(onnx_importer *im, const Osp__Onnx__NodeProto *n, int rank, int64_t *pads,
                       double *value);
/* Split's part sizes along an axis of len: the split attribute (< 13) or
 * input (13+), num_outputs (18), or equal parts; sizes holds ONNX_MAX_SPLIT. */
int osp__onnx_split_sizes(onnx_importer *im, const Osp__Onnx__NodeProto *n, int64_t len,
                          int64_t *sizes, int *count);

/* ---- onnx_resize.c ---- */
/* Resize (10-18) and Upsample (7-9) onto [resize]. */
int osp__onnx_map_resize(onnx_importer *im, const Osp__Onnx__NodeProto *n);

/* ---- onnx_fold_select.c ---- */
int osp__onnx_fold_equal(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out);
int osp__onnx_fold_where(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out);

/* ---- onnx_fold_fill.c: Range, Expand, ScatterND, Not of constants ---- */
int osp__onnx_fold_fill(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_const *out);
/* 1 when an Expand's constant shape holds the batch size: a layer, not a
 * folded constant. */
int osp__onnx_expand_has_batch(onnx_importer *im, const Osp__Onnx__NodeProto *n);

/* ---- onnx_ops_shape.c: shape operators and reductions at any rank ---- */
int osp__onnx_map_concat_nd(onnx_importer *im, const Osp__Onnx__NodeProto *n);
int osp__onnx_map_slice(onnx_importer *im, const Osp__Onnx__NodeProto *n);
int osp__onnx_map_split(onnx_importer *im, const Osp__Onnx__NodeProto *n);
int osp__onnx_map_gather(onnx_importer *im, const Osp__Onnx__NodeProto *n);
int osp__onnx_map_expand(onnx_importer *im, const Osp__Onnx__NodeProto *n);
int osp__onnx_map_squeeze(onnx_importer *im, const Osp__Onnx__NodeProto *n, int unsqueeze);
int osp__onnx_map_reduce(onnx_importer *im, const Osp__Onnx__NodeProto *n);

/* ---- onnx_ops.c ---- */
int osp__onnx_map_node(onnx_importer *im, const Osp__Onnx__NodeProto *n);

/* ---- onnx_cnnops.c ---- */
int osp__onnx_map_conv_transpose(onnx_importer *im, const Osp__Onnx__NodeProto *n);
int osp__onnx_map_instance_norm(onnx_importer *im, const Osp__Onnx__NodeProto *n);
int osp__onnx_map_group_norm(onnx_importer *im, const Osp__Onnx__NodeProto *n);
/* At a Reshape: 1 when it starts PyTorch's nn.GroupNorm chain, which is
 * then one [groupnorm] bound to every value of the chain; 0 when it does
 * not (map the Reshape as usual); or an error. */
int osp__onnx_map_groupnorm_chain(onnx_importer *im, const Osp__Onnx__NodeProto *n);
/* 1 for a node whose output a folded chain has bound already: nothing
 * left to map. */
int osp__onnx_claimed(onnx_importer *im, const Osp__Onnx__NodeProto *n);

/* ---- onnx_layout.c: values whose batch is not the first axis ---- */
int osp__onnx_layout_plain(const onnx_layout *l);
int osp__onnx_layout_same(const onnx_layout *a, const onnx_layout *b);
/* The ONNX rank of a computed value. */
int osp__onnx_layout_rank(onnx_importer *im, const onnx_value *v);
/* The ONNX dims of a computed value (the batch axis as a batch factor). */
int osp__onnx_layout_dims(onnx_importer *im, const onnx_value *v, int64_t *dims, int *rank);
/* Before mapping n: Transpose and Reshape that move the batch are mapped
 * here (*handled = 1); any other node reading a value whose batch is not
 * first is checked to compute per sample, or refused; sets im->cur_layout. */
int osp__onnx_layout_map(onnx_importer *im, const Osp__Onnx__NodeProto *n, int *handled);

/* ---- onnx_ops_transformer.c ---- */
/* Maps the operators of transformers and the patterns that start at n;
 * *handled = 0 leaves n to the general mapping. */
int osp__onnx_map_transformer(onnx_importer *im, const Osp__Onnx__NodeProto *n, int *handled);

#endif
