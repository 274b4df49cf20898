/* Element-wise activation layers: [relu], [leakyrelu], [relu6], [sigmoid],
 * [tanh], [swish]. Any input shape; the output has the same shape.
 *
 * Each layer type is an act_op: the osp_op followed by the activation it
 * applies, so the op itself says what to compute and only [leakyrelu] needs
 * attrs (its slope). */
#include "attrs.h"
#include "op_fuse.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

typedef struct act_op {
    osp_op op; /* first: a node's op pointer is also its act_op's */
    osp_activation act;
} act_op;

static const act_op *act_of(const osp_node *n) { return (const act_op *)(const void *)n->op; }

static float alpha_of(const osp_node *n) {
    return n->attrs ? ((const leaky_attrs *)n->attrs)->alpha : LEAKY_DEFAULT_ALPHA;
}

static int act_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': %s takes one input, not %d", n->name,
                         n->op->name, n->n_inputs);
    n->shape = osp_node_input(g, n, 0)->shape;
    return OSP_OK;
}

static void act_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const osp_node *in = osp_node_input(g, n, 0);
    ex->be->activation_forward(act_of(n)->act, alpha_of(n), (int64_t)ex->batch * n->size, in->out,
                               n->out);
}

static void act_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_node *in = osp_node_input(g, n, 0);
    if (!in->dout) return;
    ex->be->activation_backward(act_of(n)->act, alpha_of(n), (int64_t)ex->batch * n->size, in->out,
                                n->out, n->dout, in->dout);
}

/* ONNX: the operator of the same name where ONNX has one; [relu6] is Clip
 * to [0, 6], [swish] Sigmoid then Mul. */
static int act_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n, char *const *in,
                    char *out) {
    switch (act_of(n)->act) {
    case OSP_ACT_RELU: w->node(w, "Relu", n->name, 1, in, out); break;
    case OSP_ACT_LEAKY_RELU:
        w->attr_float(w, w->node(w, "LeakyRelu", n->name, 1, in, out), "alpha", alpha_of(n));
        break;
    case OSP_ACT_RELU6: {
        char *args[3] = {in[0], w->init_scalar(w, w->name(w, "%s/min", n->name), 0.0f),
                         w->init_scalar(w, w->name(w, "%s/max", n->name), 6.0f)};
        w->node(w, "Clip", n->name, 3, args, out);
        break;
    }
    case OSP_ACT_SIGMOID: w->node(w, "Sigmoid", n->name, 1, in, out); break;
    case OSP_ACT_TANH: w->node(w, "Tanh", n->name, 1, in, out); break;
    case OSP_ACT_SWISH: {
        char *sig = w->name(w, "%s/sigmoid", n->name);
        w->node(w, "Sigmoid", sig, 1, in, sig);
        char *args[2] = {in[0], sig};
        w->node(w, "Mul", n->name, 2, args, out);
        break;
    }
    default:
        return osp_error(OSP_ENOTSUP, "layer '%s': ONNX export does not support [%s] layers",
                         n->name, n->op->name);
    }
    return OSP_OK;
}

#define ACT_OP(var, spec_name, kind)                                                       \
    static const act_op var = {                                                           \
        .op = {.name = spec_name, .setup = act_setup, .forward = act_forward,              \
               .backward = act_backward, .onnx_export = act_onnx},                         \
        .act = kind,                                                                       \
    }

ACT_OP(relu_op, "relu", OSP_ACT_RELU);
ACT_OP(leakyrelu_op, "leakyrelu", OSP_ACT_LEAKY_RELU);
ACT_OP(relu6_op, "relu6", OSP_ACT_RELU6);
ACT_OP(sigmoid_op, "sigmoid", OSP_ACT_SIGMOID);
ACT_OP(tanh_op, "tanh", OSP_ACT_TANH);
ACT_OP(swish_op, "swish", OSP_ACT_SWISH);

static int parse_plain(osp_spec_section *s, void **attrs) {
    (void)s;
    *attrs = NULL;
    return OSP_OK;
}

static int parse_leaky(osp_spec_section *s, void **attrs) {
    float alpha;
    int rc = osp_spec_float(s, "alpha", LEAKY_DEFAULT_ALPHA, -1e6f, 1e6f, &alpha);
    if (rc) return rc;
    leaky_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->alpha = alpha;
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_relu = {&relu_op.op, parse_plain};
const osp_layer_type osp__layer_leakyrelu = {&leakyrelu_op.op, parse_leaky};
const osp_layer_type osp__layer_relu6 = {&relu6_op.op, parse_plain};
const osp_layer_type osp__layer_sigmoid = {&sigmoid_op.op, parse_plain};
const osp_layer_type osp__layer_tanh = {&tanh_op.op, parse_plain};
const osp_layer_type osp__layer_swish = {&swish_op.op, parse_plain};

int osp__activation_of(const osp_node *n, osp_activation *act, float *alpha) {
    static const act_op *const all[] = {&relu_op, &leakyrelu_op, &relu6_op,
                                        &sigmoid_op, &tanh_op, &swish_op};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (n->op == &all[i]->op) {
            *act = all[i]->act;
            *alpha = alpha_of(n);
            return 1;
        }
    return 0;
}
