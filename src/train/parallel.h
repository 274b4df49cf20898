/* What the trainer loop asks of parallel training: a gradient reducer,
 * driven by osp_graph_backward_each's hook, that exchanges
 * gradients between MPI ranks in buckets and applies the optimizer to each
 * bucket as it arrives. Only src/train/distributed.c knows about MPI; the
 * reducer is a no-op stub when the library is built without it. */
#ifndef OSPREY_TRAIN_PARALLEL_H
#define OSPREY_TRAIN_PARALLEL_H

#include "osprey/train.h"

/* ---- gradient exchange ---------------------------------------------------- */

typedef struct osp__reducer osp__reducer;

typedef struct osp__reducer_config {
    float bucket_mb; /* bucket size in MiB */
    int overlap;     /* start each bucket as soon as backward has produced it,
                        rather than all of them after backward */
    int compress;    /* osp_compress: packed buckets, allgather, error feedback */
    int reduce;      /* osp_reduce, for uncompressed buckets */
    int thread;      /* a communication thread drives the exchange */
    int lazy;        /* lazy update: finish leaves the buckets' updates to
                        osp__reducer_node_before in the next forward pass */
    /* One flag per osp_graph_param (NULL: none): weight parameters left out
     * of the exchange (model parallelism's blocks, which their owners
     * update themselves). */
    const unsigned char *skip;
} osp__reducer_config;

/* Buckets of about c->bucket_mb MiB over g's gradients, in reverse layer
 * order. */
int osp__reducer_new(osp_dist *d, osp_graph *g, const osp__reducer_config *c, osp__reducer **out);
void osp__reducer_free(osp__reducer *r);
int osp__reducer_bucket_count(const osp__reducer *r);
/* Bytes of gradients this rank sends per step (the collectives' own
 * traffic: 2 (N-1)/N of the gradients for the ring, N-1 packed buckets for
 * the allgather of compressed ones). */
double osp__reducer_bytes(const osp__reducer *r);

/* A step begins: this rank's gradients are scaled by share (its samples over
 * the global batch's) and summed over the ranks. */
void osp__reducer_begin(osp__reducer *r, float share);
/* Starts summing n (<= 8) doubles over the ranks alongside the gradients
 * (loss, correct answers); the sums are there after finish. */
void osp__reducer_stats(osp__reducer *r, double *v, int n);
/* The hook for osp_graph_backward_each (user = the reducer). */
void osp__reducer_node_done(void *reducer, int node);
/* Waits for every bucket, applying opt to each one's weights at lr as it
 * arrives (only the parts of it inside groups, each at lr times its scale,
 * when groups is not NULL). Adds the time blocked on the exchange to *wait_s and the time in
 * the optimizer to *update_s. */
int osp__reducer_finish(osp__reducer *r, osp_optim *opt, float *w, float lr,
                        const osp_param_group *groups, int n_groups, double *wait_s,
                        double *update_s);
/* Lazy update: finish waits only for the small sums and leaves every
 * bucket pending. The hook before node's forward (user = the reducer)
 * waits for and applies the pending buckets holding that node's weights;
 * settle applies whatever is left and ends the step's exchange: before
 * the next osp__reducer_begin, and before anything reads the weights as
 * a whole (checkpoints, validation, the weight check). Settle adds the
 * time blocked and updating, hooks' included, as finish does; it does
 * nothing when nothing is pending (r may be NULL). */
void osp__reducer_node_before(void *reducer, int node);
int osp__reducer_settle(osp__reducer *r, double *wait_s, double *update_s);

/* ---- layers split over the ranks (osp_exec_hooks) ---------------------------- */

typedef struct osp__mp osp__mp;

/* What the layers' hooks share during a step (osp_exec_hooks.user). Every
 * rank must have samples in every step: each hook is a collective. */
typedef struct osp__split {
    osp_dist *d;
    int batch;          /* the global batch of a full step */
    int64_t global;     /* samples in this step's global batch */
    float share;        /* this rank's samples over global (> 0) */
    osp__mp *mp;        /* NULL unless model parallel */
    osp__reducer *lazy; /* lazy update: the reducer forward waits on, else NULL */
    int rc;             /* the first failure of a hook (ops return nothing) */
    double bytes;       /* received by this rank (osp_rank_timing.comm_bytes) */
} osp__split;

/* Hooks for s: sync_bn fills the sum hook, s->mp the fc hooks (split.c). */
void osp__split_hooks(osp__split *s, int sync_bn, osp_exec_hooks *h);
/* Rank q's rows [lo, hi) of this step's global batch (as the trainer cuts it). */
void osp__split_rows(const osp__split *s, int q, int64_t *lo, int64_t *hi);
/* The before-node hook for lazy update: osp__reducer_node_before on
 * split->lazy. */
void osp__split_before_node(void *split, int node);
/* The sum hook (sync_bn.c). */
void osp__split_sum(void *split, double *v, int n, int grad);

/* Model parallelism (model_parallel.c): every [fc] layer of g but the
 * logits node, of one axis and at least as many outputs as ranks, split
 * by output rows of its weight over the ranks; batch is the global batch. */
int osp__mp_new(osp_dist *d, osp_graph *g, int logits_node, int batch, osp__mp **out);
void osp__mp_free(osp__mp *m);
/* The layers split (0 for m NULL). */
int osp__mp_layers(const osp__mp *m);
/* One flag per parameter of g, set for the split layers' (the reducer
 * leaves those out); owned by m; NULL for m NULL. */
const unsigned char *osp__mp_skip(const osp__mp *m);
/* The fc hooks (osp_exec_hooks; split = the osp__split): the layers of
 * split->mp across the ranks, the others declined. */
int osp__mp_fc_forward(void *split, const osp_node *n, int rows, int in, int out, const float *x,
                       const float *w, const float *bias, float *y);
int osp__mp_fc_backward(void *split, const osp_node *n, int rows, int in, int out, const float *x,
                        const float *w, const float *dy, float *dx, float *dw, float *db);
/* The optimizer on this rank's blocks, with the step's true gradients;
 * before osp__reducer_finish (same Adam step count). */
void osp__mp_update(osp__mp *m, osp_optim *opt, float *w, const float *g, float lr);
/* Every rank's blocks of the weights and optimizer state to every rank:
 * the whole net everywhere (checkpoints, validation, the weight check). */
int osp__mp_gather(osp__mp *m, osp_optim *opt, float *w);

/* ---- small collectives for the trainer --------------------------------------- */

/* Sum over the ranks, in place (blocking). */
int osp__dist_sum(osp_dist *d, double *v, int n);
/* Rank 0's floats to every rank. */
int osp__dist_bcast_floats(osp_dist *d, float *v, int64_t n);
/* Every rank's timing to rank 0's all[] (size() of them; ignored elsewhere). */
int osp__dist_gather_timing(osp_dist *d, const osp_rank_timing *mine, osp_rank_timing *all);

/* A process of the job died: leaving it must not wait for that one (Open
 * MPI's MPI_Finalize would). */
void osp__dist_peer_lost(osp_dist *d);

/* ---- parameter servers -------------------------------------------------------- */

struct osp__run;
/* cfg->param_servers ranks serve shards of the weights, the others train
 * asynchronously against them (param_server.c). */
int osp__train_param_server(struct osp__run *r, osp_dataset *val, int64_t start_step);

/* ---- Hogwild ------------------------------------------------------------------ */

int osp__train_hogwild(struct osp__run *r, osp_dataset *val, int64_t start_step);

#endif
