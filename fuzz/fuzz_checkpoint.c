/* Fuzz target: model and checkpoint files (safetensors + metadata + spec). */
#include <stddef.h>
#include <stdint.h>

#include "osprey/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    osp_net *net;
    osp_optimizer *opt;
    osp_train_state state;
    if (osp_checkpoint_parse(data, size, "fuzz.ckpt", &net, &opt, &state) == OSP_OK) {
        osp_net_free(net);
        osp_optimizer_free(opt);
        osp_free(state.config);
    }
    if (osp_checkpoint_parse(data, size, "fuzz.osp", &net, NULL, NULL) == OSP_OK) osp_net_free(net);
    return 0;
}
