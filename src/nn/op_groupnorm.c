/* [groupnorm]: group normalisation, PyTorch's nn.GroupNorm (and
 * nn.InstanceNorm2d(affine=True) with groups = channels). Each sample's
 * channels (the first per-sample axis) fall in `groups` groups; each group
 * is normalised over its channels and all their other axes (the spatial
 * positions, or every trailing axis), then each channel is scaled and
 * shifted by its own weight and bias (C each, trained).
 *
 * Unlike [batchnorm] it keeps no running statistics: training and
 * inference compute the same thing, each sample on its own. */
#include "osprey/nn.h"
#include "osprey/onnx.h"

#define GROUPNORM_DEFAULT_EPS 1e-5f

typedef struct groupnorm_attrs {
    int groups;
    float eps;
} groupnorm_attrs;

enum { GN_WEIGHT, GN_BIAS };

/* Channels, values per channel per sample (C x S). */
static void gn_dims(const osp_node *n, int *c, int *s) {
    *c = (int)n->shape.dim[0];
    *s = (int)(n->size / n->shape.dim[0]);
}

static int gn_setup(osp_graph *g, osp_node *n) {
    const groupnorm_attrs *a = n->attrs;
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': groupnorm takes one input, not %d", n->name,
                         n->n_inputs);
    if (!a) return osp_error(OSP_EINVAL, "layer '%s': groupnorm has no attributes", n->name);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    if (osp_shape_numel(in) > INT32_MAX)
        return osp_error(OSP_ESHAPE, "layer '%s': input is too large", n->name);
    if (in->dim[0] % a->groups) {
        char buf[96];
        osp_shape_format(in, buf, sizeof buf);
        return osp_error(OSP_ESHAPE,
                         "layer '%s': the %lld channels of the %s input do not split into "
                         "groups = %d",
                         n->name, (long long)in->dim[0], buf, a->groups);
    }
    n->shape = *in;
    int64_t c = in->dim[0];
    osp_shape ch = osp_shape_make(1, &c);
    int rc; /* order matters: GN_WEIGHT, GN_BIAS */
    if ((rc = osp_graph_add_param(g, n, "weight", OSP_PARAM_WEIGHT, &ch, OSP_INIT_ONE, 0)) < 0 ||
        (rc = osp_graph_add_param(g, n, "bias", OSP_PARAM_WEIGHT, &ch, OSP_INIT_ZERO, 0)) < 0)
        return rc;
    return OSP_OK;
}

/* Saved for the backward: each (sample, group)'s mean and 1/sqrt(var + eps). */
static size_t gn_saved_bytes(const osp_graph *g, const osp_node *n, int batch) {
    (void)g;
    const groupnorm_attrs *a = n->attrs;
    return 2 * (size_t)batch * (size_t)a->groups * sizeof(float);
}

static void gn_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const groupnorm_attrs *a = n->attrs;
    int c, s;
    gn_dims(n, &c, &s);
    float *mean = n->saved, *invstd = mean ? mean + (size_t)ex->batch * a->groups : NULL;
    ex->be->groupnorm_forward(ex->batch, c, s, a->groups, a->eps, osp_node_input(g, n, 0)->out,
                              osp_node_weight(g, n, GN_WEIGHT), osp_node_weight(g, n, GN_BIAS),
                              mean, invstd, n->out);
}

static void gn_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const groupnorm_attrs *a = n->attrs;
    osp_node *in = osp_node_input(g, n, 0);
    int c, s;
    gn_dims(n, &c, &s);
    const float *mean = n->saved, *invstd = mean + (size_t)ex->batch * a->groups;
    ex->be->groupnorm_backward(ex->batch, c, s, a->groups, in->out, n->dout,
                               osp_node_weight(g, n, GN_WEIGHT), mean, invstd, in->dout,
                               osp_node_grad(g, n, GN_WEIGHT), osp_node_grad(g, n, GN_BIAS));
}

/* ONNX (opset 13 has no GroupNormalization): InstanceNormalization with the
 * layer's scale and bias where each channel is a group, else the chain
 * PyTorch writes for nn.GroupNorm, which the importer folds back into one
 * layer: Reshape to [N, groups, -1], InstanceNormalization (scale 1, bias
 * 0), Reshape back, Mul by the weight and Add the bias shaped [C, 1, ...]. */
static int gn_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n, char *const *in,
                   char *out) {
    (void)g;
    const groupnorm_attrs *a = n->attrs;
    if (!a) return osp_error(OSP_EINVAL, "layer '%s' ([groupnorm]) has no attributes", n->name);
    const int64_t c = n->shape.dim[0];
    char *p[OSP_MAX_NODE_PARAMS] = {0};
    if (a->groups == c && n->shape.ndim >= 2) {
        w->params(w, n, p); /* weight, bias */
        char *args[3] = {in[0], p[0], p[1]};
        w->attr_float(w, w->node(w, "InstanceNormalization", n->name, 3, args, out), "epsilon",
                      a->eps);
        return OSP_OK;
    }
    const int64_t grouped[3] = {0, a->groups, -1};
    char *r1 = w->name(w, "%s/grouped", n->name), *norm = w->name(w, "%s/norm", n->name);
    char *r2 = w->name(w, "%s/ungrouped", n->name), *scaled = w->name(w, "%s/scaled", n->name);
    char *args[3] = {in[0], w->init_ints(w, w->name(w, "%s/groups", n->name), grouped, 3)};
    w->node(w, "Reshape", n->name, 2, args, r1);
    float *ones = osp_alloc((size_t)a->groups * 2 * sizeof *ones);
    if (!ones) return OSP_ENOMEM;
    for (int i = 0; i < a->groups; i++) {
        ones[i] = 1.0f;
        ones[a->groups + i] = 0.0f;
    }
    const int64_t gdim = a->groups;
    args[0] = r1;
    args[1] = w->init_floats(w, w->name(w, "%s/ones", n->name), &gdim, 1, ones);
    args[2] = w->init_floats(w, w->name(w, "%s/zeros", n->name), &gdim, 1, ones + a->groups);
    osp_free(ones);
    w->attr_float(w, w->node(w, "InstanceNormalization", norm, 3, args, norm), "epsilon", a->eps);
    args[0] = norm;
    args[1] = w->init_shape(w, w->name(w, "%s/shape", n->name), &n->shape);
    w->node(w, "Reshape", r2, 2, args, r2);
    /* the weight and bias as [C, 1, ...], broadcasting over the other axes */
    int64_t dims[OSP_MAX_DIMS] = {c};
    for (int i = 1; i < n->shape.ndim; i++) dims[i] = 1;
    osp_graph *gm = (osp_graph *)g;
    args[0] = r2;
    args[1] = w->init_floats(w, w->name(w, "%s.weight", n->name), dims, n->shape.ndim,
                             osp_node_weight(gm, n, GN_WEIGHT));
    w->node(w, "Mul", scaled, 2, args, scaled);
    args[0] = scaled;
    args[1] = w->init_floats(w, w->name(w, "%s.bias", n->name), dims, n->shape.ndim,
                             osp_node_weight(gm, n, GN_BIAS));
    w->node(w, "Add", w->name(w, "%s/shift", n->name), 2, args, out);
    return OSP_OK;
}

static const osp_op gn_op = {
    .name = "groupnorm",
    .setup = gn_setup,
    .saved_bytes = gn_saved_bytes,
    .forward = gn_forward,
    .backward = gn_backward,
    .onnx_export = gn_onnx,
};

static int gn_parse(osp_spec_section *s, void **attrs) {
    int groups, rc;
    float eps;
    if ((rc = osp_spec_int(s, "groups", 0, 1, 65536, &groups))) return rc;
    if (groups == 0)
        return osp_spec_error(s, NULL, "'groups' is required (the channels' count for instance "
                              "normalisation)");
    if ((rc = osp_spec_float(s, "eps", GROUPNORM_DEFAULT_EPS, 0.0f, 1.0f, &eps))) return rc;
    if (!(eps > 0.0f)) return osp_spec_error(s, "eps", "'eps' must be positive");
    groupnorm_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->groups = groups;
    a->eps = eps;
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_groupnorm = {&gn_op, gn_parse};
