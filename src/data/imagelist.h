/* A dataset of image files with labels, built by the folder scanner
 * (folder.c) and the list-file parser (listfile.c); samples are decoded
 * and transformed on demand (imagelist.c). */
#ifndef OSPREY_DATA_IMAGELIST_H
#define OSPREY_DATA_IMAGELIST_H

#include "osprey/data.h"

/* Paths and their raw class numbers, as they are found. */
typedef struct osp__list_builder {
    char *text;        /* NUL-terminated paths, back to back */
    size_t text_len, text_cap;
    size_t *path;      /* (n) offsets into text */
    int32_t *klass;    /* (n) raw class numbers */
    int64_t n, cap;
    /* Multi-label lists: sample i's raw class numbers are
     * hot_ids[hot_at[i] .. hot_at[i + 1]) (hot_at has n + 1 entries); klass
     * is then ignored. Set by the caller before osp__builder_finish, which
     * takes them. */
    int multi;
    int64_t *hot_at;
    int32_t *hot_ids;
} osp__list_builder;

int osp__builder_add(osp__list_builder *b, const char *path, size_t path_len, int32_t klass);
void osp__builder_free(osp__list_builder *b);

/* Builds the dataset; raw class k is named names[k] (n_names of them).
 * With opt->class_names, each raw class is renumbered to its position
 * there. Takes the builder's arrays (the builder is left empty). */
int osp__builder_finish(osp__list_builder *b, const char *source, const char *const *names,
                        int n_names, const osp_image_data_options *opt, osp_dataset **out);

/* Checks opt and the transform in it; a message naming source. */
int osp__check_image_options(const osp_image_data_options *opt, const char *source);

#endif
