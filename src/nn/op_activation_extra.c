/* Piecewise-linear element-wise layers: [hardsigmoid], [hardswish] and
 * [clip] (the shapes of MobileNetV3 and of ONNX's Clip), computed by the
 * backend's piecewise slots (osp_piecewise). Any input shape; the output
 * has the same shape. */
#include <math.h>

#include "attrs.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

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

/* The backend's function for n and its {alpha, beta, lo, hi}. */
static osp_piecewise piecewise_of(const osp_node *n, float *params) {
    const extra_attrs *a = n->attrs ? n->attrs : &extra_defaults;
    params[0] = a->alpha, params[1] = a->beta, params[2] = a->lo, params[3] = a->hi;
    switch (kind_of(n)) {
    case EXTRA_HARDSIGMOID: return OSP_PW_HARDSIGMOID;
    case EXTRA_HARDSWISH: return OSP_PW_HARDSWISH;
    case EXTRA_CLIP: break;
    }
    return OSP_PW_CLIP;
}

static void extra_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    float params[4];
    const osp_piecewise fn = piecewise_of(n, params);
    ex->be->piecewise_forward(fn, params, (int64_t)ex->batch * n->size,
                              osp_node_input(g, n, 0)->out, n->out);
}

static void extra_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_node *in = osp_node_input(g, n, 0);
    if (!in->dout) return;
    float params[4];
    const osp_piecewise fn = piecewise_of(n, params);
    ex->be->piecewise_backward(fn, params, (int64_t)ex->batch * n->size, in->out, n->dout,
                               in->dout);
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
