/* One entry point for every kind of dataset, chosen by what the path is:
 * a folder with MNIST IDX files, an IDX images file, a folder of class
 * folders, or a list file. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "osprey/data.h"

static int exists(const char *dir, const char *name) {
    char path[4096];
    struct stat st;
    return (size_t)snprintf(path, sizeof path, "%s/%s", dir, name) < sizeof path &&
           stat(path, &st) == 0;
}

static int idx_folder(const char *dir) {
    static const char *const files[] = {"train-images-idx3-ubyte", "t10k-images-idx3-ubyte",
                                        "train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"};
    for (size_t k = 0; k < sizeof files / sizeof files[0]; k++)
        if (exists(dir, files[k])) return 1;
    return 0;
}

/* IDX images files start with the big-endian magic 0x00000803. */
static int idx_file(const char *path) {
    unsigned char head[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return n == 4 && head[0] == 0 && head[1] == 0 && head[2] == 8 && head[3] == 3;
}

/* A file that is plainly not a list file (an image, a model, a NumPy
 * array...): says what it is and what a dataset is, rather than how its
 * bytes fail to parse as lines. */
static int not_a_list(const char *path) {
    static const char expected[] = "DATA is a folder of class folders, a list file of "
                                   "path<TAB>label lines, a folder holding the MNIST IDX files "
                                   "or an IDX images file";
    osp_file_kind kind = osp_file_sniff_path(path);
    const char *what = osp_file_kind_phrase(kind);
    switch (kind) {
    case OSP_FILE_UNKNOWN: return OSP_OK;
    case OSP_FILE_JPEG:
    case OSP_FILE_PNG:
    case OSP_FILE_WEBP:
        return osp_error(OSP_EFORMAT, "%s is %s, not a dataset: images are read from a folder "
                         "with one sub-folder of images per class (give that folder) or from a "
                         "list file of path<TAB>label lines", path, what);
    case OSP_FILE_SAFETENSORS:
        return osp_error(OSP_EFORMAT, "%s is %s, not a dataset: %s", path, what, expected);
    case OSP_FILE_IDX_LABELS:
        return osp_error(OSP_EFORMAT, "%s is %s: give the images file (its labels are found "
                         "beside it) or the folder holding both", path, what);
    case OSP_FILE_GZIP:
        return osp_error(OSP_EFORMAT, "%s is %s, not a dataset: %s (compressed IDX files are "
                         "read inside a folder)", path, what, expected);
    default:
        return osp_error(OSP_EFORMAT, "%s is %s, not a dataset: %s", path, what, expected);
    }
}

int osp_dataset_open(const char *path, osp_split split, const osp_image_data_options *opt,
                     osp_dataset **out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_dataset_open: no output");
    *out = NULL;
    if (!path || !*path) return osp_error(OSP_EINVAL, "osp_dataset_open: no path");
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        return osp_error(e == ENOENT ? OSP_ENOENT : OSP_EIO, "%s: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        if (idx_folder(path)) return osp_dataset_open_idx(path, split, out);
        return osp_dataset_open_folder(path, opt, out);
    }
    if (idx_file(path)) return osp_dataset_open_idx(path, split, out);
    int rc = not_a_list(path);
    if (rc) return rc;
    return osp_dataset_open_list(path, opt, out);
}
