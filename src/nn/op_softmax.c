/* [softmax]: softmax over each sample's whole vector (the input is read as
 * flattened; the output keeps its shape). As nn.Softmax(dim=1) after a
 * flatten. A network ending in [softmax] trains on the logits before it. */
#include "osprey/nn.h"
#include "osprey/onnx.h"

static int softmax_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': softmax takes one input, not %d", n->name,
                         n->n_inputs);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    if (osp_shape_numel(in) > INT32_MAX)
        return osp_error(OSP_ESHAPE, "layer '%s': input is too large", n->name);
    n->shape = *in;
    return OSP_OK;
}

static void softmax_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    ex->be->softmax_forward(ex->batch, (int)n->size, osp_node_input(g, n, 0)->out, n->out);
}

static void softmax_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    float *dx = osp_node_input(g, n, 0)->dout;
    if (dx) ex->be->softmax_backward(ex->batch, (int)n->size, n->out, n->dout, dx);
}

/* ONNX: Softmax over each sample's values, all of them (flattened, then
 * shaped back). */
static int softmax_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                        char *const *in, char *out) {
    if (n->shape.ndim == 1) {
        w->attr_int(w, w->node(w, "Softmax", n->name, 1, in, out), "axis", 1);
        return OSP_OK;
    }
    char *flat = w->flat(w, n, in[0]);
    char *soft = w->name(w, "%s/softmax", n->name);
    w->attr_int(w, w->node(w, "Softmax", soft, 1, &flat, soft), "axis", 1);
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
    (void)s;
    *attrs = NULL;
    return OSP_OK;
}

const osp_layer_type osp__layer_softmax = {&softmax_op, softmax_parse};
