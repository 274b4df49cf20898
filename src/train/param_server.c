/* Asynchronous training with parameter servers over MPI point-to-point.
 *
 * Ranks 0..S-1 are servers, the others workers. The weights are cut into
 * S contiguous shards at parameter boundaries; server s keeps shard s and
 * its optimizer state. A worker pulls every shard, computes the gradient
 * of one batch, pushes each shard's part to its server and waits for the
 * servers' answers: the shards after its update, and from server 0 the
 * next batch. Each server applies every gradient as it comes, with no
 * waiting for the other workers (Dean et al., 2012, "Large scale
 * distributed deep networks": DistBelief's Downpour SGD).
 *
 * Momentum stays on the servers: each applies the run's optimizer (SGD
 * with momentum, or Adam) to every incoming gradient, at lr / tau, where
 * tau is the gradient's staleness: the updates the shard took between the
 * worker's pull and this push, this one included (1 when nothing came in
 * between). Dividing by tau is the staleness-aware rate of Zhang, Gupta,
 * Lian and Liu, 2016 ("Staleness-aware async-SGD for distributed deep
 * learning"); with W workers tau is about W, so W updates of batch B move
 * the weights about as far as one synchronous step of batch W x B.
 *
 * Server 0 alone schedules: it hands out the batches of the epoch's
 * permutation in order (the batches a one-process run with the same batch
 * takes), holds back its answer to a worker that is more than
 * max_staleness updates ahead of the slowest live worker (stale
 * synchronous parallel, Ho et al., 2013), and stops handing out at each
 * checkpoint: once every batch before it is back it gathers the other
 * shards, writes the checkpoint, validates at epoch ends, and goes on.
 *
 * With --compress a worker pushes its gradient packed (fp16 or int8, one
 * chunk per weight tensor, so that int8's scale follows each layer's
 * gradients) and keeps what the packing lost for its next push (error
 * feedback, compress.h); the server unpacks and applies it. The answers
 * (the weights) stay float32: weights carry no feedback, so whatever a
 * packing lost would stay lost, and a worker's every pull would start
 * from weights up to max |w| / 254 away from the servers' (int8).
 *
 * A worker that stays silent past worker_timeout_s while it holds a batch
 * is taken for dead: its batch goes to another worker, nobody waits for it
 * any more, and no message is sent to it. The servers never block on a
 * worker: they poll MPI_Irecv(MPI_ANY_SOURCE) with MPI_Test. Whether the
 * job survives a dead process at all is mpirun's choice (Open MPI 4.1 needs
 * --enable-recovery; docs/distributed.md). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compress.h"
#include "dist_mpi.h"
#include "loader.h"
#include "train_impl.h"

#ifdef OSP_HAVE_MPI
#include <mpi.h>

enum { TAG_PUSH = 41, TAG_PULL, TAG_CTRL, TAG_SHARD };
enum { MSG_HELLO = 1, MSG_GRAD, MSG_WORK, MSG_STOP, MSG_GATHER };

/* The head of every message; floats follow it. */
typedef struct ps_header {
    int32_t kind;
    int32_t lost;     /* MSG_STOP: workers lost during the run */
    int64_t version;  /* push: the shard's version the gradient was computed on; pull: sent */
    int64_t step;     /* the batch, as a step of the run */
    int64_t samples;  /* push: samples in the batch */
    int64_t correct;  /* push: right answers */
    double loss;      /* push: mean loss over the batch */
} ps_header;

#define HEAD ((sizeof(ps_header) + 15) / 16 * 16)

typedef struct peer {
    int alive;
    int waiting;    /* asked for work (pushed or said hello), not answered yet */
    int64_t batch;  /* the step it is computing, -1 for none, -2 before its hello */
    int64_t clock;  /* its gradients applied */
    double since;   /* when it was given its batch */
} peer;

typedef struct ps {
    osp__run *r;
    MPI_Comm comm;
    int S, W, me;
    int64_t *bounds;     /* S + 1: shard s is floats [bounds[s], bounds[s + 1]) */
    int64_t n_weights, n_buffers;
    /* Pushed gradients: packed chunk by chunk, cut at cuts[shard_cut[s] ..
     * shard_cut[s + 1]] for shard s (every weight tensor's offset). */
    osp__compress_kind pack;
    int64_t *cuts;
    int *shard_cut;
    float *resid;        /* worker: what packing lost, over all the weights */
    float *unpacked;     /* server: one push's gradient, unpacked */
    int64_t version;     /* updates this shard took */
    unsigned char *in;   /* one push (server) or one pull (worker) */
    size_t in_cap;
    unsigned char **out; /* server: each worker's answer; worker: one push */
    MPI_Request *out_req;
    /* server 0 */
    peer *peers;
    int64_t next, barrier, stop, outstanding;
    int64_t *retry;      /* batches of lost workers, handed out again first */
    int n_retry, lost;
    int64_t *msgs;       /* pushes (hello included) from each live worker; 0 for the lost */
    double loss_sum, tau_sum;
    int64_t seen, right, applied;
} ps;

static int mpi_fail(int code, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, msg, &len);
    return osp_error(OSP_EIO, "parameter server: %s: %.*s", what, len, msg);
}

static void pause_briefly(void) {
    struct timespec ts = {0, 50000}; /* 50 us: a poll loop that leaves the cores to the workers */
    nanosleep(&ts, NULL);
}

/* Shard boundaries: S nearly equal parts of the weights, cut where a
 * parameter starts (so a layer's tensor lives on one server). */
static void shard(osp_graph *g, int S, int64_t n, int64_t *bounds) {
    bounds[0] = 0;
    for (int k = 1; k < S; k++) {
        const int64_t target = n * k / S;
        int64_t cut = n;
        for (int i = 0; i < osp_graph_param_count(g); i++) {
            const osp_param *p = osp_graph_param(g, i);
            if (p->kind == OSP_PARAM_WEIGHT && p->offset >= target && p->offset < cut) cut = p->offset;
        }
        bounds[k] = cut > bounds[k - 1] ? cut : bounds[k - 1];
    }
    bounds[S] = n;
}

static int64_t shard_len(const ps *p, int s) { return p->bounds[s + 1] - p->bounds[s]; }

static int cmp_offset(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The chunks a push is packed in: one per weight tensor (a gap of
 * alignment goes with the tensor before it). Shard bounds are tensor
 * offsets, so every shard is a run of whole chunks. */
static int cut_chunks(ps *p, osp_graph *g) {
    const int np = osp_graph_param_count(g);
    p->cuts = osp_alloc(((size_t)np + 2) * sizeof *p->cuts);
    p->shard_cut = osp_alloc(((size_t)p->S + 1) * sizeof *p->shard_cut);
    if (!p->cuts || !p->shard_cut) return OSP_ENOMEM;
    int n = 0;
    p->cuts[n++] = 0;
    for (int i = 0; i < np; i++) {
        const osp_param *q = osp_graph_param(g, i);
        if (q->kind == OSP_PARAM_WEIGHT && q->offset > 0 && q->offset < p->n_weights) p->cuts[n++] = q->offset;
    }
    qsort(p->cuts, (size_t)n, sizeof *p->cuts, cmp_offset);
    int kept = 1;
    for (int i = 1; i < n; i++)
        if (p->cuts[i] != p->cuts[kept - 1]) p->cuts[kept++] = p->cuts[i];
    p->cuts[kept] = p->n_weights; /* cuts[0..kept] */
    for (int s = 0, k = 0; s <= p->S; s++) {
        while (k < kept && p->cuts[k] < p->bounds[s]) k++;
        p->shard_cut[s] = k;
    }
    return OSP_OK;
}

/* Bytes of shard s's gradient in a push. */
static size_t grad_bytes(const ps *p, int s) {
    size_t n = 0;
    for (int k = p->shard_cut[s]; k < p->shard_cut[s + 1]; k++)
        n += osp__compress_size(p->pack, p->cuts[k + 1] - p->cuts[k]);
    return n;
}

/* The optimizer on [lo, hi) of the weights, g being the gradient of that
 * slice, at lr (and each fine-tuning group's scale). */
static void apply_slice(ps *p, const float *g, int64_t lo, int64_t hi, float lr) {
    osp__run *r = p->r;
    float *w = osp_graph_weights(r->net->graph, NULL);
    osp_param_group all = {lo, hi, 1.0f};
    const osp_param_group *groups = r->n_groups ? r->groups : &all;
    const int n_groups = r->n_groups ? r->n_groups : 1;
    for (int j = 0; j < n_groups; j++) {
        int64_t a = lo > groups[j].lo ? lo : groups[j].lo, b = hi < groups[j].hi ? hi : groups[j].hi;
        if (b <= a) continue;
        osp_optim view = *r->opt;
        view.n = b - a;
        view.m = r->opt->m + a;
        view.v = r->opt->v ? r->opt->v + a : NULL;
        osp_optim_step(&view, w + a, g + (a - lo), lr * groups[j].lr_scale);
    }
    r->opt->t += r->opt->cfg.kind != OSP_OPTIM_SGD;
}

/* Applies the push in p->in (from a worker) to this server's shard;
 * returns the staleness tau. */
static int64_t apply_push(ps *p, const ps_header *h) {
    const int64_t lo = p->bounds[p->me], hi = p->bounds[p->me + 1];
    const int64_t tau = p->version - h->version + 1;
    const float lr = osp_sched_lr(&p->r->sched, p->r->cfg->lr, h->step) / (float)(tau > 1 ? tau : 1);
    const float *grad = (const float *)(p->in + HEAD);
    if (p->pack != OSP__COMPRESS_NONE) {
        const unsigned char *at = p->in + HEAD;
        memset(p->unpacked, 0, (size_t)(hi - lo) * sizeof(float));
        for (int k = p->shard_cut[p->me]; k < p->shard_cut[p->me + 1]; k++) {
            const int64_t n = p->cuts[k + 1] - p->cuts[k];
            osp__decompress_add(p->pack, at, n, p->unpacked + (p->cuts[k] - lo));
            at += osp__compress_size(p->pack, n);
        }
        grad = p->unpacked;
    }
    apply_slice(p, grad, lo, hi, lr);
    p->version++;
    if (p->me == 0 && p->n_buffers > 0) { /* the newest worker's batch-norm statistics */
        memcpy(osp_graph_buffers(p->r->net->graph, NULL), p->in + HEAD + grad_bytes(p, p->me),
               (size_t)p->n_buffers * sizeof(float));
    }
    return tau;
}

/* A push in p->in of count bytes from rank src, checked before use: a
 * worker of this job, a known kind, the size of this shard's gradient
 * (and server 0's statistics). The ranks run the same program, so a
 * failure here is a bug or a stray sender, never data to guess at. */
static int check_push(const ps *p, const MPI_Status *st, ps_header *h) {
    int count = 0;
    MPI_Get_count(st, MPI_BYTE, &count);
    const int w = st->MPI_SOURCE - p->S;
    if (w < 0 || w >= p->W || count < (int)sizeof *h)
        return osp_error(OSP_EIO, "parameter server %d: a malformed message (%d bytes) from rank %d", p->me,
                         count, st->MPI_SOURCE);
    memcpy(h, p->in, sizeof *h);
    const size_t want = HEAD + grad_bytes(p, p->me) + (size_t)(p->me == 0 ? p->n_buffers : 0) * sizeof(float);
    const int ok = (h->kind == MSG_HELLO && (size_t)count == sizeof *h) ||
                   (h->kind == MSG_GRAD && (size_t)count == want && h->version >= 0 &&
                    h->version <= p->version && h->step >= 0 && h->step < p->r->total_steps);
    if (!ok)
        return osp_error(OSP_EIO, "parameter server %d: a malformed push (kind %d, %d bytes) from rank %d",
                         p->me, h->kind, count, st->MPI_SOURCE);
    return OSP_OK;
}

/* Answers worker w (rank S + w) with this shard and, from server 0, kind
 * and step. Non-blocking: a worker that died meanwhile never takes it. */
static int answer(ps *p, int w, int kind, int64_t step) {
    if (p->out_req[w] != MPI_REQUEST_NULL) { /* the last answer: taken before it pushed again */
        int rc = MPI_Wait(&p->out_req[w], MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "answering a worker");
    }
    const int64_t lo = p->bounds[p->me], n = shard_len(p, p->me);
    ps_header h = {.kind = kind, .lost = p->lost, .version = p->version, .step = step};
    memcpy(p->out[w], &h, sizeof h);
    memcpy(p->out[w] + HEAD, osp_graph_weights(p->r->net->graph, NULL) + lo, (size_t)n * sizeof(float));
    int rc = MPI_Isend(p->out[w], (int)(HEAD + (size_t)n * sizeof(float)), MPI_BYTE, p->S + w, TAG_PULL,
                       p->comm, &p->out_req[w]);
    return rc == MPI_SUCCESS ? OSP_OK : mpi_fail(rc, "answering a worker");
}

/* ---- servers 1..S-1 ------------------------------------------------------------ */

/* Sends this shard's weights and optimizer state to server 0. */
static int send_shard(ps *p) {
    const int64_t lo = p->bounds[p->me], n = shard_len(p, p->me);
    osp_optim *o = p->r->opt;
    int rc = MPI_Send(osp_graph_weights(p->r->net->graph, NULL) + lo, (int)n, MPI_FLOAT, 0, TAG_SHARD, p->comm);
    if (!rc && o->m) rc = MPI_Send(o->m + lo, (int)n, MPI_FLOAT, 0, TAG_SHARD, p->comm);
    if (!rc && o->v) rc = MPI_Send(o->v + lo, (int)n, MPI_FLOAT, 0, TAG_SHARD, p->comm);
    return rc == MPI_SUCCESS ? OSP_OK : mpi_fail(rc, "sending a shard to server 0");
}

/* Answers pushes until server 0 says stop; then until every live worker's
 * last push (server 0 counts them) is answered, and sends the shard. */
static int serve_shard(ps *p) {
    MPI_Request push = MPI_REQUEST_NULL, ctrl = MPI_REQUEST_NULL;
    int64_t *answered = osp_calloc((size_t)p->W, sizeof *answered);
    int64_t *expected = osp_calloc((size_t)p->W, sizeof *expected);
    if (!answered || !expected) {
        osp_free(answered);
        osp_free(expected);
        return OSP_ENOMEM;
    }
    ps_header c;
    int stopping = 0;
    int rc = MPI_Irecv(p->in, (int)p->in_cap, MPI_BYTE, MPI_ANY_SOURCE, TAG_PUSH, p->comm, &push);
    if (!rc) rc = MPI_Irecv(&c, (int)sizeof c, MPI_BYTE, 0, TAG_CTRL, p->comm, &ctrl);
    while (rc == MPI_SUCCESS) {
        if (stopping) {
            int left = 0;
            for (int w = 0; w < p->W; w++) left |= answered[w] < expected[w];
            if (!left) break;
        }
        int got = 0, busy = 0;
        MPI_Status st;
        if ((rc = MPI_Test(&push, &got, &st))) break;
        if (got) {
            busy = 1;
            ps_header h;
            if (check_push(p, &st, &h)) {
                osp_free(answered);
                osp_free(expected);
                return OSP_EIO;
            }
            const int w = st.MPI_SOURCE - p->S;
            if (h.kind == MSG_GRAD) apply_push(p, &h);
            if ((rc = answer(p, w, MSG_WORK, h.step))) break;
            answered[w]++;
            if ((rc = MPI_Irecv(p->in, (int)p->in_cap, MPI_BYTE, MPI_ANY_SOURCE, TAG_PUSH, p->comm, &push))) break;
        }
        if (!stopping && (rc = MPI_Test(&ctrl, &got, MPI_STATUS_IGNORE))) break;
        if (!stopping && got) {
            busy = 1;
            if (c.kind == MSG_STOP) {
                p->lost = c.lost;
                stopping = 1;
                rc = MPI_Recv(expected, p->W, MPI_INT64_T, 0, TAG_CTRL, p->comm, MPI_STATUS_IGNORE);
                continue;
            }
            if ((rc = send_shard(p))) break;
            if ((rc = MPI_Irecv(&c, (int)sizeof c, MPI_BYTE, 0, TAG_CTRL, p->comm, &ctrl))) break;
        }
        if (!busy) pause_briefly();
    }
    if (rc == MPI_SUCCESS) {
        MPI_Cancel(&push);
        MPI_Request_free(&push);
        /* The live workers take their answers; a lost one never will. */
        for (int w = 0; w < p->W && rc == MPI_SUCCESS; w++) {
            if (p->out_req[w] == MPI_REQUEST_NULL) continue;
            if (expected[w] > 0) rc = MPI_Wait(&p->out_req[w], MPI_STATUS_IGNORE);
            else MPI_Request_free(&p->out_req[w]);
        }
    }
    osp_free(answered);
    osp_free(expected);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "serving a shard");
    return send_shard(p);
}

/* ---- server 0 ------------------------------------------------------------------- */

/* The other shards (weights and optimizer state) into server 0's copy;
 * kind MSG_STOP also ends their servers. */
static int gather_shards(ps *p, int kind) {
    osp_optim *o = p->r->opt;
    float *w = osp_graph_weights(p->r->net->graph, NULL);
    ps_header c = {.kind = kind, .lost = p->lost};
    for (int s = 1; s < p->S; s++) {
        const int64_t lo = p->bounds[s];
        const int n = (int)shard_len(p, s);
        int rc = MPI_Send(&c, (int)sizeof c, MPI_BYTE, s, TAG_CTRL, p->comm);
        if (!rc && kind == MSG_STOP) /* the pushes server s must answer before it stops */
            rc = MPI_Send(p->msgs, p->W, MPI_INT64_T, s, TAG_CTRL, p->comm);
        if (!rc) rc = MPI_Recv(w + lo, n, MPI_FLOAT, s, TAG_SHARD, p->comm, MPI_STATUS_IGNORE);
        if (!rc && o->m) rc = MPI_Recv(o->m + lo, n, MPI_FLOAT, s, TAG_SHARD, p->comm, MPI_STATUS_IGNORE);
        if (!rc && o->v) rc = MPI_Recv(o->v + lo, n, MPI_FLOAT, s, TAG_SHARD, p->comm, MPI_STATUS_IGNORE);
        if (rc) return mpi_fail(rc, "gathering the shards");
    }
    return OSP_OK;
}

/* The next barrier after step: the next checkpoint, the epoch's end, or
 * the stop. */
static int64_t next_barrier(const ps *p, int64_t step) {
    const osp__run *r = p->r;
    int64_t b = (step / r->steps_per_epoch + 1) * r->steps_per_epoch;
    const int64_t every = r->cfg->checkpoint_every;
    if (every > 0 && (step / every + 1) * every < b) b = (step / every + 1) * every;
    return b < p->stop ? b : p->stop;
}

static void progress(const ps *p, int64_t step, double epoch_start, double run_start, int64_t run_images,
                     osp_train_progress *out) {
    const osp__run *r = p->r;
    const int64_t done = p->applied;
    memset(out, 0, sizeof *out);
    out->epoch = (int)((step > 0 ? step - 1 : 0) / r->steps_per_epoch);
    out->epochs = r->cfg->epochs;
    out->step = step;
    out->total_steps = r->total_steps;
    out->steps_per_epoch = r->steps_per_epoch;
    out->step_in_epoch = step - (int64_t)out->epoch * r->steps_per_epoch;
    out->lr = osp_sched_lr(&r->sched, r->cfg->lr, step > 0 ? step - 1 : 0);
    out->epoch_loss = done ? p->loss_sum / (double)done : 0;
    out->step_loss = out->epoch_loss;
    out->epoch_accuracy = p->seen ? (double)p->right / (double)p->seen : 0;
    const double now = osp_now();
    out->images_per_s = (double)p->seen / fmax(now - epoch_start, 1e-9);
    const double rate = (double)(run_images + p->seen) / fmax(now - run_start, 1e-9);
    out->eta_s = rate > 0 ? (double)(r->total_steps - step) * r->cfg->batch / rate : 0;
    out->val_top1 = out->val_top5 = out->val_loss = NAN;
    out->ranks = r->ranks;
    out->param_servers = p->S;
    out->workers_lost = p->lost;
    out->staleness = done ? p->tau_sum / (double)done : 0;
    for (int s = 0; s < p->S; s++) out->comm_bytes_per_step += (double)grad_bytes(p, s);
}

/* A worker silent too long while it holds a batch is dead: its batch is
 * handed out again and its answer, if one is pending, dropped. */
static void drop_silent(ps *p) {
    const double now = osp_now(), limit = p->r->cfg->worker_timeout_s;
    for (int w = 0; w < p->W; w++) {
        peer *k = &p->peers[w];
        if (!k->alive || k->waiting || k->batch == -1 || now - k->since <= limit) continue;
        k->alive = 0;
        p->lost++;
        if (k->batch >= 0) {
            p->retry[p->n_retry++] = k->batch;
            p->outstanding--;
        }
        k->batch = -1;
        p->msgs[w] = 0;
        if (p->out_req[w] != MPI_REQUEST_NULL) MPI_Request_free(&p->out_req[w]);
        fprintf(stderr, "osprey train: worker rank %d silent for %.0f s%s: going on without it\n", p->S + w,
                now - k->since, k->batch == -2 ? " since the start" : "");
    }
}

static int64_t slowest_clock(const ps *p) {
    int64_t m = INT64_MAX;
    for (int w = 0; w < p->W; w++)
        if (p->peers[w].alive && p->peers[w].clock < m) m = p->peers[w].clock;
    return m;
}

/* Gives waiting workers their next batch, unless the barrier or the
 * staleness bound holds them. */
static int hand_out(ps *p) {
    const int K = p->r->cfg->max_staleness;
    const int64_t slowest = slowest_clock(p);
    for (int w = 0; w < p->W; w++) {
        peer *k = &p->peers[w];
        if (!k->alive || !k->waiting) continue;
        if (p->n_retry == 0 && p->next >= p->barrier) return OSP_OK;
        if (K >= 0 && k->clock > slowest + K) continue;
        const int64_t step = p->n_retry ? p->retry[--p->n_retry] : p->next++;
        k->waiting = 0;
        k->batch = step;
        k->since = osp_now();
        p->outstanding++;
        int rc = answer(p, w, MSG_WORK, step);
        if (rc) return rc;
    }
    return OSP_OK;
}

static int serve_and_schedule(ps *p, osp_dataset *val, int64_t start_step) {
    osp__run *r = p->r;
    const osp_train_config *cfg = r->cfg;
    p->next = start_step;
    p->barrier = next_barrier(p, start_step);
    double run_start = osp_now(), epoch_start = run_start, last_report = 0;
    int64_t run_images = 0;
    MPI_Request push = MPI_REQUEST_NULL;
    int rc = MPI_Irecv(p->in, (int)p->in_cap, MPI_BYTE, MPI_ANY_SOURCE, TAG_PUSH, p->comm, &push);
    if (rc) return mpi_fail(rc, "waiting for workers");
    for (int finished = 0; !finished;) {
        int got = 0;
        MPI_Status st;
        if ((rc = MPI_Test(&push, &got, &st))) return mpi_fail(rc, "waiting for workers");
        if (got) {
            ps_header h;
            if ((rc = check_push(p, &st, &h))) return rc;
            const int w = st.MPI_SOURCE - p->S;
            peer *k = &p->peers[w];
            if (k->alive && h.kind == MSG_HELLO) k->batch = -1;
            if (k->alive && h.kind == MSG_GRAD && h.step == k->batch) {
                p->tau_sum += (double)apply_push(p, &h);
                p->applied++;
                p->loss_sum += h.loss;
                p->seen += h.samples;
                p->right += h.correct;
                k->clock++;
                k->batch = -1;
                p->outstanding--;
            }
            k->waiting = k->alive; /* a worker once given up stays so */
            p->msgs[w] += k->alive;
            if ((rc = MPI_Irecv(p->in, (int)p->in_cap, MPI_BYTE, MPI_ANY_SOURCE, TAG_PUSH, p->comm, &push)))
                return mpi_fail(rc, "waiting for workers");
        } else {
            pause_briefly();
        }
        drop_silent(p);
        if (slowest_clock(p) == INT64_MAX)
            return osp_error(OSP_EIO, "parameter server: every worker is lost");
        if ((rc = hand_out(p))) return rc;
        int reached = p->next >= p->barrier && p->outstanding == 0 && p->n_retry == 0;
        for (int w = 0; w < p->W; w++) /* the end waits for every worker's hello */
            if (p->peers[w].alive && p->peers[w].batch == -2 && p->barrier == p->stop) reached = 0;
        if (!reached) {
            if (cfg->on_step && osp_now() - last_report > 0.1 && p->applied > 0) {
                last_report = osp_now();
                osp_train_progress pr;
                progress(p, p->next - p->outstanding, epoch_start, run_start, run_images, &pr);
                if (pr.step_in_epoch >= r->steps_per_epoch) pr.step_in_epoch = r->steps_per_epoch - 1;
                cfg->on_step(&pr, cfg->user);
            }
            continue;
        }
        /* Every batch before the barrier is in: checkpoint, validate. */
        const int64_t step = p->barrier;
        osp_train_progress pr;
        progress(p, step, epoch_start, run_start, run_images, &pr);
        pr.epoch_end = step % r->steps_per_epoch == 0;
        if ((cfg->checkpoint || (pr.epoch_end && val) || step == p->stop) &&
            (rc = gather_shards(p, step == p->stop ? MSG_STOP : MSG_GATHER)))
            return rc;
        if (cfg->checkpoint && (rc = osp__save_checkpoint(r, step))) return rc;
        if (pr.epoch_end && val) {
            osp__run solo = *r; /* validation on this rank alone */
            solo.ranks = 1;
            if ((rc = osp__validate(&solo, val, &pr))) return rc;
        }
        if (cfg->on_step && (pr.epoch_end || step == p->stop)) cfg->on_step(&pr, cfg->user);
        if (pr.epoch_end) {
            run_images += p->seen;
            p->loss_sum = p->tau_sum = 0;
            p->seen = p->right = p->applied = 0;
            epoch_start = osp_now();
            if (val) osp_dataset_report_skipped(val);
        }
        p->barrier = next_barrier(p, step);
        finished = step == p->stop;
    }
    /* Every live worker is waiting for its answer: the end. */
    for (int w = 0; w < p->W && !rc; w++)
        if (p->peers[w].alive) rc = answer(p, w, MSG_STOP, p->stop);
    for (int w = 0; w < p->W && !rc; w++)
        if (p->peers[w].alive && p->out_req[w] != MPI_REQUEST_NULL)
            rc = MPI_Wait(&p->out_req[w], MPI_STATUS_IGNORE);
    /* A worker given up that was only slow would wait for an answer
     * forever: it gets the stop too, and up to worker_timeout_s to take
     * it. One that does not (a dead one never does) keeps its buffer: MPI
     * may still read it, so it is never freed. With more than one server a
     * slow worker may still wait for another server's answer
     * (docs/distributed.md). */
    for (int w = 0; w < p->W && !rc; w++) {
        if (p->peers[w].alive) continue;
        if ((rc = answer(p, w, MSG_STOP, p->stop))) break;
        int taken = 0;
        for (const double t0 = osp_now(); !taken && osp_now() - t0 < p->r->cfg->worker_timeout_s;) {
            if ((rc = MPI_Test(&p->out_req[w], &taken, MPI_STATUS_IGNORE))) break;
            if (!taken) pause_briefly();
        }
        if (!taken && p->out_req[w] != MPI_REQUEST_NULL) {
            MPI_Request_free(&p->out_req[w]);
            p->out[w] = NULL;
        }
    }
    MPI_Cancel(&push);
    MPI_Request_free(&push);
    return rc == MPI_SUCCESS ? OSP_OK : mpi_fail(rc, "stopping the workers");
}

/* ---- workers ------------------------------------------------------------------- */

static int work(ps *p, osp_loader *loader) {
    osp__run *r = p->r;
    const osp_train_config *cfg = r->cfg;
    osp_graph *g = r->net->graph;
    osp_node *logits = osp_graph_node(g, r->net->logits_node);
    float *weights = osp_graph_weights(g, NULL), *grads = osp_graph_grads(g, NULL);
    int64_t *version = osp_calloc((size_t)p->S, sizeof *version);
    if (!version) return OSP_ENOMEM;
    ps_header h = {.kind = MSG_HELLO};
    int rc = OSP_OK, epoch = -1;
    for (int s = 0; s < p->S && !rc; s++)
        rc = MPI_Send(&h, (int)sizeof h, MPI_BYTE, s, TAG_PUSH, p->comm);
    while (rc == MPI_SUCCESS) {
        ps_header got;
        int64_t step = -1;
        int stop = 0;
        /* Every server answers every push; server 0, which says what next, last. */
        for (int s = p->S - 1; s >= 0 && !rc; s--) {
            MPI_Status st;
            rc = MPI_Recv(p->in, (int)p->in_cap, MPI_BYTE, s, TAG_PULL, p->comm, &st);
            if (rc) break;
            int count = 0;
            MPI_Get_count(&st, MPI_BYTE, &count);
            memcpy(&got, p->in, sizeof got);
            if ((size_t)count != HEAD + (size_t)shard_len(p, s) * sizeof(float) ||
                (got.kind != MSG_WORK && got.kind != MSG_STOP) || got.step < 0 ||
                (s == 0 && got.kind == MSG_WORK && got.step >= r->total_steps)) {
                osp_free(version);
                return osp_error(OSP_EIO, "worker %d: a malformed answer (%d bytes) from server %d", p->me,
                                 count, s);
            }
            version[s] = got.version;
            memcpy(weights + p->bounds[s], p->in + HEAD, (size_t)shard_len(p, s) * sizeof(float));
            if (s == 0) {
                step = got.step;
                stop = got.kind == MSG_STOP;
                p->lost = got.lost;
            }
        }
        if (rc || stop) break;
        const int e = (int)(step / r->steps_per_epoch);
        if (e != epoch) osp__epoch_order(r, epoch = e);
        const int64_t first = step % r->steps_per_epoch * cfg->batch, left = r->data->count - first;
        const int batch = (int)(left < cfg->batch ? left : cfg->batch);
        int loaded = 0;
        int err = osp_loader_start(loader, e, r->order + first, batch, 0);
        if (!err && r->targets) err = osp_loader_next_hot(loader, r->x, r->targets, &loaded);
        else if (!err) err = osp_loader_next(loader, r->x, r->labels, &loaded);
        if (!err && loaded != batch)
            err = osp_error(OSP_ESTATE, "the loader gave %d samples for a batch of %d", loaded, batch);
        double loss = 0;
        int64_t correct = 0;
        osp_exec ex = {.be = osp_graph_backend(r->net->graph), .mode = OSP_MODE_TRAIN, .batch = batch,
                       .seed = cfg->seed, .step = (uint64_t)step};
        if (!err && r->targets) err = osp__forward_loss_hot(r->net, r->x, r->targets, &ex, &loss, &correct);
        else if (!err) err = osp__forward_loss(r->net, r->x, r->labels, &ex, &loss, &correct);
        if (!err && !isfinite(loss))
            err = osp_error(OSP_ERANGE, "the loss diverged (%g) at step %lld: lower the learning rate",
                            loss, (long long)step);
        if (!err) err = osp_graph_backward_from(g, logits->id, &ex);
        if (err) {
            osp_free(version);
            return err;
        }
        for (int s = 0; s < p->S && !rc; s++) {
            const int64_t extra = s == 0 ? p->n_buffers : 0;
            ps_header out = {.kind = MSG_GRAD, .version = version[s], .step = step, .samples = batch,
                             .correct = correct, .loss = loss};
            memcpy(p->out[0], &out, sizeof out);
            unsigned char *at = p->out[0] + HEAD;
            for (int k = p->shard_cut[s]; k < p->shard_cut[s + 1]; k++) {
                const int64_t lo = p->cuts[k], n = p->cuts[k + 1] - lo;
                osp__compress(p->pack, grads + lo, p->resid ? p->resid + lo : NULL, n, at);
                at += osp__compress_size(p->pack, n);
            }
            if (extra) memcpy(at, osp_graph_buffers(g, NULL), (size_t)extra * sizeof(float));
            at += (size_t)extra * sizeof(float);
            rc = MPI_Send(p->out[0], (int)(at - p->out[0]), MPI_BYTE, s, TAG_PUSH, p->comm);
        }
    }
    osp_free(version);
    return rc == MPI_SUCCESS ? OSP_OK : mpi_fail(rc, "exchanging with the servers");
}

/* ---- the run ------------------------------------------------------------------- */

static void ps_free(ps *p) {
    if (p->out)
        for (int w = 0; w < (p->me < p->S ? p->W : 1); w++) osp_free(p->out[w]);
    osp_free(p->out);
    osp_free(p->out_req);
    osp_free(p->in);
    osp_free(p->bounds);
    osp_free(p->peers);
    osp_free(p->retry);
    osp_free(p->msgs);
    osp_free(p->cuts);
    osp_free(p->shard_cut);
    osp_free(p->resid);
    osp_free(p->unpacked);
}

int osp__train_param_server(osp__run *r, osp_dataset *val, int64_t start_step) {
    const osp_train_config *cfg = r->cfg;
    ps p = {.r = r, .S = cfg->param_servers, .W = r->ranks - cfg->param_servers, .me = r->rank,
            .pack = (osp__compress_kind)cfg->compress};
    if (p.W < 1)
        return osp_error(OSP_EINVAL, "%d parameter server%s need at least %d ranks (one more for a worker), "
                         "not %d", p.S, p.S == 1 ? "" : "s", p.S + 1, r->ranks);
    p.comm = osp__dist_comm(r->dist);
    osp_graph *g = r->net->graph;
    float *w = osp_graph_weights(g, &p.n_weights), *b = osp_graph_buffers(g, &p.n_buffers);
    p.stop = cfg->stop_after > 0 && cfg->stop_after < r->total_steps ? cfg->stop_after : r->total_steps;
    p.bounds = osp_calloc((size_t)p.S + 1, sizeof *p.bounds);
    if (!p.bounds) return OSP_ENOMEM;
    shard(g, p.S, p.n_weights, p.bounds);
    if (cut_chunks(&p, g)) {
        ps_free(&p);
        return OSP_ENOMEM;
    }
    /* A message holds a shard's floats (answers) or its packed gradient
     * (pushes: int8 adds 4 bytes a tensor, more than it saves on a
     * tensor of one float). */
    int64_t largest = 0;
    size_t widest = 0;
    for (int s = 0; s < p.S; s++) {
        const size_t floats = (size_t)shard_len(&p, s) * sizeof(float), packed = grad_bytes(&p, s);
        largest = shard_len(&p, s) > largest ? shard_len(&p, s) : largest;
        widest = floats > widest ? floats : widest;
        widest = packed > widest ? packed : widest;
    }
    /* Every rank starts from rank 0's weights, statistics and optimizer state. */
    int rc = osp__dist_bcast_floats(r->dist, w, p.n_weights);
    if (!rc) rc = osp__dist_bcast_floats(r->dist, b, p.n_buffers);
    if (!rc && r->opt->m) rc = osp__dist_bcast_floats(r->dist, r->opt->m, r->opt->n);
    if (!rc && r->opt->v) rc = osp__dist_bcast_floats(r->dist, r->opt->v, r->opt->n);
    if (!rc) rc = osp_dist_bcast(r->dist, &r->opt->t, sizeof r->opt->t);
    if (rc) {
        ps_free(&p);
        return rc;
    }
    if (HEAD + widest + (size_t)p.n_buffers * sizeof(float) > INT_MAX) {
        ps_free(&p);
        return osp_error(OSP_EINVAL, "a shard of %lld weights is too large for one message: give more "
                         "--param-servers", (long long)largest);
    }
    const int server = p.me < p.S;
    const int n_out = server ? p.W : 1;
    p.in_cap = HEAD + widest + (size_t)p.n_buffers * sizeof(float);
    p.in = osp_alloc(p.in_cap);
    p.out = osp_calloc((size_t)n_out, sizeof *p.out);
    p.out_req = osp_calloc((size_t)n_out, sizeof *p.out_req);
    if (!p.in || !p.out || !p.out_req) rc = OSP_ENOMEM;
    if (!rc && p.pack != OSP__COMPRESS_NONE) {
        if (!server && !(p.resid = osp_calloc((size_t)p.n_weights, sizeof *p.resid))) rc = OSP_ENOMEM;
        if (server && !(p.unpacked = osp_alloc((size_t)(largest ? largest : 1) * sizeof *p.unpacked)))
            rc = OSP_ENOMEM;
    }
    for (int k = 0; k < n_out && !rc; k++) {
        p.out_req[k] = MPI_REQUEST_NULL;
        if (!(p.out[k] = osp_alloc(p.in_cap))) rc = OSP_ENOMEM;
    }
    if (!rc && p.me == 0) {
        p.peers = osp_calloc((size_t)p.W, sizeof *p.peers);
        p.retry = osp_calloc((size_t)p.W, sizeof *p.retry);
        p.msgs = osp_calloc((size_t)p.W, sizeof *p.msgs);
        if (!p.peers || !p.retry || !p.msgs) rc = OSP_ENOMEM;
        for (int k = 0; k < p.W && !rc; k++) p.peers[k] = (peer){.alive = 1, .batch = -2, .since = osp_now()};
    }
    if (!rc && p.me == 0) {
        rc = serve_and_schedule(&p, val, start_step);
    } else if (!rc && server) {
        rc = serve_shard(&p);
    } else if (!rc) {
        const int64_t size = osp_shape_numel(&r->net->input);
        r->x = osp_alloc((size_t)cfg->batch * (size_t)size * sizeof(float));
        r->labels = osp_alloc((size_t)cfg->batch * sizeof(int32_t));
        r->order = osp_alloc((size_t)r->data->count * sizeof(int64_t));
        if (r->data->multi_label)
            r->targets = osp_alloc((size_t)cfg->batch * (size_t)r->net->n_classes * sizeof(float));
        if (!r->x || !r->labels || !r->order || (r->data->multi_label && !r->targets)) rc = OSP_ENOMEM;
        osp_loader *loader = NULL;
        osp_loader_config lc = osp__loader_config(r->net, r->data, cfg->batch, cfg->seed, 1);
        lc.multi_hot = r->targets != NULL;
        lc.workers = 0;
        lc.prefetch = 1;
        if (!rc) rc = osp_loader_new(r->data, &lc, &loader);
        if (!rc) rc = work(&p, loader);
        osp_loader_free(loader);
        osp_free(r->x);
        osp_free(r->labels);
        osp_free(r->order);
        osp_free(r->targets);
        r->x = NULL;
        r->labels = NULL;
        r->order = NULL;
        r->targets = NULL;
    }
    /* Open MPI's MPI_Finalize waits for every process, the dead one too. */
    if (!rc && p.lost) osp__dist_peer_lost(r->dist);
    ps_free(&p);
    return rc;
}

#else /* no MPI */

int osp__train_param_server(osp__run *r, osp_dataset *val, int64_t start_step) {
    return osp_error(OSP_ENOTSUP, "parameter servers need MPI: this build has none (install Open MPI, "
                     "libopenmpi-dev, and rebuild)");
}

#endif
