/* [flatten] and [reshape]: the same values per sample under a new shape.
 * flatten gives a 1-D vector (as nn.Flatten); reshape gives `shape`, with at
 * most one -1 standing for whatever the element count implies. The values
 * are copied: activations are planned one buffer per node. */
#include <stdio.h>
#include <string.h>

#include "osprey/nn.h"
#include "osprey/onnx.h"

#define RESHAPE_MAX_DIMS (OSP_MAX_DIMS - 1) /* the batch takes one axis */

typedef struct reshape_attrs {
    int ndim;
    int dim[RESHAPE_MAX_DIMS]; /* -1 at most once: inferred */
} reshape_attrs;

static int one_input(const osp_node *n) {
    if (n->n_inputs == 1) return OSP_OK;
    return osp_error(OSP_ESHAPE, "layer '%s': %s takes one input, not %d", n->name, n->op->name,
                     n->n_inputs);
}

static int flatten_setup(osp_graph *g, osp_node *n) {
    int rc = one_input(n);
    if (rc) return rc;
    int64_t size = osp_shape_numel(&osp_node_input(g, n, 0)->shape);
    n->shape = osp_shape_make(1, &size);
    return OSP_OK;
}

static int reshape_setup(osp_graph *g, osp_node *n) {
    int rc = one_input(n);
    if (rc) return rc;
    const reshape_attrs *a = n->attrs;
    if (!a) return osp_error(OSP_EINVAL, "layer '%s': reshape has no target shape", n->name);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    int64_t size = osp_shape_numel(in), known = 1, dim[RESHAPE_MAX_DIMS];
    int infer = -1, too_many = 0;
    for (int i = 0; i < a->ndim; i++) {
        dim[i] = a->dim[i];
        if (dim[i] < 0) infer = i;
        else if (dim[i] > size / known) too_many = 1; /* and known * dim could overflow */
        else known *= dim[i];
    }
    char from[64];
    osp_shape_format(in, from, sizeof from);
    if (too_many)
        return osp_error(OSP_ESHAPE, "layer '%s': cannot reshape %s (%lld values) to more values",
                         n->name, from, (long long)size);
    if (infer >= 0) {
        if (size % known)
            return osp_error(OSP_ESHAPE, "layer '%s': cannot reshape %s (%lld values) with %lld "
                             "values per -1",
                             n->name, from, (long long)size, (long long)known);
        dim[infer] = size / known;
    } else if (known != size) {
        return osp_error(OSP_ESHAPE, "layer '%s': cannot reshape %s (%lld values) to %lld values",
                         n->name, from, (long long)size, (long long)known);
    }
    n->shape = osp_shape_make(a->ndim, dim);
    return OSP_OK;
}

static void copy_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    ex->be->copy_d2d(ex->be->ctx, n->out, osp_node_input(g, n, 0)->out,
                     (size_t)ex->batch * (size_t)n->size * sizeof(float));
}

static void copy_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    float *dx = osp_node_input(g, n, 0)->dout;
    if (dx) ex->be->accumulate((int64_t)ex->batch * n->size, n->dout, dx);
}

/* ONNX: Flatten from axis 1 (the batch stays). */
static int flatten_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                        char *const *in, char *out) {
    w->attr_int(w, w->node(w, "Flatten", n->name, 1, in, out), "axis", 1);
    return OSP_OK;
}

/* ONNX: Reshape to [0, shape] (0 keeps the batch). */
static int reshape_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                        char *const *in, char *out) {
    char *args[2] = {in[0], w->init_shape(w, w->name(w, "%s/shape", n->name), &n->shape)};
    w->node(w, "Reshape", n->name, 2, args, out);
    return OSP_OK;
}

static const osp_op flatten_op = {
    .name = "flatten",
    .setup = flatten_setup,
    .forward = copy_forward,
    .backward = copy_backward,
    .onnx_export = flatten_onnx,
};

static const osp_op reshape_op = {
    .name = "reshape",
    .setup = reshape_setup,
    .forward = copy_forward,
    .backward = copy_backward,
    .onnx_export = reshape_onnx,
};

static int flatten_parse(osp_spec_section *s, void **attrs) {
    (void)s;
    *attrs = NULL;
    return OSP_OK;
}

static int reshape_parse(osp_spec_section *s, void **attrs) {
    int dim[RESHAPE_MAX_DIMS], n;
    int rc = osp_spec_ints(s, "shape", dim, RESHAPE_MAX_DIMS, &n, -1, 1 << 30);
    if (rc) return rc;
    if (n == 0) return osp_spec_error(s, NULL, "'shape' (e.g. 16x5x5, one axis may be -1) is required");
    int inferred = 0;
    for (int i = 0; i < n; i++) {
        if (dim[i] == 0) return osp_spec_error(s, "shape", "'shape' axes must be positive or -1");
        if (dim[i] < 0 && inferred++)
            return osp_spec_error(s, "shape", "'shape' may have only one -1");
    }
    reshape_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->ndim = n;
    memcpy(a->dim, dim, (size_t)n * sizeof *dim);
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_flatten = {&flatten_op, flatten_parse};
const osp_layer_type osp__layer_reshape = {&reshape_op, reshape_parse};
