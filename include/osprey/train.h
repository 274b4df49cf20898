/* osprey train: the training loop and evaluation. The checkpoints it
 * writes and resumes from are osprey/model.h's.
 *
 * A run is a pure function of (network spec, seed, data, settings, thread
 * count): epoch e visits the data in the order of a permutation derived from
 * (seed, e), and step s's dropout masks derive from (seed, s). So a run
 * resumed from a checkpoint at step s continues exactly as if it had never
 * stopped: the same losses, bit for bit.
 *
 * Two ways to use more than one core or machine besides the kernels' own
 * threads (docs/distributed.md):
 *  - Hogwild (cfg.hogwild = T): T worker threads, each with its own
 *    minibatches, activations and gradients, update one shared set of
 *    weights without locks. Fast and racy by design: not reproducible.
 *  - Data parallelism over MPI (cfg.dist): each rank trains on its slice of
 *    every global batch (cfg.batch is the global batch) and the gradients
 *    are summed with allreduce, bucket by bucket, overlapping backward. The
 *    weights stay identical on every rank. Batch norm may take its
 *    statistics over the whole global batch (cfg.sync_bn), and wide fully
 *    connected layers may be split by outputs over the ranks instead
 *    (cfg.model_parallel). */
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

/* ---- MPI ------------------------------------------------------------------- */

/* A data-parallel job: one process per rank, started by mpirun (or srun). */
typedef struct osp_dist osp_dist;

/* 1 if the library was built with MPI. */
OSP_API int osp_dist_available(void);
/* 1 if the environment says this process is a rank of an MPI job of more
 * than one process (Open MPI, PMI or PMIx variables). */
OSP_API int osp_dist_launched(void);
/* Joins the job (initialising MPI unless the caller has): a clear error
 * without MPI. */
OSP_API int osp_dist_new(osp_dist **out);
/* Leaves the job (finalising MPI if osp_dist_new initialised it). */
OSP_API void osp_dist_free(osp_dist *d);
/* Rank and size; 0 and 1 for NULL (a single process). */
OSP_API int osp_dist_rank(const osp_dist *d);
OSP_API int osp_dist_size(const osp_dist *d);
/* Rank 0's len bytes of buf to every rank. */
OSP_API int osp_dist_bcast(osp_dist *d, void *buf, size_t len);
/* The smallest of every rank's value (all ranks agree whether all are ok). */
OSP_API int osp_dist_min(osp_dist *d, int value);
/* Ends the whole job now (a rank that cannot go on would leave the others
 * waiting for it forever). */
OSP_API void osp_dist_abort(osp_dist *d, int code);

/* Where one rank's time went during an epoch (seconds). */
typedef struct osp_rank_timing {
    int rank;
    int64_t steps;
    double load_s;      /* waiting for the loader's next batch */
    double compute_s;   /* forward and backward */
    double comm_wait_s; /* blocked on gradient exchange, after backward */
    double update_s;    /* optimizer */
    double total_s;     /* the epoch's steps, end to end */
    /* Bytes this rank received in the epoch's exchanges, as the algorithms
     * count them (ring allreduce of S bytes: 2 (N-1)/N x S; all-gather,
     * all-to-all, reduce-scatter: the other ranks' parts); divide by steps. */
    double comm_bytes;
} osp_rank_timing;

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
    /* Parallel runs. Losses, accuracies and images/s are the whole job's. */
    int ranks;               /* MPI ranks (1 without), or Hogwild workers */
    double comm_wait_s;      /* this rank, this epoch so far: blocked on gradient exchange */
    double comm_fraction;    /* comm_wait_s over this epoch's step time */
    double comm_bytes_per_step; /* this rank, this epoch: osp_rank_timing.comm_bytes per step */
    /* At epoch ends on rank 0 of an MPI job: each rank's timings (ranks of
     * them); else NULL. Borrowed for the call. */
    const osp_rank_timing *rank_timing;
    /* Parameter servers: how many, workers lost so far, and the mean
     * staleness of this epoch's gradients (updates between a worker's pull
     * and its push, its own included: 1 = none). 0 otherwise. */
    int param_servers;
    int workers_lost;
    double staleness;
} osp_train_progress;

/* The training loss. */
typedef enum osp_loss {
    OSP_LOSS_AUTO = 0,    /* bce for multi-label data, softmax otherwise */
    OSP_LOSS_SOFTMAX = 1, /* softmax cross-entropy: one label per sample */
    OSP_LOSS_BCE = 2,     /* sigmoid + binary cross-entropy per label (multi-label data) */
} osp_loss;

/* "auto", "softmax", "bce"; osp_loss_parse also takes "xent" for softmax
 * and returns 0, or OSP_EINVAL for another name. */
OSP_API const char *osp_loss_name(osp_loss loss);
OSP_API int osp_loss_parse(const char *name, osp_loss *loss);

/* Wire format of the gradients exchanged between ranks. */
typedef enum osp_compress {
    OSP_COMPRESS_NONE = 0, /* float32 */
    OSP_COMPRESS_FP16 = 1, /* IEEE binary16: half the bytes */
    OSP_COMPRESS_INT8 = 2, /* a scale per bucket and a byte per value: a quarter */
} osp_compress;

/* The collective that sums an uncompressed bucket. */
typedef enum osp_reduce {
    OSP_REDUCE_RING = 0,      /* MPI allreduce (the ring algorithm) */
    OSP_REDUCE_BUTTERFLY = 1, /* reduce-scatter, then all-gather: rank k sums slice k */
} osp_reduce;

/* How a synchronous run in one process uses its threads
 * (osp_threads_get()). */
typedef enum osp_threads_mode {
    OSP_THREADS_AUTO = 0,     /* osp_replicas_auto's choice: for now always layers */
    OSP_THREADS_LAYERS = 1,   /* every layer's kernels split over the threads */
    OSP_THREADS_REPLICAS = 2, /* one replica per thread, each on a slice of the batch */
} osp_threads_mode;

typedef struct osp_train_config {
    int epochs;
    int batch;
    float lr;
    osp_optim_config optim;
    osp_sched schedule;     /* total_steps is filled in by the trainer */
    int warmup_epochs;         /* linear warm-up, in epochs (0 = none) */
    float step_epochs;         /* step schedule: decay every this many epochs */
    uint64_t seed;
    const char *checkpoint;    /* path written atomically; NULL = none */
    int64_t checkpoint_every;  /* steps between checkpoints; 0 = at each epoch end */
    int64_t stop_after;        /* stop (after checkpointing) at this step; 0 = run to the end */
    int keep_checkpoints;      /* also keep the newest K as CHECKPOINT-step<N> (0 = only CHECKPOINT) */
    /* Synchronous training in one process (no Hogwild, no MPI): an
     * osp_threads_mode. Replicas give the same numbers as layers, up to
     * float32 rounding (docs/training.md). */
    int threads_mode;
    /* Hogwild: this many lock-free worker threads (0 or 1 = synchronous).
     * Checkpoints are written at epoch ends and at stop_after only. */
    int hogwild;
    /* Data parallelism: the job (borrowed), or NULL for one process. batch
     * is the global batch; rank r trains on its slice of each. Rank 0
     * writes the checkpoints and reports progress. */
    osp_dist *dist;
    int overlap;               /* 1 (default): exchange buckets during backward; 0: after it */
    float bucket_mb;           /* gradient bucket size in MiB (default 1) */
    int sync_bn;               /* batch norm normalises with the statistics of the whole
                                  global batch, summed over the ranks in each layer */
    int model_parallel;        /* [fc] layers but the last split by outputs over the ranks;
                                  the rest data-parallel (docs/distributed.md) */
    /* How the ranks' gradients are summed (docs/distributed.md). compress:
     * an osp_compress; each rank sends its bucket packed, keeping what the
     * packing lost for its next step (error feedback), and every rank sums
     * the packed buckets of all (an allgather). reduce: an osp_reduce, for
     * uncompressed buckets. comm_thread: 1 (default) moves the exchange
     * along in a thread of its own during compute; 0 only when the
     * training thread calls into MPI, between layers. */
    int compress;
    int reduce;
    int comm_thread;
    /* Lazy update (docs/distributed.md): a step ends once its loss is
     * summed; each bucket's optimizer update waits until the next forward
     * pass reaches the first layer with a weight in it. The same
     * arithmetic as 0 (the default: every bucket at the end of the step). */
    int lazy_update;
    /* Asynchronous parameter servers (docs/distributed.md): ranks
     * 0..param_servers-1 hold shards of the weights and the optimizer
     * state, the other ranks train against them without waiting for each
     * other; batch is then one worker's batch (each update's). 0 = off. */
    int param_servers;
    int max_staleness;         /* a worker more than this many updates ahead of the slowest
                                  live worker waits; -1 = never */
    float worker_timeout_s;    /* a worker silent this long with a batch is taken for dead */
    /* Fine-tuning (docs/finetune.md). freeze_until names a layer: it and
     * every earlier layer keep their weights (no gradient, no optimizer
     * state, batch norm in inference mode with its running statistics
     * fixed). lr_backbone > 0 trains the layers before the head at this
     * rate (following the schedule as lr does) and the head at lr; the
     * head is head_layer, or NULL for the classifier that produces the
     * logits (osp_net_find_head). A graph frozen by the caller
     * (osp_graph_freeze) with freeze_until NULL keeps its frozen layers
     * fixed the same way. All unset: every parameter at lr, bit for bit as
     * before. */
    const char *freeze_until;
    const char *head_layer;
    float lr_backbone;
    /* The loss (osp_loss). Multi-label data (data->multi_label) trains with
     * OSP_LOSS_BCE against each sample's multi-hot vector, marks net
     * multi-label and, with val, stores per-label thresholds chosen on val
     * at the end (osp_multilabel_thresholds); softmax on multi-label data
     * and bce on single-label data are refused before training starts. For
     * now multi-label training runs synchronously in one process (no
     * Hogwild, no MPI). The accuracy reported is the fraction of samples
     * whose every label is right at threshold 0.5. */
    int loss;
    /* Called after every step (from the calling thread). */
    void (*on_step)(const osp_train_progress *p, void *user);
    void *user;
} osp_train_config;

/* Defaults: 10 epochs, batch 64, lr 0.01, SGD momentum 0.9, constant lr,
 * overlapped gradient exchange in 1 MiB buckets (ring allreduce, float32,
 * a communication thread). */
OSP_API osp_train_config osp_train_defaults(void);

/* Trains net on data. opt and start_step continue a checkpointed run (opt
 * is then used and stays the caller's); NULL and 0 start a new one. val may
 * be NULL. Returns 0 or an error (message set). */
OSP_API int osp_train(osp_net *net, osp_dataset *data, osp_dataset *val,
                      const osp_train_config *cfg, osp_optim *opt, int64_t start_step);

typedef struct osp_step_result {
    double loss;     /* mean cross-entropy over the batch, before the update */
    int64_t correct; /* samples whose top-1 answer was right, before the update */
} osp_step_result;

/* One training step on a batch in memory, for callers with their own data
 * and loop: forward in training mode on x (batch x input size floats,
 * normalised as osp_net_image_input does), softmax cross-entropy against
 * labels (each in [0, outputs)), backward, and one update of the weights
 * by opt at learning rate lr (opt from osp_optim_new for the n that
 * osp_graph_weights(net->graph, &n) gives: the flat array, padding
 * included). step and seed draw the dropout masks
 * (the trainer passes the step count and the run's seed). out may be NULL.
 * Fails without updating on a non-finite loss. */
OSP_API int osp_train_step(osp_net *net, osp_optim *opt, const float *x, const int32_t *labels,
                           int batch, float lr, int64_t step, uint64_t seed, osp_step_result *out);

/* ---- replicas: data parallelism across threads ------------------------------ */

/* n replicas of net for synchronous training on n threads: each step's
 * batch is cut into n slices, replica k runs forward and backward on slice
 * k on one thread, and the gradients are summed, as n_k / n times each, in
 * net's own gradient buffer (osp_graph_grads), for the caller's optimizer
 * step. Batch norm normalises with the statistics of the whole batch, so
 * the gradients are those of one graph on the whole batch up to float32
 * rounding. Replica 0 is net itself (borrowed: it must outlive the
 * replicas); the others read its weights. Needs net->spec_text. */
typedef struct osp_replicas osp_replicas;
OSP_API int osp_replicas_new(osp_net *net, int n, osp_replicas **out);
OSP_API void osp_replicas_free(osp_replicas *p);
OSP_API int osp_replicas_count(const osp_replicas *p);

typedef struct osp_replicas_batch {
    const float *x;         /* batch x input size, normalised */
    const int32_t *labels;  /* batch labels (softmax cross-entropy), or NULL */
    const float *targets;   /* batch x outputs multi-hot (binary cross-entropy), or NULL */
    int batch;
    uint64_t seed, step;    /* dropout masks, as osp_train_step */
} osp_replicas_batch;

/* Forward, loss and backward of one batch over the replicas (min(n, batch)
 * of them take part); *loss is the mean loss over the batch, *correct as in
 * osp_step_result. The weights are not changed. */
OSP_API int osp_replicas_step(osp_replicas *p, const osp_replicas_batch *b, double *loss,
                              int64_t *correct);
/* The replicas OSP_THREADS_AUTO uses for net at batch on threads threads
 * (1 = layers). For now 1 everywhere: the layers took less CPU per image
 * on every network measured (docs/training.md). */
OSP_API int osp_replicas_auto(const osp_net *net, int batch, int threads);
/* "auto", "layers", "replicas"; parse returns 0 or OSP_EINVAL. */
OSP_API const char *osp_threads_mode_name(int mode);
OSP_API int osp_threads_mode_parse(const char *name, int *mode);
/* The replicas a run uses for mode (an osp_threads_mode): 1 = none. */
OSP_API int osp_replicas_for(const osp_net *net, int batch, int threads, int mode);

/* The step at which a run with batch new_batch continues a run with batch
 * old_batch that had taken step steps on count samples: the same epoch,
 * and the first batch of it that the old run had not finished. */
OSP_API int64_t osp_train_convert_step(int64_t count, int old_batch, int new_batch, int64_t step);

/* A synthetic dataset of count samples of the given shape, numbered from
 * first (another first gives other samples of the same classes: a
 * validation set): sample i is its class's fixed random pattern (class
 * i mod n_classes) faintly showing through noise of its own, so a network
 * can learn it. Made on demand (no memory), the same for every reader; for
 * speed measurements and tests without data. */
OSP_API int osp_dataset_synthetic(const osp_shape *shape, int n_classes, int64_t first,
                                  int64_t count, uint64_t seed, osp_dataset **out);

typedef struct osp_eval_result {
    double top1, top5; /* fractions */
    double loss;       /* mean cross-entropy */
    int64_t count;
} osp_eval_result;

/* Accuracy and loss of net on every sample of data, in batches. On
 * multi-label data: loss is the mean binary cross-entropy, top1 the
 * fraction of samples whose every label is right at the model's
 * thresholds, top5 NaN (osp_train_evaluate_multilabel says more). */
OSP_API int osp_train_evaluate(osp_net *net, osp_dataset *data, int batch, osp_eval_result *out);

/* ---- multi-label evaluation ------------------------------------------------ */

/* A multi-label model on multi-label data (docs/multilabel.md). Per label
 * c (n_labels = the network's outputs): */
typedef struct osp_multilabel_eval {
    int n_labels;
    int64_t count;          /* samples evaluated */
    double loss;            /* mean binary cross-entropy */
    double map;             /* mean of ap over the labels with positives */
    double micro_precision, micro_recall, micro_f1; /* over all decisions */
    double macro_f1;        /* mean of f1 over the labels with positives */
    double subset_accuracy; /* samples whose every label is right */
    /* n_labels each: */
    double *ap;             /* average precision (NaN: no positive sample) */
    double *precision, *recall, *f1; /* at threshold[c] (0 where undefined) */
    int64_t *positives;     /* samples that have the label */
    float *threshold;       /* the model's thresholds used (0.5 without) */
    float *best_threshold;  /* the F1-maximising threshold on this data */
    double *best_f1;        /* F1 at best_threshold */
} osp_multilabel_eval;

/* Evaluates net on data (both multi-label) in batches; *out is freed with
 * osp_multilabel_eval_free. */
OSP_API int osp_train_evaluate_multilabel(osp_net *net, osp_dataset *data, int batch,
                                          osp_multilabel_eval **out);
OSP_API void osp_multilabel_eval_free(osp_multilabel_eval *e);
/* Chooses each label's F1-maximising threshold on data (validation data)
 * and stores them in net (osp_net_set_thresholds); labels without a
 * positive sample keep 0.5. ev, if not NULL, receives the evaluation. */
OSP_API int osp_multilabel_thresholds(osp_net *net, osp_dataset *data, int batch,
                                      osp_multilabel_eval **ev);

/* Checks that the dataset's samples fit the network's input and its labels
 * fit the outputs; a clear message otherwise. */
OSP_API int osp_train_check_data(const osp_net *net, const osp_dataset *data);

/* Fills x (batch x sample size) and labels with samples idx[0..batch) of
 * data, normalised for net; the samples are decoded in parallel. */
OSP_API int osp_train_load_batch(const osp_net *net, osp_dataset *data, const int64_t *idx,
                                 int batch, float *x, int32_t *labels);

/* ---- configuration advisor (docs/advise.md) ------------------------------- */

/* One configuration and what it measured (below). */
typedef struct osp_advise_point osp_advise_point;

/* What osp_advise measures and within which limits. */
typedef struct osp_advise_config {
    int64_t memory_budget; /* bytes the training may plan to use on this machine (one
                              process, or all of a node's ranks); 0 = no limit */
    double seconds;        /* time the measurements aim to take in all */
    int min_batch, max_batch; /* the powers of two between them are tried (max_batch
                                 also stops at the data's sample count) */
    int threads;           /* only this thread count; 0 = 1..max_threads */
    int max_threads;       /* 0 = the cores online */
    osp_optim_kind optim;  /* the optimizer stepped, and whose state is counted */
    double tolerance;      /* a smaller batch within this fraction of the best
                              images/s is preferred (and fewer ranks, likewise) */
    uint64_t seed;         /* the weights of the network measured */
    /* Called with each point as soon as it is measured (borrowed for the
     * call), from the calling thread; NULL = not called. */
    void (*on_point)(const osp_advise_point *p, void *user);
    void *user;
} osp_advise_config;

/* Defaults: no memory limit, 10 s, batches 8..1024, threads 1..cores, SGD,
 * tolerance 0.05, seed 1, no callback. */
OSP_API osp_advise_config osp_advise_defaults(void);

/* One configuration and what it measured. */
struct osp_advise_point {
    int batch, threads;
    int steps;             /* timed steps (the warm-up step is not timed) */
    double step_s;         /* median seconds of a training step */
    double images_per_s;   /* batch / step_s */
    /* Planned bytes of a training process at this batch: activations,
     * their gradients and what backward saves (osp_graph_train_bytes),
     * weights, gradients, buffers, optimizer state, and three input
     * batches (the one trained on and the loader's two decoded ahead). */
    int64_t planned_bytes;
    /* Growth of the process's peak resident memory while this point ran
     * (its network, optimizer, batch and steps); -1 where the system
     * cannot say. */
    int64_t rss_bytes;
};

/* The recommendation, and the measurements it came from. */
typedef struct osp_advice {
    int cores;               /* the thread counts tried were 1..cores */
    int batch, threads;      /* the recommendation for one process */
    double images_per_s;     /* measured at batch and threads */
    int64_t planned_bytes;   /* at batch */
    int best_batch;          /* the batch of the highest images/s that fits */
    double best_images_per_s;
    /* mpirun on one node of `cores` cores: ranks x rank_threads. A
     * prediction for ranks > 1: ranks times one process's measured
     * images/s at rank_threads threads, gradient exchange not counted. */
    int ranks, rank_threads;
    double ranks_images_per_s;
    char reason[320];        /* why, in a sentence or two */
    int n_points;
    osp_advise_point *points; /* n_points, in the order measured; owned */
} osp_advice;

/* The bytes a training process plans to use at batch (as
 * osp_advise_point.planned_bytes says) for net with optimizer optim. */
OSP_API int osp_advise_planned_bytes(const osp_net *net, int batch, osp_optim_kind optim,
                                     int64_t *out);

/* The recommendation from a table of measurements, a pure function (no
 * timing): among the measured points whose planned bytes fit budget (0 =
 * any), each batch's best images/s over its thread counts; the smallest
 * batch within tolerance of the best of them; the thread count fastest at
 * that batch; and for mpirun, the split of cores into ranks x threads per
 * rank whose predicted images/s is highest (fewer ranks within tolerance;
 * ranks x planned bytes must fit budget). Fills out except points and
 * n_points. OSP_ERANGE (message set) if no measured point fits. */
OSP_API int osp_advise_recommend(const osp_advise_point *points, int n, int cores,
                                 int64_t budget, double tolerance, osp_advice *out);

/* Measures training steps of net's spec (a network of its own, built from
 * net->spec_text: net is not changed) on samples of data at candidate
 * batch sizes and thread counts within cfg's limits and time, and
 * recommends a configuration (osp_advise_recommend). Batches grow at all
 * cores until images/s stops improving or the next batch's planned bytes
 * exceed the budget; then thread counts grow from 1 at the chosen batch.
 * Refuses, before any measurement, data that does not fit the network and
 * a budget that not even min_batch fits. The thread count is left as it
 * was. *out is freed with osp_advice_free. */
OSP_API int osp_advise(const osp_net *net, osp_dataset *data, const osp_advise_config *cfg,
                       osp_advice **out);
OSP_API void osp_advice_free(osp_advice *a);

#ifdef __cplusplus
}
#endif

#endif
