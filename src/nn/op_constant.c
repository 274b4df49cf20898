/* [constant]: a layer that reads nothing and outputs, for every sample of
 * the batch, one stored tensor: the buffer `<name>.value` of per-sample
 * shape `shape` (saved with models and checkpoints like batch-norm running
 * statistics, never trained; it starts at 0). With [add], [sub], [mul] and
 * [div] it gives operations with a constant operand (ONNX initialisers):
 * `x * c`, `c - x`. */
#include <string.h>

#include "osprey/nn.h"
#include "osprey/onnx.h"

#define CONST_MAX_DIMS (OSP_MAX_DIMS - 1) /* the batch takes one axis */
#define CONST_MAX_VALUES ((int64_t)1 << 28)

typedef struct const_attrs {
    int ndim;
    int dim[CONST_MAX_DIMS];
} const_attrs;

static int const_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 0)
        return osp_error(OSP_ESHAPE, "layer '%s': constant takes no input, not %d", n->name,
                         n->n_inputs);
    const const_attrs *a = n->attrs;
    if (!a) return osp_error(OSP_EINVAL, "layer '%s': constant has no shape", n->name);
    int64_t dim[CONST_MAX_DIMS], total = 1;
    for (int i = 0; i < a->ndim; i++) {
        dim[i] = a->dim[i];
        if (dim[i] < 1 || dim[i] > CONST_MAX_VALUES / total)
            return osp_error(OSP_ESHAPE, "layer '%s': constant of more than %lld values per sample",
                             n->name, (long long)CONST_MAX_VALUES);
        total *= dim[i];
    }
    n->shape = osp_shape_make(a->ndim, dim);
    int rc = osp_graph_add_param(g, n, "value", OSP_PARAM_BUFFER, &n->shape, OSP_INIT_ZERO, 0);
    return rc < 0 ? rc : OSP_OK;
}

static void const_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const float *value = osp_node_weight(g, n, 0);
    /* the value repeated for each sample: rows of n->size read at stride 0 */
    ex->be->copy_rows(ex->batch, n->size, value, 0, n->out, n->size);
}

/* No backward: the value is not trained, and nothing flows further. */
/* ONNX: the value as a [1, shape] initializer (which binary layers read
 * directly), repeated over the batch: Expand to [batch, shape]. */
static int const_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                      char *const *in, char *out) {
    if (n->n_params != 1) return osp_error(OSP_EINVAL, "layer '%s' has no value", n->name);
    char *value = w->constant(w, n);
    char *cat[2] = {w->batch(w), w->init_ints(w, w->name(w, "%s/dims", n->name), n->shape.dim,
                                              n->shape.ndim)};
    char *shape = w->name(w, "%s/shape", n->name);
    w->attr_int(w, w->node(w, "Concat", shape, 2, cat, shape), "axis", 0);
    char *args[2] = {value, shape};
    w->node(w, "Expand", n->name, 2, args, out);
    return OSP_OK;
}

static const osp_op const_op = {
    .name = "constant",
    .setup = const_setup,
    .forward = const_forward,
    .no_inputs = 1,
    .onnx_export = const_onnx,
};

static int const_parse(osp_spec_section *s, void **attrs) {
    int dim[CONST_MAX_DIMS], n;
    int rc = osp_spec_ints(s, "shape", dim, CONST_MAX_DIMS, &n, 1, 1 << 30);
    if (rc) return rc;
    if (n == 0) return osp_spec_error(s, NULL, "'shape' (e.g. 16x1x1 or 10) is required");
    const_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->ndim = n;
    memcpy(a->dim, dim, (size_t)n * sizeof *dim);
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_constant = {&const_op, const_parse};
