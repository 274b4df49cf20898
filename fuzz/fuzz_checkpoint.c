/* Fuzz target: model and checkpoint files (safetensors + metadata + spec),
 * with a hash head when the file holds one: a head that loads must also
 * code a vector. */
#include <stddef.h>
#include <stdint.h>

#include "osprey/hash.h"
#include "osprey/model.h"

static void use_hash(const osp_net *net) {
    osp_hash *h;
    if (!osp_net_get_hash(net) || osp_hash_from_net(net, "fuzz.osp", &h)) return;
    float x[64] = {0};
    uint8_t code[128];
    if (osp_hash_dim(h) <= 64) osp_hash_codes(h, x, 1, code);
    osp_hash_free(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    osp_net *net;
    osp_optim *opt;
    osp_train_state state;
    if (osp_checkpoint_parse(data, size, "fuzz.ckpt", &net, &opt, &state) == OSP_OK) {
        osp_net_free(net);
        osp_optim_free(opt);
        osp_free(state.config);
    }
    if (osp_checkpoint_parse(data, size, "fuzz.osp", &net, NULL, NULL) == OSP_OK) {
        use_hash(net);
        osp_net_free(net);
    }
    return 0;
}
