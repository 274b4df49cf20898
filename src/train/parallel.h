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

/* Buckets of about bucket_mb MiB over g's gradients, in reverse layer order.
 * overlap: start each bucket's allreduce as soon as backward has produced
 * it; otherwise all of them after backward. */
int osp__reducer_new(osp_dist *d, osp_graph *g, float bucket_mb, int overlap, osp__reducer **out);
void osp__reducer_free(osp__reducer *r);
int osp__reducer_bucket_count(const osp__reducer *r);

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

/* The job's communicator (an MPI_Comm *), for param_server.c. */
void *osp__dist_comm(osp_dist *d);
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
