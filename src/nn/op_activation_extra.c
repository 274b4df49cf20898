/* Element-wise layers the backend table has no slot for: [hardsigmoid],
 * [hardswish] and [clip] (the shapes of MobileNetV3 and of ONNX's Clip).
 * Any input shape; the output has the same shape. The layer computes them
 * itself, one pass over the values, split across threads for large inputs;
 * each value is independent, so the result does not depend on the thread
 * count.
 *
 * The comparisons are written so that a NaN input gives a NaN output, as in
 * PyTorch; the gradients at the kinks are PyTorch's. */
#include <math.h>
#include <string.h>

#include "attrs.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

/* Below this many values a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 15)

typedef enum extra_kind { EXTRA_HARDSIGMOID, EXTRA_HARDSWISH, EXTRA_CLIP } extra_kind;

typedef struct extra_op {
    osp_op op; /* first: a node's op pointer is also its extra_op's */
    extra_kind kind;
} extra_op;

/* PyTorch's nn.Hardsigmoid and an unbounded clip, for nodes built without a
 * spec section. */
static const extra_attrs extra_defaults = {1.0f / 6.0f, 0.5f, -INFINITY, INFINITY};

static extra_kind kind_of(const osp_node *n) {
    return ((const extra_op *)(const void *)n->op)->kind;
}

static int extra_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': %s takes one input, not %d", n->name,
                         n->op->name, n->n_inputs);
    n->shape = osp_node_input(g, n, 0)->shape;
    return OSP_OK;
}

static void extra_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const extra_attrs *a = n->attrs ? n->attrs : &extra_defaults;
    const float *x = osp_node_input(g, n, 0)->out;
    float *y = n->out;
    const int64_t count = (int64_t)ex->batch * n->size;
    const float alpha = a->alpha, beta = a->beta, lo = a->lo, hi = a->hi;
    switch (kind_of(n)) {
    case EXTRA_HARDSIGMOID:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) {
            float v = alpha * x[i] + beta;
            y[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
        }
        break;
    case EXTRA_HARDSWISH:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) {
            float v = x[i] + 3.0f;
            v = v < 0.0f ? 0.0f : v > 6.0f ? 6.0f : v;
            y[i] = x[i] * v / 6.0f;
        }
        break;
    case EXTRA_CLIP:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) y[i] = x[i] < lo ? lo : x[i] > hi ? hi : x[i];
        break;
    }
}

/* hardsigmoid: alpha where 0 < alpha * x + beta < 1, else 0 (PyTorch's
 * -3 < x < 3 at the defaults). hardswish: 0 for x < -3, (2x + 3) / 6 for
 * -3 <= x <= 3, 1 above (PyTorch's hardswish_backward). clip: 1 where
 * lo <= x <= hi, else 0 (torch.clamp's). */
static void extra_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_node *in = osp_node_input(g, n, 0);
    if (!in->dout) return;
    const extra_attrs *a = n->attrs ? n->attrs : &extra_defaults;
    const float *x = in->out, *dy = n->dout;
    float *dx = in->dout;
    const int64_t count = (int64_t)ex->batch * n->size;
    const float alpha = a->alpha, beta = a->beta, lo = a->lo, hi = a->hi;
    switch (kind_of(n)) {
    case EXTRA_HARDSIGMOID:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) {
            float v = alpha * x[i] + beta;
            dx[i] += v > 0.0f && v < 1.0f ? alpha * dy[i] : 0.0f;
        }
        break;
    case EXTRA_HARDSWISH:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) {
            float d = x[i] < -3.0f ? 0.0f : x[i] <= 3.0f ? x[i] / 3.0f + 0.5f : 1.0f;
            dx[i] += d * dy[i];
        }
        break;
    case EXTRA_CLIP:
#pragma omp parallel for schedule(static) if (count >= PARALLEL_MIN)
        for (int64_t i = 0; i < count; i++) dx[i] += x[i] >= lo && x[i] <= hi ? dy[i] : 0.0f;
        break;
    }
}

/* ONNX: HardSigmoid; [hardswish] (opset 14's HardSwish) as x times
 * HardSigmoid(x) with alpha 1/6 and beta 1/2; Clip, an infinite bound
 * being an input left out. */
static int extra_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n, char *const *in,
                      char *out) {
    const extra_attrs *a = n->attrs ? n->attrs : &extra_defaults;
    switch (kind_of(n)) {
    case EXTRA_HARDSIGMOID: {
        osp_onnx_node *h = w->node(w, "HardSigmoid", n->name, 1, in, out);
        w->attr_float(w, h, "alpha", a->alpha);
        w->attr_float(w, h, "beta", a->beta);
        break;
    }
    case EXTRA_HARDSWISH: {
        char *hs = w->name(w, "%s/hardsigmoid", n->name);
        osp_onnx_node *h = w->node(w, "HardSigmoid", hs, 1, in, hs);
        w->attr_float(w, h, "alpha", 1.0f / 6.0f);
        w->attr_float(w, h, "beta", 0.5f);
        char *args[2] = {in[0], hs};
        w->node(w, "Mul", n->name, 2, args, out);
        break;
    }
    case EXTRA_CLIP: {
        char *args[3] = {in[0], "", ""};
        int n_args = 1;
        if (!isinf(a->lo))
            args[n_args = 1] = w->init_scalar(w, w->name(w, "%s/min", n->name), a->lo);
        if (!isinf(a->hi))
            args[n_args = 2] = w->init_scalar(w, w->name(w, "%s/max", n->name), a->hi);
        w->node(w, "Clip", n->name, n_args + 1, args, out);
        break;
    }
    }
    return OSP_OK;
}

#define EXTRA_OP(var, spec_name, k)                                                         \
    static const extra_op var = {                                                          \
        .op = {.name = spec_name, .setup = extra_setup, .forward = extra_forward,           \
               .backward = extra_backward, .onnx_export = extra_onnx},                      \
        .kind = k,                                                                          \
    }

EXTRA_OP(hardsigmoid_op, "hardsigmoid", EXTRA_HARDSIGMOID);
EXTRA_OP(hardswish_op, "hardswish", EXTRA_HARDSWISH);
EXTRA_OP(clip_op, "clip", EXTRA_CLIP);

static int keep_attrs(const extra_attrs *a, void **attrs) {
    extra_attrs *copy = osp_calloc(1, sizeof *copy);
    if (!copy) return OSP_ENOMEM;
    *copy = *a;
    *attrs = copy;
    return OSP_OK;
}

static int parse_hardsigmoid(osp_spec_section *s, void **attrs) {
    extra_attrs a = extra_defaults;
    int rc;
    if ((rc = osp_spec_float(s, "alpha", extra_defaults.alpha, -1e6f, 1e6f, &a.alpha)) ||
        (rc = osp_spec_float(s, "beta", extra_defaults.beta, -1e6f, 1e6f, &a.beta)))
        return rc;
    return keep_attrs(&a, attrs);
}

static int parse_clip(osp_spec_section *s, void **attrs) {
    extra_attrs a = extra_defaults;
    int rc;
    if ((rc = osp_spec_float_inf(s, "min", -INFINITY, &a.lo)) ||
        (rc = osp_spec_float_inf(s, "max", INFINITY, &a.hi)))
        return rc;
    if (a.lo > a.hi)
        return osp_spec_error(s, "max", "'min' (%g) is larger than 'max' (%g)", a.lo, a.hi);
    return keep_attrs(&a, attrs);
}

static int parse_plain(osp_spec_section *s, void **attrs) {
    (void)s;
    *attrs = NULL;
    return OSP_OK;
}

const osp_layer_type osp__layer_hardsigmoid = {&hardsigmoid_op.op, parse_hardsigmoid};
const osp_layer_type osp__layer_hardswish = {&hardswish_op.op, parse_plain};
const osp_layer_type osp__layer_clip = {&clip_op.op, parse_clip};
