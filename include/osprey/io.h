/* osprey io: files of tensors and vectors. Every reader treats its input as
 * hostile: sizes are checked against the file before anything is allocated,
 * and a malformed file gives OSP_EFORMAT (or OSP_ECORRUPT) with a message
 * naming the file and what is wrong. */
#ifndef OSPREY_IO_H
#define OSPREY_IO_H

#include <stddef.h>
#include <stdint.h>

#include "osprey/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum osp_dtype {
    OSP_DTYPE_F32 = 0,
    OSP_DTYPE_F64 = 1,
    OSP_DTYPE_I32 = 2,
    OSP_DTYPE_I64 = 3,
    OSP_DTYPE_U8 = 4,
    OSP_DTYPE_F16 = 5, /* IEEE binary16, as uint16_t (osp_float_from_half) */
} osp_dtype;

OSP_API size_t osp_dtype_size(osp_dtype t);
OSP_API const char *osp_dtype_name(osp_dtype t); /* "F32", as safetensors spells it */

/* An n-dimensional array of any dtype, owning its data (osp_alloc). */
typedef struct osp_array {
    osp_dtype dtype;
    osp_shape shape;
    void *data;
} osp_array;

OSP_API void osp_array_free(osp_array *a); /* frees data, leaves a zeroed */
OSP_API int64_t osp_array_numel(const osp_array *a);
/* Converts a's elements to float32 in place (a new buffer replaces the
 * old; float32 is left as it is): float64 and float16 round to nearest,
 * integers convert as C does. On failure (out of memory) a is unchanged. */
OSP_API int osp_array_to_f32(osp_array *a);

/* ---- .npy (NumPy format 1.0/2.0/3.0, C order, little-endian) ----------- */

/* Reads '<f4', '<f8', '<f2', '<i4', '<i8' and '|u1' arrays. */
OSP_API int osp_npy_read(const char *path, osp_array *out);
/* The same from memory; name is used in error messages. */
OSP_API int osp_npy_parse(const void *buf, size_t len, const char *name, osp_array *out);
/* Writes atomically (temporary file, fsync, rename). */
OSP_API int osp_npy_write(const char *path, const osp_array *a);
/* Writes a float32 array without copying: data is borrowed. */
OSP_API int osp_npy_write_f32(const char *path, const float *data, const osp_shape *shape);

/* ---- .fvecs / .ivecs / .bvecs (the ANN benchmark sets) ------------------ */

/* By extension: .fvecs -> F32, .ivecs -> I32, .bvecs -> U8, N x D; every
 * record must have the same D. */
OSP_API int osp_vecs_read(const char *path, osp_array *out);
OSP_API int osp_vecs_parse(const void *buf, size_t len, const char *name, osp_dtype dtype,
                           osp_array *out);

/* ---- safetensors --------------------------------------------------------- */

/* A parsed safetensors file: 8-byte little-endian header length, a JSON
 * header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
 * then the raw little-endian tensor bytes. */
typedef struct osp_safetensors osp_safetensors;

typedef struct osp_st_tensor {
    const char *name;
    osp_dtype dtype;
    osp_shape shape;
    const void *data; /* borrowed from the osp_safetensors */
    size_t nbytes;
} osp_st_tensor;

OSP_API int osp_st_load(const char *path, osp_safetensors **out);
/* Parses a copy of buf; name is used in error messages. */
OSP_API int osp_st_parse(const void *buf, size_t len, const char *name, osp_safetensors **out);
OSP_API void osp_st_free(osp_safetensors *st);
OSP_API int osp_st_count(const osp_safetensors *st);
OSP_API const osp_st_tensor *osp_st_get(const osp_safetensors *st, int i);
OSP_API const osp_st_tensor *osp_st_find(const osp_safetensors *st, const char *name);
/* A __metadata__ value, or NULL. */
OSP_API const char *osp_st_meta(const osp_safetensors *st, const char *key);
OSP_API int osp_st_meta_count(const osp_safetensors *st);
OSP_API const char *osp_st_meta_key(const osp_safetensors *st, int i);

typedef struct osp_st_writer osp_st_writer;
/* An empty writer; OSP_ENOMEM without memory. */
OSP_API int osp_st_writer_new(osp_st_writer **out);
/* data is borrowed until osp_st_writer_save returns. */
OSP_API int osp_st_writer_add(osp_st_writer *w, const char *name, osp_dtype dtype,
                              const osp_shape *shape, const void *data);
OSP_API int osp_st_writer_meta(osp_st_writer *w, const char *key, const char *value);
/* Writes atomically; tensors in the order added. */
OSP_API int osp_st_writer_save(osp_st_writer *w, const char *path);
OSP_API void osp_st_writer_free(osp_st_writer *w);

#ifdef __cplusplus
}
#endif

#endif
