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

/* ---- a run's checkpoints ---------------------------------------------------
 * The trainer writes CHECKPOINT (and, with keep_checkpoints, numbered
 * copies CHECKPOINT-step<N> beside it), recording osp_checkpoint_crc of
 * the tensors as "crc32c" in state->config, so that a file damaged after
 * it was written is told apart from a valid one. */

/* CRC-32C of the weights, the buffers and the optimizer state (opt may be
 * NULL). */
OSP_API uint32_t osp_checkpoint_crc(const osp_net *net, const osp_optim *opt);
/* Checks a loaded checkpoint against the checksum of its tensors recorded
 * in state->config (checkpoints without one pass); name is for the
 * message. */
OSP_API int osp_checkpoint_verify(const osp_net *net, const osp_optim *opt,
                                  const osp_train_state *state, const char *name);
/* The name of the numbered copy of checkpoint at step, in out (cap bytes). */
OSP_API void osp_checkpoint_step_path(const char *checkpoint, int64_t step, char *out,
                                      size_t cap);
/* Removes all but the newest keep numbered copies of checkpoint. */
OSP_API void osp_checkpoint_prune(const char *checkpoint, int keep);
/* Newest valid checkpoint among CHECKPOINT and the CHECKPOINT-step<N> files
 * beside it: the one with the highest step that loads and passes
 * osp_checkpoint_verify. Sets *found (osp_free it) or, when there is none,
 * returns OSP_ENOENT without a message worth showing. Leftover temporary
 * files of interrupted writes are removed. */
OSP_API int osp_checkpoint_find_latest(const char *checkpoint, char **found, int64_t *step);

#ifdef __cplusplus
}
#endif

#endif
