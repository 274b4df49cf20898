/* The data files of an output folder: tags.jsonl, vectors.npy, ids.npy.
 * Rows are written past the committed ends; the catalogue's commit makes
 * them count; a folder opened again is first cut back to what counts. */
#ifndef OSPREY_PIPELINE_OUTPUTS_H
#define OSPREY_PIPELINE_OUTPUTS_H

#include <stdint.h>

#include "osprey/io.h"

/* The .npy headers are written at a fixed 128 bytes, so that the row
 * count can be rewritten in place as rows are committed. */
#define OSP__NPY_HEADER 128

typedef struct osp__outputs {
    int tags_fd, vectors_fd, ids_fd; /* -1 where not written */
    int64_t dim;
    osp_dtype dtype;
    int64_t tags_bytes, rows;        /* the committed ends */
} osp__outputs;

/* Opens (creating) the files in dir: tags.jsonl if tags, vectors.npy and
 * ids.npy if dim > 0, cut to the committed ends given. */
int osp__outputs_open(osp__outputs *o, const char *dir, int tags, int64_t dim, osp_dtype dtype,
                      int64_t tags_bytes, int64_t rows);
/* Writes a batch past the committed ends and fsyncs it: tags text, and n
 * vector rows (dim elements of dtype each) with their ids. */
int osp__outputs_write(osp__outputs *o, const char *tags, size_t tags_len, const void *vectors,
                       const int64_t *ids, int64_t n);
/* After the catalogue committed them: the new ends, and the .npy headers
 * rewritten to count the rows. */
int osp__outputs_committed(osp__outputs *o, int64_t tags_bytes, int64_t rows);
void osp__outputs_close(osp__outputs *o);
/* A .npy header of exactly OSP__NPY_HEADER bytes for rows x dim (dim 0: a
 * vector of rows). */
void osp__npy_header(char *buf, osp_dtype dtype, int64_t rows, int64_t dim);

#endif
