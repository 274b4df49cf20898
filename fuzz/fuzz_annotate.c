/* Fuzz target: the worker's request bodies (src/serve/request.c): the
 * same bytes as an annotate, a search and an add body, and as base64 and
 * an image id. Whatever parses must hold what the limits promise. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/core.h"
#include "serve/http.h"
#include "serve/request.h"

static void check_image(const osp__image_ref *im) {
    if (!im->content == !im->uri) __builtin_trap();
    if (im->content && (!im->content_len || im->content_len > 4096)) __builtin_trap();
    if (im->uri && (!*im->uri || strlen(im->uri) > OSP__MAX_PATH)) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *body = (const char *)data;
    osp__annotate_request ar;
    if (osp__parse_annotate(body, size, 4096, &ar) == OSP_OK) {
        if (ar.n < 1 || ar.n > OSP__MAX_IMAGES) __builtin_trap();
        for (int i = 0; i < ar.n; i++) {
            const osp__annotate_item *it = &ar.items[i];
            check_image(&it->image);
            if (!it->features || it->features >= 1u << OSP__N_FEATURES) __builtin_trap();
            for (int f = 0; f < OSP__N_FEATURES; f++)
                if ((it->features >> f & 1) && (it->max_results[f] < 1 || it->max_results[f] > OSP__MAX_RESULTS))
                    __builtin_trap();
        }
        osp__annotate_request_free(&ar);
    }
    osp__search_request sr;
    if (osp__parse_search(body, size, &sr) == OSP_OK) {
        if (sr.n < 1 || sr.n > OSP__MAX_QUERIES) __builtin_trap();
        for (int i = 0; i < sr.n; i++) {
            const osp__search_query *q = &sr.queries[i];
            if (q->dim < 1 || q->dim > OSP__MAX_DIM || q->k < 1 || q->k > OSP__MAX_RESULTS) __builtin_trap();
            if (q->id_min < 0 || q->id_min > q->id_max) __builtin_trap();
            for (int j = 0; j < q->dim; j++)
                if (!(q->vector[j] - q->vector[j] == 0)) __builtin_trap(); /* finite */
        }
        osp__search_request_free(&sr);
    }
    osp__add_request add;
    if (osp__parse_add(body, size, 4096, &add) == OSP_OK) {
        if (add.n < 1 || add.n > OSP__MAX_IMAGES) __builtin_trap();
        for (int i = 0; i < add.n; i++) {
            check_image(&add.items[i].image);
            if (!add.items[i].path || !*add.items[i].path) __builtin_trap();
        }
        osp__add_request_free(&add);
    }
    uint8_t *raw;
    size_t raw_len;
    if (osp__base64_decode(body, size, 1 << 20, &raw, &raw_len) == OSP_OK) {
        if (raw_len > size) __builtin_trap();
        osp_free(raw);
    }
    char id[32];
    if (size < sizeof id) {
        memcpy(id, data, size);
        id[size] = 0;
        (void)osp__parse_id(id);
    }
    return 0;
}
