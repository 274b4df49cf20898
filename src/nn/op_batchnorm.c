/* [batchnorm]: batch normalisation per channel, the first per-sample axis.
 * Input C x H x W (BatchNorm2d: statistics over N*H*W), C x L (BatchNorm1d
 * on sequences: over N*L) or C (BatchNorm1d: over N); output the same shape.
 * Parameters weight, bias (C, trained) and running_mean, running_var (C,
 * buffers), named as PyTorch names them. */
#include "attrs.h"
#include "op_fuse.h"
#include "osprey/nn.h"
#include "osprey/onnx.h"

/* PyTorch's defaults, for nodes built without a spec section. */
static const bn_attrs bn_defaults = {1e-5f, 0.1f};

enum { BN_WEIGHT, BN_BIAS, BN_RUNNING_MEAN, BN_RUNNING_VAR };

/* Channels and values per channel per sample (C x S). */
static void bn_dims(const osp_node *n, int *c, int *s) {
    *c = (int)n->shape.dim[0];
    *s = (int)(n->size / n->shape.dim[0]);
}

static int bn_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 1)
        return osp_error(OSP_ESHAPE, "layer '%s': batchnorm takes one input, not %d", n->name,
                         n->n_inputs);
    const osp_shape *in = &osp_node_input(g, n, 0)->shape;
    if (osp_shape_numel(in) > INT32_MAX)
        return osp_error(OSP_ESHAPE, "layer '%s': input is too large", n->name);
    n->shape = *in;
    int64_t c = in->dim[0];
    osp_shape ch = osp_shape_make(1, &c);
    /* Order matters: the BN_* indices above. */
    int rc;
    if ((rc = osp_graph_add_param(g, n, "weight", OSP_PARAM_WEIGHT, &ch, OSP_INIT_ONE, 0)) < 0 ||
        (rc = osp_graph_add_param(g, n, "bias", OSP_PARAM_WEIGHT, &ch, OSP_INIT_ZERO, 0)) < 0 ||
        (rc = osp_graph_add_param(g, n, "running_mean", OSP_PARAM_BUFFER, &ch, OSP_INIT_ZERO, 0)) < 0 ||
        (rc = osp_graph_add_param(g, n, "running_var", OSP_PARAM_BUFFER, &ch, OSP_INIT_ONE, 0)) < 0)
        return rc;
    return OSP_OK;
}

/* Saved for the backward: the batch mean and 1/sqrt(var + eps), C each;
 * then 3C + 1 doubles of scratch for the sums a synchronised batch norm
 * exchanges (8-byte aligned: 2C floats before them). */
static size_t bn_saved_bytes(const osp_graph *g, const osp_node *n, int batch) {
    (void)g;
    (void)batch;
    const size_t c = (size_t)n->shape.dim[0];
    return 2 * c * sizeof(float) + (3 * c + 1) * sizeof(double);
}

/* Training with the statistics of the whole batch, cut over replicas:
 * this replica's sums go through the sum hook (docs/distributed.md). */
static void bn_forward_sync(osp_graph *g, osp_node *n, const osp_exec *ex, const bn_attrs *a) {
    const osp_node *in = osp_node_input(g, n, 0);
    int c, s;
    bn_dims(n, &c, &s);
    float *save_mean = n->saved, *save_invstd = save_mean + c;
    /* t: this replica's sums, then the whole batch's (2C), the count of
     * values per channel (t[2C], for the backward); then the mean (C) */
    double *t = (double *)(save_invstd + c), *mean = t + 2 * c + 1;
    /* mean first, then the variance about it: two small exchanges, no
     * cancellation however far the mean is from zero */
    ex->be->batchnorm_sums(ex->batch, c, s, in->out, NULL, t, t + c + 1);
    t[c] = (double)ex->batch * s;
    ex->hooks->sum(ex->hooks->user, t, c + 1, 0);
    const double count = t[c];
    for (int i = 0; i < c; i++) mean[i] = t[i] / count;
    double *var = t + c;
    ex->be->batchnorm_sums(ex->batch, c, s, in->out, mean, t, var);
    ex->hooks->sum(ex->hooks->user, t, 2 * c, 0);
    for (int i = 0; i < c; i++) { /* the biased variance, corrected for the mean's rounding */
        const double d = t[i] / count;
        var[i] = var[i] / count - d * d;
    }
    ex->be->batchnorm_forward_stats(ex->batch, c, s, in->out, osp_node_weight(g, n, BN_WEIGHT),
                                    osp_node_weight(g, n, BN_BIAS), a->momentum, a->eps, mean, var,
                                    count, osp_node_weight(g, n, BN_RUNNING_MEAN),
                                    osp_node_weight(g, n, BN_RUNNING_VAR), save_mean, save_invstd,
                                    n->out);
    t[2 * c] = count;
}

static void bn_backward_sync(osp_graph *g, osp_node *n, const osp_exec *ex) {
    osp_node *in = osp_node_input(g, n, 0);
    int c, s;
    bn_dims(n, &c, &s);
    const float *save_mean = n->saved, *save_invstd = save_mean + c;
    double *sum = (double *)(save_invstd + c), *sq = sum + c;
    const double count = sum[2 * c];
    /* dgamma and dbeta are this replica's part: the gradient exchange adds them */
    ex->be->batchnorm_backward_sums(ex->batch, c, s, in->out, n->dout, save_mean, save_invstd, sum,
                                    sq, osp_node_grad(g, n, BN_WEIGHT), osp_node_grad(g, n, BN_BIAS));
    ex->hooks->sum(ex->hooks->user, sum, 2 * c, 1);
    if (in->dout)
        ex->be->batchnorm_backward_stats(ex->batch, c, s, in->out, n->dout,
                                         osp_node_weight(g, n, BN_WEIGHT), save_mean, save_invstd,
                                         sum, sq, count, in->dout);
}

static int bn_synced(const osp_exec *ex) {
    return ex->mode == OSP_MODE_TRAIN && ex->hooks && ex->hooks->sum && ex->be->batchnorm_sums;
}

static void bn_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    const bn_attrs *a = n->attrs ? n->attrs : &bn_defaults;
    const osp_node *in = osp_node_input(g, n, 0);
    int c, s;
    bn_dims(n, &c, &s);
    const float *gamma = osp_node_weight(g, n, BN_WEIGHT), *beta = osp_node_weight(g, n, BN_BIAS);
    float *rmean = osp_node_weight(g, n, BN_RUNNING_MEAN), *rvar = osp_node_weight(g, n, BN_RUNNING_VAR);
    if (bn_synced(ex)) {
        bn_forward_sync(g, n, ex, a);
    } else if (ex->mode == OSP_MODE_TRAIN) {
        float *save_mean = n->saved, *save_invstd = save_mean + c;
        ex->be->batchnorm_forward_train(ex->batch, c, s, in->out, gamma, beta, a->momentum, a->eps,
                                        rmean, rvar, save_mean, save_invstd, n->out);
    } else {
        ex->be->batchnorm_forward_infer(ex->batch, c, s, in->out, gamma, beta, rmean, rvar, a->eps,
                                        n->out);
    }
}

static void bn_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    if (bn_synced(ex)) {
        bn_backward_sync(g, n, ex);
        return;
    }
    osp_node *in = osp_node_input(g, n, 0);
    int c, s;
    bn_dims(n, &c, &s);
    const float *save_mean = n->saved, *save_invstd = save_mean + c;
    ex->be->batchnorm_backward(ex->batch, c, s, in->out, n->dout, osp_node_weight(g, n, BN_WEIGHT),
                               save_mean, save_invstd, in->dout, osp_node_grad(g, n, BN_WEIGHT),
                               osp_node_grad(g, n, BN_BIAS));
}

/* ONNX: BatchNormalization (inference: the running statistics). */
static int bn_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n, char *const *in,
                   char *out) {
    char *p[OSP_MAX_NODE_PARAMS] = {0};
    w->params(w, n, p); /* weight, bias, running_mean, running_var (bn_setup) */
    const bn_attrs *a = n->attrs ? n->attrs : &bn_defaults;
    char *args[5] = {in[0], p[0], p[1], p[2], p[3]};
    osp_onnx_node *bn = w->node(w, "BatchNormalization", n->name, 5, args, out);
    w->attr_float(w, bn, "epsilon", a->eps);
    /* ONNX weighs the running value by momentum, osprey (as PyTorch) the batch. */
    w->attr_float(w, bn, "momentum", 1.0f - a->momentum);
    return OSP_OK;
}

static const osp_op bn_op = {
    .name = "batchnorm",
    .setup = bn_setup,
    .saved_bytes = bn_saved_bytes,
    .forward = bn_forward,
    .backward = bn_backward,
    .onnx_export = bn_onnx,
};

static int bn_parse(osp_spec_section *s, void **attrs) {
    float eps, momentum;
    int rc;
    if ((rc = osp_spec_float(s, "eps", bn_defaults.eps, 0.0f, 1.0f, &eps))) return rc;
    if (!(eps > 0.0f)) return osp_spec_error(s, "eps", "'eps' must be positive");
    if ((rc = osp_spec_float(s, "momentum", bn_defaults.momentum, 0.0f, 1.0f, &momentum))) return rc;
    bn_attrs *a = osp_calloc(1, sizeof *a);
    if (!a) return OSP_ENOMEM;
    a->eps = eps;
    a->momentum = momentum;
    *attrs = a;
    return OSP_OK;
}

const osp_layer_type osp__layer_batchnorm = {&bn_op, bn_parse};

int osp__batchnorm_fusable(const osp_node *n, float *eps) {
    if (n->op != &bn_op || n->shape.ndim != 3) return 0;
    *eps = (n->attrs ? (const bn_attrs *)n->attrs : &bn_defaults)->eps;
    return 1;
}
