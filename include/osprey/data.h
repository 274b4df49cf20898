/* osprey data: datasets of labelled images. A dataset yields samples as
 * float32 C x H x W in [0, 1] (before the model's normalisation) and an
 * integer label. */
#ifndef OSPREY_DATA_H
#define OSPREY_DATA_H

#include <stdint.h>

#include "osprey/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum osp_split { OSP_SPLIT_TRAIN = 0, OSP_SPLIT_TEST = 1 } osp_split;

typedef struct osp_dataset osp_dataset;
struct osp_dataset {
    int64_t count;
    osp_shape sample_shape; /* C x H x W */
    int n_classes;
    char **class_names;     /* n_classes names, or NULL */
    const char *source;     /* path, for messages */
    /* Writes sample i (sample_shape floats) into out and its label; returns
     * 0 or an error. Safe to call from several threads at once. */
    int (*get)(osp_dataset *ds, int64_t i, float *out, int32_t *label);
    void (*destroy)(osp_dataset *ds);
    void *impl;
};

OSP_API void osp_dataset_free(osp_dataset *ds);

/* IDX files (the MNIST format: big-endian magic 0x00000803 images,
 * 0x00000801 labels). path is a directory holding the four standard MNIST
 * files (split picks train-* or t10k-*), or an images file whose labels file
 * is named by replacing "images-idx3" with "labels-idx1". */
OSP_API int osp_dataset_open_idx(const char *path, osp_split split, osp_dataset **out);
/* The same from memory (for fuzzing): images and labels file contents. */
OSP_API int osp_dataset_idx_parse(const void *images, size_t images_len, const void *labels,
                                  size_t labels_len, const char *name, osp_dataset **out);

#ifdef __cplusplus
}
#endif

#endif
