/* Finding the checkpoint to resume from: CHECKPOINT itself and the
 * numbered copies CHECKPOINT-step<N> kept beside it. Every file is written
 * to a temporary name and renamed into place (osp_atomic_file), so a crash
 * leaves either the old file or the new one; what a crash can leave is the
 * temporary file, which is removed here. The trainer records a CRC-32C of
 * the tensors (osp_checkpoint_crc) in each checkpoint's settings, so a file damaged later (a bad
 * disk, a copy cut short) is told apart from a valid one and skipped. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "osprey/model.h"

void osp_checkpoint_step_path(const char *checkpoint, int64_t step, char *out, size_t cap) {
    snprintf(out, cap, "%s-step%09lld", checkpoint, (long long)step);
}

uint32_t osp_checkpoint_crc(const osp_net *net, const osp_optim *opt) {
    int64_t nw, nb;
    const float *w = osp_graph_weights(net->graph, &nw);
    const float *b = osp_graph_buffers(net->graph, &nb);
    uint32_t crc = osp_crc32c(0, w, (size_t)nw * sizeof(float));
    crc = osp_crc32c(crc, b, (size_t)nb * sizeof(float));
    if (opt && opt->m) crc = osp_crc32c(crc, opt->m, (size_t)opt->n * sizeof(float));
    if (opt && opt->v) crc = osp_crc32c(crc, opt->v, (size_t)opt->n * sizeof(float));
    return crc;
}

/* dir and base name of path, in buffers. */
static void split_path(const char *path, char *dir, size_t dcap, const char **base) {
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, dcap, ".");
        *base = path;
    } else {
        snprintf(dir, dcap, "%.*s", (int)(slash - path) ? (int)(slash - path) : 1, path);
        *base = slash + 1;
    }
}

/* The step number of a numbered copy's name, or -1. */
static int64_t numbered_step(const char *name, const char *base) {
    size_t n = strlen(base);
    if (strncmp(name, base, n) || strncmp(name + n, "-step", 5)) return -1;
    const char *digits = name + n + 5;
    if (!*digits) return -1;
    for (const char *c = digits; *c; c++)
        if (*c < '0' || *c > '9') return -1;
    return strtoll(digits, NULL, 10);
}

/* A temporary file of an interrupted write of CHECKPOINT or of a numbered
 * copy: "<name>.tmp.<pid>.<n>" (see src/core/file.c). */
static int is_leftover(const char *name, const char *base) {
    size_t n = strlen(base);
    if (strncmp(name, base, n)) return 0;
    const char *tmp = strstr(name + n, ".tmp.");
    return tmp != NULL;
}

typedef struct candidate {
    char *path;
    int64_t step; /* from the name; -1 for CHECKPOINT itself */
} candidate;

static int by_step_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    return (x->step < y->step) - (x->step > y->step);
}

void osp_checkpoint_prune(const char *checkpoint, int keep) {
    char dir[4096];
    const char *base;
    split_path(checkpoint, dir, sizeof dir, &base);
    DIR *d = opendir(dir);
    if (!d) return;
    int64_t *steps = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s = numbered_step(e->d_name, base);
        if (s < 0) continue;
        if (n == cap) {
            int64_t *grown = realloc(steps, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *steps);
            if (!grown) break;
            steps = grown;
        }
        steps[n++] = s;
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        int newer = 0;
        for (int j = 0; j < n; j++) newer += steps[j] > steps[i];
        if (newer >= keep) {
            char path[4096];
            osp_checkpoint_step_path(checkpoint, steps[i], path, sizeof path);
            unlink(path);
        }
    }
    free(steps);
}

int osp_checkpoint_verify(const osp_net *net, const osp_optim *opt, const osp_train_state *state,
                          const char *name) {
    if (!state->config) return OSP_OK;
    cJSON *c = cJSON_Parse(state->config);
    cJSON *v = cJSON_GetObjectItem(c, "crc32c");
    int rc = OSP_OK;
    if (cJSON_IsNumber(v)) {
        uint32_t want = (uint32_t)v->valuedouble, got = osp_checkpoint_crc(net, opt);
        if (want != got)
            rc = osp_error(OSP_EFORMAT, "%s: the tensors do not match their checksum (damaged file)", name);
    }
    cJSON_Delete(c);
    return rc;
}

int osp_checkpoint_find_latest(const char *checkpoint, char **found, int64_t *step_out) {
    *found = NULL;
    char dir[4096];
    const char *base;
    split_path(checkpoint, dir, sizeof dir, &base);
    DIR *d = opendir(dir);
    if (!d) return osp_error(OSP_ENOENT, "%s: no checkpoint yet", checkpoint);
    candidate *c = NULL;
    int n = 0, cap = 0, rc = OSP_OK;
    struct dirent *e;
    while ((e = readdir(d)) && !rc) {
        int64_t s = -1;
        int mine = !strcmp(e->d_name, base) || (s = numbered_step(e->d_name, base)) >= 0;
        if (!mine) {
            if (is_leftover(e->d_name, base)) {
                char path[4096 + 256];
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                osp_log(OSP_LOG_INFO, "removing %s, left by an interrupted write", path);
                unlink(path);
            }
            continue;
        }
        if (n == cap) {
            candidate *grown = realloc(c, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *c);
            if (!grown) {
                rc = OSP_ENOMEM;
                break;
            }
            c = grown;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        c[n].path = malloc(len);
        if (!c[n].path) {
            rc = OSP_ENOMEM;
            break;
        }
        snprintf(c[n].path, len, "%s/%s", dir, e->d_name);
        c[n].step = s;
        n++;
    }
    closedir(d);
    /* Numbered copies newest first; CHECKPOINT itself is read for its step
     * like the others (it is usually the newest). */
    if (n > 1) qsort(c, (size_t)n, sizeof *c, by_step_desc);
    int64_t best_step = -1;
    char *best = NULL;
    for (int i = 0; i < n && !rc; i++) {
        if (c[i].step >= 0 && c[i].step <= best_step) continue;
        osp_net *net = NULL;
        osp_optim *opt = NULL;
        osp_train_state st = {0};
        int bad = osp_checkpoint_load(c[i].path, &net, &opt, &st);
        if (!bad) bad = osp_checkpoint_verify(net, opt, &st, c[i].path);
        if (bad) {
            osp_log(OSP_LOG_WARN, "skipping %s: %s", c[i].path, osp_last_error());
        } else if (st.step > best_step) {
            best_step = st.step;
            best = c[i].path;
        }
        osp_net_free(net);
        osp_optim_free(opt);
        osp_free(st.config);
    }
    if (!rc && best) {
        size_t len = strlen(best) + 1;
        *found = osp_alloc(len);
        if (!*found) rc = OSP_ENOMEM;
        else memcpy(*found, best, len);
        if (step_out) *step_out = best_step;
    } else if (!rc) {
        rc = osp_error(OSP_ENOENT, "%s: no valid checkpoint yet", checkpoint);
    }
    for (int i = 0; i < n; i++) free(c[i].path);
    free(c);
    return rc;
}
