/* IDX dataset parser: the input is a 2-byte little-endian length L, then L
 * bytes of labels file (fewer if the input is short), then the images file. */
#include <stddef.h>
#include <stdint.h>

#include "osprey/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t labels_len = (size_t)data[0] | (size_t)data[1] << 8;
    data += 2;
    size -= 2;
    if (labels_len > size) labels_len = size;
    osp_dataset *ds;
    if (osp_dataset_idx_parse(data + labels_len, size - labels_len, data, labels_len, "fuzz",
                              &ds) != OSP_OK)
        return 0;
    float sample[4096];
    int64_t numel = osp_shape_numel(&ds->sample_shape);
    if (numel <= (int64_t)(sizeof sample / sizeof sample[0])) {
        int32_t label;
        ds->get(ds, 0, sample, &label);
        ds->get(ds, ds->count - 1, sample, &label);
        if (label < 0 || label >= ds->n_classes) __builtin_trap();
    }
    osp_dataset_free(ds);
    return 0;
}
