/* For the files of src/train/ that call MPI themselves (distributed.c,
 * sync_bn.c, model_parallel.c): the job's communicator. */
#ifndef OSPREY_TRAIN_DIST_MPI_H
#define OSPREY_TRAIN_DIST_MPI_H

#ifdef OSP_HAVE_MPI
#include <mpi.h>

#include "osprey/train.h"

MPI_Comm osp__dist_comm(const osp_dist *d);
#endif

#endif
