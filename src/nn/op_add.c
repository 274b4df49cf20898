/* [add]: the element-wise sum of two or more inputs of one shape
 * (`input = a, b`), e.g. a ResNet's residual connection. Two inputs of
 * different shapes are broadcast numpy-style (broadcast.h): a [C,H,W] plus
 * a [C,1,1] adds a value per channel. */
#include <string.h>

#include "broadcast.h"
#include "op_fuse.h"
#include "osprey/kernels.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

/* Inference fuses an activation that follows the sum (a ResNet's ReLU
 * after the residual add) into the same pass over the values. */
typedef struct add_attrs {
    osp_activation act;
    float alpha;
} add_attrs;

/* Values summed and activated per task: small enough to stay in cache
 * between the two. */
#define ADD_BLOCK 16384

/* Two inputs of different shapes: the broadcasting path. */
static int broadcasts(osp_graph *g, const osp_node *n) {
    return n->n_inputs == 2 &&
           !osp_shape_equal(&osp_node_input(g, n, 0)->shape, &osp_node_input(g, n, 1)->shape);
}

static int add_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs < 2)
        return osp_error(OSP_ESHAPE, "layer '%s': add needs two or more inputs (input = a, b), not %d",
                         n->name, n->n_inputs);
    const osp_node *first = osp_node_input(g, n, 0);
    if (broadcasts(g, n))
        return osp__broadcast_shape(OSP_BIN_ADD, n, first, osp_node_input(g, n, 1), &n->shape);
    for (int i = 1; i < n->n_inputs; i++) {
        const osp_node *other = osp_node_input(g, n, i);
        if (!osp_shape_equal(&first->shape, &other->shape)) {
            char a[64], b[64];
            osp_shape_format(&first->shape, a, sizeof a);
            osp_shape_format(&other->shape, b, sizeof b);
            return osp_error(OSP_ESHAPE, "layer '%s': cannot add '%s' (%s) and '%s' (%s): three "
                             "or more inputs must have one shape (only two are broadcast)",
                             n->name, first->name, a, other->name, b);
        }
    }
    n->shape = first->shape;
    return OSP_OK;
}

static void add_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const add_attrs *a = n->attrs;
    const int64_t count = (int64_t)ex->batch * n->size;
    const osp_activation act = ex->mode == OSP_MODE_INFER && a ? a->act : OSP_ACT_NONE;
    if (broadcasts(g, n)) {
        const osp_node *x = osp_node_input(g, n, 0), *y = osp_node_input(g, n, 1);
        osp__broadcast_forward(OSP_BIN_ADD, &x->shape, &y->shape, ex->batch, x->out, y->out, n->out);
        if (act != OSP_ACT_NONE) ex->be->activation_forward(act, a->alpha, count, n->out, n->out);
        return;
    }
    const int64_t blocks = (count + ADD_BLOCK - 1) / ADD_BLOCK;
    /* Element-wise, so the result does not depend on the schedule. */
#pragma omp parallel for schedule(static) if (blocks > 2)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t at = b * ADD_BLOCK, len = count - at < ADD_BLOCK ? count - at : ADD_BLOCK;
        float *out = n->out + at;
        const float *x0 = osp_node_input(g, n, 0)->out + at, *x1 = osp_node_input(g, n, 1)->out + at;
        ex->be->add(len, x0, x1, out);
        for (int i = 2; i < n->n_inputs; i++)
            ex->be->accumulate(len, osp_node_input(g, n, i)->out + at, out);
        if (act != OSP_ACT_NONE) ex->be->activation_forward(act, a->alpha, len, out, out);
    }
}

static int add_fuse(osp_graph *g, osp_node *n, const osp_node *next) {
    (void)g;
    add_attrs *a = n->attrs;
    osp_activation act;
    float alpha;
    if (!next) {
        a->act = OSP_ACT_NONE;
        return 0;
    }
    if (a->act != OSP_ACT_NONE || !osp__activation_of(next, &act, &alpha)) return 0;
    a->act = act;
    a->alpha = alpha;
    return 1;
}

/* Each input's gradient is the output's (summed over the axes it was
 * broadcast along); an input named twice gets it twice. */
static void add_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    if (broadcasts(g, n)) {
        osp_node *a = osp_node_input(g, n, 0), *b = osp_node_input(g, n, 1);
        osp__broadcast_backward(OSP_BIN_ADD, &a->shape, &b->shape, ex->batch, a->out, b->out,
                                n->dout, a->dout, b->dout);
        return;
    }
    const int64_t count = (int64_t)ex->batch * n->size;
    for (int i = 0; i < n->n_inputs; i++) {
        float *dx = osp_node_input(g, n, i)->dout;
        if (dx) ex->be->accumulate(count, n->dout, dx);
    }
}

/* ONNX: inputs of one shape are summed ((a + b) + c) + ..., the order
 * osprey sums in; two inputs that broadcast, or a [constant] (an
 * initializer of shape [1, ...]), make one Add that ONNX broadcasts. */
static int add_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n, char *const *in,
                    char *out) {
    if (n->n_inputs == 2) {
        const osp_node *a = osp_graph_node_const(g, n->inputs[0]);
        const osp_node *b = osp_graph_node_const(g, n->inputs[1]);
        if (!osp_shape_equal(&a->shape, &b->shape) || w->is_constant(w, a->id) ||
            w->is_constant(w, b->id)) {
            w->binary(w, n, "Add", in, out);
            return OSP_OK;
        }
    }
    char *acc = in[0];
    for (int i = 1; i < n->n_inputs; i++) {
        int last = i == n->n_inputs - 1;
        char *dst = last ? out : w->name(w, "%s/sum%d", n->name, i);
        const char *name = last ? n->name : dst;
        char *args[2] = {acc, in[i]};
        w->node(w, "Add", name, 2, args, dst);
        acc = dst;
    }
    return OSP_OK;
}

static const osp_op add_op = {
    .name = "add",
    .setup = add_setup,
    .forward = add_forward,
    .backward = add_backward,
    .fuse = add_fuse,
    .onnx_export = add_onnx,
};

static int add_parse(osp_spec_section *s, void **attrs) {
    (void)s;
    add_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_add = {&add_op, add_parse};

int osp__add_of_two(const osp_graph *g, const osp_node *n) {
    return n->op == &add_op && n->n_inputs == 2 &&
           osp_shape_equal(&osp_graph_node_const(g, n->inputs[0])->shape,
                           &osp_graph_node_const(g, n->inputs[1])->shape);
}
