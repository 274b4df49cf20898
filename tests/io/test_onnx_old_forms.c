/* ONNX operators in the forms of each opset from 7 to 18, on tiny models
 * built here: the old attribute forms (Clip's min/max, Pad's pads and
 * value, Slice's starts/ends, Squeeze's and Unsqueeze's axes, Upsample's
 * scales, BatchNormalization's spatial, Dropout's is_test, Softmax's 2-D
 * coercion) give the same layers as the new input forms (Pad's and
 * ReduceMean's axes at 18, Split's num_outputs), with values checked
 * against loops here; a form a version does not have, and an attribute
 * osprey does not compute, are refused with the node and the attribute
 * named. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "onnx.pb-c.h"
#include "osprey/osprey.h"

/* ---- a tiny model builder: everything lives in one arena ---- */

static _Alignas(16) unsigned char arena[1 << 20];
static size_t arena_used;

static void *take(size_t bytes) {
    bytes = (bytes + 15) & ~(size_t)15;
    cr_assert(arena_used + bytes <= sizeof arena, "test arena full");
    void *p = arena + arena_used;
    arena_used += bytes;
    memset(p, 0, bytes);
    return p;
}

typedef struct tiny {
    Osp__Onnx__GraphProto g;
    Osp__Onnx__NodeProto *nodes[16];
    Osp__Onnx__TensorProto *inits[16];
} tiny;

static tiny *tiny_new(void) {
    arena_used = 0;
    tiny *t = take(sizeof *t);
    osp__onnx__graph_proto__init(&t->g);
    t->g.name = "tiny";
    t->g.node = t->nodes;
    t->g.initializer = t->inits;
    return t;
}

/* Splits "a,b,,c" into names ("" for an input left out). */
static char **names(const char *csv, size_t *count) {
    char **out = take(8 * sizeof *out);
    *count = 0;
    if (!*csv) return out;
    for (const char *p = csv;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char *s = take(len + 1);
        memcpy(s, p, len);
        out[(*count)++] = s;
        if (!e) break;
        p = e + 1;
    }
    return out;
}

static Osp__Onnx__NodeProto *node(tiny *t, const char *op, const char *in, const char *out) {
    Osp__Onnx__NodeProto *n = take(sizeof *n);
    osp__onnx__node_proto__init(n);
    n->op_type = (char *)op;
    n->name = (char *)op;
    n->input = names(in, &n->n_input);
    n->output = names(out, &n->n_output);
    n->attribute = take(8 * sizeof *n->attribute);
    t->nodes[t->g.n_node++] = n;
    return n;
}

static Osp__Onnx__AttributeProto *attr(Osp__Onnx__NodeProto *n, const char *name,
                                       Osp__Onnx__AttributeProto__AttributeType type) {
    Osp__Onnx__AttributeProto *a = take(sizeof *a);
    osp__onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = 1;
    a->type = type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

static void attr_int(Osp__Onnx__NodeProto *n, const char *name, int64_t v) {
    Osp__Onnx__AttributeProto *a = attr(n, name, OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}

static void attr_float(Osp__Onnx__NodeProto *n, const char *name, float v) {
    Osp__Onnx__AttributeProto *a = attr(n, name, OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1;
    a->f = v;
}

static void attr_ints(Osp__Onnx__NodeProto *n, const char *name, int count, const int64_t *v) {
    Osp__Onnx__AttributeProto *a = attr(n, name, OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = (size_t)count;
    a->ints = take((size_t)count * sizeof *a->ints);
    memcpy(a->ints, v, (size_t)count * sizeof *v);
}

static void attr_floats(Osp__Onnx__NodeProto *n, const char *name, int count, const float *v) {
    Osp__Onnx__AttributeProto *a =
        attr(n, name, OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS);
    a->n_floats = (size_t)count;
    a->floats = take((size_t)count * sizeof *a->floats);
    memcpy(a->floats, v, (size_t)count * sizeof *v);
}

static void attr_string(Osp__Onnx__NodeProto *n, const char *name, const char *v) {
    Osp__Onnx__AttributeProto *a = attr(n, name, OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->has_s = 1;
    a->s.data = (uint8_t *)v;
    a->s.len = strlen(v);
}

/* A 1-D initializer of int64 (is_int) or float values. */
static void init(tiny *t, const char *name, int is_int, int count, const double *v) {
    Osp__Onnx__TensorProto *x = take(sizeof *x);
    osp__onnx__tensor_proto__init(x);
    x->name = (char *)name;
    x->n_dims = 1;
    x->dims = take(sizeof *x->dims);
    x->dims[0] = count;
    x->has_data_type = 1;
    if (is_int) {
        x->data_type = OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
        x->n_int64_data = (size_t)count;
        x->int64_data = take((size_t)count * sizeof *x->int64_data);
        for (int k = 0; k < count; k++) x->int64_data[k] = (int64_t)v[k];
    } else {
        x->data_type = OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        x->n_float_data = (size_t)count;
        x->float_data = take((size_t)count * sizeof *x->float_data);
        for (int k = 0; k < count; k++) x->float_data[k] = (float)v[k];
    }
    t->inits[t->g.n_initializer++] = x;
}

static Osp__Onnx__ValueInfoProto *value_info(const char *name, int rank, const int64_t *dims) {
    Osp__Onnx__ValueInfoProto *v = take(sizeof *v);
    osp__onnx__value_info_proto__init(v);
    v->name = (char *)name;
    Osp__Onnx__TypeProto *ty = take(sizeof *ty);
    osp__onnx__type_proto__init(ty);
    Osp__Onnx__TypeProto__Tensor *tt = take(sizeof *tt);
    osp__onnx__type_proto__tensor__init(tt);
    tt->has_elem_type = 1;
    tt->elem_type = OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    Osp__Onnx__TensorShapeProto *sh = take(sizeof *sh);
    osp__onnx__tensor_shape_proto__init(sh);
    sh->n_dim = (size_t)rank;
    sh->dim = take((size_t)rank * sizeof *sh->dim);
    for (int k = 0; k < rank; k++) {
        Osp__Onnx__TensorShapeProto__Dimension *d = take(sizeof *d);
        osp__onnx__tensor_shape_proto__dimension__init(d);
        d->value_case = OSP__ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
        d->dim_value = dims[k];
        sh->dim[k] = d;
    }
    tt->shape = sh;
    ty->value_case = OSP__ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    ty->tensor_type = tt;
    v->type = ty;
    return v;
}

/* Imports the graph (input "x" of 1 x C x H x W, output "y") at opset. */
static int import_tiny(tiny *t, int opset, int c, int h, int w, osp_net **net) {
    Osp__Onnx__ModelProto m;
    osp__onnx__model_proto__init(&m);
    m.has_ir_version = 1;
    m.ir_version = 7;
    Osp__Onnx__OperatorSetIdProto op;
    osp__onnx__operator_set_id_proto__init(&op);
    op.domain = "";
    op.has_version = 1;
    op.version = opset;
    Osp__Onnx__OperatorSetIdProto *ops[1] = {&op};
    m.n_opset_import = 1;
    m.opset_import = ops;
    Osp__Onnx__ValueInfoProto *in[1] = {value_info("x", 4, (int64_t[]){1, c, h, w})};
    Osp__Onnx__ValueInfoProto *out[1] = {value_info("y", 0, NULL)};
    t->g.n_input = 1;
    t->g.input = in;
    t->g.n_output = 1;
    t->g.output = out;
    m.graph = &t->g;
    size_t len = osp__onnx__model_proto__get_packed_size(&m);
    uint8_t *buf = take(len);
    osp__onnx__model_proto__pack(&m, buf);
    *net = NULL;
    return osp_onnx_import(buf, len, "tiny.onnx", NULL, net);
}

/* Runs a sample x through the net; the output's values into y. */
static int64_t run(osp_net *net, const float *x, float *y, int64_t max) {
    osp_graph *g = net->graph;
    cr_assert_eq(osp_graph_plan(g, 1, OSP_MODE_INFER), OSP_OK, "%s", osp_last_error());
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_INFER, .batch = 1};
    cr_assert_eq(osp_graph_forward(g, x, &ex), OSP_OK, "%s", osp_last_error());
    const osp_node *out = osp_graph_output(g);
    cr_assert_leq(out->size, max);
    memcpy(y, out->out, (size_t)out->size * sizeof *y);
    return out->size;
}

static void ramp(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = (float)(i % 7) - 2.5f + 0.1f * (float)i;
}

static void expect_refused(tiny *t, int opset, const char *what) {
    osp_net *net;
    int rc = import_tiny(t, opset, 2, 4, 4, &net);
    cr_expect_neq(rc, OSP_OK, "imported at opset %d; wanted '%s'", opset, what);
    cr_expect(net == NULL);
    cr_expect(strstr(osp_last_error(), what), "'%s' does not say '%s'", osp_last_error(), what);
    if (rc == OSP_OK) osp_net_free(net);
}

/* ---- the tests ---- */

Test(onnx_old_forms, opsets_outside_7_to_18_refused) {
    for (int opset = 5; opset <= 20; opset += 1) {
        if (opset == 7) opset = 19;
        tiny *t = tiny_new();
        node(t, "Relu", "x", "y");
        expect_refused(t, opset, "osprey imports opsets 7 to 18");
    }
}

Test(onnx_old_forms, clip_bounds_as_attributes_and_inputs) {
    float x[32], y[32];
    ramp(x, 32);
    for (int form = 0; form < 2; form++) {
        tiny *t = tiny_new();
        Osp__Onnx__NodeProto *n;
        if (form == 0) {
            n = node(t, "Clip", "x", "y");
            attr_float(n, "min", -0.5f);
            attr_float(n, "max", 0.25f);
        } else {
            init(t, "lo", 0, 1, (double[]){-0.5});
            init(t, "hi", 0, 1, (double[]){0.25});
            t->inits[0]->n_dims = t->inits[1]->n_dims = 0; /* scalars */
            node(t, "Clip", "x,lo,hi", "y");
        }
        osp_net *net;
        cr_assert_eq(import_tiny(t, form ? 11 : 7, 2, 4, 4, &net), OSP_OK, "%s", osp_last_error());
        cr_assert_eq(run(net, x, y, 32), 32);
        for (int i = 0; i < 32; i++) cr_expect_float_eq(y[i], fminf(fmaxf(x[i], -0.5f), 0.25f), 0);
        osp_net_free(net);
    }
    tiny *t = tiny_new();
    attr_float(node(t, "Clip", "x", "y"), "min", 0.0f);
    expect_refused(t, 11, "attribute 'min' belongs to opsets before 11");
    t = tiny_new();
    init(t, "lo", 0, 1, (double[]){0});
    node(t, "Clip", "x,lo", "y");
    expect_refused(t, 10, "input 1 ('min') is from opset 11");
}

/* Pad 7-10 (pads and value attributes), 11 (inputs), 18 (the axes input):
 * one [pad] layer and the same values. */
Test(onnx_old_forms, pad_in_each_form) {
    float x[32], y[80], want[80];
    ramp(x, 32);
    /* 2 x 4 x 4 padded by 1 on top, 2 on the left, 1 on the right: 2 x 5 x 7 */
    int64_t k = 0;
    for (int c = 0; c < 2; c++)
        for (int i = -1; i < 4; i++)
            for (int j = -2; j < 5; j++)
                want[k++] = i < 0 || j < 0 || j >= 4 ? 1.5f : x[(c * 4 + i) * 4 + j];
    for (int form = 0; form < 3; form++) {
        tiny *t = tiny_new();
        if (form == 0) {
            Osp__Onnx__NodeProto *n = node(t, "Pad", "x", "y");
            attr_ints(n, "pads", 8, (int64_t[]){0, 0, 1, 2, 0, 0, 0, 1});
            attr_float(n, "value", 1.5f);
        } else if (form == 1) {
            init(t, "pads", 1, 8, (double[]){0, 0, 1, 2, 0, 0, 0, 1});
            init(t, "v", 0, 1, (double[]){1.5});
            node(t, "Pad", "x,pads,v", "y");
        } else {
            init(t, "pads", 1, 4, (double[]){1, 2, 0, 1});
            init(t, "v", 0, 1, (double[]){1.5});
            init(t, "axes", 1, 2, (double[]){-2, 3});
            node(t, "Pad", "x,pads,v,axes", "y");
        }
        osp_net *net;
        int opset = form == 0 ? 7 : form == 1 ? 11 : 18;
        cr_assert_eq(import_tiny(t, opset, 2, 4, 4, &net), OSP_OK, "%s", osp_last_error());
        cr_assert_eq(run(net, x, y, 80), 70);
        for (int i = 0; i < 70; i++) cr_expect_float_eq(y[i], want[i], 0, "form %d at %d", form, i);
        osp_net_free(net);
    }
    tiny *t = tiny_new();
    init(t, "pads", 1, 8, (double[]){0, 0, 1, 2, 0, 0, 0, 1});
    init(t, "axes", 1, 2, (double[]){2, 3});
    node(t, "Pad", "x,pads,,axes", "y");
    expect_refused(t, 13, "input 3 ('axes') is from opset 18");
    t = tiny_new();
    init(t, "pads", 1, 8, (double[]){0, 0, 1, 2, 0, 0, 0, 1});
    init(t, "axes", 1, 2, (double[]){2, 3});
    node(t, "Pad", "x,pads,,axes", "y");
    expect_refused(t, 18, "'pads' must be 4 constant integers");
}

/* Slice (attributes before 10), Squeeze and Unsqueeze (axes attribute
 * before 13) folded into a Reshape's target: [-1, 8, 4] -> [8, 4]. */
Test(onnx_old_forms, shape_folding_in_each_form) {
    for (int form = 0; form < 2; form++) {
        tiny *t = tiny_new();
        init(t, "dims", 1, 4, (double[]){-1, 8, 4, 99});
        Osp__Onnx__NodeProto *n;
        if (form == 0) {
            n = node(t, "Slice", "dims", "s");
            attr_ints(n, "starts", 1, (int64_t[]){0});
            attr_ints(n, "ends", 1, (int64_t[]){3});
            attr_ints(n, "axes", 1, (int64_t[]){0});
            attr_ints(node(t, "Unsqueeze", "s", "u"), "axes", 1, (int64_t[]){0});
            attr_ints(node(t, "Squeeze", "u", "q"), "axes", 1, (int64_t[]){0});
        } else {
            init(t, "st", 1, 1, (double[]){0});
            init(t, "en", 1, 1, (double[]){3});
            init(t, "ax", 1, 1, (double[]){0});
            node(t, "Slice", "dims,st,en,ax", "s");
            node(t, "Unsqueeze", "s,ax", "u");
            node(t, "Squeeze", "u,ax", "q");
        }
        node(t, "Reshape", "x,q", "y");
        osp_net *net;
        cr_assert_eq(import_tiny(t, form ? 13 : 9, 2, 4, 4, &net), OSP_OK, "%s", osp_last_error());
        const osp_shape *s = &osp_graph_output(net->graph)->shape;
        cr_expect(s->ndim == 2 && s->dim[0] == 8 && s->dim[1] == 4);
        osp_net_free(net);
    }
    tiny *t = tiny_new();
    init(t, "dims", 1, 3, (double[]){-1, 8, 4});
    attr_ints(node(t, "Unsqueeze", "dims", "u"), "axes", 1, (int64_t[]){0});
    node(t, "Reshape", "x,u", "y");
    expect_refused(t, 13, "attribute 'axes' belongs to opsets before 13");
}

Test(onnx_old_forms, split_in_each_form) {
    /* [-1, 16, 2, 99, 98] split into [-1, 16, 2] and the rest: 2-D, 3-D */
    for (int form = 0; form < 3; form++) {
        tiny *t = tiny_new();
        init(t, "dims", 1, 6, (double[]){-1, 16, 2, 99, 98, 97});
        Osp__Onnx__NodeProto *n;
        if (form == 0) {
            n = node(t, "Split", "dims", "a,b");
            attr_ints(n, "split", 2, (int64_t[]){3, 3});
        } else if (form == 1) {
            init(t, "sp", 1, 2, (double[]){3, 3});
            n = node(t, "Split", "dims,sp", "a,b");
        } else {
            n = node(t, "Split", "dims", "a,b");
            attr_int(n, "num_outputs", 2);
        }
        node(t, "Reshape", "x,a", "y");
        osp_net *net;
        int opset = form == 0 ? 11 : form == 1 ? 13 : 18;
        cr_assert_eq(import_tiny(t, opset, 2, 4, 4, &net), OSP_OK, "%s", osp_last_error());
        const osp_shape *s = &osp_graph_output(net->graph)->shape;
        cr_expect(s->ndim == 2 && s->dim[0] == 16 && s->dim[1] == 2);
        osp_net_free(net);
    }
    tiny *t = tiny_new();
    init(t, "dims", 1, 4, (double[]){-1, 32, 5, 6});
    attr_int(node(t, "Split", "dims", "a,b"), "num_outputs", 2);
    node(t, "Reshape", "x,a", "y");
    expect_refused(t, 13, "'num_outputs' is from opset 18");
}

/* Upsample 7 (scales attribute), 9 (input) and Resize 10 (input): nearest
 * floors the enlarged coordinates, as ONNX Runtime does before 11. */
Test(onnx_old_forms, upsample_and_resize_before_11) {
    float x[32], y[256];
    ramp(x, 32);
    static const char *const ops[3] = {"Upsample", "Upsample", "Resize"};
    static const int opsets[3] = {7, 9, 10};
    for (int form = 0; form < 3; form++) {
        tiny *t = tiny_new();
        if (form == 0) {
            Osp__Onnx__NodeProto *n = node(t, ops[form], "x", "y");
            attr_floats(n, "scales", 4, (float[]){1, 1, 2, 3});
        } else {
            init(t, "sc", 0, 4, (double[]){1, 1, 2, 3});
            attr_string(node(t, ops[form], "x,sc", "y"), "mode", "nearest");
        }
        osp_net *net;
        cr_assert_eq(import_tiny(t, opsets[form], 2, 4, 4, &net), OSP_OK, "%s", osp_last_error());
        cr_assert_eq(run(net, x, y, 256), 2 * 8 * 12);
        for (int c = 0; c < 2; c++)
            for (int i = 0; i < 8; i++)
                for (int j = 0; j < 12; j++)
                    cr_expect_float_eq(y[(c * 8 + i) * 12 + j], x[(c * 4 + i / 2) * 4 + j / 3], 0);
        osp_net_free(net);
    }
    tiny *t = tiny_new();
    init(t, "sc", 0, 4, (double[]){1, 1, 2, 2});
    node(t, "Resize", "x,sc", "y");
    expect_refused(t, 9, "Resize is defined from opset 10");
    t = tiny_new();
    attr_floats(node(t, "Upsample", "x", "y"), "scales", 4, (float[]){1, 1, 2, 2});
    expect_refused(t, 9, "attribute 'scales' belongs to opsets before 9");
    t = tiny_new();
    init(t, "sc", 0, 4, (double[]){1, 1, 2, 2});
    node(t, "Upsample", "x,sc", "y");
    expect_refused(t, 11, "Upsample is deprecated from opset 10");
    t = tiny_new();
    init(t, "sc", 0, 4, (double[]){1, 2, 2, 2});
    node(t, "Resize", "x,sc", "y");
    expect_refused(t, 10, "scales 1, 2 on the batch and channel axes");
}

Test(onnx_old_forms, resize_attributes_osprey_does_not_compute) {
    static const char *const attrs[][3] = {
        {"mode", "cubic", "attribute 'mode' = 'cubic'"},
        {"coordinate_transformation_mode", "tf_crop_and_resize",
         "attribute 'coordinate_transformation_mode' = 'tf_crop_and_resize'"},
        {"nearest_mode", "halfway", "attribute 'nearest_mode' = 'halfway'"},
    };
    for (int k = 0; k < 3; k++) {
        tiny *t = tiny_new();
        init(t, "sc", 0, 4, (double[]){1, 1, 2, 2});
        attr_string(node(t, "Resize", "x,,sc", "y"), attrs[k][0], attrs[k][1]);
        expect_refused(t, 13, attrs[k][2]);
    }
    tiny *t = tiny_new();
    init(t, "sc", 0, 2, (double[]){0.5, 0.5});
    Osp__Onnx__NodeProto *n = node(t, "Resize", "x,,sc", "y");
    attr_ints(n, "axes", 2, (int64_t[]){2, 3});
    attr_string(n, "mode", "linear");
    attr_int(n, "antialias", 1);
    expect_refused(t, 18, "attribute 'antialias' = 1 when shrinking");
    t = tiny_new();
    init(t, "sz", 1, 2, (double[]){3, 5});
    n = node(t, "Resize", "x,,,sz", "y");
    attr_ints(n, "axes", 2, (int64_t[]){2, 3});
    attr_string(n, "keep_aspect_ratio_policy", "not_larger");
    expect_refused(t, 18, "attribute 'keep_aspect_ratio_policy' = 'not_larger'");
    t = tiny_new();
    init(t, "sc", 0, 2, (double[]){2, 2});
    attr_ints(node(t, "Resize", "x,,sc", "y"), "axes", 2, (int64_t[]){2, 3});
    expect_refused(t, 13, "attribute 'axes' is from opset 18");
    /* sizes at 18 with axes: one [resize] to 3 x 5 */
    t = tiny_new();
    init(t, "sz", 1, 2, (double[]){3, 5});
    attr_ints(node(t, "Resize", "x,,,sz", "y"), "axes", 2, (int64_t[]){2, 3});
    osp_net *net;
    cr_assert_eq(import_tiny(t, 18, 2, 4, 4, &net), OSP_OK, "%s", osp_last_error());
    const osp_shape *s = &osp_graph_output(net->graph)->shape;
    cr_expect(s->ndim == 3 && s->dim[0] == 2 && s->dim[1] == 3 && s->dim[2] == 5);
    osp_net_free(net);
}

Test(onnx_old_forms, old_attributes_of_batchnorm_and_dropout) {
    for (int spatial = 0; spatial < 2; spatial++) {
        tiny *t = tiny_new();
        for (int k = 0; k < 4; k++) {
            static const char *const p[4] = {"s", "b", "m", "v"};
            init(t, p[k], 0, 2, (double[]){k == 3 ? 1.0 : 0.5, 0.25});
        }
        Osp__Onnx__NodeProto *n = node(t, "BatchNormalization", "x,s,b,m,v", "y");
        attr_int(n, "spatial", spatial);
        attr_float(n, "momentum", 0.9f);
        attr_ints(n, "consumed_inputs", 2, (int64_t[]){0, 0});
        if (!spatial) {
            expect_refused(t, 7, "attribute 'spatial': per-activation statistics");
            continue;
        }
        osp_net *net;
        cr_assert_eq(import_tiny(t, 7, 2, 4, 4, &net), OSP_OK, "%s", osp_last_error());
        osp_net_free(net);
    }
    tiny *t = tiny_new();
    attr_int(node(t, "Dropout", "x", "y"), "is_test", 0);
    expect_refused(t, 7, "attribute 'is_test': training mode");
    t = tiny_new();
    Osp__Onnx__NodeProto *n = node(t, "Dropout", "x", "d");
    attr_float(n, "ratio", 0.5f);
    attr_int(n, "is_test", 1);
    node(t, "Relu", "d", "y");
    osp_net *net;
    cr_assert_eq(import_tiny(t, 10, 2, 4, 4, &net), OSP_OK, "%s", osp_last_error());
    osp_net_free(net);
}

/* Softmax before 13 covers the flattened axes from `axis` (1: all of a
 * sample's values, osprey's softmax); from 13, one axis. ReduceMean takes
 * its axes as an input at 18. */
Test(onnx_old_forms, softmax_axis_and_reduce_axes) {
    tiny *t = tiny_new();
    attr_int(node(t, "Softmax", "x", "y"), "axis", 1);
    osp_net *net;
    cr_assert_eq(import_tiny(t, 11, 2, 4, 4, &net), OSP_OK, "%s", osp_last_error());
    osp_net_free(net);
    /* from opset 13, along axis 1 alone: over the channels at each pixel */
    t = tiny_new();
    attr_int(node(t, "Softmax", "x", "y"), "axis", 1);
    cr_assert_eq(import_tiny(t, 13, 2, 4, 4, &net), OSP_OK, "%s", osp_last_error());
    float xs[32], ys[32];
    ramp(xs, 32);
    cr_assert_eq(run(net, xs, ys, 32), 32);
    for (int i = 0; i < 16; i++) {
        double e0 = exp(xs[i]), e1 = exp(xs[16 + i]);
        cr_expect_float_eq(ys[i], e0 / (e0 + e1), 1e-6);
        cr_expect_float_eq(ys[16 + i], e1 / (e0 + e1), 1e-6);
    }
    osp_net_free(net);
    t = tiny_new();
    attr_int(node(t, "Softmax", "x", "y"), "axis", 0);
    expect_refused(t, 13, "softmax over axis 0 of a rank-4 tensor");
    for (int form = 0; form < 2; form++) {
        t = tiny_new();
        if (form == 0) attr_ints(node(t, "ReduceMean", "x", "y"), "axes", 2, (int64_t[]){2, 3});
        else {
            init(t, "ax", 1, 2, (double[]){-1, -2});
            node(t, "ReduceMean", "x,ax", "y");
        }
        cr_assert_eq(import_tiny(t, form ? 18 : 13, 2, 4, 4, &net), OSP_OK, "%s",
                     osp_last_error());
        float x[32], y[2];
        ramp(x, 32);
        cr_assert_eq(run(net, x, y, 2), 2);
        for (int c = 0; c < 2; c++) {
            double sum = 0;
            for (int i = 0; i < 16; i++) sum += x[c * 16 + i];
            cr_expect_float_eq(y[c], sum / 16, 1e-5);
        }
        osp_net_free(net);
    }
    t = tiny_new();
    attr_ints(node(t, "ReduceMean", "x", "y"), "axes", 2, (int64_t[]){2, 3});
    expect_refused(t, 18, "attribute 'axes' belongs to opsets before 18");
}
