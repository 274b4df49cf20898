/* What every dataset shares: releasing it. */
#include <stdlib.h>

#include "osprey/data.h"
#include "skips.h"

/* destroy releases everything the dataset owns, the osp_dataset struct
 * included, so that an implementation may embed osp_dataset in a larger
 * struct of its own. A dataset without destroy owns nothing but itself.
 * The skip log is made by loaders, not by the implementation: freed here. */
void osp_dataset_free(osp_dataset *ds) {
    if (!ds) return;
    osp__skips_free(ds->skips);
    ds->skips = NULL;
    for (int i = 0; i < ds->n_left_out_kept; i++) free(ds->left_out[i].path);
    free(ds->left_out);
    ds->left_out = NULL;
    ds->n_left_out_kept = 0;
    if (ds->destroy)
        ds->destroy(ds);
    else
        osp_free(ds);
}
