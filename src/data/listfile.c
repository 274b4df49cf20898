/* List files: "path<TAB>label" per line, "path<TAB>label,label,..." for
 * multi-label data, or JSON Lines {"path": ..., "labels": [...]} (the rule
 * is in osprey/data.h). The text is untrusted (it may come
 * from anywhere and is fuzzed): lines are measured before they are copied,
 * and every malformed line is an error naming its line number. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

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
static int number_classes(labels *l, int32_t *ids, const char *name, char ***names,
                          int *n_names, char **storage) {
    long max = -1;
    int all_numeric = 1;
    for (int64_t i = 0; i < l->n && all_numeric; i++) {
        long v = numeric(l->text + l->at[i]);
        if (v < 0) all_numeric = 0;
        else if (v > max) max = v;
    }
    if (l->n == 0) {
        return osp_error(OSP_EFORMAT, "%s: no image has a label: a multi-label list needs at "
                         "least one", name);
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
        for (int64_t i = 0; i < l->n; i++) ids[i] = (int32_t)numeric(l->text + l->at[i]);
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
        ids[i] = (int32_t)lo;
    }
    free(order);
    *n_names = (int)n;
    *storage = NULL;
    return OSP_OK;
}

static int add_sample(const char *line, size_t path_len, int line_no, const char *name,
                      const char *base_dir, osp__list_builder *b, labels *l, const char *lab,
                      size_t lab_len);

static int parse_line(const char *line, size_t n, int line_no, const char *name,
                      const char *base_dir, osp__list_builder *b, labels *l, int *multi,
                      int *first_empty) {
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
    size_t field = (size_t)(end - lab);
    if (field == 0 && !*first_empty) *first_empty = line_no; /* an error unless multi-label */
    if (memchr(lab, ',', field)) {
        *multi = 1;
        for (const char *p = lab; p < end;) {
            const char *c = memchr(p, ',', (size_t)(end - p));
            const char *e = c ? c : end;
            if ((size_t)(e - p) > LABEL_MAX)
                return osp_error(OSP_EFORMAT, "%s:%d: label longer than %d bytes", name, line_no,
                                 LABEL_MAX);
            p = c ? c + 1 : end;
        }
    } else if (field > LABEL_MAX) {
        return osp_error(OSP_EFORMAT, "%s:%d: label longer than %d bytes", name, line_no, LABEL_MAX);
    }
    return add_sample(line, path_len, line_no, name, base_dir, b, l, lab, field);
}

/* Adds path (relative to base_dir unless absolute) with its label text. */
static int add_sample(const char *line, size_t path_len, int line_no, const char *name,
                      const char *base_dir, osp__list_builder *b, labels *l, const char *lab,
                      size_t lab_len) {
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
    if (osp__builder_add(b, path, at + path_len, 0) || (l && labels_add(l, lab, lab_len)))
        return osp_error(OSP_ENOMEM, "%s:%d: out of memory", name, line_no);
    return OSP_OK;
}

/* The next sample's (b->n's) label items start at item n_items: records
 * that in b->hot_at, growing it. */
static int hot_mark(osp__list_builder *b, int64_t *cap, int64_t n_items) {
    if (b->n + 1 > *cap) {
        int64_t c = *cap ? 2 * *cap : 256;
        while (c < b->n + 1) c *= 2;
        int64_t *a = realloc(b->hot_at, (size_t)c * sizeof *a);
        if (!a) return OSP_ENOMEM;
        b->hot_at = a;
        *cap = c;
    }
    b->hot_at[b->n] = n_items;
    return OSP_OK;
}

/* Splits each sample's "a,b,c" field into items (spaces around each
 * trimmed, empty ones dropped), with b->hot_at saying whose they are. */
static int split_fields(const labels *l, osp__list_builder *b, labels *items, const char *name) {
    free(b->hot_at);
    b->hot_at = malloc((size_t)(l->n + 1) * sizeof *b->hot_at);
    if (!b->hot_at) return osp_error(OSP_ENOMEM, "%s: out of memory", name);
    for (int64_t i = 0; i < l->n; i++) {
        b->hot_at[i] = items->n;
        const char *p = l->text + l->at[i], *end = p + strlen(p);
        while (p < end) {
            const char *c = memchr(p, ',', (size_t)(end - p));
            const char *e = c ? c : end, *q = p;
            while (q < e && is_space(*q)) q++;
            while (e > q && is_space(e[-1])) e--;
            if (e > q && labels_add(items, q, (size_t)(e - q)))
                return osp_error(OSP_ENOMEM, "%s: out of memory", name);
            p = c ? c + 1 : end;
        }
    }
    b->hot_at[l->n] = items->n;
    return OSP_OK;
}

/* One JSON Lines record: {"path": "...", "labels": ["a", ...]}. */
static int parse_json_line(const char *line, size_t n, int line_no, const char *name,
                           const char *base_dir, osp__list_builder *b, labels *items,
                           int64_t *hot_cap) {
    if (memchr(line, '\0', n))
        return osp_error(OSP_EFORMAT, "%s:%d: NUL byte in the line: binary data, not JSON Lines",
                         name, line_no);
    cJSON *o = cJSON_ParseWithLength(line, n);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return osp_error(OSP_EFORMAT, "%s:%d: expected a JSON object {\"path\": ..., \"labels\": "
                         "[...]} (a file whose first line starts with '{' is JSON Lines)",
                         name, line_no);
    }
    int rc = OSP_OK;
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(o, "path");
    const cJSON *labs = cJSON_GetObjectItemCaseSensitive(o, "labels");
    if (!cJSON_IsString(path) || !path->valuestring[0])
        rc = osp_error(OSP_EFORMAT, "%s:%d: no \"path\" string", name, line_no);
    else if (labs && !cJSON_IsNull(labs) && !cJSON_IsArray(labs))
        rc = osp_error(OSP_EFORMAT, "%s:%d: \"labels\" is not a list of strings", name, line_no);
    if (!rc && hot_mark(b, hot_cap, items->n)) rc = osp_error(OSP_ENOMEM, "%s: out of memory", name);
    const cJSON *e;
    if (!rc && cJSON_IsArray(labs)) cJSON_ArrayForEach(e, labs) {
        if (!cJSON_IsString(e) || !e->valuestring[0]) {
            rc = osp_error(OSP_EFORMAT, "%s:%d: \"labels\" holds something other than a non-empty "
                           "string", name, line_no);
            break;
        }
        size_t k = strlen(e->valuestring);
        if (k > LABEL_MAX) {
            rc = osp_error(OSP_EFORMAT, "%s:%d: label longer than %d bytes", name, line_no, LABEL_MAX);
            break;
        }
        if (labels_add(items, e->valuestring, k)) {
            rc = osp_error(OSP_ENOMEM, "%s: out of memory", name);
            break;
        }
    }
    if (!rc) {
        const char *p = path->valuestring;
        rc = add_sample(p, strlen(p), line_no, name, base_dir, b, NULL, NULL, 0);
    }
    cJSON_Delete(o);
    return rc;
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
    labels l = {0}, items = {0};
    int line_no = 0, multi = 0, first_empty = 0, json = -1;
    int64_t hot_cap = 0;
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
        if (json < 0) json = line[k] == '{';
        if (rc) break;
        if (json) rc = parse_json_line(line + k, n - k, line_no, name, base_dir, &b, &items, &hot_cap);
        else rc = parse_line(line, n, line_no, name, base_dir, &b, &l, &multi, &first_empty);
    }
    char **names = NULL, *storage = NULL;
    int n_names = 0;
    if (!rc && b.n == 0) rc = osp_error(OSP_EFORMAT, "%s: no samples listed", name);
    if (!rc && !json && !multi && first_empty)
        rc = osp_error(OSP_EFORMAT, "%s:%d: empty label (only a multi-label list, one with "
                       "label,label fields, may give an image no labels)", name, first_empty);
    if (!rc && json == 1) {
        if (hot_mark(&b, &hot_cap, items.n)) rc = osp_error(OSP_ENOMEM, "%s: out of memory", name);
        multi = 1;
    } else if (!rc && multi) {
        rc = split_fields(&l, &b, &items, name);
    }
    if (!rc && multi) {
        b.multi = 1;
        /* raw class numbers of the items; klass is unused for multi-label */
        b.hot_ids = malloc((size_t)(items.n ? items.n : 1) * sizeof *b.hot_ids);
        if (!b.hot_ids) rc = osp_error(OSP_ENOMEM, "%s: out of memory", name);
        if (!rc) rc = number_classes(&items, b.hot_ids, name, &names, &n_names, &storage);
    } else if (!rc) {
        rc = number_classes(&l, b.klass, name, &names, &n_names, &storage);
    }
    if (!rc) rc = osp__builder_finish(&b, name, (const char *const *)names, n_names, opt, out);
    free(names);
    free(storage);
    free(l.text);
    free(l.at);
    free(items.text);
    free(items.at);
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
