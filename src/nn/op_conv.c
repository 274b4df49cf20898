/* [conv]: 2-D convolution, PyTorch's nn.Conv2d.
 *
 *   input  C x H x W
 *   weight K x C/groups x kh x kw, bias K
 *   output K x P x Q
 *
 * Inference fusion: a following [batchnorm] is folded into a copy of the
 * weights and bias (w' = w * s, b' = (b - mean) * s + beta with
 * s = gamma / sqrt(var + eps)), a following [add] of a value that exists
 * by then (a ResNet's residual) and a following activation run in the
 * kernel's epilogue, so that conv + bn + add + relu is one pass over the
 * output.
 * The stored parameters never change; the copy is made at each inference
 * plan. The backend may also prepare the filters the inference forward
 * uses (conv2d_prepare: Winograd's transform), once after each plan. */
#include <math.h>
#include <string.h>

#include "attrs.h"
#include "op_fuse.h"
#include "quantize.h"
#include "osprey/nn.h"

static void forward(osp_graph *g, osp_node *n, const osp_exec *ex);

/* Per-sample tensors larger than this would overflow the int sizes the
 * kernels pass to BLAS. */
#define CONV_MAX_ELEMS ((int64_t)1 << 30)

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

static int parse(osp_spec_section *s, void **out) {
    conv_attrs a;
    int rc, n, size[2];
    if ((rc = osp_spec_int(s, "filters", 0, 1, 65536, &a.filters))) return rc;
    if (a.filters == 0) return osp_spec_error(s, NULL, "'filters' (output channels) is required");
    if ((rc = osp_spec_ints(s, "size", size, 2, &n, 1, 1024))) return rc;
    if (n == 0) return osp_spec_error(s, NULL, "'size' (e.g. 3 or 3x5) is required");
    a.kh = size[0];
    a.kw = n == 2 ? size[1] : size[0];
    if ((rc = read_pair(s, "stride", 1, 1, 1024, &a.stride_h, &a.stride_w))) return rc;
    if ((rc = read_pair(s, "dilation", 1, 1, 1024, &a.dil_h, &a.dil_w))) return rc;
    const char *pad = osp_spec_str(s, "pad", NULL);
    if (pad && !strcmp(pad, "same")) {
        if (a.stride_h != 1 || a.stride_w != 1)
            return osp_spec_error(s, "pad", "'pad = same' needs stride 1");
        int span_h = a.dil_h * (a.kh - 1), span_w = a.dil_w * (a.kw - 1);
        if (span_h % 2 || span_w % 2)
            return osp_spec_error(s, "pad",
                                  "'pad = same' needs an odd window span (dilation x (size - 1) "
                                  "even), not %dx%d",
                                  span_h + 1, span_w + 1);
        a.pad_h = span_h / 2;
        a.pad_w = span_w / 2;
    } else if ((rc = read_pair(s, "pad", 0, 0, 1024, &a.pad_h, &a.pad_w))) {
        return rc;
    }
    if ((rc = osp_spec_int(s, "groups", 1, 1, 65536, &a.groups))) return rc;
    if (a.filters % a.groups)
        return osp_spec_error(s, "groups", "'filters' (%d) must be a multiple of 'groups' (%d)",
                              a.filters, a.groups);
    if ((rc = osp_spec_int(s, "bias", 1, 0, 1, &a.bias))) return rc;
    a.folded_bn = 0;
    a.act = OSP_ACT_NONE;
    a.act_alpha = 0;
    a.folded = NULL;
    a.folded_mem = NULL;
    a.prepared_mem = NULL;
    a.residual_node = -1;
    a.prepared = NULL;
    a.prepared_floats = 0;
    a.prepared_for = NULL;
    a.quant = 0;
    a.in_scale = 1;
    a.in_zero = 0;
    a.qprepared = NULL;
    a.qprepared_bytes = 0;
    a.qprepared_for = NULL;
    a.qout_node = -1;
    a.qout_for = NULL;
    a.qbytes = NULL;
    a.qbytes_size = 0;
    a.calib = NULL;
    conv_attrs *copy = osp_calloc(1, sizeof *copy);
    if (!copy) return OSP_ENOMEM;
    *copy = a;
    *out = copy;
    return OSP_OK;
}

static void conv_free_attrs(void *attrs) {
    conv_attrs *a = attrs;
    if (a) {
        if (a->folded) a->folded_mem->mem_free(a->folded_mem->ctx, a->folded);
        if (a->prepared) a->prepared_mem->mem_free(a->prepared_mem->ctx, a->prepared);
        osp_free(a->qprepared);
        osp_free(a->qbytes);
        osp__calib_stats_free(a->calib);
    }
    osp_free(a);
}

static int is_conv_node(const osp_node *n) { return n->op && n->op->forward == forward; }

static osp_conv_desc desc_of(const osp_graph *g, const osp_node *n, int batch) {
    const conv_attrs *a = n->attrs;
    const osp_shape *in = &osp_graph_node_const(g, n->inputs[0])->shape;
    osp_conv_desc d = {
        .n = batch, .c = (int)in->dim[0], .h = (int)in->dim[1], .w = (int)in->dim[2],
        .k = a->filters, .p = (int)n->shape.dim[1], .q = (int)n->shape.dim[2],
        .kh = a->kh, .kw = a->kw, .stride_h = a->stride_h, .stride_w = a->stride_w,
        .pad_h = a->pad_h, .pad_w = a->pad_w, .dil_h = a->dil_h, .dil_w = a->dil_w,
        .groups = a->groups,
    };
    return d;
}

static int setup(osp_graph *g, osp_node *n) {
    const conv_attrs *a = n->attrs;
    if (n->n_inputs != 1) return osp_error(OSP_ESHAPE, "layer '%s': conv takes one input", n->name);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    char buf[96];
    osp_shape_format(in, buf, sizeof buf);
    if (in->ndim != 3)
        return osp_error(OSP_ESHAPE, "layer '%s': conv needs a C x H x W input, not %s", n->name,
                         buf);
    int c = (int)in->dim[0], h = (int)in->dim[1], w = (int)in->dim[2];
    if (c % a->groups)
        return osp_error(OSP_ESHAPE, "layer '%s': %d input channels are not a multiple of groups = %d",
                         n->name, c, a->groups);
    int p = osp_conv_out_size(h, a->kh, a->stride_h, a->pad_h, a->dil_h, 0);
    int q = osp_conv_out_size(w, a->kw, a->stride_w, a->pad_w, a->dil_w, 0);
    if (p < 1 || q < 1)
        return osp_error(OSP_ESHAPE,
                         "layer '%s': a %dx%d window (dilation %dx%d, pad %dx%d) does not fit "
                         "the %s input",
                         n->name, a->kh, a->kw, a->dil_h, a->dil_w, a->pad_h, a->pad_w, buf);
    int64_t taps = (int64_t)(c / a->groups) * a->kh * a->kw;
    if ((int64_t)a->filters * p * q > CONV_MAX_ELEMS || taps * p * q > CONV_MAX_ELEMS)
        return osp_error(OSP_ERANGE, "layer '%s': %d filters of %lld taps over %dx%d outputs is too large",
                         n->name, a->filters, (long long)taps, p, q);
    int64_t dims[3] = {a->filters, p, q};
    n->shape = osp_shape_make(3, dims);
    float scale = 1.0f / sqrtf((float)taps);
    int64_t wdims[4] = {a->filters, c / a->groups, a->kh, a->kw};
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

static size_t workspace_bytes(const osp_graph *g, const osp_node *n, int batch) {
    osp_conv_desc d = desc_of(g, n, batch);
    const osp_backend *be = osp_graph_backend(g);
    size_t bytes = be->conv2d_workspace(&d);
    const conv_attrs *a = n->attrs;
    if (a->quant && be->conv2d_int8_workspace) {
        const size_t q = be->conv2d_int8_workspace(&d);
        if (q > bytes) bytes = q;
    }
    return bytes;
}

/* Graph memory of be for floats values in *p (kept when it is be's and as
 * large), or NULL. */
static float *backend_floats(float **p, const osp_backend **mem, size_t *have, size_t floats,
                             const osp_backend *be) {
    if (*p && *mem == be && *have == floats) return *p;
    if (*p) (*mem)->mem_free((*mem)->ctx, *p);
    *have = 0;
    *p = be->mem_alloc(be->ctx, floats * sizeof(float));
    *mem = be;
    if (*p) *have = floats;
    return *p;
}

/* Folds batch norm node bn (eps) into a->folded. Plan-time work: the
 * parameters are copied to the host, folded there and copied back. */
static int fold_bn(osp_graph *g, osp_node *n, const osp_node *bn, float eps) {
    conv_attrs *a = n->attrs;
    const osp_param *wp = osp_graph_param(g, n->params[0]);
    const int64_t per_k = wp->numel / a->filters, k_count = a->filters;
    size_t have = a->folded ? (size_t)(wp->numel + k_count) : 0;
    if (!backend_floats(&a->folded, &a->folded_mem, &have, (size_t)(wp->numel + k_count),
                        osp_graph_backend(g)))
        return 0; /* then it runs unfused */
    /* host: w, b, batchnorm's weight, bias, running mean, var, then w', b' */
    float *host = osp_alloc((size_t)(2 * wp->numel + 7 * k_count) * sizeof(float));
    if (!host) return 0;
    float *w = host, *b = w + wp->numel, *gamma = b + k_count, *beta = gamma + k_count;
    float *mean = beta + k_count, *var = mean + k_count, *fw = var + k_count;
    float *fb = fw + wp->numel;
    osp_graph_read(g, w, osp_node_weight(g, n, 0), wp->numel);
    if (a->bias) osp_graph_read(g, b, osp_node_weight(g, n, 1), k_count);
    else memset(b, 0, (size_t)k_count * sizeof(float));
    float *bn_host[4] = {gamma, beta, mean, var};
    for (int i = 0; i < 4; i++) osp_graph_read(g, bn_host[i], osp_node_weight(g, bn, i), k_count);
    for (int k = 0; k < a->filters; k++) {
        /* as batchnorm_forward_infer computes its scale */
        const float s = (float)(gamma[k] * (1.0 / sqrt((double)var[k] + eps)));
        for (int64_t i = 0; i < per_k; i++) fw[k * per_k + i] = w[k * per_k + i] * s;
        fb[k] = (b[k] - mean[k]) * s + beta[k];
    }
    osp_graph_write(g, a->folded, fw, wp->numel + k_count);
    osp_free(host);
    return 1;
}

/* Of add's two inputs, the one that is not n's value (n's output, or that
 * of a node fused into n), if it exists before n runs (computed by an
 * earlier node, or fused into one); else -1. */
static int residual_input(const osp_graph *g, const osp_node *n, const osp_node *add) {
    int mine = 0, other = -1;
    for (int j = 0; j < 2; j++) {
        const int in = add->inputs[j];
        if (in == n->id || osp_graph_node_const(g, in)->fused_into == n->id) mine++;
        else other = in;
    }
    if (mine != 1 || other < 0) return -1;
    const osp_node *o = osp_graph_node_const(g, other);
    const int producer = o->fused_into ? o->fused_into : other;
    return producer < n->id ? other : -1;
}

static int conv_fuse(osp_graph *g, osp_node *n, const osp_node *next) {
    conv_attrs *a = n->attrs;
    float eps, alpha;
    osp_activation act;
    if (!next) { /* a new plan: the weights may have changed too */
        a->folded_bn = 0;
        a->act = OSP_ACT_NONE;
        a->residual_node = -1;
        a->prepared_for = NULL;
        a->qprepared_for = NULL;
        a->qout_node = -1;
        a->qout_for = NULL;
        return 0;
    }
    if (a->act != OSP_ACT_NONE) return 0; /* nothing fuses after the activation */
    /* a batch norm after the residual add would scale the residual too */
    if (!a->folded_bn && a->residual_node < 0 && osp__batchnorm_fusable(next, &eps) &&
        next->shape.dim[0] == a->filters) {
        a->folded_bn = fold_bn(g, n, next, eps);
        return a->folded_bn;
    }
    if (a->residual_node < 0 && osp__add_of_two(g, next)) {
        const int other = residual_input(g, n, next);
        if (other < 0) return 0;
        a->residual_node = other;
        return 1;
    }
    if (osp__activation_of(next, &act, &alpha)) {
        a->act = act;
        a->act_alpha = alpha;
        return 1;
    }
    return 0;
}

/* The backend's prepared copy of w, made now if this plan has none yet;
 * NULL when the backend prepares nothing for d (or memory is short: the
 * forward then works from w alone). */
static const float *prepared_filters(conv_attrs *a, const osp_conv_desc *d, const float *w,
                                     const osp_backend *be) {
    const size_t floats = be->conv2d_prepared_floats(d);
    if (!floats) return NULL;
    if (a->prepared_for == be && a->prepared_floats == floats) return a->prepared;
    if (!backend_floats(&a->prepared, &a->prepared_mem, &a->prepared_floats, floats, be))
        return NULL;
    be->conv2d_prepare(d, w, a->prepared);
    a->prepared_for = be;
    return a->prepared;
}

/* The backend's quantised copy of w, made now if this plan has none yet;
 * NULL when the backend has no int8 kernel for d (the layer then runs
 * float32) or memory is short. */
static const void *quantized_filters(conv_attrs *a, const osp_conv_desc *d, const float *w,
                                     const osp_backend *be) {
    if (!be->conv2d_int8_forward) return NULL;
    const size_t bytes = be->conv2d_int8_prepared_bytes(d);
    if (!bytes) return NULL;
    if (a->qprepared_for == be && a->qprepared_bytes == bytes) return a->qprepared;
    if (a->qprepared_bytes != bytes) {
        osp_free(a->qprepared);
        a->qprepared_bytes = 0;
        a->qprepared = osp_alloc(bytes);
        if (!a->qprepared) return NULL;
        a->qprepared_bytes = bytes;
    }
    be->conv2d_int8_prepare(d, w, a->qprepared);
    a->qprepared_for = be;
    return a->qprepared;
}

/* The weights and bias an inference forward of n uses (batch norm
 * folded in where it is fused). */
static void infer_weights(osp_graph *g, const osp_node *n, const float **w, const float **bias) {
    const conv_attrs *a = n->attrs;
    *w = osp_node_weight(g, n, 0);
    *bias = a->bias ? osp_node_weight(g, n, 1) : NULL;
    if (a->folded_bn) {
        *w = a->folded;
        *bias = a->folded + osp_graph_param(g, n->params[0])->numel;
    }
}

/* The node whose forward computes node i's value. */
static osp_node *producer_of(osp_graph *g, int i) {
    osp_node *n = osp_graph_node(g, i);
    return n->fused_into ? osp_graph_node(g, n->fused_into) : n;
}

/* The bytes one image's input takes packed for reader r, if it runs int8
 * on be and reads packed input, with its filters ready; else 0. */
static size_t packed_input_bytes(osp_graph *g, osp_node *r, const osp_backend *be, int batch) {
    if (!is_conv_node(r)) return 0;
    conv_attrs *ra = r->attrs;
    if (!ra->quant || ra->calib) return 0;
    const osp_conv_desc rd = desc_of(g, r, batch);
    const size_t per_image = be->conv2d_int8_packed_bytes(&rd);
    const float *w, *bias;
    infer_weights(g, r, &w, &bias);
    return per_image && quantized_filters(ra, &rd, w, be) ? per_image : 0;
}

/* Int8 activations between layers: the int8 convolution that reads n's
 * value (n's own, or that of the last node fused into it) packed for it,
 * or NULL; its bytes then go in n's own float32 buffer if it alone reads
 * the value, else (*shared set) beside it, in n's qbytes. A kept or final
 * output, and a layer being calibrated, read float32 only. */
static osp_node *packed_reader(osp_graph *g, osp_node *n, const osp_backend *be, int batch,
                               int *shared) {
    *shared = 0;
    if (!be->conv2d_int8_forward_io || !be->conv2d_int8_packed_bytes) return NULL;
    const int count = osp_graph_node_count(g);
    osp_node *reader = NULL;
    size_t per_image = 0;
    int readers = 0;
    for (int i = 1; i < count; i++) {
        osp_node *m = osp_graph_node(g, i);
        const int member = i == n->id || m->fused_into == n->id;
        if (member && (m->keep || i == count - 1)) return NULL;
        if (member) continue;
        for (int j = 0; j < m->n_inputs; j++) {
            if (producer_of(g, m->inputs[j]) != n) continue;
            readers++;
            if (!reader && (per_image = packed_input_bytes(g, m, be, batch))) reader = m;
        }
    }
    if (!reader) return NULL;
    if (readers == 1) return per_image <= (size_t)n->size * sizeof(float) ? reader : NULL;
    conv_attrs *a = n->attrs;
    const size_t bytes = per_image * (size_t)batch;
    if (a->qbytes_size != bytes) {
        osp_free(a->qbytes);
        a->qbytes_size = 0;
        a->qbytes = osp_alloc(bytes);
        if (!a->qbytes) return NULL;
        a->qbytes_size = bytes;
    }
    *shared = 1;
    return reader;
}

static void forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    conv_attrs *a = n->attrs;
    osp_conv_desc d = desc_of(g, n, ex->batch);
    const float *w = osp_node_weight(g, n, 0);
    const float *bias = a->bias ? osp_node_weight(g, n, 1) : NULL;
    /* Fusion state exists only under an inference plan (training plans
     * reset it), so a training-mode forward never sees it. */
    if (ex->mode == OSP_MODE_INFER) {
        infer_weights(g, n, &w, &bias);
        d.act = a->act;
        d.act_alpha = a->act_alpha;
        if (a->residual_node >= 0) d.residual = osp_graph_node(g, a->residual_node)->out;
        if (a->calib) osp__calib_observe(a->calib, osp_node_input(g, n, 0)->out,
                                         (int64_t)d.n * d.c * d.h * d.w);
        /* only under an inference plan: training changes w without one */
        if (osp_graph_planned_mode(g) == OSP_MODE_INFER) {
            const void *q = a->quant ? quantized_filters(a, &d, w, ex->be) : NULL;
            if (q) {
                osp_int8_io io = {.x_scale = a->in_scale, .x_zero = a->in_zero};
                const osp_node *from = producer_of(g, n->inputs[0]);
                const conv_attrs *fa = is_conv_node(from) ? from->attrs : NULL;
                if (fa && fa->qout_for == ex->be && fa->qout_node == n->id)
                    io.xq = fa->qbytes_size ? fa->qbytes
                                            : (const uint8_t *)osp_node_input(g, n, 0)->out;
                else
                    io.x = osp_node_input(g, n, 0)->out;
                if (a->qout_for != ex->be) {
                    int shared;
                    const osp_node *r = packed_reader(g, n, ex->be, ex->batch, &shared);
                    a->qout_node = r ? r->id : -1;
                    a->qout_for = ex->be;
                    if (!shared) { /* bytes in n->out, if any */
                        osp_free(a->qbytes);
                        a->qbytes = NULL;
                        a->qbytes_size = 0;
                    }
                }
                osp_conv_desc next;
                if (a->qout_node >= 0) {
                    const osp_node *r = osp_graph_node(g, a->qout_node);
                    const conv_attrs *ra = r->attrs;
                    next = desc_of(g, r, ex->batch);
                    io.yq = a->qbytes_size ? a->qbytes : (uint8_t *)n->out;
                    io.y = a->qbytes_size ? n->out : NULL;
                    io.next = &next;
                    io.y_scale = ra->in_scale;
                    io.y_zero = ra->in_zero;
                } else {
                    io.y = n->out;
                }
                if (ex->be->conv2d_int8_forward_io)
                    ex->be->conv2d_int8_forward_io(&d, &io, q, bias, ex->workspace);
                else
                    ex->be->conv2d_int8_forward(&d, a->in_scale, a->in_zero, io.x, q, bias,
                                                io.y, ex->workspace);
                return;
            }
            d.prepared = prepared_filters(a, &d, w, ex->be);
        }
    }
    ex->be->conv2d_forward(&d, osp_node_input(g, n, 0)->out, w, bias, n->out, ex->workspace);
}

static void backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const conv_attrs *a = n->attrs;
    osp_conv_desc d = desc_of(g, n, ex->batch);
    osp_node *in = osp_node_input(g, n, 0);
    if (in->dout)
        ex->be->conv2d_backward_data(&d, n->dout, osp_node_weight(g, n, 0), in->dout,
                                     ex->workspace);
    ex->be->conv2d_backward_filter(&d, in->out, n->dout, osp_node_grad(g, n, 0),
                                   a->bias ? osp_node_grad(g, n, 1) : NULL, ex->workspace);
}

/* ONNX: one Conv, its padding symmetric as osprey's. */
static int conv_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n, char *const *in,
                     char *out) {
    int rc = osp__export_needs_attrs(n);
    if (rc) return rc;
    const conv_attrs *a = n->attrs;
    char *p[OSP_MAX_NODE_PARAMS] = {0};
    w->params(w, n, p); /* weight, then the bias where there is one */
    const int bias = n->n_params > 1;
    char *args[3] = {in[0], p[0], bias ? p[1] : NULL};
    osp_onnx_node *c = w->node(w, "Conv", n->name, bias ? 3 : 2, args, out);
    const int64_t kernel[2] = {a->kh, a->kw}, strides[2] = {a->stride_h, a->stride_w};
    const int64_t pads[4] = {a->pad_h, a->pad_w, a->pad_h, a->pad_w};
    const int64_t dilations[2] = {a->dil_h, a->dil_w};
    w->attr_ints(w, c, "kernel_shape", kernel, 2);
    w->attr_ints(w, c, "strides", strides, 2);
    w->attr_ints(w, c, "pads", pads, 4);
    w->attr_ints(w, c, "dilations", dilations, 2);
    w->attr_int(w, c, "group", a->groups);
    return OSP_OK;
}

static const osp_op conv_op = {
    .name = "conv",
    .setup = setup,
    .workspace_bytes = workspace_bytes,
    .forward = forward,
    .backward = backward,
    .free_attrs = conv_free_attrs,
    .fuse = conv_fuse,
    .onnx_export = conv_onnx,
};

const osp_layer_type osp__layer_conv = {&conv_op, parse};
