/* ONNX export: the structure of the exported model, read back with the
 * protobuf-c code generated from onnx.proto; refusal of what cannot be
 * exported. (tests/cli/onnx_export.sh runs exported models in ONNX Runtime.) */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/onnx.h"
#include "osprey/osprey.h"
#include "tmpdir.h"

static osp_net *net_of(const char *spec) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(spec, strlen(spec), "spec", 3, &net), 0, "%s", osp_last_error());
    return net;
}

/* A layer type that ONNX export does not know. */
static int mystery_setup(osp_graph *g, osp_node *n) {
    n->shape = osp_node_input(g, n, 0)->shape;
    return OSP_OK;
}
static const osp_op mystery_op = {.name = "mystery", .setup = mystery_setup};

Test(onnx_export, unmappable_layer_is_named) {
    osp_net *net = osp_calloc(1, sizeof *net);
    cr_assert(net);
    int64_t d = 5;
    net->input = osp_shape_make(1, &d);
    net->std[0] = 1;
    cr_assert_eq(osp_graph_new(&net->input, &net->graph), 0);
    int in = 0;
    cr_assert_geq(osp_graph_add(net->graph, &mystery_op, "odd_one", &in, 1, NULL), 0);
    cr_assert_eq(osp_graph_init_params(net->graph, 1), 0);
    net->n_classes = 5;
    void *buf = (void *)1;
    size_t len = 7;
    int rc = osp_onnx_export_buffer(net, &buf, &len);
    cr_assert_eq(rc, OSP_ENOTSUP);
    cr_assert_null(buf);
    cr_assert_eq(len, 0);
    cr_assert(strstr(osp_last_error(), "'odd_one'") && strstr(osp_last_error(), "[mystery]"), "%s",
              osp_last_error());
    /* and no file is left behind */
    tmpdir_make();
    cr_assert_eq(osp_onnx_export(net, tmpdir_path("odd.onnx")), OSP_ENOTSUP);
    cr_assert_neq(access(tmpdir_path("odd.onnx"), F_OK), 0);
    tmpdir_remove();
    osp_net_free(net);
}

Test(onnx_export, name_clash_is_refused) {
    osp_net *net = net_of("[net]\ninput = 4\n[fc]\nname = a\noutputs = 3\n"
                          "[relu]\nname = a.weight\n[fc]\noutputs = 2\n");
    void *buf;
    size_t len;
    cr_assert_eq(osp_onnx_export_buffer(net, &buf, &len), OSP_EINVAL);
    cr_assert(strstr(osp_last_error(), "'a.weight'"), "%s", osp_last_error());
    osp_net_free(net);
}

Test(onnx_export, file_is_the_buffer) {
    osp_net *net = net_of("[net]\ninput = 1x8x8\n[conv]\nfilters = 2\nsize = 3\n[fc]\noutputs = 3\n");
    void *buf;
    size_t len;
    cr_assert_eq(osp_onnx_export_buffer(net, &buf, &len), 0, "%s", osp_last_error());
    cr_assert_gt(len, 100);
    tmpdir_make();
    cr_assert_eq(osp_onnx_export(net, tmpdir_path("m.onnx")), 0, "%s", osp_last_error());
    void *file;
    size_t flen;
    cr_assert_eq(osp_file_read_all(tmpdir_path("m.onnx"), 1 << 20, &file, &flen), 0);
    cr_assert_eq(flen, len);
    cr_assert(!memcmp(file, buf, len));
    osp_free(file);
    osp_free(buf);
    tmpdir_remove();
    osp_net_free(net);
}

#if defined(__has_include)
#if __has_include("onnx.pb-c.h")
#define HAVE_ONNX_PB 1
#endif
#endif

#ifdef HAVE_ONNX_PB
#include "onnx.pb-c.h"

static Osp__Onnx__ModelProto *export_model(osp_net *net) {
    void *buf;
    size_t len;
    cr_assert_eq(osp_onnx_export_buffer(net, &buf, &len), 0, "%s", osp_last_error());
    Osp__Onnx__ModelProto *m = osp__onnx__model_proto__unpack(NULL, len, buf);
    osp_free(buf);
    cr_assert(m, "the export does not parse as an ONNX ModelProto");
    return m;
}

/* "Conv,MaxPool,..." of the graph's nodes. */
static void op_types(const Osp__Onnx__ModelProto *m, char *out, size_t cap) {
    out[0] = '\0';
    for (size_t i = 0; i < m->graph->n_node; i++) {
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "%s%s", i ? "," : "", m->graph->node[i]->op_type);
    }
}

static const Osp__Onnx__NodeProto *node_named(const Osp__Onnx__ModelProto *m, const char *name) {
    for (size_t i = 0; i < m->graph->n_node; i++)
        if (!strcmp(m->graph->node[i]->name, name)) return m->graph->node[i];
    cr_assert_fail("no node '%s'", name);
    return NULL;
}

static const Osp__Onnx__AttributeProto *attr(const Osp__Onnx__NodeProto *n, const char *name) {
    for (size_t i = 0; i < n->n_attribute; i++)
        if (!strcmp(n->attribute[i]->name, name)) return n->attribute[i];
    cr_assert_fail("node '%s' has no attribute '%s'", n->name, name);
    return NULL;
}

static const Osp__Onnx__TensorProto *init_named(const Osp__Onnx__ModelProto *m, const char *name) {
    for (size_t i = 0; i < m->graph->n_initializer; i++)
        if (!strcmp(m->graph->initializer[i]->name, name)) return m->graph->initializer[i];
    cr_assert_fail("no initializer '%s'", name);
    return NULL;
}

static const char *meta(const Osp__Onnx__ModelProto *m, const char *key) {
    for (size_t i = 0; i < m->n_metadata_props; i++)
        if (!strcmp(m->metadata_props[i]->key, key)) return m->metadata_props[i]->value;
    return NULL;
}

Test(onnx_export, lenet_structure) {
    osp_net *net = net_of("[net]\ninput = 1x12x12\nmean = 0.25\nstd = 0.5\n"
                          "[conv]\nname = conv1\nfilters = 4\nsize = 5\nstride = 1x2\npad = 2x1\n"
                          "[maxpool]\nname = pool1\nsize = 2\nceil = 1\n"
                          "[fc]\nname = fc1\noutputs = 6\n[relu]\nname = relu1\n"
                          "[fc]\nname = fc2\noutputs = 3\nbias = 0\n");
    const char *labels[] = {"a", "b\"q", "c"};
    cr_assert_eq(osp_net_set_labels(net, labels, 3), 0);
    Osp__Onnx__ModelProto *m = export_model(net);
    cr_assert_eq(m->ir_version, 7);
    cr_assert_eq(m->n_opset_import, 1);
    cr_assert_eq(m->opset_import[0]->version, 13);
    cr_assert_str_eq(m->producer_name, "osprey");
    char ops[512];
    op_types(m, ops, sizeof ops);
    cr_assert_str_eq(ops, "Conv,MaxPool,Flatten,Gemm,Relu,Gemm");
    const Osp__Onnx__GraphProto *g = m->graph;
    /* input batch x 1 x 12 x 12, the batch symbolic; output "output" */
    cr_assert_eq(g->n_input, 1);
    cr_assert_str_eq(g->input[0]->name, "input");
    const Osp__Onnx__TensorShapeProto *s = g->input[0]->type->tensor_type->shape;
    cr_assert_eq(s->n_dim, 4);
    cr_assert_str_eq(s->dim[0]->dim_param, "batch");
    cr_assert_eq(s->dim[1]->dim_value, 1);
    cr_assert_eq(s->dim[3]->dim_value, 12);
    cr_assert_eq(g->n_output, 1);
    cr_assert_str_eq(g->output[0]->name, "output");
    cr_assert_eq(g->output[0]->type->tensor_type->shape->dim[1]->dim_value, 3);
    cr_assert_str_eq(g->node[g->n_node - 1]->output[0], "output");
    /* nodes and values named after the layers */
    const Osp__Onnx__NodeProto *conv = node_named(m, "conv1");
    cr_assert_str_eq(conv->input[0], "input");
    cr_assert_str_eq(conv->output[0], "conv1");
    cr_assert_eq(conv->n_input, 3);
    cr_assert_str_eq(conv->input[1], "conv1.weight");
    cr_assert_str_eq(conv->input[2], "conv1.bias");
    const Osp__Onnx__AttributeProto *a = attr(conv, "strides");
    cr_assert(a->n_ints == 2 && a->ints[0] == 1 && a->ints[1] == 2);
    a = attr(conv, "pads");
    cr_assert(a->n_ints == 4 && a->ints[0] == 2 && a->ints[1] == 1 && a->ints[2] == 2 && a->ints[3] == 1);
    cr_assert_eq(attr(conv, "group")->i, 1);
    cr_assert_eq(attr(node_named(m, "pool1"), "ceil_mode")->i, 1);
    const Osp__Onnx__NodeProto *fc1 = node_named(m, "fc1");
    cr_assert_str_eq(fc1->op_type, "Gemm");
    cr_assert_str_eq(fc1->input[0], "fc1/flat");
    cr_assert_str_eq(node_named(m, "fc1/flat")->input[0], "pool1");
    cr_assert_eq(attr(fc1, "transB")->i, 1);
    cr_assert_eq(node_named(m, "fc2")->n_input, 2); /* no bias */
    /* initializers: shapes and the weights themselves, float32 raw data */
    cr_assert_eq(g->n_initializer, 5);
    const Osp__Onnx__TensorProto *w = init_named(m, "conv1.weight");
    cr_assert_eq(w->data_type, OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    cr_assert(w->n_dims == 4 && w->dims[0] == 4 && w->dims[1] == 1 && w->dims[2] == 5 && w->dims[3] == 5);
    int p = osp_graph_find_param(net->graph, "conv1.weight");
    cr_assert_eq(w->raw_data.len, 100 * sizeof(float));
    cr_assert(!memcmp(w->raw_data.data, osp_graph_param_data(net->graph, p), w->raw_data.len));
    const Osp__Onnx__TensorProto *fw = init_named(m, "fc1.weight");
    cr_assert(fw->n_dims == 2 && fw->dims[0] == 6 && fw->dims[1] == 4 * 6 * 3, "fc1.weight %lldx%lld",
              (long long)fw->dims[0], (long long)fw->dims[1]);
    /* metadata, JSON */
    cr_assert_str_eq(meta(m, "osprey.mean"), "[0.25]");
    cr_assert_str_eq(meta(m, "osprey.std"), "[0.5]");
    cr_assert_str_eq(meta(m, "osprey.labels"), "[\"a\",\"b\\\"q\",\"c\"]");
    osp__onnx__model_proto__free_unpacked(m, NULL);
    osp_net_free(net);
}

Test(onnx_export, pointwise_and_merging_layers) {
    osp_net *net = net_of(
        "[net]\ninput = 3x6x6\nmean = 0.1, 0.2, 0.3\nstd = 1, 2, 4\n"
        "[conv]\nname = dw\nfilters = 6\nsize = 3\npad = same\ngroups = 3\nbias = 0\ndilation = 1\n"
        "[batchnorm]\nname = bn\neps = 0.001\nmomentum = 0.25\n"
        "[relu6]\nname = r6\n[swish]\nname = sw\n[leakyrelu]\nname = lr\nalpha = 0.2\n"
        "[add]\nname = sum\ninput = r6, sw, lr\n"
        "[avgpool]\nname = ap\nsize = 2\nexclude_pad = 1\npad = 1\n"
        "[dropout]\nname = drop\n"
        "[concat]\nname = cat\ninput = drop, drop\n"
        "[reshape]\nname = rs\nshape = 12x-1\n"
        "[softmax]\nname = sm\n"
        "[l2norm]\nname = l2\neps = 0.5\n"
        "[globalavgpool]\nname = gap\ninput = sum\n"
        "[flatten]\nname = flat\n"
        "[sigmoid]\nname = sig\n[tanh]\nname = th\n"
        "[softmax]\nname = sm1\n");
    Osp__Onnx__ModelProto *m = export_model(net);
    char ops[1024];
    op_types(m, ops, sizeof ops);
    cr_assert_str_eq(ops,
                     "Conv,BatchNormalization,Clip,Sigmoid,Mul,LeakyRelu,Add,Add,AveragePool,"
                     "Identity,Concat,Reshape,Flatten,Softmax,Reshape,Flatten,ReduceL2,Max,Div,"
                     "Reshape,GlobalAveragePool,Flatten,Sigmoid,Tanh,Softmax");
    cr_assert_eq(attr(node_named(m, "dw"), "group")->i, 3);
    cr_assert_eq(attr(node_named(m, "dw"), "pads")->ints[0], 1);
    const Osp__Onnx__NodeProto *bn = node_named(m, "bn");
    cr_assert_eq(bn->n_input, 5);
    cr_assert_str_eq(bn->input[3], "bn.running_mean");
    cr_assert_str_eq(bn->input[4], "bn.running_var");
    cr_assert_float_eq(attr(bn, "epsilon")->f, 0.001f, 1e-9);
    cr_assert_float_eq(attr(bn, "momentum")->f, 0.75f, 1e-7);
    /* relu6: Clip between two scalar constants */
    const Osp__Onnx__NodeProto *clip = node_named(m, "r6");
    cr_assert_eq(clip->n_input, 3);
    const Osp__Onnx__TensorProto *lo = init_named(m, clip->input[1]),
                                 *hi = init_named(m, clip->input[2]);
    float v;
    cr_assert(lo->n_dims == 0 && lo->raw_data.len == 4);
    memcpy(&v, hi->raw_data.data, 4);
    cr_assert_float_eq(v, 6.0f, 0);
    /* swish: x * sigmoid(x) */
    const Osp__Onnx__NodeProto *mul = node_named(m, "sw");
    cr_assert_str_eq(mul->input[0], "r6");
    cr_assert_str_eq(mul->input[1], "sw/sigmoid");
    cr_assert_float_eq(attr(node_named(m, "lr"), "alpha")->f, 0.2f, 0);
    /* three inputs: (r6 + sw) + lr, the last Add named after the layer */
    const Osp__Onnx__NodeProto *sum = node_named(m, "sum");
    cr_assert_str_eq(sum->input[0], "sum/sum1");
    cr_assert_str_eq(sum->input[1], "lr");
    cr_assert_eq(attr(node_named(m, "ap"), "count_include_pad")->i, 0);
    cr_assert_eq(attr(node_named(m, "cat"), "axis")->i, 1);
    /* reshape to [0, 12, 16]: the batch kept */
    const Osp__Onnx__TensorProto *shape = init_named(m, node_named(m, "rs")->input[1]);
    cr_assert_eq(shape->data_type, OSP__ONNX__TENSOR_PROTO__DATA_TYPE__INT64);
    int64_t dims[3];
    cr_assert_eq(shape->raw_data.len, sizeof dims);
    memcpy(dims, shape->raw_data.data, sizeof dims);
    cr_assert(dims[0] == 0 && dims[1] == 12 && dims[2] == 16);
    /* softmax over all of a sample's values: flatten, softmax, reshape back */
    cr_assert_eq(attr(node_named(m, "sm/softmax"), "axis")->i, 1);
    cr_assert_str_eq(node_named(m, "sm")->op_type, "Reshape");
    const Osp__Onnx__NodeProto *norm = node_named(m, "l2/norm");
    cr_assert_eq(attr(norm, "keepdims")->i, 1);
    cr_assert_eq(attr(norm, "axes")->ints[0], 1);
    memcpy(&v, init_named(m, "l2/eps")->raw_data.data, 4);
    cr_assert_float_eq(v, 0.5f, 0);
    /* a 1-D softmax is one node, and the last layer gives "output" */
    const Osp__Onnx__NodeProto *last = node_named(m, "sm1");
    cr_assert_str_eq(last->output[0], "output");
    cr_assert_eq(attr(last, "axis")->i, 1);
    cr_assert_str_eq(meta(m, "osprey.std"), "[1,2,4]");
    osp__onnx__model_proto__free_unpacked(m, NULL);
    osp_net_free(net);
}
Test(onnx_export, import_layers) {
    osp_net *net = net_of("[net]\ninput = 2x4x4\n"
                          "[pad]\nname = p\npad = 1, 2, 3, 0\nmode = reflect\n"
                          "[hardswish]\nname = hs\n"
                          "[clip]\nname = cl\nmin = -1\n"
                          "[transpose]\nname = tr\nperm = 1, 2, 0\n"
                          "[constant]\nname = k\nshape = 2\n"
                          "[mul]\nname = m\ninput = tr, k\n"
                          "[constant]\nname = k2\nshape = 1x6x2\n"
                          "[concat]\nname = cat\ninput = m, k2\n");
    Osp__Onnx__ModelProto *m = export_model(net);
    char ops[1024];
    op_types(m, ops, sizeof ops);
    cr_assert_str_eq(ops, "Pad,HardSigmoid,Mul,Clip,Transpose,Shape,Slice,Concat,Expand,Reshape,"
                          "Mul,Concat,Expand,Concat");
    const Osp__Onnx__NodeProto *pad = node_named(m, "p");
    cr_assert_eq(pad->n_input, 2); /* reflect: no fill value */
    const Osp__Onnx__AttributeProto *mode = attr(pad, "mode");
    cr_assert(mode->s.len == 7 && !memcmp(mode->s.data, "reflect", 7)); /* bytes, unterminated */
    int64_t pads[8];
    const Osp__Onnx__TensorProto *pt = init_named(m, pad->input[1]);
    cr_assert_eq(pt->raw_data.len, sizeof pads);
    memcpy(pads, pt->raw_data.data, sizeof pads);
    cr_assert(pads[2] == 1 && pads[3] == 2 && pads[6] == 3 && pads[7] == 0 && pads[0] == 0);
    cr_assert_float_eq(attr(node_named(m, "hs/hardsigmoid"), "alpha")->f, 1.0f / 6.0f, 1e-7);
    /* clip with only a lower bound: two inputs */
    cr_assert_eq(node_named(m, "cl")->n_input, 2);
    const Osp__Onnx__AttributeProto *perm = attr(node_named(m, "tr"), "perm");
    cr_assert(perm->n_ints == 4 && perm->ints[0] == 0 && perm->ints[1] == 2 && perm->ints[2] == 3 &&
              perm->ints[3] == 1);
    /* a constant: a [1, shape] initializer, expanded to the batch */
    const Osp__Onnx__TensorProto *k = init_named(m, "k.value");
    cr_assert(k->n_dims == 2 && k->dims[0] == 1 && k->dims[1] == 2);
    cr_assert_str_eq(node_named(m, "k")->op_type, "Expand");
    /* a binary layer reads the initializer, aligned to the other's rank */
    const Osp__Onnx__NodeProto *mul = node_named(m, "m");
    cr_assert_str_eq(mul->input[0], "tr");
    cr_assert_str_eq(mul->input[1], "m/in1");
    cr_assert_str_eq(node_named(m, "m/in1")->input[0], "k.value");
    /* other layers read the expanded constant */
    cr_assert_str_eq(node_named(m, "cat")->input[1], "k2");
    osp__onnx__model_proto__free_unpacked(m, NULL);
    osp_net_free(net);
}
#else
Test(onnx_export, structure) {
    cr_skip_test("the generated onnx.pb-c.h is not on this test's include path");
}
#endif
