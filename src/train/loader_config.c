/* A loader set up for a network: its output count and normalisation, and
 * the trainer's or the evaluator's way with unreadable samples. The loader
 * itself is data's (src/data/loader.c); only this part knows networks. */
#include "loader.h"

osp_loader_config osp__loader_config(const osp_net *net, const osp_dataset *ds, int batch,
                                     uint64_t seed, int training) {
    osp_loader_config c = osp_loader_defaults(ds);
    c.batch = batch;
    c.seed = seed;
    c.augment = training;
    c.drop_unreadable = !training;
    c.n_classes = net->n_classes;
    c.normalize = 1;
    for (int k = 0; k < 4 && k < OSP_MAX_CHANNELS; k++) {
        c.mean[k] = net->mean[k];
        c.std[k] = net->std[k];
    }
    return c;
}
