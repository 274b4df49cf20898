/* Synchronised batch norm: the sum hook that makes every [batchnorm]
 * layer normalise with the statistics of the whole global batch rather
 * than of this rank's slice (Ioffe and Szegedy's batch, cut over ranks).
 *
 * The layer calls it three times a step (src/nn/op_batchnorm.c): the
 * per-channel sums of x and the value count, then of (x - mean)^2 about
 * the global mean, in forward; the sums of dy and dy * (x - mean) in
 * backward. Each is a blocking allreduce of C or 2C doubles: every rank
 * reaches the layers in the same order, so they pair up.
 *
 * The backward sums are of gradients of this rank's loss, a mean over its
 * n_r samples: weighed by its share n_r / G they add up to the sums of
 * the global loss's gradient, and dividing by the share again gives them
 * back in this rank's scale, the scale the rest of its backward and the
 * gradient exchange (which weighs by the share once more) work in. */
#include "dist_mpi.h"
#include "parallel.h"

#ifdef OSP_HAVE_MPI

void osp__split_sum(void *split, double *v, int n, int grad) {
    osp__split *s = split;
    const int ranks = osp_dist_size(s->d);
    if (grad)
        for (int i = 0; i < n; i++) v[i] *= s->share;
    /* Called even after a failure: a rank that left out a collective would
     * leave the others waiting in it. */
    int rc = MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, osp__dist_comm(s->d));
    if (rc != MPI_SUCCESS && !s->rc) s->rc = osp_error(OSP_EIO, "batch-norm statistics allreduce failed");
    if (grad)
        for (int i = 0; i < n; i++) v[i] /= s->share;
    s->bytes += 2.0 * (ranks - 1) / ranks * (double)n * sizeof(double);
}

#else

void osp__split_sum(void *split, double *v, int n, int grad) {}

#endif
