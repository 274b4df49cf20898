/* Image folders: ROOT/<class>/.../<image>. Directory order is whatever the
 * file system returns, so every listing is sorted: the same folder gives
 * the same classes and samples in the same order on every machine, which
 * the trainer's reproducibility rests on. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "imagelist.h"

#define MAX_DEPTH 16
#define PATH_CAP 4096

typedef struct names {
    char **v;
    size_t n, cap;
} names;

static void names_free(names *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int names_push(names *s, const char *name) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        char **v = realloc(s->v, cap * sizeof *v);
        if (!v) return OSP_ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(name))) return OSP_ENOMEM;
    s->n++;
    return OSP_OK;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The visible entries of dir, sorted bytewise. */
static int list_dir(const char *dir, names *out) {
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        return osp_error(e == ENOENT ? OSP_ENOENT : OSP_EIO, "%s: cannot read folder: %s", dir,
                         strerror(e));
    }
    struct dirent *e;
    int rc = OSP_OK;
    while (!rc && (e = readdir(d)))
        if (e->d_name[0] != '.' && names_push(out, e->d_name))
            rc = osp_error(OSP_ENOMEM, "%s: out of memory listing the folder", dir);
    closedir(d);
    if (!rc && out->n > 1) qsort(out->v, out->n, sizeof *out->v, by_name);
    return rc;
}

static const char NOT_AN_IMAGE[] = "not a .jpg, .jpeg, .png or .webp name";
static const char DANGLING[] = "a link to nothing";
static const char NOT_A_FILE[] = "not a regular file";

/* Left-out files named in the warning; the dataset keeps more. */
#define LEFT_OUT_WARNED 5

typedef struct walk {
    osp__list_builder *b;
    int64_t ignored;
    osp_left_out *left_out; /* the first OSP_DATASET_LEFT_OUT_KEPT */
    int n_kept;
    dev_t dev[MAX_DEPTH + 1]; /* the folders being walked, to stop at loops */
    ino_t ino[MAX_DEPTH + 1];
} walk;

/* Counts a file that is not a sample and keeps the first ones' names;
 * without memory for a name the file is still counted. */
static void leave_out(walk *w, const char *path, const char *reason) {
    w->ignored++;
    if (w->n_kept >= OSP_DATASET_LEFT_OUT_KEPT) return;
    if (!w->left_out) {
        w->left_out = calloc(OSP_DATASET_LEFT_OUT_KEPT, sizeof *w->left_out);
        if (!w->left_out) return;
    }
    char *copy = strdup(path);
    if (!copy) return;
    w->left_out[w->n_kept++] = (osp_left_out){copy, reason};
}

static void walk_free(walk *w) {
    for (int i = 0; i < w->n_kept; i++) free(w->left_out[i].path);
    free(w->left_out);
    w->left_out = NULL;
    w->n_kept = 0;
}

/* One warning that counts the files left out and names the first few. */
static void warn_left_out(const walk *w, const char *root) {
    char listed[1024] = "";
    size_t used = 0;
    int named = 0;
    for (; named < w->n_kept && named < LEFT_OUT_WARNED; named++) {
        int k = snprintf(listed + used, sizeof listed - used, "%s%s", named ? ", " : "",
                         w->left_out[named].path);
        if (k < 0 || (size_t)k >= sizeof listed - used) break;
        used += (size_t)k;
    }
    int all_images = 1;
    for (int i = 0; i < w->n_kept; i++) all_images &= w->left_out[i].reason == NOT_AN_IMAGE;
    char more[64] = "";
    if (w->ignored > named) snprintf(more, sizeof more, ", and %lld more", (long long)(w->ignored - named));
    osp_log(OSP_LOG_WARN, "%s: %lld file%s left out (%s): %s%s", root, (long long)w->ignored,
            w->ignored == 1 ? "" : "s",
            all_images ? "names without .jpg, .jpeg, .png or .webp" : "other names, dangling links",
            listed, more);
}

static int walk_dir(walk *w, const char *dir, int depth, int32_t klass, const struct stat *st) {
    for (int k = 0; k < depth; k++)
        if (w->dev[k] == st->st_dev && w->ino[k] == st->st_ino) return OSP_OK; /* a link loop */
    w->dev[depth] = st->st_dev;
    w->ino[depth] = st->st_ino;
    names entries = {0};
    int rc = list_dir(dir, &entries);
    char path[PATH_CAP];
    for (size_t i = 0; !rc && i < entries.n; i++) {
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, entries.v[i]) >= sizeof path) {
            rc = osp_error(OSP_EINVAL, "%s/%s: path is too long", dir, entries.v[i]);
            break;
        }
        struct stat s;
        if (stat(path, &s) != 0) {
            leave_out(w, path, DANGLING);
            continue;
        }
        if (S_ISDIR(s.st_mode)) {
            if (depth < MAX_DEPTH) rc = walk_dir(w, path, depth + 1, klass, &s);
        } else if (S_ISREG(s.st_mode) && osp_image_name_known(entries.v[i])) {
            rc = osp__builder_add(w->b, path, strlen(path), klass);
        } else {
            leave_out(w, path, S_ISREG(s.st_mode) ? NOT_AN_IMAGE : NOT_A_FILE);
        }
    }
    names_free(&entries);
    return rc;
}

int osp_dataset_open_folder(const char *dir, const osp_image_data_options *opt,
                            osp_dataset **out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_dataset_open_folder: no output");
    *out = NULL;
    if (!dir || !*dir) return osp_error(OSP_EINVAL, "osp_dataset_open_folder: no path");
    int rc = osp__check_image_options(opt, dir);
    if (rc) return rc;
    /* "photos/" and "photos" name the same samples */
    char root[PATH_CAP];
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    if (len >= sizeof root) return osp_error(OSP_EINVAL, "%s: path is too long", dir);
    memcpy(root, dir, len);
    root[len] = '\0';

    names entries = {0}, classes = {0};
    if ((rc = list_dir(root, &entries))) return rc;
    char path[PATH_CAP];
    for (size_t i = 0; !rc && i < entries.n; i++) {
        struct stat s;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", root, entries.v[i]) < sizeof path &&
            stat(path, &s) == 0 && S_ISDIR(s.st_mode) && names_push(&classes, entries.v[i]))
            rc = osp_error(OSP_ENOMEM, "%s: out of memory", root);
    }
    names_free(&entries);
    if (!rc && classes.n == 0)
        rc = osp_error(OSP_EFORMAT, "%s: no class folders (an image folder holds one sub-folder "
                       "per class)", root);
    if (!rc && classes.n > INT32_MAX / 2) rc = osp_error(OSP_ERANGE, "%s: too many classes", root);
    osp__list_builder b = {0};
    walk w = {.b = &b};
    for (size_t k = 0; !rc && k < classes.n; k++) {
        struct stat s;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", root, classes.v[k]) >= sizeof path)
            rc = osp_error(OSP_EINVAL, "%s/%s: path is too long", root, classes.v[k]);
        else if (stat(path, &s) != 0) rc = osp_error(OSP_EIO, "%s: vanished while listing", path);
        else rc = walk_dir(&w, path, 0, (int32_t)k, &s);
    }
    if (!rc && w.ignored) warn_left_out(&w, root);
    if (!rc)
        rc = osp__builder_finish(&b, root, (const char *const *)classes.v, (int)classes.n, opt, out);
    if (!rc) {
        (*out)->n_left_out = w.ignored;
        (*out)->n_left_out_kept = w.n_kept;
        (*out)->left_out = w.left_out;
        w.left_out = NULL;
        w.n_kept = 0;
    }
    walk_free(&w);
    osp__builder_free(&b);
    names_free(&classes);
    return rc;
}
