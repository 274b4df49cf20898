/* [deconv]: 2-D transposed convolution, PyTorch's nn.ConvTranspose2d and
 * ONNX's ConvTranspose (the adjoint of [conv]: each input value spreads
 * over a window of the output).
 *
 *   input  C x H x W
 *   weight C x K/groups x kh x kw (PyTorch's and ONNX's layout), bias K
 *   output K x P x Q, P = (H - 1)*stride - pad_top - pad_bottom
 *                         + dilation*(kh - 1) + 1 + output_padding
 *
 * `pad` crops the full result (one value, rows x columns, or top, left,
 * bottom, right as [pad] writes them); `output_padding` adds rows and
 * columns at the bottom and right that only the bias reaches beyond the
 * last window (PyTorch's output_padding, which chooses among the input
 * sizes a strided convolution maps onto one output size). */
#include <math.h>
#include <string.h>

#include "attrs.h"
#include "osprey/nn.h"

/* Per-sample tensors larger than this would overflow the int sizes the
 * kernels pass to BLAS. */
#define DECONV_MAX_ELEMS ((int64_t)1 << 30)

typedef struct deconv_attrs {
    int filters;
    int kh, kw, stride_h, stride_w, dil_h, dil_w;
    int pad_top, pad_left, pad_bottom, pad_right;
    int out_pad_h, out_pad_w;
    int groups;
    int bias;
} deconv_attrs;

/* "3" or "3x5" (rows x columns) into *h, *w; def when the key is absent. */
static int read_pair(osp_spec_section *s, const char *key, int def, int min, int max, int *h,
                     int *w) {
    int v[2], n;
    int rc = osp_spec_ints(s, key, v, 2, &n, min, max);
    if (rc) return rc;
    if (n == 0) v[0] = v[1] = def;
    else if (n == 1) v[1] = v[0];
    *h = v[0];
    *w = v[1];
    return OSP_OK;
}

static int read_pads(osp_spec_section *s, deconv_attrs *a) {
    int v[4], n;
    int rc = osp_spec_ints(s, "pad", v, 4, &n, 0, 1024);
    if (rc) return rc;
    if (n == 0) v[0] = v[1] = v[2] = v[3] = 0;
    else if (n == 1) v[1] = v[2] = v[3] = v[0];
    else if (n == 2) {
        v[2] = v[0];
        v[3] = v[1];
    } else if (n == 3)
        return osp_spec_error(s, "pad", "'pad' takes 1, 2 or 4 values (top, left, bottom, "
                              "right), not 3");
    a->pad_top = v[0];
    a->pad_left = v[1];
    a->pad_bottom = v[2];
    a->pad_right = v[3];
    return OSP_OK;
}

static int deconv_parse(osp_spec_section *s, void **out) {
    deconv_attrs a;
    int rc, n, size[2];
    if ((rc = osp_spec_int(s, "filters", 0, 1, 65536, &a.filters))) return rc;
    if (a.filters == 0) return osp_spec_error(s, NULL, "'filters' (output channels) is required");
    if ((rc = osp_spec_ints(s, "size", size, 2, &n, 1, 1024))) return rc;
    if (n == 0) return osp_spec_error(s, NULL, "'size' (e.g. 3 or 3x5) is required");
    a.kh = size[0];
    a.kw = n == 2 ? size[1] : size[0];
    if ((rc = read_pair(s, "stride", 1, 1, 1024, &a.stride_h, &a.stride_w))) return rc;
    if ((rc = read_pair(s, "dilation", 1, 1, 1024, &a.dil_h, &a.dil_w))) return rc;
    if ((rc = read_pads(s, &a))) return rc;
    if ((rc = read_pair(s, "output_padding", 0, 0, 1024, &a.out_pad_h, &a.out_pad_w))) return rc;
    if ((rc = osp_spec_int(s, "groups", 1, 1, 65536, &a.groups))) return rc;
    if (a.filters % a.groups)
        return osp_spec_error(s, "groups", "'filters' (%d) must be a multiple of 'groups' (%d)",
                              a.filters, a.groups);
    if ((rc = osp_spec_int(s, "bias", 1, 0, 1, &a.bias))) return rc;
    deconv_attrs *copy = osp_calloc(1, sizeof *copy);
    if (!copy) return OSP_ENOMEM;
    *copy = a;
    *out = copy;
    return OSP_OK;
}

/* The output size along one axis (may be < 1: the caller refuses it). */
static int64_t out_size(int64_t in, int k, int stride, int dil, int pad0, int pad1, int extra) {
    return (in - 1) * stride - pad0 - pad1 + (int64_t)dil * (k - 1) + 1 + extra;
}

static osp_conv_desc desc_of(const osp_graph *g, const osp_node *n, int batch) {
    const deconv_attrs *a = n->attrs;
    const osp_shape *in = &osp_graph_node_const(g, n->inputs[0])->shape;
    osp_conv_desc d = {
        .n = batch, .c = (int)in->dim[0], .h = (int)in->dim[1], .w = (int)in->dim[2],
        .k = a->filters, .p = (int)n->shape.dim[1], .q = (int)n->shape.dim[2],
        .kh = a->kh, .kw = a->kw, .stride_h = a->stride_h, .stride_w = a->stride_w,
        .pad_h = a->pad_top, .pad_w = a->pad_left, .dil_h = a->dil_h, .dil_w = a->dil_w,
        .groups = a->groups,
    };
    return d;
}

static int deconv_setup(osp_graph *g, osp_node *n) {
    const deconv_attrs *a = n->attrs;
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': deconv takes one input, not %d", n->name,
                         n->n_inputs);
    if (!a) return osp_error(OSP_EINVAL, "layer '%s': deconv has no attributes", n->name);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    char buf[96];
    osp_shape_format(in, buf, sizeof buf);
    if (in->ndim != 3)
        return osp_error(OSP_ESHAPE, "layer '%s': deconv needs a C x H x W input, not %s",
                         n->name, buf);
    const int64_t c = in->dim[0], h = in->dim[1], w = in->dim[2];
    if (c % a->groups)
        return osp_error(OSP_ESHAPE,
                         "layer '%s': %lld input channels are not a multiple of groups = %d",
                         n->name, (long long)c, a->groups);
    const int64_t p = out_size(h, a->kh, a->stride_h, a->dil_h, a->pad_top, a->pad_bottom,
                               a->out_pad_h);
    const int64_t q = out_size(w, a->kw, a->stride_w, a->dil_w, a->pad_left, a->pad_right,
                               a->out_pad_w);
    if (p < 1 || q < 1)
        return osp_error(OSP_ESHAPE,
                         "layer '%s': padding %d, %d, %d, %d crops the whole %lldx%lld output "
                         "of a %dx%d window over the %s input",
                         n->name, a->pad_top, a->pad_left, a->pad_bottom, a->pad_right,
                         (long long)(p < 1 ? p : q), (long long)(p < 1 ? q : p), a->kh, a->kw,
                         buf);
    const int64_t rows = (int64_t)(a->filters / a->groups) * a->kh * a->kw;
    if ((int64_t)a->filters * p * q > DECONV_MAX_ELEMS || rows * h * w > DECONV_MAX_ELEMS ||
        c * rows > DECONV_MAX_ELEMS)
        return osp_error(OSP_ERANGE, "layer '%s': %d filters of %dx%d over %lldx%lld outputs is "
                         "too large", n->name, a->filters, a->kh, a->kw, (long long)p,
                         (long long)q);
    int64_t dims[3] = {a->filters, p, q};
    n->shape = osp_shape_make(3, dims);
    /* PyTorch's ConvTranspose2d: fan-in from the weight's second axis */
    const float scale = 1.0f / sqrtf((float)rows);
    int64_t wdims[4] = {c, a->filters / a->groups, a->kh, a->kw};
    osp_shape ws = osp_shape_make(4, wdims);
    int rc = osp_graph_add_param(g, n, "weight", OSP_PARAM_WEIGHT, &ws, OSP_INIT_UNIFORM, scale);
    if (rc < 0) return rc;
    if (a->bias) {
        int64_t k = a->filters;
        osp_shape bs = osp_shape_make(1, &k);
        rc = osp_graph_add_param(g, n, "bias", OSP_PARAM_WEIGHT, &bs, OSP_INIT_UNIFORM, scale);
        if (rc < 0) return rc;
    }
    return OSP_OK;
}

static size_t deconv_workspace_bytes(const osp_graph *g, const osp_node *n, int batch) {
    osp_conv_desc d = desc_of(g, n, batch);
    return osp_graph_backend(g)->deconv2d_workspace(&d);
}

static void deconv_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const deconv_attrs *a = n->attrs;
    osp_conv_desc d = desc_of(g, n, ex->batch);
    ex->be->deconv2d_forward(&d, osp_node_input(g, n, 0)->out, osp_node_weight(g, n, 0),
                             a->bias ? osp_node_weight(g, n, 1) : NULL, n->out, ex->workspace);
}

static void deconv_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const deconv_attrs *a = n->attrs;
    osp_conv_desc d = desc_of(g, n, ex->batch);
    osp_node *in = osp_node_input(g, n, 0);
    if (in->dout)
        ex->be->deconv2d_backward_data(&d, n->dout, osp_node_weight(g, n, 0), in->dout,
                                       ex->workspace);
    ex->be->deconv2d_backward_filter(&d, in->out, n->dout, osp_node_grad(g, n, 0),
                                     a->bias ? osp_node_grad(g, n, 1) : NULL, ex->workspace);
}

/* ONNX: one ConvTranspose with explicit pads and output_padding. */
static int deconv_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                       char *const *in, char *out) {
    (void)g;
    int rc = osp__export_needs_attrs(n);
    if (rc) return rc;
    const deconv_attrs *a = n->attrs;
    char *p[OSP_MAX_NODE_PARAMS] = {0};
    w->params(w, n, p); /* weight, then the bias where there is one */
    const int bias = n->n_params > 1;
    char *args[3] = {in[0], p[0], bias ? p[1] : NULL};
    osp_onnx_node *c = w->node(w, "ConvTranspose", n->name, bias ? 3 : 2, args, out);
    const int64_t kernel[2] = {a->kh, a->kw}, strides[2] = {a->stride_h, a->stride_w};
    const int64_t pads[4] = {a->pad_top, a->pad_left, a->pad_bottom, a->pad_right};
    const int64_t dilations[2] = {a->dil_h, a->dil_w}, extra[2] = {a->out_pad_h, a->out_pad_w};
    w->attr_ints(w, c, "kernel_shape", kernel, 2);
    w->attr_ints(w, c, "strides", strides, 2);
    w->attr_ints(w, c, "pads", pads, 4);
    w->attr_ints(w, c, "dilations", dilations, 2);
    if (extra[0] || extra[1]) w->attr_ints(w, c, "output_padding", extra, 2);
    w->attr_int(w, c, "group", a->groups);
    return OSP_OK;
}

static const osp_op deconv_op = {
    .name = "deconv",
    .setup = deconv_setup,
    .workspace_bytes = deconv_workspace_bytes,
    .forward = deconv_forward,
    .backward = deconv_backward,
    .onnx_export = deconv_onnx,
};

const osp_layer_type osp__layer_deconv = {&deconv_op, deconv_parse};
