/* ONNX import in-process (so that the sanitizer run covers it): the
 * all-operators network from tests/golden/make_onnx_golden.py (the
 * onnx_golden fixture) against PyTorch's output, on the default and the
 * portable backend; the hostile files refused; every truncation of a valid
 * model refused or imported without a crash. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "osprey/osprey.h"

static const char *golden(const char *file) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/onnx_golden/%s", OSP_BINARY_DIR, file);
    return path;
}

static void check_against_torch(const char *model, const osp_backend *be) {
    char file[256];
    snprintf(file, sizeof file, "%s.onnx", model);
    osp_net *net;
    cr_assert_eq(osp_onnx_import_file(golden(file), NULL, &net), OSP_OK, "%s", osp_last_error());
    osp_array x = {0}, want = {0};
    snprintf(file, sizeof file, "%s.input.npy", model);
    cr_assert_eq(osp_npy_read(golden(file), &x), OSP_OK, "%s", osp_last_error());
    snprintf(file, sizeof file, "%s.output.npy", model);
    cr_assert_eq(osp_npy_read(golden(file), &want), OSP_OK, "%s", osp_last_error());
    int batch = (int)x.shape.dim[0];
    osp_graph *g = net->graph;
    cr_assert_eq(osp_graph_plan(g, batch, OSP_MODE_INFER), OSP_OK, "%s", osp_last_error());
    osp_exec ex = {.be = be, .mode = OSP_MODE_INFER, .batch = batch};
    cr_assert_eq(osp_graph_forward(g, x.data, &ex), OSP_OK, "%s", osp_last_error());
    const osp_node *out = osp_graph_output(g);
    cr_assert_eq((int64_t)batch * out->size, osp_array_numel(&want));
    const float *w = want.data;
    double scale = 0, err = 0;
    for (int64_t i = 0; i < osp_array_numel(&want); i++) {
        scale = fmax(scale, fabs(w[i]));
        err = fmax(err, fabs(out->out[i] - w[i]));
    }
    cr_expect_leq(err, 1e-4 * scale, "%s on %s: error %g of %g", model, be->name, err, scale);
    osp_array_free(&x);
    osp_array_free(&want);
    osp_net_free(net);
}

Test(onnx_import, all_operators_match_torch) {
    check_against_torch("opsnet", osp_backend_default());
    check_against_torch("opsnet_opset14", osp_backend_default());
}

Test(onnx_import, portable_backend_matches_torch) {
    const osp_backend *ref = osp_backend_find("reference");
    cr_assert(ref, "no reference backend");
    check_against_torch("opsnet", ref);
}

Test(onnx_import, hostile_files_refused_with_reason) {
    FILE *f = fopen(golden("bad_models.txt"), "r");
    cr_assert(f, "no bad_models.txt in the golden data");
    char file[256], want[256];
    int count = 0;
    while (fscanf(f, "%255s %255[^\n]", file, want) == 2) {
        osp_net *net = NULL;
        int rc = osp_onnx_import_file(golden(file), NULL, &net);
        cr_expect_neq(rc, OSP_OK, "%s was imported", file);
        cr_expect(net == NULL);
        cr_expect(strstr(osp_last_error(), want), "%s: '%s' does not say '%s'", file,
                  osp_last_error(), want);
        count++;
    }
    fclose(f);
    cr_expect_geq(count, 5);
}

Test(onnx_import, truncations_never_crash) {
    void *buf;
    size_t len;
    cr_assert_eq(osp_file_read_all(golden("opsnet.onnx"), 1 << 24, &buf, &len), OSP_OK);
    int imported = 0;
    for (size_t cut = 0; cut < len; cut += 1 + cut / 16) {
        osp_net *net = NULL;
        if (osp_onnx_import(buf, cut, "cut.onnx", NULL, &net) == OSP_OK) {
            imported++;
            osp_net_free(net);
        } else {
            cr_expect(net == NULL);
            cr_expect(strlen(osp_last_error()) > 0);
        }
    }
    cr_expect_eq(imported, 0, "a truncated model was imported");
    osp_net *net = NULL;
    osp_onnx_import_options opt = {.max_bytes = len - 1};
    cr_expect_eq(osp_onnx_import(buf, len, "big.onnx", &opt, &net), OSP_ERANGE);
    osp_free(buf);
}
