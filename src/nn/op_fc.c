/* [fc]: fully connected, PyTorch's nn.Flatten + nn.Linear.
 *
 *   input  any shape, flattened to D = its element count
 *   weight outputs x D, bias outputs
 *   output outputs
 *
 * With `last_axis = 1`, nn.Linear itself on any shape: the last axis (D)
 * is mapped, the leading ones kept (tokens x D gives tokens x outputs), as
 * the linear layers of a transformer.
 *
 * Inference plans fuse a [gelu] that reads only this layer's output into
 * it (osp_op.fuse): the backend's fc_forward_fused applies it while the
 * product is in cache. Under an inference plan the backend may also lay
 * the weights out once for its GEMM (fc_prepare), as convolutions'
 * filters are: made at the first forward after each plan, from the weights
 * as they are then. */
#include <limits.h>
#include <math.h>

#include "op_fuse.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

typedef struct fc_attrs {
    int outputs;
    int bias;
    int last_axis;
    int fused_fn; /* the fused GELU's osp_special; -1 none (set by fc_fuse) */
    float *prepared;               /* the backend's fc_prepare of the weights, */
    size_t prepared_floats;        /* its size, */
    const osp_backend *prepared_for; /* and whose: NULL until made under this plan */
    const osp_backend *prepared_mem; /* the backend whose memory holds it */
} fc_attrs;

static int parse(osp_spec_section *s, void **out) {
    fc_attrs a;
    int rc;
    if ((rc = osp_spec_int(s, "outputs", 0, 1, 1 << 24, &a.outputs))) return rc;
    if (a.outputs == 0) return osp_spec_error(s, NULL, "'outputs' is required");
    if ((rc = osp_spec_int(s, "bias", 1, 0, 1, &a.bias))) return rc;
    if ((rc = osp_spec_int(s, "last_axis", 0, 0, 1, &a.last_axis))) return rc;
    a.fused_fn = -1;
    a.prepared = NULL;
    a.prepared_floats = 0;
    a.prepared_for = NULL;
    a.prepared_mem = NULL;
    fc_attrs *copy = osp_calloc(1, sizeof *copy);
    if (!copy) return OSP_ENOMEM;
    *copy = a;
    *out = copy;
    return OSP_OK;
}

static void drop_prepared(fc_attrs *a) {
    if (a->prepared) a->prepared_mem->mem_free(a->prepared_mem->ctx, a->prepared);
    a->prepared = NULL;
    a->prepared_floats = 0;
    a->prepared_mem = NULL;
}

static void fc_free_attrs(void *attrs) {
    fc_attrs *a = attrs;
    if (a) drop_prepared(a);
    osp_free(a);
}

static int setup(osp_graph *g, osp_node *n) {
    const fc_attrs *a = n->attrs;
    if (n->n_inputs != 1) return osp_error(OSP_ESHAPE, "layer '%s': fc takes one input", n->name);
    const osp_shape *xs = &osp_node_input(g, n, 0)->shape;
    int64_t in = a->last_axis ? xs->dim[xs->ndim - 1] : osp_shape_numel(xs);
    if (in > INT_MAX || osp_shape_numel(xs) / in * a->outputs > INT_MAX)
        return osp_error(OSP_ERANGE, "layer '%s': %lld input features are too many", n->name,
                         (long long)in);
    int64_t out = a->outputs;
    n->shape = osp_shape_make(1, &out);
    if (a->last_axis) {
        n->shape = *xs;
        n->shape.dim[xs->ndim - 1] = out;
    }
    float scale = 1.0f / sqrtf((float)in);
    int64_t wdims[2] = {out, in};
    osp_shape ws = osp_shape_make(2, wdims);
    int rc = osp_graph_add_param(g, n, "weight", OSP_PARAM_WEIGHT, &ws, OSP_INIT_UNIFORM, scale);
    if (rc < 0) return rc;
    if (a->bias) {
        osp_shape bs = osp_shape_make(1, &out);
        rc = osp_graph_add_param(g, n, "bias", OSP_PARAM_WEIGHT, &bs, OSP_INIT_UNIFORM, scale);
        if (rc < 0) return rc;
    }
    return OSP_OK;
}

/* Rows of the product: samples, times the leading positions with last_axis. */
static int rows_of(const osp_node *n, const osp_node *in, int batch) {
    const fc_attrs *a = n->attrs;
    return a->last_axis ? batch * (int)(in->size / in->shape.dim[in->shape.ndim - 1]) : batch;
}

static int features_of(const osp_node *n, const osp_node *in) {
    const fc_attrs *a = n->attrs;
    return (int)(a->last_axis ? in->shape.dim[in->shape.ndim - 1] : in->size);
}

/* The backend's prepared copy of w, made now if this plan has none yet;
 * NULL when the backend prepares nothing for the layer (or memory is
 * short: the forward then works from w alone). */
static const float *prepared_weights(fc_attrs *a, int features, const float *w,
                                     const osp_backend *be) {
    const size_t floats = be->fc_prepared_floats ? be->fc_prepared_floats(features, a->outputs) : 0;
    if (!floats) return NULL;
    if (a->prepared_for == be && a->prepared_floats == floats) return a->prepared;
    if (a->prepared_floats != floats || a->prepared_mem != be) { /* in the backend's memory */
        drop_prepared(a);
        a->prepared = be->mem_alloc(be->ctx, floats * sizeof(float));
        if (!a->prepared) return NULL;
        a->prepared_floats = floats;
        a->prepared_mem = be;
    }
    be->fc_prepare(features, a->outputs, w, a->prepared);
    a->prepared_for = be;
    return a->prepared;
}

static void forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    fc_attrs *a = n->attrs;
    const osp_node *in = osp_node_input(g, n, 0);
    const int rows = rows_of(n, in, ex->batch), features = features_of(n, in);
    const float *w = osp_node_weight(g, n, 0), *bias = a->bias ? osp_node_weight(g, n, 1) : NULL;
    /* distributed training may split the layer over the ranks */
    if (ex->hooks && ex->hooks->fc_forward &&
        ex->hooks->fc_forward(ex->hooks->user, n, rows, features, a->outputs, in->out, w, bias, n->out))
        return;
    /* only under an inference plan: training changes w without one */
    const int infer = ex->mode == OSP_MODE_INFER && osp_graph_planned_mode(g) == OSP_MODE_INFER;
    const float *prepared = infer ? prepared_weights(a, features, w, ex->be) : NULL;
    if (prepared) {
        ex->be->fc_forward_prepared(rows, features, a->outputs, in->out, w, prepared, bias,
                                    a->fused_fn, n->out);
        return;
    }
    if (a->fused_fn >= 0 || a->last_axis) {
        /* the token-wise layers too: one GEMM with the bias in its epilogue */
        ex->be->fc_forward_fused(rows, features, a->outputs, in->out, w, bias, a->fused_fn, n->out);
        return;
    }
    ex->be->fc_forward(rows, features, a->outputs, in->out, w, bias, n->out);
}

static void backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const fc_attrs *a = n->attrs;
    osp_node *in = osp_node_input(g, n, 0);
    const int rows = rows_of(n, in, ex->batch), features = features_of(n, in);
    const float *w = osp_node_weight(g, n, 0);
    float *dw = osp_node_grad(g, n, 0), *db = a->bias ? osp_node_grad(g, n, 1) : NULL;
    if (ex->hooks && ex->hooks->fc_backward &&
        ex->hooks->fc_backward(ex->hooks->user, n, rows, features, a->outputs, in->out, w, n->dout,
                               in->dout, dw, db))
        return;
    ex->be->fc_backward(rows, features, a->outputs, in->out, w, n->dout, in->dout, dw, db);
}

/* Takes in a [gelu] after the layer; nothing fuses after it. */
static int fc_fuse(osp_graph *g, osp_node *n, const osp_node *next) {
    (void)g;
    fc_attrs *a = n->attrs;
    osp_special fn;
    if (!next) { /* a new plan: the weights may have changed too */
        a->fused_fn = -1;
        a->prepared_for = NULL;
        return 0;
    }
    if (a->fused_fn >= 0 || !osp__gelu_of(next, &fn)) return 0;
    a->fused_fn = (int)fn;
    return 1;
}

/* ONNX: Gemm with the weight transposed, on the input flattened. */
static int fc_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n, char *const *in,
                   char *out) {
    char *p[OSP_MAX_NODE_PARAMS] = {0};
    w->params(w, n, p); /* weight, then the bias where there is one */
    const int bias = n->n_params > 1;
    if (((const fc_attrs *)n->attrs)->last_axis) {
        /* MatMul by the weight transposed (an initializer's Transpose, which
         * the importer folds), then Add the bias: torch's export of
         * nn.Linear on more than two axes. */
        char *wt = w->name(w, "%s/weight_t", n->name);
        int64_t perm[2] = {1, 0};
        w->attr_ints(w, w->node(w, "Transpose", wt, 1, &p[0], wt), "perm", perm, 2);
        char *args[2] = {in[0], wt};
        if (!bias) {
            w->node(w, "MatMul", n->name, 2, args, out);
            return OSP_OK;
        }
        char *mm = w->name(w, "%s/matmul", n->name);
        w->node(w, "MatMul", n->name, 2, args, mm);
        char *add[2] = {mm, p[1]};
        w->node(w, "Add", w->name(w, "%s/bias", n->name), 2, add, out);
        return OSP_OK;
    }
    char *args[3] = {w->flat(w, n, in[0]), p[0], bias ? p[1] : NULL};
    w->attr_int(w, w->node(w, "Gemm", n->name, bias ? 3 : 2, args, out), "transB", 1);
    return OSP_OK;
}

static const osp_op fc_op = {
    .name = "fc",
    .setup = setup,
    .forward = forward,
    .backward = backward,
    .free_attrs = fc_free_attrs,
    .fuse = fc_fuse,
    .onnx_export = fc_onnx,
};

const osp_layer_type osp__layer_fc = {&fc_op, parse};
