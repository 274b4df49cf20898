/* Constant folding of the shape arithmetic swin's export writes (Pow, Mod,
 * Range, ScatterND, Expand, Cast to bool, Not): each folded chain is added
 * to the input (y = x + c), so the model's output minus its input is the
 * folded constant, checked against values computed here; hostile
 * arguments are refused in one line naming the node. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "onnx.pb-c.h"
#include "osprey/osprey.h"

/* ---- tiny models, everything in one arena ---- */

static _Alignas(16) unsigned char arena[1 << 18];
static size_t arena_used;

static void *take(size_t bytes) {
    bytes = (bytes + 15) & ~(size_t)15;
    cr_assert(arena_used + bytes <= sizeof arena, "test arena full");
    void *p = arena + arena_used;
    arena_used += bytes;
    memset(p, 0, bytes);
    return p;
}

static Osp__Onnx__GraphProto graph;
static Osp__Onnx__NodeProto *nodes[16];
static Osp__Onnx__TensorProto *inits[16];

static void reset(void) {
    arena_used = 0;
    osp__onnx__graph_proto__init(&graph);
    graph.name = "fold";
    graph.node = nodes;
    graph.initializer = inits;
}

/* A node of up to 3 inputs ("" leaves one out) and one output. */
static Osp__Onnx__NodeProto *node(const char *op, const char *name, const char *in0,
                                  const char *in1, const char *in2, const char *out) {
    Osp__Onnx__NodeProto *n = take(sizeof *n);
    osp__onnx__node_proto__init(n);
    n->op_type = (char *)op;
    n->name = (char *)name;
    n->input = take(3 * sizeof *n->input);
    const char *in[3] = {in0, in1, in2};
    for (int i = 0; i < 3 && in[i]; i++) n->input[n->n_input++] = (char *)in[i];
    n->output = take(sizeof *n->output);
    n->output[0] = (char *)out;
    n->n_output = 1;
    n->attribute = take(2 * sizeof *n->attribute);
    nodes[graph.n_node++] = n;
    return n;
}

static void attr_int(Osp__Onnx__NodeProto *n, const char *name, int64_t v) {
    Osp__Onnx__AttributeProto *a = take(sizeof *a);
    osp__onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = 1;
    a->type = OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    a->has_i = 1;
    a->i = v;
    n->attribute[n->n_attribute++] = a;
}

static void attr_string(Osp__Onnx__NodeProto *n, const char *name, const char *v) {
    Osp__Onnx__AttributeProto *a = take(sizeof *a);
    osp__onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->has_type = 1;
    a->type = OSP__ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
    a->has_s = 1;
    a->s.data = (uint8_t *)v;
    a->s.len = strlen(v);
    n->attribute[n->n_attribute++] = a;
}

/* An initializer of rank `rank` (0: a scalar), int64 or float. */
static void init(const char *name, int is_int, int rank, const int64_t *dims, const double *v) {
    Osp__Onnx__TensorProto *x = take(sizeof *x);
    osp__onnx__tensor_proto__init(x);
    x->name = (char *)name;
    x->n_dims = (size_t)rank;
    x->dims = take(((size_t)rank + 1) * sizeof *x->dims);
    size_t count = 1;
    for (int k = 0; k < rank; k++) count *= (size_t)(x->dims[k] = dims[k]);
    x->has_data_type = 1;
    if (is_int) {
        x->data_type = OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
        x->n_int64_data = count;
        x->int64_data = take(count * sizeof *x->int64_data);
        for (size_t k = 0; k < count; k++) x->int64_data[k] = (int64_t)v[k];
    } else {
        x->data_type = OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        x->n_float_data = count;
        x->float_data = take(count * sizeof *x->float_data);
        for (size_t k = 0; k < count; k++) x->float_data[k] = (float)v[k];
    }
    inits[graph.n_initializer++] = x;
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
    sh->dim = take(((size_t)rank + 1) * sizeof *sh->dim);
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

/* Imports the graph (input "x" of 1 x 2 x 4 x 4; the nodes end with
 * y = Add(x, c)) at opset 17. */
static int import(osp_net **net) {
    node("Add", "add", "x", "c", NULL, "y");
    Osp__Onnx__ModelProto m;
    osp__onnx__model_proto__init(&m);
    m.has_ir_version = 1;
    m.ir_version = 8;
    Osp__Onnx__OperatorSetIdProto op;
    osp__onnx__operator_set_id_proto__init(&op);
    op.domain = "";
    op.has_version = 1;
    op.version = 17;
    Osp__Onnx__OperatorSetIdProto *ops[1] = {&op};
    m.n_opset_import = 1;
    m.opset_import = ops;
    Osp__Onnx__ValueInfoProto *in[1] = {value_info("x", 4, (int64_t[]){1, 2, 4, 4})};
    Osp__Onnx__ValueInfoProto *out[1] = {value_info("y", 0, NULL)};
    graph.n_input = 1;
    graph.input = in;
    graph.n_output = 1;
    graph.output = out;
    m.graph = &graph;
    size_t len = osp__onnx__model_proto__get_packed_size(&m);
    uint8_t *buf = take(len);
    osp__onnx__model_proto__pack(&m, buf);
    *net = NULL;
    return osp_onnx_import(buf, len, "fold.onnx", NULL, net);
}

/* The folded constant c, broadcast to 2 x 4 x 4: the output minus x. */
static void folded(float c[32]) {
    osp_net *net;
    cr_assert_eq(import(&net), OSP_OK, "%s", osp_last_error());
    osp_graph *g = net->graph;
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = 0.25f * (float)i - 3.0f;
    cr_assert_eq(osp_graph_plan(g, 1, OSP_MODE_INFER), OSP_OK, "%s", osp_last_error());
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_INFER, .batch = 1};
    cr_assert_eq(osp_graph_forward(g, x, &ex), OSP_OK, "%s", osp_last_error());
    const osp_node *out = osp_graph_output(g);
    cr_assert_eq(out->size, 32);
    for (int i = 0; i < 32; i++) c[i] = out->out[i] - x[i];
    osp_net_free(net);
}

/* c of 4 values (broadcast along the last axis) must be `want`. */
static void expect_row(const double want[4]) {
    float c[32];
    folded(c);
    for (int i = 0; i < 32; i++)
        cr_expect(fabs(c[i] - want[i % 4]) <= 1e-5 * (1 + fabs(want[i % 4])),
                  "c[%d] = %g, want %g", i, c[i], want[i % 4]);
}

static void expect_refused(const char *what) {
    osp_net *net;
    int rc = import(&net);
    cr_expect_neq(rc, OSP_OK, "imported; wanted '%s'", what);
    cr_expect(net == NULL);
    cr_expect(strstr(osp_last_error(), what), "'%s' does not say '%s'", osp_last_error(), what);
    if (rc == OSP_OK) osp_net_free(net);
}

static const int64_t four[1] = {4};

/* ---- the tests ---- */

Test(onnx_fold_fill, pow_of_floats_and_integers) {
    reset();
    init("b", 0, 1, four, (double[]){4, 9, 0.25, 2});
    init("e", 0, 0, NULL, (double[]){-0.5}); /* swin's head_dim ** -0.5 */
    node("Pow", "pow", "b", "e", NULL, "c");
    expect_row((double[]){0.5, 1.0 / 3, 2, 1 / sqrt(2)});

    reset();
    init("b", 1, 1, four, (double[]){2, 3, -2, 5});
    init("e", 1, 0, NULL, (double[]){3});
    node("Pow", "pow", "b", "e", NULL, "p");
    attr_int(node("Cast", "cast", "p", NULL, NULL, "c"), "to", 1);
    expect_row((double[]){8, 27, -8, 125});

    reset(); /* an integer base to a float power keeps the base's type */
    init("b", 1, 1, four, (double[]){4, 9, 10, 2});
    init("e", 0, 0, NULL, (double[]){0.5});
    node("Pow", "pow", "b", "e", NULL, "p");
    attr_int(node("Cast", "cast", "p", NULL, NULL, "c"), "to", 1);
    expect_row((double[]){2, 3, 3, 1});

    reset();
    init("b", 1, 1, four, (double[]){2, 3, -2, 5});
    init("e", 1, 0, NULL, (double[]){-1});
    node("Pow", "pow", "b", "e", NULL, "p");
    attr_int(node("Cast", "cast", "p", NULL, NULL, "c"), "to", 1);
    expect_refused("node 'pow' (Pow): an integer to the negative power -1");
}

Test(onnx_fold_fill, mod_takes_the_sign_onnx_asks_for) {
    /* fmod = 0: the divisor's sign (torch's %, swin's -W % window) */
    for (int fmod_c = 0; fmod_c < 2; fmod_c++) {
        reset();
        init("a", 1, 1, four, (double[]){-7, 7, -7, 7});
        init("b", 1, 1, four, (double[]){3, -3, -3, 3});
        Osp__Onnx__NodeProto *n = node("Mod", "mod", "a", "b", NULL, "m");
        if (fmod_c) attr_int(n, "fmod", 1);
        attr_int(node("Cast", "cast", "m", NULL, NULL, "c"), "to", 1);
        if (fmod_c) expect_row((double[]){-1, 1, -1, 1});
        else expect_row((double[]){2, -2, -1, 1});
    }
    reset();
    init("a", 0, 1, four, (double[]){-7.5, 7.5, 5.5, -1});
    init("b", 0, 1, four, (double[]){2, 2, -2, 3});
    attr_int(node("Mod", "mod", "a", "b", NULL, "c"), "fmod", 1);
    expect_row((double[]){-1.5, 1.5, 1.5, -1});

    reset();
    init("a", 1, 1, four, (double[]){1, 2, 3, 4});
    init("b", 1, 0, NULL, (double[]){0});
    node("Mod", "mod", "a", "b", NULL, "m");
    attr_int(node("Cast", "cast", "m", NULL, NULL, "c"), "to", 1);
    expect_refused("node 'mod' (Mod): integer modulo by zero");
}

Test(onnx_fold_fill, range_of_integers_and_floats) {
    reset();
    init("s", 1, 0, NULL, (double[]){1});
    init("l", 1, 0, NULL, (double[]){9});
    init("d", 1, 0, NULL, (double[]){2});
    node("Range", "range", "s", "l", "d", "r");
    attr_int(node("Cast", "cast", "r", NULL, NULL, "c"), "to", 1);
    expect_row((double[]){1, 3, 5, 7});

    reset(); /* downwards, with a limit the steps do not reach exactly */
    init("s", 0, 0, NULL, (double[]){2});
    init("l", 0, 0, NULL, (double[]){0.9});
    init("d", 0, 0, NULL, (double[]){-0.3});
    node("Range", "range", "s", "l", "d", "c");
    expect_row((double[]){2, 1.7, 1.4, 1.1});

    reset();
    init("s", 1, 0, NULL, (double[]){0});
    init("l", 1, 0, NULL, (double[]){4});
    init("d", 1, 0, NULL, (double[]){0});
    node("Range", "range", "s", "l", "d", "c");
    expect_refused("node 'range' (Range): start 0, limit 4, delta 0");
}

Test(onnx_fold_fill, scatter_nd_replaces_and_reduces) {
    /* rows 1 and 3 of a 4 x 4 of zeros replaced: swin's mask[h, w] = k */
    reset();
    init("z", 0, 2, (int64_t[]){4, 4}, (double[16]){0});
    init("i", 1, 2, (int64_t[]){2, 1}, (double[]){3, 1});
    init("u", 0, 2, (int64_t[]){2, 4}, (double[]){1, 2, 3, 4, 5, 6, 7, 8});
    node("ScatterND", "scatter", "z", "i", "u", "c");
    float c[32];
    folded(c);
    for (int i = 0; i < 32; i++) {
        int row = (i / 4) % 4, col = i % 4;
        float want = row == 3 ? (float)(1 + col) : row == 1 ? (float)(5 + col) : 0.0f;
        cr_expect_float_eq(c[i], want, 1e-6, "c[%d] = %g, want %g", i, c[i], want);
    }

    /* single elements, one of them twice, added (opset 16's reduction) */
    reset();
    init("z", 0, 2, (int64_t[]){4, 4}, (double[16]){0});
    init("i", 1, 2, (int64_t[]){3, 2}, (double[]){0, 1, -1, -1, 0, 1});
    init("u", 0, 1, (int64_t[]){3}, (double[]){1, 2, 4});
    Osp__Onnx__NodeProto *n = node("ScatterND", "scatter", "z", "i", "u", "c");
    attr_string(n, "reduction", "add");
    folded(c);
    for (int i = 0; i < 32; i++) {
        int at = i % 16;
        float want = at == 1 ? 5.0f : at == 15 ? 2.0f : 0.0f;
        cr_expect_float_eq(c[i], want, 1e-6, "c[%d] = %g, want %g", i, c[i], want);
    }

    reset();
    init("z", 0, 2, (int64_t[]){4, 4}, (double[16]){0});
    init("i", 1, 2, (int64_t[]){1, 1}, (double[]){4});
    init("u", 0, 2, (int64_t[]){1, 4}, (double[]){1, 2, 3, 4});
    node("ScatterND", "scatter", "z", "i", "u", "c");
    expect_refused("node 'scatter' (ScatterND): index 4 out of range for an axis of 4");

    reset();
    init("z", 0, 2, (int64_t[]){4, 4}, (double[16]){0});
    init("i", 1, 2, (int64_t[]){1, 1}, (double[]){2});
    init("u", 0, 2, (int64_t[]){1, 3}, (double[]){1, 2, 3});
    node("ScatterND", "scatter", "z", "i", "u", "c");
    expect_refused("node 'scatter' (ScatterND): updates do not fit data and indices");
}

Test(onnx_fold_fill, expand_of_a_constant_without_the_batch) {
    reset();
    init("v", 0, 2, (int64_t[]){4, 1}, (double[]){1, 2, 3, 4});
    init("s", 1, 1, (int64_t[]){3}, (double[]){2, 1, 4});
    node("Expand", "expand", "v", "s", NULL, "c");
    float c[32];
    folded(c);
    for (int i = 0; i < 32; i++)
        cr_expect_float_eq(c[i], (float)(1 + (i / 4) % 4), 1e-6, "c[%d] = %g", i, c[i]);

    reset();
    init("v", 0, 1, (int64_t[]){3}, (double[]){1, 2, 3});
    init("s", 1, 1, (int64_t[]){1}, (double[]){4});
    node("Expand", "expand", "v", "s", NULL, "c");
    expect_refused("node 'expand' (Expand): shape 4 does not broadcast with 3");
}

Test(onnx_fold_fill, cast_to_bool_and_not) {
    /* swin's mask != 0, written as Cast to bool and Not of Equal */
    reset();
    init("v", 0, 1, four, (double[]){0, 2.5, -1, 0});
    attr_int(node("Cast", "tobool", "v", NULL, NULL, "b"), "to", 9);
    node("Not", "not", "b", NULL, NULL, "nb");
    attr_int(node("Cast", "tofloat", "nb", NULL, NULL, "c"), "to", 1);
    expect_row((double[]){1, 0, 0, 1});
}
