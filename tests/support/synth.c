#include "synth.h"

#include <string.h>

typedef struct synth {
    float *x;
    int32_t *y;
} synth;

static int synth_get(osp_dataset *ds, int64_t i, float *out, int32_t *label) {
    synth *s = ds->impl;
    int64_t size = osp_shape_numel(&ds->sample_shape);
    memcpy(out, s->x + i * size, (size_t)size * sizeof(float));
    *label = s->y[i];
    return 0;
}

static void synth_destroy(osp_dataset *ds) {
    synth *s = ds->impl;
    osp_free(s->x);
    osp_free(s->y);
    osp_free(s);
    osp_free(ds);
}

osp_dataset *synth_dataset(int count, int c, int h, int w, int classes, uint64_t seed) {
    osp_dataset *ds = osp_calloc(1, sizeof *ds);
    synth *s = osp_calloc(1, sizeof *s);
    ds->count = count;
    ds->sample_shape = osp_shape_make(3, (int64_t[]){c, h, w});
    ds->n_classes = classes;
    ds->source = "synthetic";
    ds->get = synth_get;
    ds->destroy = synth_destroy;
    ds->impl = s;
    int64_t size = (int64_t)c * h * w;
    s->x = osp_alloc((size_t)(count * size) * sizeof(float));
    s->y = osp_alloc((size_t)count * sizeof(int32_t));
    osp_rng rng;
    osp_rng_seed(&rng, seed);
    for (int i = 0; i < count; i++) {
        int k = (int)osp_rng_below(&rng, (uint64_t)classes);
        s->y[i] = k;
        int cy = (int)((k * 7 + 3) % h), cx = (int)((k * 5 + 1) % w);
        for (int ch = 0; ch < c; ch++)
            for (int yy = 0; yy < h; yy++)
                for (int xx = 0; xx < w; xx++) {
                    int dy = yy - cy, dx = xx - cx;
                    float v = (dy * dy + dx * dx <= 4) ? 1.0f : 0.0f;
                    s->x[i * size + (ch * h + yy) * w + xx] = v * 0.8f + 0.2f * osp_rng_uniform(&rng);
                }
    }
    return ds;
}
