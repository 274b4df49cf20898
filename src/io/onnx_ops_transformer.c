/* The ONNX operators of transformers, mapped onto [matmul], [fc]
 * (last_axis), [layernorm], [gelu], [erf] and [softmax] (axis), and the
 * decomposed forms exporters write for LayerNorm, GELU and attention
 * (MatMul(Q, K^T), a scale, Softmax, MatMul by V: one [attention]),
 * recognised on the ONNX nodes before mapping and folded into one layer.
 *
 * A pattern is matched from its first node in the import order (the one
 * that reads the input x): every later node of it must be the only reader
 * of the value before it (x aside), with constants of the right values.
 * On a match the layer is emitted at once and every node's output of the
 * pattern is bound to it; the other nodes then find their output bound and
 * are skipped (osp__onnx_claimed). Where anything differs, the pieces
 * are left to be mapped one by one. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "io/onnx_impl.h"

#define FAIL(code, ...) return osp__onnx_node_error(im, n, code, __VA_ARGS__)

/* A pattern's nodes, at most. */
#define PATTERN_MAX 10

static const osp_shape *shape_of(onnx_importer *im, int node) {
    return &osp__onnx_layer(im, node)->shape;
}

static int emit_bind(onnx_importer *im, const Osp__Onnx__NodeProto *n, const char *type,
                     const int *inputs, int n_inputs, const char *keys) {
    int id = osp__onnx_emit(im, n, NULL, type, inputs, n_inputs, keys);
    return id < 0 ? id : osp__onnx_set_layer(im, n, id);
}

/* ---- the graph around a node ---- */

static onnx_value *value(onnx_importer *im, const char *name) {
    return name && *name ? osp__onnx_value_find(im, name) : NULL;
}

/* The one node that reads the value of n's first output, if n's output has
 * exactly that one reader; NULL otherwise. (Found in constant time, so that
 * a hostile chain of candidate nodes stays linear.) */
static const Osp__Onnx__NodeProto *only_reader(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    onnx_value *v = n->n_output ? value(im, n->output[0]) : NULL;
    if (!v || v->uses != 1 || v->reader < 0 || (size_t)v->reader >= im->graph->n_node) return NULL;
    return im->graph->node[v->reader];
}

static int is_op(const Osp__Onnx__NodeProto *n, const char *op) {
    return n && n->op_type && !strcmp(n->op_type, op) && (!n->domain || !*n->domain ||
                                                           !strcmp(n->domain, "ai.onnx"));
}

/* The node (of operator op) that makes n's input i, or NULL. */
static const Osp__Onnx__NodeProto *producer(onnx_importer *im, const Osp__Onnx__NodeProto *n,
                                            size_t i, const char *op) {
    onnx_value *v = n && i < n->n_input ? value(im, n->input[i]) : NULL;
    if (!v || v->producer < 0 || (size_t)v->producer >= im->graph->n_node) return NULL;
    const Osp__Onnx__NodeProto *p = im->graph->node[v->producer];
    return is_op(p, op) ? p : NULL;
}

/* Input i names the value `name`. */
static int reads(const Osp__Onnx__NodeProto *n, size_t i, const char *name) {
    return i < n->n_input && n->input[i] && name && !strcmp(n->input[i], name);
}

/* A constant by name: an initializer or a folded value, or the value of a
 * Constant node not yet folded (the import order may reach it later).
 * Copied into out (free with osp__onnx_const_free); 0 if not constant. */
static int constant(onnx_importer *im, const char *name, onnx_const *out) {
    memset(out, 0, sizeof *out);
    onnx_value *v = value(im, name);
    if (!v) return 0;
    const onnx_const *c = NULL;
    onnx_const tmp;
    if (v->kind == ONNX_VAL_CONST) {
        c = &v->c;
    } else if (v->producer >= 0 && is_op(im->graph->node[v->producer], "Constant")) {
        const Osp__Onnx__AttributeProto *a = osp__onnx_attr(im->graph->node[v->producer], "value");
        if (!a || !a->t || osp__onnx_const_from_tensor(im, a->t, &tmp)) return 0;
        if (tmp.is_int) {
            osp__onnx_const_free(&tmp);
            return 0;
        }
        *out = tmp;
        return 1;
    }
    if (!c || c->is_int) return 0;
    if (osp__onnx_const_alloc(out, c->ndim, c->dim, 0)) return 0;
    for (int64_t k = 0; k < c->numel; k++) out->f[k] = c->f[k];
    return 1;
}

/* Input i is a constant scalar (of any rank, one value) near want. */
static int scalar_near(onnx_importer *im, const Osp__Onnx__NodeProto *n, size_t i, double want,
                       double tol, double *got) {
    onnx_const c;
    if (i >= n->n_input || !constant(im, n->input[i], &c)) return 0;
    int ok = c.numel == 1 && fabs(c.f[0] - want) <= tol;
    if (got && c.numel == 1) *got = c.f[0];
    osp__onnx_const_free(&c);
    return ok;
}

/* For a two-input node reading `from`: the index of its other input. */
static int other_input(const Osp__Onnx__NodeProto *n, const char *from) {
    if (n->n_input != 2) return -1;
    return reads(n, 0, from) ? 1 : reads(n, 1, from) ? 0 : -1;
}

/* Binds the outputs of the pattern's nodes to layer id. */
static int bind_all(onnx_importer *im, const Osp__Onnx__NodeProto *const *nodes, int count,
                    int id) {
    for (int i = 0; i < count; i++) {
        int rc = osp__onnx_set_layer(im, nodes[i], id);
        if (rc) return rc;
    }
    return OSP_OK;
}

/* Outputs after the first must not be read by the rest of the graph. */
static int only_first_output(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    for (size_t o = 1; o < n->n_output; o++) {
        onnx_value *v = value(im, n->output[o]);
        if (v && v->uses) FAIL(OSP_ENOTSUP, "its output %zu ('%s') is used; osprey computes only "
                               "the first", o, n->output[o]);
    }
    return OSP_OK;
}

/* ---- GELU ---- */

/* x / sqrt 2 (Div) or x * (1 / sqrt 2) (Mul), then Erf, Add 1, Mul by x,
 * Mul by 0.5, each operand in either order. n is the first node; returns
 * 1 and fills nodes (5) on a match. */
static int match_gelu(onnx_importer *im, const Osp__Onnx__NodeProto *n,
                      const Osp__Onnx__NodeProto **nodes, const char **x_name) {
    if (n->n_input != 2 || !n->n_output) return 0;
    int xi;
    if (is_op(n, "Div")) {
        if (!scalar_near(im, n, 1, sqrt(2.0), 1e-4, NULL)) return 0;
        xi = 0;
    } else if (is_op(n, "Mul")) {
        xi = scalar_near(im, n, 1, sqrt(0.5), 1e-4, NULL) ? 0
             : scalar_near(im, n, 0, sqrt(0.5), 1e-4, NULL) ? 1 : -1;
        if (xi < 0) return 0;
    } else return 0;
    const char *x = n->input[xi];
    const Osp__Onnx__NodeProto *erf = only_reader(im, n);
    if (!is_op(erf, "Erf")) return 0;
    const Osp__Onnx__NodeProto *add = only_reader(im, erf);
    int k = add && is_op(add, "Add") ? other_input(add, erf->output[0]) : -1;
    if (k < 0 || !scalar_near(im, add, (size_t)k, 1.0, 1e-6, NULL)) return 0;
    const Osp__Onnx__NodeProto *mx = only_reader(im, add);
    k = mx && is_op(mx, "Mul") ? other_input(mx, add->output[0]) : -1;
    if (k < 0 || !reads(mx, (size_t)k, x)) return 0;
    const Osp__Onnx__NodeProto *half = only_reader(im, mx);
    k = half && is_op(half, "Mul") ? other_input(half, mx->output[0]) : -1;
    if (k < 0 || !scalar_near(im, half, (size_t)k, 0.5, 1e-6, NULL)) return 0;
    nodes[0] = n, nodes[1] = erf, nodes[2] = add, nodes[3] = mx, nodes[4] = half;
    *x_name = x;
    return 1;
}

static int try_gelu(onnx_importer *im, const Osp__Onnx__NodeProto *n, int *handled) {
    const Osp__Onnx__NodeProto *nodes[5];
    const char *x;
    if (!match_gelu(im, n, nodes, &x)) return OSP_OK;
    onnx_value *xv = value(im, x);
    if (!xv || xv->kind != ONNX_VAL_LAYER) return OSP_OK;
    *handled = 1;
    int id = osp__onnx_emit(im, nodes[4], NULL, "gelu", &xv->node, 1, "");
    return id < 0 ? id : bind_all(im, nodes, 5, id);
}

/* The only reader of n's output, if it is a node of operator op whose other
 * input is the value `other` (by name) or, with other NULL, a constant
 * scalar near want; either operand order. */
static const Osp__Onnx__NodeProto *next_binary(onnx_importer *im, const Osp__Onnx__NodeProto *n,
                                               const char *op, const char *other, double want) {
    const Osp__Onnx__NodeProto *r = only_reader(im, n);
    int k = r && is_op(r, op) ? other_input(r, n->output[0]) : -1;
    if (k < 0) return NULL;
    if (other) return reads(r, (size_t)k, other) ? r : NULL;
    return scalar_near(im, r, (size_t)k, want, 1e-6 * fabs(want) + 1e-7, NULL) ? r : NULL;
}

/* PyTorch's tanh GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))):
 * Mul(x, x), Mul by x, Mul by 0.044715, Add x, Mul by sqrt(2/pi), Tanh,
 * Add 1, Mul by x, Mul by 0.5, each operand in either order. n is the
 * first node; nodes gets the nine on a match. */
static int match_gelu_tanh(onnx_importer *im, const Osp__Onnx__NodeProto *n,
                           const Osp__Onnx__NodeProto **nodes) {
    if (!is_op(n, "Mul") || n->n_input != 2 || !reads(n, 1, n->input[0])) return 0;
    const char *x = n->input[0];
    nodes[0] = n;
    if (!(nodes[1] = next_binary(im, n, "Mul", x, 0)) ||
        !(nodes[2] = next_binary(im, nodes[1], "Mul", NULL, 0.044715)) ||
        !(nodes[3] = next_binary(im, nodes[2], "Add", x, 0)) ||
        !(nodes[4] = next_binary(im, nodes[3], "Mul", NULL, 0.79788456080286535588)))
        return 0;
    nodes[5] = only_reader(im, nodes[4]);
    if (!is_op(nodes[5], "Tanh")) return 0;
    return (nodes[6] = next_binary(im, nodes[5], "Add", NULL, 1.0)) &&
           (nodes[7] = next_binary(im, nodes[6], "Mul", x, 0)) &&
           (nodes[8] = next_binary(im, nodes[7], "Mul", NULL, 0.5));
}

static int try_gelu_tanh(onnx_importer *im, const Osp__Onnx__NodeProto *n, int *handled) {
    const Osp__Onnx__NodeProto *nodes[9];
    onnx_value *xv = n->n_input == 2 ? value(im, n->input[0]) : NULL;
    if (!xv || xv->kind != ONNX_VAL_LAYER || !match_gelu_tanh(im, n, nodes)) return OSP_OK;
    *handled = 1;
    int id = osp__onnx_emit(im, nodes[8], NULL, "gelu", &xv->node, 1, "approximate = tanh\n");
    return id < 0 ? id : bind_all(im, nodes, 9, id);
}

/* ---- LayerNorm ---- */

/* The axes of a ReduceMean (attribute, or opset 18's input), as per-sample
 * axes from `first` to the last, and keepdims: 1 on a match. */
static int reduce_last_axes(onnx_importer *im, const Osp__Onnx__NodeProto *n, int rank,
                            int *first) {
    if (!osp__onnx_attr_int(n, "keepdims", 1)) return 0;
    size_t na;
    const int64_t *axes = osp__onnx_attr_ints(n, "axes", &na);
    int64_t buf[OSP_MAX_DIMS];
    if (!axes && n->n_input > 1) {
        const onnx_const *c = osp__onnx_const_input(im, n, 1);
        if (!c || !c->is_int || c->numel < 1 || c->numel > OSP_MAX_DIMS) return 0;
        for (int64_t k = 0; k < c->numel; k++) buf[k] = c->i[k];
        axes = buf;
        na = (size_t)c->numel;
    }
    if (!axes || na < 1 || (int)na >= rank) return 0;
    unsigned seen = 0;
    int lo = rank;
    for (size_t k = 0; k < na; k++) {
        int64_t a = axes[k] < 0 ? axes[k] + rank : axes[k];
        if (a < 1 || a >= rank || (seen & (1u << a))) return 0;
        seen |= 1u << a;
        lo = a < lo ? (int)a : lo;
    }
    if ((int)na != rank - lo) return 0; /* the last axes, all of them */
    *first = lo - 1;
    return 1;
}

typedef struct ln_match {
    const Osp__Onnx__NodeProto *nodes[PATTERN_MAX];
    int count;
    int axis; /* per-sample */
    double eps;
    onnx_const weight, bias; /* numel 0 when absent */
} ln_match;

/* ReduceMean(x) -> Sub(x, mean) -> Pow(d, 2) -> ReduceMean -> Add(eps) ->
 * Sqrt -> Div(d, std) [-> Mul(weight) [-> Add(bias)]]. */
static int match_layernorm(onnx_importer *im, const Osp__Onnx__NodeProto *n, int x_node,
                           ln_match *m) {
    memset(m, 0, sizeof *m);
    const osp_shape *xs = shape_of(im, x_node);
    int rank = xs->ndim + 1, axis2;
    if (!is_op(n, "ReduceMean") || !reduce_last_axes(im, n, rank, &m->axis)) return 0;
    const char *x = n->input[0];
    const Osp__Onnx__NodeProto *sub = only_reader(im, n);
    if (!is_op(sub, "Sub") || !reads(sub, 0, x) || !reads(sub, 1, n->output[0])) return 0;
    /* the centred values feed Pow and Div, nothing else */
    onnx_value *d = value(im, sub->output[0]);
    if (!d || d->uses != 2) return 0;
    /* Pow is the reader the import recorded, or found back from Div:
     * Div <- Sqrt <- Add <- ReduceMean <- Pow; the chain is checked forward
     * below. */
    const Osp__Onnx__NodeProto *pow = d->reader >= 0 ? im->graph->node[d->reader] : NULL;
    if (is_op(pow, "Div")) {
        const Osp__Onnx__NodeProto *b = producer(im, pow, 1, "Sqrt");
        b = producer(im, b, 0, "Add");
        const Osp__Onnx__NodeProto *r = producer(im, b, 0, "ReduceMean");
        pow = producer(im, r ? r : producer(im, b, 1, "ReduceMean"), 0, "Pow");
    }
    if (!is_op(pow, "Pow") || !reads(pow, 0, sub->output[0]) ||
        !scalar_near(im, pow, 1, 2.0, 0.0, NULL))
        return 0;
    const Osp__Onnx__NodeProto *var = only_reader(im, pow);
    if (!is_op(var, "ReduceMean") || !reduce_last_axes(im, var, rank, &axis2) || axis2 != m->axis)
        return 0;
    const Osp__Onnx__NodeProto *add = only_reader(im, var);
    int k = add && is_op(add, "Add") ? other_input(add, var->output[0]) : -1;
    if (k < 0 || !scalar_near(im, add, (size_t)k, 1e-5, 1.0, &m->eps) || !(m->eps > 0) ||
        m->eps > 1.0)
        return 0;
    const Osp__Onnx__NodeProto *sq = only_reader(im, add);
    const Osp__Onnx__NodeProto *div = is_op(sq, "Sqrt") ? only_reader(im, sq) : NULL;
    if (!is_op(div, "Div") || !reads(div, 0, sub->output[0]) || !reads(div, 1, sq->output[0]))
        return 0;
    const Osp__Onnx__NodeProto *list[] = {n, sub, pow, var, add, sq, div};
    memcpy(m->nodes, list, sizeof list);
    m->count = 7;
    int64_t norm = 1;
    for (int a = m->axis; a < xs->ndim; a++) norm *= xs->dim[a];
    /* the affine part, when its constants have the normalised values' count */
    const Osp__Onnx__NodeProto *mul = only_reader(im, div);
    k = mul && is_op(mul, "Mul") ? other_input(mul, div->output[0]) : -1;
    if (k < 0 || !constant(im, mul->input[k], &m->weight)) return 1;
    if (m->weight.numel != norm || m->weight.ndim > xs->ndim - m->axis) {
        osp__onnx_const_free(&m->weight);
        return 1;
    }
    m->nodes[m->count++] = mul;
    const Osp__Onnx__NodeProto *badd = only_reader(im, mul);
    k = badd && is_op(badd, "Add") ? other_input(badd, mul->output[0]) : -1;
    if (k < 0 || !constant(im, badd->input[k], &m->bias)) return 1;
    if (m->bias.numel != norm || m->bias.ndim > xs->ndim - m->axis) {
        osp__onnx_const_free(&m->bias);
        return 1;
    }
    m->nodes[m->count++] = badd;
    return 1;
}

/* Emits [layernorm] on x for the node n (the last of a pattern, or a
 * LayerNormalization) with weight and bias (numel 0: 1 and 0). */
static int emit_layernorm(onnx_importer *im, const Osp__Onnx__NodeProto *n, int x, int axis,
                          double eps, const onnx_const *w, const onnx_const *b) {
    const osp_shape *xs = shape_of(im, x);
    int64_t norm = 1;
    for (int a = axis; a < xs->ndim; a++) norm *= xs->dim[a];
    char keys[128];
    snprintf(keys, sizeof keys, "axis = %d\neps = %.9g\n", axis - xs->ndim, eps);
    int id = osp__onnx_emit(im, n, NULL, "layernorm", &x, 1, keys), rc;
    if (id < 0) return id;
    for (int which = 0; which < 2; which++) {
        const onnx_const *c = which ? b : w;
        float *data = osp_alloc(sizeof(float) * (size_t)norm);
        if (!data) return OSP_ENOMEM;
        for (int64_t k = 0; k < norm; k++)
            data[k] = c->numel ? (float)osp__onnx_const_get(c, k) : which ? 0.0f : 1.0f;
        if ((rc = osp__onnx_weight_add(im, id, which ? "bias" : "weight", data, norm))) return rc;
    }
    return id;
}

static int try_layernorm(onnx_importer *im, const Osp__Onnx__NodeProto *n, int *handled) {
    onnx_value *xv = n->n_input ? value(im, n->input[0]) : NULL;
    if (!xv || xv->kind != ONNX_VAL_LAYER) return OSP_OK;
    ln_match m;
    if (!match_layernorm(im, n, xv->node, &m)) return OSP_OK;
    *handled = 1;
    int id = emit_layernorm(im, m.nodes[m.count - 1], xv->node, m.axis, m.eps, &m.weight, &m.bias);
    osp__onnx_const_free(&m.weight);
    osp__onnx_const_free(&m.bias);
    return id < 0 ? id : bind_all(im, m.nodes, m.count, id);
}

/* LayerNormalization (opset 17): axis over the whole tensor, from 1. */
static int map_layernormalization(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    onnx_value *xv = n->n_input ? value(im, n->input[0]) : NULL;
    if (!xv) FAIL(OSP_EFORMAT, "input 0 is missing");
    if (xv->kind != ONNX_VAL_LAYER) FAIL(OSP_ENOTSUP, "input 0 must be computed");
    int rc = only_first_output(im, n);
    if (rc) return rc;
    const osp_shape *xs = shape_of(im, xv->node);
    int rank = xs->ndim + 1;
    int64_t axis = osp__onnx_attr_int(n, "axis", -1);
    if (axis < 0) axis += rank;
    if (axis < 1 || axis >= rank)
        FAIL(OSP_ENOTSUP, "axis %lld of a rank-%d tensor (the normalised axes must follow the "
             "batch)", (long long)osp__onnx_attr_int(n, "axis", -1), rank);
    float eps = osp__onnx_attr_float(n, "epsilon", 1e-5f);
    if (!(eps > 0.0f) || eps > 1.0f) FAIL(OSP_ERANGE, "epsilon %g", (double)eps);
    int64_t norm = 1;
    for (int a = (int)axis - 1; a < xs->ndim; a++) norm *= xs->dim[a];
    onnx_const w, b;
    memset(&b, 0, sizeof b);
    if (!constant(im, n->n_input > 1 ? n->input[1] : NULL, &w))
        FAIL(OSP_ENOTSUP, "the scale must be a float constant");
    if (n->n_input > 2 && n->input[2] && *n->input[2] && !constant(im, n->input[2], &b)) {
        osp__onnx_const_free(&w);
        FAIL(OSP_ENOTSUP, "the bias must be a float constant");
    }
    if (w.numel != norm || (b.numel && b.numel != norm)) {
        int64_t wn = w.numel, bn = b.numel;
        osp__onnx_const_free(&w);
        osp__onnx_const_free(&b);
        FAIL(OSP_ESHAPE, "scale of %lld and bias of %lld values for %lld normalised values "
             "(osprey does not broadcast them)", (long long)wn, (long long)bn, (long long)norm);
    }
    int id = emit_layernorm(im, n, xv->node, (int)axis - 1, eps, &w, &b);
    osp__onnx_const_free(&w);
    osp__onnx_const_free(&b);
    return id < 0 ? id : osp__onnx_set_layer(im, n, id);
}

/* ---- MatMul ---- */

/* x (rank 3 or more) times a constant D x K matrix: [fc] last_axis = 1,
 * with the bias of an Add that alone reads the product, when that adds a
 * constant of K values. */
static int map_linear(onnx_importer *im, const Osp__Onnx__NodeProto *n, int x,
                      const onnx_const *B) {
    const osp_shape *xs = shape_of(im, x);
    int64_t D = B->dim[0], K = B->dim[1];
    if (xs->dim[xs->ndim - 1] != D)
        FAIL(OSP_ESHAPE, "a %lldx%lld matrix for a last axis of %lld", (long long)D, (long long)K,
             (long long)xs->dim[xs->ndim - 1]);
    if (K < 1 || K > (1 << 24)) FAIL(OSP_ERANGE, "%lld outputs (1 to 16777216)", (long long)K);
    const Osp__Onnx__NodeProto *add = only_reader(im, n), *last = n;
    onnx_const bias;
    memset(&bias, 0, sizeof bias);
    int k = add && is_op(add, "Add") ? other_input(add, n->output[0]) : -1;
    if (k >= 0 && constant(im, add->input[k], &bias)) {
        int row = bias.numel == K && bias.ndim >= 1 && bias.dim[bias.ndim - 1] == K &&
                  bias.ndim <= xs->ndim + 1;
        if (row) last = add;
        else osp__onnx_const_free(&bias);
    }
    char keys[96];
    snprintf(keys, sizeof keys, "outputs = %lld\nbias = %d\nlast_axis = 1\n", (long long)K,
             last == add ? 1 : 0);
    int id = osp__onnx_emit(im, n, NULL, "fc", &x, 1, keys), rc;
    float *w = id < 0 ? NULL : osp_alloc(sizeof(float) * (size_t)(K * D));
    if (!w) {
        osp__onnx_const_free(&bias);
        return id < 0 ? id : OSP_ENOMEM;
    }
    for (int64_t o = 0; o < K; o++)
        for (int64_t d = 0; d < D; d++) w[o * D + d] = (float)osp__onnx_const_get(B, d * K + o);
    if ((rc = osp__onnx_weight_add(im, id, "weight", w, K * D))) {
        osp__onnx_const_free(&bias);
        return rc;
    }
    if (last == add) {
        float *b = osp_alloc(sizeof(float) * (size_t)K);
        if (!b) rc = OSP_ENOMEM;
        for (int64_t o = 0; b && o < K; o++) b[o] = bias.f[o];
        osp__onnx_const_free(&bias);
        if (rc || (rc = osp__onnx_weight_add(im, id, "bias", b, K))) return rc;
        if ((rc = osp__onnx_set_layer(im, add, id))) return rc;
    }
    return osp__onnx_set_layer(im, n, id);
}

/* ---- attention ---- */

typedef struct att_match {
    const Osp__Onnx__NodeProto *scores, *scale, *softmax, *context;
    double scale_value;
} att_match;

/* The softmax of a rank-r value runs over its last axis. */
static int softmax_last(onnx_importer *im, const Osp__Onnx__NodeProto *n, int rank) {
    int64_t axis = osp__onnx_attr_int(n, "axis", im->opset >= 13 ? -1 : 1);
    return axis == -1 || axis == rank - 1;
}

/* MatMul(Q, K^T) [-> Mul or Div by a constant scalar] -> Softmax over the
 * last axis -> MatMul(., V), from the first MatMul; each value read only by
 * the next node, Q and K^T computed, of one rank, with the same leading
 * axes, and V not a constant. */
static int match_attention(onnx_importer *im, const Osp__Onnx__NodeProto *mm, att_match *m) {
    memset(m, 0, sizeof *m);
    if (!is_op(mm, "MatMul") || mm->n_input != 2) return 0;
    onnx_value *q = value(im, mm->input[0]), *kt = value(im, mm->input[1]);
    if (!q || !kt || q->kind != ONNX_VAL_LAYER || kt->kind != ONNX_VAL_LAYER) return 0;
    const osp_shape *qs = shape_of(im, q->node), *ks = shape_of(im, kt->node);
    if (qs->ndim < 2 || ks->ndim != qs->ndim) return 0;
    for (int a = 0; a < qs->ndim - 2; a++)
        if (qs->dim[a] != ks->dim[a]) return 0;
    m->scores = mm;
    m->scale_value = 1.0;
    const Osp__Onnx__NodeProto *next = only_reader(im, mm);
    int k = next && (is_op(next, "Mul") || is_op(next, "Div")) ? other_input(next, mm->output[0])
                                                                  : -1;
    if (k >= 0) {
        double c;
        if (!scalar_near(im, next, (size_t)k, 0.0, INFINITY, &c) || !isfinite(c) || c == 0.0 ||
            (is_op(next, "Div") && k != 1))
            return 0;
        m->scale = next;
        m->scale_value = is_op(next, "Div") ? 1.0 / c : c;
        next = only_reader(im, next);
    }
    if (!is_op(next, "Softmax") || !softmax_last(im, next, osp__onnx_layout_rank(im, q)))
        return 0;
    m->softmax = next;
    next = only_reader(im, next);
    if (!is_op(next, "MatMul") || next->n_input != 2 || !reads(next, 0, m->softmax->output[0]))
        return 0;
    onnx_const c;
    if (constant(im, next->input[1], &c)) {
        osp__onnx_const_free(&c);
        return 0;
    }
    onnx_value *v = value(im, next->input[1]);
    if (!v || v->kind == ONNX_VAL_CONST) return 0;
    if (v->kind == ONNX_VAL_LAYER) { /* known already: V must fit [attention] */
        if (!osp__onnx_layout_same(&v->layout, &q->layout)) return 0;
        const osp_shape *vs = shape_of(im, v->node);
        if (vs->ndim != qs->ndim) return 0;
        for (int a = 0; a < qs->ndim - 2; a++)
            if (vs->dim[a] != qs->dim[a]) return 0;
    }
    m->context = next;
    return 1;
}

/* From the second MatMul: the first, when n closes a pattern that
 * match_attention accepted. */
static int closes_attention(onnx_importer *im, const Osp__Onnx__NodeProto *n, att_match *m) {
    onnx_value *p = n->n_input == 2 ? value(im, n->input[0]) : NULL;
    if (!p || p->producer < 0 || !is_op(im->graph->node[p->producer], "Softmax")) return 0;
    const Osp__Onnx__NodeProto *sm = im->graph->node[p->producer];
    onnx_value *s = sm->n_input ? value(im, sm->input[0]) : NULL;
    if (!s || s->producer < 0) return 0;
    const Osp__Onnx__NodeProto *prev = im->graph->node[s->producer];
    if (!is_op(prev, "MatMul")) {
        onnx_value *t = NULL;
        for (size_t i = 0; i < prev->n_input && i < 2 && !t; i++) {
            onnx_value *u = value(im, prev->input[i]);
            if (u && u->producer >= 0 && is_op(im->graph->node[u->producer], "MatMul")) t = u;
        }
        if (!t) return 0;
        prev = im->graph->node[t->producer];
    }
    return match_attention(im, prev, m) && m->context == n;
}

/* The first MatMul of an attention: its nodes up to the softmax are
 * bound to a stand-in (Q's layer) and skipped; the second MatMul, where V
 * is known, emits the [attention]. */
static int try_attention(onnx_importer *im, const Osp__Onnx__NodeProto *n, int *handled) {
    att_match m;
    if (match_attention(im, n, &m)) {
        *handled = 1;
        int stand_in = value(im, n->input[0])->node, rc;
        if ((rc = osp__onnx_set_layer(im, m.scores, stand_in))) return rc;
        if (m.scale && (rc = osp__onnx_set_layer(im, m.scale, stand_in))) return rc;
        return osp__onnx_set_layer(im, m.softmax, stand_in);
    }
    if (!closes_attention(im, n, &m)) return OSP_OK;
    *handled = 1;
    onnx_value *v = value(im, n->input[1]);
    if (!v || v->kind != ONNX_VAL_LAYER) FAIL(OSP_ENOTSUP, "attention values must be computed");
    int in[3] = {value(im, m.scores->input[0])->node, value(im, m.scores->input[1])->node, v->node};
    char keys[96];
    snprintf(keys, sizeof keys, "transposed_k = 1\nscale = %.9g\n", m.scale_value);
    return emit_bind(im, n, "attention", in, 3, keys);
}

static int try_matmul(onnx_importer *im, const Osp__Onnx__NodeProto *n, int *handled) {
    if (n->n_input != 2) return OSP_OK;
    int rc = try_attention(im, n, handled);
    if (rc || *handled) return rc;
    onnx_value *a = value(im, n->input[0]), *b = value(im, n->input[1]);
    if (!a || !b || a->kind != ONNX_VAL_LAYER) return OSP_OK;
    const osp_shape *as = shape_of(im, a->node);
    if (b->kind == ONNX_VAL_LAYER) {
        *handled = 1;
        const osp_shape *bs = shape_of(im, b->node);
        if (as->ndim != bs->ndim)
            FAIL(OSP_ENOTSUP, "operands of rank %d and %d: ONNX would broadcast the batch axis "
                 "against another", as->ndim + 1, bs->ndim + 1);
        int in[2] = {a->node, b->node};
        return emit_bind(im, n, "matmul", in, 2, "");
    }
    if (b->kind != ONNX_VAL_CONST || as->ndim < 2) return OSP_OK; /* N x D: [fc] as before */
    *handled = 1;
    if (b->c.ndim != 2) FAIL(OSP_ENOTSUP, "a constant second operand of rank %d (2 only)", b->c.ndim);
    return map_linear(im, n, a->node, &b->c);
}

/* ---- Einsum: the batched products attention writes with it ---- */

/* The equation without spaces, split into its two operands and output;
 * 0 unless it is "A,B->C" of letters only (no ellipsis, no third operand). */
static int einsum_terms(const char *eq, char *a, char *b, char *c, size_t cap) {
    char t[3][ONNX_MAX_RANK + 2];
    int k = 0;
    size_t len[3] = {0, 0, 0};
    for (const char *p = eq; *p; p++) {
        if (*p == ' ') continue;
        if (*p == ',' && k == 0) k = 1;
        else if (*p == '-' && p[1] == '>' && k == 1) k = 2, p++;
        else if (((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')) && len[k] <= ONNX_MAX_RANK)
            t[k][len[k]++] = *p;
        else return 0;
    }
    if (k != 2 || len[0] > ONNX_MAX_RANK || len[0] + 1 > cap) return 0;
    for (int i = 0; i < 3; i++) t[i][len[i]] = 0;
    memcpy(a, t[0], len[0] + 1);
    memcpy(b, t[1], len[1] + 1);
    memcpy(c, t[2], len[2] + 1);
    return 1;
}

/* "P ik, P kj -> P ij" is MatMul; "P ik, P jk -> P ij" is MatMul by the
 * second operand with its last two axes swapped (MaxViT's Q K^T); P is
 * the same leading axes, batch first, on both operands and the output.
 * Other equations are refused in one line. */
static int map_einsum(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    char buf[128], a[ONNX_MAX_RANK + 2], b[ONNX_MAX_RANK + 2], c[ONNX_MAX_RANK + 2];
    const Osp__Onnx__AttributeProto *attr = osp__onnx_attr(n, "equation");
    if (!attr || !attr->has_s || attr->s.len >= sizeof buf || memchr(attr->s.data, 0, attr->s.len))
        FAIL(OSP_ENOTSUP, "an equation of up to %zu characters is required", sizeof buf - 1);
    const char *eq = osp__onnx_attr_string(n, "equation", "", buf, sizeof buf);
    if (n->n_input != 2 || !einsum_terms(eq, a, b, c, sizeof a))
        FAIL(OSP_ENOTSUP, "equation '%s': osprey maps two operands of letters, A,B->C", eq);
    const size_t r = strlen(a);
    int ok = r >= 3 && strlen(b) == r && strlen(c) == r && !strncmp(a, b, r - 2) &&
             !strncmp(a, c, r - 2);
    for (size_t i = 0; ok && i < r; i++) /* the letters of a are distinct */
        for (size_t j = i + 1; j < r; j++) ok &= a[i] != a[j];
    int plain = 0, swapped = 0;
    if (ok) { /* ik,kj->ij or ik,jk->ij, j a new letter */
        const char i_ = a[r - 2], k_ = a[r - 1], x = b[r - 2], y = b[r - 1];
        plain = x == k_ && c[r - 2] == i_ && c[r - 1] == y && !strchr(a, y);
        swapped = y == k_ && c[r - 2] == i_ && c[r - 1] == x && !strchr(a, x);
    }
    if (!plain && !swapped)
        FAIL(OSP_ENOTSUP, "equation '%s': osprey maps batched matrix products only "
             "(...ik,...kj->...ij and ...ik,...jk->...ij)", eq);
    onnx_value *va = value(im, n->input[0]), *vb = value(im, n->input[1]);
    if (!va || !vb || va->kind != ONNX_VAL_LAYER || vb->kind != ONNX_VAL_LAYER)
        FAIL(OSP_ENOTSUP, "equation '%s' of a constant: both operands must be computed", eq);
    if (!osp__onnx_layout_plain(&va->layout) || !osp__onnx_layout_plain(&vb->layout))
        FAIL(OSP_ENOTSUP, "operands whose batch is not their first axis");
    const osp_shape *as = shape_of(im, va->node), *bs = shape_of(im, vb->node);
    if (as->ndim != (int)r - 1 || bs->ndim != (int)r - 1)
        FAIL(OSP_ESHAPE, "equation '%s' for operands of rank %d and %d", eq, as->ndim + 1,
             bs->ndim + 1);
    int in[2] = {va->node, vb->node};
    if (swapped) { /* K^T: the last two per-sample axes swapped */
        char keys[64];
        int len = snprintf(keys, sizeof keys, "perm = ");
        for (int d = 0; d < bs->ndim; d++) {
            const int from = d == bs->ndim - 2 ? d + 1 : d == bs->ndim - 1 ? d - 1 : d;
            len += snprintf(keys + len, sizeof keys - (size_t)len, "%s%d", d ? ", " : "", from);
        }
        snprintf(keys + len, sizeof keys - (size_t)len, "\n");
        const int t = osp__onnx_emit(im, n, "transposed", "transpose", &in[1], 1, keys);
        if (t < 0) return t;
        in[1] = t;
    }
    return emit_bind(im, n, "matmul", in, 2, "");
}

/* ---- Softmax (or LogSoftmax) over one axis ---- */

static int try_softmax(onnx_importer *im, const Osp__Onnx__NodeProto *n, int *handled) {
    onnx_value *xv = n->n_input ? value(im, n->input[0]) : NULL;
    if (!xv || xv->kind != ONNX_VAL_LAYER) return OSP_OK;
    const osp_shape *xs = shape_of(im, xv->node);
    int rank = xs->ndim + 1;
    int64_t axis = osp__onnx_attr_int(n, "axis", im->opset >= 13 ? -1 : 1);
    if (axis < 0) axis += rank;
    if (axis < 1 || axis >= rank) return OSP_OK; /* refused by the general mapping */
    /* Before opset 13 the softmax runs over the flattened axes from `axis`
     * on: one axis only when it is the last. */
    if (im->opset < 13 && axis != rank - 1) return OSP_OK;
    /* A softmax over every value of a sample stays the whole-sample one. */
    int whole = 1;
    for (int a = 1; a < rank; a++) whole &= a == axis || xs->dim[a - 1] == 1;
    if (whole) return OSP_OK;
    *handled = 1;
    char keys[32];
    snprintf(keys, sizeof keys, "axis = %lld\n%s", (long long)(axis - 1),
             !strcmp(n->op_type, "LogSoftmax") ? "log = 1\n" : "");
    return emit_bind(im, n, "softmax", &xv->node, 1, keys);
}

int osp__onnx_map_transformer(onnx_importer *im, const Osp__Onnx__NodeProto *n, int *handled) {
    *handled = 0;
    const char *op = n->op_type;
    if (!strcmp(op, "Mul")) {
        int rc = try_gelu_tanh(im, n, handled);
        if (rc || *handled) return rc;
    }
    if (!strcmp(op, "Div") || !strcmp(op, "Mul")) return try_gelu(im, n, handled);
    if (!strcmp(op, "ReduceMean")) return try_layernorm(im, n, handled);
    if (!strcmp(op, "MatMul")) return try_matmul(im, n, handled);
    if (!strcmp(op, "Einsum")) {
        *handled = 1;
        return map_einsum(im, n);
    }
    if (!strcmp(op, "Softmax") || !strcmp(op, "LogSoftmax")) return try_softmax(im, n, handled);
    if (!strcmp(op, "LayerNormalization")) {
        *handled = 1;
        return map_layernormalization(im, n);
    }
    if (!strcmp(op, "Erf") || !strcmp(op, "Gelu")) {
        *handled = 1;
        onnx_value *xv = n->n_input ? value(im, n->input[0]) : NULL;
        if (!xv) FAIL(OSP_EFORMAT, "input 0 is missing");
        if (xv->kind != ONNX_VAL_LAYER) FAIL(OSP_ENOTSUP, "input 0 must be computed");
        if (!strcmp(op, "Erf")) return emit_bind(im, n, "erf", &xv->node, 1, "");
        char buf[16];
        const char *approx = osp__onnx_attr_string(n, "approximate", "none", buf, sizeof buf);
        if (strcmp(approx, "none") && strcmp(approx, "tanh"))
            FAIL(OSP_ENOTSUP, "approximate '%s'", approx);
        return emit_bind(im, n, "gelu", &xv->node, 1,
                         strcmp(approx, "tanh") ? "" : "approximate = tanh\n");
    }
    return OSP_OK;
}
