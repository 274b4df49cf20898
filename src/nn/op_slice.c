/* [slice]: a strided window of the per-sample tensor, as ONNX's Slice
 * without the batch axis. `axes` (default 0, 1, ... one per start), and
 * per axis `starts`, `ends` and `steps` (default 1): indices from the
 * front, or from the back when negative, clamped to the axis as ONNX
 * clamps them (a step below 0 walks backwards, `ends = -1000000` reaching
 * the front). `starts = 1\nends = 3\naxes = 0` is x[:, 1:3]. The window
 * must not be empty. The backward adds each output gradient back where
 * its value came from. */
#include <string.h>

#include "osprey/nn.h"
#include "osprey/onnx.h"
#include "strided.h"

#define SLICE_MAX_AXES (OSP_MAX_DIMS - 1) /* the batch takes one axis */
#define SLICE_BOUND (1 << 30)             /* |index| beyond any axis: clamped */

typedef struct slice_attrs {
    int n;
    int axes[SLICE_MAX_AXES], starts[SLICE_MAX_AXES], ends[SLICE_MAX_AXES],
        steps[SLICE_MAX_AXES];
    /* from setup: where each output axis starts in the input, and the input
     * offset one step along it moves */
    int64_t base;
    int64_t stride[OSP_MAX_DIMS];
} slice_attrs;

/* ONNX's rule for one axis of size dim: the first index and the count. */
static int64_t slice_axis(int64_t dim, int64_t start, int64_t end, int64_t step, int64_t *first) {
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    if (step > 0) {
        start = start < 0 ? 0 : start > dim ? dim : start;
        end = end < 0 ? 0 : end > dim ? dim : end;
        *first = start;
        return end > start ? (end - start + step - 1) / step : 0;
    }
    start = start < 0 ? 0 : start > dim - 1 ? dim - 1 : start;
    end = end < -1 ? -1 : end > dim - 1 ? dim - 1 : end;
    *first = start;
    return start > end ? (start - end - step - 1) / -step : 0;
}

static int slice_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': slice takes one input, not %d", n->name,
                         n->n_inputs);
    slice_attrs *a = n->attrs;
    if (!a) return osp_error(OSP_EINVAL, "layer '%s': slice has no starts and ends", n->name);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    char s[64];
    osp_shape_format(in, s, sizeof s);
    int64_t first[OSP_MAX_DIMS] = {0}, step[OSP_MAX_DIMS], in_stride[OSP_MAX_DIMS];
    osp_shape out = *in;
    unsigned seen = 0;
    for (int d = 0; d < in->ndim; d++) step[d] = 1;
    for (int i = 0; i < a->n; i++) {
        int axis = a->axes[i] < 0 ? a->axes[i] + in->ndim : a->axes[i];
        if (axis < 0 || axis >= in->ndim)
            return osp_error(OSP_ESHAPE, "layer '%s': axis %d does not exist in the input (%s)",
                             n->name, a->axes[i], s);
        if (seen & (1u << axis))
            return osp_error(OSP_ESHAPE, "layer '%s': axis %d is sliced twice", n->name, axis);
        seen |= 1u << axis;
        step[axis] = a->steps[i];
        out.dim[axis] = slice_axis(in->dim[axis], a->starts[i], a->ends[i], a->steps[i], &first[axis]);
        if (out.dim[axis] < 1)
            return osp_error(OSP_ESHAPE, "layer '%s': slice %d:%d:%d of axis %d (size %lld) of "
                             "the input (%s) is empty", n->name, a->starts[i], a->ends[i],
                             a->steps[i], axis, (long long)in->dim[axis], s);
    }
    osp__row_strides(in, in_stride);
    a->base = 0;
    for (int d = 0; d < in->ndim; d++) {
        a->base += first[d] * in_stride[d];
        a->stride[d] = step[d] * in_stride[d];
    }
    n->shape = out;
    return OSP_OK;
}

static void slice_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const osp_node *in = osp_node_input(g, n, 0);
    const slice_attrs *a = n->attrs;
    for (int b = 0; b < ex->batch; b++) {
        const float *xs = in->out + (int64_t)b * in->size;
        float *ys = n->out + (int64_t)b * n->size;
        OSP_STRIDED_FOR(n->shape.ndim, n->shape.dim, a->stride, a->base, ys[o] = xs[x]);
    }
}

static void slice_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_node *in = osp_node_input(g, n, 0);
    if (!in->dout) return;
    const slice_attrs *a = n->attrs;
    for (int b = 0; b < ex->batch; b++) {
        float *dxs = in->dout + (int64_t)b * in->size;
        const float *dys = n->dout + (int64_t)b * n->size;
        OSP_STRIDED_FOR(n->shape.ndim, n->shape.dim, a->stride, a->base, dxs[x] += dys[o]);
    }
}

/* ONNX: Slice with constant starts, ends, axes (+ 1: the batch first) and
 * steps, exactly as written: ONNX resolves them as the layer does. */
static int slice_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                      char *const *in, char *out) {
    (void)g;
    const slice_attrs *a = n->attrs;
    if (!a) return osp_error(OSP_EINVAL, "layer '%s' ([slice]) has no attributes", n->name);
    int64_t v[4][SLICE_MAX_AXES];
    for (int i = 0; i < a->n; i++) {
        v[0][i] = a->starts[i];
        v[1][i] = a->ends[i];
        v[2][i] = (a->axes[i] < 0 ? a->axes[i] + n->shape.ndim : a->axes[i]) + 1;
        v[3][i] = a->steps[i];
    }
    static const char *const what[4] = {"starts", "ends", "axes", "steps"};
    char *args[5] = {in[0]};
    for (int k = 0; k < 4; k++)
        args[k + 1] = w->init_ints(w, w->name(w, "%s/%s", n->name, what[k]), v[k], a->n);
    w->node(w, "Slice", n->name, 5, args, out);
    return OSP_OK;
}

static const osp_op slice_op = {
    .name = "slice",
    .setup = slice_setup,
    .forward = slice_forward,
    .backward = slice_backward,
    .onnx_export = slice_onnx,
};

static int slice_parse(osp_spec_section *s, void **attrs) {
    int starts[SLICE_MAX_AXES], ends[SLICE_MAX_AXES], axes[SLICE_MAX_AXES], steps[SLICE_MAX_AXES];
    int ns, ne, na, nt, rc;
    if ((rc = osp_spec_ints(s, "starts", starts, SLICE_MAX_AXES, &ns, -SLICE_BOUND, SLICE_BOUND)) ||
        (rc = osp_spec_ints(s, "ends", ends, SLICE_MAX_AXES, &ne, -SLICE_BOUND, SLICE_BOUND)) ||
        (rc = osp_spec_ints(s, "axes", axes, SLICE_MAX_AXES, &na, -SLICE_MAX_AXES,
                            SLICE_MAX_AXES - 1)) ||
        (rc = osp_spec_ints(s, "steps", steps, SLICE_MAX_AXES, &nt, -SLICE_BOUND, SLICE_BOUND)))
        return rc;
    if (ns == 0 || ne != ns)
        return osp_spec_error(s, NULL, "'starts' and 'ends' (one each per sliced axis, e.g. "
                              "starts = 1, ends = 3) are required");
    if (na && na != ns) return osp_spec_error(s, "axes", "'axes' needs %d values, not %d", ns, na);
    if (nt && nt != ns) return osp_spec_error(s, "steps", "'steps' needs %d values, not %d", ns, nt);
    slice_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->n = ns;
    for (int i = 0; i < ns; i++) {
        a->starts[i] = starts[i];
        a->ends[i] = ends[i];
        a->axes[i] = na ? axes[i] : i;
        a->steps[i] = nt ? steps[i] : 1;
        if (a->steps[i] == 0) {
            osp_free(a);
            return osp_spec_error(s, "steps", "'steps' must not be 0");
        }
    }
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_slice = {&slice_op, slice_parse};
