/* [gelu] and [erf], the element-wise functions of transformers, and [exp],
 * [log], [sqrt], [abs], [neg], [reciprocal], [softplus], [softsign], the
 * plain ones ONNX models apply: all through the backend's special_* slots. [gelu] is x * Phi(x), computed through erf as
 * nn.GELU() (approximate = none), or PyTorch's tanh approximation
 * (approximate = tanh, nn.GELU(approximate='tanh')). [erf] is torch.erf, for
 * an ONNX Erf that is not part of a GELU. Any input shape; the output has
 * the same shape. */
#include <string.h>

#include "op_fuse.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

typedef struct special_op {
    osp_op op; /* first: a node's op pointer is also its special_op's */
    osp_special fn;
} special_op;

typedef struct gelu_attrs {
    int tanh_approx;
} gelu_attrs;

/* [gelu] with attrs (possibly NULL: exact), or [erf]. */
static osp_special fn_of(const osp_node *n) {
    osp_special fn = ((const special_op *)(const void *)n->op)->fn;
    const gelu_attrs *a = n->attrs;
    return fn == OSP_FN_GELU && a && a->tanh_approx ? OSP_FN_GELU_TANH : fn;
}

static int special_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': %s takes one input, not %d", n->name,
                         n->op->name, n->n_inputs);
    n->shape = osp_node_input(g, n, 0)->shape;
    return OSP_OK;
}

static void special_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    ex->be->special_forward(fn_of(n), (int64_t)ex->batch * n->size, osp_node_input(g, n, 0)->out,
                            n->out);
}

static void special_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_node *in = osp_node_input(g, n, 0);
    if (in->dout)
        ex->be->special_backward(fn_of(n), (int64_t)ex->batch * n->size, in->out, n->dout,
                                 in->dout);
}

/* The ONNX operator of each function that has one of its own. */
static const char *const onnx_name[] = {
    [OSP_FN_ERF] = "Erf",   [OSP_FN_EXP] = "Exp",
    [OSP_FN_LOG] = "Log",   [OSP_FN_SQRT] = "Sqrt",
    [OSP_FN_ABS] = "Abs",   [OSP_FN_NEG] = "Neg",
    [OSP_FN_RECIPROCAL] = "Reciprocal", [OSP_FN_SOFTPLUS] = "Softplus",
    [OSP_FN_SOFTSIGN] = "Softsign",
};

/* ONNX (opset 13 has no Gelu): exact GELU as torch writes it,
 * x * 0.5 * (1 + Erf(x / sqrt 2)) (which the importer reads back as one
 * [gelu]); the tanh form as 0.5 x (1 + Tanh(sqrt(2/pi) (x + 0.044715 x^3)));
 * [erf] as Erf. */
static int special_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                        char *const *in, char *out) {
    (void)g;
    osp_special fn = fn_of(n);
    if (fn == OSP_FN_ERF || fn >= OSP_FN_EXP) {
        w->node(w, onnx_name[fn], n->name, 1, in, out);
        return OSP_OK;
    }
    char *half = w->init_scalar(w, w->name(w, "%s/half", n->name), 0.5f);
    char *one = w->init_scalar(w, w->name(w, "%s/one", n->name), 1.0f);
    char *inner;
    if (fn == OSP_FN_GELU) {
        char *a[2] = {in[0], w->init_scalar(w, w->name(w, "%s/sqrt2", n->name), 1.41421356f)};
        char *div = w->name(w, "%s/div", n->name);
        w->node(w, "Div", n->name, 2, a, div);
        inner = w->name(w, "%s/erf", n->name);
        w->node(w, "Erf", inner, 1, &div, inner);
    } else {
        char *sq = w->name(w, "%s/sq", n->name), *cube = w->name(w, "%s/cube", n->name);
        char *a[2] = {in[0], in[0]};
        w->node(w, "Mul", n->name, 2, a, sq);
        char *b[2] = {sq, in[0]};
        w->node(w, "Mul", cube, 2, b, cube);
        char *c3 = w->name(w, "%s/c3", n->name), *sum = w->name(w, "%s/sum", n->name);
        char *c[2] = {cube, w->init_scalar(w, w->name(w, "%s/c", n->name), 0.044715f)};
        w->node(w, "Mul", c3, 2, c, c3);
        char *d[2] = {in[0], c3};
        w->node(w, "Add", sum, 2, d, sum);
        char *u = w->name(w, "%s/u", n->name);
        char *e[2] = {sum, w->init_scalar(w, w->name(w, "%s/k", n->name), 0.79788456f)};
        w->node(w, "Mul", u, 2, e, u);
        inner = w->name(w, "%s/tanh", n->name);
        w->node(w, "Tanh", inner, 1, &u, inner);
    }
    /* x * (1 + inner), then * 0.5: the order torch writes */
    char *p1 = w->name(w, "%s/plus1", n->name), *xp = w->name(w, "%s/xplus", n->name);
    char *f[2] = {inner, one};
    w->node(w, "Add", p1, 2, f, p1);
    char *h[2] = {in[0], p1};
    w->node(w, "Mul", xp, 2, h, xp);
    char *m[2] = {xp, half};
    w->node(w, "Mul", w->name(w, "%s/out", n->name), 2, m, out);
    return OSP_OK;
}

#define SPECIAL_OP(var, spec_name, f)                                                      \
    static const special_op var = {                                                        \
        .op = {.name = spec_name, .setup = special_setup, .forward = special_forward,      \
               .backward = special_backward, .onnx_export = special_onnx},                 \
        .fn = f,                                                                           \
    }

SPECIAL_OP(gelu_op, "gelu", OSP_FN_GELU);
SPECIAL_OP(erf_op, "erf", OSP_FN_ERF);
SPECIAL_OP(exp_op, "exp", OSP_FN_EXP);
SPECIAL_OP(log_op, "log", OSP_FN_LOG);
SPECIAL_OP(sqrt_op, "sqrt", OSP_FN_SQRT);
SPECIAL_OP(abs_op, "abs", OSP_FN_ABS);
SPECIAL_OP(neg_op, "neg", OSP_FN_NEG);
SPECIAL_OP(reciprocal_op, "reciprocal", OSP_FN_RECIPROCAL);
SPECIAL_OP(softplus_op, "softplus", OSP_FN_SOFTPLUS);
SPECIAL_OP(softsign_op, "softsign", OSP_FN_SOFTSIGN);

int osp__gelu_of(const osp_node *n, osp_special *fn) {
    if (n->op != &gelu_op.op) return 0;
    *fn = fn_of(n);
    return 1;
}

static int gelu_parse(osp_spec_section *s, void **attrs) {
    static const char *const modes[] = {"none", "tanh", NULL};
    int mode, rc = osp_spec_choice(s, "approximate", modes, 0, &mode);
    if (rc) return rc;
    *attrs = NULL;
    if (!mode) return OSP_OK;
    gelu_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->tanh_approx = 1;
    *attrs = a;
    return OSP_OK;
}

static int erf_parse(osp_spec_section *s, void **attrs) {
    (void)s;
    *attrs = NULL;
    return OSP_OK;
}

const osp_layer_type osp__layer_gelu = {&gelu_op.op, gelu_parse};
const osp_layer_type osp__layer_erf = {&erf_op.op, erf_parse};
/* The plain functions have no keys, as [erf]. */
const osp_layer_type osp__layer_exp = {&exp_op.op, erf_parse};
const osp_layer_type osp__layer_log = {&log_op.op, erf_parse};
const osp_layer_type osp__layer_sqrt = {&sqrt_op.op, erf_parse};
const osp_layer_type osp__layer_abs = {&abs_op.op, erf_parse};
const osp_layer_type osp__layer_neg = {&neg_op.op, erf_parse};
const osp_layer_type osp__layer_reciprocal = {&reciprocal_op.op, erf_parse};
const osp_layer_type osp__layer_softplus = {&softplus_op.op, erf_parse};
const osp_layer_type osp__layer_softsign = {&softsign_op.op, erf_parse};
