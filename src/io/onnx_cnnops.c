/* ONNX's ConvTranspose, InstanceNormalization and GroupNormalization,
 * mapped onto [deconv] and [groupnorm]; and the chain PyTorch writes for
 * nn.GroupNorm at opsets up to 17 (Reshape to [N, G, -1],
 * InstanceNormalization with scale 1 and bias 0, Reshape back, Mul, Add),
 * recognised and folded into one [groupnorm]. A chain that differs in any
 * way is left alone: its pieces map one by one (the InstanceNormalization
 * then normalises the reshaped [G, rest] tensor as a [groupnorm] of G
 * groups of one channel). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "io/onnx_impl.h"

#define FAIL(code, ...) return osp__onnx_node_error(im, n, code, __VA_ARGS__)

/* Input i, which must be computed by a layer: its node id, or an error. */
static int layer_input(onnx_importer *im, const Osp__Onnx__NodeProto *n, size_t i) {
    onnx_value *v = osp__onnx_input(im, n, i);
    if (!v) FAIL(OSP_EFORMAT, "input %zu is missing", i);
    if (v->kind != ONNX_VAL_LAYER)
        FAIL(OSP_ENOTSUP, "input %zu ('%s') is a constant where osprey needs a computed value", i,
             v->name);
    return v->node;
}

/* A weight of the layer from c's values (scaled per group: see expand). */
static int add_weight(onnx_importer *im, int id, const char *what, const onnx_const *c,
                      int64_t count, int64_t repeat) {
    float *p = osp_alloc(sizeof(float) * (size_t)(count ? count : 1));
    if (!p) return OSP_ENOMEM;
    for (int64_t k = 0; k < count; k++) p[k] = (float)osp__onnx_const_get(c, k / repeat);
    return osp__onnx_weight_add(im, id, what, p, count);
}

/* ---- ConvTranspose -------------------------------------------------------- */

typedef struct deconv_geom {
    int64_t k[2], s[2], d[2], begin[2], end[2], extra[2];
} deconv_geom;

/* Floor division, as ONNX's reference splits a negative total padding. */
static int64_t floor_half(int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

/* Strides, dilations, output_padding and the padding ONNX's attributes
 * imply (explicit pads, auto_pad or output_shape), per spatial axis. */
static int read_geom(onnx_importer *im, const Osp__Onnx__NodeProto *n, const osp_shape *xs,
                     const int64_t *kernel, deconv_geom *g) {
    size_t ns, nd, np, nop, nos;
    const int64_t *s = osp__onnx_attr_ints(n, "strides", &ns);
    const int64_t *d = osp__onnx_attr_ints(n, "dilations", &nd);
    const int64_t *p = osp__onnx_attr_ints(n, "pads", &np);
    const int64_t *op = osp__onnx_attr_ints(n, "output_padding", &nop);
    const int64_t *os = osp__onnx_attr_ints(n, "output_shape", &nos);
    if ((s && ns != 2) || (d && nd != 2) || (p && np != 4) || (op && nop != 2))
        FAIL(OSP_ENOTSUP, "2-D only (strides, dilations, output_padding and pads of 2, 2, 2 "
             "and 4 values)");
    /* output_shape may list the batch and channels too (opset 1's form) */
    if (os && nos != 2 && nos != 4) FAIL(OSP_ENOTSUP, "output_shape of %zu values", nos);
    if (os && nos == 4) os += 2;
    char buf[32];
    const char *auto_pad = osp__onnx_attr_string(n, "auto_pad", "NOTSET", buf, sizeof buf);
    const int upper = !strcmp(auto_pad, "SAME_UPPER");
    if (strcmp(auto_pad, "NOTSET") && strcmp(auto_pad, "VALID") && !upper &&
        strcmp(auto_pad, "SAME_LOWER"))
        FAIL(OSP_EFORMAT, "auto_pad '%s'", auto_pad);
    for (int a = 0; a < 2; a++) {
        g->k[a] = kernel[a];
        g->s[a] = s ? s[a] : 1;
        g->d[a] = d ? d[a] : 1;
        g->extra[a] = op ? op[a] : 0;
        if (g->k[a] < 1 || g->k[a] > 1024 || g->s[a] < 1 || g->s[a] > 1024 || g->d[a] < 1 ||
            g->d[a] > 1024 || g->extra[a] < 0 || g->extra[a] > 1024)
            FAIL(OSP_ERANGE, "kernel %lld, stride %lld, dilation %lld, output_padding %lld",
                 (long long)g->k[a], (long long)g->s[a], (long long)g->d[a],
                 (long long)g->extra[a]);
        const int64_t in = xs->dim[1 + a];
        const int64_t full = g->s[a] * (in - 1) + g->extra[a] + (g->k[a] - 1) * g->d[a] + 1;
        int64_t want = -1;
        if (os) want = os[a];
        else if (strcmp(auto_pad, "NOTSET") && strcmp(auto_pad, "VALID")) want = in * g->s[a];
        if (want >= 0) {
            if (want < 1 || want > (1 << 24)) FAIL(OSP_ERANGE, "output size %lld", (long long)want);
            /* ONNX's split of the total: SAME_UPPER pads more at the end */
            const int64_t total = full - want;
            g->begin[a] = upper ? floor_half(total) : total - floor_half(total);
            g->end[a] = total - g->begin[a];
        } else {
            g->begin[a] = p && !strcmp(auto_pad, "NOTSET") ? p[a] : 0;
            g->end[a] = p && !strcmp(auto_pad, "NOTSET") ? p[a + 2] : 0;
        }
        /* negative padding at the end is more output: output_padding */
        if (g->end[a] < 0) {
            g->extra[a] -= g->end[a];
            g->end[a] = 0;
        }
        if (g->begin[a] < 0)
            FAIL(OSP_ENOTSUP, "output_shape %lld asks for rows before the first window's",
                 (long long)want);
        if (g->begin[a] > 1024 || g->end[a] > 1024 || g->extra[a] > 1024)
            FAIL(OSP_ERANGE, "padding %lld, %lld and output_padding %lld (0 to 1024)",
                 (long long)g->begin[a], (long long)g->end[a], (long long)g->extra[a]);
    }
    return OSP_OK;
}

int osp__onnx_map_conv_transpose(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_input(im, n, 0), rc;
    if (x < 0) return x;
    const osp_shape *xs = &osp__onnx_layer(im, x)->shape;
    const onnx_const *W = osp__onnx_const_input(im, n, 1), *B = osp__onnx_const_input(im, n, 2);
    if (!W) FAIL(OSP_ENOTSUP, "the weights must be an initializer or a constant");
    if (osp__onnx_input(im, n, 2) && !B) FAIL(OSP_ENOTSUP, "the bias must be constant");
    if (xs->ndim != 3 || W->ndim != 4)
        FAIL(OSP_ENOTSUP, "2-D transposed convolutions only (N x C x H x W input, rank-4 "
             "weights)");
    const int64_t group = osp__onnx_attr_int(n, "group", 1), C = xs->dim[0];
    if (group < 1 || group > 65536 || W->dim[0] != C || C % group || W->dim[1] < 1 ||
        W->dim[1] * group > 65536)
        FAIL(OSP_ESHAPE, "weights %lldx%lldx%lldx%lld with %lld groups do not fit %lld input "
             "channels", (long long)W->dim[0], (long long)W->dim[1], (long long)W->dim[2],
             (long long)W->dim[3], (long long)group, (long long)C);
    const int64_t K = W->dim[1] * group;
    if (B && B->numel != K)
        FAIL(OSP_ESHAPE, "bias of %lld values for %lld output channels", (long long)B->numel,
             (long long)K);
    size_t nk;
    const int64_t *ks = osp__onnx_attr_ints(n, "kernel_shape", &nk);
    if (ks && (nk != 2 || ks[0] != W->dim[2] || ks[1] != W->dim[3]))
        FAIL(OSP_ESHAPE, "kernel_shape does not match the weights");
    deconv_geom g;
    if ((rc = read_geom(im, n, xs, &W->dim[2], &g))) return rc;
    onnx_keys k = {.len = 0};
    onnx_key(&k, "filters = %lld\nsize = %lldx%lld\nstride = %lldx%lld\ndilation = %lldx%lld\n",
        (long long)K, (long long)g.k[0], (long long)g.k[1], (long long)g.s[0], (long long)g.s[1],
        (long long)g.d[0], (long long)g.d[1]);
    onnx_key(&k, "pad = %lld, %lld, %lld, %lld\noutput_padding = %lldx%lld\ngroups = %lld\nbias = %d\n",
        (long long)g.begin[0], (long long)g.begin[1], (long long)g.end[0], (long long)g.end[1],
        (long long)g.extra[0], (long long)g.extra[1], (long long)group, B ? 1 : 0);
    int id = osp__onnx_emit(im, n, NULL, "deconv", &x, 1, k.text);
    if (id < 0) return id;
    if ((rc = add_weight(im, id, "weight", W, W->numel, 1))) return rc;
    if (B && (rc = add_weight(im, id, "bias", B, B->numel, 1))) return rc;
    return osp__onnx_set_layer(im, n, id);
}

/* ---- InstanceNormalization, GroupNormalization ------------------------------ */

/* A [groupnorm] of groups on x with per-channel scale and bias, each given
 * per channel (repeat 1), per group (repeat = channels per group) or once
 * (repeat = channels). */
static int emit_groupnorm(onnx_importer *im, const Osp__Onnx__NodeProto *n, int x, int64_t groups,
                          float eps, const onnx_const *scale, int64_t scale_repeat,
                          const onnx_const *bias, int64_t bias_repeat) {
    if (!(eps > 0.0f) || eps > 1.0f) FAIL(OSP_ERANGE, "epsilon %g (osprey takes (0, 1])", (double)eps);
    const int64_t C = osp__onnx_layer(im, x)->shape.dim[0];
    onnx_keys k = {.len = 0};
    onnx_key(&k, "groups = %lld\neps = %.9g\n", (long long)groups, (double)eps);
    int id = osp__onnx_emit(im, n, NULL, "groupnorm", &x, 1, k.text), rc;
    if (id < 0) return id;
    if ((rc = add_weight(im, id, "weight", scale, C, scale_repeat)) ||
        (rc = add_weight(im, id, "bias", bias, C, bias_repeat)))
        return rc;
    return id;
}

int osp__onnx_map_instance_norm(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_input(im, n, 0);
    if (x < 0) return x;
    const osp_shape *xs = &osp__onnx_layer(im, x)->shape;
    const onnx_const *scale = osp__onnx_const_input(im, n, 1), *bias = osp__onnx_const_input(im, n, 2);
    if (!scale || !bias) FAIL(OSP_ENOTSUP, "scale and bias must be constants");
    if (xs->ndim < 2) FAIL(OSP_ESHAPE, "an input of rank %d (N x C x D1 x ... needed)", xs->ndim + 1);
    const int64_t C = xs->dim[0];
    if (scale->numel != C || bias->numel != C)
        FAIL(OSP_ESHAPE, "scale of %lld and bias of %lld values for %lld channels",
             (long long)scale->numel, (long long)bias->numel, (long long)C);
    int id = emit_groupnorm(im, n, x, C, osp__onnx_attr_float(n, "epsilon", 1e-5f), scale, 1,
                            bias, 1);
    return id < 0 ? id : osp__onnx_set_layer(im, n, id);
}

/* Opset 18's scale and bias have one value per group; opset 21's, one per
 * channel. */
int osp__onnx_map_group_norm(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    int x = layer_input(im, n, 0);
    if (x < 0) return x;
    const osp_shape *xs = &osp__onnx_layer(im, x)->shape;
    const onnx_const *scale = osp__onnx_const_input(im, n, 1), *bias = osp__onnx_const_input(im, n, 2);
    if (!scale || !bias) FAIL(OSP_ENOTSUP, "scale and bias must be constants");
    if (im->opset < 18)
        FAIL(OSP_EFORMAT, "GroupNormalization is defined from opset 18, the model's is %d",
             im->opset);
    if (!osp__onnx_attr(n, "num_groups")) FAIL(OSP_EFORMAT, "num_groups is missing");
    const int64_t G = osp__onnx_attr_int(n, "num_groups", 0), C = xs->dim[0];
    if (G < 1 || G > 65536 || C % G)
        FAIL(OSP_ESHAPE, "%lld groups do not divide %lld channels", (long long)G, (long long)C);
    const int64_t per = im->opset >= 21 ? C : G;
    if (scale->numel != per || bias->numel != per)
        FAIL(OSP_ESHAPE, "scale of %lld and bias of %lld values; opset %d wants one per %s (%lld)",
             (long long)scale->numel, (long long)bias->numel, im->opset,
             im->opset >= 21 ? "channel" : "group", (long long)per);
    const int64_t repeat = per == C ? 1 : C / G;
    int id = emit_groupnorm(im, n, x, G, osp__onnx_attr_float(n, "epsilon", 1e-5f), scale, repeat,
                            bias, repeat);
    return id < 0 ? id : osp__onnx_set_layer(im, n, id);
}

/* ---- PyTorch's nn.GroupNorm chain ------------------------------------------- */

/* Exporters write a chain's nodes one after another; a reader is looked
 * for this far after the value's producer, so that a hostile graph of many
 * Reshapes costs little. */
#define CHAIN_WINDOW 64

/* The node of type op that reads value v as input `slot`, found among the
 * nodes just after v's producer, when the importer counts one needed
 * reader of v; else NULL. */
static const Osp__Onnx__NodeProto *next_reader(onnx_importer *im, const char *v, const char *op,
                                               size_t slot) {
    onnx_value *val = osp__onnx_value_find(im, v);
    if (!val || val->uses != 1 || val->producer < 0) return NULL;
    const size_t end = (size_t)val->producer + 1 + CHAIN_WINDOW;
    for (size_t i = (size_t)val->producer + 1; i < im->graph->n_node && i < end; i++) {
        const Osp__Onnx__NodeProto *r = im->graph->node[i];
        if (slot >= r->n_input || !r->input[slot] || strcmp(r->input[slot], v)) continue;
        if (strcmp(r->op_type, op) || r->n_output < 1 || !r->output[0] ||
            (r->domain && *r->domain && strcmp(r->domain, "ai.onnx")))
            return NULL;
        return r;
    }
    return NULL;
}

/* 1 when no node of the graph but one reads value v (needed or not: the
 * chain's values are bound to the folded layer, so no other node may
 * read them). */
static int one_reader(onnx_importer *im, const char *v) {
    int readers = 0;
    for (size_t i = 0; i < im->graph->n_node; i++) {
        const Osp__Onnx__NodeProto *r = im->graph->node[i];
        for (size_t k = 0; k < r->n_input; k++)
            if (r->input[k] && !strcmp(r->input[k], v) && ++readers > 1) return 0;
    }
    return readers == 1;
}

/* Value v as a constant: folded already, or the tensor of the Constant
 * node that makes it (folded later in the import's order) copied into tmp
 * when it holds at most max values (a hostile model's huge constant is
 * not decoded twice). NULL when neither. */
static const onnx_const *peek_const(onnx_importer *im, const char *v, onnx_const *tmp,
                                    int64_t max) {
    onnx_value *val = osp__onnx_value_find(im, v);
    if (!val) return NULL;
    if (val->kind == ONNX_VAL_CONST) return &val->c;
    if (val->kind != ONNX_VAL_UNKNOWN || val->producer < 0) return NULL;
    const Osp__Onnx__NodeProto *p = im->graph->node[val->producer];
    const Osp__Onnx__AttributeProto *a = osp__onnx_attr(p, "value");
    if (strcmp(p->op_type, "Constant") || !a || !a->t || a->t->n_dims > ONNX_MAX_RANK) return NULL;
    int64_t count = 1;
    for (size_t k = 0; k < a->t->n_dims; k++) {
        if (a->t->dims[k] < 0 || a->t->dims[k] > max) return NULL;
        count *= a->t->dims[k];
        if (count > max) return NULL;
    }
    return osp__onnx_const_from_tensor(im, a->t, tmp) ? NULL : tmp;
}

static int all_equal(const onnx_const *c, double v) {
    for (int64_t i = 0; i < c->numel; i++)
        if (osp__onnx_const_get(c, i) != v) return 0;
    return 1;
}

/* One value, or one per channel shaped to broadcast over x's other axes:
 * [C, 1, ...] or [1, C, 1, ...]. */
static int per_channel(const onnx_const *c, const osp_shape *xs) {
    if (c->is_int) return 0;
    if (c->numel == 1) return 1;
    if (c->numel != xs->dim[0] || c->ndim > xs->ndim + 1 || c->ndim < xs->ndim) return 0;
    const int ch = c->ndim - xs->ndim; /* the channel axis in c */
    for (int a = 0; a < c->ndim; a++)
        if (a != ch && c->dim[a] != 1) return 0;
    return 1;
}

/* The restoring Reshape's target: x's own shape, as a constant or as
 * Shape(x). */
static int restores(onnx_importer *im, const Osp__Onnx__NodeProto *r, const char *x,
                    const osp_shape *xs) {
    if (r->n_input != 2 || !r->input[1]) return 0;
    onnx_value *v = osp__onnx_value_find(im, r->input[1]);
    if (!v) return 0;
    if (v->kind == ONNX_VAL_CONST) {
        const onnx_const *s = &v->c;
        if (!s->is_int || s->ndim != 1 || s->numel != xs->ndim + 1) return 0;
        if (s->i[0] != 0 && s->i[0] != ONNX_BATCH) return 0;
        for (int a = 0; a < xs->ndim; a++)
            if (s->i[a + 1] != xs->dim[a]) return 0;
        return 1;
    }
    if (v->kind != ONNX_VAL_UNKNOWN || v->producer < 0) return 0;
    const Osp__Onnx__NodeProto *p = im->graph->node[v->producer];
    return !strcmp(p->op_type, "Shape") && p->n_input == 1 && p->input[0] &&
           !strcmp(p->input[0], x) && !osp__onnx_attr(p, "start") && !osp__onnx_attr(p, "end");
}

/* The other input of a two-input node than value v. */
static const char *other_input(const Osp__Onnx__NodeProto *n, const char *v) {
    if (n->n_input != 2 || !n->input[0] || !n->input[1]) return NULL;
    return !strcmp(n->input[0], v) ? n->input[1] : n->input[0];
}

/* A binary reader of v (Mul or Add), v on either side. */
static const Osp__Onnx__NodeProto *binary_reader(onnx_importer *im, const char *v, const char *op) {
    const Osp__Onnx__NodeProto *r = next_reader(im, v, op, 0);
    return r ? r : next_reader(im, v, op, 1);
}

typedef struct chain {
    const Osp__Onnx__NodeProto *norm, *back, *mul, *add;
    onnx_const tmp[4]; /* peeked constants: scale, bias, weight, shift */
    const onnx_const *weight, *shift;
    int64_t groups;
    float eps;
} chain;

/* 1 when n starts the chain on x (layer shape xs), with c filled in. */
static int match_chain(onnx_importer *im, const Osp__Onnx__NodeProto *n, const osp_shape *xs,
                       chain *c) {
    const onnx_const *target = osp__onnx_const_input(im, n, 1);
    if (!target || !target->is_int || target->numel != 3 || n->n_output < 1) return 0;
    if ((target->i[0] != 0 && target->i[0] != ONNX_BATCH) || target->i[2] != -1) return 0;
    c->groups = target->i[1];
    if (c->groups < 1 || c->groups > 65536 || xs->dim[0] % c->groups) return 0;
    if (!(c->norm = next_reader(im, n->output[0], "InstanceNormalization", 0)) ||
        c->norm->n_input != 3 || !c->norm->input[1] || !c->norm->input[2])
        return 0;
    const onnx_const *s = peek_const(im, c->norm->input[1], &c->tmp[0], c->groups);
    const onnx_const *b = peek_const(im, c->norm->input[2], &c->tmp[1], c->groups);
    if (!s || !b || s->numel != c->groups || b->numel != c->groups || !all_equal(s, 1.0) ||
        !all_equal(b, 0.0))
        return 0;
    c->eps = osp__onnx_attr_float(c->norm, "epsilon", 1e-5f);
    if (!(c->back = next_reader(im, c->norm->output[0], "Reshape", 0)) ||
        !restores(im, c->back, n->input[0], xs) ||
        !(c->mul = binary_reader(im, c->back->output[0], "Mul")) ||
        !(c->add = binary_reader(im, c->mul->output[0], "Add")))
        return 0;
    const char *wv = other_input(c->mul, c->back->output[0]);
    const char *bv = other_input(c->add, c->mul->output[0]);
    if (!wv || !bv) return 0;
    c->weight = peek_const(im, wv, &c->tmp[2], xs->dim[0]);
    c->shift = peek_const(im, bv, &c->tmp[3], xs->dim[0]);
    if (!c->weight || !c->shift || !per_channel(c->weight, xs) || !per_channel(c->shift, xs))
        return 0;
    /* last, as it reads the whole graph: a match is rare */
    return one_reader(im, n->output[0]) && one_reader(im, c->norm->output[0]) &&
           one_reader(im, c->back->output[0]) && one_reader(im, c->mul->output[0]);
}

int osp__onnx_map_groupnorm_chain(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    onnx_value *in = osp__onnx_input(im, n, 0);
    if (!in || in->kind != ONNX_VAL_LAYER || n->n_input != 2) return 0;
    const osp_shape *xs = &osp__onnx_layer(im, in->node)->shape;
    chain c;
    memset(&c, 0, sizeof c);
    int rc = match_chain(im, n, xs, &c);
    if (rc == 1) {
        const int64_t C = xs->dim[0];
        rc = emit_groupnorm(im, c.norm, in->node, c.groups, c.eps, c.weight,
                            c.weight->numel == 1 ? C : 1, c.shift, c.shift->numel == 1 ? C : 1);
        const int id = rc;
        /* the chain's values are all the layer's: its later nodes are done */
        const Osp__Onnx__NodeProto *nodes[5] = {n, c.norm, c.back, c.mul, c.add};
        for (int k = 0; k < 5 && rc >= 0; k++) rc = osp__onnx_set_layer(im, nodes[k], id);
        if (rc >= 0) rc = 1;
    }
    for (int k = 0; k < 4; k++) osp__onnx_const_free(&c.tmp[k]);
    return rc;
}

int osp__onnx_claimed(onnx_importer *im, const Osp__Onnx__NodeProto *n) {
    if (n->n_output < 1 || !n->output[0]) return 0;
    onnx_value *v = osp__onnx_value_find(im, n->output[0]);
    return v && v->kind == ONNX_VAL_LAYER;
}
