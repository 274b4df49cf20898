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
    /* Largest file accepted, in bytes (0: 2 GiB, protobuf's own limit). */
    size_t max_bytes;
    /* The input normalisation the model expects, saved with it: one value
     * or one per channel (n_mean = 0: mean 0; n_std = 0: std 1). */
    int n_mean, n_std;
    float mean[OSP_MAX_CHANNELS], std[OSP_MAX_CHANNELS];
} osp_onnx_import_options;

/* Reads an ONNX model from memory. `name` is used in messages. On success
 * *out is a network with the model's weights (free with osp_net_free). */
OSP_API int osp_onnx_import(const void *data, size_t size, const char *name,
                            const osp_onnx_import_options *opt, osp_net **out);
OSP_API int osp_onnx_import_file(const char *path, const osp_onnx_import_options *opt,
                                 osp_net **out);

/* Writes the network as an ONNX model, atomically. */
OSP_API int osp_onnx_export(const osp_net *net, const char *path);
/* The same into a buffer (owned by the caller, free with osp_free). */
OSP_API int osp_onnx_export_buffer(const osp_net *net, void **data, size_t *size);

#ifdef __cplusplus
}
#endif

#endif
