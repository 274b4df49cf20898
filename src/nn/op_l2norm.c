/* [l2norm]: each sample's whole vector divided by its L2 norm (at least
 * eps), e.g. to turn features into unit embeddings for cosine search. As
 * torch.nn.functional.normalize(x.flatten(1), dim=1, eps=eps). */
#include "attrs.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

static float eps_of(const osp_node *n) {
    return n->attrs ? ((const l2norm_attrs *)n->attrs)->eps : L2NORM_DEFAULT_EPS;
}

static int l2norm_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': l2norm takes one input, not %d", n->name,
                         n->n_inputs);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    if (osp_shape_numel(in) > INT32_MAX)
        return osp_error(OSP_ESHAPE, "layer '%s': input is too large", n->name);
    n->shape = *in;
    return OSP_OK;
}

static void l2norm_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    ex->be->l2norm_forward(ex->batch, (int)n->size, eps_of(n), osp_node_input(g, n, 0)->out, n->out);
}

static void l2norm_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const osp_node *in = osp_node_input(g, n, 0);
    if (in->dout)
        ex->be->l2norm_backward(ex->batch, (int)n->size, eps_of(n), in->out, n->out, n->dout,
                                in->dout);
}

/* ONNX: y = x / max(||x||, eps) over each sample's values, all of them:
 * ReduceL2, Max, Div on the input flattened, then shaped back. */
static int l2norm_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                       char *const *in, char *out) {
    const l2norm_attrs *a = n->attrs;
    float eps = a ? a->eps : L2NORM_DEFAULT_EPS;
    char *flat = w->flat(w, n, in[0]);
    char *norm = w->name(w, "%s/norm", n->name);
    osp_onnx_node *r = w->node(w, "ReduceL2", norm, 1, &flat, norm);
    const int64_t axes[1] = {1};
    w->attr_ints(w, r, "axes", axes, 1);
    w->attr_int(w, r, "keepdims", 1);
    char *clamped = w->name(w, "%s/clamped", n->name);
    char *max_args[2] = {norm, w->init_scalar(w, w->name(w, "%s/eps", n->name), eps)};
    w->node(w, "Max", clamped, 2, max_args, clamped);
    char *div_args[2] = {flat, clamped};
    if (n->shape.ndim == 1) {
        w->node(w, "Div", n->name, 2, div_args, out);
        return OSP_OK;
    }
    char *quot = w->name(w, "%s/div", n->name);
    w->node(w, "Div", quot, 2, div_args, quot);
    char *args[2] = {quot, w->init_shape(w, w->name(w, "%s/shape", n->name), &n->shape)};
    w->node(w, "Reshape", n->name, 2, args, out);
    return OSP_OK;
}

static const osp_op l2norm_op = {
    .name = "l2norm",
    .setup = l2norm_setup,
    .forward = l2norm_forward,
    .backward = l2norm_backward,
    .onnx_export = l2norm_onnx,
};

static int l2norm_parse(osp_spec_section *s, void **attrs) {
    float eps;
    int rc = osp_spec_float(s, "eps", L2NORM_DEFAULT_EPS, 0.0f, 1.0f, &eps);
    if (rc) return rc;
    if (!(eps > 0.0f)) return osp_spec_error(s, "eps", "'eps' must be positive");
    l2norm_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->eps = eps;
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_l2norm = {&l2norm_op, l2norm_parse};
