/* Index file loader on arbitrary bytes: header, section table and checksum
 * checks (nearly every input stops at a checksum; fuzz_index_load reaches
 * past them). A loaded index is searched once. */
#include <stddef.h>
#include <stdint.h>

#include "osprey/index.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    osp_index *ix;
    if (osp_index_load_memory(data, size, "fuzz.idx", &ix) != OSP_OK) return 0;
    osp_index_info info;
    osp_index_info_get(ix, &info);
    if (info.params.dim <= 4096) {
        float q[4096] = {0};
        int64_t ids[4];
        osp_index_search_params sp;
        osp_index_search_params_init(&sp, 4);
        if (info.params.type == OSP_INDEX_BINARY)
            osp_index_search_codes(ix, (const uint8_t *)q, 1, &sp, ids, NULL);
        else
            osp_index_search(ix, q, 1, &sp, ids, NULL);
    }
    osp_index_free(ix);
    return 0;
}
