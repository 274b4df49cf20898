/* The trainer's state for one run, shared by the synchronous loop
 * (trainer.c) and Hogwild (hogwild.c). */
#ifndef OSPREY_TRAIN_IMPL_H
#define OSPREY_TRAIN_IMPL_H

#include "osprey/train.h"
#include "parallel.h"

/* Stream tag for osp_rng_derive: the data order of each epoch. */
#define OSP__RNG_STREAM_DATA 0x64617461u

typedef struct osp__run {
    osp_net *net;
    osp_dataset *data;
    const osp_train_config *cfg;
    osp_optim *opt;
    osp_sched sched;
    int64_t steps_per_epoch, total_steps;
    /* the job: rank of ranks; each step's global batch is cut into ranks
     * slices, this rank's being [slice_lo, slice_lo + slice) */
    osp_dist *dist;
    int rank, ranks;
    int slice, slice_lo;
    osp__reducer *reducer;
    /* --sync-bn, --model-parallel: the layers' hooks (split_on) and what
     * they share during a step (split.mp: the model-parallel layers) */
    int split_on;
    osp__split split;
    osp_exec_hooks hooks;
    float *x;
    int32_t *labels;
    float *targets;      /* multi-label: batch x outputs multi-hot; else NULL */
    int64_t *order;      /* the epoch's permutation of the dataset */
    int64_t *rank_order; /* this rank's samples of the epoch, step after step */
    osp_loader *loader;  /* decodes batches ahead on worker threads */
    osp_replicas *replicas; /* one process, threads as replicas; else NULL */
    /* Fine-tuning: the slices of the weights trained and their rates (the
     * backbone's and the head's); n_groups 0 = all of them at lr. */
    osp_param_group groups[2];
    int n_groups;
} osp__run;

/* One optimizer step of the run: every weight, or only its groups'. */
void osp__run_update(const osp__run *r, float *w, const float *g, float lr);
/* Resolves the config's freeze_until / lr_backbone / head_layer for the
 * network: freezes the layers (frozen_until gets the node, 0 for none)
 * and fills r->groups. A clear error for a layer that does not exist. */
int osp__finetune_setup(osp__run *r, int *frozen_until);


/* The mean loss of rows x cols logits (in be's memory) against the host's
 * labels (int32, rows) or multi-hot targets (float, rows x cols), through
 * be's softmax_xent or sigmoid_bce; dlogits and probs (be's memory, or
 * NULL) as those slots fill them. The labels go to be's memory and the
 * loss comes back from it where be has memory of its own. */
int osp__batch_loss(const osp_backend *be, int multi_hot, int rows, int cols,
                    const float *logits, const void *truth, float *probs, float *dlogits,
                    double *loss);

/* Training-mode forward on batch ex->batch of x, the loss of the logits
 * against labels (their gradient written to the logits' dout), and the
 * count of top-1 answers that were right. */
int osp__forward_loss(osp_net *net, const float *x, const int32_t *labels, const osp_exec *ex,
                      double *loss, int64_t *correct);
/* The same against multi-hot targets (batch x outputs) with sigmoid +
 * binary cross-entropy; correct counts samples whose every label is right
 * at 0.5 (a positive logit). */
int osp__forward_loss_hot(osp_net *net, const float *x, const float *targets, const osp_exec *ex,
                          double *loss, int64_t *correct);
/* The epoch's order of all samples (r->order). */
void osp__epoch_order(osp__run *r, int epoch);
/* Sets up r->split and r->hooks for --sync-bn and --model-parallel in a
 * job of several ranks (nothing otherwise); refuses what cannot run. */
int osp__split_start(osp__run *r);
/* Writes the checkpoint (rank 0 only; the others return at once). */
int osp__save_checkpoint(osp__run *r, int64_t step);
/* Validation on val, shared among the ranks; fills p's val fields. */
int osp__validate(osp__run *r, osp_dataset *val, osp_train_progress *p);

#endif
