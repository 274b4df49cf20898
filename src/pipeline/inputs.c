/* A stream of image paths from files, folder trees, list files and stdin.
 * Folders are walked one level at a time (each level's names sorted), and
 * lists are read a line at a time, so memory does not grow with the
 * corpus. */
#include <dirent.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "osprey/image.h"
#include "osprey/pipeline.h"

#define MAX_DEPTH 64
#define NAMED_SKIPS 3

typedef enum kind { SRC_IMAGE, SRC_FOLDER, SRC_LIST, SRC_STDIN } kind;

typedef struct level {
    char *dir; /* this level's path */
    char **names;
    size_t n, next;
} level;

struct osp_inputs {
    int n_sources, source;
    char **sources;
    kind *kinds;
    int started;      /* the current source has been opened */
    level stack[MAX_DEPTH];
    int depth;        /* levels on the stack */
    FILE *list;
    char *list_dir;   /* relative paths in the list are relative to it */
    int64_t list_line;
    char *line;
    size_t line_cap;
    char *path;       /* the path handed out last */
    size_t path_cap;
    int64_t skipped;
};

int64_t osp_image_id(const char *path) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(path, strlen(path), d, &n, EVP_sha256(), NULL);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | d[i];
    return (int64_t)(v & INT64_MAX);
}

/* An image by its first bytes, else a list if it reads as text. */
static int classify_file(const char *path, kind *out) {
    FILE *f = fopen(path, "rb");
    if (!f) return osp_error(OSP_ENOENT, "%s: cannot be read", path);
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (osp_image_sniff(buf, n) != OSP_IMAGE_UNKNOWN || n == 0 || memchr(buf, 0, n) ||
        osp_image_name_known(path)) {
        *out = SRC_IMAGE; /* unreadable ones become error rows, named */
        return OSP_OK;
    }
    *out = SRC_LIST;
    return OSP_OK;
}

int osp_inputs_new(const char *const *sources, int n, osp_inputs **out) {
    *out = NULL;
    if (n <= 0) return osp_error(OSP_EINVAL, "no inputs: give image files, folders, list files or -");
    osp_inputs *in = calloc(1, sizeof *in);
    if (!in || !(in->sources = calloc((size_t)n, sizeof *in->sources)) ||
        !(in->kinds = calloc((size_t)n, sizeof *in->kinds))) {
        osp_inputs_free(in);
        return osp_error(OSP_ENOMEM, "out of memory");
    }
    in->n_sources = n;
    int stdin_seen = 0;
    /* Every source is checked before the first image is handed out: a
     * typo in the last argument fails at once, not after hours of work. */
    for (int i = 0; i < n; i++) {
        int rc = OSP_OK;
        if (!(in->sources[i] = strdup(sources[i]))) rc = osp_error(OSP_ENOMEM, "out of memory");
        struct stat st;
        if (rc) {
        } else if (!strcmp(sources[i], "-")) {
            if (stdin_seen++) rc = osp_error(OSP_EINVAL, "'-' (paths on standard input) is given twice");
            in->kinds[i] = SRC_STDIN;
        } else if (stat(sources[i], &st) != 0) {
            rc = osp_error(OSP_ENOENT, "%s: no such file or folder", sources[i]);
        } else if (S_ISDIR(st.st_mode)) {
            in->kinds[i] = SRC_FOLDER;
        } else if (S_ISREG(st.st_mode)) {
            rc = classify_file(sources[i], &in->kinds[i]);
        } else {
            rc = osp_error(OSP_EINVAL, "%s: not a file or a folder", sources[i]);
        }
        if (rc) {
            osp_inputs_free(in);
            return rc;
        }
    }
    *out = in;
    return OSP_OK;
}

static void free_level(level *l) {
    for (size_t i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    free(l->dir);
    memset(l, 0, sizeof *l);
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int join(char **buf, size_t *cap, const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    int slash = a > 0 && dir[a - 1] != '/';
    if (a + b + 2 > *cap) {
        size_t c = (a + b + 2) * 2;
        char *p = realloc(*buf, c);
        if (!p) return osp_error(OSP_ENOMEM, "out of memory");
        *buf = p;
        *cap = c;
    }
    memcpy(*buf, dir, a);
    if (slash) (*buf)[a++] = '/';
    memcpy(*buf + a, name, b + 1);
    return OSP_OK;
}

/* Pushes a level for folder dir: its names, sorted. */
static int push_level(osp_inputs *in, const char *dir) {
    if (in->depth >= MAX_DEPTH)
        return osp_error(OSP_ERANGE, "%s: folders nested more than %d deep", dir, MAX_DEPTH);
    DIR *d = opendir(dir);
    if (!d) return osp_error(OSP_EIO, "%s: cannot list the folder", dir);
    level l = {0};
    size_t cap = 0;
    int rc = OSP_OK;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue; /* hidden, '.', '..' */
        if (l.n == cap) {
            cap = cap ? cap * 2 : 64;
            char **p = realloc(l.names, cap * sizeof *p);
            if (!p) rc = osp_error(OSP_ENOMEM, "out of memory");
            else l.names = p;
        }
        if (!rc && !(l.names[l.n++] = strdup(e->d_name))) rc = osp_error(OSP_ENOMEM, "out of memory");
    }
    closedir(d);
    if (!rc && !(l.dir = strdup(dir))) rc = osp_error(OSP_ENOMEM, "out of memory");
    if (rc) {
        free_level(&l);
        return rc;
    }
    if (l.n) qsort(l.names, l.n, sizeof *l.names, by_name);
    in->stack[in->depth++] = l;
    return OSP_OK;
}

/* The next image below the folder on the stack, or NULL when it is done. */
static int next_in_folder(osp_inputs *in, const char **path) {
    while (in->depth > 0) {
        level *l = &in->stack[in->depth - 1];
        if (l->next >= l->n) {
            free_level(l);
            in->depth--;
            continue;
        }
        const char *name = l->names[l->next++];
        int rc = join(&in->path, &in->path_cap, l->dir, name);
        if (rc) return rc;
        struct stat st;
        if (stat(in->path, &st) != 0) continue; /* gone since it was listed */
        if (S_ISDIR(st.st_mode)) {
            char *sub = strdup(in->path);
            if (!sub) return osp_error(OSP_ENOMEM, "out of memory");
            rc = push_level(in, sub);
            free(sub);
            if (rc) return rc;
            continue;
        }
        if (S_ISREG(st.st_mode) && osp_image_name_known(name)) {
            *path = in->path;
            return OSP_OK;
        }
        if (in->skipped++ < NAMED_SKIPS)
            osp_log(OSP_LOG_WARN, "warning: %s: left out (not a .jpg, .jpeg, .png or .webp file)",
                    in->path);
    }
    *path = NULL;
    return OSP_OK;
}

/* The next path of the open list, or NULL at its end. */
static int next_in_list(osp_inputs *in, const char **path) {
    ssize_t len;
    while ((len = getline(&in->line, &in->line_cap, in->list)) >= 0) {
        in->list_line++;
        if ((size_t)len != strlen(in->line))
            return osp_error(OSP_EFORMAT, "%s:%lld: a NUL byte in the line: not a list of paths",
                             in->sources[in->source], (long long)in->list_line);
        char *s = in->line;
        s[strcspn(s, "\t\r\n")] = 0; /* a label after a TAB is not ours */
        while (*s == ' ') s++;
        size_t n = strlen(s);
        while (n > 0 && s[n - 1] == ' ') s[--n] = 0;
        if (n == 0 || s[0] == '#') continue;
        int rc = s[0] == '/' || !in->list_dir ? join(&in->path, &in->path_cap, "", s)
                                              : join(&in->path, &in->path_cap, in->list_dir, s);
        if (rc) return rc;
        *path = in->path;
        return OSP_OK;
    }
    *path = NULL;
    return OSP_OK;
}

static void close_source(osp_inputs *in) {
    while (in->depth > 0) free_level(&in->stack[--in->depth]);
    if (in->list && in->list != stdin) fclose(in->list);
    in->list = NULL;
    free(in->list_dir);
    in->list_dir = NULL;
    in->started = 0;
    in->source++;
}

int osp_inputs_next(osp_inputs *in, const char **path) {
    *path = NULL;
    while (in->source < in->n_sources) {
        const char *src = in->sources[in->source];
        int rc = OSP_OK;
        switch (in->kinds[in->source]) {
        case SRC_IMAGE:
            if (in->started) break;
            in->started = 1;
            if ((rc = join(&in->path, &in->path_cap, "", src))) return rc;
            *path = in->path;
            return OSP_OK;
        case SRC_FOLDER:
            if (!in->started) {
                in->started = 1;
                if ((rc = push_level(in, src))) return rc;
            }
            if ((rc = next_in_folder(in, path)) || *path) return rc;
            break;
        case SRC_LIST:
        case SRC_STDIN:
            if (!in->started) {
                in->started = 1;
                in->list_line = 0;
                if (in->kinds[in->source] == SRC_STDIN) {
                    in->list = stdin;
                } else {
                    if (!(in->list = fopen(src, "r"))) return osp_error(OSP_EIO, "%s: cannot be read", src);
                    const char *slash = strrchr(src, '/');
                    if (slash && !(in->list_dir = strndup(src, (size_t)(slash - src + 1))))
                        return osp_error(OSP_ENOMEM, "out of memory");
                }
            }
            if ((rc = next_in_list(in, path)) || *path) return rc;
            break;
        }
        close_source(in);
    }
    return OSP_OK;
}

int64_t osp_inputs_skipped(const osp_inputs *in) { return in->skipped; }

void osp_inputs_free(osp_inputs *in) {
    if (!in) return;
    while (in->depth > 0) free_level(&in->stack[--in->depth]);
    if (in->list && in->list != stdin) fclose(in->list);
    free(in->list_dir);
    for (int i = 0; in->sources && i < in->n_sources; i++) free(in->sources[i]);
    free(in->sources);
    free(in->kinds);
    free(in->line);
    free(in->path);
    free(in);
}
