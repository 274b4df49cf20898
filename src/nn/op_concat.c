/* [concat]: two or more inputs joined along the channel axis (the first
 * per-sample axis): C1 x H x W, C2 x H x W, ... -> (C1 + C2 + ...) x H x W,
 * or D1, D2, ... -> D1 + D2 + ... The other axes must match. As
 * torch.cat(dim=1). */
#include <string.h>

#include "osprey/nn.h"
#include "osprey/onnx.h"

static int concat_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs < 2)
        return osp_error(OSP_ESHAPE,
                         "layer '%s': concat needs two or more inputs (input = a, b), not %d",
                         n->name, n->n_inputs);
    const osp_node *first = osp_node_input(g, n, 0);
    osp_shape out = first->shape;
    for (int i = 1; i < n->n_inputs; i++) {
        const osp_node *other = osp_node_input(g, n, i);
        int same = other->shape.ndim == out.ndim;
        for (int d = 1; same && d < out.ndim; d++) same = other->shape.dim[d] == out.dim[d];
        if (!same) {
            char a[64], b[64];
            osp_shape_format(&first->shape, a, sizeof a);
            osp_shape_format(&other->shape, b, sizeof b);
            return osp_error(OSP_ESHAPE,
                             "layer '%s': cannot concatenate '%s' (%s) and '%s' (%s): only the "
                             "first axis may differ",
                             n->name, first->name, a, other->name, b);
        }
        out.dim[0] += other->shape.dim[0];
    }
    n->shape = out;
    return OSP_OK;
}

/* Per sample, the output is the inputs' per-sample blocks one after another. */
static void concat_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    int64_t at = 0;
    for (int i = 0; i < n->n_inputs; i++) {
        const osp_node *in = osp_node_input(g, n, i);
        for (int b = 0; b < ex->batch; b++)
            memcpy(n->out + b * n->size + at, in->out + b * in->size, (size_t)in->size * sizeof(float));
        at += in->size;
    }
}

static void concat_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    int64_t at = 0;
    for (int i = 0; i < n->n_inputs; i++) {
        osp_node *in = osp_node_input(g, n, i);
        if (in->dout)
            for (int b = 0; b < ex->batch; b++) {
                const float *dy = n->dout + b * n->size + at;
                float *dx = in->dout + b * in->size;
                for (int64_t j = 0; j < in->size; j++) dx[j] += dy[j];
            }
        at += in->size;
    }
}

/* ONNX: Concat on the channel axis (1: the batch comes first). */
static int concat_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                       char *const *in, char *out) {
    w->attr_int(w, w->node(w, "Concat", n->name, n->n_inputs, in, out), "axis", 1);
    return OSP_OK;
}

static const osp_op concat_op = {
    .name = "concat",
    .setup = concat_setup,
    .forward = concat_forward,
    .backward = concat_backward,
    .onnx_export = concat_onnx,
};

static int concat_parse(osp_spec_section *s, void **attrs) {
    (void)s;
    *attrs = NULL;
    return OSP_OK;
}

const osp_layer_type osp__layer_concat = {&concat_op, concat_parse};
