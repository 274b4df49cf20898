/* A synthetic dataset: sample i of class c = i mod n_classes is class c's
 * fixed pattern (uniform noise drawn from (seed, c)) blended with the
 * sample's own noise (drawn from (seed, i)), the noise weighing more.
 * Nothing is stored: each sample is made when it is read, so any count
 * costs no memory, and every reader (thread, rank) sees the same bytes. */
#include <string.h>

#include "osprey/train.h"

#define STREAM_CLASS 0x636c6173u
#define STREAM_SAMPLE 0x73616d70u

typedef struct synthetic {
    uint64_t seed;
    int64_t size, first;
} synthetic;

/* How much of the class pattern shows through the noise. */
#define SIGNAL 0.3f

static int synthetic_get(osp_dataset *ds, int64_t i, float *out, int32_t *label) {
    const synthetic *s = ds->impl;
    if (i < 0 || i >= ds->count) return osp_error(OSP_ERANGE, "synthetic sample %lld is out of range", (long long)i);
    i += s->first;
    const int c = (int)(i % ds->n_classes);
    osp_rng pattern, noise;
    osp_rng_derive(&pattern, s->seed, STREAM_CLASS, (uint64_t)c);
    osp_rng_derive(&noise, s->seed, STREAM_SAMPLE, (uint64_t)i);
    for (int64_t k = 0; k < s->size; k++)
        out[k] = SIGNAL * osp_rng_uniform(&pattern) + (1 - SIGNAL) * osp_rng_uniform(&noise);
    *label = c;
    return OSP_OK;
}

static int synthetic_label(const osp_dataset *ds, int64_t i, int32_t *label) {
    const synthetic *s = ds->impl;
    *label = (int32_t)((i + s->first) % ds->n_classes);
    return OSP_OK;
}

static void synthetic_destroy(osp_dataset *ds) {
    osp_free(ds->impl);
    osp_free(ds);
}

int osp_dataset_synthetic(const osp_shape *shape, int n_classes, int64_t first, int64_t count,
                          uint64_t seed, osp_dataset **out) {
    *out = NULL;
    if (n_classes < 1 || count < 1 || first < 0 || osp_shape_numel(shape) < 1)
        return osp_error(OSP_EINVAL, "a synthetic dataset needs samples, classes and a shape");
    osp_dataset *ds = osp_calloc(1, sizeof *ds);
    synthetic *s = osp_calloc(1, sizeof *s);
    if (!ds || !s) {
        osp_free(ds);
        osp_free(s);
        return OSP_ENOMEM;
    }
    s->seed = seed;
    s->size = osp_shape_numel(shape);
    s->first = first;
    ds->count = count;
    ds->sample_shape = *shape;
    ds->n_classes = n_classes;
    ds->source = "synthetic";
    ds->get = synthetic_get;
    ds->label = synthetic_label;
    ds->destroy = synthetic_destroy;
    ds->impl = s;
    *out = ds;
    return OSP_OK;
}
