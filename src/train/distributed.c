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
 * With lazy update the step ends once the small sums (loss, answers) are
 * in: the buckets' updates wait for the next forward pass, where a
 * before-node hook applies each bucket just before the first layer that
 * owns a weight in it runs (Deep Image's lazy update). The arithmetic is
 * the same, only the order of the waiting changes; every bucket left is
 * applied before the next backward overwrites the gradients.
 *
 * Every rank starts the same collectives in the same order (buckets are
 * fixed, and the hook order is the graph's), which MPI requires. The sums
 * are computed identically on every rank, so the weights stay identical:
 * the trainer checks that with a checksum at the end of each epoch. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"
#include "dist_mpi.h"
#include "parallel.h"

#ifdef OSP_HAVE_MPI
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
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
    MPI_Comm comm;   /* the gradient exchange and the trainer's own collectives */
    /* Layers' collectives during a step (synchronised batch norm, split fc
     * layers), from the training thread while the communication thread may
     * be starting buckets on comm: on one communicator the two threads'
     * collectives could start in a different order on different ranks,
     * which MPI forbids. */
    MPI_Comm layers;
    int rank, size;
    int finalize;     /* MPI was initialised here */
    int thread_level; /* MPI_THREAD_* provided */
    int peer_lost;    /* a process died: MPI_Finalize would wait for it forever */
};

typedef struct bucket {
    int64_t lo, hi;   /* floats [lo, hi) of the gradient array */
    int first_node;   /* the bucket is complete once this node's backward is done */
    int stage;        /* STAGE_*: owned by whichever thread drives the exchange */
    atomic_int published; /* summed, and the training thread may use it */
    MPI_Request *req;     /* n_req of them: one collective, or butterfly's messages */
    int n_req;
    size_t wire, wire_at; /* compressed: bytes of our chunk, its offset in send */
    int64_t chunk, pad_at; /* butterfly: floats per rank; offset of the bucket's padded
                              copy in pad and of the other ranks' slices in part */
} bucket;

struct osp__reducer {
    osp_dist *d;
    osp_graph *g;
    int overlap;
    osp__compress_kind compress;
    int reduce;
    double bytes;        /* sent per rank per step */
    int n_buckets, next; /* next: the next bucket to start (training thread) */
    bucket *buckets;
    float share;
    double *stats;
    double stats_buf[MAX_STATS];
    int n_stats;
    MPI_Request stats_req;
    atomic_int stats_done; /* the small sums are in (the thread's step may go on) */
    /* The step's optimizer update, kept by finish for the buckets still to
     * be applied: all of them at once, or (lazy) one at a time from the
     * first layer's, in the next forward pass. */
    int lazy, pending, lazy_next; /* pending: a step's buckets await; lazy_next: the next
                                     to apply, counting down (-1: none) */
    int lazy_err;                 /* an MPI code from a hook (hooks return nothing) */
    osp_optim *opt;
    float *w;
    float lr;
    const osp_param_group *groups;
    int n_groups;
    int64_t t;
    double waited, updating;
    unsigned char *send, *recv; /* packed chunks: ours; every rank's, rank after rank */
    float *resid;               /* error feedback, over the whole gradient array */
    float *pad;                 /* butterfly: buckets padded to a multiple of the ranks */
    float *part;                /* butterfly: the slices the other ranks send us */
    MPI_Request *reqs;          /* every bucket's requests */
    int err;                    /* an MPI code; the first failure of the step */
    /* The communication thread. mu guards active, quit, step_done and err
     * while it runs; ready and published are atomics read without it. */
    int threaded, woken; /* woken: the thread's step has started (training thread) */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake, moved;
    int active, quit, step_done;
    atomic_int ready; /* buckets [0, ready) may be started */
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
        /* During a step the reducer's communication thread makes the
         * exchange's calls while the training thread computes; a layer
         * that calls MPI itself during the step (one synchronising batch
         * statistics, say) then calls beside it, which only
         * MPI_THREAD_MULTIPLE allows. */
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
            osp_free(d);
            return osp_error(OSP_EIO, "MPI could not be initialised");
        }
        d->finalize = 1;
    }
    MPI_Query_thread(&d->thread_level);
    MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
    MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
    MPI_Comm_dup(d->comm, &d->layers);
    MPI_Comm_rank(d->comm, &d->rank);
    MPI_Comm_size(d->comm, &d->size);
    *out = d;
    return OSP_OK;
}

void osp_dist_free(osp_dist *d) {
    if (!d) return;
    if (!d->peer_lost) {
        MPI_Comm_free(&d->layers);
        MPI_Comm_free(&d->comm);
    }
    if (d->finalize && !d->peer_lost) MPI_Finalize();
    osp_free(d);
}

MPI_Comm osp__dist_comm(const osp_dist *d) { return d->layers; }
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

/* A bucket goes through up to two collectives: the ring's one allreduce;
 * butterfly's reduce-scatter, then all-gather; compressed buckets' one
 * all-gather of the packed chunks, then a local sum in rank order (the same
 * order on every rank, so the same sums). */
enum { STAGE_IDLE, STAGE_FIRST, STAGE_SECOND, STAGE_DONE };

/* While exchanges are in flight and nothing moved, the communication
 * thread sleeps, from POLL_MIN_NS doubling up to POLL_MAX_NS: often enough
 * to keep a 1 Gbit/s link busy through the sockets' buffers (320 us is 40
 * kB at 1 Gbit/s), rarely enough to leave the core to compute. With none
 * in flight it waits for backward to release a bucket. */
#define POLL_MIN_NS 20000
#define POLL_MAX_NS 320000

static void *comm_thread(void *arg);

int osp__reducer_new(osp_dist *d, osp_graph *g, const osp__reducer_config *c, osp__reducer **out) {
    *out = NULL;
    osp__reducer *r = osp_calloc(1, sizeof *r);
    if (!r) return OSP_ENOMEM;
    r->d = d;
    r->g = g;
    r->overlap = c->overlap;
    r->lazy = c->lazy;
    r->lazy_next = -1;
    r->compress = (osp__compress_kind)c->compress;
    r->reduce = c->reduce;
    r->stats_req = MPI_REQUEST_NULL;
    int np = osp_graph_param_count(g);
    r->buckets = osp_calloc((size_t)(np ? np : 1), sizeof *r->buckets);
    if (!r->buckets) {
        osp_free(r);
        return OSP_ENOMEM;
    }
    const unsigned char *skip = c->skip;
    const float mb = c->bucket_mb > 0 ? c->bucket_mb : 1;
    const int64_t limit = (int64_t)((double)mb * 1048576.0 / sizeof(float));
    /* Weight parameters from the highest offset down; a bucket closes when
     * it reaches the limit (one large parameter may exceed it alone). */
    int64_t top, count;
    osp_graph_grads(g, &top);
    count = top;
    bucket *cur = NULL;
    for (int i = np - 1; i >= 0; i--) {
        const osp_param *p = osp_graph_param(g, i);
        if (p->kind != OSP_PARAM_WEIGHT || p->numel == 0) continue;
        if (skip && skip[i]) { /* a bucket is contiguous: it ends below this one */
            cur = NULL;
            top = p->offset;
            continue;
        }
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
    /* Buffers: packed chunks (ours, and every rank's), or butterfly's copies
     * padded to a multiple of the ranks. */
    const int n = d->size;
    size_t wire = 0;
    int64_t padded = 0;
    for (int b = 0; b < r->n_buckets; b++) {
        bucket *k = &r->buckets[b];
        const int64_t len = k->hi - k->lo;
        if (r->compress != OSP__COMPRESS_NONE) {
            k->wire = osp__compress_size(r->compress, len);
            k->wire_at = wire;
            wire += k->wire;
            r->bytes += (double)(n - 1) * (double)k->wire;
        } else if (r->reduce == OSP_REDUCE_BUTTERFLY) {
            k->chunk = (len + n - 1) / n;
            k->pad_at = padded;
            padded += k->chunk * n;
            r->bytes += 2.0 * (n - 1) * (double)k->chunk * sizeof(float);
        } else {
            r->bytes += 2.0 * (n - 1) / n * (double)len * sizeof(float);
        }
    }
    int rc = OSP_OK;
    const int per = r->reduce == OSP_REDUCE_BUTTERFLY && !wire ? 2 * (n - 1) : 1;
    r->reqs = osp_alloc((size_t)(r->n_buckets ? r->n_buckets : 1) * (size_t)per * sizeof(MPI_Request));
    if (!r->reqs) rc = OSP_ENOMEM;
    for (int b = 0; !rc && b < r->n_buckets; b++) {
        r->buckets[b].req = r->reqs + (size_t)b * (size_t)per;
        r->buckets[b].n_req = 1;
        for (int j = 0; j < per; j++) r->buckets[b].req[j] = MPI_REQUEST_NULL;
    }
    if (wire) {
        r->send = osp_alloc(wire);
        r->recv = osp_alloc(wire * (size_t)n);
        r->resid = osp_calloc((size_t)count, sizeof(float));
        if (!r->send || !r->recv || !r->resid) rc = OSP_ENOMEM;
    }
    if (padded) {
        r->pad = osp_alloc((size_t)padded * sizeof(float));
        r->part = osp_alloc((size_t)padded * sizeof(float));
        if (!r->pad || !r->part) rc = OSP_ENOMEM;
    }
    if (!rc && c->thread) {
        if (d->thread_level < MPI_THREAD_MULTIPLE) {
            osp_log(OSP_LOG_WARN, "this MPI does not allow calls from several threads "
                    "(MPI_THREAD_MULTIPLE): the exchange moves along only between layers");
        } else {
            pthread_mutex_init(&r->mu, NULL);
            pthread_cond_init(&r->wake, NULL);
            pthread_cond_init(&r->moved, NULL);
            if (pthread_create(&r->thread, NULL, comm_thread, r) == 0) r->threaded = 1;
            else osp_log(OSP_LOG_WARN, "no communication thread could be started: the exchange "
                         "moves along only between layers");
            if (!r->threaded) {
                pthread_mutex_destroy(&r->mu);
                pthread_cond_destroy(&r->wake);
                pthread_cond_destroy(&r->moved);
            }
        }
    }
    if (rc) {
        osp__reducer_free(r);
        return rc;
    }
    *out = r;
    return OSP_OK;
}

void osp__reducer_free(osp__reducer *r) {
    if (!r) return;
    if (r->threaded) {
        pthread_mutex_lock(&r->mu);
        r->quit = 1;
        pthread_cond_signal(&r->wake);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->wake);
        pthread_cond_destroy(&r->moved);
    }
    osp_free(r->send);
    osp_free(r->recv);
    osp_free(r->resid);
    osp_free(r->pad);
    osp_free(r->part);
    osp_free(r->reqs);
    osp_free(r->buckets);
    osp_free(r);
}

int osp__reducer_bucket_count(const osp__reducer *r) { return r->n_buckets; }
double osp__reducer_bytes(const osp__reducer *r) { return r->bytes; }

int64_t osp__reducer_floats(const osp__reducer *r) {
    int64_t n = 0;
    for (int b = 0; b < r->n_buckets; b++) n += r->buckets[b].hi - r->buckets[b].lo;
    return n;
}

void osp__reducer_begin(osp__reducer *r, float share) {
    assert(!r->pending); /* osp__reducer_settle first */
    r->share = share;
    r->next = 0;
    r->stats = NULL;
    r->n_stats = 0;
    r->err = MPI_SUCCESS;
    r->woken = 0;
    atomic_store(&r->ready, 0);
    atomic_store(&r->stats_done, 0);
    for (int b = 0; b < r->n_buckets; b++) {
        r->buckets[b].stage = STAGE_IDLE;
        atomic_store(&r->buckets[b].published, 0);
    }
    if (r->threaded) { /* the thread is idle between steps */
        pthread_mutex_lock(&r->mu);
        r->step_done = 0;
        pthread_mutex_unlock(&r->mu);
    }
}

/* The small sums that travel beside the buckets. */
static int start_extras(osp__reducer *r) {
    int rc = MPI_SUCCESS;
    if (r->n_stats)
        rc = MPI_Iallreduce(MPI_IN_PLACE, r->stats_buf, r->n_stats, MPI_DOUBLE, MPI_SUM, r->d->comm,
                            &r->stats_req);
    return rc;
}

void osp__reducer_stats(osp__reducer *r, double *v, int n) {
    r->stats = v;
    r->n_stats = n < MAX_STATS ? n : MAX_STATS;
    memcpy(r->stats_buf, v, (size_t)r->n_stats * sizeof(double));
}

static float *bucket_grads(osp__reducer *r, const bucket *b) {
    int64_t count;
    return osp_graph_grads(r->g, &count) + b->lo;
}

/* Butterfly (Deep Image's synchronisation), with messages rather than
 * Open MPI's non-blocking reduce-scatter (whose 4.1 version corrupted its
 * heap and truncated messages here when several were in flight): phase 0
 * sends slice k of the padded bucket to rank k and receives every rank's
 * copy of our slice; phase 1 sends our summed slice to every rank and
 * receives theirs in place. Each rank sends (N-1)/N of the bucket in each
 * phase, as the ring does, in N-1 messages that travel at once. */
static int butterfly_phase(osp__reducer *r, bucket *b, int phase) {
    const int n = r->d->size, me = r->d->rank;
    const int tag = 2 * (int)(b - r->buckets) + phase; /* buckets may be in flight together */
    float *pad = r->pad + b->pad_at, *part = r->part + b->pad_at;
    const int c = (int)b->chunk;
    int rc = MPI_SUCCESS, j = 0;
    for (int k = 0; k < n && rc == MPI_SUCCESS; k++) {
        if (k == me) continue;
        float *in = phase == 0 ? part + (int64_t)c * k : pad + (int64_t)c * k;
        rc = MPI_Irecv(in, c, MPI_FLOAT, k, tag, r->d->comm, &b->req[j++]);
    }
    for (int k = 0; k < n && rc == MPI_SUCCESS; k++) {
        if (k == me) continue;
        const float *out = phase == 0 ? pad + (int64_t)c * k : pad + (int64_t)c * me;
        rc = MPI_Isend(out, c, MPI_FLOAT, k, tag, r->d->comm, &b->req[j++]);
    }
    b->n_req = j;
    return rc;
}

static int start_bucket(osp__reducer *r, bucket *b) {
    float *g = bucket_grads(r, b);
    const int64_t n = b->hi - b->lo;
    MPI_Comm comm = r->d->comm;
    if (r->share != 1.0f)
        for (int64_t i = 0; i < n; i++) g[i] *= r->share;
    b->stage = STAGE_FIRST;
    if (r->compress != OSP__COMPRESS_NONE) {
        unsigned char *mine = r->send + b->wire_at;
        osp__compress(r->compress, g, r->resid + b->lo, n, mine);
        b->n_req = 1;
        return MPI_Iallgather(mine, (int)b->wire, MPI_BYTE, r->recv + b->wire_at * (size_t)r->d->size,
                              (int)b->wire, MPI_BYTE, comm, b->req);
    }
    if (r->reduce == OSP_REDUCE_BUTTERFLY) {
        float *pad = r->pad + b->pad_at;
        memcpy(pad, g, (size_t)n * sizeof(float));
        memset(pad + n, 0, (size_t)(b->chunk * r->d->size - n) * sizeof(float));
        return butterfly_phase(r, b, 0);
    }
    b->n_req = 1;
    return MPI_Iallreduce(MPI_IN_PLACE, g, (int)n, MPI_FLOAT, MPI_SUM, comm, b->req);
}

/* Bucket b's collective has completed: the next one, or the sum. */
static int bucket_arrived(osp__reducer *r, bucket *b) {
    float *g = bucket_grads(r, b);
    const int64_t n = b->hi - b->lo;
    if (r->compress != OSP__COMPRESS_NONE) {
        const unsigned char *all = r->recv + b->wire_at * (size_t)r->d->size;
        memset(g, 0, (size_t)n * sizeof(float));
        for (int k = 0; k < r->d->size; k++)
            osp__decompress_add(r->compress, all + (size_t)k * b->wire, n, g);
        b->stage = STAGE_DONE;
        return MPI_SUCCESS;
    }
    if (r->reduce == OSP_REDUCE_BUTTERFLY && b->stage == STAGE_FIRST) {
        /* our slice: every rank's, summed in rank order */
        const int me = r->d->rank;
        float *mine = r->pad + b->pad_at + b->chunk * me;
        for (int64_t i = 0; i < b->chunk; i++) {
            float sum = 0;
            for (int k = 0; k < r->d->size; k++)
                sum += k == me ? mine[i] : r->part[b->pad_at + b->chunk * k + i];
            mine[i] = sum;
        }
        b->stage = STAGE_SECOND;
        return butterfly_phase(r, b, 1);
    }
    if (r->reduce == OSP_REDUCE_BUTTERFLY) memcpy(g, r->pad + b->pad_at, (size_t)n * sizeof(float));
    b->stage = STAGE_DONE;
    return MPI_SUCCESS;
}

/* Tests b's collective and moves it on; sets *moved when it did. */
static int test_bucket(osp__reducer *r, bucket *b, int *moved) {
    int flag = 0;
    int rc = MPI_Testall(b->n_req, b->req, &flag, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS || !flag) return rc;
    *moved = 1;
    return bucket_arrived(r, b);
}

/* Blocks until b is summed (the training thread's way). */
static int wait_bucket(osp__reducer *r, bucket *b) {
    int rc = MPI_SUCCESS;
    while (rc == MPI_SUCCESS && b->stage != STAGE_DONE) {
        rc = MPI_Waitall(b->n_req, b->req, MPI_STATUSES_IGNORE);
        if (rc == MPI_SUCCESS) rc = bucket_arrived(r, b);
    }
    return rc;
}

/* The communication thread: while a step is on, it starts the buckets the
 * training thread has released and tests every pending one, so the
 * exchange moves whatever the training thread is doing; it tells the
 * training thread of each bucket summed. It makes all of the exchange's
 * MPI calls of the step; the training thread makes the others. */
static void *comm_thread(void *arg) {
    osp__reducer *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (!r->active && !r->quit) pthread_cond_wait(&r->wake, &r->mu);
        int quit = r->quit;
        pthread_mutex_unlock(&r->mu);
        if (quit) return NULL;
        int rc = start_extras(r), started = 0, left = r->n_buckets;
        int extras = 1;
        long pause = POLL_MIN_NS;
        while (rc == MPI_SUCCESS && (left > 0 || extras)) {
            int moved = 0;
            const int ready = atomic_load(&r->ready);
            for (; started < ready && rc == MPI_SUCCESS; started++, moved = 1)
                rc = start_bucket(r, &r->buckets[started]);
            for (int b = 0; b < started && rc == MPI_SUCCESS; b++) {
                bucket *k = &r->buckets[b];
                if (k->stage == STAGE_DONE) continue;
                int arrived = 0;
                rc = test_bucket(r, k, &arrived);
                if (rc != MPI_SUCCESS || k->stage != STAGE_DONE) continue;
                moved = 1;
                left--;
                pthread_mutex_lock(&r->mu);
                atomic_store(&k->published, 1);
                pthread_cond_broadcast(&r->moved);
                pthread_mutex_unlock(&r->mu);
            }
            if (rc == MPI_SUCCESS && extras) {
                int done = 0;
                rc = MPI_Test(&r->stats_req, &done, MPI_STATUS_IGNORE);
                if (done) { /* a null request tests complete */
                    extras = 0;
                    moved = 1;
                    pthread_mutex_lock(&r->mu);
                    atomic_store(&r->stats_done, 1);
                    pthread_cond_broadcast(&r->moved);
                    pthread_mutex_unlock(&r->mu);
                }
            }
            if (moved) {
                pause = POLL_MIN_NS;
            } else if (left > 0 && !extras && started == r->n_buckets - left) {
                pthread_mutex_lock(&r->mu); /* nothing in flight, more to come */
                while (atomic_load(&r->ready) == started) pthread_cond_wait(&r->wake, &r->mu);
                pthread_mutex_unlock(&r->mu);
            } else if (left > 0 || extras) {
                struct timespec ts = {0, pause};
                nanosleep(&ts, NULL);
                pause = pause * 2 < POLL_MAX_NS ? pause * 2 : POLL_MAX_NS;
            }
        }
        pthread_mutex_lock(&r->mu);
        r->err = rc;
        r->active = 0;
        r->step_done = 1;
        pthread_cond_broadcast(&r->moved);
        pthread_mutex_unlock(&r->mu);
    }
}

/* Buckets [0, upto) may go (a few times a step: the lock costs nothing).
 * The first release of a step starts the thread's step, and only the
 * first: the thread may have finished the step before the last one. */
static void release(osp__reducer *r, int upto) {
    pthread_mutex_lock(&r->mu);
    atomic_store(&r->ready, upto);
    if (!r->woken) r->active = 1;
    r->woken = 1;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->mu);
    r->next = upto;
}

void osp__reducer_node_done(void *reducer, int node) {
    osp__reducer *r = reducer;
    if (!r->overlap) return;
    int upto = r->next;
    while (upto < r->n_buckets && r->buckets[upto].first_node >= node) upto++;
    if (r->threaded) {
        if (upto > r->next) release(r, upto);
        return;
    }
    if (r->next == 0 && upto > 0) r->err = start_extras(r);
    while (r->next < upto && r->err == MPI_SUCCESS) r->err = start_bucket(r, &r->buckets[r->next++]);
    /* Move the pending exchanges along (MPI progresses only inside calls). */
    for (int b = 0; b < r->next && r->err == MPI_SUCCESS; b++) {
        if (r->buckets[b].stage == STAGE_DONE) continue;
        int moved = 0;
        r->err = test_bucket(r, &r->buckets[b], &moved);
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

/* Blocks until bucket b is summed; returns an MPI code. */
static int await(osp__reducer *r, int b) {
    if (!r->threaded) return wait_bucket(r, &r->buckets[b]);
    if (atomic_load(&r->buckets[b].published)) return MPI_SUCCESS;
    pthread_mutex_lock(&r->mu);
    while (!atomic_load(&r->buckets[b].published) && !r->step_done) pthread_cond_wait(&r->moved, &r->mu);
    int rc = atomic_load(&r->buckets[b].published) ? MPI_SUCCESS : r->err;
    pthread_mutex_unlock(&r->mu);
    return rc == MPI_SUCCESS && !atomic_load(&r->buckets[b].published) ? MPI_ERR_OTHER : rc;
}

/* Waits for the small sums (loss, answers) alone. */
static int await_stats(osp__reducer *r) {
    if (!r->threaded) return MPI_Wait(&r->stats_req, MPI_STATUS_IGNORE);
    pthread_mutex_lock(&r->mu);
    while (!atomic_load(&r->stats_done) && !r->step_done) pthread_cond_wait(&r->moved, &r->mu);
    int rc = atomic_load(&r->stats_done) ? MPI_SUCCESS : r->err;
    pthread_mutex_unlock(&r->mu);
    return rc == MPI_SUCCESS && !atomic_load(&r->stats_done) ? MPI_ERR_OTHER : rc;
}

/* The end of the thread's step (every bucket and the small sums are in):
 * the reducer is idle again. */
static int await_step(osp__reducer *r) {
    if (!r->threaded) return MPI_Wait(&r->stats_req, MPI_STATUS_IGNORE);
    pthread_mutex_lock(&r->mu);
    while (!r->step_done) pthread_cond_wait(&r->moved, &r->mu);
    int rc = r->err;
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* Waits for bucket b and applies the step's update to its weights (only
 * the parts inside the fine-tuning groups, each at lr times its scale,
 * when there are groups). */
static int apply_bucket(osp__reducer *r, int b) {
    bucket *k = &r->buckets[b];
    double t0 = osp_now();
    int rc = await(r, b);
    double t1 = osp_now();
    r->waited += t1 - t0;
    if (rc != MPI_SUCCESS) return rc;
    const float *g = osp_graph_grads(r->g, NULL);
    if (!r->groups) update_slice(r->opt, r->w, g, k->lo, k->hi, r->lr, r->t);
    for (int j = 0; r->groups && j < r->n_groups; j++) {
        int64_t lo = k->lo > r->groups[j].lo ? k->lo : r->groups[j].lo;
        int64_t hi = k->hi < r->groups[j].hi ? k->hi : r->groups[j].hi;
        if (hi > lo) update_slice(r->opt, r->w, g, lo, hi, r->lr * r->groups[j].lr_scale, r->t);
    }
    r->updating += osp_now() - t1;
    return MPI_SUCCESS;
}

int osp__reducer_finish(osp__reducer *r, osp_optim *opt, float *w, float lr,
                        const osp_param_group *groups, int n_groups, double *wait_s,
                        double *update_s) {
    int rc = r->err;
    if (r->threaded) {
        if (!r->woken || r->next < r->n_buckets) release(r, r->n_buckets);
    } else {
        if (rc == MPI_SUCCESS && r->next == 0) rc = start_extras(r);
        while (rc == MPI_SUCCESS && r->next < r->n_buckets) rc = start_bucket(r, &r->buckets[r->next++]);
    }
    r->opt = opt;
    r->w = w;
    r->lr = lr;
    r->groups = groups;
    r->n_groups = n_groups;
    r->t = opt->t; /* Adam counts the step once, not per bucket */
    r->waited = r->updating = 0;
    /* Parameters outside every bucket (none, unless empty) are left alone. */
    opt->t = r->t + (opt->cfg.kind != OSP_OPTIM_SGD);
    if (r->lazy && rc == MPI_SUCCESS) { /* the buckets wait for the next forward pass */
        double t0 = osp_now();
        rc = await_stats(r);
        if (rc == MPI_SUCCESS && r->n_stats) memcpy(r->stats, r->stats_buf, (size_t)r->n_stats * sizeof(double));
        if (wait_s) *wait_s += osp_now() - t0;
        r->pending = 1;
        r->lazy_next = r->n_buckets - 1;
        r->lazy_err = MPI_SUCCESS;
        return rc == MPI_SUCCESS ? OSP_OK : mpi_error(rc, "gradient exchange");
    }
    /* In the order the buckets arrive. */
    for (int b = 0; b < r->n_buckets && rc == MPI_SUCCESS; b++) rc = apply_bucket(r, b);
    double t0 = osp_now();
    int end = r->threaded || rc == MPI_SUCCESS ? await_step(r) : rc;
    if (rc == MPI_SUCCESS) rc = end;
    if (rc == MPI_SUCCESS && r->n_stats) memcpy(r->stats, r->stats_buf, (size_t)r->n_stats * sizeof(double));
    r->waited += osp_now() - t0;
    if (wait_s) *wait_s += r->waited;
    if (update_s) *update_s += r->updating;
    return rc == MPI_SUCCESS ? OSP_OK : mpi_error(rc, "gradient exchange");
}

void osp__reducer_node_before(void *reducer, int node) {
    osp__reducer *r = reducer;
    /* Buckets are cut in reverse layer order, so counting down they come
     * in the order forward needs them: a bucket holds weights of node n
     * only if its first node is n or earlier. */
    while (r->pending && r->lazy_err == MPI_SUCCESS && r->lazy_next >= 0 &&
           r->buckets[r->lazy_next].first_node <= node)
        r->lazy_err = apply_bucket(r, r->lazy_next--);
}

int osp__reducer_settle(osp__reducer *r, double *wait_s, double *update_s) {
    if (!r || !r->pending) return OSP_OK;
    int rc = r->lazy_err;
    for (; rc == MPI_SUCCESS && r->lazy_next >= 0; r->lazy_next--) rc = apply_bucket(r, r->lazy_next);
    double t0 = osp_now();
    int end = r->threaded || rc == MPI_SUCCESS ? await_step(r) : rc;
    if (rc == MPI_SUCCESS) rc = end;
    r->waited += osp_now() - t0;
    r->pending = 0;
    r->lazy_next = -1;
    if (wait_s) *wait_s += r->waited;
    if (update_s) *update_s += r->updating;
    return rc == MPI_SUCCESS ? OSP_OK : mpi_error(rc, "gradient exchange");
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

int osp__reducer_new(osp_dist *d, osp_graph *g, const osp__reducer_config *c, osp__reducer **out) {
    *out = NULL;
    return osp_error(OSP_ENOTSUP, "this build has no MPI");
}
void osp__reducer_free(osp__reducer *r) { (void)r; }
int osp__reducer_bucket_count(const osp__reducer *r) { return 0; }
double osp__reducer_bytes(const osp__reducer *r) { return 0; }
void osp__reducer_begin(osp__reducer *r, float share) {}
void osp__reducer_stats(osp__reducer *r, double *v, int n) {}
void osp__reducer_node_done(void *reducer, int node) {}
int osp__reducer_finish(osp__reducer *r, osp_optim *opt, float *w, float lr,
                        const osp_param_group *groups, int n_groups, double *wait_s,
                        double *update_s) {
    return osp_error(OSP_ENOTSUP, "this build has no MPI");
}
void osp__reducer_node_before(void *reducer, int node) {}
int osp__reducer_settle(osp__reducer *r, double *wait_s, double *update_s) { return OSP_OK; }

#endif
