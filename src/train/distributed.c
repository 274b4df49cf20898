/* Data parallelism over MPI: the job handle, and the gradient reducer.
 *
 * The gradients live in one flat array whose layout follows the layers:
 * parameters of later layers sit at higher offsets. Backward visits the
 * layers last to first, so the array fills from its end. The reducer cuts
 * it into buckets of about bucket_mb MiB at parameter boundaries, from the
 * end, and starts a non-blocking allreduce (sum) on each bucket as soon as
 * the earliest layer owning a parameter in it has finished its backward.
 * MPI moves a non-blocking collective along only inside MPI calls, so the
 * hook also tests the oldest pending bucket after every layer. At the end
 * of the step the trainer waits for the buckets in order and runs the
 * optimizer on each one's slice of the weights as it arrives (elementwise
 * updates, so slice by slice is the same arithmetic as all at once).
 *
 * Every rank starts the same collectives in the same order (buckets are
 * fixed, and the hook order is the graph's), which MPI requires. The sums
 * are computed identically on every rank, so the weights stay identical:
 * the trainer checks that with a checksum at the end of each epoch. */
#include <stdlib.h>
#include <string.h>

#include "parallel.h"

#ifdef OSP_HAVE_MPI
#include <mpi.h>
#endif

#define MAX_STATS 8

int osp_dist_launched(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                       "MV2_COMM_WORLD_SIZE", NULL};
    for (int i = 0; vars[i]; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 1) return 1;
    }
    return 0;
}

int osp_dist_rank(const osp_dist *d);
int osp_dist_size(const osp_dist *d);

#ifdef OSP_HAVE_MPI

struct osp_dist {
    MPI_Comm comm;
    int rank, size;
    int finalize; /* MPI was initialised here */
    int peer_lost; /* a process died: MPI_Finalize would wait for it forever */
};

typedef struct bucket {
    int64_t lo, hi;  /* floats [lo, hi) of the gradient array */
    int first_node;  /* the bucket is complete once this node's backward is done */
    int started, done;
    MPI_Request req;
} bucket;

struct osp__reducer {
    osp_dist *d;
    osp_graph *g;
    int overlap;
    int n_buckets, next; /* next: the next bucket to start */
    bucket *buckets;
    float share;
    double *stats;
    double stats_buf[MAX_STATS];
    int n_stats;
    MPI_Request stats_req;
    float *avg;
    int64_t n_avg;
    MPI_Request avg_req;
};

static int mpi_error(int code, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, msg, &len);
    return osp_error(OSP_EIO, "%s: %.*s", what, len, msg);
}

int osp_dist_available(void) { return 1; }

int osp_dist_new(osp_dist **out) {
    *out = NULL;
    osp_dist *d = osp_calloc(1, sizeof *d);
    if (!d) return OSP_ENOMEM;
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        /* Open MPI's non-blocking allreduce picks a reduce-then-broadcast
         * tree below 4 ranks, which moves every byte twice in a row: on a
         * slow link that nearly doubles the exchange (docs/distributed.md).
         * The ring is bandwidth-optimal at any size; a setting of the
         * user's wins. */
        setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", 0);
        /* Only the thread that called this makes MPI calls. */
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            osp_free(d);
            return osp_error(OSP_EIO, "MPI could not be initialised");
        }
        d->finalize = 1;
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);
    *out = d;
    return OSP_OK;
}

void osp_dist_free(osp_dist *d) {
    if (!d) return;
    if (!d->peer_lost) MPI_Comm_free(&d->comm);
    if (d->finalize && !d->peer_lost) MPI_Finalize();
    osp_free(d);
}

void *osp__dist_comm(osp_dist *d) { return &d->comm; }
void osp__dist_peer_lost(osp_dist *d) { d->peer_lost = 1; }

int osp_dist_rank(const osp_dist *d) { return d ? d->rank : 0; }
int osp_dist_size(const osp_dist *d) { return d ? d->size : 1; }

int osp_dist_bcast(osp_dist *d, void *buf, size_t len) {
    if (!d || d->size == 1) return OSP_OK;
    char *p = buf;
    while (len > 0) { /* counts are ints */
        int n = len > (1u << 30) ? (1 << 30) : (int)len;
        int rc = MPI_Bcast(p, n, MPI_BYTE, 0, d->comm);
        if (rc != MPI_SUCCESS) return mpi_error(rc, "broadcast");
        p += n;
        len -= (size_t)n;
    }
    return OSP_OK;
}

int osp_dist_min(osp_dist *d, int value) {
    if (!d || d->size == 1) return value;
    int out = value;
    if (MPI_Allreduce(&value, &out, 1, MPI_INT, MPI_MIN, d->comm) != MPI_SUCCESS) return -1;
    return out;
}

void osp_dist_abort(osp_dist *d, int code) {
    if (d) MPI_Abort(d->comm, code);
}

int osp__dist_sum(osp_dist *d, double *v, int n) {
    if (!d || d->size == 1) return OSP_OK;
    int rc = MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, d->comm);
    return rc == MPI_SUCCESS ? OSP_OK : mpi_error(rc, "allreduce");
}

int osp__dist_bcast_floats(osp_dist *d, float *v, int64_t n) {
    return osp_dist_bcast(d, v, (size_t)n * sizeof(float));
}

int osp__dist_gather_timing(osp_dist *d, const osp_rank_timing *mine, osp_rank_timing *all) {
    if (!d || d->size == 1) {
        all[0] = *mine;
        return OSP_OK;
    }
    int rc = MPI_Gather(mine, (int)sizeof *mine, MPI_BYTE, all, (int)sizeof *mine, MPI_BYTE, 0,
                        d->comm);
    return rc == MPI_SUCCESS ? OSP_OK : mpi_error(rc, "gather");
}

/* ---- the reducer ------------------------------------------------------------- */

int osp__reducer_new(osp_dist *d, osp_graph *g, float bucket_mb, int overlap, osp__reducer **out) {
    *out = NULL;
    osp__reducer *r = osp_calloc(1, sizeof *r);
    if (!r) return OSP_ENOMEM;
    r->d = d;
    r->g = g;
    r->overlap = overlap;
    r->stats_req = r->avg_req = MPI_REQUEST_NULL;
    int np = osp_graph_param_count(g);
    r->buckets = osp_calloc((size_t)(np ? np : 1), sizeof *r->buckets);
    if (!r->buckets) {
        osp_free(r);
        return OSP_ENOMEM;
    }
    const int64_t limit = (int64_t)((double)(bucket_mb > 0 ? bucket_mb : 1) * 1048576.0 / sizeof(float));
    /* Weight parameters from the highest offset down; a bucket closes when
     * it reaches the limit (one large parameter may exceed it alone). */
    int64_t top;
    osp_graph_grads(g, &top);
    bucket *cur = NULL;
    for (int i = np - 1; i >= 0; i--) {
        const osp_param *p = osp_graph_param(g, i);
        if (p->kind != OSP_PARAM_WEIGHT || p->numel == 0) continue;
        if (!cur) {
            cur = &r->buckets[r->n_buckets++];
            cur->hi = top;
            cur->first_node = p->node;
        }
        cur->lo = p->offset;
        if (p->node < cur->first_node) cur->first_node = p->node;
        top = p->offset;
        if (cur->hi - cur->lo >= limit) cur = NULL;
    }
    for (int b = 0; b < r->n_buckets; b++) r->buckets[b].req = MPI_REQUEST_NULL;
    *out = r;
    return OSP_OK;
}

void osp__reducer_free(osp__reducer *r) {
    if (!r) return;
    osp_free(r->buckets);
    osp_free(r);
}

int osp__reducer_bucket_count(const osp__reducer *r) { return r->n_buckets; }

void osp__reducer_begin(osp__reducer *r, float share) {
    r->share = share;
    r->next = 0;
    r->stats = NULL;
    r->n_stats = 0;
    r->avg = NULL;
    for (int b = 0; b < r->n_buckets; b++) r->buckets[b].started = r->buckets[b].done = 0;
}

void osp__reducer_stats(osp__reducer *r, double *v, int n) {
    r->stats = v;
    r->n_stats = n < MAX_STATS ? n : MAX_STATS;
    memcpy(r->stats_buf, v, (size_t)r->n_stats * sizeof(double));
    MPI_Iallreduce(MPI_IN_PLACE, r->stats_buf, r->n_stats, MPI_DOUBLE, MPI_SUM, r->d->comm,
                   &r->stats_req);
}

void osp__reducer_average(osp__reducer *r, float *v, int64_t n) {
    if (n <= 0) return;
    r->avg = v;
    r->n_avg = n;
    MPI_Iallreduce(MPI_IN_PLACE, v, (int)n, MPI_FLOAT, MPI_SUM, r->d->comm, &r->avg_req);
}

static void start_bucket(osp__reducer *r, bucket *b) {
    int64_t count;
    float *g = osp_graph_grads(r->g, &count) + b->lo;
    const int64_t n = b->hi - b->lo;
    if (r->share != 1.0f)
        for (int64_t i = 0; i < n; i++) g[i] *= r->share;
    MPI_Iallreduce(MPI_IN_PLACE, g, (int)n, MPI_FLOAT, MPI_SUM, r->d->comm, &b->req);
    b->started = 1;
}

void osp__reducer_node_done(void *reducer, int node) {
    osp__reducer *r = reducer;
    if (!r->overlap) return;
    while (r->next < r->n_buckets && r->buckets[r->next].first_node >= node)
        start_bucket(r, &r->buckets[r->next++]);
    /* Move the pending exchanges along (MPI progresses only inside calls). */
    for (int b = 0; b < r->next; b++) {
        if (r->buckets[b].done) continue;
        int flag = 0;
        MPI_Test(&r->buckets[b].req, &flag, MPI_STATUS_IGNORE);
        if (flag) r->buckets[b].done = 1;
        break;
    }
}

static void update_slice(osp_optim *opt, float *w, const float *g, int64_t lo, int64_t hi,
                         float lr, int64_t t) {
    osp_optim view = *opt;
    view.n = hi - lo;
    view.m = opt->m + lo;
    view.v = opt->v ? opt->v + lo : NULL;
    view.t = t;
    osp_optim_step(&view, w + lo, g + lo, lr);
}

int osp__reducer_finish(osp__reducer *r, osp_optim *opt, float *w, float lr,
                        const osp_param_group *groups, int n_groups, double *wait_s,
                        double *update_s) {
    while (r->next < r->n_buckets) start_bucket(r, &r->buckets[r->next++]);
    int64_t count;
    const float *g = osp_graph_grads(r->g, &count);
    const int64_t t = opt->t; /* Adam counts the step once, not per bucket */
    double waited = 0, updating = 0;
    int rc = MPI_SUCCESS;
    for (int b = 0; b < r->n_buckets && rc == MPI_SUCCESS; b++) {
        bucket *k = &r->buckets[b];
        double t0 = osp_now();
        if (!k->done) rc = MPI_Wait(&k->req, MPI_STATUS_IGNORE);
        k->done = 1;
        double t1 = osp_now();
        if (!groups) update_slice(opt, w, g, k->lo, k->hi, lr, t);
        for (int j = 0; groups && j < n_groups; j++) { /* fine-tuning: the trained parts only */
            int64_t lo = k->lo > groups[j].lo ? k->lo : groups[j].lo;
            int64_t hi = k->hi < groups[j].hi ? k->hi : groups[j].hi;
            if (hi > lo) update_slice(opt, w, g, lo, hi, lr * groups[j].lr_scale, t);
        }
        waited += t1 - t0;
        updating += osp_now() - t1;
    }
    /* Parameters outside every bucket (none, unless empty) are left alone. */
    opt->t = t + (opt->cfg.kind != OSP_OPTIM_SGD);
    double t0 = osp_now();
    if (rc == MPI_SUCCESS && r->n_stats) {
        rc = MPI_Wait(&r->stats_req, MPI_STATUS_IGNORE);
        memcpy(r->stats, r->stats_buf, (size_t)r->n_stats * sizeof(double));
    }
    if (rc == MPI_SUCCESS && r->avg) {
        rc = MPI_Wait(&r->avg_req, MPI_STATUS_IGNORE);
        const float inv = 1.0f / (float)r->d->size;
        for (int64_t i = 0; i < r->n_avg; i++) r->avg[i] *= inv;
    }
    waited += osp_now() - t0;
    if (wait_s) *wait_s += waited;
    if (update_s) *update_s += updating;
    return rc == MPI_SUCCESS ? OSP_OK : mpi_error(rc, "gradient allreduce");
}

#else /* no MPI */

struct osp_dist {
    int unused;
};

int osp_dist_available(void) { return 0; }

int osp_dist_new(osp_dist **out) {
    *out = NULL;
    return osp_error(OSP_ENOTSUP,
                     "this build has no MPI: install Open MPI (libopenmpi-dev) and rebuild for "
                     "distributed training");
}

void osp_dist_free(osp_dist *d) { (void)d; }
int osp_dist_rank(const osp_dist *d) { return 0; }
int osp_dist_size(const osp_dist *d) { return 1; }
int osp_dist_bcast(osp_dist *d, void *buf, size_t len) { return OSP_OK; }
int osp_dist_min(osp_dist *d, int value) { return value; }
void osp_dist_abort(osp_dist *d, int code) { (void)d; }
int osp__dist_sum(osp_dist *d, double *v, int n) { return OSP_OK; }
void *osp__dist_comm(osp_dist *d) { return NULL; }
void osp__dist_peer_lost(osp_dist *d) { (void)d; }
int osp__dist_bcast_floats(osp_dist *d, float *v, int64_t n) { return OSP_OK; }
int osp__dist_gather_timing(osp_dist *d, const osp_rank_timing *mine, osp_rank_timing *all) {
    all[0] = *mine;
    return OSP_OK;
}

struct osp__reducer {
    int unused;
};

int osp__reducer_new(osp_dist *d, osp_graph *g, float bucket_mb, int overlap, osp__reducer **out) {
    *out = NULL;
    return osp_error(OSP_ENOTSUP, "this build has no MPI");
}
void osp__reducer_free(osp__reducer *r) { (void)r; }
int osp__reducer_bucket_count(const osp__reducer *r) { return 0; }
void osp__reducer_begin(osp__reducer *r, float share) {}
void osp__reducer_stats(osp__reducer *r, double *v, int n) {}
void osp__reducer_average(osp__reducer *r, float *v, int64_t n) {}
void osp__reducer_node_done(void *reducer, int node) {}
int osp__reducer_finish(osp__reducer *r, osp_optim *opt, float *w, float lr,
                        const osp_param_group *groups, int n_groups, double *wait_s,
                        double *update_s) {
    return osp_error(OSP_ENOTSUP, "this build has no MPI");
}

#endif
