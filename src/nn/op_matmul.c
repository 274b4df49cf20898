/* [matmul]: the product of two computed inputs, as torch.matmul and ONNX's
 * MatMul within a sample: inputs of per-sample shapes [..., m, k] and
 * [..., k, n] give [..., m, n], the leading axes broadcast as numpy does
 * (Q x K^T per head, scores x V). Both inputs have at least two axes.
 *
 * Every product goes through the backend's sgemm_batched: one call per
 * sample when each input's leading axes are either all of the output's or
 * all of size 1 (a stride of one matrix, or 0); one per matrix otherwise.
 * The gradient of an input broadcast over others sums their products in
 * order, so the result does not depend on the thread count. */
#include <stdint.h>
#include <string.h>

#include "osprey/nn.h"
#include "osprey/onnx.h"

/* The leading axes of a per-sample shape that are a batch of matrices. */
#define LEAD_MAX (OSP_MAX_DIMS - 2)

typedef struct mm_dims {
    int m, k, n;
    int lead;                  /* leading axes of the output */
    int64_t out_lead[LEAD_MAX];
    int64_t stride_a[LEAD_MAX]; /* per output leading axis, in matrices; 0 where broadcast */
    int64_t stride_b[LEAD_MAX];
    int64_t count;             /* output matrices per sample */
    int64_t count_a, count_b;  /* the inputs' matrices per sample */
} mm_dims;

/* Aligns the leading axes on the right; OSP_ESHAPE (message set) when they
 * do not broadcast. */
static int mm_dims_of(const osp_node *n, const osp_shape *a, const osp_shape *b, mm_dims *d) {
    char sa[64], sb[64];
    osp_shape_format(a, sa, sizeof sa);
    osp_shape_format(b, sb, sizeof sb);
    if (a->ndim < 2 || b->ndim < 2)
        return osp_error(OSP_ESHAPE, "layer '%s': matmul needs two axes or more in each input "
                         "(%s, %s)", n->name, sa, sb);
    d->m = (int)a->dim[a->ndim - 2];
    d->k = (int)a->dim[a->ndim - 1];
    d->n = (int)b->dim[b->ndim - 1];
    if (b->dim[b->ndim - 2] != d->k)
        return osp_error(OSP_ESHAPE, "layer '%s': %s times %s: %lld columns against %lld rows",
                         n->name, sa, sb, (long long)d->k, (long long)b->dim[b->ndim - 2]);
    int la = a->ndim - 2, lb = b->ndim - 2;
    d->lead = la > lb ? la : lb;
    int64_t ma = 1, mb = 1;
    d->count = d->count_a = d->count_b = 1;
    for (int i = d->lead - 1; i >= 0; i--) {
        int ia = i - (d->lead - la), ib = i - (d->lead - lb);
        int64_t da = ia >= 0 ? a->dim[ia] : 1, db = ib >= 0 ? b->dim[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return osp_error(OSP_ESHAPE, "layer '%s': the leading axes of %s and %s do not "
                             "broadcast", n->name, sa, sb);
        d->out_lead[i] = da > db ? da : db;
        d->stride_a[i] = da == 1 ? 0 : ma;
        d->stride_b[i] = db == 1 ? 0 : mb;
        ma *= da;
        mb *= db;
        d->count *= d->out_lead[i];
    }
    d->count_a = ma;
    d->count_b = mb;
    return OSP_OK;
}

static int matmul_setup(osp_graph *g, osp_node *n) {
    if (n->n_inputs != 2)
        return osp_error(OSP_ESHAPE, "layer '%s': matmul takes two inputs, not %d", n->name,
                         n->n_inputs);
    const osp_shape *a = &osp_node_input(g, n, 0)->shape, *b = &osp_node_input(g, n, 1)->shape;
    mm_dims d;
    int rc = mm_dims_of(n, a, b, &d);
    if (rc) return rc;
    int64_t dims[OSP_MAX_DIMS];
    memcpy(dims, d.out_lead, sizeof(int64_t) * (size_t)d.lead);
    dims[d.lead] = d.m;
    dims[d.lead + 1] = d.n;
    n->shape = osp_shape_make(d.lead + 2, dims);
    if (osp_shape_numel(&n->shape) > INT32_MAX)
        return osp_error(OSP_ESHAPE, "layer '%s': the product is too large", n->name);
    return OSP_OK;
}

/* Matrix offsets (in matrices) of output matrix i in A and B. */
static void offsets(const mm_dims *d, int64_t i, int64_t *oa, int64_t *ob) {
    *oa = *ob = 0;
    for (int ax = d->lead - 1; ax >= 0; ax--) {
        int64_t idx = i % d->out_lead[ax];
        i /= d->out_lead[ax];
        *oa += idx * d->stride_a[ax];
        *ob += idx * d->stride_b[ax];
    }
}

/* The stride between consecutive matrices of an input in one batched call:
 * one matrix when it has all of the output's, 0 when it has one; -1 when
 * neither (then products go one by one). */
static int64_t uniform(int64_t count_in, const mm_dims *d, int64_t size) {
    return count_in == d->count ? size : count_in == 1 ? 0 : -1;
}

static void mm_dims_node(osp_graph *g, const osp_node *n, mm_dims *d) {
    mm_dims_of(n, &osp_node_input(g, n, 0)->shape, &osp_node_input(g, n, 1)->shape, d);
}

static void matmul_forward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    mm_dims d;
    mm_dims_node(g, n, &d);
    const osp_node *A = osp_node_input(g, n, 0), *B = osp_node_input(g, n, 1);
    const int64_t ka = (int64_t)d.m * d.k, kb = (int64_t)d.k * d.n, kc = (int64_t)d.m * d.n;
    const int64_t sa = uniform(d.count_a, &d, ka), sb = uniform(d.count_b, &d, kb);
    for (int s = 0; s < ex->batch; s++) {
        const float *a = A->out + s * A->size, *b = B->out + s * B->size;
        float *c = n->out + s * n->size;
        if (sa >= 0 && sb >= 0) {
            ex->be->sgemm_batched(OSP_NO_TRANS, OSP_NO_TRANS, d.m, d.n, d.k, 1.0f, a, d.k, sa, b,
                                  d.n, sb, 0.0f, c, d.n, kc, (int)d.count);
            continue;
        }
        for (int64_t i = 0; i < d.count; i++) {
            int64_t oa, ob;
            offsets(&d, i, &oa, &ob);
            ex->be->sgemm_batched(OSP_NO_TRANS, OSP_NO_TRANS, d.m, d.n, d.k, 1.0f, a + oa * ka,
                                  d.k, 0, b + ob * kb, d.n, 0, 0.0f, c + i * kc, d.n, 0, 1);
        }
    }
}

/* dA_i += dC_i B_i^T and dB_i += A_i^T dC_i. */
static void matmul_backward(osp_graph *g, osp_node *n, const osp_exec *ex) {
    mm_dims d;
    mm_dims_node(g, n, &d);
    osp_node *A = osp_node_input(g, n, 0), *B = osp_node_input(g, n, 1);
    const int64_t ka = (int64_t)d.m * d.k, kb = (int64_t)d.k * d.n, kc = (int64_t)d.m * d.n;
    const int64_t sa = uniform(d.count_a, &d, ka), sb = uniform(d.count_b, &d, kb);
    const osp_backend *be = ex->be;
    for (int s = 0; s < ex->batch; s++) {
        const float *a = A->out + s * A->size, *b = B->out + s * B->size;
        const float *dc = n->dout + s * n->size;
        float *da = A->dout ? A->dout + s * A->size : NULL;
        float *db = B->dout ? B->dout + s * B->size : NULL;
        if (sa >= 0 && sb >= 0) {
            if (da)
                be->sgemm_batched(OSP_NO_TRANS, OSP_TRANS, d.m, d.k, d.n, 1.0f, dc, d.n, kc, b,
                                  d.n, sb, 1.0f, da, d.k, sa, (int)d.count);
            if (db)
                be->sgemm_batched(OSP_TRANS, OSP_NO_TRANS, d.k, d.n, d.m, 1.0f, a, d.k, sa, dc,
                                  d.n, kc, 1.0f, db, d.n, sb, (int)d.count);
            continue;
        }
        for (int64_t i = 0; i < d.count; i++) {
            int64_t oa, ob;
            offsets(&d, i, &oa, &ob);
            if (da)
                be->sgemm_batched(OSP_NO_TRANS, OSP_TRANS, d.m, d.k, d.n, 1.0f, dc + i * kc, d.n,
                                  0, b + ob * kb, d.n, 0, 1.0f, da + oa * ka, d.k, 0, 1);
            if (db)
                be->sgemm_batched(OSP_TRANS, OSP_NO_TRANS, d.k, d.n, d.m, 1.0f, a + oa * ka, d.k,
                                  0, dc + i * kc, d.n, 0, 1.0f, db + ob * kb, d.n, 0, 1);
        }
    }
}

/* ONNX: MatMul. ONNX aligns whole shapes on the right, batch included, so
 * the input with fewer axes gets axes of 1 after the batch first. */
static int matmul_onnx(osp_onnx_writer *w, const osp_graph *g, const osp_node *n,
                       char *const *in, char *out) {
    char *args[2] = {in[0], in[1]};
    int ra = osp_graph_node_const(g, n->inputs[0])->shape.ndim;
    int rb = osp_graph_node_const(g, n->inputs[1])->shape.ndim;
    if (ra != rb) {
        int lo = ra < rb ? 0 : 1, extra = ra < rb ? rb - ra : ra - rb;
        int64_t axes[OSP_MAX_DIMS];
        for (int i = 0; i < extra; i++) axes[i] = i + 1;
        char *u[2] = {in[lo], w->init_ints(w, w->name(w, "%s/axes", n->name), axes, extra)};
        char *name = w->name(w, "%s/unsqueeze", n->name);
        w->node(w, "Unsqueeze", name, 2, u, name);
        args[lo] = name;
    }
    w->node(w, "MatMul", n->name, 2, args, out);
    return OSP_OK;
}

static const osp_op matmul_op = {
    .name = "matmul",
    .setup = matmul_setup,
    .forward = matmul_forward,
    .backward = matmul_backward,
    .onnx_export = matmul_onnx,
};

static int matmul_parse(osp_spec_section *s, void **attrs) {
    (void)s;
    *attrs = NULL;
    return OSP_OK;
}

const osp_layer_type osp__layer_matmul = {&matmul_op, matmul_parse};
