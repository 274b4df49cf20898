/* [pad]: spatial padding of a C x H x W input by top, left, bottom, right
 * rows and columns: filled with a constant (`value`, which may be -inf so
 * that a max pool after it ignores the padding), mirrored without repeating
 * the edge (`reflect`, as PyTorch's and ONNX's) or repeating the edge
 * (`edge`, PyTorch's `replicate`). The backward sends each output's gradient
 * to the input value it was copied from; one channel plane per thread, so
 * the result does not depend on the thread count. */
#include <math.h>
#include <string.h>

#include "attrs.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

#define PARALLEL_MIN (1 << 15)
#define PAD_MAX 1024

static const char *const mode_names[] = {"constant", "reflect", "edge", NULL};

static int pad_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': pad takes one input, not %d", n->name, n->n_inputs);
    const pad_attrs *a = n->attrs;
    if (!a) return osp_error(OSP_EINVAL, "layer '%s': pad has no sizes", n->name);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    char s[64];
    osp_shape_format(in, s, sizeof s);
    if (in->ndim != 3)
        return osp_error(OSP_ESHAPE, "layer '%s': pad needs a C x H x W input, not %s", n->name, s);
    const int64_t h = in->dim[1], w = in->dim[2];
    if (a->mode == PAD_REFLECT &&
        (a->top >= h || a->bottom >= h || a->left >= w || a->right >= w))
        return osp_error(OSP_ESHAPE, "layer '%s': reflect padding (%d, %d, %d, %d: top, left, "
                         "bottom, right) must be smaller than the input's height and width (%s)",
                         n->name, a->top, a->left, a->bottom, a->right, s);
    n->shape = osp_shape_make(3, (int64_t[]){in->dim[0], h + a->top + a->bottom,
                                             w + a->left + a->right});
    return OSP_OK;
}

/* The input index that output index i (already shifted by the leading pad)
 * copies, or -1 for the constant fill. n >= 1; reflect has pads < n. */
static inline int64_t source(int64_t i, int64_t n, pad_mode mode) {
    if (i >= 0 && i < n) return i;
    switch (mode) {
    case PAD_REFLECT: return i < 0 ? -i : 2 * (n - 1) - i;
    case PAD_EDGE: return i < 0 ? 0 : n - 1;
    default: return -1;
    }
}

static void pad_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const pad_attrs *a = n->attrs;
    const osp_node *in = osp_node_input(g, n, 0);
    const int64_t h = in->shape.dim[1], w = in->shape.dim[2];
    const int64_t oh = n->shape.dim[1], ow = n->shape.dim[2];
    const int64_t planes = (int64_t)ex->batch * n->shape.dim[0];
    const pad_mode mode = a->mode;
    const float value = a->value;
    const int top = a->top, left = a->left;
#pragma omp parallel for schedule(static) if (planes * oh * ow >= PARALLEL_MIN)
    for (int64_t p = 0; p < planes; p++) {
        const float *x = in->out + p * h * w;
        float *y = n->out + p * oh * ow;
        for (int64_t i = 0; i < oh; i++) {
            float *row = y + i * ow;
            int64_t si = source(i - top, h, mode);
            if (si < 0) {
                for (int64_t j = 0; j < ow; j++) row[j] = value;
                continue;
            }
            const float *src = x + si * w;
            for (int64_t j = 0; j < left; j++) {
                int64_t sj = source(j - left, w, mode);
                row[j] = sj < 0 ? value : src[sj];
            }
            memcpy(row + left, src, (size_t)w * sizeof(float));
            for (int64_t j = left + w; j < ow; j++) {
                int64_t sj = source(j - left, w, mode);
                row[j] = sj < 0 ? value : src[sj];
            }
        }
    }
}

static void pad_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const pad_attrs *a = n->attrs;
    osp_node *in = osp_node_input(g, n, 0);
    if (!in->dout) return;
    const int64_t h = in->shape.dim[1], w = in->shape.dim[2];
    const int64_t oh = n->shape.dim[1], ow = n->shape.dim[2];
    const int64_t planes = (int64_t)ex->batch * n->shape.dim[0];
    const pad_mode mode = a->mode;
    const int top = a->top, left = a->left;
#pragma omp parallel for schedule(static) if (planes * oh * ow >= PARALLEL_MIN)
    for (int64_t p = 0; p < planes; p++) {
        float *dx = in->dout + p * h * w;
        const float *dy = n->dout + p * oh * ow;
        for (int64_t i = 0; i < oh; i++) {
            int64_t si = source(i - top, h, mode);
            if (si < 0) continue;
            float *drow = dx + si * w;
            const float *g_row = dy + i * ow;
            for (int64_t j = 0; j < ow; j++) {
                int64_t sj = source(j - left, w, mode);
                if (sj >= 0) drow[sj] += g_row[j];
            }
        }
    }
}

/* ONNX: Pad, its pads [N, C, H, W] begins then ends. */
static int pad_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n, char *const *in,
                    char *out) {
    int rc = osp__export_needs_attrs(n);
    if (rc) return rc;
    const pad_attrs *a = n->attrs;
    int64_t pads[8] = {0, 0, a->top, a->left, 0, 0, a->bottom, a->right};
    char *args[3] = {in[0], w->init_ints(w, w->name(w, "%s/pads", n->name), pads, 8), NULL};
    int n_args = 2;
    if (a->mode == PAD_CONSTANT)
        args[n_args++] = w->init_scalar(w, w->name(w, "%s/value", n->name), a->value);
    osp_onnx_node *p = w->node(w, "Pad", n->name, n_args, args, out);
    w->attr_string(w, p, "mode", a->mode == PAD_REFLECT ? "reflect"
                                 : a->mode == PAD_EDGE  ? "edge"
                                                        : "constant");
    return OSP_OK;
}

static const osp_op pad_op = {
    .name = "pad",
    .setup = pad_setup,
    .forward = pad_forward,
    .backward = pad_backward,
    .onnx_export = pad_onnx,
};

static int pad_parse(osp_spec_section *s, void **attrs) {
    int v[4], n, mode, rc;
    if ((rc = osp_spec_ints(s, "pad", v, 4, &n, 0, PAD_MAX))) return rc;
    if (n == 0)
        return osp_spec_error(s, NULL, "'pad' (top, left, bottom, right; or ph x pw; or p) is required");
    if (n == 3)
        return osp_spec_error(s, "pad", "'pad' needs 1, 2 or 4 values (top, left, bottom, right), not 3");
    if ((rc = osp_spec_choice(s, "mode", mode_names, PAD_CONSTANT, &mode))) return rc;
    float value = 0.0f;
    if (mode != PAD_CONSTANT && osp_spec_str(s, "value", NULL))
        return osp_spec_error(s, "value", "'value' is only for mode = constant");
    if ((rc = osp_spec_float_inf(s, "value", 0.0f, &value))) return rc;
    pad_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    if (n == 1) a->top = a->left = a->bottom = a->right = v[0];
    else if (n == 2) a->top = a->bottom = v[0], a->left = a->right = v[1];
    else a->top = v[0], a->left = v[1], a->bottom = v[2], a->right = v[3];
    a->mode = (pad_mode)mode;
    a->value = value;
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_pad = {&pad_op, pad_parse};
