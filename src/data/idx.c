/* IDX datasets (the MNIST files): an images file (big-endian magic
 * 0x00000803, count, rows, cols, then count x rows x cols uint8 pixels) and a
 * labels file (magic 0x00000801, count, then count uint8 labels). Both are
 * loaded whole; samples are made on demand, so get only reads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "osprey/data.h"

#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u
#define IDX_MAX_SIDE 4096u

typedef struct idx_dataset {
    osp_dataset base; /* first, so that an osp_dataset * is an idx_dataset * */
    uint8_t *pixels;  /* (count, rows, cols) */
    uint8_t *labels;  /* (count) */
    size_t sample_len; /* rows * cols */
    float scale[256];  /* pixel value -> value / 255 */
    char *source;
    char **names;      /* n_classes pointers into name_text */
    char *name_text;
} idx_dataset;

static uint32_t load_be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static int check_index(const osp_dataset *ds, int64_t i) {
    if (i < 0 || i >= ds->count)
        return osp_error(OSP_ERANGE, "%s: sample %lld is outside 0..%lld", ds->source,
                         (long long)i, (long long)ds->count - 1);
    return OSP_OK;
}

static int idx_label(const osp_dataset *ds, int64_t i, int32_t *label) {
    int rc = check_index(ds, i);
    if (rc == OSP_OK && label) *label = ((const idx_dataset *)ds)->labels[i];
    return rc;
}

static int idx_get(osp_dataset *ds, int64_t i, float *out, int32_t *label) {
    const idx_dataset *d = (const idx_dataset *)ds;
    int rc = check_index(ds, i);
    if (rc != OSP_OK) return rc;
    if (out) {
        const uint8_t *px = d->pixels + (size_t)i * d->sample_len;
        for (size_t j = 0; j < d->sample_len; j++) out[j] = d->scale[px[j]];
    }
    if (label) *label = d->labels[i];
    return OSP_OK;
}

static void idx_destroy(osp_dataset *ds) {
    idx_dataset *d = (idx_dataset *)ds;
    osp_free(d->pixels);
    osp_free(d->labels);
    free(d->source);
    free(d->names);
    free(d->name_text);
    free(d);
}

/* Checks one file's header and exact length; *count and the dims it holds. */
static int check_file(const unsigned char *b, size_t len, uint32_t magic, const char *name,
                      uint32_t *count, uint32_t *rows, uint32_t *cols) {
    size_t header = magic == IDX_IMAGES_MAGIC ? 16 : 8;
    if (!b && len > 0) return osp_error(OSP_EINVAL, "%s: NULL buffer", name);
    /* The magic first: a labels file given as images is not "truncated". */
    if (len >= 4 && load_be32(b) != magic)
        return osp_error(OSP_EFORMAT, "%s: not an IDX %s file (magic 0x%08x, expected 0x%08x)",
                         name, magic == IDX_IMAGES_MAGIC ? "images" : "labels", load_be32(b),
                         magic);
    if (len < header)
        return osp_error(OSP_EFORMAT, "%s: truncated IDX file: expected at least %zu bytes, "
                         "found %zu", name, header, len);
    *count = load_be32(b + 4);
    uint64_t per = 1;
    if (magic == IDX_IMAGES_MAGIC) {
        *rows = load_be32(b + 8);
        *cols = load_be32(b + 12);
        if (*rows < 1 || *rows > IDX_MAX_SIDE || *cols < 1 || *cols > IDX_MAX_SIDE)
            return osp_error(OSP_EFORMAT, "%s: image size %ux%u is outside 1..%u", name, *rows,
                             *cols, IDX_MAX_SIDE);
        per = (uint64_t)*rows * *cols;
    }
    /* count < 2^32 and per <= 2^24: no overflow */
    uint64_t expected = header + (uint64_t)*count * per;
    if (len < expected)
        return osp_error(OSP_EFORMAT, "%s: truncated IDX file: expected %llu bytes, found %zu",
                         name, (unsigned long long)expected, len);
    if (len > expected)
        return osp_error(OSP_EFORMAT, "%s: IDX file has trailing bytes: expected %llu bytes, "
                         "found %zu", name, (unsigned long long)expected, len);
    return OSP_OK;
}

/* Class names "0", "1", ...: labels are plain integers in IDX. */
static int make_names(idx_dataset *d, const char *name) {
    int n = d->base.n_classes;
    d->names = calloc((size_t)n, sizeof *d->names);
    /* 12 bytes hold any int and its NUL (labels stop at "255"). */
    d->name_text = malloc((size_t)n * 12);
    if (!d->names || !d->name_text)
        return osp_error(OSP_ENOMEM, "%s: out of memory for class names", name);
    for (int c = 0; c < n; c++) {
        d->names[c] = d->name_text + 12 * c;
        snprintf(d->names[c], 12, "%d", c);
    }
    d->base.class_names = d->names;
    return OSP_OK;
}

/* Builds the dataset from both files' bytes; names are for messages. */
static int idx_build(const void *images, size_t images_len, const void *labels,
                     size_t labels_len, const char *images_name, const char *labels_name,
                     osp_dataset **out) {
    uint32_t n_images, n_labels, rows = 0, cols = 0, unused;
    int rc = check_file(images, images_len, IDX_IMAGES_MAGIC, images_name, &n_images, &rows,
                        &cols);
    if (rc != OSP_OK) return rc;
    rc = check_file(labels, labels_len, IDX_LABELS_MAGIC, labels_name, &n_labels, &unused,
                    &unused);
    if (rc != OSP_OK) return rc;
    if (n_images != n_labels)
        return osp_error(OSP_EFORMAT, "%s: %u images but %s has %u labels", images_name,
                         n_images, labels_name, n_labels);
    if (n_images == 0) return osp_error(OSP_EFORMAT, "%s: IDX file holds no images", images_name);

    idx_dataset *d = calloc(1, sizeof *d);
    if (!d) return osp_error(OSP_ENOMEM, "%s: out of memory", images_name);
    d->base.destroy = idx_destroy;
    d->base.get = idx_get;
    d->base.label = idx_label;
    d->sample_len = (size_t)rows * cols;
    size_t n_pixels = (size_t)n_images * d->sample_len; /* < images_len */
    d->pixels = osp_alloc(n_pixels);
    d->labels = osp_alloc(n_labels);
    size_t source_len = strlen(images_name) + 1;
    d->source = malloc(source_len);
    if (!d->pixels || !d->labels || !d->source) {
        idx_destroy(&d->base);
        return osp_error(OSP_ENOMEM, "%s: out of memory for %zu pixels", images_name, n_pixels);
    }
    memcpy(d->source, images_name, source_len);
    memcpy(d->pixels, (const unsigned char *)images + 16, n_pixels);
    memcpy(d->labels, (const unsigned char *)labels + 8, n_labels);
    int max_label = 0;
    for (uint32_t i = 0; i < n_labels; i++)
        if (d->labels[i] > max_label) max_label = d->labels[i];
    for (int v = 0; v < 256; v++) d->scale[v] = (float)v / 255.0f;

    d->base.count = n_images;
    int64_t dims[3] = {1, rows, cols};
    d->base.sample_shape = osp_shape_make(3, dims);
    d->base.n_classes = max_label + 1;
    d->base.source = d->source;
    if ((rc = make_names(d, images_name)) != OSP_OK) {
        idx_destroy(&d->base);
        return rc;
    }
    *out = &d->base;
    return OSP_OK;
}

int osp_dataset_idx_parse(const void *images, size_t images_len, const void *labels,
                          size_t labels_len, const char *name, osp_dataset **out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_dataset_idx_parse: no output");
    *out = NULL;
    if (!name) name = "(memory)";
    char images_name[256], labels_name[256];
    snprintf(images_name, sizeof images_name, "%s (images)", name);
    snprintf(labels_name, sizeof labels_name, "%s (labels)", name);
    return idx_build(images, images_len, labels, labels_len, images_name, labels_name, out);
}

/* ---- files -------------------------------------------------------------- */

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Maps path; when only path.gz is there, says what to do about it. */
static int map_idx(const char *path, osp_mapped_file *m) {
    int rc = osp_file_map(path, m);
    if (rc == OSP_ENOENT) {
        char gz[4096];
        if ((size_t)snprintf(gz, sizeof gz, "%s.gz", path) < sizeof gz && is_file(gz))
            return osp_error(OSP_ENOENT, "%s: not found, but %s is: gzip files must be "
                             "decompressed first (gunzip %s)", path, gz, gz);
    }
    return rc;
}

/* The labels file beside an images file: "images-idx3" -> "labels-idx1"
 * (also with a dot, as some copies of MNIST are named). */
static int labels_path_for(const char *images, char *buf, size_t cap) {
    static const char *const from[] = {"images-idx3", "images.idx3"};
    static const char *const to[] = {"labels-idx1", "labels.idx1"};
    const char *base = strrchr(images, '/');
    base = base ? base + 1 : images;
    for (int k = 0; k < 2; k++) {
        const char *hit = strstr(base, from[k]);
        if (!hit) continue;
        size_t head = (size_t)(hit - images);
        if ((size_t)snprintf(buf, cap, "%.*s%s%s", (int)head, images, to[k],
                             hit + strlen(from[k])) >= cap)
            return osp_error(OSP_EINVAL, "%s: path is too long", images);
        return OSP_OK;
    }
    return osp_error(OSP_EINVAL, "%s: cannot name the labels file: the images file name should "
                     "contain \"images-idx3\"", images);
}

int osp_dataset_open_idx(const char *path, osp_split split, osp_dataset **out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_dataset_open_idx: no output");
    *out = NULL;
    if (!path || !*path) return osp_error(OSP_EINVAL, "osp_dataset_open_idx: no path");
    if (split != OSP_SPLIT_TRAIN && split != OSP_SPLIT_TEST)
        return osp_error(OSP_EINVAL, "%s: unknown split %d", path, (int)split);
    char images[4096], labels[4096];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        const char *prefix = split == OSP_SPLIT_TRAIN ? "train" : "t10k";
        int a = snprintf(images, sizeof images, "%s/%s-images-idx3-ubyte", path, prefix);
        int b = snprintf(labels, sizeof labels, "%s/%s-labels-idx1-ubyte", path, prefix);
        if (a < 0 || b < 0 || (size_t)a >= sizeof images || (size_t)b >= sizeof labels)
            return osp_error(OSP_EINVAL, "%s: path is too long", path);
    } else {
        if (strlen(path) >= sizeof images)
            return osp_error(OSP_EINVAL, "%s: path is too long", path);
        memcpy(images, path, strlen(path) + 1);
        int rc = labels_path_for(path, labels, sizeof labels);
        if (rc != OSP_OK) return rc;
    }
    osp_mapped_file im, lb;
    int rc = map_idx(images, &im);
    if (rc != OSP_OK) return rc;
    rc = map_idx(labels, &lb);
    if (rc != OSP_OK) {
        osp_file_unmap(&im);
        return rc;
    }
    rc = idx_build(im.data, im.len, lb.data, lb.len, images, labels, out);
    osp_file_unmap(&im);
    osp_file_unmap(&lb);
    return rc;
}
