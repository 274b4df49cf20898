/* Broadcasting element-wise binary ops (see broadcast.h).
 *
 * The two shapes are first reduced to a few axes: axes of size 1 in the
 * output are dropped, and neighbouring axes are merged where both operands
 * step through them as one (a [C,H,W] * [C,1,1] becomes [C, H*W] with the
 * second operand's inner stride 0). The innermost merged axis is then a run
 * along which each operand is either contiguous (stride 1) or one value
 * (stride 0), and the loops are written for those cases. Each sample is
 * independent, so threads own whole samples and the result does not depend
 * on the thread count. */
#include "broadcast.h"

#include <assert.h>
#include <stdio.h>

/* Below this many output values a parallel region costs more than it saves. */
#define PARALLEL_MIN (1 << 15)

typedef struct plan {
    int ndim;                 /* merged axes, >= 1 */
    int64_t dim[OSP_MAX_DIMS]; /* output sizes */
    int64_t sa[OSP_MAX_DIMS];  /* element strides in a (0 = broadcast) */
    int64_t sb[OSP_MAX_DIMS];
    int64_t size, size_a, size_b; /* values per sample */
} plan;

/* Pads s on the left with 1s to nd axes. */
static void padded(const osp_shape *s, int nd, int64_t *dim) {
    for (int i = 0; i < nd; i++) dim[i] = i < nd - s->ndim ? 1 : s->dim[i - (nd - s->ndim)];
}

int osp__broadcast_shape(osp_binop op, const osp_node *n, const osp_node *a, const osp_node *b,
                         osp_shape *out) {
    static const char *const verb[] = {"add", "subtract", "multiply", "divide"};
    int nd = a->shape.ndim > b->shape.ndim ? a->shape.ndim : b->shape.ndim;
    int64_t da[OSP_MAX_DIMS], db[OSP_MAX_DIMS], dim[OSP_MAX_DIMS];
    padded(&a->shape, nd, da);
    padded(&b->shape, nd, db);
    for (int i = 0; i < nd; i++) {
        if (da[i] != db[i] && da[i] != 1 && db[i] != 1) {
            char sa[64], sb[64];
            osp_shape_format(&a->shape, sa, sizeof sa);
            osp_shape_format(&b->shape, sb, sizeof sb);
            return osp_error(OSP_ESHAPE,
                             "layer '%s': cannot %s '%s' (%s) and '%s' (%s): the shapes do not "
                             "broadcast (axis %d from the right has sizes %lld and %lld, neither 1)",
                             n->name, verb[op], a->name, sa, b->name, sb, nd - i, (long long)da[i],
                             (long long)db[i]);
        }
        dim[i] = da[i] > db[i] ? da[i] : db[i];
    }
    *out = osp_shape_make(nd, dim);
    return OSP_OK;
}

static void make_plan(const osp_shape *as, const osp_shape *bs, plan *p) {
    int nd = as->ndim > bs->ndim ? as->ndim : bs->ndim;
    int64_t da[OSP_MAX_DIMS], db[OSP_MAX_DIMS], sa[OSP_MAX_DIMS], sb[OSP_MAX_DIMS];
    padded(as, nd, da);
    padded(bs, nd, db);
    int64_t ta = 1, tb = 1;
    for (int i = nd - 1; i >= 0; i--) {
        sa[i] = da[i] == 1 ? 0 : ta;
        sb[i] = db[i] == 1 ? 0 : tb;
        ta *= da[i];
        tb *= db[i];
    }
    p->size_a = ta;
    p->size_b = tb;
    p->size = 1;
    p->ndim = 0;
    for (int i = 0; i < nd; i++) {
        int64_t d = da[i] > db[i] ? da[i] : db[i];
        p->size *= d;
        if (d == 1) continue;
        int k = p->ndim - 1;
        if (k >= 0 && p->sa[k] == sa[i] * d && p->sb[k] == sb[i] * d) {
            p->dim[k] *= d; /* the outer axis steps as d inner steps do */
            p->sa[k] = sa[i];
            p->sb[k] = sb[i];
        } else {
            p->dim[++k] = d;
            p->sa[k] = sa[i];
            p->sb[k] = sb[i];
            p->ndim++;
        }
    }
    if (p->ndim == 0) { /* one value per sample */
        p->ndim = 1;
        p->dim[0] = 1;
        p->sa[0] = p->sb[0] = 0;
    }
    assert(p->sa[p->ndim - 1] <= 1 && p->sb[p->ndim - 1] <= 1);
}

/* Walks the runs (innermost axis) of one sample: the offsets of the current
 * run in the output, a and b. */
typedef struct cursor {
    int64_t idx[OSP_MAX_DIMS];
    int64_t o, a, b;
} cursor;

static void cursor_start(cursor *c) {
    for (int i = 0; i < OSP_MAX_DIMS; i++) c->idx[i] = 0;
    c->o = c->a = c->b = 0;
}

/* Moves to the next run; 0 when the sample is done. */
static int cursor_next(const plan *p, cursor *c) {
    int64_t len = p->dim[p->ndim - 1];
    c->o += len;
    for (int k = p->ndim - 2; k >= 0; k--) {
        c->a += p->sa[k];
        c->b += p->sb[k];
        if (++c->idx[k] < p->dim[k]) return 1;
        c->a -= p->sa[k] * p->dim[k];
        c->b -= p->sb[k] * p->dim[k];
        c->idx[k] = 0;
    }
    return 0;
}

/* y[i] = EXPR of A = a[i * sa] and B = b[i * sb] along one run. */
#define RUN_FORWARD(EXPR)                                                                   \
    do {                                                                                    \
        if (sa && sb) {                                                                     \
            for (int64_t i = 0; i < len; i++) {                                             \
                const float A = a[i], B = b[i];                                             \
                y[i] = (EXPR);                                                              \
            }                                                                               \
        } else if (sa) {                                                                    \
            const float B = b[0];                                                           \
            for (int64_t i = 0; i < len; i++) {                                             \
                const float A = a[i];                                                       \
                y[i] = (EXPR);                                                              \
            }                                                                               \
        } else if (sb) {                                                                    \
            const float A = a[0];                                                           \
            for (int64_t i = 0; i < len; i++) {                                             \
                const float B = b[i];                                                       \
                y[i] = (EXPR);                                                              \
            }                                                                               \
        } else {                                                                            \
            const float A = a[0], B = b[0];                                                 \
            for (int64_t i = 0; i < len; i++) y[i] = (EXPR);                                \
        }                                                                                   \
    } while (0)

static void run_forward(osp_binop op, int64_t len, const float *a, int64_t sa, const float *b,
                        int64_t sb, float *y) {
    switch (op) {
    case OSP_BIN_ADD: RUN_FORWARD(A + B); break;
    case OSP_BIN_SUB: RUN_FORWARD(A - B); break;
    case OSP_BIN_MUL: RUN_FORWARD(A * B); break;
    case OSP_BIN_DIV: RUN_FORWARD(A / B); break;
    }
}

/* d[i * s] += dy[i] * EXPR along one run; a broadcast operand (s == 0) sums
 * the run in double first. */
#define RUN_GRAD(d, s, EXPR)                                                                \
    do {                                                                                    \
        if (s) {                                                                            \
            for (int64_t i = 0; i < len; i++) {                                             \
                const float A = a[i * sa], B = b[i * sb];                                   \
                (void)A;                                                                    \
                (void)B;                                                                    \
                d[i] += dy[i] * (EXPR);                                                     \
            }                                                                               \
        } else {                                                                            \
            double sum = 0;                                                                 \
            for (int64_t i = 0; i < len; i++) {                                             \
                const float A = a[i * sa], B = b[i * sb];                                   \
                (void)A;                                                                    \
                (void)B;                                                                    \
                sum += (double)(dy[i] * (EXPR));                                            \
            }                                                                               \
            d[0] += (float)sum;                                                             \
        }                                                                                   \
    } while (0)

static void run_backward(osp_binop op, int64_t len, const float *a, int64_t sa, const float *b,
                         int64_t sb, const float *dy, float *da, float *db) {
    switch (op) {
    case OSP_BIN_ADD:
        if (da) RUN_GRAD(da, sa, 1.0f);
        if (db) RUN_GRAD(db, sb, 1.0f);
        break;
    case OSP_BIN_SUB:
        if (da) RUN_GRAD(da, sa, 1.0f);
        if (db) RUN_GRAD(db, sb, -1.0f);
        break;
    case OSP_BIN_MUL:
        if (da) RUN_GRAD(da, sa, B);
        if (db) RUN_GRAD(db, sb, A);
        break;
    case OSP_BIN_DIV: /* d(a/b)/db = -a / b^2, as PyTorch computes it */
        if (da) RUN_GRAD(da, sa, 1.0f / B);
        if (db) RUN_GRAD(db, sb, -A / (B * B));
        break;
    }
}

void osp__broadcast_forward(osp_binop op, const osp_shape *a_shape, const osp_shape *b_shape,
                            int batch, const float *a, const float *b, float *y) {
    plan p;
    make_plan(a_shape, b_shape, &p);
    const int64_t len = p.dim[p.ndim - 1], sa = p.sa[p.ndim - 1], sb = p.sb[p.ndim - 1];
#pragma omp parallel for schedule(static) if ((int64_t)batch * p.size >= PARALLEL_MIN)
    for (int s = 0; s < batch; s++) {
        const float *as = a + (int64_t)s * p.size_a, *bs = b + (int64_t)s * p.size_b;
        float *ys = y + (int64_t)s * p.size;
        cursor c;
        cursor_start(&c);
        do run_forward(op, len, as + c.a, sa, bs + c.b, sb, ys + c.o);
        while (cursor_next(&p, &c));
    }
}

void osp__broadcast_backward(osp_binop op, const osp_shape *a_shape, const osp_shape *b_shape,
                             int batch, const float *a, const float *b, const float *dy, float *da,
                             float *db) {
    if (!da && !db) return;
    plan p;
    make_plan(a_shape, b_shape, &p);
    const int64_t len = p.dim[p.ndim - 1], sa = p.sa[p.ndim - 1], sb = p.sb[p.ndim - 1];
#pragma omp parallel for schedule(static) if ((int64_t)batch * p.size >= PARALLEL_MIN)
    for (int s = 0; s < batch; s++) {
        const int64_t oa = (int64_t)s * p.size_a, ob = (int64_t)s * p.size_b;
        const float *dys = dy + (int64_t)s * p.size;
        cursor c;
        cursor_start(&c);
        do run_backward(op, len, a + oa + c.a, sa, b + ob + c.b, sb, dys + c.o,
                        da ? da + oa + c.a : NULL, db ? db + ob + c.b : NULL);
        while (cursor_next(&p, &c));
    }
}
