/* [attention]: scaled dot-product attention in one layer,
 * softmax(Q K^T * scale) V, through the backend's fused kernel (blockwise,
 * with an online softmax: the tq x tk scores are never stored whole).
 *
 *   inputs  Q [..., tq, d], K [..., tk, d] (with transposed_k = 1, K^T
 *           [..., d, tk], as exporters often hand it over), V [..., tk, dv],
 *           the leading axes (heads) the same in all three
 *   output  [..., tq, dv]
 *   keys    scale (default 1 / sqrt(d)), transposed_k
 *
 * The forward keeps each query's log-sum-exp (training), from which the
 * backward recomputes the scores block by block. */
#include <math.h>
#include <string.h>

#include "osprey/nn.h"
#include "osprey/onnx.h"

typedef struct attention_attrs {
    float scale; /* 0: 1 / sqrt(d) */
    int transposed_k;
} attention_attrs;

static const attention_attrs att_defaults = {0.0f, 0};

static const attention_attrs *attrs_of(const osp_node *n) {
    return n->attrs ? n->attrs : &att_defaults;
}

/* The kernel's description for a batch (count = batch x heads). */
static osp_attention_desc desc_of(const osp_graph *g, const osp_node *n, int batch) {
    const attention_attrs *a = attrs_of(n);
    const osp_shape *q = &osp_graph_node_const(g, n->inputs[0])->shape,
                    *v = &osp_graph_node_const(g, n->inputs[2])->shape;
    osp_attention_desc d = {0};
    d.tq = (int)q->dim[q->ndim - 2];
    d.d = (int)q->dim[q->ndim - 1];
    d.tk = (int)v->dim[v->ndim - 2];
    d.dv = (int)v->dim[v->ndim - 1];
    d.count = batch;
    for (int k = 0; k < q->ndim - 2; k++) d.count *= q->dim[k];
    d.scale = a->scale != 0.0f ? a->scale : 1.0f / sqrtf((float)d.d);
    d.k_trans = a->transposed_k;
    return d;
}

static int attention_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 3)
        return osp_error(OSP_ESHAPE, "layer '%s': attention takes three inputs (Q, K, V), not %d",
                         n->name, n->n_inputs);
    const osp_shape *q = &osp_node_input(g, n, 0)->shape, *k = &osp_node_input(g, n, 1)->shape,
                    *v = &osp_node_input(g, n, 2)->shape;
    char sq[64], sk[64], sv[64];
    osp_shape_format(q, sq, sizeof sq);
    osp_shape_format(k, sk, sizeof sk);
    osp_shape_format(v, sv, sizeof sv);
    const int r = q->ndim, kt = attrs_of(n)->transposed_k;
    if (r < 2 || k->ndim != r || v->ndim != r)
        return osp_error(OSP_ESHAPE, "layer '%s': Q %s, K %s and V %s must have one rank, of two "
                         "axes or more", n->name, sq, sk, sv);
    for (int a = 0; a < r - 2; a++)
        if (k->dim[a] != q->dim[a] || v->dim[a] != q->dim[a])
            return osp_error(OSP_ESHAPE, "layer '%s': the leading axes of Q %s, K %s and V %s "
                             "differ", n->name, sq, sk, sv);
    int64_t d = q->dim[r - 1], kd = k->dim[kt ? r - 2 : r - 1], tk = k->dim[kt ? r - 1 : r - 2];
    if (kd != d || v->dim[r - 2] != tk)
        return osp_error(OSP_ESHAPE, "layer '%s': Q %s, K%s %s and V %s do not fit (features "
                         "%lld and %lld, keys %lld and values %lld)", n->name, sq,
                         kt ? "^T" : "", sk, sv, (long long)d, (long long)kd, (long long)tk,
                         (long long)v->dim[r - 2]);
    n->shape = *q;
    n->shape.dim[r - 1] = v->dim[r - 1];
    if (osp_shape_numel(&n->shape) > INT32_MAX || osp_shape_numel(k) > INT32_MAX ||
        osp_shape_numel(v) > INT32_MAX)
        return osp_error(OSP_ESHAPE, "layer '%s': inputs too large", n->name);
    return OSP_OK;
}

/* Each query's log-sum-exp. */
static size_t attention_saved(const osp_graph *g, const osp_node *n, int batch) {
    osp_attention_desc d = desc_of(g, n, batch);
    return sizeof(float) * (size_t)d.count * (size_t)d.tq;
}

static size_t attention_workspace(const osp_graph *g, const osp_node *n, int batch) {
    osp_attention_desc d = desc_of(g, n, batch);
    return osp_graph_backend(g)->attention_workspace(&d);
}

static void attention_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_attention_desc d = desc_of(g, n, ex->batch);
    ex->be->attention_forward(&d, osp_node_input(g, n, 0)->out, osp_node_input(g, n, 1)->out,
                              osp_node_input(g, n, 2)->out, n->out, n->saved, ex->workspace);
}

static void attention_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_attention_desc d = desc_of(g, n, ex->batch);
    osp_node *q = osp_node_input(g, n, 0), *k = osp_node_input(g, n, 1),
             *v = osp_node_input(g, n, 2);
    ex->be->attention_backward(&d, q->out, k->out, v->out, n->out, n->dout, n->saved, q->dout,
                               k->dout, v->dout, ex->workspace);
}

/* ONNX: MatMul(Q, K^T) (K transposed first unless given so), Mul by the
 * scale, Softmax over the last axis, MatMul by V: the form the importer
 * folds back into one [attention]. */
static int attention_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                          char *const *in, char *out) {
    osp_attention_desc d = desc_of(g, n, 1);
    const int rank = n->shape.ndim + 1;
    char *kt = in[1];
    if (!d.k_trans) {
        int64_t perm[OSP_MAX_DIMS];
        for (int a = 0; a < rank; a++) perm[a] = a;
        perm[rank - 2] = rank - 1;
        perm[rank - 1] = rank - 2;
        kt = w->name(w, "%s/k_t", n->name);
        w->attr_ints(w, w->node(w, "Transpose", kt, 1, &in[1], kt), "perm", perm, rank);
    }
    char *s = w->name(w, "%s/scores", n->name), *ss = w->name(w, "%s/scaled", n->name);
    char *p = w->name(w, "%s/probs", n->name);
    char *a1[2] = {in[0], kt};
    w->node(w, "MatMul", n->name, 2, a1, s);
    char *a2[2] = {s, w->init_scalar(w, w->name(w, "%s/scale", n->name), d.scale)};
    w->node(w, "Mul", ss, 2, a2, ss);
    w->attr_int(w, w->node(w, "Softmax", p, 1, &ss, p), "axis", rank - 1);
    char *a3[2] = {p, in[2]};
    w->node(w, "MatMul", w->name(w, "%s/context", n->name), 2, a3, out);
    return OSP_OK;
}

static const osp_op attention_op = {
    .name = "attention",
    .setup = attention_setup,
    .saved_bytes = attention_saved,
    .workspace_bytes = attention_workspace,
    .forward = attention_forward,
    .backward = attention_backward,
    .onnx_export = attention_onnx,
};

static int attention_parse(osp_spec_section *s, void **attrs) {
    attention_attrs a = att_defaults;
    int rc;
    if ((rc = osp_spec_float(s, "scale", 0.0f, -1e6f, 1e6f, &a.scale)) ||
        (rc = osp_spec_int(s, "transposed_k", 0, 0, 1, &a.transposed_k)))
        return rc;
    if (osp_spec_str(s, "scale", NULL) && a.scale == 0.0f)
        return osp_spec_error(s, "scale", "'scale' must not be 0");
    attention_attrs *copy = osp_calloc(1, sizeof *copy);
    if (!copy) return OSP_ENOMEM;
    *copy = a;
    *attrs = copy;
    return OSP_OK;
}

const osp_layer_type osp__layer_attention = {&attention_op, attention_parse};
