/* Fuzz target: network specs (the parser and the network builder). */
#include <stddef.h>
#include <stdint.h>

#include "osprey/nn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    osp_net *net;
    if (osp_net_from_spec((const char *)data, size, "fuzz.cfg", 1, &net) == OSP_OK) {
        /* Planning a small batch exercises the shape rules' results; a spec
         * that asks for huge activations is refused there, not crashed on. */
        osp_graph_plan(net->graph, 1, OSP_MODE_INFER);
        osp_net_free(net);
    }
    return 0;
}
