/* List files: "path<TAB>label" per line. The text is untrusted (it may come
 * from anywhere and is fuzzed): lines are measured before they are copied,
 * and every malformed line is an error naming its line number. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imagelist.h"

#define PATH_CAP 4096
#define LABEL_MAX 255
#define NUMERIC_MAX 65535
#define CLASSES_MAX (1 << 20)

typedef struct labels {
    char *text;      /* NUL-terminated labels, back to back */
    size_t len, cap;
    size_t *at;      /* (n) offsets, one per sample */
    int64_t n, cap_at;
} labels;

static int labels_add(labels *l, const char *s, size_t n) {
    if (l->n == l->cap_at) {
        int64_t cap = l->cap_at ? 2 * l->cap_at : 256;
        size_t *a = realloc(l->at, (size_t)cap * sizeof *a);
        if (!a) return OSP_ENOMEM;
        l->at = a;
        l->cap_at = cap;
    }
    if (l->len + n + 1 > l->cap) {
        size_t cap = l->cap ? l->cap : 1024;
        while (cap < l->len + n + 1) cap *= 2;
        char *t = realloc(l->text, cap);
        if (!t) return OSP_ENOMEM;
        l->text = t;
        l->cap = cap;
    }
    memcpy(l->text + l->len, s, n);
    l->text[l->len + n] = '\0';
    l->at[l->n++] = l->len;
    l->len += n + 1;
    return OSP_OK;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* A label that is a plain number 0..65535 ("007" counts as 7); -1 if not. */
static long numeric(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 5) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= NUMERIC_MAX ? v : -1;
}

static int by_label(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Numbers the samples' classes: raw class ids into b->klass, their names
 * (freed by the caller: *storage and *names) out. */
static int number_classes(labels *l, osp__list_builder *b, const char *name, char ***names,
                          int *n_names, char **storage) {
    long max = -1;
    int all_numeric = 1;
    for (int64_t i = 0; i < l->n && all_numeric; i++) {
        long v = numeric(l->text + l->at[i]);
        if (v < 0) all_numeric = 0;
        else if (v > max) max = v;
    }
    if (all_numeric) {
        int n = (int)max + 1;
        *names = calloc((size_t)n, sizeof **names);
        *storage = malloc((size_t)n * 6);
        if (!*names || !*storage) return osp_error(OSP_ENOMEM, "%s: out of memory", name);
        for (int c = 0; c < n; c++) {
            (*names)[c] = *storage + (size_t)c * 6;
            snprintf((*names)[c], 6, "%d", c & 0xFFFF); /* c <= NUMERIC_MAX */
        }
        for (int64_t i = 0; i < l->n; i++) b->klass[i] = (int32_t)numeric(l->text + l->at[i]);
        *n_names = n;
        return OSP_OK;
    }
    /* Names: sort the samples' labels and give each distinct one the next
     * number. */
    const char **order = malloc((size_t)l->n * sizeof *order);
    if (!order) return osp_error(OSP_ENOMEM, "%s: out of memory", name);
    for (int64_t i = 0; i < l->n; i++) order[i] = l->text + l->at[i];
    qsort(order, (size_t)l->n, sizeof *order, by_label);
    int64_t n = 0;
    for (int64_t i = 0; i < l->n; i++)
        if (i == 0 || strcmp(order[i], order[i - 1])) order[n++] = order[i];
    if (n > CLASSES_MAX) {
        free(order);
        return osp_error(OSP_ERANGE, "%s: %lld classes, more than %d", name, (long long)n,
                         CLASSES_MAX);
    }
    *names = calloc((size_t)n, sizeof **names);
    if (!*names) {
        free(order);
        return osp_error(OSP_ENOMEM, "%s: out of memory", name);
    }
    for (int64_t c = 0; c < n; c++) (*names)[c] = (char *)order[c];
    for (int64_t i = 0; i < l->n; i++) {
        const char *s = l->text + l->at[i];
        int64_t lo = 0, hi = n - 1;
        while (lo < hi) { /* the first name >= s; it is s */
            int64_t mid = lo + (hi - lo) / 2;
            if (strcmp((*names)[mid], s) < 0) lo = mid + 1;
            else hi = mid;
        }
        b->klass[i] = (int32_t)lo;
    }
    free(order);
    *n_names = (int)n;
    *storage = NULL;
    return OSP_OK;
}

static int parse_line(const char *line, size_t n, int line_no, const char *name,
                      const char *base_dir, osp__list_builder *b, labels *l) {
    if (memchr(line, '\0', n)) return osp_error(OSP_EFORMAT, "%s:%d: NUL byte in the line: binary data, not a list "
                         "file of path<TAB>label lines", name, line_no);
    const char *tab = NULL;
    for (size_t i = n; i-- > 0;)
        if (line[i] == '\t') {
            tab = line + i;
            break;
        }
    if (!tab) return osp_error(OSP_EFORMAT, "%s:%d: expected path<TAB>label", name, line_no);
    size_t path_len = (size_t)(tab - line);
    const char *lab = tab + 1, *end = line + n;
    while (lab < end && is_space(*lab)) lab++;
    while (end > lab && is_space(end[-1])) end--;
    if (path_len == 0) return osp_error(OSP_EFORMAT, "%s:%d: empty path", name, line_no);
    if (end == lab) return osp_error(OSP_EFORMAT, "%s:%d: empty label", name, line_no);
    if ((size_t)(end - lab) > LABEL_MAX)
        return osp_error(OSP_EFORMAT, "%s:%d: label longer than %d bytes", name, line_no, LABEL_MAX);
    char path[PATH_CAP];
    int relative = line[0] != '/' && base_dir && *base_dir && strcmp(base_dir, ".");
    size_t base_len = relative ? strlen(base_dir) : 0;
    if (base_len + 1 + path_len >= sizeof path)
        return osp_error(OSP_EFORMAT, "%s:%d: path is too long", name, line_no);
    size_t at = 0;
    if (relative) {
        memcpy(path, base_dir, base_len);
        path[base_len] = '/';
        at = base_len + 1;
    }
    memcpy(path + at, line, path_len);
    if (osp__builder_add(b, path, at + path_len, 0) || labels_add(l, lab, (size_t)(end - lab)))
        return osp_error(OSP_ENOMEM, "%s:%d: out of memory", name, line_no);
    return OSP_OK;
}

int osp_dataset_list_parse(const char *text, size_t len, const char *name, const char *base_dir,
                           const osp_image_data_options *opt, osp_dataset **out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_dataset_list_parse: no output");
    *out = NULL;
    if (!name) name = "(list)";
    if (!text && len) return osp_error(OSP_EINVAL, "%s: NULL text", name);
    int rc = osp__check_image_options(opt, name);
    if (rc) return rc;
    osp__list_builder b = {0};
    labels l = {0};
    int line_no = 0;
    for (size_t pos = 0; !rc && pos < len;) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl != NULL);
        if (++line_no == INT32_MAX) rc = osp_error(OSP_ERANGE, "%s: too many lines", name);
        size_t k = 0;
        while (k < n && is_space(line[k]) && line[k] != '\t') k++;
        if (k == n || line[k] == '#') continue; /* blank or a comment */
        while (n > 0 && line[n - 1] == '\r') n--;
        if (!rc) rc = parse_line(line, n, line_no, name, base_dir, &b, &l);
    }
    char **names = NULL, *storage = NULL;
    int n_names = 0;
    if (!rc && b.n == 0) rc = osp_error(OSP_EFORMAT, "%s: no samples listed", name);
    if (!rc) rc = number_classes(&l, &b, name, &names, &n_names, &storage);
    if (!rc) rc = osp__builder_finish(&b, name, (const char *const *)names, n_names, opt, out);
    free(names);
    free(storage);
    free(l.text);
    free(l.at);
    osp__builder_free(&b);
    return rc;
}

int osp_dataset_open_list(const char *path, const osp_image_data_options *opt,
                          osp_dataset **out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_dataset_open_list: no output");
    *out = NULL;
    if (!path || !*path) return osp_error(OSP_EINVAL, "osp_dataset_open_list: no path");
    void *text;
    size_t len;
    /* 1 GiB of text is some 10 million lines: far beyond any list file */
    int rc = osp_file_read_all(path, (size_t)1 << 30, &text, &len);
    if (rc) return rc;
    char dir[PATH_CAP];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if ((size_t)(slash - path) >= sizeof dir) dir[0] = '\0';
    else snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    rc = osp_dataset_list_parse(text, len, path, dir, opt, out);
    osp_free(text);
    return rc;
}
