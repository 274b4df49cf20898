/* For the files of src/train/ that call MPI themselves (sync_bn.c,
 * model_parallel.c, param_server.c): the communicator for layers'
 * collectives and the parameter servers' messages, a copy of the job's
 * that the gradient exchange does not use. */
#ifndef OSPREY_TRAIN_DIST_MPI_H
#define OSPREY_TRAIN_DIST_MPI_H

#ifdef OSP_HAVE_MPI
#include <mpi.h>

#include "osprey/train.h"

MPI_Comm osp__dist_comm(const osp_dist *d);
#endif

#endif
