/* Golden tests: LeNet-5 and ResNet-20 from nets/ with PyTorch's weights and
 * inputs give PyTorch's logits, loss, every parameter's gradient and the
 * updated batch-norm statistics (tests/golden/make_golden.py), each within
 * 1e-4 relative error (norm of the difference over norm of the reference);
 * on the backend this machine picks and on the portable reference. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "osprey/io.h"
#include "osprey/nn.h"

static double rel_err(const float *got, const float *want, int64_t n) {
    double diff = 0, ref = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        diff += d * d;
        ref += (double)want[i] * want[i];
    }
    return sqrt(diff) / fmax(sqrt(ref), 1e-30);
}

static const osp_st_tensor *need(const osp_safetensors *st, const char *fmt, const char *name) {
    char key[256];
    snprintf(key, sizeof key, fmt, name);
    const osp_st_tensor *t = osp_st_find(st, key);
    cr_assert_not_null(t, "golden tensor %s missing", key);
    return t;
}

static void check_net(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/golden/%s.safetensors", OSP_BINARY_DIR, name);
    osp_safetensors *st;
    cr_assert_eq(osp_st_load(path, &st), 0, "%s", osp_last_error());
    snprintf(path, sizeof path, "%s/nets/%s.cfg", OSP_SOURCE_DIR, name);
    osp_net *net;
    cr_assert_eq(osp_net_load_spec(path, 1, &net), 0, "%s", osp_last_error());
    osp_graph *g = net->graph;
    for (int i = 0; i < osp_graph_param_count(g); i++) {
        const osp_param *p = osp_graph_param(g, i);
        const osp_st_tensor *t = need(st, "param/%s", p->name);
        cr_assert_eq(t->nbytes, (size_t)p->numel * sizeof(float), "%s size", p->name);
        memcpy(osp_graph_param_data(g, i), t->data, t->nbytes);
    }
    const osp_st_tensor *x = need(st, "%s", "input");
    const osp_st_tensor *labels = need(st, "%s", "labels");
    int batch = (int)x->shape.dim[0];
    cr_assert_eq(osp_graph_plan(g, batch, OSP_MODE_TRAIN), 0, "%s", osp_last_error());
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = batch, .seed = 1};
    cr_assert_eq(osp_graph_forward(g, x->data, &ex), 0, "%s", osp_last_error());
    osp_node *logits = osp_graph_node(g, net->logits_node);
    const osp_st_tensor *want_logits = need(st, "%s", "logits");
    double e = rel_err(logits->out, want_logits->data, batch * logits->size);
    cr_expect_lt(e, 1e-4, "%s logits: relative error %g", name, e);
    double loss;
    ex.be->softmax_xent(batch, (int)logits->size, logits->out, labels->data, NULL, logits->dout,
                        &loss);
    float want_loss = *(const float *)need(st, "%s", "loss")->data;
    cr_expect_lt(fabs(loss - want_loss) / fabs(want_loss), 1e-4, "%s loss %g vs %g", name, loss, want_loss);
    cr_assert_eq(osp_graph_backward_from(g, logits->id, &ex), 0, "%s", osp_last_error());
    for (int i = 0; i < osp_graph_param_count(g); i++) {
        const osp_param *p = osp_graph_param(g, i);
        if (p->kind == OSP_PARAM_WEIGHT) {
            const osp_st_tensor *want = need(st, "grad/%s", p->name);
            e = rel_err(osp_graph_param_grad(g, i), want->data, p->numel);
            cr_expect_lt(e, 1e-4, "%s grad %s: relative error %g", name, p->name, e);
        } else {
            const osp_st_tensor *want = need(st, "after/%s", p->name);
            e = rel_err(osp_graph_param_data(g, i), want->data, p->numel);
            cr_expect_lt(e, 1e-4, "%s buffer %s after the step: relative error %g", name, p->name, e);
        }
    }
    osp_net_free(net);
    osp_st_free(st);
}

Test(golden, lenet) { check_net("lenet"); }

Test(golden, resnet20) { check_net("resnet20"); }

/* The portable kernels too (osp_backend_default reads OSP_BACKEND at its first
 * call; each test runs in its own process). */
Test(golden, lenet_reference) {
    setenv("OSP_BACKEND", "reference", 1);
    check_net("lenet");
}

Test(golden, resnet20_reference) {
    setenv("OSP_BACKEND", "reference", 1);
    check_net("resnet20");
}

/* Sigmoid + binary cross-entropy against torch.nn.BCEWithLogitsLoss
 * (reduction='mean'), with logits as wide as +-40 and soft targets: the
 * loss and the logits' gradient. */
static void check_bce(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/golden/bce.safetensors", OSP_BINARY_DIR);
    osp_safetensors *st;
    cr_assert_eq(osp_st_load(path, &st), 0, "%s", osp_last_error());
    const osp_st_tensor *x = need(st, "%s", "logits"), *t = need(st, "%s", "targets");
    const osp_st_tensor *want_grad = need(st, "%s", "grad");
    int rows = (int)x->shape.dim[0], cols = (int)x->shape.dim[1];
    float *d = malloc((size_t)rows * cols * sizeof(float));
    cr_assert_not_null(d);
    const osp_backend *be = osp_backend_default();
    double loss;
    be->sigmoid_bce(rows, cols, x->data, t->data, NULL, d, &loss);
    float want_loss = *(const float *)need(st, "%s", "loss")->data;
    cr_expect_lt(fabs(loss - want_loss) / fabs(want_loss), 1e-6, "bce loss %.9g vs %.9g", loss, want_loss);
    double e = rel_err(d, want_grad->data, (int64_t)rows * cols);
    cr_expect_lt(e, 1e-6, "bce gradient: relative error %g", e);
    free(d);
    osp_st_free(st);
}

Test(golden, bce_with_logits) { check_bce(); }

Test(golden, bce_with_logits_reference) {
    setenv("OSP_BACKEND", "reference", 1);
    check_bce();
}
