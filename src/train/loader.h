/* What the trainer and the evaluator share about loading: a loader set up
 * for a network (its normalisation and output count). */
#ifndef OSPREY_TRAIN_LOADER_H
#define OSPREY_TRAIN_LOADER_H

#include "osprey/data.h"
#include "osprey/nn.h"

/* training: augment, and replace unreadable samples; otherwise leave them
 * out (evaluation). Workers and prefetch depth come from the dataset. */
osp_loader_config osp__loader_config(const osp_net *net, const osp_dataset *ds, int batch,
                                     uint64_t seed, int training);

#endif
