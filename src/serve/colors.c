/* IMAGE_PROPERTIES: dominant colours from a colour histogram (worker.h).
 *
 * The image is decoded small (JPEG shrink-on-load to about 128 pixels a
 * side; other formats at full size, then read on a grid of at most 128 x
 * 128 points), each pixel falls in one of 8 x 8 x 8 cells by the top 3
 * bits of red, green and blue, and the fullest cells are the dominant
 * colours, each reported as the mean of its pixels. No randomness, no
 * iteration: the same bytes give the same answer. */
#include <stdlib.h>
#include <string.h>

#include "osprey/image.h"
#include "worker.h"

#define SIDE 128
#define CELLS 512

typedef struct cell {
    uint64_t n, r, g, b;
    int index;
} cell;

static int by_count(const void *a, const void *b) {
    const cell *x = a, *y = b;
    if (x->n != y->n) return x->n > y->n ? -1 : 1;
    return x->index - y->index;
}

int osp__dominant_colors(const void *buf, size_t len, const char *name, int64_t max_pixels, int max_results,
                         cJSON **out) {
    *out = NULL;
    osp_decode_options opt = {.max_pixels = max_pixels, .min_width = SIDE, .min_height = SIDE};
    osp_image img = {0};
    int rc = osp_image_decode(buf, len, name, &opt, &img, NULL);
    if (rc) return rc;
    cell *cells = calloc(CELLS, sizeof *cells);
    if (!cells) {
        osp_image_free(&img);
        return osp_error(OSP_ENOMEM, "out of memory");
    }
    for (int i = 0; i < CELLS; i++) cells[i].index = i;
    const int nx = img.width < SIDE ? img.width : SIDE, ny = img.height < SIDE ? img.height : SIDE;
    uint64_t total = 0;
    for (int yi = 0; yi < ny; yi++) {
        /* the centre of each grid cell */
        const int y = (int)(((int64_t)yi * 2 + 1) * img.height / (2 * ny));
        for (int xi = 0; xi < nx; xi++) {
            const int x = (int)(((int64_t)xi * 2 + 1) * img.width / (2 * nx));
            const uint8_t *p = img.pixels + ((size_t)y * (size_t)img.width + (size_t)x) * 3;
            cell *c = &cells[(p[0] >> 5) << 6 | (p[1] >> 5) << 3 | p[2] >> 5];
            c->n++;
            c->r += p[0];
            c->g += p[1];
            c->b += p[2];
            total++;
        }
    }
    osp_image_free(&img);
    qsort(cells, CELLS, sizeof *cells, by_count);
    cJSON *root = cJSON_CreateObject(), *colors = root ? cJSON_AddArrayToObject(root, "colors") : NULL;
    int ok = colors != NULL;
    for (int i = 0; ok && i < CELLS && i < max_results && cells[i].n; i++) {
        const cell *c = &cells[i];
        const double share = (double)c->n / (double)total;
        cJSON *item = cJSON_CreateObject(), *color = item ? cJSON_AddObjectToObject(item, "color") : NULL;
        ok = color && cJSON_AddNumberToObject(color, "red", (double)((c->r + c->n / 2) / c->n)) &&
             cJSON_AddNumberToObject(color, "green", (double)((c->g + c->n / 2) / c->n)) &&
             cJSON_AddNumberToObject(color, "blue", (double)((c->b + c->n / 2) / c->n)) &&
             cJSON_AddNumberToObject(item, "score", share) && cJSON_AddNumberToObject(item, "pixelFraction", share);
        if (item) cJSON_AddItemToArray(colors, item);
    }
    free(cells);
    if (!ok) {
        cJSON_Delete(root);
        return osp_error(OSP_ENOMEM, "out of memory");
    }
    *out = root;
    return OSP_OK;
}
