/* A dataset of image files: a path and a label per sample; a sample is
 * read, decoded and transformed when it is asked for, so opening a
 * million-image folder costs a directory walk, not a decode. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imagelist.h"

typedef struct image_list {
    osp_dataset base;  /* first: an osp_dataset * is an image_list * */
    char *text;        /* paths */
    size_t *path;      /* (count) offsets into text */
    int32_t *label;    /* (count); multi-label: the lowest of its labels, or -1 */
    int64_t *hot_at;   /* multi-label: (count + 1) offsets into hot_ids */
    int32_t *hot_ids;  /* multi-label: each sample's labels, ascending */
    char *source;
    char **names;      /* (n_classes) */
    osp_transform transform;
    int64_t max_pixels;
    size_t max_bytes;  /* larger files are refused unread */
} image_list;

int osp__builder_add(osp__list_builder *b, const char *path, size_t path_len, int32_t klass) {
    if (b->n == b->cap) {
        int64_t cap = b->cap ? 2 * b->cap : 256;
        size_t *p = realloc(b->path, (size_t)cap * sizeof *p);
        if (p) b->path = p;
        int32_t *k = p ? realloc(b->klass, (size_t)cap * sizeof *k) : NULL;
        if (k) b->klass = k;
        if (!p || !k) return osp_error(OSP_ENOMEM, "out of memory listing images");
        b->cap = cap;
    }
    if (b->text_len + path_len + 1 > b->text_cap) {
        size_t cap = b->text_cap ? b->text_cap : 4096;
        while (cap < b->text_len + path_len + 1) cap *= 2;
        char *t = realloc(b->text, cap);
        if (!t) return osp_error(OSP_ENOMEM, "out of memory listing images");
        b->text = t;
        b->text_cap = cap;
    }
    memcpy(b->text + b->text_len, path, path_len);
    b->text[b->text_len + path_len] = '\0';
    b->path[b->n] = b->text_len;
    b->klass[b->n] = klass;
    b->text_len += path_len + 1;
    b->n++;
    return OSP_OK;
}

void osp__builder_free(osp__list_builder *b) {
    free(b->text);
    free(b->path);
    free(b->klass);
    free(b->hot_at);
    free(b->hot_ids);
    memset(b, 0, sizeof *b);
}

int osp__check_image_options(const osp_image_data_options *opt, const char *source) {
    if (!opt) return osp_error(OSP_EINVAL, "%s: image datasets need a sample size", source);
    if (osp_transform_check(&opt->transform) != OSP_OK) {
        char why[256]; /* osp_error writes where osp_last_error() points */
        snprintf(why, sizeof why, "%s", osp_last_error());
        return osp_error(OSP_EINVAL, "%s: %s", source, why);
    }
    if (opt->max_pixels < 0)
        return osp_error(OSP_EINVAL, "%s: negative pixel limit", source);
    if (opt->class_names && opt->n_classes <= 0)
        return osp_error(OSP_EINVAL, "%s: an empty list of class names", source);
    return OSP_OK;
}

static int load(osp_dataset *ds, int64_t i, osp_rng *rng, float *out, int32_t *label) {
    const image_list *d = (const image_list *)ds;
    if (i < 0 || i >= ds->count)
        return osp_error(OSP_ERANGE, "%s: sample %lld is outside 0..%lld", d->source, (long long)i,
                         (long long)ds->count - 1);
    const char *path = d->text + d->path[i];
    if (out) {
        void *buf;
        size_t len;
        int rc = osp_file_read_all(path, d->max_bytes, &buf, &len);
        if (rc != OSP_OK) return rc;
        rc = osp_image_to_sample(buf, len, path, &d->transform, d->max_pixels, rng, out);
        osp_free(buf);
        if (rc != OSP_OK) return rc;
    }
    if (label) *label = d->label[i];
    return OSP_OK;
}

static int list_get(osp_dataset *ds, int64_t i, float *out, int32_t *label) {
    return load(ds, i, NULL, out, label);
}

static int list_get_augmented(osp_dataset *ds, int64_t i, osp_rng *rng, float *out,
                              int32_t *label) {
    return load(ds, i, rng, out, label);
}

static int list_label(const osp_dataset *ds, int64_t i, int32_t *label) {
    const image_list *d = (const image_list *)ds;
    if (i < 0 || i >= ds->count)
        return osp_error(OSP_ERANGE, "%s: sample %lld is outside 0..%lld", d->source, (long long)i,
                         (long long)ds->count - 1);
    *label = d->label[i];
    return OSP_OK;
}

static int list_labels_multi(const osp_dataset *ds, int64_t i, uint8_t *hot) {
    const image_list *d = (const image_list *)ds;
    if (i < 0 || i >= ds->count)
        return osp_error(OSP_ERANGE, "%s: sample %lld is outside 0..%lld", d->source, (long long)i,
                         (long long)ds->count - 1);
    memset(hot, 0, (size_t)ds->n_classes);
    for (int64_t k = d->hot_at[i]; k < d->hot_at[i + 1]; k++) hot[d->hot_ids[k]] = 1;
    return OSP_OK;
}

static int by_int32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Each sample's labels in ascending order without repeats, and its first
 * label (or -1) as its single label. */
static void settle_multi(image_list *d) {
    int64_t w = 0;
    for (int64_t i = 0; i < d->base.count; i++) {
        int64_t lo = d->hot_at[i], hi = d->hot_at[i + 1];
        qsort(d->hot_ids + lo, (size_t)(hi - lo), sizeof *d->hot_ids, by_int32);
        d->hot_at[i] = w;
        for (int64_t k = lo; k < hi; k++)
            if (k == lo || d->hot_ids[k] != d->hot_ids[k - 1]) d->hot_ids[w++] = d->hot_ids[k];
        d->label[i] = w > d->hot_at[i] ? d->hot_ids[d->hot_at[i]] : -1;
    }
    d->hot_at[d->base.count] = w;
}

static const char *list_name(const osp_dataset *ds, int64_t i) {
    const image_list *d = (const image_list *)ds;
    return i >= 0 && i < ds->count ? d->text + d->path[i] : NULL;
}

static void list_destroy(osp_dataset *ds) {
    image_list *d = (image_list *)ds;
    free(d->text);
    free(d->path);
    free(d->label);
    free(d->hot_at);
    free(d->hot_ids);
    free(d->source);
    if (d->names)
        for (int c = 0; c < ds->n_classes; c++) free(d->names[c]);
    free(d->names);
    free(d);
}

static int copy_names(image_list *d, const char *const *names, int n) {
    d->names = calloc((size_t)n, sizeof *d->names);
    if (!d->names) return OSP_ENOMEM;
    d->base.n_classes = n; /* list_destroy frees what was copied */
    for (int c = 0; c < n; c++)
        if (!(d->names[c] = strdup(names[c]))) return OSP_ENOMEM;
    d->base.class_names = d->names;
    return OSP_OK;
}

/* Raw class k -> its position among opt's names (-1: not there). */
static void renumber(const char *const *names, int n_names, const osp_image_data_options *opt,
                     int32_t *map) {
    for (int k = 0; k < n_names; k++) {
        map[k] = -1;
        for (int c = 0; c < opt->n_classes; c++)
            if (opt->class_names[c] && !strcmp(names[k], opt->class_names[c])) {
                map[k] = c;
                break;
            }
    }
}

int osp__builder_finish(osp__list_builder *b, const char *source, const char *const *names,
                        int n_names, const osp_image_data_options *opt, osp_dataset **out) {
    *out = NULL;
    if (b->n == 0) return osp_error(OSP_EFORMAT, "%s: no images found", source);
    image_list *d = calloc(1, sizeof *d);
    if (!d) return osp_error(OSP_ENOMEM, "%s: out of memory", source);
    d->base.get = list_get;
    d->base.get_augmented = list_get_augmented;
    d->base.label = list_label;
    d->base.name = list_name;
    d->base.destroy = list_destroy;
    d->base.count = b->n;
    d->base.load_workers = osp_threads_get(); /* decoding is worth threads */
    d->text = b->text;
    d->path = b->path;
    d->label = b->klass; /* renumbered in place below */
    b->text = NULL;
    b->path = NULL;
    b->klass = NULL;
    if (b->multi) {
        d->base.multi_label = 1;
        d->base.labels_multi = list_labels_multi;
        d->hot_at = b->hot_at;
        d->hot_ids = b->hot_ids;
        b->hot_at = NULL;
        b->hot_ids = NULL;
    }
    osp__builder_free(b);
    d->source = strdup(source);
    d->transform = opt->transform;
    d->max_pixels = opt->max_pixels > 0 ? opt->max_pixels : OSP_IMAGE_MAX_PIXELS;
    d->max_bytes = osp_image_max_file_bytes(d->max_pixels);
    int64_t dims[3] = {opt->transform.channels, opt->transform.height, opt->transform.width};
    d->base.sample_shape = osp_shape_make(3, dims);
    int rc = d->source ? OSP_OK : OSP_ENOMEM;
    if (!rc && opt->class_names) {
        int32_t *map = malloc((size_t)n_names * sizeof *map);
        if (map) renumber(names, n_names, opt, map);
        else rc = OSP_ENOMEM;
        for (int64_t i = 0; !rc && d->hot_at && i < d->base.count; i++)
            for (int64_t k = d->hot_at[i]; !rc && k < d->hot_at[i + 1]; k++) {
                int32_t m = map[d->hot_ids[k]];
                if (m < 0)
                    rc = osp_error(OSP_EINVAL, "%s: label '%s' (of %s) is not one of the %d labels "
                                   "it is matched with", source, names[d->hot_ids[k]],
                                   d->text + d->path[i], opt->n_classes);
                d->hot_ids[k] = m;
            }
        for (int64_t i = 0; !rc && !d->hot_at && i < d->base.count; i++) {
            int32_t m = map[d->label[i]];
            if (m < 0)
                rc = osp_error(OSP_EINVAL, "%s: class '%s' (of %s) is not one of the %d classes "
                               "it is matched with", source, names[d->label[i]],
                               d->text + d->path[i], opt->n_classes);
            d->label[i] = m;
        }
        free(map);
        if (!rc) rc = copy_names(d, (const char *const *)opt->class_names, opt->n_classes);
    } else if (!rc) {
        rc = copy_names(d, names, n_names);
    }
    d->base.source = d->source;
    if (!rc && d->hot_at) settle_multi(d);
    if (rc) {
        if (rc == OSP_ENOMEM) osp_error(OSP_ENOMEM, "%s: out of memory", source);
        list_destroy(&d->base);
        return rc;
    }
    *out = &d->base;
    return OSP_OK;
}
