/* ONNX export: an osprey network as an ONNX ModelProto (opset 13), packed
 * with the protobuf-c code generated from Debian's onnx.proto.
 *
 * The graph's input is "input" (batch x the network's input shape, the
 * batch a symbolic dimension "batch"), its output "output" (the last
 * layer's). Every layer becomes one ONNX node named after the layer whose
 * output value has the layer's name, or a short chain of nodes when ONNX
 * has no single operator for it (a [swish] is Sigmoid then Mul); the helper
 * values of a chain are named "<layer>/<what>", which no layer name can be
 * ('/' is not allowed in names). Each op writes its own layers
 * (osp_op.onnx_export) through the writer of osprey/onnx.h, which this
 * file fills; it walks the graph and assembles the model. Parameters are
 * initializers under their osprey names ("conv1.weight"), float32
 * little-endian raw data. The input normalisation and the label names go
 * into metadata_props as JSON ("osprey.mean", "osprey.std",
 * "osprey.labels"): they are informational, as the graph takes the
 * normalised input, as osprey's does. A multi-label model adds
 * "osprey.multi_label" ("1") and, once chosen, its per-label thresholds
 * "osprey.thresholds" (JSON): the graph gives logits either way, and these
 * say how to read them. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io_impl.h"
#include "onnx.pb-c.h"
#include "osprey/onnx.h"
#include "osprey/osprey.h"

#define EXPORT_OPSET 13
#define EXPORT_IR_VERSION 7
#define NODE_MAX_ATTRS 8
/* ONNX nodes and initializers one layer may add, at most (an [add] of
 * OSP_MAX_INPUTS inputs is one Add fewer; a [relu6] adds 2 constants to
 * nothing else). */
#define LAYER_MAX_NODES OSP_MAX_INPUTS
#define LAYER_MAX_INITS (OSP_MAX_NODE_PARAMS + 2)

/* Everything the model's messages point to is allocated here and freed at
 * once when the model has been packed. */
typedef struct exporter {
    osp_onnx_writer w; /* first: the writer handed to the ops is the exporter */
    const osp_net *net;
    osp_graph *g;
    void **allocs;
    size_t n_allocs, cap_allocs;
    int oom;

    Osp__Onnx__GraphProto *graph;
    size_t cap_nodes, cap_inits, cap_infos;
    char **values; /* per graph node: the ONNX value holding its output */
    char **consts; /* per graph node: a [constant]'s [1, shape] initializer */
    char *batch;   /* "input/batch": int64 [1] holding the batch size, made once */
} exporter;

static void *ex_alloc(exporter *e, size_t n, size_t size) {
    if (e->oom) return NULL;
    if (e->n_allocs == e->cap_allocs) {
        size_t cap = e->cap_allocs ? 2 * e->cap_allocs : 256;
        void **grown = realloc(e->allocs, cap * sizeof *grown);
        if (!grown) {
            e->oom = 1;
            return NULL;
        }
        e->allocs = grown;
        e->cap_allocs = cap;
    }
    void *p = osp_calloc(n ? n : 1, size);
    if (!p) {
        e->oom = 1;
        return NULL;
    }
    e->allocs[e->n_allocs++] = p;
    return p;
}

static void ex_free_all(exporter *e) {
    for (size_t i = 0; i < e->n_allocs; i++) osp_free(e->allocs[i]);
    free(e->allocs);
    e->allocs = NULL;
    e->n_allocs = e->cap_allocs = 0;
}

static char *ex_vprintf(exporter *e, const char *fmt, va_list ap) OSP_PRINTF(2, 0);
static char *ex_vprintf(exporter *e, const char *fmt, va_list ap) {
    va_list again;
    va_copy(again, ap);
    int len = vsnprintf(NULL, 0, fmt, ap);
    if (len < 0) {
        va_end(again);
        e->oom = 1;
        return NULL;
    }
    char *s = ex_alloc(e, (size_t)len + 1, 1);
    if (s) vsnprintf(s, (size_t)len + 1, fmt, again);
    va_end(again);
    return s;
}

static char *ex_printf(exporter *e, const char *fmt, ...) OSP_PRINTF(2, 3);
static char *ex_printf(exporter *e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = ex_vprintf(e, fmt, ap);
    va_end(ap);
    return s;
}

/* ---- building messages ----------------------------------------------------- */

static Osp__Onnx__NodeProto *add_node(exporter *e, const char *op_type, const char *name,
                                      int n_in, char *const *in, char *out) {
    Osp__Onnx__GraphProto *gp = e->graph;
    Osp__Onnx__NodeProto *n = ex_alloc(e, 1, sizeof *n);
    char **inputs = ex_alloc(e, (size_t)n_in, sizeof *inputs);
    char **outputs = ex_alloc(e, 1, sizeof *outputs);
    Osp__Onnx__AttributeProto **attrs = ex_alloc(e, NODE_MAX_ATTRS, sizeof *attrs);
    char *op = ex_printf(e, "%s", op_type), *nm = ex_printf(e, "%s", name);
    if (!n || !inputs || !outputs || !attrs || !op || !nm) return NULL;
    /* The node arrays are sized for the network up front (LAYER_MAX_NODES
     * per layer). */
    if (gp->n_node == e->cap_nodes) {
        e->oom = 1;
        return NULL;
    }
    osp__onnx__node_proto__init(n);
    for (int i = 0; i < n_in; i++) inputs[i] = in[i];
    outputs[0] = out;
    n->n_input = (size_t)n_in;
    n->input = inputs;
    n->n_output = 1;
    n->output = outputs;
    n->name = nm;
    n->op_type = op;
    n->attribute = attrs;
    gp->node[gp->n_node++] = n;
    return n;
}

static Osp__Onnx__AttributeProto *add_attr(exporter *e, Osp__Onnx__NodeProto *n,
                                           const char *name,
                                           Osp__Onnx__AttributeProto__AttributeType type) {
    if (!n) return NULL;
    Osp__Onnx__AttributeProto *a = ex_alloc(e, 1, sizeof *a);
    char *nm = ex_printf(e, "%s", name);
    if (!a || !nm) return NULL;
    if (n->n_attribute == NODE_MAX_ATTRS) {
        e->oom = 1;
        return NULL;
    }
    osp__onnx__attribute_proto__init(a);
    a->name = nm;
    a->has_type = 1;
    a->type = type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

static void attr_int(exporter *e, Osp__Onnx__NodeProto *n, const char *name, int64_t v) {
    Osp__Onnx__AttributeProto *a = add_attr(e, n, name,
                                            OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (!a) return;
    a->has_i = 1;
    a->i = v;
}

static void attr_float(exporter *e, Osp__Onnx__NodeProto *n, const char *name, float v) {
    Osp__Onnx__AttributeProto *a = add_attr(e, n, name,
                                            OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (!a) return;
    a->has_f = 1;
    a->f = v;
}

static void attr_ints(exporter *e, Osp__Onnx__NodeProto *n, const char *name, const int64_t *v,
                      int count) {
    Osp__Onnx__AttributeProto *a = add_attr(e, n, name,
                                            OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *copy = ex_alloc(e, (size_t)count, sizeof *copy);
    if (!a || !copy) return;
    memcpy(copy, v, (size_t)count * sizeof *copy);
    a->n_ints = (size_t)count;
    a->ints = copy;
}

static void attr_string(exporter *e, Osp__Onnx__NodeProto *n, const char *name, const char *v) {
    Osp__Onnx__AttributeProto *a = add_attr(e, n, name,
                                            OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    char *copy = ex_printf(e, "%s", v);
    if (!a || !copy) return;
    a->has_s = 1;
    a->s.data = (uint8_t *)copy;
    a->s.len = strlen(copy);
}

/* An initializer of float32 or int64 values, copied as little-endian raw
 * data (elem_size 4 or 8). */
static char *add_init(exporter *e, const char *name, int32_t type, const int64_t *dims, int ndim,
                      const void *data, size_t elem_size) {
    Osp__Onnx__GraphProto *gp = e->graph;
    Osp__Onnx__TensorProto *t = ex_alloc(e, 1, sizeof *t);
    int64_t *d = ex_alloc(e, (size_t)ndim, sizeof *d);
    char *nm = ex_printf(e, "%s", name);
    if (!t || !d || !nm) return NULL;
    if (gp->n_initializer == e->cap_inits) {
        e->oom = 1;
        return NULL;
    }
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        d[i] = dims[i];
        numel *= (size_t)dims[i];
    }
    osp__onnx__tensor_proto__init(t);
    t->name = nm;
    t->n_dims = (size_t)ndim;
    t->dims = d;
    t->has_data_type = 1;
    t->data_type = type;
    t->has_raw_data = 1;
    t->raw_data.len = numel * elem_size;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    uint8_t *le = ex_alloc(e, numel, elem_size);
    if (!le) return NULL;
    const uint8_t *src = data;
    for (size_t i = 0; i < numel; i++)
        for (size_t b = 0; b < elem_size; b++)
            le[i * elem_size + b] = src[i * elem_size + elem_size - 1 - b];
    t->raw_data.data = le;
#else
    /* Borrowed: the weights outlive the packing. */
    t->raw_data.data = (uint8_t *)(uintptr_t)data;
#endif
    gp->initializer[gp->n_initializer++] = t;
    return nm;
}

static char *init_f32(exporter *e, const char *name, const int64_t *dims, int ndim,
                      const float *data) {
    return add_init(e, name, OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, dims, ndim, data,
                    sizeof(float));
}

/* A scalar float constant (the data is copied into the arena). */
static char *init_scalar(exporter *e, const char *name, float v) {
    float *p = ex_alloc(e, 1, sizeof *p);
    if (!p) return NULL;
    *p = v;
    return init_f32(e, name, NULL, 0, p);
}

/* The int64 shape [0, dims of s...] for Reshape: 0 keeps the batch. */
static char *init_shape(exporter *e, const char *name, const osp_shape *s) {
    int64_t *v = ex_alloc(e, (size_t)s->ndim + 1, sizeof *v);
    if (!v) return NULL;
    v[0] = 0;
    for (int i = 0; i < s->ndim; i++) v[i + 1] = s->dim[i];
    int64_t len = s->ndim + 1;
    return add_init(e, name, OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT64, &len, 1, v,
                    sizeof(int64_t));
}

/* A 1-D int64 constant (the data is copied into the arena). */
static char *init_i64s(exporter *e, const char *name, const int64_t *v, int count) {
    int64_t *copy = ex_alloc(e, (size_t)count, sizeof *copy);
    if (!copy) return NULL;
    memcpy(copy, v, (size_t)count * sizeof *copy);
    int64_t len = count;
    return add_init(e, name, OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT64, &len, 1, copy,
                    sizeof(int64_t));
}

/* A float tensor value of shape [batch, per-sample shape]. */
static Osp__Onnx__ValueInfoProto *value_info(exporter *e, char *name, const osp_shape *s) {
    Osp__Onnx__ValueInfoProto *vi = ex_alloc(e, 1, sizeof *vi);
    Osp__Onnx__TypeProto *tp = ex_alloc(e, 1, sizeof *tp);
    Osp__Onnx__TypeProto__Tensor *tt = ex_alloc(e, 1, sizeof *tt);
    Osp__Onnx__TensorShapeProto *sp = ex_alloc(e, 1, sizeof *sp);
    Osp__Onnx__TensorShapeProto__Dimension **dims = ex_alloc(e, (size_t)s->ndim + 1, sizeof *dims);
    if (!vi || !tp || !tt || !sp || !dims) return NULL;
    for (int i = 0; i <= s->ndim; i++) {
        Osp__Onnx__TensorShapeProto__Dimension *d = ex_alloc(e, 1, sizeof *d);
        if (!d) return NULL;
        osp__onnx__tensor_shape_proto__dimension__init(d);
        if (i == 0) {
            d->value_case = OSP__ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = "batch";
        } else {
            d->value_case = OSP__ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = s->dim[i - 1];
        }
        dims[i] = d;
    }
    osp__onnx__tensor_shape_proto__init(sp);
    sp->n_dim = (size_t)s->ndim + 1;
    sp->dim = dims;
    osp__onnx__type_proto__tensor__init(tt);
    tt->has_elem_type = 1;
    tt->elem_type = OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tt->shape = sp;
    osp__onnx__type_proto__init(tp);
    tp->value_case = OSP__ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    osp__onnx__value_info_proto__init(vi);
    vi->name = name;
    vi->type = tp;
    return vi;
}

/* ---- the layers: each op writes its own (osp_op.onnx_export) ------------------ */

/* Initializers for every parameter of the layer; names[i] gets parameter
 * i's. */
static void param_inits(exporter *e, const osp_node *n, char **names) {
    for (int i = 0; i < n->n_params; i++) {
        const osp_param *p = osp_graph_param(e->g, n->params[i]);
        names[i] = init_f32(e, p->name, p->shape.dim, p->shape.ndim,
                            osp_graph_param_data(e->g, n->params[i]));
    }
}

/* The input as [batch, D]: the value itself when it is 1-D per sample,
 * else a Flatten "<layer>/flat". */
static char *flat_input(exporter *e, const osp_node *n, char *in) {
    const osp_node *src = osp_graph_node_const(e->g, n->inputs[0]);
    if (src->shape.ndim == 1) return in;
    char *flat = ex_printf(e, "%s/flat", n->name);
    attr_int(e, add_node(e, "Flatten", flat, 1, &in, flat), "axis", 1);
    return flat;
}

/* The batch size as an int64 [1] value: Shape(input)[0:1], made once. */
static char *batch_size(exporter *e) {
    if (e->batch) return e->batch;
    char *in = "input", *shape = "input/shape";
    add_node(e, "Shape", shape, 1, &in, shape);
    int64_t zero = 0, one = 1;
    char *args[4] = {shape, init_i64s(e, "input/batch_start", &zero, 1),
                     init_i64s(e, "input/batch_end", &one, 1),
                     init_i64s(e, "input/batch_axis", &zero, 1)};
    e->batch = "input/batch";
    add_node(e, "Slice", e->batch, 4, args, e->batch);
    return e->batch;
}

/* A [constant]'s value (`<layer>.value`) as an initializer of shape
 * [1, shape], which binary operators read and let ONNX broadcast; the
 * layer's own output repeats it over the batch (op_constant.c). */
static char *constant_value(exporter *e, const osp_node *n) {
    if (n->n_params < 1) return NULL;
    const osp_param *p = osp_graph_param(e->g, n->params[0]);
    int64_t dims[OSP_MAX_DIMS + 1];
    dims[0] = 1;
    for (int i = 0; i < n->shape.ndim; i++) dims[i + 1] = n->shape.dim[i];
    char *value = init_f32(e, p->name, dims, n->shape.ndim + 1,
                           osp_graph_param_data(e->g, n->params[0]));
    e->consts[n->id] = value;
    return value;
}

/* Input i of a broadcasting layer as a value of rank `rank` + 1: osprey
 * aligns per-sample shapes on the right, ONNX whole shapes (batch
 * included), so a per-sample shape of lower rank gets leading 1s after the
 * batch axis. A [constant] input is its [1, shape] initializer. */
static char *broadcast_input(exporter *e, const osp_node *n, int i, char *in, int rank) {
    const osp_node *src = osp_graph_node_const(e->g, n->inputs[i]);
    char *value = in;
    if (e->consts[src->id]) value = e->consts[src->id];
    if (src->shape.ndim == rank) return value;
    osp_shape padded = {.ndim = rank};
    int lead = rank - src->shape.ndim;
    for (int k = 0; k < rank; k++) padded.dim[k] = k < lead ? 1 : src->shape.dim[k - lead];
    char *name = ex_printf(e, "%s/in%d", n->name, i);
    char *args[2] = {value, init_shape(e, ex_printf(e, "%s/in%d_shape", n->name, i), &padded)};
    add_node(e, "Reshape", name, 2, args, name);
    return name;
}

/* The writer the ops see: each entry is one of the helpers above on the
 * exporter, which starts with the writer. */
static exporter *ex_of(osp_onnx_writer *w) { return (exporter *)(void *)w; }
static Osp__Onnx__NodeProto *proto_of(osp_onnx_node *n) {
    return (Osp__Onnx__NodeProto *)(void *)n;
}

static char *w_name(osp_onnx_writer *w, const char *fmt, ...) OSP_PRINTF(2, 3);
static char *w_name(osp_onnx_writer *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = ex_vprintf(ex_of(w), fmt, ap);
    va_end(ap);
    return s;
}

static osp_onnx_node *w_node(osp_onnx_writer *w, const char *op_type, const char *name, int n_in,
                             char *const *in, char *out) {
    return (osp_onnx_node *)(void *)add_node(ex_of(w), op_type, name, n_in, in, out);
}

static void w_attr_int(osp_onnx_writer *w, osp_onnx_node *node, const char *name, int64_t v) {
    attr_int(ex_of(w), proto_of(node), name, v);
}

static void w_attr_float(osp_onnx_writer *w, osp_onnx_node *node, const char *name, float v) {
    attr_float(ex_of(w), proto_of(node), name, v);
}

static void w_attr_ints(osp_onnx_writer *w, osp_onnx_node *node, const char *name,
                        const int64_t *v, int count) {
    attr_ints(ex_of(w), proto_of(node), name, v, count);
}

static void w_attr_string(osp_onnx_writer *w, osp_onnx_node *node, const char *name,
                          const char *v) {
    attr_string(ex_of(w), proto_of(node), name, v);
}

static void w_params(osp_onnx_writer *w, const osp_node *n, char **names) {
    param_inits(ex_of(w), n, names);
}

static char *w_init_scalar(osp_onnx_writer *w, const char *name, float v) {
    return init_scalar(ex_of(w), name, v);
}

static char *w_init_ints(osp_onnx_writer *w, const char *name, const int64_t *v, int count) {
    return init_i64s(ex_of(w), name, v, count);
}

static char *w_init_floats(osp_onnx_writer *w, const char *name, const int64_t *dims, int ndim,
                           const float *data) {
    exporter *e = ex_of(w);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (size_t)dims[i];
    float *copy = ex_alloc(e, numel ? numel : 1, sizeof *copy);
    if (!copy) return NULL;
    if (numel) memcpy(copy, data, numel * sizeof *copy);
    return init_f32(e, name, dims, ndim, copy);
}

static char *w_init_shape(osp_onnx_writer *w, const char *name, const osp_shape *s) {
    return init_shape(ex_of(w), name, s);
}

static char *w_flat(osp_onnx_writer *w, const osp_node *n, char *in) {
    return flat_input(ex_of(w), n, in);
}

static osp_onnx_node *w_binary(osp_onnx_writer *w, const osp_node *n, const char *op_type,
                               char *const *in, char *out) {
    exporter *e = ex_of(w);
    char *args[2] = {broadcast_input(e, n, 0, in[0], n->shape.ndim),
                     broadcast_input(e, n, 1, in[1], n->shape.ndim)};
    return (osp_onnx_node *)(void *)add_node(e, op_type, n->name, 2, args, out);
}

static char *w_constant(osp_onnx_writer *w, const osp_node *n) {
    return constant_value(ex_of(w), n);
}

static int w_is_constant(osp_onnx_writer *w, int node) {
    const exporter *e = ex_of(w);
    return node >= 0 && node < osp_graph_node_count(e->g) && e->consts[node] != NULL;
}

static char *w_batch(osp_onnx_writer *w) { return batch_size(ex_of(w)); }

static const osp_onnx_writer writer = {
    .name = w_name,
    .node = w_node,
    .attr_int = w_attr_int,
    .attr_float = w_attr_float,
    .attr_ints = w_attr_ints,
    .attr_string = w_attr_string,
    .params = w_params,
    .init_scalar = w_init_scalar,
    .init_ints = w_init_ints,
    .init_shape = w_init_shape,
    .flat = w_flat,
    .binary = w_binary,
    .constant = w_constant,
    .is_constant = w_is_constant,
    .batch = w_batch,
    .init_floats = w_init_floats,
};

static int export_layer(exporter *e, const osp_node *n, char **in, char *out) {
    if (!n->op->onnx_export)
        return osp_error(OSP_ENOTSUP, "layer '%s': ONNX export does not support [%s] layers",
                         n->name, n->op->name);
    return n->op->onnx_export(&e->w, e->g, n, in, out);
}

/* ---- the model ------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every value name (node outputs, initializers, the input) must be unique:
 * a layer named like a parameter ("conv1.weight") would clash. */
static int check_unique(exporter *e) {
    const Osp__Onnx__GraphProto *gp = e->graph;
    size_t n = gp->n_node + gp->n_initializer + 1, k = 0;
    char **names = malloc(n * sizeof *names);
    if (!names) return OSP_ENOMEM;
    names[k++] = gp->input[0]->name;
    for (size_t i = 0; i < gp->n_node; i++) names[k++] = gp->node[i]->output[0];
    for (size_t i = 0; i < gp->n_initializer; i++) names[k++] = gp->initializer[i]->name;
    qsort(names, k, sizeof *names, cmp_str);
    int rc = OSP_OK;
    for (size_t i = 1; i < k; i++)
        if (!strcmp(names[i - 1], names[i])) {
            rc = osp_error(OSP_EINVAL,
                           "ONNX export: the name '%s' is used twice (a layer named like a "
                           "parameter or like the graph's input or output); rename the layer",
                           names[i]);
            break;
        }
    free(names);
    return rc;
}

static Osp__Onnx__StringStringEntryProto *meta(exporter *e, const char *key, char *json) {
    Osp__Onnx__StringStringEntryProto *p = ex_alloc(e, 1, sizeof *p);
    char *k = ex_printf(e, "%s", key), *v = json ? ex_printf(e, "%s", json) : NULL;
    free(json);
    if (!p || !k || !v) {
        e->oom = 1;
        return NULL;
    }
    osp__onnx__string_string_entry_proto__init(p);
    p->key = k;
    p->value = v;
    return p;
}

/* A JSON array of floats, each in the fewest digits that read back as the
 * same float ("[0.1307]", not 0.1307000070810318). */
static char *json_floats(const float *v, int n) {
    size_t cap = 2 + (size_t)n * 24, used = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    s[used++] = '[';
    for (int i = 0; i < n; i++) {
        char num[20];
        for (int digits = 6; digits <= 9; digits++) {
            snprintf(num, sizeof num, "%.*g", digits, (double)v[i]);
            if (strtof(num, NULL) == v[i]) break;
        }
        used += (size_t)snprintf(s + used, cap - used, "%s%s", i ? "," : "", num);
    }
    snprintf(s + used, cap - used, "]");
    return s;
}

/* Builds the model in e; its messages live in e's arena. */
static int build(exporter *e, Osp__Onnx__ModelProto *m) {
    const osp_net *net = e->net;
    osp_graph *g = e->g;
    const int nn = osp_graph_node_count(g);
    if (nn < 2) return osp_error(OSP_EINVAL, "ONNX export: the network has no layers");
    if (!osp_graph_weights(g, NULL)) return osp_error(OSP_ESTATE, "ONNX export: weights not initialised");

    Osp__Onnx__GraphProto *gp = ex_alloc(e, 1, sizeof *gp);
    e->graph = gp;
    if (!gp) return OSP_ENOMEM;
    osp__onnx__graph_proto__init(gp);
    gp->name = "osprey";
    e->cap_nodes = (size_t)nn * LAYER_MAX_NODES;
    e->cap_inits = (size_t)nn * LAYER_MAX_INITS;
    gp->node = ex_alloc(e, e->cap_nodes, sizeof *gp->node);
    gp->initializer = ex_alloc(e, e->cap_inits, sizeof *gp->initializer);
    gp->input = ex_alloc(e, 1, sizeof *gp->input);
    gp->output = ex_alloc(e, 1, sizeof *gp->output);
    gp->value_info = ex_alloc(e, (size_t)nn, sizeof *gp->value_info);
    e->values = ex_alloc(e, (size_t)nn, sizeof *e->values);
    e->consts = ex_alloc(e, (size_t)nn, sizeof *e->consts);
    if (e->oom) return OSP_ENOMEM;

    e->values[0] = "input";
    gp->input[0] = value_info(e, e->values[0], &net->input);
    gp->n_input = 1;
    for (int id = 1; id < nn && !e->oom; id++) {
        const osp_node *n = osp_graph_node_const(g, id);
        if (!n->op) return osp_error(OSP_EINVAL, "ONNX export: node %d has no op", id);
        e->values[id] = id == nn - 1 ? "output" : ex_printf(e, "%s", n->name);
        char *in[OSP_MAX_INPUTS];
        for (int i = 0; i < n->n_inputs; i++) in[i] = e->values[n->inputs[i]];
        int rc = export_layer(e, n, in, e->values[id]);
        if (rc) return rc;
        if (id < nn - 1) {
            Osp__Onnx__ValueInfoProto *vi = value_info(e, e->values[id], &n->shape);
            if (vi) gp->value_info[gp->n_value_info++] = vi;
        }
    }
    if (e->oom) return OSP_ENOMEM;
    gp->output[0] = value_info(e, e->values[nn - 1], &osp_graph_node_const(g, nn - 1)->shape);
    gp->n_output = 1;
    if (e->oom) return OSP_ENOMEM;
    int rc = check_unique(e);
    if (rc) return rc;

    Osp__Onnx__OperatorSetIdProto *opset = ex_alloc(e, 1, sizeof *opset);
    Osp__Onnx__OperatorSetIdProto **opsets = ex_alloc(e, 1, sizeof *opsets);
    Osp__Onnx__StringStringEntryProto **props = ex_alloc(e, 5, sizeof *props);
    if (e->oom) return OSP_ENOMEM;
    osp__onnx__operator_set_id_proto__init(opset);
    opset->domain = "";
    opset->has_version = 1;
    opset->version = EXPORT_OPSET;
    opsets[0] = opset;

    int channels = net->input.ndim == 3 ? (int)net->input.dim[0] : 1;
    if (channels > OSP_MAX_CHANNELS) channels = 1; /* then one value serves all */
    props[0] = meta(e, "osprey.mean", json_floats(net->mean, channels));
    props[1] = meta(e, "osprey.std", json_floats(net->std, channels));
    props[2] = meta(e, "osprey.labels", osp__json_labels(net));
    size_t n_props = 3;
    /* only multi-label models: single-label exports are as before */
    if (net->multi_label) props[n_props++] = meta(e, "osprey.multi_label", strdup("1"));
    if (net->multi_label && net->thresholds)
        props[n_props++] = meta(e, "osprey.thresholds", json_floats(net->thresholds, net->n_classes));
    if (e->oom) return OSP_ENOMEM;

    osp__onnx__model_proto__init(m);
    m->has_ir_version = 1;
    m->ir_version = EXPORT_IR_VERSION;
    m->n_opset_import = 1;
    m->opset_import = opsets;
    m->producer_name = "osprey";
    m->producer_version = OSP_VERSION_STRING;
    m->doc_string = "Exported by osprey. The input is normalised ((x - mean) / std per channel, "
                    "metadata osprey.mean and osprey.std) before it enters the graph.";
    m->graph = gp;
    m->n_metadata_props = n_props;
    m->metadata_props = props;
    return OSP_OK;
}

int osp_onnx_export_buffer(const osp_net *net, void **data, size_t *size) {
    *data = NULL;
    *size = 0;
    if (!net || !net->graph) return osp_error(OSP_EINVAL, "ONNX export: no network");
    exporter e = {.w = writer, .net = net, .g = net->graph};
    Osp__Onnx__ModelProto m;
    int rc = build(&e, &m);
    if (!rc && e.oom) rc = OSP_ENOMEM;
    if (rc == OSP_ENOMEM) osp_error(OSP_ENOMEM, "ONNX export: out of memory");
    if (!rc) {
        size_t len = osp__onnx__model_proto__get_packed_size(&m);
        /* protobuf's own limit: a message over 2 GiB cannot be read back. */
        if (len > ((size_t)1 << 31) - 1) {
            rc = osp_error(OSP_ERANGE, "ONNX export: the model is %zu bytes, over protobuf's 2 GiB",
                           len);
        } else {
            uint8_t *buf = osp_alloc(len ? len : 1);
            if (!buf) {
                rc = osp_error(OSP_ENOMEM, "ONNX export: out of memory for %zu bytes", len);
            } else {
                size_t packed = osp__onnx__model_proto__pack(&m, buf);
                if (packed != len) {
                    osp_free(buf);
                    rc = osp_error(OSP_EIO, "ONNX export: packed %zu bytes of %zu", packed, len);
                } else {
                    *data = buf;
                    *size = len;
                }
            }
        }
    }
    ex_free_all(&e);
    return rc;
}

int osp_onnx_export(const osp_net *net, const char *path) {
    void *buf;
    size_t len;
    int rc = osp_onnx_export_buffer(net, &buf, &len);
    if (rc) return rc;
    osp_atomic_file f;
    if ((rc = osp_atomic_open(&f, path))) {
        osp_free(buf);
        return rc;
    }
    if ((rc = osp_atomic_write(&f, buf, len))) {
        osp_atomic_abort(&f);
        osp_free(buf);
        return rc;
    }
    osp_free(buf);
    return osp_atomic_commit(&f);
}
