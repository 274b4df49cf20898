/* ONNX external data (how models over protobuf's 2 GB keep their
 * weights): a small network exported by osprey is rewritten with its
 * float initializers moved out to a file beside the model, as ONNX's own
 * save_model(..., save_as_external_data=True) does; imported from its
 * file it holds the same weights. Hostile locations, offsets and lengths
 * are refused in one line, and a model read from memory cannot reach
 * any file. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "onnx.pb-c.h"
#include "osprey/onnx.h"
#include "osprey/osprey.h"
#include "tmpdir.h"

#define SPEC                                                                          \
    "[net]\ninput = 1x8x8\n[conv]\nfilters = 4\nsize = 3\npad = 1\n[batchnorm]\n[relu]\n" \
    "[maxpool]\nsize = 2\nstride = 2\n[fc]\noutputs = 64\n"

/* How the rewritten model names and places each tensor's data. */
typedef enum { GOOD, PARENT, ABSOLUTE, LONG_LENGTH, PAST_END, NO_FILE, BAD_NUMBER } variant;

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot write %s", path);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static Osp__Onnx__StringStringEntryProto *entry(const char *key, const char *value) {
    Osp__Onnx__StringStringEntryProto *e = calloc(1, sizeof *e);
    osp__onnx__string_string_entry_proto__init(e);
    e->key = strdup(key);
    e->value = strdup(value);
    return e;
}

/* Exports net, moves every float initializer's raw data into
 * data/weights.bin (one after another, 16-byte aligned as ONNX aligns
 * them), and writes the model as model.onnx; returns the tensors moved. */
static int write_external(const osp_net *net, variant v, void **model_buf, size_t *model_len) {
    void *buf;
    size_t len;
    cr_assert_eq(osp_onnx_export_buffer(net, &buf, &len), 0, "%s", osp_last_error());
    Osp__Onnx__ModelProto *m = osp__onnx__model_proto__unpack(NULL, len, buf);
    cr_assert(m);
    osp_free(buf);
    mkdir(tmpdir_path("data"), 0700);
    FILE *bin = fopen(tmpdir_path("data/weights.bin"), "wb");
    cr_assert(bin);
    long at = 0;
    int moved = 0;
    for (size_t i = 0; i < m->graph->n_initializer; i++) {
        Osp__Onnx__TensorProto *t = m->graph->initializer[i];
        if (t->data_type != OSP__ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || !t->has_raw_data) continue;
        while (at % 16) fputc(0, bin), at++;
        cr_assert_eq(fwrite(t->raw_data.data, 1, t->raw_data.len, bin), t->raw_data.len);
        char off[32], n[32];
        snprintf(off, sizeof off, "%ld", at);
        snprintf(n, sizeof n, "%zu", t->raw_data.len + (v == LONG_LENGTH ? 4 : 0));
        if (v == PAST_END) snprintf(off, sizeof off, "%ld", at + 4096);
        if (v == BAD_NUMBER) snprintf(off, sizeof off, "-4");
        const char *loc = v == PARENT     ? "data/../../weights.bin"
                          : v == ABSOLUTE ? "/etc/passwd"
                          : v == NO_FILE  ? "data/missing.bin"
                                          : "data/weights.bin";
        at += (long)t->raw_data.len;
        t->has_raw_data = 0; /* the unpacked buffer still owns the bytes */
        t->has_data_location = 1;
        t->data_location = OSP__ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
        t->n_external_data = 3;
        t->external_data = calloc(3, sizeof *t->external_data);
        t->external_data[0] = entry("location", loc);
        t->external_data[1] = entry("offset", off);
        t->external_data[2] = entry("length", n);
        moved++;
    }
    cr_assert_eq(fclose(bin), 0);
    *model_len = osp__onnx__model_proto__get_packed_size(m);
    *model_buf = malloc(*model_len);
    osp__onnx__model_proto__pack(m, *model_buf);
    write_file(tmpdir_path("model.onnx"), *model_buf, *model_len);
    /* what was added by hand is freed by hand; the rest by protobuf-c */
    for (size_t i = 0; i < m->graph->n_initializer; i++) {
        Osp__Onnx__TensorProto *t = m->graph->initializer[i];
        for (size_t k = 0; k < t->n_external_data; k++) {
            free(t->external_data[k]->key);
            free(t->external_data[k]->value);
            free(t->external_data[k]);
        }
        free(t->external_data);
        t->external_data = NULL;
        t->n_external_data = 0;
    }
    osp__onnx__model_proto__free_unpacked(m, NULL);
    return moved;
}

static osp_net *trained_like(void) {
    osp_net *net;
    cr_assert_eq(osp_net_from_spec(SPEC, strlen(SPEC), "spec", 11, &net), 0, "%s",
                 osp_last_error());
    /* batch-norm statistics away from their defaults, so they are checked too */
    int64_t nb;
    float *b = osp_graph_buffers(net->graph, &nb);
    for (int64_t i = 0; i < nb; i++) b[i] = 0.5f + 0.01f * (float)i;
    return net;
}

Test(onnx_external, weights_from_a_file_beside_the_model) {
    tmpdir_make();
    osp_net *net = trained_like();
    void *model;
    size_t len;
    cr_assert_geq(write_external(net, GOOD, &model, &len), 4);
    osp_net *back, *inline_net;
    cr_assert_eq(osp_onnx_import_file(tmpdir_path("model.onnx"), NULL, &back), 0, "%s",
                 osp_last_error());
    /* the same model with its data inside, imported as usual */
    void *inside;
    size_t inside_len;
    cr_assert_eq(osp_onnx_export_buffer(net, &inside, &inside_len), 0, "%s", osp_last_error());
    cr_assert_eq(osp_onnx_import(inside, inside_len, "inside.onnx", NULL, &inline_net), 0, "%s",
                 osp_last_error());
    osp_free(inside);
    int64_t n1, n2, b1, b2;
    const float *w1 = osp_graph_weights(inline_net->graph, &n1);
    const float *w2 = osp_graph_weights(back->graph, &n2);
    const float *s1 = osp_graph_buffers(inline_net->graph, &b1);
    const float *s2 = osp_graph_buffers(back->graph, &b2);
    cr_assert_eq(n1, n2);
    cr_assert_eq(b1, b2);
    cr_assert(!memcmp(w1, w2, sizeof(float) * (size_t)n1), "the weights differ");
    cr_assert(!memcmp(s1, s2, sizeof(float) * (size_t)b1), "the batch-norm statistics differ");
    osp_net_free(back);
    osp_net_free(inline_net);
    /* from memory there is no folder to look in: refused, naming the way */
    cr_assert_eq(osp_onnx_import(model, len, "mem.onnx", NULL, &back), OSP_ENOTSUP);
    cr_assert_null(back);
    cr_assert(strstr(osp_last_error(), "external file"), "%s", osp_last_error());
    /* a limit below the data is kept (the model is small, its data 13 kB) */
    osp_onnx_import_options small = {.max_bytes = len + 64};
    const int rc = osp_onnx_import_file(tmpdir_path("model.onnx"), &small, &back);
    cr_assert_eq(rc, OSP_ERANGE, "%d (%zu bytes): %s", rc, small.max_bytes, osp_last_error());
    cr_assert(strstr(osp_last_error(), "external data"), "%s", osp_last_error());
    free(model);
    osp_net_free(net);
    tmpdir_remove();
}

static void expect_refused(variant v, const char *words) {
    tmpdir_make();
    osp_net *net = trained_like(), *back = (osp_net *)1;
    void *model;
    size_t len;
    write_external(net, v, &model, &len);
    const int rc = osp_onnx_import_file(tmpdir_path("model.onnx"), NULL, &back);
    cr_assert_neq(rc, 0, "variant %d was imported", (int)v);
    cr_assert_null(back);
    const char *e = osp_last_error();
    cr_assert(strstr(e, words) && !strchr(e, '\n'), "variant %d: %s", (int)v, e);
    free(model);
    osp_net_free(net);
    tmpdir_remove();
}

Test(onnx_external, a_path_out_of_the_folder_is_refused) {
    expect_refused(PARENT, "relative path below the model's folder");
    expect_refused(ABSOLUTE, "relative path below the model's folder");
}

Test(onnx_external, lengths_and_offsets_are_checked) {
    expect_refused(LONG_LENGTH, "offset or length");
    expect_refused(BAD_NUMBER, "offset or length");
    expect_refused(PAST_END, "holds");
    expect_refused(NO_FILE, "cannot open");
}
