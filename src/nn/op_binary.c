/* [mul], [sub], [div]: a * b, a - b and a / b of exactly two inputs
 * (`input = a, b`), broadcast numpy-style over the per-sample shapes
 * (broadcast.h): a [C,H,W] times a [C,1,1] scales each channel.
 *
 * Each layer type is a binary_op: the osp_op followed by the operation, as
 * the activations do, so no attrs are needed. */
#include "broadcast.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

typedef struct binary_op {
    osp_op op; /* first: a node's op pointer is also its binary_op's */
    osp_binop kind;
} binary_op;

static osp_binop kind_of(const osp_node *n) {
    return ((const binary_op *)(const void *)n->op)->kind;
}

static int binary_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 2)
        return osp_error(OSP_ESHAPE, "layer '%s': %s takes exactly two inputs (input = a, b), not %d",
                         n->name, n->op->name, n->n_inputs);
    return osp__broadcast_shape(kind_of(n), n, osp_node_input(g, n, 0), osp_node_input(g, n, 1),
                                &n->shape);
}

static void binary_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const osp_node *a = osp_node_input(g, n, 0), *b = osp_node_input(g, n, 1);
    osp__broadcast_forward(kind_of(n), &a->shape, &b->shape, ex->batch, a->out, b->out, n->out);
}

static void binary_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_node *a = osp_node_input(g, n, 0), *b = osp_node_input(g, n, 1);
    osp__broadcast_backward(kind_of(n), &a->shape, &b->shape, ex->batch, a->out, b->out, n->dout,
                            a->dout, b->dout);
}

/* ONNX: Sub, Mul or Div, which broadcast as osprey does once per-sample
 * shapes are aligned (the writer's binary). */
static int binary_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                       char *const *in, char *out) {
    static const char *const onnx_names[] = {[OSP_BIN_ADD] = "Add", [OSP_BIN_SUB] = "Sub",
                                             [OSP_BIN_MUL] = "Mul", [OSP_BIN_DIV] = "Div"};
    w->binary(w, n, onnx_names[kind_of(n)], in, out);
    return OSP_OK;
}

#define BINARY_OP(var, spec_name, k)                                                        \
    static const binary_op var = {                                                         \
        .op = {.name = spec_name, .setup = binary_setup, .forward = binary_forward,         \
               .backward = binary_backward, .onnx_export = binary_onnx},                    \
        .kind = k,                                                                          \
    }

BINARY_OP(mul_op, "mul", OSP_BIN_MUL);
BINARY_OP(sub_op, "sub", OSP_BIN_SUB);
BINARY_OP(div_op, "div", OSP_BIN_DIV);

static int binary_parse(osp_spec_section *s, void **attrs) {
    (void)s;
    *attrs = NULL;
    return OSP_OK;
}

const osp_layer_type osp__layer_mul = {&mul_op.op, binary_parse};
const osp_layer_type osp__layer_sub = {&sub_op.op, binary_parse};
const osp_layer_type osp__layer_div = {&div_op.op, binary_parse};
