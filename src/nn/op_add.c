/* [add]: the element-wise sum of two or more inputs of one shape
 * (`input = a, b`), e.g. a ResNet's residual connection. Two inputs of
 * different shapes are broadcast numpy-style (broadcast.h): a [C,H,W] plus
 * a [C,1,1] adds a value per channel. */
#include <string.h>

#include "broadcast.h"
#include "osprey/nn.h"

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
    if (broadcasts(g, n)) {
        const osp_node *a = osp_node_input(g, n, 0), *b = osp_node_input(g, n, 1);
        osp__broadcast_forward(OSP_BIN_ADD, &a->shape, &b->shape, ex->batch, a->out, b->out, n->out);
        return;
    }
    const int64_t count = (int64_t)ex->batch * n->size;
    memcpy(n->out, osp_node_input(g, n, 0)->out, (size_t)count * sizeof(float));
    for (int i = 1; i < n->n_inputs; i++) {
        const float *x = osp_node_input(g, n, i)->out;
        for (int64_t j = 0; j < count; j++) n->out[j] += x[j];
    }
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
        if (!dx) continue;
        for (int64_t j = 0; j < count; j++) dx[j] += n->dout[j];
    }
}

static const osp_op add_op = {
    .name = "add",
    .setup = add_setup,
    .forward = add_forward,
    .backward = add_backward,
};

static int add_parse(osp_spec_section *s, void **attrs) {
    (void)s;
    *attrs = NULL;
    return OSP_OK;
}

const osp_layer_type osp__layer_add = {&add_op, add_parse};
