/* Fuzz target: list files ("path<TAB>label" lines), and the held-out split
 * of what they list (names and labels only: no file is read). */
#include <stddef.h>
#include <stdint.h>

#include "osprey/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    osp_image_data_options opt = {.transform = osp_transform_defaults(3, 4, 4)};
    osp_dataset *ds;
    if (osp_dataset_list_parse((const char *)data, size, "fuzz.txt", "/base", &opt, &ds) != OSP_OK)
        return 0;
    for (int64_t i = 0; i < ds->count; i++) {
        int32_t label;
        if (ds->label(ds, i, &label) != OSP_OK || label < 0 || label >= ds->n_classes) __builtin_trap();
        if (!ds->name(ds, i)) __builtin_trap();
    }
    osp_dataset *train, *held;
    if (osp_dataset_split(ds, 0.3, &train, &held) == OSP_OK) {
        osp_dataset_free(train);
        osp_dataset_free(held);
    } else {
        osp_dataset_free(ds);
    }
    return 0;
}
