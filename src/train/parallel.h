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
/* Starts averaging n floats (batch-norm running statistics) over the ranks;
 * done by finish. */
void osp__reducer_average(osp__reducer *r, float *v, int64_t n);
/* The hook for osp_graph_backward_each (user = the reducer). */
void osp__reducer_node_done(void *reducer, int node);
/* Waits for every bucket, applying opt to each one's weights at lr as it
 * arrives (only the parts of it inside groups, each at lr times its scale,
 * when groups is not NULL). Adds the time blocked on the exchange to *wait_s and the time in
 * the optimizer to *update_s. */
int osp__reducer_finish(osp__reducer *r, osp_optim *opt, float *w, float lr,
                        const osp_param_group *groups, int n_groups, double *wait_s,
                        double *update_s);

/* ---- small collectives for the trainer --------------------------------------- */

/* Sum over the ranks, in place (blocking). */
int osp__dist_sum(osp_dist *d, double *v, int n);
/* Rank 0's floats to every rank. */
int osp__dist_bcast_floats(osp_dist *d, float *v, int64_t n);
/* Every rank's timing to rank 0's all[] (size() of them; ignored elsewhere). */
int osp__dist_gather_timing(osp_dist *d, const osp_rank_timing *mine, osp_rank_timing *all);

/* ---- Hogwild ------------------------------------------------------------------ */

struct osp__run;
int osp__train_hogwild(struct osp__run *r, osp_dataset *val, int64_t start_step);

#endif
