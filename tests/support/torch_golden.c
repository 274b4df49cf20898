#include "torch_golden.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/io.h"
#include "osprey/nn.h"
#include "spec_expect.h"
#include "tmpdir.h"

int torch_golden_make(const char *const *specs, int n, int batch) {
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "net%d.cfg", i);
        tmpdir_write(tmpdir_path(name), specs[i], strlen(specs[i]));
    }
    /* one interpreter for every spec: importing torch takes a second */
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import sys; sys.path.insert(0, \"%s/scripts\"); import torch, "
             "torchspec; torch.set_num_threads(1)\n"
             "for i in range(%d):\n"
             "    d = \"%s/\"\n"
             "    torchspec.save_safetensors(d + f\"golden{i}.safetensors\", "
             "torchspec.golden(open(d + f\"net{i}.cfg\").read(), %d))'",
             OSP_SOURCE_DIR, n, tmpdir_name, batch);
    if (system(cmd) == 0) return 0;
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) return -1;
    cr_assert_fail("failed: %s", cmd);
    return -1;
}

static const osp_st_tensor *need(const osp_safetensors *st, const char *prefix, const char *name,
                                 int64_t count) {
    char key[256];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    const osp_st_tensor *t = osp_st_find(st, key);
    cr_assert_not_null(t, "golden tensor %s missing", key);
    cr_assert_eq(t->nbytes, (size_t)count * sizeof(float), "golden tensor %s has %zu bytes", key,
                 t->nbytes);
    return t;
}

/* max |got - want| / max |want| */
static double err_of(const float *got, const float *want, int64_t n) {
    double diff = 0, ref = 0;
    for (int64_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)got[i] - want[i]));
        ref = fmax(ref, fabs((double)want[i]));
    }
    return diff / fmax(ref, 1e-30);
}

double torch_golden_error(const char *spec, int i) {
    char name[32];
    snprintf(name, sizeof name, "golden%d.safetensors", i);
    osp_safetensors *st;
    cr_assert_eq(osp_st_load(tmpdir_path(name), &st), 0, "%s", osp_last_error());
    osp_net *net = spec_build(spec);
    osp_graph *g = net->graph;
    for (int k = 0; k < osp_graph_param_count(g); k++) {
        const osp_param *p = osp_graph_param(g, k);
        memcpy(osp_graph_param_data(g, k), need(st, "param/", p->name, p->numel)->data,
               (size_t)p->numel * sizeof(float));
    }
    const osp_st_tensor *x = osp_st_find(st, "input");
    cr_assert_not_null(x);
    const int batch = (int)x->shape.dim[0];
    osp_node *in = osp_graph_node(g, 0), *out = osp_graph_output(g);
    const int64_t nx = batch * in->size, ny = batch * out->size;
    need(st, "", "input", nx);
    osp_graph_require_input_grad(g);
    cr_assert_eq(osp_graph_plan(g, batch, OSP_MODE_TRAIN), 0, "%s", osp_last_error());
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = batch, .seed = 1};
    cr_assert_eq(osp_graph_forward(g, x->data, &ex), 0, "%s", osp_last_error());
    double worst = err_of(out->out, need(st, "", "output", ny)->data, ny);
    memcpy(out->dout, need(st, "", "r", ny)->data, (size_t)ny * sizeof(float));
    cr_assert_eq(osp_graph_backward(g, &ex), 0, "%s", osp_last_error());
    worst = fmax(worst, err_of(in->dout, need(st, "grad/", "input", nx)->data, nx));
    for (int k = 0; k < osp_graph_param_count(g); k++) {
        const osp_param *p = osp_graph_param(g, k);
        if (p->kind != OSP_PARAM_WEIGHT) continue;
        worst = fmax(worst, err_of(osp_graph_param_grad(g, k),
                                   need(st, "grad/", p->name, p->numel)->data, p->numel));
    }
    /* inference computes the same output (no fusion or statistics differ) */
    cr_assert_eq(osp_graph_plan(g, batch, OSP_MODE_INFER), 0, "%s", osp_last_error());
    ex.mode = OSP_MODE_INFER;
    cr_assert_eq(osp_graph_forward(g, x->data, &ex), 0, "%s", osp_last_error());
    worst = fmax(worst, err_of(osp_graph_output(g)->out, need(st, "", "output", ny)->data, ny));
    osp_net_free(net);
    osp_st_free(st);
    return worst;
}
