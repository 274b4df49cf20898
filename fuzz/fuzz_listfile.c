/* Fuzz target: list files ("path<TAB>label" lines), and the held-out split
 * of what they list (names and labels only: no file is read). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "osprey/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    osp_image_data_options opt = {.transform = osp_transform_defaults(3, 4, 4)};
    osp_dataset *ds;
    if (osp_dataset_list_parse((const char *)data, size, "fuzz.txt", "/base", &opt, &ds) != OSP_OK)
        return 0;
    /* a multi-label file's sample may have no label at all (-1: a negative) */
    const int32_t lowest = ds->multi_label ? -1 : 0;
    uint8_t *hot = ds->multi_label ? malloc((size_t)ds->n_classes + 1) : NULL;
    for (int64_t i = 0; i < ds->count; i++) {
        int32_t label;
        if (ds->label(ds, i, &label) != OSP_OK || label < lowest || label >= ds->n_classes) __builtin_trap();
        if (!ds->name(ds, i)) __builtin_trap();
        if (hot) {
            if (ds->labels_multi(ds, i, hot) != OSP_OK) __builtin_trap();
            int first = -1;
            for (int c = ds->n_classes - 1; c >= 0; c--)
                if (hot[c] > 1) __builtin_trap();
                else if (hot[c]) first = c;
            if (first != label) __builtin_trap(); /* label is the lowest of the labels */
        }
    }
    free(hot);
    osp_dataset *train, *held;
    if (osp_dataset_split(ds, 0.3, &train, &held) == OSP_OK) {
        osp_dataset_free(train);
        osp_dataset_free(held);
    } else {
        osp_dataset_free(ds);
    }
    return 0;
}
