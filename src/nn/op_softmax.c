/* [softmax]: softmax over each sample's whole vector (the input is read as
 * flattened; the output keeps its shape). As nn.Softmax(dim=1) after a
 * flatten. A network ending in [softmax] trains on the logits before it.
 * With `axis` (a per-sample axis, negative from the end), softmax along
 * that axis alone, as torch.softmax(x, dim=axis + 1): the attention scores
 * of a transformer, over the last axis. With `log = 1`, the logarithm of
 * the softmax, computed as x - max - log(sum exp(x - max)) so that it stays
 * finite where the softmax itself underflows (torch.log_softmax). */
#include "osprey/nn.h"
#include "osprey/onnx.h"

typedef struct softmax_attrs {
    int has_axis; /* 0: the whole sample (also for NULL attrs) */
    int axis;     /* as written */
    int log;      /* log-softmax */
} softmax_attrs;

static int has_axis(const osp_node *n) {
    const softmax_attrs *a = n->attrs;
    return a && a->has_axis;
}

static int is_log(const osp_node *n) {
    const softmax_attrs *a = n->attrs;
    return a && a->log;
}

/* The per-sample axis, resolved, or -1 for the whole sample. */
static int axis_of(const osp_node *n, const osp_shape *s) {
    const softmax_attrs *a = n->attrs;
    if (!has_axis(n)) return -1;
    return a->axis < 0 ? a->axis + s->ndim : a->axis;
}

/* The values before, along and after the axis, for a batch (the whole
 * sample: one line per sample). */
static void split(const osp_node *n, int batch, int64_t *outer, int *len, int64_t *inner) {
    int ax = axis_of(n, &n->shape);
    *outer = batch;
    *inner = 1;
    if (ax < 0) {
        *len = (int)n->size;
        return;
    }
    for (int k = 0; k < ax; k++) *outer *= n->shape.dim[k];
    for (int k = ax + 1; k < n->shape.ndim; k++) *inner *= n->shape.dim[k];
    *len = (int)n->shape.dim[ax];
}

static int softmax_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': softmax takes one input, not %d", n->name,
                         n->n_inputs);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    if (osp_shape_numel(in) > INT32_MAX)
        return osp_error(OSP_ESHAPE, "layer '%s': input is too large", n->name);
    int ax = axis_of(n, in);
    if (has_axis(n) && (ax < 0 || ax >= in->ndim))
        return osp_error(OSP_ESHAPE, "layer '%s': axis %d does not exist in a sample of %d axes",
                         n->name, ((const softmax_attrs *)n->attrs)->axis, in->ndim);
    n->shape = *in;
    return OSP_OK;
}

static void softmax_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    if (n->attrs) {
        int64_t outer, inner;
        int len;
        split(n, ex->batch, &outer, &len, &inner);
        const float *x = osp_node_input(g, n, 0)->out;
        if (is_log(n)) ex->be->logsoftmax_forward(outer, len, inner, x, n->out);
        else ex->be->softmax_axis_forward(outer, len, inner, x, n->out);
        return;
    }
    ex->be->softmax_forward(ex->batch, (int)n->size, osp_node_input(g, n, 0)->out, n->out);
}

static void softmax_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    float *dx = osp_node_input(g, n, 0)->dout;
    if (dx && n->attrs) {
        int64_t outer, inner;
        int len;
        split(n, ex->batch, &outer, &len, &inner);
        if (is_log(n)) ex->be->logsoftmax_backward(outer, len, inner, n->out, n->dout, dx);
        else ex->be->softmax_axis_backward(outer, len, inner, n->out, n->dout, dx);
        return;
    }
    if (dx) ex->be->softmax_backward(ex->batch, (int)n->size, n->out, n->dout, dx);
}

/* ONNX: Softmax (LogSoftmax) over each sample's values, all of them
 * (flattened, then shaped back); with an axis, opset 13's along it. */
static int softmax_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                        char *const *in, char *out) {
    const char *type = is_log(n) ? "LogSoftmax" : "Softmax";
    if (has_axis(n)) {
        w->attr_int(w, w->node(w, type, n->name, 1, in, out), "axis", axis_of(n, &n->shape) + 1);
        return OSP_OK;
    }
    if (n->shape.ndim == 1) {
        w->attr_int(w, w->node(w, type, n->name, 1, in, out), "axis", 1);
        return OSP_OK;
    }
    char *flat = w->flat(w, n, in[0]);
    char *soft = w->name(w, "%s/softmax", n->name);
    w->attr_int(w, w->node(w, type, soft, 1, &flat, soft), "axis", 1);
    char *args[2] = {soft, w->init_shape(w, w->name(w, "%s/shape", n->name), &n->shape)};
    w->node(w, "Reshape", n->name, 2, args, out);
    return OSP_OK;
}

static const osp_op softmax_op = {
    .name = "softmax",
    .setup = softmax_setup,
    .forward = softmax_forward,
    .backward = softmax_backward,
    .onnx_export = softmax_onnx,
};

static int softmax_parse(osp_spec_section *s, void **attrs) {
    *attrs = NULL;
    int has = osp_spec_str(s, "axis", NULL) != NULL;
    int axis = 0, log = 0;
    int rc = osp_spec_int(s, "axis", 0, -(OSP_MAX_DIMS - 1), OSP_MAX_DIMS - 2, &axis);
    if (!rc) rc = osp_spec_int(s, "log", 0, 0, 1, &log);
    if (rc || (!has && !log)) return rc;
    softmax_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->has_axis = has;
    a->axis = axis;
    a->log = log;
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_softmax = {&softmax_op, softmax_parse};
