/* Reading what an output folder has committed (private to src/pipeline):
 * its layout from the catalogue's settings, and its .npy files checked
 * against them. Used by osp_pipeline_load_vectors, osp_catalog_read_vectors
 * and osp_pipeline_merge (implemented in vectors.c).
 *
 * The files are untrusted: a header must be exactly the one the pipeline
 * writes for the catalogue's dtype and dim (any row count: the header may
 * lag behind or run ahead of the catalogue), and the file must hold at
 * least the committed rows; what lies past them is ignored. */
#ifndef OSPREY_PIPELINE_FOLDER_H
#define OSPREY_PIPELINE_FOLDER_H

#include <stdint.h>
#include <sys/types.h>

#include "catalog.h"
#include "outputs.h"

/* The largest vector size accepted from a catalogue's "dim". */
#define OSP__FOLDER_MAX_DIM (1 << 20)

/* What the settings say the folder holds: tags.jsonl (tags), vectors of
 * dim elements of dtype (dim 0: none). A setting that is missing or
 * malformed is OSP_ECORRUPT naming the catalogue and the key. */
int osp__folder_layout(osp_catalog *c, int *tags, int64_t *dim, osp_dtype *dtype);

/* Opens dir/name (vectors.npy: dtype and dim; ids.npy: OSP_DTYPE_I64 and
 * dim 0) for reading and checks its header and that it holds rows rows.
 * A missing file is fine when rows is 0: *fd is then -1. */
int osp__folder_npy_open(const char *dir, const char *name, osp_dtype dtype, int64_t dim, int64_t rows,
                         int *fd);

/* Reads exactly len bytes at offset at; a short file is OSP_ECORRUPT
 * naming dir/name. */
int osp__folder_read(int fd, void *buf, size_t len, off_t at, const char *dir, const char *name);

#endif
