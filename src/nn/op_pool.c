/* [maxpool], [avgpool], [globalavgpool]: PyTorch's nn.MaxPool2d,
 * nn.AvgPool2d and nn.AdaptiveAvgPool2d(1).
 *
 *   input  C x H x W
 *   output C x P x Q (globalavgpool: C x 1 x 1)
 *
 * Max pooling keeps the argmax (N x C x P x Q int32, offsets within each
 * input plane) from forward to backward; inference runs without it. */
#include <stdint.h>
#include <string.h>

#include "attrs.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

static int read_pair(osp_spec_section *s, const char *key, int def_h, int def_w, int min, int max,
                     int *h, int *w) {
    int v[2], n;
    int rc = osp_spec_ints(s, key, v, 2, &n, min, max);
    if (rc) return rc;
    *h = n == 0 ? def_h : v[0];
    *w = n == 0 ? def_w : n == 1 ? v[0] : v[1];
    return OSP_OK;
}

static int parse_window(osp_spec_section *s, pool_kind kind, void **out) {
    pool_attrs a = {.kind = kind};
    int rc, n, size[2];
    if ((rc = osp_spec_ints(s, "size", size, 2, &n, 1, 1024))) return rc;
    if (n == 0) return osp_spec_error(s, NULL, "'size' (e.g. 2 or 3x3) is required");
    a.kh = size[0];
    a.kw = n == 2 ? size[1] : size[0];
    if ((rc = read_pair(s, "stride", a.kh, a.kw, 1, 1024, &a.stride_h, &a.stride_w))) return rc;
    if ((rc = read_pair(s, "pad", 0, 0, 0, 1024, &a.pad_h, &a.pad_w))) return rc;
    /* A window wholly in padding would pool nothing. */
    if (a.pad_h >= a.kh || a.pad_w >= a.kw)
        return osp_spec_error(s, "pad", "'pad' (%dx%d) must be smaller than 'size' (%dx%d)",
                              a.pad_h, a.pad_w, a.kh, a.kw);
    if ((rc = osp_spec_int(s, "ceil", 0, 0, 1, &a.ceil))) return rc;
    if (kind == POOL_AVG && (rc = osp_spec_int(s, "exclude_pad", 0, 0, 1, &a.exclude_pad)))
        return rc;
    pool_attrs *copy = osp_calloc(1, sizeof *copy);
    if (!copy) return OSP_ENOMEM;
    *copy = a;
    *out = copy;
    return OSP_OK;
}

static int parse_max(osp_spec_section *s, void **out) { return parse_window(s, POOL_MAX, out); }
static int parse_avg(osp_spec_section *s, void **out) { return parse_window(s, POOL_AVG, out); }

static int parse_global(osp_spec_section *s, void **out) {
    pool_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->kind = POOL_GLOBAL_AVG;
    *out = a;
    return OSP_OK;
}

static osp_conv_desc desc_of(const osp_graph *g, const osp_node *n, int batch) {
    const pool_attrs *a = n->attrs;
    const osp_shape *in = &osp_graph_node_const(g, n->inputs[0])->shape;
    osp_conv_desc d = {
        .n = batch, .c = (int)in->dim[0], .h = (int)in->dim[1], .w = (int)in->dim[2],
        .k = (int)in->dim[0], .p = (int)n->shape.dim[1], .q = (int)n->shape.dim[2],
        .kh = a->kh, .kw = a->kw, .stride_h = a->stride_h, .stride_w = a->stride_w,
        .pad_h = a->pad_h, .pad_w = a->pad_w, .dil_h = 1, .dil_w = 1, .groups = 1,
    };
    if (a->kind == POOL_GLOBAL_AVG) {
        d.kh = d.h;
        d.kw = d.w;
        d.stride_h = d.stride_w = 1;
        d.pad_h = d.pad_w = 0;
    }
    return d;
}

static int setup(osp_graph *g, osp_node *n) {
    const pool_attrs *a = n->attrs;
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': %s takes one input", n->name, n->op->name);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    char buf[96];
    osp_shape_format(in, buf, sizeof buf);
    if (in->ndim != 3)
        return osp_error(OSP_ESHAPE, "layer '%s': %s needs a C x H x W input, not %s", n->name,
                         n->op->name, buf);
    /* argmax holds offsets within a plane as int32. */
    if (in->dim[1] * in->dim[2] > INT32_MAX)
        return osp_error(OSP_ERANGE, "layer '%s': input planes of %s are too large", n->name, buf);
    int p = 1, q = 1;
    if (a->kind != POOL_GLOBAL_AVG) {
        p = osp_conv_out_size((int)in->dim[1], a->kh, a->stride_h, a->pad_h, 1, a->ceil);
        q = osp_conv_out_size((int)in->dim[2], a->kw, a->stride_w, a->pad_w, 1, a->ceil);
        if (p < 1 || q < 1)
            return osp_error(OSP_ESHAPE, "layer '%s': a %dx%d window (pad %dx%d) does not fit the %s input",
                             n->name, a->kh, a->kw, a->pad_h, a->pad_w, buf);
    }
    int64_t dims[3] = {in->dim[0], p, q};
    n->shape = osp_shape_make(3, dims);
    return OSP_OK;
}

static size_t max_saved_bytes(const osp_graph *g, const osp_node *n, int batch) {
    return (size_t)batch * (size_t)n->size * sizeof(int32_t);
}

static void forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const pool_attrs *a = n->attrs;
    osp_conv_desc d = desc_of(g, n, ex->batch);
    const float *x = osp_node_input(g, n, 0)->out;
    if (a->kind == POOL_MAX) ex->be->maxpool_forward(&d, x, n->out, n->saved);
    else ex->be->avgpool_forward(&d, a->exclude_pad, x, n->out);
}

static void backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const pool_attrs *a = n->attrs;
    osp_node *in = osp_node_input(g, n, 0);
    if (!in->dout) return;
    osp_conv_desc d = desc_of(g, n, ex->batch);
    if (a->kind == POOL_MAX) ex->be->maxpool_backward(&d, n->dout, n->saved, in->dout);
    else ex->be->avgpool_backward(&d, a->exclude_pad, n->dout, in->dout);
}

/* ONNX: MaxPool, AveragePool or GlobalAveragePool. */
static int pool_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n, char *const *in,
                     char *out) {
    int rc = osp__export_needs_attrs(n);
    if (rc) return rc;
    const pool_attrs *a = n->attrs;
    if (a->kind == POOL_GLOBAL_AVG) {
        w->node(w, "GlobalAveragePool", n->name, 1, in, out);
        return OSP_OK;
    }
    osp_onnx_node *p = w->node(w, a->kind == POOL_MAX ? "MaxPool" : "AveragePool", n->name, 1,
                               in, out);
    const int64_t kernel[2] = {a->kh, a->kw}, strides[2] = {a->stride_h, a->stride_w};
    const int64_t pads[4] = {a->pad_h, a->pad_w, a->pad_h, a->pad_w};
    w->attr_ints(w, p, "kernel_shape", kernel, 2);
    w->attr_ints(w, p, "strides", strides, 2);
    w->attr_ints(w, p, "pads", pads, 4);
    w->attr_int(w, p, "ceil_mode", a->ceil);
    if (a->kind == POOL_AVG) w->attr_int(w, p, "count_include_pad", !a->exclude_pad);
    return OSP_OK;
}

static const osp_op maxpool_op = {
    .name = "maxpool",
    .setup = setup,
    .saved_bytes = max_saved_bytes,
    .forward = forward,
    .backward = backward,
    .onnx_export = pool_onnx,
};

static const osp_op avgpool_op = {
    .name = "avgpool",
    .setup = setup,
    .forward = forward,
    .backward = backward,
    .onnx_export = pool_onnx,
};

static const osp_op globalavgpool_op = {
    .name = "globalavgpool",
    .setup = setup,
    .forward = forward,
    .backward = backward,
    .onnx_export = pool_onnx,
};

const osp_layer_type osp__layer_maxpool = {&maxpool_op, parse_max};
const osp_layer_type osp__layer_avgpool = {&avgpool_op, parse_avg};
const osp_layer_type osp__layer_globalavgpool = {&globalavgpool_op, parse_global};
