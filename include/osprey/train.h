/* osprey train: the training loop, evaluation, checkpoints.
 *
 * A run is a pure function of (network spec, seed, data, settings, thread
 * count): epoch e visits the data in the order of a permutation derived from
 * (seed, e), and step s's dropout masks derive from (seed, s). So a run
 * resumed from a checkpoint at step s continues exactly as if it had never
 * stopped: the same losses, bit for bit. */
#ifndef OSPREY_TRAIN_H
#define OSPREY_TRAIN_H

#include <stdint.h>

#include "osprey/core.h"
#include "osprey/data.h"
#include "osprey/model.h"
#include "osprey/nn.h"
#include "osprey/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct osp_train_progress {
    int epoch;               /* 0-based epoch in progress */
    int epochs;
    int64_t step;            /* steps done so far in the run */
    int64_t total_steps;
    int64_t steps_per_epoch;
    int64_t step_in_epoch;   /* steps done in this epoch */
    float lr;
    double step_loss;        /* loss of the step just taken */
    double epoch_loss;       /* mean over the steps of this epoch so far */
    double epoch_accuracy;   /* training top-1 over this epoch so far */
    double images_per_s;     /* over this epoch so far */
    double eta_s;            /* to the end of the run */
    int epoch_end;           /* 1 on the last step of an epoch */
    double val_top1, val_top5, val_loss; /* at epoch ends, when validating; else NaN */
} osp_train_progress;

typedef struct osp_train_config {
    int epochs;
    int batch;
    float lr;
    osp_optim_config optim;
    osp_schedule schedule;     /* total_steps is filled in by the trainer */
    int warmup_epochs;         /* linear warm-up, in epochs (0 = none) */
    float step_epochs;         /* step schedule: decay every this many epochs */
    uint64_t seed;
    const char *checkpoint;    /* path written atomically; NULL = none */
    int64_t checkpoint_every;  /* steps between checkpoints; 0 = at each epoch end */
    int64_t stop_after;        /* stop (after checkpointing) at this step; 0 = run to the end */
    /* Called after every step (from the calling thread). */
    void (*on_step)(const osp_train_progress *p, void *user);
    void *user;
} osp_train_config;

/* Defaults: 10 epochs, batch 64, lr 0.01, SGD momentum 0.9, constant lr. */
OSP_API osp_train_config osp_train_defaults(void);

/* Trains net on data. opt and start_step continue a checkpointed run (opt
 * is then used and stays the caller's); NULL and 0 start a new one. val may
 * be NULL. Returns 0 or an error (message set). */
OSP_API int osp_train(osp_net *net, osp_dataset *data, osp_dataset *val,
                      const osp_train_config *cfg, osp_optimizer *opt, int64_t start_step);

typedef struct osp_eval_result {
    double top1, top5; /* fractions */
    double loss;       /* mean cross-entropy */
    int64_t count;
} osp_eval_result;

/* Accuracy and loss of net on every sample of data, in batches. */
OSP_API int osp_evaluate(osp_net *net, osp_dataset *data, int batch, osp_eval_result *out);

/* Checks that the dataset's samples fit the network's input and its labels
 * fit the outputs; a clear message otherwise. */
OSP_API int osp_check_data(const osp_net *net, const osp_dataset *data);

/* Fills x (batch x sample size) and labels with samples idx[0..batch) of
 * data, normalised for net; the samples are decoded in parallel. */
OSP_API int osp_load_batch(const osp_net *net, osp_dataset *data, const int64_t *idx, int batch,
                           float *x, int32_t *labels);

#ifdef __cplusplus
}
#endif

#endif
