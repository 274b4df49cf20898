/* [layernorm]: normalisation over a sample's last axes, from `axis` (a
 * per-sample axis, negative from the end; default -1, the last) on, as
 * torch.nn.LayerNorm(x.shape[axis:]) and ONNX's LayerNormalization:
 *
 *   y = (x - mean) / sqrt(var + eps) * weight + bias
 *
 * with the biased variance over those axes, and weight and bias of their
 * shape (`affine = 0`: none). The statistics of each row are kept from
 * forward to backward. */
#include <stdint.h>

#include "osprey/nn.h"
#include "osprey/onnx.h"

typedef struct layernorm_attrs {
    int axis; /* as written; setup resolves a negative one */
    float eps;
    int affine;
} layernorm_attrs;

static const layernorm_attrs ln_defaults = {-1, 1e-5f, 1};

static const layernorm_attrs *attrs_of(const osp_node *n) {
    return n->attrs ? n->attrs : &ln_defaults;
}

/* The first normalised axis of the input, or -1 if `axis` is not one. */
static int first_axis(const osp_node *n, const osp_shape *in) {
    int a = attrs_of(n)->axis;
    if (a < 0) a += in->ndim;
    return a >= 0 && a < in->ndim ? a : -1;
}

/* Values per normalised row. */
static int64_t row_len(const osp_node *n) {
    int64_t len = 1;
    for (int k = first_axis(n, &n->shape); k < n->shape.ndim; k++) len *= n->shape.dim[k];
    return len;
}

static int layernorm_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': layernorm takes one input, not %d", n->name,
                         n->n_inputs);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    int a = first_axis(n, in);
    if (a < 0)
        return osp_error(OSP_ESHAPE, "layer '%s': axis %d does not exist in a sample of %d axes",
                         n->name, attrs_of(n)->axis, in->ndim);
    n->shape = *in;
    int64_t len = row_len(n);
    if (len > INT32_MAX) return osp_error(OSP_ESHAPE, "layer '%s': rows are too long", n->name);
    if (!attrs_of(n)->affine) return OSP_OK;
    osp_shape ps = osp_shape_make(in->ndim - a, in->dim + a);
    int rc = osp_graph_add_param(g, n, "weight", OSP_PARAM_WEIGHT, &ps, OSP_INIT_ONE, 0.0f);
    if (rc >= 0) rc = osp_graph_add_param(g, n, "bias", OSP_PARAM_WEIGHT, &ps, OSP_INIT_ZERO, 0.0f);
    return rc < 0 ? rc : OSP_OK;
}

/* The mean and inverse deviation of each row of the batch. */
static size_t layernorm_saved(const osp_graph *g, const osp_node *n, int batch) {
    (void)g;
    return 2 * sizeof(float) * (size_t)batch * (size_t)(n->size / row_len(n));
}

static void layernorm_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const layernorm_attrs *a = attrs_of(n);
    const int64_t len = row_len(n), rows = (int64_t)ex->batch * (n->size / len);
    float *mean = n->saved, *inv = mean ? mean + rows : NULL;
    ex->be->layernorm_forward(rows, (int)len, a->eps, osp_node_input(g, n, 0)->out,
                              a->affine ? osp_node_weight(g, n, 0) : NULL,
                              a->affine ? osp_node_weight(g, n, 1) : NULL, n->out, mean, inv);
}

static void layernorm_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const layernorm_attrs *a = attrs_of(n);
    osp_node *in = osp_node_input(g, n, 0);
    const int64_t len = row_len(n), rows = (int64_t)ex->batch * (n->size / len);
    const float *mean = n->saved, *inv = mean + rows;
    ex->be->layernorm_backward(rows, (int)len, in->out, n->dout,
                               a->affine ? osp_node_weight(g, n, 0) : NULL, mean, inv, in->dout,
                               a->affine ? osp_node_grad(g, n, 0) : NULL,
                               a->affine ? osp_node_grad(g, n, 1) : NULL);
}

/* ONNX (opset 13 has no LayerNormalization): the form torch writes below
 * opset 17, ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div, then
 * Mul by the weight and Add the bias, which the importer reads back as one
 * [layernorm]. */
static int layernorm_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                          char *const *in, char *out) {
    (void)g;
    const layernorm_attrs *a = attrs_of(n);
    int64_t axes[OSP_MAX_DIMS];
    int n_axes = 0;
    for (int k = first_axis(n, &n->shape); k < n->shape.ndim; k++) axes[n_axes++] = k + 1;
    char *mean = w->name(w, "%s/mean", n->name), *d = w->name(w, "%s/centered", n->name);
    osp_onnx_node *m = w->node(w, "ReduceMean", n->name, 1, in, mean);
    w->attr_ints(w, m, "axes", axes, n_axes);
    char *a1[2] = {in[0], mean};
    w->node(w, "Sub", d, 2, a1, d);
    char *sq = w->name(w, "%s/sq", n->name), *var = w->name(w, "%s/var", n->name);
    char *a2[2] = {d, w->init_scalar(w, w->name(w, "%s/two", n->name), 2.0f)};
    w->node(w, "Pow", sq, 2, a2, sq);
    w->attr_ints(w, w->node(w, "ReduceMean", var, 1, &sq, var), "axes", axes, n_axes);
    char *ve = w->name(w, "%s/var_eps", n->name), *sd = w->name(w, "%s/std", n->name);
    char *a3[2] = {var, w->init_scalar(w, w->name(w, "%s/eps", n->name), a->eps)};
    w->node(w, "Add", ve, 2, a3, ve);
    w->node(w, "Sqrt", sd, 1, &ve, sd);
    char *a4[2] = {d, sd};
    if (!a->affine) {
        w->node(w, "Div", w->name(w, "%s/norm", n->name), 2, a4, out);
        return OSP_OK;
    }
    char *norm = w->name(w, "%s/norm", n->name), *scaled = w->name(w, "%s/scaled", n->name);
    w->node(w, "Div", norm, 2, a4, norm);
    char *p[OSP_MAX_NODE_PARAMS] = {0};
    w->params(w, n, p);
    char *a5[2] = {norm, p[0]};
    w->node(w, "Mul", scaled, 2, a5, scaled);
    char *a6[2] = {scaled, p[1]};
    w->node(w, "Add", w->name(w, "%s/shift", n->name), 2, a6, out);
    return OSP_OK;
}

static const osp_op layernorm_op = {
    .name = "layernorm",
    .setup = layernorm_setup,
    .saved_bytes = layernorm_saved,
    .forward = layernorm_forward,
    .backward = layernorm_backward,
    .onnx_export = layernorm_onnx,
};

static int layernorm_parse(osp_spec_section *s, void **attrs) {
    layernorm_attrs a = ln_defaults;
    int rc;
    if ((rc = osp_spec_int(s, "axis", -1, -(OSP_MAX_DIMS - 1), OSP_MAX_DIMS - 2, &a.axis)) ||
        (rc = osp_spec_float(s, "eps", 1e-5f, 1e-12f, 1.0f, &a.eps)) ||
        (rc = osp_spec_int(s, "affine", 1, 0, 1, &a.affine)))
        return rc;
    layernorm_attrs *copy = osp_calloc(1, sizeof *copy);
    if (!copy) return OSP_ENOMEM;
    *copy = a;
    *attrs = copy;
    return OSP_OK;
}

const osp_layer_type osp__layer_layernorm = {&layernorm_op, layernorm_parse};
