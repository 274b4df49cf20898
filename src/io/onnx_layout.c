/* Values whose batch is not the first axis. nn.MultiheadAttention's export
 * transposes the batch to axis 1, merges it with the heads and the tokens
 * by Reshape, and brings it back first at the end. osprey stores every
 * tensor batch-major, so such a value is kept as its per-sample tensor: the
 * ONNX tensor with the batch factor removed, in ONNX's row-major order.
 * A Transpose then only reorders the per-sample axes, a Reshape is a
 * per-sample reshape when as many values precede the batch factor before
 * and after, and the operators that work within a sample (elementwise,
 * MatMul and Softmax on the last axes, Slice after the batch axis) run as
 * usual; every other operator on such a value is refused. */
#include <stdio.h>
#include <string.h>

#include "io/onnx_impl.h"

#define FAIL(code, ...) return osp__onnx_node_error(im, n, code, __VA_ARGS__)

int osp__onnx_layout_plain(const onnx_layout *l) { return l->outer == 0; }

int osp__onnx_layout_same(const onnx_layout *a, const onnx_layout *b) {
    return a->b == b->b && a->outer == b->outer && a->inner == b->inner;
}

static onnx_layout make(int b, int64_t outer, int64_t inner) {
    onnx_layout l = {0, 0, 0};
    if (b == 0 && outer == 1 && inner == 1) return l;
    l.b = b;
    l.outer = outer;
    l.inner = inner;
    return l;
}

/* The batch axis, and its per-sample factors (1, 1 when plain). */
static void unpack(const onnx_layout *l, int *b, int64_t *outer, int64_t *inner) {
    *b = l->outer ? l->b : 0;
    *outer = l->outer ? l->outer : 1;
    *inner = l->outer ? l->inner : 1;
}

/* 1 when the batch's axis also holds per-sample values. */
static int kept(const onnx_layout *l) { return l->outer && l->outer * l->inner > 1; }

static int onnx_rank(const onnx_layout *l, const osp_shape *s) {
    return kept(l) ? s->ndim : s->ndim + 1;
}

/* The per-sample axis of ONNX axis a (not the batch axis unless kept). */
static int ps_axis(const onnx_layout *l, int a) {
    int b;
    int64_t o, i;
    unpack(l, &b, &o, &i);
    if (kept(l)) return a;
    return a > b ? a - 1 : a;
}

static const osp_shape *shape_of(onnx_importer *im, int node) {
    return &osp__onnx_layer(im, node)->shape;
}

int osp__onnx_layout_rank(onnx_importer *im, const onnx_value *v) {
    return onnx_rank(&v->layout, shape_of(im, v->node));
}

int osp__onnx_layout_dims(onnx_importer *im, const onnx_value *v, int64_t *dims, int *rank) {
    const osp_shape *s = shape_of(im, v->node);
    int b;
    int64_t outer, inner;
    unpack(&v->layout, &b, &outer, &inner);
    *rank = onnx_rank(&v->layout, s);
    if (*rank > ONNX_MAX_RANK) return OSP_ERANGE;
    for (int a = 0; a < *rank; a++)
        dims[a] = a == b ? osp__onnx_batch_times(outer * inner) : s->dim[ps_axis(&v->layout, a)];
    return OSP_OK;
}

/* Binds n's output to node with layout l. */
static int bind(onnx_importer *im, const Osp__Onnx__NodeProto *n, int node, onnx_layout l) {
    int rc = osp__onnx_set_layer(im, n, node);
    if (rc) return rc;
    osp__onnx_value_find(im, n->output[0])->layout = l;
    return OSP_OK;
}

static int map_transpose(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_value *x) {
    const osp_shape *xs = shape_of(im, x->node);
    int rank = onnx_rank(&x->layout, xs), b;
    int64_t outer, inner;
    unpack(&x->layout, &b, &outer, &inner);
    size_t np;
    const int64_t *attr = osp__onnx_attr_ints(n, "perm", &np);
    int64_t perm[ONNX_MAX_RANK];
    if (rank > ONNX_MAX_RANK) FAIL(OSP_ERANGE, "input of rank %d", rank);
    if (attr && (int)np != rank) FAIL(OSP_EFORMAT, "perm of %zu axes for rank %d", np, rank);
    int seen[ONNX_MAX_RANK] = {0}, nb = -1;
    for (int a = 0; a < rank; a++) {
        perm[a] = attr ? attr[a] : rank - 1 - a;
        if (perm[a] < 0 || perm[a] >= rank || seen[perm[a]]) FAIL(OSP_EFORMAT, "bad perm");
        seen[perm[a]] = 1;
        if (perm[a] == b) nb = a;
    }
    onnx_layout out = make(nb, outer, inner);
    char keys[160];
    int len = snprintf(keys, sizeof keys, "perm = "), identity = 1, m = 0;
    for (int a = 0; a < rank; a++) {
        if (perm[a] == b && !kept(&x->layout)) continue;
        int p = ps_axis(&x->layout, (int)perm[a]);
        identity &= p == m;
        len += snprintf(keys + len, sizeof keys - (size_t)len, "%s%d", m ? ", " : "", p);
        m++;
    }
    snprintf(keys + len, sizeof keys - (size_t)len, "\n");
    im->cur_layout = out;
    if (identity) return bind(im, n, x->node, out);
    int id = osp__onnx_emit(im, n, NULL, "transpose", &x->node, 1, keys);
    return id < 0 ? id : bind(im, n, id, out);
}

/* 1 when the plain Reshape mapping covers it: the batch stays first, alone
 * (a leading -1 stands for the batch only when the rest is one sample of
 * `size` values: else it merges the batch with per-sample values). */
static int reshape_plain(const onnx_const *s, int allow_zero, const osp_shape *xs) {
    if (s->numel < 1) return 1;
    int64_t first = s->i[0], rest = 1, size = 1;
    for (int64_t k = 1; k < s->numel; k++) {
        if (osp__onnx_batch_factor(s->i[k])) return 0;
        int64_t d = s->i[k] == 0 && !allow_zero && k <= xs->ndim ? xs->dim[k - 1] : s->i[k];
        if (d < 1 || rest > ((int64_t)1 << 40) / d) return 1; /* the plain mapping says no */
        rest *= d;
    }
    for (int a = 0; a < xs->ndim; a++) size *= xs->dim[a];
    if (first == -1) return rest == size;
    return first == ONNX_BATCH || (first == 0 && !allow_zero) || !osp__onnx_batch_factor(first);
}

static int map_reshape(onnx_importer *im, const Osp__Onnx__NodeProto *n, onnx_value *x,
                       const onnx_const *s) {
    const osp_shape *xs = shape_of(im, x->node);
    int64_t dims[ONNX_MAX_RANK], t[ONNX_MAX_RANK];
    int rank, b, rc = osp__onnx_layout_dims(im, x, dims, &rank);
    if (rc) FAIL(rc, "input of too high a rank");
    int64_t outer, inner;
    unpack(&x->layout, &b, &outer, &inner);
    if (s->numel > ONNX_MAX_RANK) FAIL(OSP_ENOTSUP, "a target of %lld axes", (long long)s->numel);
    int allow_zero = (int)osp__onnx_attr_int(n, "allowzero", 0);
    int nt = (int)s->numel, nb = -1, infer = -1;
    int64_t k = 0, known = 1, size = 1;
    for (int a = 0; a < xs->ndim; a++) size *= xs->dim[a];
    for (int a = 0; a < nt; a++) {
        int64_t d = s->i[a];
        if (d == 0 && !allow_zero) {
            if (a >= rank) FAIL(OSP_EFORMAT, "copies axis %d of a rank-%d input", a, rank);
            d = dims[a];
        }
        t[a] = d;
        if (osp__onnx_batch_factor(d)) {
            if (nb >= 0) FAIL(OSP_ENOTSUP, "a target with the batch size in two axes");
            nb = a;
            k = osp__onnx_batch_factor(d);
        } else if (d == -1) {
            if (infer >= 0) FAIL(OSP_EFORMAT, "two -1 in the target");
            infer = a;
        } else if (d < 1 || d > ((int64_t)1 << 28) / known)
            FAIL(OSP_ENOTSUP, "target dimension %lld", (long long)s->i[a]);
        else known *= d;
    }
    if (nb < 0 && infer >= 0 && known && size % known == 0) {
        /* the -1 holds the batch with the rest of a sample (swin's
         * attn.view(-1, heads, N, N) after the mask: batch x windows) */
        nb = infer;
        k = size / known;
        infer = -1;
    }
    if (nb < 0)
        FAIL(OSP_ENOTSUP, "a reshape that mixes samples: no axis of the target holds the batch "
             "(export the model with a symbolic batch)");
    if (k > ((int64_t)1 << 28) / known) FAIL(OSP_ENOTSUP, "a target of too many values");
    known *= k;
    if (infer >= 0) {
        if (size % known) FAIL(OSP_ESHAPE, "a target that does not divide %lld values",
                               (long long)size);
        t[infer] = size / known;
    } else if (known != size)
        FAIL(OSP_ESHAPE, "a target of %lld values per sample for %lld", (long long)known,
             (long long)size);
    /* as many values before the batch factor in the target as in the input */
    int64_t before_in = outer, before_out = 1;
    for (int a = 0; a < b; a++) before_in *= dims[a];
    for (int a = 0; a < nb; a++) before_out *= t[a];
    if (before_in % before_out || k % (before_in / before_out))
        FAIL(OSP_ENOTSUP, "a reshape that mixes samples: %lld values precede the batch in the "
             "input but not in the target", (long long)before_in);
    int64_t o2 = before_in / before_out, i2 = k / o2;
    onnx_layout out = make(nb, o2, i2);
    char keys[200];
    int len = snprintf(keys, sizeof keys, "shape = "), m = 0, same = 1;
    for (int a = 0; a < nt; a++) {
        int64_t d = a == nb ? o2 * i2 : t[a];
        if (a == nb && d == 1) continue;
        if (m >= OSP_MAX_DIMS) FAIL(OSP_ENOTSUP, "more than %d axes per sample", OSP_MAX_DIMS);
        same &= m < xs->ndim && xs->dim[m] == d;
        len += snprintf(keys + len, sizeof keys - (size_t)len, "%s%lld", m ? "x" : "",
                        (long long)d);
        m++;
    }
    same &= m == xs->ndim;
    if (!m) len += snprintf(keys + len, sizeof keys - (size_t)len, "1");
    snprintf(keys + len, sizeof keys - (size_t)len, "\n");
    im->cur_layout = out;
    if (same) return bind(im, n, x->node, out);
    int id = osp__onnx_emit(im, n, NULL, "reshape", &x->node, 1, keys);
    return id < 0 ? id : bind(im, n, id, out);
}

/* Axis given as `raw` of an ONNX rank-`rank` value with layout l: it must
 * come after the batch axis, and be negative when the batch's axis also
 * holds per-sample values (the mappings count axes from the end then). */
static int axis_ok(const onnx_layout *l, int rank, int64_t raw) {
    int b;
    int64_t o, i;
    unpack(l, &b, &o, &i);
    int64_t a = raw < 0 ? raw + rank : raw;
    return a > b && a < rank && (raw < 0 || !kept(l));
}

static int is_any(const char *op, const char *const *list) {
    for (int i = 0; list[i]; i++)
        if (!strcmp(op, list[i])) return 1;
    return 0;
}

int osp__onnx_layout_map(onnx_importer *im, const Osp__Onnx__NodeProto *n, int *handled) {
    static const char *const unary[] = {"Relu", "Sigmoid", "Tanh", "Erf", "Gelu", "Identity",
                                        "Dropout", "Clip", "LeakyRelu", "HardSigmoid",
                                        "HardSwish", NULL};
    static const char *const binary[] = {"Add", "Sub", "Mul", "Div", NULL};
    *handled = 0;
    im->cur_layout = (onnx_layout){0, 0, 0};
    const char *op = n->op_type;
    onnx_value *x = NULL;
    int mixed = 0;
    for (size_t i = 0; i < n->n_input; i++) {
        onnx_value *v = osp__onnx_input(im, n, i);
        if (!v || v->kind != ONNX_VAL_LAYER) continue;
        if (!x) x = v;
        else if (!osp__onnx_layout_same(&x->layout, &v->layout)) mixed = 1;
    }
    if (!x) return OSP_OK;
    onnx_value *x0 = osp__onnx_input(im, n, 0);
    if (!strcmp(op, "Transpose") && x0 == x) {
        size_t np;
        const int64_t *perm = osp__onnx_attr_ints(n, "perm", &np);
        if (osp__onnx_layout_plain(&x->layout) && perm && np && perm[0] == 0) return OSP_OK;
        *handled = 1;
        return map_transpose(im, n, x);
    }
    if (!strcmp(op, "Reshape") && x0 == x) {
        const onnx_const *s = osp__onnx_const_input(im, n, 1);
        int allow_zero = (int)osp__onnx_attr_int(n, "allowzero", 0);
        if (osp__onnx_layout_plain(&x->layout) &&
            (!s || !s->is_int || s->ndim != 1 ||
             reshape_plain(s, allow_zero, shape_of(im, x->node))))
            return OSP_OK;
        *handled = 1;
        if (!s || !s->is_int || s->ndim != 1)
            FAIL(OSP_ENOTSUP, "the target shape must be a constant list of integers");
        return map_reshape(im, n, x, s);
    }
    int plain = 1;
    for (size_t i = 0; i < n->n_input; i++) {
        onnx_value *v = osp__onnx_input(im, n, i);
        if (v && v->kind == ONNX_VAL_LAYER && !osp__onnx_layout_plain(&v->layout)) {
            x = v;
            plain = 0;
        }
    }
    if (plain) return OSP_OK;
    const onnx_layout *l = &x->layout;
    int rank = onnx_rank(l, shape_of(im, x->node));
    if (mixed)
        FAIL(OSP_ENOTSUP, "reads values whose batch sits in different axes (osprey computes "
             "two values together only when their batch is in the same place)");
    im->cur_layout = *l;
    int ok = 0;
    if (is_any(op, unary)) ok = 1;
    else if (is_any(op, binary)) {
        ok = 1;
        for (size_t i = 0; i < n->n_input; i++) {
            const onnx_const *c = osp__onnx_const_input(im, n, i);
            onnx_value *v = osp__onnx_input(im, n, i);
            /* a constant spans only axes after the batch's, or has 1
             * there (swin's relative position bias, 1 x heads x N x N) */
            for (int j = 0; c && j < c->ndim && j + rank - c->ndim <= l->b; j++)
                if (c->dim[j] != 1) ok = 0;
            /* two values broadcast from their last axes: of one rank */
            if (v && v->kind == ONNX_VAL_LAYER &&
                onnx_rank(&v->layout, shape_of(im, v->node)) != rank)
                ok = 0;
        }
    } else if (!strcmp(op, "MatMul") && n->n_input == 2) {
        onnx_value *w = osp__onnx_input(im, n, 1);
        ok = x0 && x0->kind == ONNX_VAL_LAYER && w &&
             (w->kind == ONNX_VAL_LAYER ? l->b < rank - 2 : l->b < rank - 1);
    } else if (!strcmp(op, "Gemm")) ok = x0 == x && rank == 2 && l->b == 0;
    else if (!strcmp(op, "Softmax") && x0 == x) {
        /* the last axis (before opset 13, the 2-D view from the last axis
         * on is that axis alone) */
        int64_t axis = osp__onnx_attr_int(n, "axis", im->opset >= 13 ? -1 : 1);
        if (axis < 0) axis += rank;
        if (axis == rank - 1 && axis > l->b) {
            *handled = 1;
            int id = osp__onnx_emit(im, n, NULL, "softmax", &x->node, 1, "axis = -1\n");
            return id < 0 ? id : bind(im, n, id, *l);
        }
    } else if (!strcmp(op, "Gather") && x0 == x) {
        /* one index of an axis other than the batch's: swin's q, k, v =
         * qkv[0], qkv[1], qkv[2] with the batch (and the windows) in axis 1 */
        const onnx_const *idx = osp__onnx_const_input(im, n, 1);
        int64_t a = osp__onnx_attr_int(n, "axis", 0);
        if (a < 0) a += rank;
        if (idx && idx->is_int && idx->ndim == 0 && a >= 0 && a < rank && a != l->b) {
            int p = ps_axis(l, (int)a);
            int64_t len = shape_of(im, x->node)->dim[p], at = idx->i[0];
            if (at < -len || at >= len)
                FAIL(OSP_ERANGE, "index %lld outside an axis of %lld", (long long)at,
                     (long long)len);
            onnx_layout out = make(a < l->b ? l->b - 1 : l->b, l->outer, l->inner);
            char keys[64];
            snprintf(keys, sizeof keys, "axis = %d\nindex = %lld\n", p, (long long)at);
            *handled = 1;
            im->cur_layout = out;
            int id = osp__onnx_emit(im, n, NULL, "gather", &x->node, 1, keys);
            return id < 0 ? id : bind(im, n, id, out);
        }
    } else if (!strcmp(op, "Slice") && x0 == x) {
        onnx_const axes = {0};
        int given, rc = osp__onnx_arg(im, n, "axes", &axes, &given);
        if (rc) return rc;
        ok = given && axes.is_int;
        for (int64_t j = 0; ok && j < axes.numel; j++) ok = axis_ok(l, rank, axes.i[j]);
        if (given) osp__onnx_const_free(&axes);
    }
    if (!ok)
        FAIL(OSP_ENOTSUP, "its input '%s' has the batch in axis %d (moved by a Transpose or "
             "Reshape); osprey computes %s there only within a sample, and this one is not",
             x->name, l->b, op);
    return OSP_OK;
}
