/* Operator set versions: the forms an operator takes across opsets 7 to 18,
 * in one place. Older opsets give some arguments as attributes that newer
 * ones take as inputs (Squeeze's axes until 13, Pad's pads until 11, Clip's
 * bounds until 11, Slice's starts and ends until 10, ReduceMean's axes
 * until 18); the mapping and the folding read them through
 * osp__onnx_arg, which picks the form of the model's opset, so both forms
 * reach the same layer. Attributes later opsets removed are checked
 * against the one value osprey computes, and an operator used outside the
 * opsets that define it is refused. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "io/onnx_impl.h"

#define FAIL(code, ...) return osp__onnx_node_error(im, n, code, __VA_ARGS__)

/* Arguments are axes, pads, bounds, starts and ends: a handful of values. */
#define ONNX_MAX_ARG 4096

/* An argument that is attribute `arg` before opset `since` (when
 * attr_before; otherwise absent before it) and input `input` from it. */
typedef struct arg_form {
    const char *op, *arg;
    int since, input, attr_before;
} arg_form;

static const arg_form arg_forms[] = {
    {"Pad", "pads", 11, 1, 1},
    {"Pad", "value", 11, 2, 1}, /* the input is named constant_value */
    {"Pad", "axes", 18, 3, 0},
    {"Slice", "starts", 10, 1, 1},
    {"Slice", "ends", 10, 2, 1},
    {"Slice", "axes", 10, 3, 1},
    {"Slice", "steps", 10, 4, 0},
    {"Clip", "min", 11, 1, 1},
    {"Clip", "max", 11, 2, 1},
    {"Squeeze", "axes", 13, 1, 1},
    {"Unsqueeze", "axes", 13, 1, 1},
    {"Split", "split", 13, 1, 1},
    {"ReduceSum", "axes", 13, 1, 1},
    {"ReduceMean", "axes", 18, 1, 1},
    {"ReduceMax", "axes", 18, 1, 1},
    {"ReduceMin", "axes", 18, 1, 1},
    {"ReduceProd", "axes", 18, 1, 1},
    {"ReduceL1", "axes", 18, 1, 1},
    {"ReduceL2", "axes", 18, 1, 1},
    {"ReduceLogSum", "axes", 18, 1, 1},
    {"ReduceLogSumExp", "axes", 18, 1, 1},
    {"ReduceSumSquare", "axes", 18, 1, 1},
    {"Upsample", "scales", 9, 1, 1},
    {"Dropout", "ratio", 12, 1, 1},
};

/* Attributes of older opsets: harmless when they hold `need` (or any value
 * when need is ANY_VALUE), refused otherwise with `what`. */
#define ANY_VALUE INT64_MIN
typedef struct old_attr {
    const char *op, *attr;
    int64_t need;
    const char *what;
} old_attr;

static const old_attr old_attrs[] = {
    {"BatchNormalization", "spatial", 1, "per-activation statistics (spatial = 0)"},
    {"BatchNormalization", "is_test", 1, "training mode (is_test = 0)"},
    {"BatchNormalization", "consumed_inputs", ANY_VALUE, NULL},
    {"Dropout", "is_test", 1, "training mode (is_test = 0)"},
    {"Gemm", "broadcast", ANY_VALUE, NULL}, /* osprey's C is a scalar or a row: either way */
};

/* Operators that exist only in part of 7..18 (until: first opset without). */
typedef struct op_span {
    const char *op;
    int since, until;
} op_span;

static const op_span op_spans[] = {
    {"Upsample", 7, 10}, /* deprecated at 10: Resize */
    {"Resize", 10, 99},
    {"HardSwish", 14, 99},
    {"Einsum", 12, 99},
};

static const arg_form *find_form(const char *op, const char *arg) {
    for (size_t i = 0; i < sizeof arg_forms / sizeof arg_forms[0]; i++)
        if (!strcmp(arg_forms[i].op, op) && !strcmp(arg_forms[i].arg, arg)) return &arg_forms[i];
    return NULL;
}

int osp__onnx_check_version(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    for (size_t i = 0; i < sizeof op_spans / sizeof op_spans[0]; i++) {
        const op_span *s = &op_spans[i];
        if (strcmp(s->op, n->op_type)) continue;
        if (im->opset < s->since) FAIL(OSP_EFORMAT, "%s is defined from opset %d, the model's is %d",
                                       s->op, s->since, im->opset);
        if (im->opset >= s->until)
            FAIL(OSP_ENOTSUP, "%s is deprecated from opset %d (the model's is %d); use Resize",
                 s->op, s->until, im->opset);
    }
    for (size_t i = 0; i < sizeof old_attrs / sizeof old_attrs[0]; i++) {
        const old_attr *o = &old_attrs[i];
        if (strcmp(o->op, n->op_type) || !osp__onnx_attr(n, o->attr) || o->need == ANY_VALUE)
            continue;
        if (osp__onnx_attr_int(n, o->attr, o->need) != o->need)
            FAIL(OSP_ENOTSUP, "attribute '%s': %s", o->attr, o->what);
    }
    /* An argument in the form of another opset: a malformed model, and one
     * whose value osprey would otherwise silently drop. */
    for (size_t i = 0; i < sizeof arg_forms / sizeof arg_forms[0]; i++) {
        const arg_form *f = &arg_forms[i];
        if (strcmp(f->op, n->op_type)) continue;
        if (im->opset >= f->since && f->attr_before && osp__onnx_attr(n, f->arg))
            FAIL(OSP_EFORMAT, "attribute '%s' belongs to opsets before %d; at opset %d it is "
                 "input %d", f->arg, f->since, im->opset, f->input);
        if (im->opset < f->since && f->input < (int)n->n_input && n->input[f->input] &&
            *n->input[f->input]) {
            if (f->attr_before)
                FAIL(OSP_EFORMAT, "input %d ('%s') is from opset %d; at opset %d '%s' is an "
                     "attribute", f->input, f->arg, f->since, im->opset, f->arg);
            FAIL(OSP_EFORMAT, "input %d ('%s') is from opset %d; the model's is %d", f->input,
                 f->arg, f->since, im->opset);
        }
    }
    return OSP_OK;
}

static int const_from_attr(onnx_importer *im, const Osp__Onnx__NodeProto *n,
                           const Osp__Onnx__AttributeProto *a, onnx_const *out) {
    int64_t len;
    int rc;
    switch (a->type) {
    case OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
        len = (int64_t)a->n_ints;
        if ((rc = osp__onnx_const_alloc(out, 1, &len, 1))) return rc;
        if (len) memcpy(out->i, a->ints, sizeof(int64_t) * (size_t)len);
        return OSP_OK;
    case OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
        len = (int64_t)a->n_floats;
        if ((rc = osp__onnx_const_alloc(out, 1, &len, 0))) return rc;
        if (len) memcpy(out->f, a->floats, sizeof(float) * (size_t)len);
        return OSP_OK;
    case OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT:
        if ((rc = osp__onnx_const_alloc(out, 0, NULL, 1))) return rc;
        out->i[0] = a->i;
        return OSP_OK;
    case OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT:
        if ((rc = osp__onnx_const_alloc(out, 0, NULL, 0))) return rc;
        out->f[0] = a->f;
        return OSP_OK;
    default:
        FAIL(OSP_EFORMAT, "attribute '%s' has the wrong type", a->name ? a->name : "?");
    }
}

int osp__onnx_arg(onnx_importer *im, const Osp__Onnx__NodeProto *n, const char *arg,
                  onnx_const *out, int *given) {
    const arg_form *f = find_form(n->op_type, arg);
    *given = 0;
    memset(out, 0, sizeof *out);
    if (!f) FAIL(OSP_EINVAL, "internal: no form of '%s' for %s", arg, n->op_type);
    int rc;
    if (im->opset < f->since) {
        const Osp__Onnx__AttributeProto *a = f->attr_before ? osp__onnx_attr(n, arg) : NULL;
        if (!a) return OSP_OK;
        if (a->n_ints > ONNX_MAX_ARG || a->n_floats > ONNX_MAX_ARG)
            FAIL(OSP_ERANGE, "attribute '%s' holds more than %d values", arg, ONNX_MAX_ARG);
        if ((rc = const_from_attr(im, n, a, out))) return rc;
    } else {
        onnx_value *v = osp__onnx_input(im, n, (size_t)f->input);
        if (!v) return OSP_OK;
        if (v->kind != ONNX_VAL_CONST)
            FAIL(OSP_ENOTSUP, "input %d ('%s', the %s) must be a constant", f->input, v->name, arg);
        if (v->c.numel > ONNX_MAX_ARG)
            FAIL(OSP_ERANGE, "input %d (the %s) holds %lld values (at most %d)", f->input, arg,
                 (long long)v->c.numel, ONNX_MAX_ARG);
        if (v->c.is_int) rc = osp__onnx_const_alloc(out, v->c.ndim, v->c.dim, 1);
        else rc = osp__onnx_const_alloc(out, v->c.ndim, v->c.dim, 0);
        if (rc) return rc;
        for (int64_t k = 0; k < v->c.numel; k++) {
            if (v->c.is_int) out->i[k] = v->c.i[k];
            else out->f[k] = v->c.f[k];
        }
    }
    *given = 1;
    return OSP_OK;
}

int osp__onnx_softmax_axis(onnx_importer *im, const Osp__Onnx__NodeProto *n, int rank,
                           int *axis, int *coerced) {
    /* Before 13, Softmax, LogSoftmax and Hardmax flatten the input to 2-D at
     * `axis` (default 1) and normalise each row; from 13, they normalise
     * along the one axis (default -1). */
    int old = im->opset < 13;
    int64_t a = osp__onnx_attr_int(n, "axis", old ? 1 : -1);
    if (a < -rank || a >= rank) FAIL(OSP_EFORMAT, "attribute 'axis' %lld for a rank-%d input",
                                     (long long)a, rank);
    *axis = (int)(a < 0 ? a + rank : a);
    *coerced = old;
    return OSP_OK;
}

int osp__onnx_split_sizes(onnx_importer *im, const Osp__Onnx__NodeProto *n, int64_t len,
                          int64_t *sizes, int *count) {
    int n_out = (int)n->n_output;
    if (n_out < 1 || n_out > ONNX_MAX_SPLIT) FAIL(OSP_ENOTSUP, "%d outputs (1 to %d)", n_out,
                                                    ONNX_MAX_SPLIT);
    onnx_const s;
    int given, rc;
    if ((rc = osp__onnx_arg(im, n, "split", &s, &given))) return rc;
    const Osp__Onnx__AttributeProto *num = osp__onnx_attr(n, "num_outputs");
    if (num && im->opset < 18) {
        if (given) osp__onnx_const_free(&s);
        FAIL(OSP_EFORMAT, "attribute 'num_outputs' is from opset 18; the model's is %d", im->opset);
    }
    if (given) {
        int ok = s.is_int && s.ndim <= 1 && s.numel == n_out;
        int64_t total = 0;
        for (int64_t k = 0; ok && k < s.numel; k++) {
            ok = s.i[k] >= 0 && s.i[k] <= len;
            sizes[k] = s.i[k];
            total += s.i[k];
        }
        osp__onnx_const_free(&s);
        if (num) FAIL(OSP_EFORMAT, "both 'split' and 'num_outputs'");
        if (!ok || total != len)
            FAIL(OSP_ESHAPE, "'split' does not divide an axis of %lld into %d parts",
                 (long long)len, n_out);
    } else if (num) {
        /* 18: parts of ceil(len / num_outputs), the last one smaller. */
        if (num->i != n_out || num->i < 1)
            FAIL(OSP_EFORMAT, "attribute 'num_outputs' %lld for %d outputs", (long long)num->i,
                 n_out);
        int64_t part = (len + n_out - 1) / n_out;
        for (int k = 0; k < n_out; k++) {
            int64_t left = len - part * k;
            sizes[k] = left < 0 ? 0 : left < part ? left : part;
        }
        if (part * (n_out - 1) >= len && n_out > 1)
            FAIL(OSP_ESHAPE, "an axis of %lld cannot give %d parts", (long long)len, n_out);
    } else {
        if (len % n_out) FAIL(OSP_ESHAPE, "an axis of %lld does not split evenly into %d parts",
                              (long long)len, n_out);
        for (int k = 0; k < n_out; k++) sizes[k] = len / n_out;
    }
    *count = n_out;
    return OSP_OK;
}

int osp__onnx_axes_arg(onnx_importer *im, const Osp__Onnx__NodeProto *n, int64_t *axes,
                       int *count) {
    onnx_const c;
    int given, rc = osp__onnx_arg(im, n, "axes", &c, &given);
    if (rc) return rc;
    *count = -1;
    if (!given) return OSP_OK;
    if (!c.is_int || c.ndim > 1 || c.numel > ONNX_MAX_RANK) {
        osp__onnx_const_free(&c);
        FAIL(OSP_EFORMAT, "axes must be a 1-D integer tensor of at most %d values", ONNX_MAX_RANK);
    }
    for (int64_t k = 0; k < c.numel; k++) axes[k] = c.i[k];
    *count = (int)c.numel;
    osp__onnx_const_free(&c);
    return OSP_OK;
}

int osp__onnx_clip_bounds(onnx_importer *im, const Osp__Onnx__NodeProto *n, double *lo,
                          double *hi) {
    static const char *const names[2] = {"min", "max"};
    *lo = -INFINITY;
    *hi = INFINITY;
    for (int k = 0; k < 2; k++) {
        onnx_const c;
        int given, rc = osp__onnx_arg(im, n, names[k], &c, &given);
        if (rc) return rc;
        if (!given) continue;
        double v = c.numel == 1 ? osp__onnx_const_get(&c, 0) : NAN;
        osp__onnx_const_free(&c);
        if (isnan(v)) FAIL(OSP_ENOTSUP, "'%s' must be one constant value", names[k]);
        /* Clip-6's defaults are the float range: no bound. */
        if (fabs(v) >= FLT_MAX) v = v < 0 ? -INFINITY : INFINITY;
        *(k ? hi : lo) = v;
    }
    return OSP_OK;
}

int osp__onnx_pad_args(onnx_importer *im, const Osp__Onnx__NodeProto *n, int rank, int64_t *pads,
                       double *value) {
    onnx_const p, v, a;
    int has_p, has_v, has_a, rc;
    if ((rc = osp__onnx_arg(im, n, "pads", &p, &has_p))) return rc;
    if ((rc = osp__onnx_arg(im, n, "value", &v, &has_v))) goto out_p;
    if ((rc = osp__onnx_arg(im, n, "axes", &a, &has_a))) goto out_v;
    /* 18: pads name the listed axes only (begins, then ends). */
    int64_t axis[ONNX_MAX_RANK];
    int na = rank;
    for (int k = 0; k < rank; k++) axis[k] = k;
    if (has_a) {
        na = (int)a.numel;
        if (!a.is_int || a.ndim > 1 || na > rank) {
            rc = osp__onnx_node_error(im, n, OSP_EFORMAT, "'axes' must list at most %d axes", rank);
            goto out;
        }
        int seen[ONNX_MAX_RANK] = {0};
        for (int k = 0; k < na; k++) {
            int64_t ax = a.i[k] < 0 ? a.i[k] + rank : a.i[k];
            if (ax < 0 || ax >= rank || seen[ax]) {
                rc = osp__onnx_node_error(im, n, OSP_EFORMAT, "bad or repeated axis %lld in 'axes'",
                                          (long long)a.i[k]);
                goto out;
            }
            seen[ax] = 1;
            axis[k] = ax;
        }
    }
    if (!has_p || !p.is_int || p.numel != 2 * na) {
        rc = osp__onnx_node_error(im, n, OSP_ENOTSUP, "'pads' must be %d constant integers", 2 * na);
        goto out;
    }
    for (int k = 0; k < 2 * rank; k++) pads[k] = 0;
    for (int k = 0; k < na; k++) {
        pads[axis[k]] = p.i[k];
        pads[rank + axis[k]] = p.i[na + k];
    }
    *value = 0.0;
    if (has_v) {
        if (v.numel != 1) {
            rc = osp__onnx_node_error(im, n, OSP_ENOTSUP, "the pad value must be one constant");
            goto out;
        }
        *value = osp__onnx_const_get(&v, 0);
    }
out:
    if (has_a) osp__onnx_const_free(&a);
out_v:
    if (has_v) osp__onnx_const_free(&v);
out_p:
    if (has_p) osp__onnx_const_free(&p);
    return rc;
}
