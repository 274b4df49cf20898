/* ONNX operators that compute, mapped onto osprey layers. Every attribute
 * that would change the result is checked: what osprey cannot compute
 * exactly is refused with the operator and the node named, never
 * approximated. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "io/onnx_impl.h"

#define FAIL(code, ...) return osp__onnx_node_error(im, n, code, __VA_ARGS__)

/* Input i, which must be computed by a layer: its node id, or an error. */
static int layer_input(onnx_importer *im, const Osp__Onnx__NodeProto *n, size_t i) {
    onnx_value *v = osp__onnx_input(im, n, i);
    if (!v) FAIL(OSP_EFORMAT, "input %zu is missing", i);
    if (v->kind != ONNX_VAL_LAYER)
        FAIL(OSP_ENOTSUP, "input %zu ('%s') is a constant where osprey needs a computed value", i,
             v->name);
    return v->node;
}

static const osp_shape *shape_of(onnx_importer *im, int node) {
    return &osp__onnx_layer(im, node)->shape;
}

static float *copy_floats(const onnx_const *c) {
    float *p = osp_alloc(sizeof(float) * (size_t)(c->numel ? c->numel : 1));
    if (p)
        for (int64_t k = 0; k < c->numel; k++) p[k] = (float)osp__onnx_const_get(c, k);
    return p;
}

/* Outputs after the first must not be read by the rest of the graph. */
static int only_first_output(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    for (size_t o = 1; o < n->n_output; o++) {
        onnx_value *v = n->output[o] && *n->output[o] ? osp__onnx_value_find(im, n->output[o])
                                                      : NULL;
        if (v && v->uses) FAIL(OSP_ENOTSUP, "its output %zu ('%s') is used; osprey computes only "
                               "the first", o, n->output[o]);
    }
    return OSP_OK;
}

static int alias(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_input(im, n, 0);
    return x < 0 ? x : osp__onnx_set_layer(im, n, x);
}

/* Emits a layer on one input and binds the node's output to it. */
static int emit1(onnx_importer *im, const Osp__Onnx__NodeProto *n, const char *type, int x,
                 const char *keys) {
    int id = osp__onnx_emit(im, n, NULL, type, &x, 1, keys);
    return id < 0 ? id : osp__onnx_set_layer(im, n, id);
}

/* ---- windows: pads, strides, auto_pad ---- */

typedef struct window {
    int64_t k[2], s[2], d[2], pad_begin[2], pad_end[2];
} window;

static int read_window(onnx_importer *im, const Osp__Onnx__NodeProto *n, const osp_shape *x,
                       const int64_t *kernel, window *w) {
    size_t ns, nd, np;
    const int64_t *s = osp__onnx_attr_ints(n, "strides", &ns),
                  *d = osp__onnx_attr_ints(n, "dilations", &nd);
    const int64_t *p = osp__onnx_attr_ints(n, "pads", &np);
    if ((s && ns != 2) || (d && nd != 2) || (p && np != 4))
        FAIL(OSP_ENOTSUP, "2-D windows only (strides, dilations and pads of 2, 2 and 4 values)");
    char ap[32];
    const char *auto_pad = osp__onnx_attr_string(n, "auto_pad", "NOTSET", ap, sizeof ap);
    for (int a = 0; a < 2; a++) {
        w->k[a] = kernel[a];
        w->s[a] = s ? s[a] : 1;
        w->d[a] = d ? d[a] : 1;
        if (w->k[a] < 1 || w->k[a] > 1024 || w->s[a] < 1 || w->s[a] > 1024 || w->d[a] < 1 ||
            w->d[a] > 1024)
            FAIL(OSP_ERANGE, "kernel %lld, stride %lld, dilation %lld", (long long)w->k[a],
                 (long long)w->s[a], (long long)w->d[a]);
        int64_t in = x->dim[1 + a];
        if (!strcmp(auto_pad, "NOTSET")) {
            w->pad_begin[a] = p ? p[a] : 0;
            w->pad_end[a] = p ? p[a + 2] : 0;
        } else if (!strcmp(auto_pad, "VALID")) {
            w->pad_begin[a] = w->pad_end[a] = 0;
        } else if (!strcmp(auto_pad, "SAME_UPPER") || !strcmp(auto_pad, "SAME_LOWER")) {
            int64_t out = (in + w->s[a] - 1) / w->s[a];
            int64_t total = (out - 1) * w->s[a] + (w->k[a] - 1) * w->d[a] + 1 - in;
            if (total < 0) total = 0;
            int upper = auto_pad[5] == 'U';
            w->pad_begin[a] = upper ? total / 2 : total - total / 2;
            w->pad_end[a] = total - w->pad_begin[a];
        } else FAIL(OSP_EFORMAT, "auto_pad '%s'", auto_pad);
        if (w->pad_begin[a] < 0 || w->pad_end[a] < 0 || w->pad_begin[a] > 1024 || w->pad_end[a] > 1024)
            FAIL(OSP_ERANGE, "padding %lld, %lld", (long long)w->pad_begin[a],
                 (long long)w->pad_end[a]);
    }
    return OSP_OK;
}

static int symmetric(const window *w) {
    return w->pad_begin[0] == w->pad_end[0] && w->pad_begin[1] == w->pad_end[1];
}

/* An explicit [pad] layer before a window whose padding is lopsided. */
static int emit_pad(onnx_importer *im, const Osp__Onnx__NodeProto *n, int x, const window *w,
                    const char *value) {
    onnx_keys k = {.len = 0};
    onnx_key(&k, "pad = %lld, %lld, %lld, %lld\n", (long long)w->pad_begin[0], (long long)w->pad_begin[1],
        (long long)w->pad_end[0], (long long)w->pad_end[1]);
    if (value) onnx_key(&k, "value = %s\n", value);
    return osp__onnx_emit(im, n, "_pad", "pad", &x, 1, k.text);
}

/* ---- operators ---- */

static int map_conv(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_input(im, n, 0);
    if (x < 0) return x;
    const osp_shape *xs = shape_of(im, x);
    const onnx_const *W = osp__onnx_const_input(im, n, 1), *B = osp__onnx_const_input(im, n, 2);
    if (!W) FAIL(OSP_ENOTSUP, "the weights must be an initializer or a constant");
    if (osp__onnx_input(im, n, 2) && !B) FAIL(OSP_ENOTSUP, "the bias must be constant");
    if (xs->ndim != 3 || W->ndim != 4) FAIL(OSP_ENOTSUP, "2-D convolutions only");
    int64_t group = osp__onnx_attr_int(n, "group", 1), K = W->dim[0], C = xs->dim[0];
    if (group < 1 || group > 65536 || C % group || K % group || W->dim[1] * group != C)
        FAIL(OSP_ESHAPE, "weights %lldx%lldx%lldx%lld with %lld groups do not fit %lld input "
             "channels", (long long)W->dim[0], (long long)W->dim[1], (long long)W->dim[2],
             (long long)W->dim[3], (long long)group, (long long)C);
    if (B && (B->numel != K)) FAIL(OSP_ESHAPE, "bias of %lld values for %lld filters",
                                   (long long)B->numel, (long long)K);
    size_t nk;
    const int64_t *ks = osp__onnx_attr_ints(n, "kernel_shape", &nk);
    if (ks && (nk != 2 || ks[0] != W->dim[2] || ks[1] != W->dim[3]))
        FAIL(OSP_ESHAPE, "kernel_shape does not match the weights");
    window w;
    int rc = read_window(im, n, xs, &W->dim[2], &w);
    if (rc) return rc;
    if (!symmetric(&w)) {
        if ((x = emit_pad(im, n, x, &w, NULL)) < 0) return x;
        w.pad_begin[0] = w.pad_begin[1] = 0;
    }
    onnx_keys k = {.len = 0};
    onnx_key(&k, "filters = %lld\nsize = %lldx%lld\n", (long long)K, (long long)w.k[0], (long long)w.k[1]);
    if (w.s[0] != 1 || w.s[1] != 1) onnx_key(&k, "stride = %lldx%lld\n", (long long)w.s[0], (long long)w.s[1]);
    if (w.pad_begin[0] || w.pad_begin[1])
        onnx_key(&k, "pad = %lldx%lld\n", (long long)w.pad_begin[0], (long long)w.pad_begin[1]);
    if (w.d[0] != 1 || w.d[1] != 1) onnx_key(&k, "dilation = %lldx%lld\n", (long long)w.d[0], (long long)w.d[1]);
    if (group != 1) onnx_key(&k, "groups = %lld\n", (long long)group);
    onnx_key(&k, "bias = %d\n", B ? 1 : 0);
    int id = osp__onnx_emit(im, n, NULL, "conv", &x, 1, k.text);
    if (id < 0) return id;
    float *wd = copy_floats(W);
    if (!wd || (rc = osp__onnx_weight_add(im, id, "weight", wd, W->numel)))
        return wd ? rc : OSP_ENOMEM;
    if (B) {
        float *bd = copy_floats(B);
        if (!bd || (rc = osp__onnx_weight_add(im, id, "bias", bd, B->numel)))
            return bd ? rc : OSP_ENOMEM;
    }
    return osp__onnx_set_layer(im, n, id);
}

/* A batch norm right after a convolution whose output nothing else reads is
 * folded into the convolution's weights and bias (in double precision);
 * otherwise it becomes a [batchnorm] layer with the model's statistics. */
static int map_batchnorm(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_input(im, n, 0), rc;
    if (x < 0) return x;
    if ((rc = only_first_output(im, n))) return rc;
    if (osp__onnx_attr_int(n, "training_mode", 0)) FAIL(OSP_ENOTSUP, "training mode");
    const onnx_const *p[4];
    for (int i = 0; i < 4; i++)
        if (!(p[i] = osp__onnx_const_input(im, n, (size_t)i + 1)))
            FAIL(OSP_ENOTSUP, "scale, bias, mean and variance must be constants");
    const osp_shape *xs = shape_of(im, x);
    int64_t C = xs->dim[0];
    for (int i = 0; i < 4; i++)
        if (p[i]->numel != C) FAIL(OSP_ESHAPE, "parameters of %lld values for %lld channels",
                                   (long long)p[i]->numel, (long long)C);
    float eps = osp__onnx_attr_float(n, "epsilon", 1e-5f);
    if (!(eps > 0.0f) || eps > 1.0f) FAIL(OSP_ERANGE, "epsilon %g", (double)eps);
    onnx_value *in = osp__onnx_input(im, n, 0);
    const osp_node *producer = osp__onnx_layer(im, x);
    if (in->uses == 1 && x > 0 && producer->op && !strcmp(producer->op->name, "conv")) {
        onnx_weight *w = osp__onnx_weight_find(im, x, "weight");
        onnx_weight *b = osp__onnx_weight_find(im, x, "bias");
        if (!b) {
            float *zero = osp_calloc((size_t)C, sizeof(float));
            if (!zero) return OSP_ENOMEM;
            if ((rc = osp__onnx_weight_add(im, x, "bias", zero, C)) ||
                (rc = osp__onnx_reemit(im, x, "bias = 0\n", "bias = 1\n")))
                return rc;
            w = osp__onnx_weight_find(im, x, "weight");
            b = osp__onnx_weight_find(im, x, "bias");
        }
        int64_t per = w->numel / C;
        for (int64_t c = 0; c < C; c++) {
            double var = osp__onnx_const_get(p[3], c) + eps;
            if (!(var > 0.0)) FAIL(OSP_ERANGE, "variance %g in channel %lld", var - eps, (long long)c);
            double scale = osp__onnx_const_get(p[0], c) / sqrt(var);
            for (int64_t j = 0; j < per; j++) w->data[c * per + j] = (float)(w->data[c * per + j] * scale);
            b->data[c] = (float)((b->data[c] - osp__onnx_const_get(p[2], c)) * scale +
                                 osp__onnx_const_get(p[1], c));
        }
        return osp__onnx_set_layer(im, n, x);
    }
    onnx_keys k = {.len = 0};
    onnx_key(&k, "eps = %.9g\n", (double)eps);
    int id = osp__onnx_emit(im, n, NULL, "batchnorm", &x, 1, k.text);
    if (id < 0) return id;
    static const char *const what[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++) {
        float *d = copy_floats(p[i]);
        if (!d || (rc = osp__onnx_weight_add(im, id, what[i], d, C))) return d ? rc : OSP_ENOMEM;
    }
    return osp__onnx_set_layer(im, n, id);
}

/* Clip's bounds: attributes before opset 11, inputs 1 and 2 from it. */
static int map_clip(onnx_importer *im, const Osp__Onnx__NodeProto *n, int x) {
    double lo, hi;
    int rc = osp__onnx_clip_bounds(im, n, &lo, &hi);
    if (rc) return rc;
    if (lo == 0.0 && hi == 6.0) return emit1(im, n, "relu6", x, "");
    if (lo == 0.0 && isinf(hi) && hi > 0) return emit1(im, n, "relu", x, "");
    onnx_keys k = {.len = 0};
    if (!isinf(lo)) onnx_key(&k, "min = %.9g\n", lo);
    if (!isinf(hi)) onnx_key(&k, "max = %.9g\n", hi);
    return emit1(im, n, "clip", x, k.text);
}

/* A constant operand becomes a [constant] layer of its per-sample shape: a
 * leading axis of 1 is the batch's. */
static int constant_layer(onnx_importer *im, const Osp__Onnx__NodeProto *n, const onnx_const *c,
                          int sample_rank) {
    int skip = 0;
    if (c->ndim == sample_rank + 1) {
        if (c->dim[0] != 1) FAIL(OSP_ENOTSUP, "a constant that differs across the batch");
        skip = 1;
    } else if (c->ndim > sample_rank + 1) FAIL(OSP_ESHAPE, "a constant of higher rank than the data");
    onnx_keys k = {.len = 0};
    onnx_key(&k, "shape = ");
    if (c->ndim - skip == 0) onnx_key(&k, "1");
    for (int a = skip; a < c->ndim; a++) onnx_key(&k, "%s%lld", a > skip ? "x" : "", (long long)c->dim[a]);
    onnx_key(&k, "\n");
    int id = osp__onnx_emit(im, n, "_const", "constant", NULL, 0, k.text);
    if (id < 0) return id;
    float *d = copy_floats(c);
    if (!d) return OSP_ENOMEM;
    int rc = osp__onnx_weight_add(im, id, "value", d, c->numel);
    return rc ? rc : id;
}

static int map_binary(onnx_importer *im, const Osp__Onnx__NodeProto *n, const char *type) {
    int ids[2], rc;
    int sample_rank = -1;
    for (int i = 0; i < 2; i++) {
        onnx_value *v = osp__onnx_input(im, n, (size_t)i);
        if (!v) FAIL(OSP_EFORMAT, "needs two inputs");
        if (v->kind == ONNX_VAL_LAYER) sample_rank = shape_of(im, v->node)->ndim;
    }
    for (int i = 0; i < 2; i++) {
        onnx_value *v = osp__onnx_input(im, n, (size_t)i);
        if (v->kind == ONNX_VAL_LAYER) ids[i] = v->node;
        else if ((rc = constant_layer(im, n, &v->c, sample_rank)) < 0) return rc;
        else ids[i] = rc;
    }
    int id = osp__onnx_emit(im, n, NULL, type, ids, 2, "");
    return id < 0 ? id : osp__onnx_set_layer(im, n, id);
}

static int map_pool(onnx_importer *im, const Osp__Onnx__NodeProto *n, int is_max) {
    int x = layer_input(im, n, 0), rc;
    if (x < 0) return x;
    if ((rc = only_first_output(im, n))) return rc;
    const osp_shape *xs = shape_of(im, x);
    if (xs->ndim != 3) FAIL(OSP_ENOTSUP, "2-D pooling only");
    size_t nk;
    const int64_t *ks = osp__onnx_attr_ints(n, "kernel_shape", &nk);
    if (!ks || nk != 2) FAIL(OSP_ENOTSUP, "2-D pooling needs kernel_shape of 2 values");
    window w;
    if ((rc = read_window(im, n, xs, ks, &w))) return rc;
    if (w.d[0] != 1 || w.d[1] != 1) FAIL(OSP_ENOTSUP, "dilated pooling");
    if (osp__onnx_attr_int(n, "storage_order", 0)) FAIL(OSP_ENOTSUP, "column-major storage_order");
    int64_t ceil_mode = osp__onnx_attr_int(n, "ceil_mode", 0);
    int64_t include_pad = osp__onnx_attr_int(n, "count_include_pad", 0);
    int lopsided = !symmetric(&w);
    if (!lopsided && (w.pad_begin[0] >= w.k[0] || w.pad_begin[1] >= w.k[1])) lopsided = 1;
    if (lopsided) {
        if (!is_max && !include_pad)
            FAIL(OSP_ENOTSUP, "uneven padding that the average must not count");
        if ((x = emit_pad(im, n, x, &w, is_max ? "-inf" : NULL)) < 0) return x;
        w.pad_begin[0] = w.pad_begin[1] = 0;
    }
    onnx_keys k = {.len = 0};
    onnx_key(&k, "size = %lldx%lld\nstride = %lldx%lld\n", (long long)w.k[0], (long long)w.k[1],
        (long long)w.s[0], (long long)w.s[1]);
    if (w.pad_begin[0] || w.pad_begin[1])
        onnx_key(&k, "pad = %lldx%lld\n", (long long)w.pad_begin[0], (long long)w.pad_begin[1]);
    if (ceil_mode) onnx_key(&k, "ceil = 1\n");
    if (!is_max && !include_pad && (w.pad_begin[0] || w.pad_begin[1])) onnx_key(&k, "exclude_pad = 1\n");
    return emit1(im, n, is_max ? "maxpool" : "avgpool", x, k.text);
}

/* Gemm (A x B' x alpha + C x beta) and MatMul by a constant: [fc]. */
static int map_fc(onnx_importer *im, const Osp__Onnx__NodeProto *n, int is_gemm) {
    int x = layer_input(im, n, 0), rc;
    if (x < 0) return x;
    const osp_shape *xs = shape_of(im, x);
    const onnx_const *B = osp__onnx_const_input(im, n, 1),
                     *C = is_gemm ? osp__onnx_const_input(im, n, 2) : NULL;
    if (!B || B->ndim != 2) FAIL(OSP_ENOTSUP, "the second operand must be a constant matrix");
    if (is_gemm && osp__onnx_input(im, n, 2) && !C) FAIL(OSP_ENOTSUP, "C must be constant");
    /* (T x N) x D with the batch the minor factor of the first axis: per
     * sample T x D, multiplied on its last axis */
    int tokens = xs->ndim == 2 && !osp__onnx_layout_plain(&im->cur_layout);
    if (xs->ndim != 1 && !tokens)
        FAIL(OSP_ENOTSUP, "the first operand must be N x D (it is N x %lld x ...)",
             (long long)xs->dim[0]);
    if (is_gemm && osp__onnx_attr_int(n, "transA", 0)) FAIL(OSP_ENOTSUP, "transA = 1");
    int trans_b = is_gemm && osp__onnx_attr_int(n, "transB", 0);
    double alpha = is_gemm ? osp__onnx_attr_float(n, "alpha", 1.0f) : 1.0;
    double beta = is_gemm ? osp__onnx_attr_float(n, "beta", 1.0f) : 1.0;
    int64_t K = trans_b ? B->dim[0] : B->dim[1], D = trans_b ? B->dim[1] : B->dim[0];
    int64_t in = xs->dim[xs->ndim - 1];
    if (D != in) FAIL(OSP_ESHAPE, "a %lldx%lld matrix for %lld inputs", (long long)B->dim[0],
                      (long long)B->dim[1], (long long)in);
    if (C && C->numel != 1 && !(C->numel == K && (C->ndim == 1 || (C->ndim == 2 && C->dim[0] == 1))))
        FAIL(OSP_ENOTSUP, "C must be a scalar or a row of %lld values", (long long)K);
    onnx_keys k = {.len = 0};
    onnx_key(&k, "outputs = %lld\nbias = %d\n%s", (long long)K, C ? 1 : 0,
        tokens ? "last_axis = 1\n" : "");
    int id = osp__onnx_emit(im, n, NULL, "fc", &x, 1, k.text);
    if (id < 0) return id;
    float *w = osp_alloc(sizeof(float) * (size_t)(K * D));
    if (!w) return OSP_ENOMEM;
    for (int64_t o = 0; o < K; o++)
        for (int64_t d = 0; d < D; d++)
            w[o * D + d] = (float)(alpha * osp__onnx_const_get(B, trans_b ? o * D + d : d * K + o));
    if ((rc = osp__onnx_weight_add(im, id, "weight", w, K * D))) return rc;
    if (C) {
        float *b = osp_alloc(sizeof(float) * (size_t)K);
        if (!b) return OSP_ENOMEM;
        for (int64_t o = 0; o < K; o++)
            b[o] = (float)(beta * osp__onnx_const_get(C, C->numel == 1 ? 0 : o));
        if ((rc = osp__onnx_weight_add(im, id, "bias", b, K))) return rc;
    }
    return osp__onnx_set_layer(im, n, id);
}

static int map_flatten(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_input(im, n, 0);
    if (x < 0) return x;
    const osp_shape *xs = shape_of(im, x);
    int64_t axis = osp__onnx_attr_int(n, "axis", 1);
    if (axis < 0) axis += xs->ndim + 1;
    /* ONNX's Flatten is always 2-D, [d0 * ... * d(axis-1), the rest]: with
     * the batch as d0 it keeps samples apart only when the axes between the
     * batch and `axis` are all 1, and then it is osprey's flatten. */
    int64_t before = 1;
    for (int k = 0; k < axis - 1 && k < xs->ndim; k++) before *= xs->dim[k];
    if (axis < 1 || axis > xs->ndim + 1 || before != 1)
        FAIL(OSP_ENOTSUP, "Flatten that mixes samples (axis %lld)", (long long)axis);
    return emit1(im, n, "flatten", x, "");
}

static int map_reshape(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_input(im, n, 0);
    if (x < 0) return x;
    const osp_shape *xs = shape_of(im, x);
    const onnx_const *s = osp__onnx_const_input(im, n, 1);
    if (!s || !s->is_int || s->ndim != 1 || s->numel < 1 || s->numel > OSP_MAX_DIMS)
        FAIL(OSP_ENOTSUP, "the target shape must be a constant list of 1 to %d integers "
             "(after folding)", OSP_MAX_DIMS);
    int allow_zero = (int)osp__onnx_attr_int(n, "allowzero", 0);
    int64_t first = s->i[0];
    int64_t rest_known = 1;
    int rest_infer = 0;
    for (int64_t k = 1; k < s->numel; k++) {
        int64_t d = s->i[k];
        if (d == -1) {
            rest_infer = 1;
            continue;
        }
        if (d == 0 && !allow_zero && k - 1 < xs->ndim) d = xs->dim[k - 1];
        /* a sample holds at most 2^28 values: larger targets never fit,
         * and their product must not overflow */
        if (d <= 0 || d > ((int64_t)1 << 28) / rest_known)
            FAIL(OSP_ENOTSUP, "target dimension %lld", (long long)s->i[k]);
        rest_known *= d;
    }
    /* The first axis must stay the batch: the batch itself, 0 (copy), or -1
     * when the rest accounts for every value of a sample. */
    int64_t size = 1;
    for (int k = 0; k < xs->ndim; k++) size *= xs->dim[k];
    int batch_ok = first == ONNX_BATCH || (first == 0 && !allow_zero) ||
                   (first == -1 && !rest_infer && rest_known == size);
    if (!batch_ok)
        FAIL(OSP_ENOTSUP, "a reshape that mixes samples (target's first axis %lld); export the "
             "model with a symbolic batch or as x.flatten(1)", (long long)first);
    onnx_keys k = {.len = 0};
    onnx_key(&k, "shape = ");
    if (s->numel == 1) onnx_key(&k, "1");
    for (int64_t a = 1; a < s->numel; a++) {
        int64_t d = s->i[a];
        if (d == 0 && !allow_zero) d = a - 1 < xs->ndim ? xs->dim[a - 1] : 0;
        if (d == 0) FAIL(OSP_ENOTSUP, "copies an axis the input lacks");
        onnx_key(&k, "%s%lld", a > 1 ? "x" : "", (long long)d);
    }
    onnx_key(&k, "\n");
    return emit1(im, n, "reshape", x, k.text);
}

static int map_transpose(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_input(im, n, 0);
    if (x < 0) return x;
    const osp_shape *xs = shape_of(im, x);
    size_t np;
    const int64_t *perm = osp__onnx_attr_ints(n, "perm", &np);
    if (!perm || (int)np != xs->ndim + 1 || perm[0] != 0)
        FAIL(OSP_ENOTSUP, "a Transpose must keep the batch first and list every axis");
    int identity = 1;
    onnx_keys k = {.len = 0};
    onnx_key(&k, "perm = ");
    for (size_t a = 1; a < np; a++) {
        if (perm[a] < 1 || perm[a] > xs->ndim) FAIL(OSP_EFORMAT, "bad perm");
        identity &= perm[a] == (int64_t)a;
        onnx_key(&k, "%s%lld", a > 1 ? ", " : "", (long long)(perm[a] - 1));
    }
    onnx_key(&k, "\n");
    return identity ? osp__onnx_set_layer(im, n, x) : emit1(im, n, "transpose", x, k.text);
}

static int map_pad(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_input(im, n, 0);
    if (x < 0) return x;
    const osp_shape *xs = shape_of(im, x);
    if (xs->ndim != 3) FAIL(OSP_ENOTSUP, "padding of N x C x H x W data only");
    int64_t p[8];
    double pad_value;
    int rc = osp__onnx_pad_args(im, n, 4, p, &pad_value); /* the forms of opsets 7-18 */
    if (rc) return rc;
    int none = 1;
    for (int a = 0; a < 8; a++) {
        if (p[a] < 0 || p[a] > 1024) FAIL(OSP_ENOTSUP, "pad %lld (0 to 1024)", (long long)p[a]);
        none &= !p[a];
    }
    /* swin pads to whole windows: nothing when the map is whole already */
    if (none) return osp__onnx_set_layer(im, n, x);
    /* Axes 1 and 2 of N x H x W x C (swin's channels-last feature maps,
     * padded to whole windows): [pad] between two [transpose]s. */
    int last = !p[0] && !p[4] && !p[3] && !p[7] && (p[1] || p[5]);
    if (!last && (p[0] || p[1] || p[4] || p[5]))
        FAIL(OSP_ENOTSUP, "padding of the batch or channel axes");
    int at = last ? 1 : 2;
    char mode_buf[32];
    const char *mode = osp__onnx_attr_string(n, "mode", "constant", mode_buf, sizeof mode_buf);
    if (strcmp(mode, "constant") && strcmp(mode, "reflect") && strcmp(mode, "edge"))
        FAIL(OSP_ENOTSUP, "mode '%s'", mode);
    onnx_keys k = {.len = 0};
    onnx_key(&k, "pad = %lld, %lld, %lld, %lld\nmode = %s\n", (long long)p[at],
             (long long)p[at + 1], (long long)p[at + 4], (long long)p[at + 5], mode);
    if (pad_value != 0.0) {
        double v = pad_value;
        if (isinf(v)) onnx_key(&k, "value = %s\n", v < 0 ? "-inf" : "inf");
        else onnx_key(&k, "value = %.9g\n", v);
    }
    if (!last) return emit1(im, n, "pad", x, k.text);
    int chw = osp__onnx_emit(im, n, "_chw", "transpose", &x, 1, "perm = 2, 0, 1\n");
    if (chw < 0) return chw;
    int pad = osp__onnx_emit(im, n, "_pad", "pad", &chw, 1, k.text);
    if (pad < 0) return pad;
    return emit1(im, n, "transpose", pad, "perm = 1, 2, 0\n");
}

/* osprey's softmax runs over all of a sample's values: the ONNX one must
 * cover the same values. */
/* Softmax, or LogSoftmax onto [softmax] with log = 1. */
static int map_softmax(onnx_importer *im, const Osp__Onnx__NodeProto *n, int log) {
    int x = layer_input(im, n, 0);
    if (x < 0) return x;
    const osp_shape *xs = shape_of(im, x);
    int rank = xs->ndim + 1;
    int axis, coerced, rc = osp__onnx_softmax_axis(im, n, rank, &axis, &coerced);
    if (rc) return rc;
    int ok;
    if (coerced) ok = axis == 1; /* over the flattened axes from `axis` on */
    else {
        ok = axis >= 1 && axis < rank;
        for (int a = 1; ok && a < rank; a++) ok = a == axis || xs->dim[a - 1] == 1;
    }
    if (!ok) FAIL(OSP_ENOTSUP, "softmax over axis %d of a rank-%d tensor (osprey's covers all "
                  "of a sample's values)", axis, rank);
    return emit1(im, n, "softmax", x, log ? "log = 1\n" : "");
}

static int map_dropout(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int rc = only_first_output(im, n);
    if (rc) return rc;
    onnx_value *mode = osp__onnx_input(im, n, 2), *ratio = osp__onnx_input(im, n, 1);
    /* training mode with a ratio of 0 drops nothing (torchvision's swin
     * calls F.dropout(attn, p=0.0) without training=False) */
    int no_drop = ratio && ratio->kind == ONNX_VAL_CONST && ratio->c.numel == 1 &&
                  osp__onnx_const_get(&ratio->c, 0) == 0.0;
    if (mode && !no_drop &&
        !(mode->kind == ONNX_VAL_CONST && mode->c.numel == 1 && !osp__onnx_const_get(&mode->c, 0)))
        FAIL(OSP_ENOTSUP, "dropout in training mode");
    return alias(im, n);
}

int osp__onnx_map_node(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    const char *op = n->op_type;
    onnx_keys k = {.len = 0};
    int rc;
    if (osp__onnx_claimed(im, n)) return OSP_OK;
    int moved;
    if ((rc = osp__onnx_layout_map(im, n, &moved)) || moved) return rc;
    if (!strcmp(op, "Reshape") && (rc = osp__onnx_map_groupnorm_chain(im, n)))
        return rc < 0 ? rc : OSP_OK;
    if (!strcmp(op, "ConvTranspose")) return osp__onnx_map_conv_transpose(im, n);
    if (!strcmp(op, "InstanceNormalization")) return osp__onnx_map_instance_norm(im, n);
    if (!strcmp(op, "GroupNormalization")) return osp__onnx_map_group_norm(im, n);
    int handled;
    rc = osp__onnx_map_transformer(im, n, &handled);
    if (handled) return rc;
    if (!strcmp(op, "Conv")) return map_conv(im, n);
    if (!strcmp(op, "BatchNormalization")) return map_batchnorm(im, n);
    if (!strcmp(op, "Gemm")) return map_fc(im, n, 1);
    if (!strcmp(op, "MatMul")) return map_fc(im, n, 0);
    if (!strcmp(op, "MaxPool")) return map_pool(im, n, 1);
    if (!strcmp(op, "AveragePool")) return map_pool(im, n, 0);
    if (!strncmp(op, "Reduce", 6) && strcmp(op, "ReduceProd")) return osp__onnx_map_reduce(im, n);
    if (!strcmp(op, "Add")) return map_binary(im, n, "add");
    if (!strcmp(op, "Sub")) return map_binary(im, n, "sub");
    if (!strcmp(op, "Mul")) return map_binary(im, n, "mul");
    if (!strcmp(op, "Div")) return map_binary(im, n, "div");
    if (!strcmp(op, "Flatten")) return map_flatten(im, n);
    if (!strcmp(op, "Reshape")) return map_reshape(im, n);
    if (!strcmp(op, "Transpose")) return map_transpose(im, n);
    if (!strcmp(op, "Concat")) return osp__onnx_map_concat_nd(im, n);
    if (!strcmp(op, "Slice")) return osp__onnx_map_slice(im, n);
    if (!strcmp(op, "Split")) return osp__onnx_map_split(im, n);
    if (!strcmp(op, "Gather")) return osp__onnx_map_gather(im, n);
    if (!strcmp(op, "Expand")) return osp__onnx_map_expand(im, n);
    if (!strcmp(op, "Squeeze")) return osp__onnx_map_squeeze(im, n, 0);
    if (!strcmp(op, "Unsqueeze")) return osp__onnx_map_squeeze(im, n, 1);
    if (!strcmp(op, "Pad")) return map_pad(im, n);
    if (!strcmp(op, "Softmax")) return map_softmax(im, n, 0);
    if (!strcmp(op, "LogSoftmax")) return map_softmax(im, n, 1);
    if (!strcmp(op, "Dropout")) return map_dropout(im, n);
    if (!strcmp(op, "Identity")) return alias(im, n);
    /* Plain element-wise functions: the layer of the same name, lower case. */
    static const char *const unary[][2] = {
        {"Exp", "exp"},   {"Log", "log"},           {"Sqrt", "sqrt"},         {"Abs", "abs"},
        {"Neg", "neg"},   {"Reciprocal", "reciprocal"}, {"Softplus", "softplus"},
        {"Softsign", "softsign"}};
    for (size_t u = 0; u < sizeof unary / sizeof unary[0]; u++)
        if (!strcmp(op, unary[u][0])) {
            int x = layer_input(im, n, 0);
            return x < 0 ? x : emit1(im, n, unary[u][1], x, "");
        }
    if (!strcmp(op, "Resize") || !strcmp(op, "Upsample")) return osp__onnx_map_resize(im, n);
    /* One input, one layer. */
    int x = -1;
    if (!strcmp(op, "Relu") || !strcmp(op, "LeakyRelu") || !strcmp(op, "Sigmoid") ||
        !strcmp(op, "Tanh") || !strcmp(op, "HardSigmoid") || !strcmp(op, "HardSwish") ||
        !strcmp(op, "Clip") || !strcmp(op, "GlobalAveragePool")) {
        if ((x = layer_input(im, n, 0)) < 0) return x;
    }
    if (!strcmp(op, "Relu")) return emit1(im, n, "relu", x, "");
    if (!strcmp(op, "Sigmoid")) return emit1(im, n, "sigmoid", x, "");
    if (!strcmp(op, "Tanh")) return emit1(im, n, "tanh", x, "");
    if (!strcmp(op, "HardSwish")) return emit1(im, n, "hardswish", x, "");
    if (!strcmp(op, "Clip")) return map_clip(im, n, x);
    if (!strcmp(op, "LeakyRelu")) {
        onnx_key(&k, "alpha = %.9g\n", (double)osp__onnx_attr_float(n, "alpha", 0.01f));
        return emit1(im, n, "leakyrelu", x, k.text);
    }
    if (!strcmp(op, "HardSigmoid")) {
        onnx_key(&k, "alpha = %.9g\nbeta = %.9g\n", (double)osp__onnx_attr_float(n, "alpha", 0.2f),
            (double)osp__onnx_attr_float(n, "beta", 0.5f));
        return emit1(im, n, "hardsigmoid", x, k.text);
    }
    if (!strcmp(op, "GlobalAveragePool")) {
        if (shape_of(im, x)->ndim != 3) FAIL(OSP_ENOTSUP, "global pooling of N x C x H x W only");
        return emit1(im, n, "globalavgpool", x, "");
    }
    FAIL(OSP_ENOTSUP, "operator %s is not supported by osprey (docs/onnx.md lists those that are)",
         op);
}
