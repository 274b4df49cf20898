#include "onnx_roundtrip.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/onnx.h"

double onnx_roundtrip_error(const char *spec, unsigned seed, char *layers, int len) {
    osp_net *net = NULL, *back = NULL;
    cr_assert_eq(osp_net_from_spec(spec, strlen(spec), "t.cfg", seed, &net), 0, "%s",
                 osp_last_error());
    /* weights away from their initial values (a norm's 1 and 0) */
    osp_rng r;
    osp_rng_seed(&r, seed + 1);
    for (int k = 0; k < osp_graph_param_count(net->graph); k++) {
        const osp_param *p = osp_graph_param(net->graph, k);
        float *v = osp_graph_param_data(net->graph, k);
        for (int64_t i = 0; p->kind == OSP_PARAM_WEIGHT && i < p->numel; i++)
            v[i] += 0.3f * (2 * osp_rng_uniform(&r) - 1);
    }
    osp_graph_weights_changed(net->graph);
    void *buf = NULL;
    size_t size = 0;
    cr_assert_eq(osp_onnx_export_buffer(net, &buf, &size), 0, "export: %s", osp_last_error());
    cr_assert_eq(osp_onnx_import(buf, size, "t.onnx", NULL, &back), 0, "import: %s",
                 osp_last_error());
    osp_free(buf);
    const int64_t nx = 3 * osp_graph_node(net->graph, 0)->size;
    const int64_t ny = 3 * osp_graph_output(net->graph)->size;
    cr_assert_eq(3 * osp_graph_output(back->graph)->size, ny, "the import's output differs in size");
    float *x = malloc((size_t)nx * sizeof *x), *a = malloc((size_t)ny * sizeof *a),
          *b = malloc((size_t)ny * sizeof *b);
    for (int64_t i = 0; i < nx; i++) x[i] = 2 * osp_rng_uniform(&r) - 1;
    cr_assert_eq(osp_net_run(net, x, 3, 3, NULL, 0, &a), 0, "%s", osp_last_error());
    cr_assert_eq(osp_net_run(back, x, 3, 3, NULL, 0, &b), 0, "%s", osp_last_error());
    double diff = 0, ref = 0;
    for (int64_t i = 0; i < ny; i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        ref = fmax(ref, fabs((double)a[i]));
    }
    if (layers) {
        int used = 0;
        layers[0] = '\0';
        for (int id = 1; id < osp_graph_node_count(back->graph) && used < len; id++)
            used += snprintf(layers + used, (size_t)(len - used), "%s%s", id > 1 ? "," : "",
                             osp_graph_node(back->graph, id)->op->name);
    }
    free(x);
    free(a);
    free(b);
    osp_net_free(net);
    osp_net_free(back);
    return diff / fmax(ref, 1e-30);
}
