/* osprey nn: network specs, the ops that build graphs from them, and
 * networks (a graph plus what is needed to feed it: input size,
 * normalisation, label names).
 *
 * A spec is a text file of sections, one per layer, in the spirit of
 * Darknet's .cfg (docs/netspec.md):
 *
 *     [net]
 *     input = 1x28x28
 *     mean = 0.1307
 *     std = 0.3081
 *
 *     [conv]
 *     name = conv1
 *     filters = 20
 *     size = 5
 *
 * Each layer takes the previous layer as input unless `input = a, b` names
 * others. */
#ifndef OSPREY_NN_H
#define OSPREY_NN_H

#include <stddef.h>
#include <stdint.h>

#include "osprey/core.h"
#include "osprey/graph.h"
#include "osprey/image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- specs ------------------------------------------------------------- */

typedef struct osp_spec_kv {
    char *key;
    char *value;
    int line;
    int used; /* set when read; unread keys are reported as unknown */
} osp_spec_kv;

typedef struct osp_spec_section {
    char *type;       /* "conv" */
    const char *file; /* for messages: "nets/lenet.cfg" */
    int line;         /* of the [type] header */
    int n_kv;
    osp_spec_kv *kv;
} osp_spec_section;

typedef struct osp_spec {
    char *file;
    int n_sections;
    osp_spec_section *sections;
} osp_spec;

/* Parses spec text (len bytes, need not be terminated); name is used in
 * messages ("name:line: ..."). */
OSP_API int osp_spec_parse(const char *text, size_t len, const char *name, osp_spec **out);
OSP_API int osp_spec_load(const char *path, osp_spec **out);
OSP_API void osp_spec_free(osp_spec *sp);

/* Key accessors for op parse functions. Each marks the key used; a missing
 * key gives def; a bad value gives OSP_EFORMAT with "file:line: ..." set.
 * Integers and floats must lie in [min, max]. */
OSP_API int osp_spec_int(osp_spec_section *s, const char *key, int def, int min, int max, int *out);
OSP_API int osp_spec_float(osp_spec_section *s, const char *key, float def, float min, float max,
                           float *out);
/* A finite float, or `inf` / `+inf` / `-inf` (any case, also `infinity`). */
OSP_API int osp_spec_float_inf(osp_spec_section *s, const char *key, float def, float *out);
/* A list "3, 3" or "3x3" of up to max_n integers in [min, max]; *n gets the
 * count (0 if the key is missing: out is left untouched). */
OSP_API int osp_spec_ints(osp_spec_section *s, const char *key, int *out, int max_n, int *n,
                          int min, int max);
OSP_API int osp_spec_floats(osp_spec_section *s, const char *key, float *out, int max_n, int *n);
/* The raw value, or def if missing. */
OSP_API const char *osp_spec_str(osp_spec_section *s, const char *key, const char *def);
/* A key that must be one of choices (NULL-terminated); *out gets its index. */
OSP_API int osp_spec_choice(osp_spec_section *s, const char *key, const char *const *choices,
                            int def, int *out);
/* OSP_EFORMAT with "file:line: message" for the section (or its key). */
OSP_API int osp_spec_error(const osp_spec_section *s, const char *key, const char *fmt, ...)
    OSP_PRINTF(3, 4);

/* An op as a spec section: parse reads the section's keys into attrs (the
 * op's own struct). Registered in src/nn/registry.c. */
typedef struct osp_layer_type {
    const osp_op *op;
    int (*parse)(osp_spec_section *s, void **attrs);
} osp_layer_type;

OSP_API const osp_layer_type *osp_layer_type_find(const char *name);
/* NULL-terminated list of every layer type (for docs and --help). */
OSP_API const osp_layer_type *const *osp_layer_types(void);

/* ---- networks ------------------------------------------------------------ */

#define OSP_MAX_CHANNELS 4
/* Axes of a network's per-sample input: up to 6 with the batch. */
#define OSP_NET_MAX_RANK 5

typedef struct osp_net {
    osp_graph *graph;
    char *spec_text;  /* the spec it was built from (saved with the model) */
    osp_shape input;  /* per sample: C x H x W images, D vectors, T x D ... */
    float mean[OSP_MAX_CHANNELS], std[OSP_MAX_CHANNELS]; /* per input channel */
    int n_classes;    /* output size */
    char **labels;    /* n_classes names, or NULL */
    int logits_node;  /* the node the loss reads: the output, or the input of
                         a final [softmax] */
    /* Multi-label models (docs/multilabel.md): each output is its label's
     * own probability (a sigmoid of its logit, trained with binary
     * cross-entropy), not one softmax. Saved in the model's metadata as
     * "multi_label": "1"; a model without it is single-label. */
    int multi_label;
    /* Multi-label models: per-label decision thresholds on the sigmoid
     * scores (n_classes floats, chosen on validation data by 'osprey eval'
     * or the trainer; metadata "thresholds"), or NULL: 0.5 each. */
    float *thresholds;
    /* Int8 models (docs/quantization.md): how the network was quantised,
     * as the JSON saved in the model's metadata "quantization", or NULL
     * for a float32 model. Set by osp_net_calibrate_end or
     * osp_net_set_quantization. */
    char *quantization;
    /* A learned binary hash head stored with the model (docs/hashing.md),
     * or NULL. Owned; set with osp_net_set_hash. */
    struct osp_net_hash *hash;
} osp_net;

/* A hash head over one of the network's layers: a code's bit k is 1 when
 * (W v + b)_k > 0, v being the layer's embedding (osp_embedding_from_layer:
 * averaged over height and width, L2-normalised if normalize). Saved in the
 * model as tensors "hash.weight" and "hash.bias" and the metadata "hash". */
typedef struct osp_net_hash {
    int bits;        /* K: a multiple of 8 in 8..1024 */
    int dim;         /* D: the layer's channels */
    char *layer;     /* the layer it reads */
    int normalize;   /* 1: the vector is L2-normalised before the head */
    char method[16]; /* how it was trained: "dsh" */
    float *weight;   /* K x D, row-major */
    float *bias;     /* K */
} osp_net_hash;

/* Builds a network from spec text; parameters initialised from seed. */
OSP_API int osp_net_from_spec(const char *text, size_t len, const char *name, uint64_t seed,
                              osp_net **out);
OSP_API int osp_net_load_spec(const char *path, uint64_t seed, osp_net **out);
OSP_API void osp_net_free(osp_net *net);
/* A copy of net for inputs of height x width (the same channels): the same
 * weights, buffers, labels and normalisation. Refused (OSP_ESHAPE, naming
 * the layer) for a network whose parameters depend on the input size, as
 * a fully connected layer over a flattened map does. For averaging a
 * model's answers over several input scales. */
OSP_API int osp_net_with_input(const osp_net *net, int height, int width, osp_net **out);
/* The network's classifier: layer, if not NULL, which must be an [fc] or
 * a 1x1 [conv]; else the one that produces the logits (through layers
 * without weights: activations, pooling, flatten). A clear error if there
 * is no such layer, or it is not a classifier. */
OSP_API int osp_net_find_head(const osp_net *net, const char *layer, int *node);
/* A copy of net whose classifier (node head, which must produce the
 * logits) has n_classes outputs and fresh weights initialised from seed;
 * every other parameter and buffer, the input size and normalisation are
 * net's. The copy has no labels; its spec says the new size. */
OSP_API int osp_net_resize_head(const osp_net *net, int head, int n_classes, uint64_t seed,
                                osp_net **out);
/* 1 if net is a multi-label model (its scores are sigmoids: pass this as
 * osp_scores_from_logits's sigmoid), else 0; 0 for NULL. */
OSP_API int osp_net_multi_label(const osp_net *net);
/* Marks net multi-label (1) or single-label (0; drops its thresholds). */
OSP_API void osp_net_set_multi_label(osp_net *net, int multi_label);
/* Label c's decision threshold on its sigmoid score: the model's stored
 * one, or 0.5 (also for a single-label model or c out of range). */
OSP_API float osp_net_threshold(const osp_net *net, int c);
/* Copies n (== n_classes) thresholds in (0, 1) into a multi-label net;
 * NULL clears them. */
OSP_API int osp_net_set_thresholds(osp_net *net, const float *thresholds, int n);
/* Int8 quantisation (docs/quantization.md). The convolutions (ungrouped)
 * run with int8 filters (per output channel, symmetric) and int8 inputs
 * (per tensor, asymmetric, ranges from calibration data), on backends
 * with an int8 kernel; elsewhere they run float32. Calibrating: begin,
 * run the network (osp_net_run) over calibration batches, osp_net_
 * calibrate_pass, run the same batches again, then end. begin returns the
 * number of layers it will quantise (0: none can be). */
typedef enum osp_calib_method {
    OSP_CALIB_PERCENTILE = 0, /* clip the input range at a percentile */
    OSP_CALIB_MINMAX = 1,     /* the whole observed range */
} osp_calib_method;
OSP_API int osp_net_calibrate_begin(osp_net *net);
OSP_API int osp_net_calibrate_pass(osp_net *net);
/* Sets each calibrated layer's input scale and zero point and
 * net->quantization (images: how many the calibration saw, recorded).
 * Plans made before must be made again. */
OSP_API int osp_net_calibrate_end(osp_net *net, osp_calib_method method, double percentile,
                                  int64_t images);
/* Applies a "quantization" JSON (as saved in a model; name: for errors);
 * NULL makes the network float32 again. */
OSP_API int osp_net_set_quantization(osp_net *net, const char *json, const char *name);
/* How many layers run int8 (0 for a float32 model). */
OSP_API int osp_net_quantized_layers(const osp_net *net);
/* Copies a hash head into net (replacing any; NULL removes it). Refused
 * (OSP_EINVAL, saying why) unless bits is a multiple of 8 in 8..1024, the
 * layer exists and gives dim channels, the method is known, every value is
 * finite and the net has no parameter of the head's tensor names. */
OSP_API int osp_net_set_hash(osp_net *net, const osp_net_hash *hash);
/* The model's hash head, or NULL (borrowed from net). */
OSP_API const osp_net_hash *osp_net_get_hash(const osp_net *net);
/* Copies labels (n_classes of them). */
OSP_API int osp_net_set_labels(osp_net *net, const char *const *labels, int n);
/* In place: x = (x - mean[c]) / std[c] over a batch of inputs. */
OSP_API void osp_net_normalize(const osp_net *net, float *x, int batch);
/* Number of trained parameters. */
OSP_API int64_t osp_net_param_count(const osp_net *net);

/* ---- running a network -------------------------------------------------- */

/* The layer name that means "the logits": the node the loss reads (the
 * output, or the input of a final [softmax]). */
#define OSP_LAYER_LOGITS "@logits"

/* The transform that turns a photo into the network's input: its channels
 * and size, the centre crop of evaluation (crop fraction 0.875). Fails
 * with OSP_ESHAPE if the input is not 1 or 3 x height x width. */
OSP_API int osp_net_transform(const osp_net *net, osp_transform *out);
/* One encoded JPEG, PNG or WebP image to one input of the network:
 * decoded with shrink-on-load, resized as t says (NULL:
 * osp_net_transform's), normalised with the network's mean and std. out
 * holds the input's size in floats; max_pixels 0 is the default limit. */
OSP_API int osp_net_image_input(const osp_net *net, const void *buf, size_t len, const char *name,
                                const osp_transform *t, int64_t max_pixels, float *out);
/* The same from a file. */
OSP_API int osp_net_load_image(const osp_net *net, const char *path, const osp_transform *t,
                               float *out);
/* A layer by name (NULL: the output; OSP_LAYER_LOGITS: the logits): its
 * node id and per-sample size (either may be NULL). OSP_ENOENT with a
 * message if there is no such layer. */
OSP_API int osp_net_find_layer(const osp_net *net, const char *layer, int *node, int64_t *size);
/* Runs net for inference on n inputs x (n x input size floats, already
 * normalised: see osp_net_image_input) in batches of at most batch (0 =
 * 64), and writes layer i's activations (n x its size floats) to outs[i]
 * for each of the n_layers layers named (up to 16; n_layers 0: outs[0]
 * gets the output). One forward pass gives them all. The layers asked for
 * stay marked to be kept by later inference plans. */
OSP_API int osp_net_run(osp_net *net, const float *x, int64_t n, int batch,
                        const char *const *layers, int n_layers, float *const *outs);

/* ---- from outputs to answers ----------------------------------------------- */

/* Class scores of k logits: one softmax over them, or with sigmoid each
 * class's own probability (a multi-label model). */
OSP_API void osp_scores_from_logits(const float *logits, int64_t k, int sigmoid, float *out);
/* The indexes of the want highest of n scores, best first (ties: the lower
 * index), in order; returns how many (want, or n if fewer). */
OSP_API int osp_top_k(const float *scores, int64_t n, int want, int *order);
/* A layer as an embedding: its channels, and the values per channel that
 * are averaged into one (H x W for a C x H x W layer, else 1). */
OSP_API int osp_net_embedding_size(const osp_net *net, const char *layer, int64_t *channels,
                                   int64_t *plane);
/* One sample's layer output (channels x plane floats) as a vector of
 * channels: each plane averaged, then L2-normalised if asked (a zero
 * vector stays zero). The pipeline, the server and 'osprey similar' all
 * embed through it, so their vectors are the same bit for bit. */
OSP_API void osp_embedding_from_layer(const float *layer, int64_t channels, int64_t plane,
                                      int normalize, float *out);

/* How a layer of tokens (T x D per sample: a vision transformer's) becomes
 * one vector of D: OSP_POOL_CLS takes token 0 (the class token),
 * OSP_POOL_MEAN averages the T tokens. OSP_POOL_DEFAULT is what
 * osp_net_embedding_size does: planes of C x H x W averaged, any other
 * layer taken whole. */
typedef enum osp_pool { OSP_POOL_DEFAULT = 0, OSP_POOL_CLS = 1, OSP_POOL_MEAN = 2 } osp_pool;

/* A layer's embedding geometry for a pooling. */
typedef struct osp_embed_shape {
    osp_pool pool;
    int64_t dim;    /* values in the vector */
    int64_t plane;  /* OSP_POOL_DEFAULT: values averaged into each */
    int64_t tokens; /* OSP_POOL_CLS / OSP_POOL_MEAN: T */
    int64_t size;   /* values of the layer per sample */
} osp_embed_shape;

/* "cls", "mean", or "" / NULL (the default) into *out; OSP_EINVAL with
 * the choices named otherwise. osp_pool_name is the inverse ("" for the
 * default): what a run records. */
OSP_API int osp_pool_parse(const char *name, osp_pool *out);
OSP_API const char *osp_pool_name(osp_pool pool);
/* The geometry of layer (NULL: the output) under pool; a token pooling
 * needs a layer of rank 2 per sample (T x D), else OSP_ESHAPE. */
OSP_API int osp_net_embed_shape(const osp_net *net, const char *layer, osp_pool pool,
                                osp_embed_shape *out);
/* One sample's layer output (s->size floats) as a vector of s->dim, then
 * L2-normalised if asked: osp_embedding_from_layer for the default. */
OSP_API void osp_embedding_pool(const float *layer, const osp_embed_shape *s, int normalize,
                                float *out);

#ifdef __cplusplus
}
#endif

#endif
