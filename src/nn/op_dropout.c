/* [dropout]: in training, zeroes each value with probability p and scales
 * the kept ones by 1/(1-p) (inverted dropout, as PyTorch); in inference, the
 * identity. Any input shape; the output has the same shape.
 *
 * The mask comes from a generator derived from (seed, node, step) and is
 * drawn serially, so it is the same for any thread count and on every
 * forward of one step (a gradient check repeats forwards). It is the saved
 * memory: one byte per value. */

#include "osprey/nn.h"
#include "osprey/onnx.h"

typedef struct dropout_attrs {
    float p; /* probability of dropping, in [0, 1) */
} dropout_attrs;

/* Stream tag for osp_rng_derive ("drop"), mixed with the node id. */
#define RNG_STREAM_DROPOUT 0x64726f70u

static float p_of(const osp_node *n) {
    return n->attrs ? ((const dropout_attrs *)n->attrs)->p : 0.5f;
}

static int dropout_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': dropout takes one input, not %d", n->name,
                         n->n_inputs);
    n->shape = osp_node_input(g, n, 0)->shape;
    return OSP_OK;
}

static size_t dropout_saved_bytes(const osp_graph *g, const osp_node *n, int batch) {
    (void)g;
    return (size_t)batch * (size_t)n->size;
}

static void dropout_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const osp_node *in = osp_node_input(g, n, 0);
    const int64_t count = (int64_t)ex->batch * n->size;
    const float p = p_of(n);
    if (ex->mode != OSP_MODE_TRAIN || p == 0.0f) {
        ex->be->copy_d2d(ex->be->ctx, n->out, in->out, (size_t)count * sizeof(float));
        if (ex->mode == OSP_MODE_TRAIN) ex->be->fill_bytes(ex->be->ctx, n->saved, 1, (size_t)count);
        return;
    }
    ex->be->dropout_forward(count, p, ex->seed, RNG_STREAM_DROPOUT ^ ((uint64_t)n->id << 32),
                            ex->step, in->out, n->out, n->saved);
}

static void dropout_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_node *in = osp_node_input(g, n, 0);
    if (!in->dout) return;
    ex->be->dropout_backward((int64_t)ex->batch * n->size, p_of(n), n->saved, n->dout, in->dout);
}

/* ONNX: an exported model is for inference, where dropout passes its
 * input through. */
static int dropout_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                        char *const *in, char *out) {
    w->node(w, "Identity", n->name, 1, in, out);
    return OSP_OK;
}

static const osp_op dropout_op = {
    .name = "dropout",
    .setup = dropout_setup,
    .saved_bytes = dropout_saved_bytes,
    .forward = dropout_forward,
    .backward = dropout_backward,
    .onnx_export = dropout_onnx,
};

static int dropout_parse(osp_spec_section *s, void **attrs) {
    float p;
    int rc = osp_spec_float(s, "p", 0.5f, 0.0f, 1.0f, &p);
    if (rc) return rc;
    if (p >= 1.0f) return osp_spec_error(s, "p", "'p' must be below 1 (1 would drop everything)");
    dropout_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->p = p;
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_dropout = {&dropout_op, dropout_parse};
