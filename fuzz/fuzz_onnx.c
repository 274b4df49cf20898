/* Fuzz target: the ONNX importer (protobuf, tensors, constant folding, the
 * mapping onto layers). */
#include <stddef.h>
#include <stdint.h>

#include "osprey/onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    osp_onnx_import_options opt = {.max_bytes = 1 << 20};
    osp_net *net;
    if (osp_onnx_import(data, size, "fuzz.onnx", &opt, &net) == OSP_OK) osp_net_free(net);
    return 0;
}
