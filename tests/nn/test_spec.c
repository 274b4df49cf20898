/* The spec parser and network builder: good specs build, every mistake is
 * refused with file:line. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "osprey/nn.h"

static int build(const char *text, osp_net **net) {
    return osp_net_from_spec(text, strlen(text), "t.cfg", 1, net);
}

static void expect_error(const char *text, const char *where, const char *what) {
    osp_net *net = NULL;
    int rc = build(text, &net);
    cr_assert_neq(rc, 0, "spec should fail: %s", text);
    cr_assert_null(net);
    cr_expect(strstr(osp_last_error(), where) != NULL, "'%s' lacks '%s'", osp_last_error(), where);
    cr_expect(strstr(osp_last_error(), what) != NULL, "'%s' lacks '%s'", osp_last_error(), what);
}

Test(spec, parses_sections_keys_comments) {
    const char *text = "# a comment\n[net]\ninput = 1x4x4 ; trailing\n\n[fc]\nname = out\noutputs = 3\n";
    osp_spec *sp;
    cr_assert_eq(osp_spec_parse(text, strlen(text), "t.cfg", &sp), 0, "%s", osp_last_error());
    cr_assert_eq(sp->n_sections, 2);
    cr_assert_str_eq(sp->sections[1].type, "fc");
    cr_assert_eq(sp->sections[1].line, 5);
    cr_assert_str_eq(sp->sections[0].kv[0].value, "1x4x4");
    osp_spec_free(sp);
}

Test(spec, builds_lenet_from_nets) {
    osp_net *net;
    char path[512];
    snprintf(path, sizeof path, "%s/nets/lenet.cfg", OSP_SOURCE_DIR);
    cr_assert_eq(osp_net_load_spec(path, 1, &net), 0, "%s", osp_last_error());
    cr_expect_eq(osp_net_param_count(net), 431080);
    cr_expect_eq(net->n_classes, 10);
    osp_net_free(net);
}

Test(spec, example_nets_build) {
    const char *names[] = {"lenet", "resnet20", "mobilenet"};
    for (int i = 0; i < 3; i++) {
        osp_net *net;
        char path[512];
        snprintf(path, sizeof path, "%s/nets/%s.cfg", OSP_SOURCE_DIR, names[i]);
        cr_assert_eq(osp_net_load_spec(path, 1, &net), 0, "%s: %s", names[i], osp_last_error());
        cr_expect_eq(net->n_classes, 10);
        osp_net_free(net);
    }
}

Test(spec, errors_name_file_and_line) {
    expect_error("", "t.cfg", "no sections");
    expect_error("[net]\ninput = 1x4x4\n", "t.cfg", "no layers");
    expect_error("input = 3\n", "t.cfg:1", "before any [section]");
    expect_error("[net\n", "t.cfg:1", "without ']'");
    expect_error("[net]\ninput 1x4x4\n", "t.cfg:2", "key = value");
    expect_error("[net]\ninput = 1x4x4\ninput = 1x4x4\n[fc]\noutputs=2\n", "t.cfg:3", "set twice");
    expect_error("[fc]\noutputs = 2\n", "t.cfg:1", "must start with [net]");
    expect_error("[net]\n[fc]\noutputs = 2\n", "t.cfg:1", "'input'");
    expect_error("[net]\ninput = 1x0x4\n[fc]\noutputs = 2\n", "t.cfg:2", "between");
    expect_error("[net]\ninput = 1x4x4\nmean = 0.1, 0.2\n[fc]\noutputs=2\n", "t.cfg:3",
                 "'mean' needs 1 value (the input has 1 channel), not 2");
    expect_error("[net]\ninput = 3x4x4\nstd = 0.1, 0.2\n[fc]\noutputs=2\n", "t.cfg:3",
                 "'std' needs 1 value or 3, one per channel (the input has 3 channels), not 2");
    expect_error("[net]\ninput = 1x4x4\nstd = 0\n[fc]\noutputs=2\n", "t.cfg:3", "positive");
    expect_error("[net]\ninput = 1x4x4\ncolour = red\n[fc]\noutputs=2\n", "t.cfg:3", "unknown key 'colour'");
    expect_error("[net]\ninput = 1x4x4\n[blender]\n", "t.cfg:3", "unknown layer type [blender]");
    expect_error("[net]\ninput = 1x4x4\n[fc]\ninput = nowhere\noutputs = 2\n", "t.cfg:4", "'nowhere'");
    expect_error("[net]\ninput = 1x4x4\n[relu]\nname = a\n[relu]\nname = a\n", "t.cfg:5", "used twice");
    expect_error("[net]\ninput = 1x4x4\n[fc]\noutputs = two\n", "t.cfg:4", "integer");
    expect_error("[net]\ninput = 1x4x4\n[fc]\noutputs = 2\nwidth = 3\n", "t.cfg:5", "unknown key 'width'");
    expect_error("[net]\ninput = 1x4x4\n[fc]\n", "t.cfg:3", "outputs");
    expect_error("[net]\ninput = 1x4x4\n[conv]\nfilters = 2\nsize = 5\n", "t.cfg:3", "conv");
    expect_error("[net]\ninput = 1x4x4\n\x01\n", "t.cfg:3", "unexpected byte");
}

/* At batch 16 the activations outweigh the kernels' workspace, which both
 * plans hold alike. Training keeps every activation (its gradients share
 * memory by liveness as inference's activations do): 7.5 times
 * inference's arena for ResNet-20. */
Test(spec, inference_plan_reuses_memory) {
    osp_net *net;
    char path[512];
    snprintf(path, sizeof path, "%s/nets/resnet20.cfg", OSP_SOURCE_DIR);
    cr_assert_eq(osp_net_load_spec(path, 1, &net), 0, "%s", osp_last_error());
    cr_assert_eq(osp_graph_plan(net->graph, 16, OSP_MODE_TRAIN), 0);
    size_t train = osp_graph_arena_bytes(net->graph);
    osp_graph_free(net->graph);
    net->graph = NULL;
    osp_net_free(net);
    cr_assert_eq(osp_net_load_spec(path, 1, &net), 0);
    cr_assert_eq(osp_graph_plan(net->graph, 16, OSP_MODE_INFER), 0);
    size_t infer = osp_graph_arena_bytes(net->graph);
    cr_expect_lt(infer * 5, train, "inference %zu bytes vs training %zu", infer, train);
    osp_net_free(net);
}
