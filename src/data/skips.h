/* The skip log of a dataset: which samples loaders found unreadable, and
 * the messages not yet reported. Shared by loaders on many threads. */
#ifndef OSPREY_DATA_SKIPS_H
#define OSPREY_DATA_SKIPS_H

#include "osprey/data.h"

/* Makes ds->skips if there is none (call before any thread uses it). */
int osp__skips_init(osp_dataset *ds);
/* 1 if sample i is known to be unreadable. */
int osp__skips_is_bad(osp_dataset *ds, int64_t i);
/* Records sample i as unreadable with its message (first record wins). */
void osp__skips_mark(osp_dataset *ds, int64_t i, const char *message);
/* Unreadable samples recorded but not reported yet. */
int64_t osp__skips_pending(const osp_dataset *ds);
void osp__skips_free(osp_skip_log *s);

#endif
