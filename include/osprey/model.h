/* osprey models and checkpoints: safetensors files that hold everything
 * needed to run (or continue training) a network.
 *
 * Tensors: every parameter and buffer under its graph name
 * ("conv1.weight", "bn1.running_mean"); checkpoints add the optimizer's
 * moments as "optim.m" and "optim.v" (flat, in the graph's weight layout).
 * __metadata__ (all strings): format = "osprey", version, kind = "model" or
 * "checkpoint", spec (the network spec text), input ("1x28x28"), mean and
 * std (JSON arrays), labels (JSON array of strings), and for checkpoints
 * step, seed, optimizer (JSON) and config (the trainer's settings, JSON).
 * Optional: multi_label and thresholds (docs/multilabel.md); a learned
 * hash head as tensors "hash.weight" and "hash.bias" with the metadata
 * hash, a JSON object {bits, dim, layer, normalize, method} (osp_net_hash,
 * docs/hashing.md). */
#ifndef OSPREY_MODEL_H
#define OSPREY_MODEL_H

#include <stdint.h>

#include "osprey/core.h"
#include "osprey/nn.h"
#include "osprey/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define OSP_MODEL_FORMAT_VERSION 1

/* Where a training run stands: with the weights, the optimizer state and
 * the seed, enough to continue the run bit for bit. */
typedef struct osp_train_state {
    int64_t step;   /* optimizer steps taken */
    uint64_t seed;  /* data order, dropout and initialisation derive from it */
    char *config;   /* the trainer's settings as JSON (owned), or NULL */
} osp_train_state;

/* Writes the network's weights and metadata, atomically. */
OSP_API int osp_model_save(const osp_net *net, const char *path);
/* Also the optimizer state and the train state. */
OSP_API int osp_checkpoint_save(const osp_net *net, const osp_optim *opt,
                                const osp_train_state *state, const char *path);
/* Loads a model or a checkpoint's network. Every parameter must be present
 * with its shape; anything malformed is refused with a message. */
OSP_API int osp_model_load(const char *path, osp_net **out);
/* Loads a checkpoint: the network, a new optimizer holding the saved state,
 * and the train state (free state->config with osp_free). */
OSP_API int osp_checkpoint_load(const char *path, osp_net **net, osp_optim **opt,
                                osp_train_state *state);
/* The same from memory (for fuzzing); opt and state may be NULL for a model. */
OSP_API int osp_checkpoint_parse(const void *buf, size_t len, const char *name, osp_net **net,
                                 osp_optim **opt, osp_train_state *state);

#ifdef __cplusplus
}
#endif

#endif
