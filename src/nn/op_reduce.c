/* [reduce]: the mean, sum, maximum, minimum, L1 norm, L2 norm, sum of
 * squares, log of the sum or log-sum-exp of the per-sample tensor over
 * `axes` (default all; negative counts from the last), as ONNX's
 * ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceL1, ReduceL2,
 * ReduceSumSquare, ReduceLogSum and ReduceLogSumExp without the batch
 * axis. `keepdims = 1` (the default, as ONNX) leaves each reduced axis as
 * a 1; 0 drops it (a sample reduced to one value keeps a shape of 1). The
 * backward spreads the gradient back: evenly for the mean, as is for the
 * sum, for the maximum (minimum) shared evenly by the values equal to it
 * (as torch.amax), and by the derivative of the rest (sign x, x / norm,
 * 2x, 1 / sum, softmax); the L2 norm's gradient at a norm of 0 is 0, as
 * torch.linalg.vector_norm's. */
#include <math.h>
#include <string.h>

#include "osprey/nn.h"
#include "osprey/onnx.h"
#include "strided.h"

#define REDUCE_MAX_AXES (OSP_MAX_DIMS - 1) /* the batch takes one axis */

typedef enum reduce_kind {
    REDUCE_MEAN,
    REDUCE_SUM,
    REDUCE_MAX,
    REDUCE_MIN,
    REDUCE_L1,
    REDUCE_L2,
    REDUCE_SUMSQUARE,
    REDUCE_LOGSUM,
    REDUCE_LOGSUMEXP
} reduce_kind;

typedef struct reduce_attrs {
    reduce_kind kind;
    int keepdims;
    int n; /* 0: every axis */
    int axes[REDUCE_MAX_AXES];
    /* from setup: per input axis, the output offset one step along it moves
     * (0 on reduced axes), and how many values make one output */
    int64_t out_stride[OSP_MAX_DIMS];
    int64_t count;
} reduce_attrs;

static const char *const kind_names[] = {"mean", "sum",       "max",    "min",       "l1",
                                         "l2",   "sumsquare", "logsum", "logsumexp", NULL};
static const char *const onnx_names[] = {"ReduceMean",      "ReduceSum",    "ReduceMax",
                                         "ReduceMin",       "ReduceL1",     "ReduceL2",
                                         "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"};

static int reduce_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': reduce takes one input, not %d", n->name,
                         n->n_inputs);
    reduce_attrs *a = n->attrs;
    if (!a) return osp_error(OSP_EINVAL, "layer '%s': reduce has no attributes", n->name);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    unsigned reduced = a->n ? 0u : (1u << in->ndim) - 1;
    for (int i = 0; i < a->n; i++) {
        int axis = a->axes[i] < 0 ? a->axes[i] + in->ndim : a->axes[i];
        if (axis < 0 || axis >= in->ndim || (reduced & (1u << axis))) {
            char s[64];
            osp_shape_format(in, s, sizeof s);
            return osp_error(OSP_ESHAPE, "layer '%s': axis %d %s in the input (%s)", n->name,
                             a->axes[i], axis >= 0 && axis < in->ndim ? "is named twice"
                                                                      : "does not exist", s);
        }
        reduced |= 1u << axis;
    }
    osp_shape kept = *in, out = {.ndim = 0};
    a->count = 1;
    for (int d = 0; d < in->ndim; d++) {
        if (reduced & (1u << d)) {
            a->count *= in->dim[d];
            kept.dim[d] = 1;
            if (!a->keepdims) continue;
        }
        out.dim[out.ndim++] = kept.dim[d];
    }
    if (out.ndim == 0) out = osp_shape_make(1, (const int64_t[]){1});
    osp__row_strides(&kept, a->out_stride);
    for (int d = 0; d < in->ndim; d++)
        if (reduced & (1u << d)) a->out_stride[d] = 0;
    n->shape = out;
    return OSP_OK;
}

static void reduce_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const osp_node *in = osp_node_input(g, n, 0);
    const reduce_attrs *a = n->attrs;
    const osp_shape *s = &in->shape;
    for (int b = 0; b < ex->batch; b++) {
        const float *xs = in->out + (int64_t)b * in->size;
        float *ys = n->out + (int64_t)b * n->size;
        /* summed in the walk's order: one result whatever the threads */
        switch (a->kind) {
        case REDUCE_MAX:
            for (int64_t j = 0; j < n->size; j++) ys[j] = -INFINITY;
            OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0, ys[x] = xs[o] > ys[x] ? xs[o] : ys[x]);
            break;
        case REDUCE_MIN:
            for (int64_t j = 0; j < n->size; j++) ys[j] = INFINITY;
            OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0, ys[x] = xs[o] < ys[x] ? xs[o] : ys[x]);
            break;
        case REDUCE_LOGSUMEXP: {
            /* the maximum first, so that exp never overflows */
            float *m = ex->workspace;
            for (int64_t j = 0; j < n->size; j++) m[j] = -INFINITY;
            OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0, m[x] = xs[o] > m[x] ? xs[o] : m[x]);
            memset(ys, 0, (size_t)n->size * sizeof(float));
            OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0,
                            ys[x] += isinf(m[x]) ? 0.0f : expf(xs[o] - m[x]));
            for (int64_t j = 0; j < n->size; j++) ys[j] = isinf(m[j]) ? m[j] : m[j] + logf(ys[j]);
            break;
        }
        default:
            memset(ys, 0, (size_t)n->size * sizeof(float));
            if (a->kind == REDUCE_L1)
                OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0, ys[x] += fabsf(xs[o]));
            else if (a->kind == REDUCE_L2 || a->kind == REDUCE_SUMSQUARE)
                OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0, ys[x] += xs[o] * xs[o]);
            else OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0, ys[x] += xs[o]);
            for (int64_t j = 0; j < n->size; j++)
                ys[j] = a->kind == REDUCE_MEAN     ? ys[j] / (float)a->count
                        : a->kind == REDUCE_L2     ? sqrtf(ys[j])
                        : a->kind == REDUCE_LOGSUM ? logf(ys[j])
                                                   : ys[j];
            break;
        }
    }
}

static size_t reduce_workspace(const osp_graph *g, const osp_node *n, int batch) {
    (void)g;
    (void)batch; /* one sample at a time */
    const reduce_attrs *a = n->attrs;
    int scratch = a && (a->kind == REDUCE_MAX || a->kind == REDUCE_MIN ||
                        a->kind == REDUCE_LOGSUMEXP);
    return scratch ? (size_t)n->size * sizeof(float) : 0;
}

static void reduce_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_node *in = osp_node_input(g, n, 0);
    if (!in->dout) return;
    const reduce_attrs *a = n->attrs;
    const osp_shape *s = &in->shape;
    for (int b = 0; b < ex->batch; b++) {
        float *dxs = in->dout + (int64_t)b * in->size;
        const float *dys = n->dout + (int64_t)b * n->size;
        const float *xs = in->out + (int64_t)b * in->size, *ys = n->out + (int64_t)b * n->size;
        switch (a->kind) {
        case REDUCE_MAX:
        case REDUCE_MIN: {
            float *ties = ex->workspace;
            memset(ties, 0, (size_t)n->size * sizeof(float));
            OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0, ties[x] += xs[o] == ys[x]);
            OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0,
                            if (xs[o] == ys[x]) dxs[o] += dys[x] / ties[x]);
            break;
        }
        case REDUCE_L1:
            OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0,
                            dxs[o] += xs[o] > 0.0f ? dys[x] : xs[o] < 0.0f ? -dys[x] : 0.0f);
            break;
        case REDUCE_L2:
            OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0,
                            if (ys[x] > 0.0f) dxs[o] += dys[x] * xs[o] / ys[x]);
            break;
        case REDUCE_SUMSQUARE:
            OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0, dxs[o] += dys[x] * 2.0f * xs[o]);
            break;
        case REDUCE_LOGSUM:
            OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0, dxs[o] += dys[x] * expf(-ys[x]));
            break;
        case REDUCE_LOGSUMEXP:
            OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0,
                            dxs[o] += dys[x] * expf(xs[o] - ys[x]));
            break;
        default: {
            const float scale = a->kind == REDUCE_MEAN ? 1.0f / (float)a->count : 1.0f;
            OSP_STRIDED_FOR(s->ndim, s->dim, a->out_stride, 0, dxs[o] += dys[x] * scale);
            break;
        }
        }
    }
}

/* ONNX: the Reduce operator with axes + 1 (all of a sample's when none
 * are named) as an attribute: the form all but ReduceSum take at the
 * exported opset 13; ReduceSum takes them as an input there. */
static int reduce_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                       char *const *in, char *out) {
    const reduce_attrs *a = n->attrs;
    if (!a) return osp_error(OSP_EINVAL, "layer '%s' ([reduce]) has no attributes", n->name);
    int rank = osp_graph_node_const(g, n->inputs[0])->shape.ndim;
    int64_t axes[REDUCE_MAX_AXES];
    int count = a->n ? a->n : rank;
    for (int i = 0; i < count; i++)
        axes[i] = (a->n ? (a->axes[i] < 0 ? a->axes[i] + rank : a->axes[i]) : i) + 1;
    /* a sample reduced to nothing is [batch] in ONNX, [batch, 1] here */
    int squeezed_all = !a->keepdims && count == rank;
    char *reduced = squeezed_all ? w->name(w, "%s/reduced", n->name) : out;
    osp_onnx_node *node;
    if (a->kind == REDUCE_SUM) {
        char *args[2] = {in[0], w->init_ints(w, w->name(w, "%s/axes", n->name), axes, count)};
        node = w->node(w, onnx_names[a->kind], n->name, 2, args, reduced);
    } else {
        node = w->node(w, onnx_names[a->kind], n->name, 1, in, reduced);
        w->attr_ints(w, node, "axes", axes, count);
    }
    w->attr_int(w, node, "keepdims", squeezed_all ? 1 : a->keepdims);
    if (squeezed_all) {
        char *args[2] = {reduced, w->init_shape(w, w->name(w, "%s/shape", n->name), &n->shape)};
        w->node(w, "Reshape", w->name(w, "%s/flat", n->name), 2, args, out);
    }
    return OSP_OK;
}

static const osp_op reduce_op = {
    .name = "reduce",
    .setup = reduce_setup,
    .workspace_bytes = reduce_workspace,
    .forward = reduce_forward,
    .backward = reduce_backward,
    .onnx_export = reduce_onnx,
};

static int reduce_parse(osp_spec_section *s, void **attrs) {
    int kind, keepdims, axes[REDUCE_MAX_AXES], n, rc;
    if (!osp_spec_str(s, "op", NULL))
        return osp_spec_error(s, NULL, "'op' (mean, sum, max, min, l1, l2, sumsquare, logsum "
                              "or logsumexp) is required");
    if ((rc = osp_spec_choice(s, "op", kind_names, 0, &kind)) ||
        (rc = osp_spec_int(s, "keepdims", 1, 0, 1, &keepdims)) ||
        (rc = osp_spec_ints(s, "axes", axes, REDUCE_MAX_AXES, &n, -REDUCE_MAX_AXES,
                            REDUCE_MAX_AXES - 1)))
        return rc;
    reduce_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->kind = (reduce_kind)kind;
    a->keepdims = keepdims;
    a->n = n;
    memcpy(a->axes, axes, (size_t)n * sizeof *axes);
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_reduce = {&reduce_op, reduce_parse};
