/* Views of a dataset: a training part and a held-out part that share the
 * samples of one dataset. Which samples are held out depends only on the
 * samples themselves (each class's lowest hashes of label and file name),
 * so the split is the same whatever the seed, the order of the files or the
 * spelling of the folder's path. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/data.h"

typedef struct shared {
    osp_dataset *base;
    int refs;          /* views alive; the views are freed on one thread */
} shared;

typedef struct view {
    osp_dataset ds;    /* first: an osp_dataset * is a view * */
    shared *sh;
    int64_t *index;    /* (count) samples of the base, in the base's order */
} view;

static osp_dataset *base_of(const osp_dataset *ds) { return ((const view *)ds)->sh->base; }

static int view_get(osp_dataset *ds, int64_t i, float *out, int32_t *label) {
    if (i < 0 || i >= ds->count)
        return osp_error(OSP_ERANGE, "%s: sample %lld is outside 0..%lld", ds->source,
                         (long long)i, (long long)ds->count - 1);
    osp_dataset *b = base_of(ds);
    return b->get(b, ((view *)ds)->index[i], out, label);
}

static int view_get_augmented(osp_dataset *ds, int64_t i, osp_rng *rng, float *out,
                              int32_t *label) {
    if (i < 0 || i >= ds->count)
        return osp_error(OSP_ERANGE, "%s: sample %lld is outside 0..%lld", ds->source,
                         (long long)i, (long long)ds->count - 1);
    osp_dataset *b = base_of(ds);
    return b->get_augmented(b, ((view *)ds)->index[i], rng, out, label);
}

static int view_label(const osp_dataset *ds, int64_t i, int32_t *label) {
    if (i < 0 || i >= ds->count)
        return osp_error(OSP_ERANGE, "%s: sample %lld is outside 0..%lld", ds->source,
                         (long long)i, (long long)ds->count - 1);
    const osp_dataset *b = base_of(ds);
    return b->label(b, ((const view *)ds)->index[i], label);
}

static int view_labels_multi(const osp_dataset *ds, int64_t i, uint8_t *hot) {
    if (i < 0 || i >= ds->count)
        return osp_error(OSP_ERANGE, "%s: sample %lld is outside 0..%lld", ds->source,
                         (long long)i, (long long)ds->count - 1);
    const osp_dataset *b = base_of(ds);
    return b->labels_multi(b, ((const view *)ds)->index[i], hot);
}

static const char *view_name(const osp_dataset *ds, int64_t i) {
    const osp_dataset *b = base_of(ds);
    return i >= 0 && i < ds->count ? b->name(b, ((const view *)ds)->index[i]) : NULL;
}

static void view_destroy(osp_dataset *ds) {
    view *v = (view *)ds;
    if (--v->sh->refs == 0) {
        osp_dataset_free(v->sh->base);
        free(v->sh);
    }
    free(v->index);
    free(v);
}

static view *make_view(shared *sh, int augment) {
    view *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    const osp_dataset *b = sh->base;
    v->ds.sample_shape = b->sample_shape;
    v->ds.n_classes = b->n_classes;
    v->ds.class_names = b->class_names;
    v->ds.source = b->source;
    v->ds.get = view_get;
    v->ds.get_augmented = augment && b->get_augmented ? view_get_augmented : NULL;
    v->ds.label = b->label ? view_label : NULL;
    v->ds.name = b->name ? view_name : NULL;
    v->ds.destroy = view_destroy;
    v->ds.multi_label = b->multi_label;
    v->ds.labels_multi = b->labels_multi ? view_labels_multi : NULL;
    v->ds.load_workers = b->load_workers;
    v->ds.load_prefetch = b->load_prefetch;
    v->sh = sh;
    return v;
}

static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The file's own name (not its folder's path) and label; the index for
 * samples without names. */
static uint64_t sample_key(const osp_dataset *ds, int64_t i, int32_t label) {
    const char *name = ds->name ? ds->name(ds, i) : NULL;
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)(uint32_t)label; /* FNV-1a */
    if (!name) return mix(h ^ mix((uint64_t)i));
    const char *base = strrchr(name, '/');
    for (const unsigned char *p = (const unsigned char *)(base ? base + 1 : name); *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    return mix(h);
}

typedef struct keyed {
    int32_t label;
    uint64_t key;
    int64_t index;
} keyed;

static int by_label_key(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->label != y->label) return x->label < y->label ? -1 : 1;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

static int by_index(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Labels of every sample: through the label hook, else by reading. */
static int all_labels(osp_dataset *ds, keyed *k) {
    float *scratch = NULL;
    if (!ds->label) {
        scratch = osp_alloc((size_t)osp_shape_numel(&ds->sample_shape) * sizeof(float));
        if (!scratch) return OSP_ENOMEM;
    }
    int rc = OSP_OK;
    for (int64_t i = 0; !rc && i < ds->count; i++) {
        k[i].index = i;
        rc = ds->label ? ds->label(ds, i, &k[i].label) : ds->get(ds, i, scratch, &k[i].label);
        if (!rc) k[i].key = sample_key(ds, i, k[i].label);
    }
    osp_free(scratch);
    return rc;
}

int osp_dataset_split(osp_dataset *ds, double fraction, osp_dataset **train,
                      osp_dataset **held_out) {
    if (!ds || !train || !held_out) return osp_error(OSP_EINVAL, "osp_dataset_split: no dataset");
    *train = *held_out = NULL;
    if (!(fraction > 0 && fraction < 1))
        return osp_error(OSP_EINVAL, "%s: the held-out fraction must be between 0 and 1, not %g",
                         ds->source, fraction);
    keyed *k = malloc((size_t)ds->count * sizeof *k);
    int64_t *in = malloc((size_t)ds->count * sizeof *in), *out = malloc((size_t)ds->count * sizeof *out);
    shared *sh = calloc(1, sizeof *sh);
    int rc = k && in && out && sh ? all_labels(ds, k) : osp_error(OSP_ENOMEM, "%s: out of memory", ds->source);
    int64_t n_in = 0, n_out = 0;
    if (!rc) {
        qsort(k, (size_t)ds->count, sizeof *k, by_label_key);
        for (int64_t s = 0; s < ds->count;) {
            int64_t e = s;
            while (e < ds->count && k[e].label == k[s].label) e++;
            int64_t hold = (int64_t)llround(fraction * (double)(e - s));
            for (int64_t j = s; j < e; j++) {
                if (j - s < hold) out[n_out++] = k[j].index;
                else in[n_in++] = k[j].index;
            }
            s = e;
        }
        if (n_in == 0 || n_out == 0)
            rc = osp_error(OSP_EINVAL, "%s: holding out %g of %lld samples leaves %s empty",
                           ds->source, fraction, (long long)ds->count, n_in ? "nothing held out" : "nothing to train on");
    }
    view *a = NULL, *b = NULL;
    if (!rc) {
        sh->base = ds;
        a = make_view(sh, 1);
        b = make_view(sh, 0);
        if (!a || !b) rc = osp_error(OSP_ENOMEM, "%s: out of memory", ds->source);
    }
    free(k);
    if (rc) {
        free(in);
        free(out);
        free(sh);
        free(a);
        free(b);
        return rc;
    }
    qsort(in, (size_t)n_in, sizeof *in, by_index);
    qsort(out, (size_t)n_out, sizeof *out, by_index);
    sh->refs = 2;
    a->index = in;
    a->ds.count = n_in;
    b->index = out;
    b->ds.count = n_out;
    *train = &a->ds;
    *held_out = &b->ds;
    return OSP_OK;
}
