/* osprey hash: learned binary hash codes over float vectors.
 *
 * A hash head maps a D-dimensional vector x to K bits, bit k = 1 when
 * (W x + b)_k > 0, i.e. sign(tanh(W x + b)) with -1 as 0. W (K x D) and b
 * (K) are trained from labelled vectors so that vectors of the same label
 * get nearby codes: the pairwise loss of Deep Supervised Hashing (Liu, Wang,
 * Shan and Chen, CVPR 2016) on the relaxed codes u = tanh(W x + b), with its
 * quantisation penalty pulling u toward +-1 (docs/hashing.md). Codes are
 * packed as the binary index takes them (osp_index_add_codes): bit k of a
 * code is bit k % 8 of byte k / 8, K / 8 bytes a vector.
 *
 * A hash is saved as a safetensors file (".osh") with tensors "hash.weight"
 * (F32 K x D) and "hash.bias" (F32 K) and metadata format = "osprey",
 * kind = "hash", version, bits, dim, layer (the layer the vectors came from,
 * may be empty), method and, when known, normalize ("1": the vectors were
 * L2-normalised). Loading treats the file as hostile. A hash can also be
 * stored in a model (osp_hash_to_net, osprey/model.h).
 */
#ifndef OSPREY_HASH_H
#define OSPREY_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "osprey/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct osp_hash osp_hash;
struct osp_net;

#define OSP_HASH_MIN_BITS 8
#define OSP_HASH_MAX_BITS 1024
/* Largest input dimension a hash takes (as an index does). */
#define OSP_HASH_MAX_DIM 65536

/* How to train. Fill with osp_hash_params_init, then change what you need. */
typedef struct osp_hash_params {
    int bits;          /* K: a multiple of 8 in 8..1024 */
    int epochs;        /* passes over the data (default 40) */
    int batch;         /* vectors a step; every pair in a batch counts (default 256) */
    float lr;          /* Adam step size (default 0.03) */
    float quant;       /* alpha: weight of the quantisation penalty (default 0.1) */
    float margin;      /* dissimilar pairs are pushed to squared distance >= margin * K
                          (default 1: m = K; DSH's paper takes 2K, which with tanh
                          outputs asks for Hamming K/2, no more than random codes) */
    float weight_decay; /* L2 on W (default 1e-4) */
    int balance;       /* 1: similar and dissimilar pairs weigh the same in total
                          (HashNet's weighting); 0: every pair alike, as DSH (default 1) */
    uint64_t seed;     /* initial W and batch order (default 1234) */
    const char *layer; /* recorded in the file: the layer the vectors came from (may be NULL) */
    int normalize;     /* recorded: 1 if the vectors were L2-normalised, 0 if not,
                          -1 not known (default) */
} osp_hash_params;

OSP_API void osp_hash_params_init(osp_hash_params *p, int bits);

/* What training did: the mean loss of the first and the last epoch, and
 * the loss of the initial and the final hash on the whole set (pairs of
 * a fixed sample of at most 2048 vectors). */
typedef struct osp_hash_report {
    double first_epoch_loss, last_epoch_loss;
    double initial_loss, final_loss;
    int epochs, steps;
} osp_hash_report;

/* Trains a hash on n vectors x (n x dim floats, finite) with integer labels
 * (n; equal labels = similar); needs n >= 2 and two different labels.
 * Deterministic for a seed and a thread count. The caller owns *out
 * (osp_hash_free). report may be NULL. */
OSP_API int osp_hash_train(const osp_hash_params *p, const float *x, const int32_t *labels,
                           int64_t n, int dim, osp_hash **out, osp_hash_report *report);

/* The DSH loss of h on (x, labels) with p's margin and quant (every pair of
 * the first min(n, 2048) vectors), for checks and reports. */
OSP_API int osp_hash_loss(const osp_hash *h, const osp_hash_params *p, const float *x,
                          const int32_t *labels, int64_t n, double *loss);

/* Packed codes of n vectors (n x dim floats, finite) into codes (n x bits/8
 * bytes): bit k of a code is bit k % 8 of byte k / 8, as the binary index
 * reads them. This is the call 'osprey embed --binary' makes. */
OSP_API int osp_hash_codes(const osp_hash *h, const float *x, int64_t n, uint8_t *codes);

OSP_API int osp_hash_bits(const osp_hash *h);
OSP_API int osp_hash_dim(const osp_hash *h);
/* The recorded source layer ("" if none); borrowed from h. */
OSP_API const char *osp_hash_layer(const osp_hash *h);
/* 1 or 0: whether the vectors it takes are L2-normalised; -1 if not recorded. */
OSP_API int osp_hash_normalize(const osp_hash *h);
/* W (bits x dim, row-major) and b (bits), borrowed from h. */
OSP_API const float *osp_hash_weight(const osp_hash *h);
OSP_API const float *osp_hash_bias(const osp_hash *h);

/* Writes h atomically (temporary file, fsync, rename) as safetensors. */
OSP_API int osp_hash_save(const osp_hash *h, const char *path);
/* Loads a hash file; anything malformed (not safetensors, kind not "hash",
 * bits or dim out of range or disagreeing with the tensors, a wrong dtype,
 * a value that is not finite) gives OSP_EFORMAT with the file's name. */
OSP_API int osp_hash_load(const char *path, osp_hash **out);
OSP_API int osp_hash_load_memory(const void *buf, size_t len, const char *name, osp_hash **out);
OSP_API void osp_hash_free(osp_hash *h);

/* A model's hash head (osp_net_set_hash, docs/hashing.md) as a hash: its
 * layer and normalisation with it. OSP_ENOENT, saying how to make one, if
 * the model has none; name (may be NULL) is the model's file for the
 * message. The caller owns *out. */
OSP_API int osp_hash_from_net(const struct osp_net *net, const char *name, osp_hash **out);
/* Stores h in net as its hash head (a copy; normalisation not recorded
 * counts as none). Refused if h names no layer, or the layer does not
 * give vectors of h's dimension. */
OSP_API int osp_hash_to_net(const osp_hash *h, struct osp_net *net);

#ifdef __cplusplus
}
#endif

#endif
