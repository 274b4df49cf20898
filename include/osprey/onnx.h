/* ONNX import and export.
 *
 * Import maps an ONNX graph onto osprey's layers: it writes a network spec
 * (one section per ONNX node that computes something, named after the node)
 * and fills the network's weights from the initializers. Constant subgraphs
 * (Shape/Gather/Unsqueeze/Concat chains that exporters emit for a flatten)
 * are evaluated at import, batch norms that follow a convolution are folded
 * into it, and anything osprey cannot compute exactly is refused with an
 * error naming the operator and the node. A model osprey exported keeps
 * its input normalisation and label names (metadata_props osprey.mean,
 * osprey.std, osprey.labels) unless the options give a mean or std.
 *
 * Export writes an osprey network as an ONNX model (opset 13) that ONNX
 * Runtime loads; the input normalisation is not part of the graph, as it is
 * not part of osprey's (see docs/onnx.md). */
#ifndef OSPREY_ONNX_H
#define OSPREY_ONNX_H

#include <stddef.h>

#include "osprey/core.h"
#include "osprey/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct osp_onnx_import_options {
    /* Input height and width for a model whose spatial size is symbolic
     * (0: take them from the model, which must then fix them). */
    int input_h, input_w;
    /* Largest file accepted, in bytes (0: 2 GiB, protobuf's own limit);
     * set, it also bounds the external data read (unset: 16 GiB). */
    size_t max_bytes;
    /* The input normalisation the model expects, saved with it: one value
     * or one per channel (n_mean = 0: mean 0; n_std = 0: std 1). */
    int n_mean, n_std;
    float mean[OSP_MAX_CHANNELS], std[OSP_MAX_CHANNELS];
} osp_onnx_import_options;

/* Reads an ONNX model from memory. `name` is used in messages. On success
 * *out is a network with the model's weights (free with osp_net_free).
 * A model whose tensors keep their data in external files (ONNX's format
 * for models over 2 GB) is read with osp_onnx_import_file, which finds
 * those files below the model's folder; from memory it is refused. */
OSP_API int osp_onnx_import(const void *data, size_t size, const char *name,
                            const osp_onnx_import_options *opt, osp_net **out);
OSP_API int osp_onnx_import_file(const char *path, const osp_onnx_import_options *opt,
                                 osp_net **out);

/* Writes the network as an ONNX model, atomically. */
OSP_API int osp_onnx_export(const osp_net *net, const char *path);
/* The same into a buffer (owned by the caller, free with osp_free). */
OSP_API int osp_onnx_export_buffer(const osp_net *net, void **data, size_t *size);

/* ---- how an op writes itself as ONNX --------------------------------------- */

/* Each op that can be exported has an onnx_export (osp_op, osprey/graph.h)
 * that writes one of its nodes as ONNX nodes through this writer: a table
 * of functions filled by the exporter, as the backend table is by the
 * kernels, so that an op describes its own export and needs nothing of
 * the exporter but this. The exporter calls it for each node in order,
 * with the ONNX values of the node's inputs (in) and the name its output
 * value must have (out); the first ONNX node the op adds for a layer
 * should carry the layer's name, and helper values are named
 * "<layer>/<what>" (no layer name has a '/').
 *
 * Values are float tensors [batch, the per-sample shape]. The strings the
 * writer returns are its own and live until the model is written. A
 * function that runs out of memory returns NULL (or does nothing), and the
 * export then fails with OSP_ENOMEM: ops need not check each call. */
typedef struct osp_onnx_node osp_onnx_node; /* an ONNX node being written */
typedef struct osp_onnx_writer osp_onnx_writer;

struct osp_onnx_writer {
    /* A string made with printf's format: the name of a helper value. */
    char *(*name)(osp_onnx_writer *w, const char *fmt, ...) OSP_PRINTF(2, 3);
    /* Adds a node of ONNX operator op_type, called name, reading
     * in[0 .. n_in) ("" for an optional input left out) and writing the
     * value out; NULL only when out of memory. */
    osp_onnx_node *(*node)(osp_onnx_writer *w, const char *op_type, const char *name, int n_in,
                           char *const *in, char *out);
    /* Attributes of a node (node may be NULL: they are then dropped). */
    void (*attr_int)(osp_onnx_writer *w, osp_onnx_node *node, const char *name, int64_t v);
    void (*attr_float)(osp_onnx_writer *w, osp_onnx_node *node, const char *name, float v);
    void (*attr_ints)(osp_onnx_writer *w, osp_onnx_node *node, const char *name, const int64_t *v,
                      int count);
    void (*attr_string)(osp_onnx_writer *w, osp_onnx_node *node, const char *name, const char *v);

    /* Initializers. params adds one for each of n's parameters, in order,
     * under the parameter's own name ("conv1.weight"), and puts names[i]
     * for n->params[i]. The others are named name and return it: a float
     * scalar; an int64 vector of count values; an int64 shape for
     * Reshape, [0, s's dimensions] (0 keeps the batch). */
    void (*params)(osp_onnx_writer *w, const osp_node *n, char **names);
    char *(*init_scalar)(osp_onnx_writer *w, const char *name, float v);
    char *(*init_ints)(osp_onnx_writer *w, const char *name, const int64_t *v, int count);
    char *(*init_shape)(osp_onnx_writer *w, const char *name, const osp_shape *s);

    /* osprey's layouts in ONNX's terms. flat: n's first input, whose
     * value is in, as [batch, values per sample]: in itself when it is
     * 1-D per sample, else a Flatten "<n>/flat". binary: a two-input
     * operator (Add, Sub, Mul, Div) named after n on n's two inputs,
     * broadcast as osprey broadcasts (per-sample shapes aligned on the
     * right; ONNX aligns whole shapes, batch included). */
    char *(*flat)(osp_onnx_writer *w, const osp_node *n, char *in);
    osp_onnx_node *(*binary)(osp_onnx_writer *w, const osp_node *n, const char *op_type,
                             char *const *in, char *out);
    /* A node whose value is its one parameter, the same for every sample
     * ([constant]): adds the parameter under its own name with the shape
     * [1, n's shape], which binary reads in place of n's output, and
     * returns its name. is_constant: 1 for a node written so. batch: the
     * batch size as an int64 [1] value, "input/batch" (made once). */
    char *(*constant)(osp_onnx_writer *w, const osp_node *n);
    int (*is_constant)(osp_onnx_writer *w, int node);
    char *(*batch)(osp_onnx_writer *w);
    /* A float32 tensor of shape dims (ndim axes) holding data (copied). */
    char *(*init_floats)(osp_onnx_writer *w, const char *name, const int64_t *dims, int ndim,
                         const float *data);
};

#ifdef __cplusplus
}
#endif

#endif
