/* Model parallelism for wide fully connected layers (Krizhevsky, "One
 * weird trick for parallelizing convolutional neural networks", 2014):
 * the convolutional layers stay data-parallel, each large [fc] layer is
 * split by its outputs over the N ranks.
 *
 * Shapes, with N ranks, the global batch G cut into the ranks' rows B_q
 * (sum G), a layer of I inputs and O outputs, rank r owning the outputs
 * [o_r, o_r+1) (Ob = O/N of them, the rows of W and b there):
 *
 *   forward   x (B_r x I)   --all-gather-->    x_all (G x I)
 *             y_blk = x_all . W_blk^T + b_blk  (G x Ob)
 *             y_blk's rows of rank q --all-to-all--> y (B_r x O)
 *   backward  dy (B_r x O), weighed by the share B_r / G
 *                           --all-to-all-->    dy_blk (G x Ob)
 *             dW_blk = dy_blk^T . x_all, db_blk = sum(dy_blk): the true
 *             gradient of the global batch's loss, exchanged with nobody
 *             dx_all = dy_blk . W_blk (G x I, a part of a sum over ranks)
 *                           --reduce-scatter--> dx (B_r x I), over the share
 *
 * The outputs go back to their rows' ranks after each layer (all-to-all)
 * rather than the next layer being split by input rows: every layer then
 * looks the same, and whatever follows (activations, dropout, the
 * classifier, the loss) is data-parallel and unchanged.
 *
 * Each rank keeps the whole weight arrays but trains only its block (the
 * reducer leaves the blocks out, osp__mp_update applies the optimizer to
 * them); the other ranks' blocks go stale until osp__mp_gather brings them
 * (and the optimizer state) to every rank, which the trainer does before
 * a checkpoint, a validation and the weight check. So checkpoints hold the
 * whole net, and a resumed or evaluated model needs nothing special. */
#include <string.h>

#include "dist_mpi.h"
#include "parallel.h"

/* Rank q's first output of a layer with out outputs over ranks ranks. */
static int block_lo(int out, int q, int ranks) { return (int)((int64_t)out * q / ranks); }

typedef struct mp_layer {
    int node, in, out;
    int64_t w_off, b_off; /* in weights[] (and grads[], optimizer state); b_off -1: no bias */
    float *x_all;  /* G x I: the global batch's inputs, kept for backward */
    float *y_blk;  /* G x Ob: this rank's outputs over the global batch; dy_blk in backward */
    float *dx_all; /* G x I: this rank's part of the inputs' gradient */
    float *pack;   /* B x O: this rank's rows, by owner block (all-to-all) */
    float *dx_own; /* B x I: the summed gradient of this rank's rows */
} mp_layer;

struct osp__mp {
    osp_dist *d;
    const osp_backend *be;
    int rank, ranks;
    int n_layers;
    mp_layer *layers;
    int n_nodes;
    int *slot;            /* per node: its index in layers, or -1 */
    unsigned char *skip;  /* per parameter: a split layer's */
    int *c1, *d1, *c2, *d2; /* ranks each: counts and displacements */
};

int osp__mp_layers(const osp__mp *m) { return m ? m->n_layers : 0; }
const unsigned char *osp__mp_skip(const osp__mp *m) { return m ? m->skip : NULL; }

void osp__mp_free(osp__mp *m) {
    if (!m) return;
    for (int i = 0; i < m->n_layers; i++) {
        mp_layer *l = &m->layers[i];
        osp_free(l->x_all);
        osp_free(l->y_blk);
        osp_free(l->dx_all);
        osp_free(l->pack);
        osp_free(l->dx_own);
    }
    osp_free(m->layers);
    osp_free(m->slot);
    osp_free(m->skip);
    osp_free(m->c1);
    osp_free(m->d1);
    osp_free(m->c2);
    osp_free(m->d2);
    osp_free(m);
}

static int layer_alloc(mp_layer *l, int batch, int ranks, int rank) {
    /* this rank's rows are at most ceil(G / N) */
    const size_t g = (size_t)batch, b = (size_t)(batch + ranks - 1) / (size_t)ranks;
    const size_t ob = (size_t)(block_lo(l->out, rank + 1, ranks) - block_lo(l->out, rank, ranks));
    l->x_all = osp_alloc(g * (size_t)l->in * sizeof(float));
    l->y_blk = osp_alloc(g * ob * sizeof(float));
    l->dx_all = osp_alloc(g * (size_t)l->in * sizeof(float));
    l->pack = osp_alloc(b * (size_t)l->out * sizeof(float));
    l->dx_own = osp_alloc(b * (size_t)l->in * sizeof(float));
    return l->x_all && l->y_blk && l->dx_all && l->pack && l->dx_own ? OSP_OK : OSP_ENOMEM;
}

int osp__mp_new(osp_dist *d, osp_graph *g, int logits_node, int batch, osp__mp **out) {
    *out = NULL;
    osp__mp *m = osp_calloc(1, sizeof *m);
    if (!m) return OSP_ENOMEM;
    m->d = d;
    m->be = osp_graph_backend(g);
    m->rank = osp_dist_rank(d);
    m->ranks = osp_dist_size(d);
    m->n_nodes = osp_graph_node_count(g);
    const int np = osp_graph_param_count(g);
    m->slot = osp_alloc((size_t)m->n_nodes * sizeof(int));
    m->skip = osp_calloc((size_t)(np > 0 ? np : 1), 1);
    m->layers = osp_calloc((size_t)m->n_nodes, sizeof *m->layers);
    m->c1 = osp_alloc((size_t)m->ranks * sizeof(int));
    m->d1 = osp_alloc((size_t)m->ranks * sizeof(int));
    m->c2 = osp_alloc((size_t)m->ranks * sizeof(int));
    m->d2 = osp_alloc((size_t)m->ranks * sizeof(int));
    int rc = m->slot && m->skip && m->layers && m->c1 && m->d1 && m->c2 && m->d2 ? OSP_OK : OSP_ENOMEM;
    for (int i = 0; !rc && i < m->n_nodes; i++) {
        m->slot[i] = -1;
        const osp_node *n = osp_graph_node(g, i);
        /* the logits stay whole: the loss reads every output of a row */
        if (i == 0 || i == logits_node || strcmp(n->op->name, "fc") != 0 || n->shape.ndim != 1 ||
            n->shape.dim[0] < m->ranks || n->n_params < 1)
            continue;
        mp_layer *l = &m->layers[m->n_layers];
        l->node = i;
        l->out = (int)n->shape.dim[0];
        l->in = (int)osp_node_input(g, n, 0)->size;
        l->b_off = -1;
        for (int k = 0; k < n->n_params; k++) {
            const osp_param *p = osp_graph_param(g, n->params[k]);
            if (k == 0) l->w_off = p->offset;
            else l->b_off = p->offset;
            m->skip[n->params[k]] = 1;
        }
        if ((int64_t)batch * l->in > INT32_MAX || (int64_t)batch * l->out > INT32_MAX) {
            rc = osp_error(OSP_ERANGE, "layer '%s': %d x %d values are too many to exchange at once",
                           n->name, batch, l->in);
            break;
        }
        rc = layer_alloc(l, batch, m->ranks, m->rank);
        m->slot[i] = m->n_layers++;
    }
    if (rc) {
        osp__mp_free(m);
        return rc;
    }
    *out = m;
    return OSP_OK;
}

static mp_layer *layer_of(const osp__split *s, const osp_node *n) {
    const osp__mp *m = s->mp;
    if (!m || n->id <= 0 || n->id >= m->n_nodes || m->slot[n->id] < 0) return NULL;
    return &m->layers[m->slot[n->id]];
}

static void update_slice(osp_optim *opt, float *w, const float *g, int64_t lo, int64_t hi,
                         float lr) {
    osp_optim view = *opt;
    view.n = hi - lo;
    view.m = opt->m + lo;
    view.v = opt->v ? opt->v + lo : NULL;
    osp_optim_step(&view, w + lo, g + lo, lr);
}

void osp__mp_update(osp__mp *m, osp_optim *opt, float *w, const float *g, float lr) {
    for (int i = 0; i < m->n_layers; i++) {
        const mp_layer *l = &m->layers[i];
        const int64_t o0 = block_lo(l->out, m->rank, m->ranks);
        const int64_t o1 = block_lo(l->out, m->rank + 1, m->ranks);
        update_slice(opt, w, g, l->w_off + o0 * l->in, l->w_off + o1 * l->in, lr);
        if (l->b_off >= 0) update_slice(opt, w, g, l->b_off + o0, l->b_off + o1, lr);
    }
}

#ifdef OSP_HAVE_MPI

static void failed(osp__split *s, int rc, const char *what) {
    if (rc != MPI_SUCCESS && !s->rc) s->rc = osp_error(OSP_EIO, "model parallelism: %s failed", what);
}

int osp__mp_fc_forward(void *split, const osp_node *n, int rows, int in, int out, const float *x,
                       const float *w, const float *bias, float *y) {
    osp__split *s = split;
    mp_layer *l = layer_of(s, n);
    if (!l) return 0;
    osp__mp *m = s->mp;
    MPI_Comm comm = osp__dist_comm(m->d);
    const int me = m->rank, N = m->ranks;
    const int o0 = block_lo(out, me, N), ob = block_lo(out, me + 1, N) - o0;
    const int G = (int)s->global;
    for (int q = 0; q < N; q++) {
        int64_t a, b;
        osp__split_rows(s, q, &a, &b);
        m->c1[q] = (int)(b - a) * in;
        m->d1[q] = (int)a * in;
    }
    failed(s, MPI_Allgatherv(x, rows * in, MPI_FLOAT, l->x_all, m->c1, m->d1, MPI_FLOAT, comm),
           "all-gather");
    m->be->fc_forward(G, in, ob, l->x_all, w + (int64_t)o0 * in, bias ? bias + o0 : NULL, l->y_blk);
    /* to rank q: its rows of y_blk; from rank q: this rank's rows of its block */
    for (int q = 0; q < N; q++) {
        int64_t a, b;
        osp__split_rows(s, q, &a, &b);
        const int q0 = block_lo(out, q, N), q1 = block_lo(out, q + 1, N);
        m->c1[q] = (int)(b - a) * ob;
        m->d1[q] = (int)a * ob;
        m->c2[q] = rows * (q1 - q0);
        m->d2[q] = rows * q0;
    }
    failed(s, MPI_Alltoallv(l->y_blk, m->c1, m->d1, MPI_FLOAT, l->pack, m->c2, m->d2, MPI_FLOAT,
                            comm), "all-to-all");
    for (int q = 0; q < N; q++) {
        const int q0 = block_lo(out, q, N), qb = block_lo(out, q + 1, N) - q0;
        const float *src = l->pack + (int64_t)rows * q0;
        for (int r = 0; r < rows; r++)
            memcpy(y + (int64_t)r * out + q0, src + (int64_t)r * qb, (size_t)qb * sizeof(float));
    }
    s->bytes += ((double)(G - rows) * in + (double)rows * (out - ob)) * sizeof(float);
    return 1;
}

int osp__mp_fc_backward(void *split, const osp_node *n, int rows, int in, int out, const float *x,
                        const float *w, const float *dy, float *dx, float *dw, float *db) {
    (void)x; /* the global batch's inputs were kept in forward */
    osp__split *s = split;
    mp_layer *l = layer_of(s, n);
    if (!l) return 0;
    osp__mp *m = s->mp;
    MPI_Comm comm = osp__dist_comm(m->d);
    const int me = m->rank, N = m->ranks;
    const int o0 = block_lo(out, me, N), ob = block_lo(out, me + 1, N) - o0;
    const int G = (int)s->global;
    const float share = s->share;
    for (int q = 0; q < N; q++) {
        int64_t a, b;
        osp__split_rows(s, q, &a, &b);
        const int q0 = block_lo(out, q, N), qb = block_lo(out, q + 1, N) - q0;
        float *dst = l->pack + (int64_t)rows * q0;
        for (int r = 0; r < rows; r++) {
            const float *src = dy + (int64_t)r * out + q0;
            for (int j = 0; j < qb; j++) dst[(int64_t)r * qb + j] = src[j] * share;
        }
        m->c1[q] = rows * qb;
        m->d1[q] = rows * q0;
        m->c2[q] = (int)(b - a) * ob;
        m->d2[q] = (int)a * ob;
    }
    float *dy_blk = l->y_blk;
    failed(s, MPI_Alltoallv(l->pack, m->c1, m->d1, MPI_FLOAT, dy_blk, m->c2, m->d2, MPI_FLOAT,
                            comm), "all-to-all");
    if (dx) memset(l->dx_all, 0, (size_t)G * (size_t)in * sizeof(float));
    m->be->fc_backward(G, in, ob, l->x_all, w + (int64_t)o0 * in, dy_blk, dx ? l->dx_all : NULL,
                       dw ? dw + (int64_t)o0 * in : NULL, db ? db + o0 : NULL);
    s->bytes += (double)rows * (out - ob) * sizeof(float);
    if (!dx) return 1;
    for (int q = 0; q < N; q++) {
        int64_t a, b;
        osp__split_rows(s, q, &a, &b);
        m->c1[q] = (int)(b - a) * in;
    }
    failed(s, MPI_Reduce_scatter(l->dx_all, l->dx_own, m->c1, MPI_FLOAT, MPI_SUM, comm),
           "reduce-scatter");
    /* back to this rank's scale (the share was put in above) */
    const float inv = 1.0f / share;
    for (int64_t i = 0; i < (int64_t)rows * in; i++) dx[i] += l->dx_own[i] * inv;
    s->bytes += (double)(G - rows) * in * sizeof(float);
    return 1;
}

static int gather_range(osp__mp *m, float *v, int64_t off, int per_output, int out) {
    for (int q = 0; q < m->ranks; q++) {
        const int q0 = block_lo(out, q, m->ranks), q1 = block_lo(out, q + 1, m->ranks);
        m->c1[q] = (q1 - q0) * per_output;
        m->d1[q] = q0 * per_output;
    }
    int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, v + off, m->c1, m->d1, MPI_FLOAT,
                            osp__dist_comm(m->d));
    return rc == MPI_SUCCESS ? OSP_OK : osp_error(OSP_EIO, "model parallelism: gathering the blocks failed");
}

int osp__mp_gather(osp__mp *m, osp_optim *opt, float *w) {
    int rc = OSP_OK;
    float *arrays[3] = {w, opt->m, opt->v};
    for (int i = 0; i < m->n_layers && !rc; i++) {
        const mp_layer *l = &m->layers[i];
        for (int k = 0; k < 3 && !rc; k++) {
            if (!arrays[k]) continue;
            rc = gather_range(m, arrays[k], l->w_off, l->in, l->out);
            if (!rc && l->b_off >= 0) rc = gather_range(m, arrays[k], l->b_off, 1, l->out);
        }
    }
    return rc;
}

#else /* no MPI: osp__mp_new is never reached (no job has more than one rank) */

int osp__mp_fc_forward(void *split, const osp_node *n, int rows, int in, int out, const float *x,
                       const float *w, const float *bias, float *y) {
    return 0;
}
int osp__mp_fc_backward(void *split, const osp_node *n, int rows, int in, int out, const float *x,
                        const float *w, const float *dy, float *dx, float *dw, float *db) {
    return 0;
}
int osp__mp_gather(osp__mp *m, osp_optim *opt, float *w) { return OSP_OK; }

#endif
