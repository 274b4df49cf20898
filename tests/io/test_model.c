/* Models and checkpoints: round trips, and refusal of damaged files. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/io.h"
#include "osprey/model.h"

static const char *SPEC = "[net]\ninput = 1x6x6\nmean = 0.5\nstd = 0.25\n"
                          "[conv]\nname = c\nfilters = 3\nsize = 3\n[batchnorm]\nname = bn\n"
                          "[relu]\n[fc]\nname = out\noutputs = 4\n";

static osp_net *make_net(void) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 5, &net), 0, "%s", osp_last_error());
    const char *labels[] = {"cat", "dog", "bird", "fish"};
    cr_assert_eq(osp_net_set_labels(net, labels, 4), 0);
    /* non-default buffers, to see that they travel */
    int bn = osp_graph_find_param(net->graph, "bn.running_var");
    cr_assert_geq(bn, 0);
    osp_graph_param_data(net->graph, bn)[1] = 2.5f;
    return net;
}

static void same_params(osp_net *a, osp_net *b) {
    cr_assert_eq(osp_graph_param_count(a->graph), osp_graph_param_count(b->graph));
    for (int i = 0; i < osp_graph_param_count(a->graph); i++) {
        const osp_param *p = osp_graph_param(a->graph, i);
        cr_assert(!memcmp(osp_graph_param_data(a->graph, i), osp_graph_param_data(b->graph, i),
                          (size_t)p->numel * sizeof(float)), "%s differs", p->name);
    }
}

Test(model, round_trip) {
    char path[] = "/tmp/osp-model-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    osp_net *net = make_net();
    cr_assert_eq(osp_model_save(net, path), 0, "%s", osp_last_error());
    osp_net *back;
    cr_assert_eq(osp_model_load(path, &back), 0, "%s", osp_last_error());
    same_params(net, back);
    cr_assert_str_eq(back->labels[2], "bird");
    cr_assert_float_eq(back->mean[0], 0.5f, 0);
    cr_assert_float_eq(back->std[0], 0.25f, 0);
    cr_assert_eq(back->n_classes, 4);
    /* a model is not a checkpoint */
    osp_optim *opt;
    osp_train_state st;
    osp_net *none;
    cr_assert_neq(osp_checkpoint_load(path, &none, &opt, &st), 0);
    cr_assert(strstr(osp_last_error(), "not a checkpoint"), "%s", osp_last_error());
    osp_net_free(net);
    osp_net_free(back);
    unlink(path);
}

Test(model, checkpoint_round_trip) {
    char path[] = "/tmp/osp-ckpt-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    osp_net *net = make_net();
    int64_t n;
    osp_graph_weights(net->graph, &n);
    osp_optim_config cfg = osp_optim_defaults(OSP_OPTIM_ADAM);
    osp_optim *opt;
    cr_assert_eq(osp_optim_new(&cfg, n, &opt), 0);
    for (int64_t i = 0; i < n; i++) {
        opt->m[i] = (float)i * 0.5f;
        opt->v[i] = (float)i * 0.25f;
    }
    opt->t = 17;
    osp_train_state st = {.step = 17, .seed = 12345678901234ULL, .config = "{\"batch\": 8}"};
    cr_assert_eq(osp_checkpoint_save(net, opt, &st, path), 0, "%s", osp_last_error());
    osp_net *back;
    osp_optim *opt2;
    osp_train_state st2;
    cr_assert_eq(osp_checkpoint_load(path, &back, &opt2, &st2), 0, "%s", osp_last_error());
    same_params(net, back);
    cr_assert_eq(st2.step, 17);
    cr_assert_eq(st2.seed, 12345678901234ULL);
    cr_assert_str_eq(st2.config, "{\"batch\": 8}");
    cr_assert_eq(opt2->cfg.kind, OSP_OPTIM_ADAM);
    cr_assert_eq(opt2->t, 17);
    cr_assert(!memcmp(opt->m, opt2->m, (size_t)n * sizeof(float)));
    cr_assert(!memcmp(opt->v, opt2->v, (size_t)n * sizeof(float)));
    osp_free(st2.config);
    osp_optim_free(opt);
    osp_optim_free(opt2);
    osp_net_free(net);
    osp_net_free(back);
    unlink(path);
}

/* Every truncation and a sweep of corrupted bytes: an error or a valid
 * model, never a crash (the sanitizer run checks for memory errors). */
Test(model, damaged_files_refused) {
    char path[] = "/tmp/osp-dmg-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    osp_net *net = make_net();
    cr_assert_eq(osp_model_save(net, path), 0);
    osp_net_free(net);
    void *buf;
    size_t len;
    cr_assert_eq(osp_file_read_all(path, 1 << 20, &buf, &len), 0);
    unsigned char *copy = malloc(len);
    for (size_t cut = 0; cut < len; cut += (cut < 64 ? 1 : 97)) {
        osp_net *m = NULL;
        cr_assert_neq(osp_checkpoint_parse(buf, cut, "cut", &m, NULL, NULL), 0, "truncated at %zu accepted", cut);
        cr_assert_null(m);
    }
    for (size_t at = 0; at < len; at += 13) {
        memcpy(copy, buf, len);
        copy[at] ^= 0x5a;
        osp_net *m = NULL;
        if (osp_checkpoint_parse(copy, len, "flip", &m, NULL, NULL) == 0) osp_net_free(m);
    }
    free(copy);
    osp_free(buf);
    unlink(path);
}

Test(model, wrong_shapes_refused) {
    char path[] = "/tmp/osp-shape-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    osp_net *net = make_net();
    /* a file whose spec says 3 filters but whose tensor has 2 */
    osp_st_writer *w;
    cr_assert_eq(osp_st_writer_new(&w), 0);
    osp_st_writer_meta(w, "format", "osprey");
    osp_st_writer_meta(w, "version", "1");
    osp_st_writer_meta(w, "kind", "model");
    osp_st_writer_meta(w, "spec", SPEC);
    osp_st_writer_meta(w, "input", "1x6x6");
    osp_st_writer_meta(w, "mean", "[0,0,0,0]");
    osp_st_writer_meta(w, "std", "[1,1,1,1]");
    osp_st_writer_meta(w, "labels", "[]");
    for (int i = 0; i < osp_graph_param_count(net->graph); i++) {
        const osp_param *p = osp_graph_param(net->graph, i);
        osp_shape s = p->shape;
        if (!strcmp(p->name, "c.weight")) s.dim[0] = 2;
        osp_st_writer_add(w, p->name, OSP_DTYPE_F32, &s, osp_graph_param_data(net->graph, i));
    }
    cr_assert_eq(osp_st_writer_save(w, path), 0, "%s", osp_last_error());
    osp_st_writer_free(w);
    osp_net *back;
    cr_assert_eq(osp_model_load(path, &back), OSP_EFORMAT);
    cr_assert(strstr(osp_last_error(), "c.weight"), "%s", osp_last_error());
    osp_net_free(net);
    unlink(path);
}

/* A file that is something else is named for what it is, with what to do,
 * not for how its first bytes fail as a safetensors header. */
static void expect_named(const void *buf, size_t len, const char *name, const char *words,
                         const char *hint) {
    osp_net *m = NULL;
    cr_assert_eq(osp_checkpoint_parse(buf, len, name, &m, NULL, NULL), OSP_EFORMAT);
    cr_assert_null(m);
    const char *e = osp_last_error();
    cr_assert(strstr(e, name) && strstr(e, words), "'%s' lacks '%s'", e, words);
    cr_assert(strstr(e, hint), "'%s' lacks '%s'", e, hint);
    cr_assert(!strstr(e, "header length"), "%s", e);
}

Test(model, other_files_named) {
    static const unsigned char onnx[] = {0x08, 0x07, 0x12, 0x07, 'p', 'y', 't', 'o', 'r', 'c',
                                         'h', 0x1a, 0x03, '2', '.', '1', 0x3a, 0x00};
    expect_named(onnx, sizeof onnx, "x.onnx", "is an ONNX model", "osprey import");
    expect_named(SPEC, strlen(SPEC), "x.cfg", "is a network spec", "osprey train --net x.cfg");
    static const char npy[] = "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_order': False, "
                              "'shape': (5, 65537), }";
    expect_named(npy, sizeof npy - 1, "x.npy", "is a NumPy array", "not an osprey model");
    expect_named("\xff\xd8\xff\xe0\0\x10JFIF\0", 11, "p.jpg", "is a JPEG image", "not an osprey model");
    /* Noise still says how it fails. */
    osp_net *m = NULL;
    cr_assert_eq(osp_checkpoint_parse("\xee\xee\xee\xee\xee\xee\xee\xee\xee\xee", 10, "noise", &m,
                                      NULL, NULL), OSP_EFORMAT);
    cr_assert(strstr(osp_last_error(), "header length"), "%s", osp_last_error());
}

/* ---- a hash head stored in the model ---------------------------------------- */

#include <math.h>

#include "osprey/hash.h"

/* Layer "c" (the conv) gives 3 channels: a 16-bit head over it. */
static osp_net_hash make_head(float *w, float *b) {
    for (int i = 0; i < 16 * 3; i++) w[i] = (float)((i * 7) % 11) - 5.0f;
    for (int i = 0; i < 16; i++) b[i] = 0.25f * (float)(i % 3) - 0.25f;
    osp_net_hash h = {.bits = 16, .dim = 3, .layer = "c", .normalize = 1, .weight = w, .bias = b};
    strcpy(h.method, "dsh");
    return h;
}

Test(model, hash_head_round_trip) {
    char path[] = "/tmp/osp-hashm-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    osp_net *net = make_net();
    float w[48], b[16];
    osp_net_hash h = make_head(w, b);
    cr_assert_eq(osp_net_set_hash(net, &h), 0, "%s", osp_last_error());
    cr_assert_eq(osp_model_save(net, path), 0, "%s", osp_last_error());
    osp_net *back;
    cr_assert_eq(osp_model_load(path, &back), 0, "%s", osp_last_error());
    same_params(net, back);
    const osp_net_hash *g = osp_net_get_hash(back);
    cr_assert_not_null(g);
    cr_assert_eq(g->bits, 16);
    cr_assert_eq(g->dim, 3);
    cr_assert_str_eq(g->layer, "c");
    cr_assert_eq(g->normalize, 1);
    cr_assert_str_eq(g->method, "dsh");
    cr_assert(!memcmp(g->weight, w, sizeof w) && !memcmp(g->bias, b, sizeof b));
    /* the same codes from the head as from a hash made of it */
    osp_hash *hh;
    cr_assert_eq(osp_hash_from_net(back, path, &hh), 0, "%s", osp_last_error());
    cr_assert_eq(osp_hash_bits(hh), 16);
    cr_assert_eq(osp_hash_normalize(hh), 1);
    cr_assert_str_eq(osp_hash_layer(hh), "c");
    const float x[3] = {0.6f, -0.8f, 0.0f};
    uint8_t code[2], want[2] = {0, 0};
    cr_assert_eq(osp_hash_codes(hh, x, 1, code), 0);
    for (int k = 0; k < 16; k++) {
        float z = b[k];
        for (int j = 0; j < 3; j++) z += w[k * 3 + j] * x[j];
        if (z > 0) want[k / 8] |= (uint8_t)(1u << (k % 8));
    }
    cr_assert(!memcmp(code, want, 2));
    /* and back into another network */
    osp_net *other = make_net();
    cr_assert_eq(osp_hash_to_net(hh, other), 0, "%s", osp_last_error());
    cr_assert_eq(osp_net_get_hash(other)->normalize, 1);
    osp_hash_free(hh);
    osp_net_free(other);
    /* removed, the file is as without one */
    osp_net_set_hash(back, NULL);
    cr_assert_eq(osp_hash_from_net(back, "plain.osp", &hh), OSP_ENOENT);
    cr_assert(strstr(osp_last_error(), "plain.osp has no hash head") && strstr(osp_last_error(), "hash train"),
              "%s", osp_last_error());
    cr_assert_eq(osp_model_save(back, path), 0);
    osp_safetensors *st;
    cr_assert_eq(osp_st_load(path, &st), 0);
    cr_assert_null(osp_st_meta(st, "hash"));
    cr_assert_null(osp_st_find(st, "hash.weight"));
    osp_st_free(st);
    osp_net_free(net);
    osp_net_free(back);
    unlink(path);
}

Test(model, hash_head_checked_when_set) {
    osp_net *net = make_net();
    float w[48], b[16];
    osp_net_hash h = make_head(w, b);
    h.layer = "nope";
    cr_assert_neq(osp_net_set_hash(net, &h), 0);
    cr_assert(strstr(osp_last_error(), "nope"), "%s", osp_last_error());
    h = make_head(w, b);
    h.dim = 4;
    cr_assert_neq(osp_net_set_hash(net, &h), 0);
    cr_assert(strstr(osp_last_error(), "gives 3"), "%s", osp_last_error());
    h = make_head(w, b);
    h.bits = 12;
    cr_assert_neq(osp_net_set_hash(net, &h), 0);
    h = make_head(w, b);
    w[5] = NAN;
    cr_assert_neq(osp_net_set_hash(net, &h), 0);
    cr_assert_null(osp_net_get_hash(net));
    osp_net_free(net);
}

/* A model file with the head's parts as given: meta (NULL: none), the
 * weight's and the bias's shapes (ndim 0: no tensor). */
static int parse_with_head(const char *meta, osp_shape ws, osp_shape bs, int nan) {
    osp_net *net = make_net();
    float w[64 * 4] = {0}, b[64] = {0};
    if (nan) w[2] = NAN;
    osp_st_writer *st;
    cr_assert_eq(osp_st_writer_new(&st), 0);
    char *labels = "[\"cat\",\"dog\",\"bird\",\"fish\"]";
    osp_st_writer_meta(st, "format", "osprey");
    osp_st_writer_meta(st, "version", "1");
    osp_st_writer_meta(st, "kind", "model");
    osp_st_writer_meta(st, "spec", SPEC);
    osp_st_writer_meta(st, "input", "1x6x6");
    osp_st_writer_meta(st, "mean", "[0,0,0,0]");
    osp_st_writer_meta(st, "std", "[1,1,1,1]");
    osp_st_writer_meta(st, "labels", labels);
    if (meta) osp_st_writer_meta(st, "hash", meta);
    if (ws.ndim) osp_st_writer_add(st, "hash.weight", OSP_DTYPE_F32, &ws, w);
    if (bs.ndim) osp_st_writer_add(st, "hash.bias", OSP_DTYPE_F32, &bs, b);
    for (int i = 0; i < osp_graph_param_count(net->graph); i++) {
        const osp_param *p = osp_graph_param(net->graph, i);
        osp_st_writer_add(st, p->name, OSP_DTYPE_F32, &p->shape, osp_graph_param_data(net->graph, i));
    }
    char path[] = "/tmp/osp-hashbad-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    cr_assert_eq(osp_st_writer_save(st, path), 0, "%s", osp_last_error());
    osp_st_writer_free(st);
    osp_net *back = NULL;
    int rc = osp_model_load(path, &back);
    if (!rc) osp_net_free(back);
    else cr_assert_null(back);
    osp_net_free(net);
    unlink(path);
    return rc;
}

#define GOOD "{\"bits\":16,\"dim\":3,\"layer\":\"c\",\"normalize\":0,\"method\":\"dsh\"}"

Test(model, hash_head_refused_when_damaged) {
    const osp_shape w16 = {.ndim = 2, .dim = {16, 3}}, b16 = {.ndim = 1, .dim = {16}}, none = {0};
    cr_assert_eq(parse_with_head(GOOD, w16, b16, 0), 0, "%s", osp_last_error());
    static const struct {
        const char *meta;
        int w, b; /* 1: right shape, 0: absent, 2: wrong shape */
        int nan;
        const char *words;
    } cases[] = {
        {NULL, 1, 1, 0, "without the 'hash' metadata"},
        {GOOD, 0, 1, 0, "without the tensor 'hash.weight'"},
        {GOOD, 1, 0, 0, "without the tensor 'hash.bias'"},
        {GOOD, 2, 1, 0, "hash.weight"},
        {GOOD, 1, 2, 0, "hash.bias"},
        {GOOD, 1, 1, 1, "not finite"},
        {"[16, 3]", 1, 1, 0, "must be a JSON object"},
        {"{\"bits\":12,\"dim\":3,\"layer\":\"c\",\"normalize\":0,\"method\":\"dsh\"}", 1, 1, 0, "multiple of 8"},
        {"{\"bits\":16.5,\"dim\":3,\"layer\":\"c\",\"normalize\":0,\"method\":\"dsh\"}", 1, 1, 0, "multiple of 8"},
        {"{\"bits\":16,\"dim\":0,\"layer\":\"c\",\"normalize\":0,\"method\":\"dsh\"}", 1, 1, 0, "dim"},
        {"{\"bits\":16,\"dim\":3,\"layer\":\"c\",\"normalize\":2,\"method\":\"dsh\"}", 1, 1, 0, "normalize"},
        {"{\"bits\":16,\"dim\":3,\"normalize\":0,\"method\":\"dsh\"}", 1, 1, 0, "no layer"},
        {"{\"bits\":16,\"dim\":3,\"layer\":\"zz\",\"normalize\":0,\"method\":\"dsh\"}", 1, 1, 0, "zz"},
        {"{\"bits\":16,\"dim\":3,\"layer\":\"out\",\"normalize\":0,\"method\":\"dsh\"}", 1, 1, 0, "gives 4"},
        {"{\"bits\":16,\"dim\":3,\"layer\":\"c\",\"normalize\":0,\"method\":\"pca\"}", 1, 1, 0, "pca"},
        {"{\"bits\":16,\"dim\":3,\"layer\":\"c\",\"normalize\":0}", 1, 1, 0, "no method"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        osp_shape ws = cases[i].w == 0 ? none : cases[i].w == 1 ? w16 : (osp_shape){.ndim = 2, .dim = {16, 4}};
        osp_shape bs = cases[i].b == 0 ? none : cases[i].b == 1 ? b16 : (osp_shape){.ndim = 1, .dim = {8}};
        int rc = parse_with_head(cases[i].meta, ws, bs, cases[i].nan);
        cr_assert_eq(rc, OSP_EFORMAT, "case %zu accepted (%d)", i, rc);
        cr_assert(strstr(osp_last_error(), cases[i].words), "case %zu: '%s' lacks '%s'", i, osp_last_error(),
                  cases[i].words);
        cr_assert(strstr(osp_last_error(), "/tmp/osp-hashbad-"), "case %zu: '%s' names no file", i,
                  osp_last_error());
    }
}
