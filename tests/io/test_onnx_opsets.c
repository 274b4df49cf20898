/* ONNX opsets 7 to 18: PyTorch's models exported at 7-13, converted down
 * by onnx.version_converter, and rewritten in opset 18's forms
 * (tests/onnx/old_opsets.py, the onnx_opsets fixture) imported and run
 * against PyTorch's outputs; those with [resize] layers exported again and
 * re-imported. Tiny models built here hold the old attribute forms
 * (Clip's min/max, Pad's pads, Slice's starts/ends, Squeeze's axes,
 * Upsample's scales, BatchNormalization's spatial, Dropout's is_test) and
 * the forms a version does not have, which must be refused. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.pb-c.h"
#include "osprey/osprey.h"

static const char *golden(const char *file) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/onnx_opsets/%s", OSP_BINARY_DIR, file);
    return path;
}

/* max |osprey - torch| / max |torch| of the net on x. */
static double run_error(osp_net *net, const osp_array *x, const osp_array *want) {
    int batch = (int)x->shape.dim[0];
    osp_graph *g = net->graph;
    cr_assert_eq(osp_graph_plan(g, batch, OSP_MODE_INFER), OSP_OK, "%s", osp_last_error());
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_INFER, .batch = batch};
    cr_assert_eq(osp_graph_forward(g, x->data, &ex), OSP_OK, "%s", osp_last_error());
    const osp_node *out = osp_graph_output(g);
    cr_assert_eq((int64_t)batch * out->size, osp_array_numel(want));
    const float *w = want->data;
    double scale = 0, err = 0;
    for (int64_t i = 0; i < osp_array_numel(want); i++) {
        scale = fmax(scale, fabs(w[i]));
        err = fmax(err, fabs(out->out[i] - w[i]));
    }
    return err / scale;
}

static int has_resize(const osp_net *net) {
    for (int i = 1; i < osp_graph_node_count(net->graph); i++) {
        const osp_node *n = osp_graph_node(net->graph, i);
        if (!strcmp(n->op->name, "resize")) return 1;
    }
    return 0;
}

Test(onnx_opsets, every_model_matches_torch) {
    FILE *f = fopen(golden("manifest.txt"), "r");
    cr_assert(f, "no manifest.txt in the opsets golden data");
    char model[256], input[256], output[256];
    int count = 0, resized = 0;
    double worst = 0;
    while (fscanf(f, "%255s %255s %255s", model, input, output) == 3) {
        osp_net *net;
        cr_assert_eq(osp_onnx_import_file(golden(model), NULL, &net), OSP_OK, "%s: %s", model,
                     osp_last_error());
        osp_array x = {0}, want = {0};
        cr_assert_eq(osp_npy_read(golden(input), &x), OSP_OK, "%s", osp_last_error());
        cr_assert_eq(osp_npy_read(golden(output), &want), OSP_OK, "%s", osp_last_error());
        double err = run_error(net, &x, &want);
        cr_expect_leq(err, 1e-4, "%s: error %g of the largest output", model, err);
        worst = fmax(worst, err);
        if (has_resize(net)) {
            /* Exported (Resize at opset 13) and imported again. */
            void *buf;
            size_t len;
            cr_assert_eq(osp_onnx_export_buffer(net, &buf, &len), OSP_OK, "%s: %s", model,
                         osp_last_error());
            osp_net *again;
            cr_assert_eq(osp_onnx_import(buf, len, "again.onnx", NULL, &again), OSP_OK, "%s: %s",
                         model, osp_last_error());
            double err2 = run_error(again, &x, &want);
            cr_expect_leq(err2, 1e-4, "%s exported and imported: error %g", model, err2);
            worst = fmax(worst, err2);
            osp_net_free(again);
            osp_free(buf);
            resized++;
        }
        osp_array_free(&x);
        osp_array_free(&want);
        osp_net_free(net);
        count++;
    }
    fclose(f);
    cr_expect_geq(count, 20);
    cr_expect_geq(resized, 8);
    cr_log_info("%d models (%d with [resize]), worst error %g of the largest output", count,
                resized, worst);
}
