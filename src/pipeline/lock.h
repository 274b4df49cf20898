/* The writers' lock on an output folder (private to src/pipeline): a run
 * of 'osprey tag' / 'osprey embed' and a merge each hold it on the folder
 * they write, so that two writers never append past the same committed
 * ends. */
#ifndef OSPREY_PIPELINE_LOCK_H
#define OSPREY_PIPELINE_LOCK_H

#include "osprey/core.h"

/* Locks dir (which must exist) for writing, waiting up to timeout_s
 * seconds (0: not at once) while another process holds it, with one
 * warning when it starts to wait; *fd gets the lock, for
 * osp__folder_unlock. A lock still held at the end is OSP_ESTATE. */
int osp__folder_lock(const char *dir, double timeout_s, int *fd);
void osp__folder_unlock(int fd);

#endif
