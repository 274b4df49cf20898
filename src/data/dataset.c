/* What every dataset shares: releasing it. */
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
    if (ds->destroy)
        ds->destroy(ds);
    else
        osp_free(ds);
}
