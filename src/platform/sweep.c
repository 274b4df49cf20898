/* Sweep grids: "lr=0.1,0.03;batch=32,64" parsed, its points numbered (the
 * last name varying fastest), a random subset drawn, and a point's
 * settings written into a command's argv. */
#include <stdlib.h>
#include <string.h>

#include "osprey/platform.h"

#define MAX_NAMES 16
#define MAX_VALUES 64
#define MAX_POINTS 10000 /* tasks one sweep may queue */
#define MAX_GRID 8192    /* bytes of a grid */

struct osp_sweep_grid {
    char *text;  /* a copy of the grid, cut into the strings below */
    int n;
    const char *names[MAX_NAMES];
    int counts[MAX_NAMES];
    const char *values[MAX_NAMES][MAX_VALUES];
};

void osp_sweep_grid_free(osp_sweep_grid *g) {
    if (!g) return;
    free(g->text);
    free(g);
}

static int name_ok(const char *s) {
    if (!*s || *s == '-' || strlen(s) > 32) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-')) return 0;
    return 1;
}

static int value_ok(const char *s) {
    if (!*s || strlen(s) > 256) return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f || *s == '=') return 0;
    return 1;
}

int osp_sweep_grid_parse(const char *grid, osp_sweep_grid **out) {
    *out = NULL;
    if (!grid || !*grid) return osp_error(OSP_EINVAL, "sweep grid: empty");
    if (strlen(grid) > MAX_GRID) return osp_error(OSP_EINVAL, "sweep grid: longer than %d bytes", MAX_GRID);
    osp_sweep_grid *g = calloc(1, sizeof *g);
    if (!g || !(g->text = strdup(grid))) {
        free(g);
        return osp_error(OSP_ENOMEM, "sweep grid");
    }
    int64_t size = 1;
    int rc = OSP_OK;
    char *save_part;
    for (char *part = strtok_r(g->text, ";", &save_part); part; part = strtok_r(NULL, ";", &save_part)) {
        char *eq = strchr(part, '=');
        if (!eq) {
            rc = osp_error(OSP_EINVAL, "sweep grid: '%.64s' is not NAME=V1,V2,...", part);
            goto bad;
        }
        *eq = 0;
        if (!name_ok(part)) {
            rc = osp_error(OSP_EINVAL, "sweep grid: '%.64s' is not an option name (a-z, 0-9, -)", part);
            goto bad;
        }
        for (int i = 0; i < g->n; i++)
            if (!strcmp(g->names[i], part)) {
                rc = osp_error(OSP_EINVAL, "sweep grid: '%s' given twice", part);
                goto bad;
            }
        if (g->n == MAX_NAMES) {
            rc = osp_error(OSP_EINVAL, "sweep grid: more than %d names", MAX_NAMES);
            goto bad;
        }
        const int k = g->n++;
        g->names[k] = part;
        char *save_value;
        for (char *v = strtok_r(eq + 1, ",", &save_value); v; v = strtok_r(NULL, ",", &save_value)) {
            if (!value_ok(v) || g->counts[k] == MAX_VALUES) {
                rc = osp_error(OSP_EINVAL, "sweep grid: %s: values must be 1 to %d words without spaces",
                               part, MAX_VALUES);
                goto bad;
            }
            g->values[k][g->counts[k]++] = v;
        }
        if (!g->counts[k]) {
            rc = osp_error(OSP_EINVAL, "sweep grid: %s has no values", part);
            goto bad;
        }
        size *= g->counts[k];
        if (size > MAX_POINTS) {
            rc = osp_error(OSP_EINVAL, "sweep grid: more than %d points", MAX_POINTS);
            goto bad;
        }
    }
    if (!g->n) {
        rc = osp_error(OSP_EINVAL, "sweep grid: no NAME=VALUES");
        goto bad;
    }
    *out = g;
    return OSP_OK;
bad:
    /* the messages quote the grid's text: freed only after they are made */
    osp_sweep_grid_free(g);
    return rc;
}

int64_t osp_sweep_grid_size(const osp_sweep_grid *g) {
    int64_t size = 1;
    for (int i = 0; i < g->n; i++) size *= g->counts[i];
    return size;
}

void osp_sweep_grid_point(const osp_sweep_grid *g, int64_t i, osp_sweep_point *p) {
    p->n = g->n;
    for (int k = g->n - 1; k >= 0; k--) {
        p->names[k] = g->names[k];
        p->values[k] = g->values[k][i % g->counts[k]];
        i /= g->counts[k];
    }
}

static int cmp_i64(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int osp_sweep_grid_select(const osp_sweep_grid *g, int random, uint64_t seed, int64_t **idx, int *n) {
    const int64_t size = osp_sweep_grid_size(g);
    const int64_t take = random > 0 && random < size ? random : size;
    int64_t *all = malloc((size_t)size * sizeof *all);
    if (!all) return osp_error(OSP_ENOMEM, "sweep: %lld points", (long long)size);
    for (int64_t i = 0; i < size; i++) all[i] = i;
    if (take < size) {
        /* the first `take` of a seeded shuffle: distinct points, the same
         * ones for the same seed */
        osp_rng r;
        osp_rng_seed(&r, seed);
        osp_rng_shuffle(&r, all, size);
        qsort(all, (size_t)take, sizeof *all, cmp_i64);
    }
    *idx = all;
    *n = (int)take;
    return OSP_OK;
}

/* Writes a then b as one word at *s, as the next of v. */
static void put(char **v, int *m, char **s, const char *a, const char *b) {
    v[(*m)++] = *s;
    const size_t la = strlen(a), lb = strlen(b);
    memcpy(*s, a, la);
    memcpy(*s + la, b, lb + 1);
    *s += la + lb + 1;
}

int osp_sweep_apply(int argc, const char *const *argv, const osp_sweep_point *p, int *out_argc, char ***out) {
    *out = NULL;
    *out_argc = 0;
    /* at worst every word becomes a setting ("--lr=1" gives two words) and
     * every setting is appended */
    size_t setting = 0;
    for (int k = 0; k < p->n; k++) {
        const size_t b = strlen(p->names[k]) + 3 + strlen(p->values[k]) + 1;
        if (b > setting) setting = b;
    }
    const int cap = 2 * argc + 2 * p->n;
    size_t bytes = (size_t)(cap + 1) * sizeof(char *) + (size_t)(argc + p->n) * setting;
    for (int i = 0; i < argc; i++) bytes += strlen(argv[i]) + 1;
    char **v = malloc(bytes);
    if (!v) return osp_error(OSP_ENOMEM, "sweep: argv");
    char *s = (char *)(v + cap + 1);
    int m = 0, placed[16] = {0};
    for (int i = 0; i < argc; i++) {
        const char *w = argv[i];
        int k = 0;
        size_t nl = 0;
        for (; k < p->n; k++) {
            nl = strlen(p->names[k]);
            if (!strncmp(w, "--", 2) && !strncmp(w + 2, p->names[k], nl) &&
                (w[2 + nl] == '=' || (w[2 + nl] == 0 && i + 1 < argc)))
                break;
        }
        if (k == p->n) {
            put(v, &m, &s, w, "");
            continue;
        }
        /* "--lr 0.1" or "--lr=0.1": the option stays, its value is the point's */
        if (w[2 + nl] == 0) i++;
        put(v, &m, &s, "--", p->names[k]);
        put(v, &m, &s, p->values[k], "");
        placed[k] = 1;
    }
    for (int k = 0; k < p->n; k++) {
        if (placed[k]) continue;
        put(v, &m, &s, "--", p->names[k]);
        put(v, &m, &s, p->values[k], "");
    }
    v[m] = NULL;
    *out = v;
    *out_argc = m;
    return OSP_OK;
}
