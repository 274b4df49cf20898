/* Replicas: synchronous data parallelism across the threads of one
 * process. Each step's batch is cut into T slices; replica k runs forward
 * and backward on slice k single-threaded, in its own graph (activations,
 * gradients, batch-norm running statistics) that reads the network's one
 * set of weights; the replicas' gradients are then summed, in a fixed
 * order, into the network's own gradient buffer for one optimizer step.
 *
 * Why: splitting every layer over the threads (the kernels' OpenMP loops,
 * "layers") leaves small layers (32x32 CIFAR convolutions, 16 channels)
 * with too little work per thread per fork; splitting the batch gives each
 * thread whole layers and no fork at all (measured in docs/benchmarks.md).
 *
 * The numbers are those of one thread on the whole batch, up to float32
 * rounding:
 *  - batch norm normalises with the whole batch's statistics: every
 *    [batchnorm] layer sums its per-channel sums over the replicas through
 *    the sum hook (osp_exec_hooks.sum, the one synchronised batch norm uses
 *    over MPI ranks), here a barrier and a sum in replica order;
 *  - replica k's gradient is of the mean loss over its n_k samples, so
 *    the step's gradient is the sum of n_k / n times each.
 * Dropout draws its masks from (seed, node, step): replica k > 0 uses a
 * seed of its own, so that the slices do not repeat replica 0's masks
 * (the masks then differ from a one-thread run's, as with MPI ranks).
 *
 * Memory: each replica holds the activations of its slice, so the
 * activations of a step add up to about those of one graph on the whole
 * batch; each replica beyond the first adds one gradient buffer (the
 * size of the weights), its workspace and a copy of the buffers. */
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "osprey/train.h"
#include "train_impl.h"

/* One replica's view of the step: what its sum hook needs. */
typedef struct lane {
    osp_replicas *owner;
    int k;
    int parity;  /* which half of the slots the next sum writes */
    float share; /* n_k / n */
} lane;

struct osp_replicas {
    osp_net *net;   /* replica 0 (borrowed) */
    int n;          /* replicas */
    osp_net **nets; /* n - 1 replicas beyond the first (owned) */
    lane *lanes;
    int active;     /* replicas with samples this step: min(n, batch) */
    /* The sum hook's exchange: 2 (parity) x n (replica) x slot_n doubles.
     * Two halves, so that a fast replica's next sum never overwrites a
     * slot a slow one is still reading: between them lies a barrier. */
    double *slots;
    int slot_n;
    osp_exec_hooks *hooks; /* n, user = lanes + k */
};

static osp_graph *graph_of(const osp_replicas *p, int k) {
    return k == 0 ? p->net->graph : p->nets[k - 1]->graph;
}

static osp_net *net_of(const osp_replicas *p, int k) { return k == 0 ? p->net : p->nets[k - 1]; }

/* Sums v over the active replicas in replica order, identically on each
 * (every replica reaches its batch-norm layers in the same order). */
static void replica_sum(void *user, double *v, int n, int grad) {
    lane *l = user;
    osp_replicas *p = l->owner;
    const size_t half = (size_t)p->n * (size_t)p->slot_n;
    double *base = p->slots + (size_t)l->parity * half;
    double *mine = base + (size_t)l->k * (size_t)p->slot_n;
    /* see osp__split_sum: gradient sums weigh by the share, and come back
     * in this replica's scale */
    const double scale = grad ? (double)l->share : 1.0;
    for (int i = 0; i < n; i++) mine[i] = v[i] * scale;
#pragma omp barrier
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < p->active; k++) s += base[(size_t)k * (size_t)p->slot_n + (size_t)i];
        v[i] = grad ? s / scale : s;
    }
    l->parity ^= 1;
}

/* The most doubles a batch-norm layer sums at once: 2C (bn_forward_sync),
 * C being at most any node's first dimension. */
static int max_sum_len(const osp_graph *g) {
    int64_t c = 1;
    for (int i = 1; i < osp_graph_node_count(g); i++) {
        const osp_node *n = osp_graph_node((osp_graph *)g, i);
        if (n->shape.ndim > 0 && n->shape.dim[0] > c) c = n->shape.dim[0];
    }
    return (int)(2 * c + 1);
}

void osp_replicas_free(osp_replicas *p) {
    if (!p) return;
    if (p->nets)
        for (int k = 0; k < p->n - 1; k++) osp_net_free(p->nets[k]);
    osp_free(p->nets);
    osp_free(p->lanes);
    osp_free(p->slots);
    osp_free(p->hooks);
    osp_free(p);
}

int osp_replicas_new(osp_net *net, int n, osp_replicas **out) {
    *out = NULL;
    if (!net || n < 1 || n > 1024) return osp_error(OSP_EINVAL, "osp_replicas_new: bad arguments");
    if (!net->spec_text)
        return osp_error(OSP_EINVAL, "replicas need the network's spec to build their graphs");
    osp_replicas *p = osp_calloc(1, sizeof *p);
    if (!p) return OSP_ENOMEM;
    p->net = net;
    p->n = n;
    p->slot_n = max_sum_len(net->graph);
    p->nets = osp_calloc((size_t)n, sizeof *p->nets);
    p->lanes = osp_calloc((size_t)n, sizeof *p->lanes);
    p->hooks = osp_calloc((size_t)n, sizeof *p->hooks);
    p->slots = osp_alloc(2 * (size_t)n * (size_t)p->slot_n * sizeof(double));
    int rc = p->nets && p->lanes && p->hooks && p->slots ? OSP_OK : OSP_ENOMEM;
    int64_t nb, nb_k;
    const float *buffers = osp_graph_buffers(net->graph, &nb);
    const int frozen = osp_graph_frozen_until(net->graph);
    for (int k = 1; k < n && !rc; k++) {
        rc = osp_net_from_spec(net->spec_text, strlen(net->spec_text), "replica", 1, &p->nets[k - 1]);
        if (rc) break;
        osp_graph *g = p->nets[k - 1]->graph;
        if ((rc = osp_graph_share_weights(g, net->graph))) {
            rc = osp_error(rc, "a replica's graph does not match the network: %s", osp_last_error());
            break;
        }
        /* The running statistics as they are now: frozen layers (which
         * run as in inference) read them; the others only update them. */
        float *own = osp_graph_buffers(g, &nb_k);
        const osp_backend *be = osp_graph_backend(g);
        if (nb) be->copy_d2d(be->ctx, own, buffers, (size_t)nb * sizeof(float));
        if (frozen && (rc = osp_graph_freeze(g, frozen))) break;
    }
    for (int k = 0; k < n && !rc; k++) {
        p->lanes[k] = (lane){.owner = p, .k = k};
        p->hooks[k] = (osp_exec_hooks){.user = &p->lanes[k], .sum = replica_sum};
    }
    if (rc) {
        osp_replicas_free(p);
        return rc;
    }
    *out = p;
    return OSP_OK;
}

int osp_replicas_count(const osp_replicas *p) { return p ? p->n : 0; }

/* Replica k's rows of a batch of n: [n k / A, n (k + 1) / A). */
static int rows_lo(int n, int k, int active) { return (int)((int64_t)n * k / active); }

/* Forward, loss and backward of replica k on its rows. */
static int lane_step(osp_replicas *p, int k, const osp_replicas_batch *b, double *loss,
                     int64_t *correct) {
    const int lo = rows_lo(b->batch, k, p->active), hi = rows_lo(b->batch, k + 1, p->active);
    osp_net *net = net_of(p, k);
    const int64_t size = osp_shape_numel(&net->input);
    const int64_t outs = osp_graph_node(net->graph, net->logits_node)->size;
    osp_exec ex = {.be = osp_graph_backend(net->graph), .mode = OSP_MODE_TRAIN, .batch = hi - lo,
                   .seed = b->seed + (uint64_t)k * 0x9e3779b97f4a7c15u, .step = b->step,
                   .hooks = &p->hooks[k]};
    p->lanes[k].parity = 0;
    p->lanes[k].share = (float)((double)(hi - lo) / (double)b->batch);
    const float *x = b->x + (int64_t)lo * size;
    int rc = b->targets
                 ? osp__forward_loss_hot(net, x, b->targets + (int64_t)lo * outs, &ex, loss, correct)
                 : osp__forward_loss(net, x, b->labels + lo, &ex, loss, correct);
    /* These fail only on a plan osp_replicas_step has checked: a failure
     * here is a bug, and the other replicas would wait at a barrier. */
    return rc ? rc : osp_graph_backward_from(net->graph, net->logits_node, &ex);
}

int osp_replicas_step(osp_replicas *p, const osp_replicas_batch *b, double *loss, int64_t *correct) {
    if (!p || !b || !b->x || (!b->labels == !b->targets) || b->batch <= 0)
        return osp_error(OSP_EINVAL, "osp_replicas_step: bad arguments");
    p->active = b->batch < p->n ? b->batch : p->n;
    const int active = p->active;
    /* Planning allocates and may fail: all of it before the replicas start,
     * as a replica that stopped early would leave the others at a barrier. */
    for (int k = 0; k < active; k++) {
        int rows = rows_lo(b->batch, k + 1, active) - rows_lo(b->batch, k, active);
        int rc = osp_graph_plan(graph_of(p, k), rows, OSP_MODE_TRAIN);
        if (rc) return rc;
    }
    double losses[1024];
    int64_t rights[1024];
    int failed = 0, team = 1;
    int64_t nw;
    float *grads = osp_graph_grads(p->net->graph, &nw);
#pragma omp parallel num_threads(active)
    {
        int k = 0;
#ifdef _OPENMP
        k = omp_get_thread_num();
        const int got = omp_get_num_threads();
        if (k == 0) team = got;
        omp_set_num_threads(1); /* a replica's kernels run on its thread */
#else
        const int got = 1;
#endif
        /* Every replica must reach every barrier: all of them or none run. */
        if (got == active) {
            int rc = lane_step(p, k, b, &losses[k], &rights[k]);
            if (rc) {
#pragma omp atomic write
                failed = rc;
            }
#pragma omp barrier
            /* g = sum over k of share_k g_k, each thread over its part of
             * the weights, replicas in order: the same sum for any timing */
            const int64_t lo = nw * k / active, hi = nw * (k + 1) / active;
            for (int j = 1; j < active; j++) {
                const float *gj = osp_graph_grads(graph_of(p, j), NULL);
                const float sj = p->lanes[j].share;
                if (j == 1)
                    for (int64_t i = lo; i < hi; i++) grads[i] = grads[i] * p->lanes[0].share + gj[i] * sj;
                else
                    for (int64_t i = lo; i < hi; i++) grads[i] += gj[i] * sj;
            }
        }
    }
    if (team != active)
        return osp_error(OSP_ESTATE, "%d replicas got %d threads (OMP_DYNAMIC?)", active, team);
    if (failed) return failed;
    double l = 0;
    int64_t right = 0;
    for (int k = 0; k < active; k++) {
        l += losses[k] * p->lanes[k].share;
        right += rights[k];
    }
    *loss = l;
    *correct = right;
    return OSP_OK;
}

/* Splitting a layer over threads pays a fork and a join per layer;
 * replicas pay a barrier per batch-norm layer, one gradient sum per step,
 * GEMMs on a slice of the batch and the plain-C synchronised batch norm.
 * Measured on 2 cores at load 3.5 (docs/benchmarks.md, 2026-12-08), the
 * layers took less CPU per image for ResNet-20 (3.8-3.9 ms against
 * 4.2-4.9), the MobileNet (3.8 against 4.1-4.3) and LeNet-5: so auto
 * keeps the layers, and replicas are asked for by name. */
int osp_replicas_auto(const osp_net *net, int batch, int threads) {
    (void)net;
    (void)batch;
    (void)threads;
    return 1;
}

int osp_replicas_for(const osp_net *net, int batch, int threads, int mode) {
    if (mode == OSP_THREADS_REPLICAS) return threads > batch ? (batch > 0 ? batch : 1) : threads;
    if (mode == OSP_THREADS_AUTO) return osp_replicas_auto(net, batch, threads);
    return 1;
}

const char *osp_threads_mode_name(int mode) {
    switch (mode) {
    case OSP_THREADS_AUTO: return "auto";
    case OSP_THREADS_LAYERS: return "layers";
    case OSP_THREADS_REPLICAS: return "replicas";
    }
    return "?";
}

int osp_threads_mode_parse(const char *name, int *mode) {
    for (int m = OSP_THREADS_AUTO; m <= OSP_THREADS_REPLICAS; m++)
        if (name && !strcmp(name, osp_threads_mode_name(m))) {
            *mode = m;
            return OSP_OK;
        }
    return osp_error(OSP_EINVAL, "unknown threads mode '%s' (auto, layers, replicas)", name ? name : "");
}
