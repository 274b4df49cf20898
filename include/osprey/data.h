/* osprey data: datasets of labelled images. A dataset yields samples as
 * float32 C x H x W in [0, 1] (before the model's normalisation) and an
 * integer label. Image datasets (a folder per class, or a list file) decode
 * and resize on demand (osprey/image.h); a loader (osp_loader) reads
 * batches ahead of the trainer on worker threads. */
#ifndef OSPREY_DATA_H
#define OSPREY_DATA_H

#include <stdint.h>

#include "osprey/core.h"
#include "osprey/image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum osp_split { OSP_SPLIT_TRAIN = 0, OSP_SPLIT_TEST = 1 } osp_split;

typedef struct osp_dataset osp_dataset;
typedef struct osp_skip_log osp_skip_log;

/* A file an image folder holds that is not a sample, and why. */
typedef struct osp_left_out {
    char *path;
    const char *reason; /* static text: "not a .jpg, .jpeg, .png or .webp name", ... */
} osp_left_out;
/* The left-out files a dataset names (it counts them all). */
#define OSP_DATASET_LEFT_OUT_KEPT 1000

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
    /* The rest is optional: zero (as calloc leaves it) means "none". */
    /* Sample i with random augmentation drawn from rng; otherwise as get. */
    int (*get_augmented)(osp_dataset *ds, int64_t i, osp_rng *rng, float *out, int32_t *label);
    /* The label of sample i without decoding it. */
    int (*label)(const osp_dataset *ds, int64_t i, int32_t *label);
    /* What sample i is called (its file), for messages and stable splits. */
    const char *(*name)(const osp_dataset *ds, int64_t i);
    /* How loaders read it: decoding threads (0 = none: the caller's
     * threads read each batch when it is asked for, which suits samples in
     * memory; image datasets start with osp_threads_get()) and batches
     * decoded ahead (0 = 2). Whoever opens the dataset may change them. */
    int load_workers, load_prefetch;
    /* Unreadable samples that loaders met (made by the first loader,
     * released by osp_dataset_free). */
    osp_skip_log *skips;
    /* Files under an image folder left out as samples (other extensions,
     * dangling links): how many in all, and the first of them (at most
     * OSP_DATASET_LEFT_OUT_KEPT) with the reason. Released by
     * osp_dataset_free. */
    int64_t n_left_out;
    int n_left_out_kept;
    osp_left_out *left_out;
    /* Multi-label data (docs/multilabel.md): each sample has a set of
     * labels, possibly empty (a negative), not one. Then get, get_augmented
     * and label give the sample's first label (the lowest number), or -1
     * when it has none, and labels_multi writes n_classes bytes into hot:
     * 1 for each label the sample has, else 0. Single-label datasets leave
     * both zero. */
    int multi_label;
    int (*labels_multi)(const osp_dataset *ds, int64_t i, uint8_t *hot);
};

/* Releases ds (and its skip log) through its destroy. */
OSP_API void osp_dataset_free(osp_dataset *ds);

/* IDX files (the MNIST format: big-endian magic 0x00000803 images,
 * 0x00000801 labels). path is a directory holding the four standard MNIST
 * files (split picks train-* or t10k-*), or an images file whose labels file
 * is named by replacing "images-idx3" with "labels-idx1". */
OSP_API int osp_dataset_open_idx(const char *path, osp_split split, osp_dataset **out);
/* The same from memory (for fuzzing): images and labels file contents. */
OSP_API int osp_dataset_idx_parse(const void *images, size_t images_len, const void *labels,
                                  size_t labels_len, const char *name, osp_dataset **out);

/* ---- image datasets ------------------------------------------------------ */

typedef struct osp_image_data_options {
    osp_transform transform; /* the samples' shape, resize and augmentation */
    int64_t max_pixels;      /* images larger than this are unreadable
                                (0 = OSP_IMAGE_MAX_PIXELS) */
    /* Number the classes by these names (a validation set must number them
     * as its training set does); a class not among them is an error.
     * NULL: the dataset's own class names, sorted. */
    const char *const *class_names;
    int n_classes;
} osp_image_data_options;

/* A folder with one sub-folder per class: the sub-folders' names, sorted
 * bytewise, are the classes; every .jpg, .jpeg, .png and .webp file below
 * each (any depth, names sorted) is a sample. Hidden files and other
 * extensions are left out. Files are only listed here; each is decoded when
 * its sample is read, so an unreadable file is found then (see osp_loader). */
OSP_API int osp_dataset_open_folder(const char *dir, const osp_image_data_options *opt,
                                    osp_dataset **out);
/* A list file: one sample a line, "path<TAB>label"; relative paths are
 * relative to the list file's folder; blank lines and lines starting with
 * '#' are skipped. Labels are class names, numbered in sorted order, unless
 * every label is a number 0..65535: then the numbers are the labels.
 *
 * Multi-label lists (the dataset's multi_label is set): a file is
 * multi-label when any line's label field holds a comma
 * ("path<TAB>cat,dog"; in such a file an empty field, "path<TAB>", is an
 * image with no labels, empty items are ignored, so "path<TAB>cat," is a
 * one-label line that makes the file multi-label), or when it is JSON
 * Lines: its first line that is not blank or a comment starts with '{',
 * and every line is an object {"path": "...", "labels": ["cat", ...]}
 * ("labels" may be empty or absent: a negative). A file without commas in
 * its labels is read exactly as a single-label list. */
OSP_API int osp_dataset_open_list(const char *path, const osp_image_data_options *opt,
                                  osp_dataset **out);
/* The same from memory (for fuzzing); base_dir prefixes relative paths. */
OSP_API int osp_dataset_list_parse(const char *text, size_t len, const char *name,
                                   const char *base_dir, const osp_image_data_options *opt,
                                   osp_dataset **out);

/* Any dataset by its path: a folder holding MNIST IDX files, an IDX images
 * file, a folder of class folders, or a list file. split chooses the IDX
 * files; opt is needed for image datasets. */
OSP_API int osp_dataset_open(const char *path, osp_split split, const osp_image_data_options *opt,
                             osp_dataset **out);

/* Holds out a fraction of ds for validation: in each class, the samples
 * whose names (indexes, for unnamed samples) hash lowest, so that the split
 * depends neither on the seed nor on the order of files, and the same file
 * stays on the same side as files are added. The two views share ds, which
 * belongs to them from then on: free both views, never ds. The held-out
 * view reads without augmentation. */
OSP_API int osp_dataset_split(osp_dataset *ds, double fraction, osp_dataset **train,
                              osp_dataset **held_out);

/* ---- unreadable samples ----------------------------------------------------- */

/* How many of ds's samples loaders have found unreadable. */
OSP_API int64_t osp_dataset_skipped(const osp_dataset *ds);
/* Logs a warning with each unreadable sample's message that has not been
 * reported yet (so each file is named once), and returns how many. */
OSP_API int64_t osp_dataset_report_skipped(osp_dataset *ds);

/* ---- loader --------------------------------------------------------------- */

/* Reads batches on worker threads ahead of the caller, into a bounded ring
 * of batch buffers. What a batch holds depends only on the dataset, the
 * order, the epoch and the seed, never on the number of workers or on which
 * worker decoded what: sample i of epoch e is augmented with a generator
 * derived from (seed, e, i). A sample that cannot be read is recorded in
 * the dataset's skip log and then, for training, replaced by the next
 * readable sample in dataset order (augmented as sample i would have been),
 * or, for evaluation, left out of its batch. */
typedef struct osp_loader osp_loader;

typedef struct osp_loader_config {
    int batch;               /* samples per batch */
    int workers;             /* decoding threads; 0 = decode in osp_loader_next */
    int prefetch;            /* batches decoded ahead (>= 1) */
    uint64_t seed;
    int augment;             /* use get_augmented where the dataset has it */
    int drop_unreadable;     /* leave unreadable samples out (evaluation) */
    int n_classes;           /* labels must lie in [0, n_classes); 0 = unchecked */
    int normalize;           /* apply mean/std per channel to each sample */
    /* Multi-label: the dataset must be multi_label and n_classes > 0; the
     * loader keeps each sample's multi-hot vector (n_classes values), read
     * with osp_loader_next_hot, and does not check the int labels. */
    int multi_hot;
    float mean[4], std[4];   /* channels past the fourth use [0] */
} osp_loader_config;

/* batch 64, the dataset's load_workers and load_prefetch (else 2 ahead),
 * seed 1, std 1, nothing else. */
OSP_API osp_loader_config osp_loader_defaults(const osp_dataset *ds);
OSP_API int osp_loader_new(osp_dataset *ds, const osp_loader_config *cfg, osp_loader **out);
/* Starts a pass over samples order[first .. n) (order is copied; NULL means
 * 0, 1, 2, ...) for epoch, in batches of cfg->batch, cancelling what is
 * left of the previous pass. */
OSP_API int osp_loader_start(osp_loader *l, int64_t epoch, const int64_t *order, int64_t n,
                             int64_t first);
/* Copies the next batch into x (batch x sample floats) and labels, and its
 * size into *n: cfg->batch but for the last batch of a pass (and batches
 * that lost unreadable samples); 0 at the end of the pass. Waits for the
 * workers when the batch is not ready. */
OSP_API int osp_loader_next(osp_loader *l, float *x, int32_t *labels, int *n);
/* The same for a multi_hot loader: targets gets n x cfg->n_classes floats,
 * 1 where the sample has the label, else 0. */
OSP_API int osp_loader_next_hot(osp_loader *l, float *x, float *targets, int *n);
/* Samples replaced or left out so far in this pass. */
OSP_API int64_t osp_loader_skipped(const osp_loader *l);
/* When the loader's dataset has unreadable files not named yet: logs a
 * warning with how many samples of this pass were unreadable (replaced or
 * left out, as cfg->drop_unreadable says), then names those files, each
 * once (osp_dataset_report_skipped). what says where ("epoch 3"). Quiet
 * otherwise, so that it can be called after every pass. */
OSP_API void osp_loader_report(osp_loader *l, const char *what);
/* Stops the workers and frees the loader (the dataset stays). */
OSP_API void osp_loader_free(osp_loader *l);

#ifdef __cplusplus
}
#endif

#endif
