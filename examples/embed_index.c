/* embed_index: a folder of photos to a searchable index of feature vectors.
 *
 *     embed_index MODEL.osp LAYER FOLDER INDEX_OUT
 *
 * What it shows: running a network to one of its inner layers (the
 * activations that describe what a photo looks like), making vectors of
 * them, and the vector index: add with ids, save, load, search. Each image
 * in FOLDER (.jpg, .jpeg, .png, .webp, sorted by name) gets the id of its
 * place in that order; unreadable ones are named and left out. At the end
 * the index is searched with the first image, whose nearest neighbour is
 * itself at distance 0.
 *
 * LAYER is a layer name as 'osprey info MODEL.osp' lists them. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* opendir, strdup, strcasecmp */
#endif
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <osprey/osprey.h>

#define CHUNK 32 /* images decoded and run at a time: bounds the memory */
#define NEAREST 3

static int is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || name[0] == '.') return 0;
    return !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png") ||
           !strcasecmp(dot, ".webp");
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The image files directly in dir, sorted (so that ids do not depend on
 * the order readdir returns them in). Returns their count, or -1. */
static int64_t list_images(const char *dir, char ***out) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "embed_index: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    int64_t n = 0, cap = 0;
    int err = 0;
    for (;;) {
        errno = 0;
        const struct dirent *e = readdir(d);
        if (!e) { /* the end, or an error if errno says so */
            err = errno;
            break;
        }
        if (!is_image_name(e->d_name)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **grown = realloc(names, (size_t)cap * sizeof *grown);
            if (!grown) {
                err = ENOMEM;
                break;
            }
            names = grown;
        }
        if (!(names[n] = strdup(e->d_name))) {
            err = ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (err) {
        fprintf(stderr, "embed_index: %s: %s\n", dir, strerror(err));
        for (int64_t i = 0; i < n; i++) free(names[i]);
        free(names);
        return -1;
    }
    if (n > 0) qsort(names, (size_t)n, sizeof *names, by_name);
    *out = names;
    return n;
}

/* One sample's activations (c x plane floats) to a vector of dim = c
 * floats: the mean of each channel over its plane (plane 1 leaves a flat
 * layer as it is), then scaled to unit length, so that the index's L2
 * distances rank images as cosine similarity would. */
static void to_vector(const float *act, int64_t c, int64_t plane, float *v) {
    double norm = 0;
    for (int64_t i = 0; i < c; i++) {
        double s = 0;
        for (int64_t k = 0; k < plane; k++) s += act[i * plane + k];
        v[i] = (float)(s / (double)plane);
        norm += (double)v[i] * v[i];
    }
    const float scale = norm > 0 ? (float)(1 / sqrt(norm)) : 0;
    for (int64_t i = 0; i < c; i++) v[i] *= scale;
}

/* Library messages say what failed and on which input (a file name,
 * "file:line" in a spec): they need no more context. */
static void fail(void) { fprintf(stderr, "embed_index: %s\n", osp_last_error()); }

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: embed_index MODEL.osp LAYER FOLDER INDEX_OUT\n");
        return 2;
    }
    const char *model = argv[1], *layer = argv[2], *folder = argv[3], *index_path = argv[4];
    int status = 1;
    osp_net *net = NULL;
    osp_index *index = NULL, *loaded = NULL;
    char **names = NULL, *path = NULL;
    int64_t n_files = 0;
    float *x = NULL, *act = NULL, *vecs = NULL, *query = NULL;
    int64_t *ids = NULL;

    if (osp_model_load(model, &net)) {
        fail();
        return 1;
    }

    /* The layer's node tells its per-sample shape: C x H x W for a
     * convolution, pooling or activation of one, D for a fully connected
     * layer. osp_net_find_layer gives the node's id (and size), the graph
     * its shape. */
    int node;
    int64_t act_size;
    if (osp_net_find_layer(net, layer, &node, &act_size)) {
        fail();
        goto done;
    }
    const osp_shape *shape = &osp_graph_node_const(net->graph, node)->shape;
    const int64_t dim = shape->dim[0];
    const int64_t plane = act_size / dim; /* H x W, or 1 */
    if (dim > OSP_INDEX_MAX_DIM) {
        fprintf(stderr, "embed_index: layer %s has %lld channels, more than an index takes\n",
                layer, (long long)dim);
        goto done;
    }

    if ((n_files = list_images(folder, &names)) < 0) goto done;
    if (n_files == 0) {
        fprintf(stderr, "embed_index: no .jpg, .jpeg, .png or .webp files in %s\n", folder);
        goto done;
    }

    /* An exact (flat) index of dim floats per vector under squared L2
     * distance. Params start from the type's defaults; the caller owns the
     * index. */
    osp_index_params params;
    osp_index_params_init(&params, OSP_INDEX_FLAT, OSP_INDEX_METRIC_L2, (int)dim);
    if (osp_index_new(&params, &index)) {
        fail();
        goto done;
    }

    const int64_t in_size = osp_shape_numel(&net->input);
    x = malloc(CHUNK * (size_t)in_size * sizeof *x);
    act = malloc(CHUNK * (size_t)act_size * sizeof *act);
    vecs = malloc(CHUNK * (size_t)dim * sizeof *vecs);
    query = malloc((size_t)dim * sizeof *query);
    ids = malloc(CHUNK * sizeof *ids);
    size_t longest = 0;
    for (int64_t f = 0; f < n_files; f++)
        if (strlen(names[f]) > longest) longest = strlen(names[f]);
    const size_t path_len = strlen(folder) + 1 + longest + 1; /* folder/name */
    path = malloc(path_len);
    if (!x || !act || !vecs || !query || !ids || !path) {
        fprintf(stderr, "embed_index: out of memory\n");
        goto done;
    }

    int64_t first_id = -1, skipped = 0;
    for (int64_t start = 0; start < n_files; start += CHUNK) {
        /* Decode up to CHUNK images into inputs; ids[] remembers which
         * file each one is. */
        int n = 0;
        for (int64_t f = start; f < n_files && f < start + CHUNK; f++) {
            snprintf(path, path_len, "%s/%s", folder, names[f]);
            if (osp_net_load_image(net, path, NULL, x + n * in_size)) {
                fprintf(stderr, "embed_index: skipped %s\n", osp_last_error());
                skipped++;
                continue;
            }
            ids[n++] = f;
        }
        if (n == 0) continue;
        /* Inference up to the layer asked for. The library keeps that
         * layer's output (inference otherwise recycles the memory of
         * inner layers as soon as the next one has read it). */
        const char *layers[] = {layer};
        float *outs[] = {act};
        if (osp_net_run(net, x, n, CHUNK, layers, 1, outs)) {
            fail();
            goto done;
        }
        for (int i = 0; i < n; i++) to_vector(act + i * act_size, dim, plane, vecs + i * dim);
        if (first_id < 0) {
            first_id = ids[0];
            memcpy(query, vecs, (size_t)dim * sizeof *query);
        }
        /* Ids are the caller's: here the file's place in the listing, so
         * that a search result leads straight back to names[id]. Adding in
         * chunks keeps searches on a shared index flowing (an add holds
         * the index's write lock for its whole duration). */
        if (osp_index_add(index, vecs, ids, n)) {
            fail();
            goto done;
        }
    }
    if (first_id < 0) {
        fprintf(stderr, "embed_index: none of the %lld images in %s could be read\n",
                (long long)n_files, folder);
        goto done;
    }

    /* Written atomically: a reader sees the old file or the new one. */
    if (osp_index_save(index, index_path)) {
        fail();
        goto done;
    }
    printf("%lld vectors of %lld floats (layer %s) in %s", (long long)osp_index_count(index),
           (long long)dim, layer, index_path);
    if (skipped) printf(", %lld unreadable left out", (long long)skipped);
    printf("\n");

    /* Search the file as another program would: load it (memory-mapped,
     * every size and the checksum checked) and ask for the NEAREST
     * vectors to the first image's. */
    if (osp_index_load(index_path, &loaded)) {
        fail();
        goto done;
    }
    osp_index_search_params sp;
    osp_index_search_params_init(&sp, NEAREST);
    int64_t hit[NEAREST];
    float dist[NEAREST];
    if (osp_index_search(loaded, query, 1, &sp, hit, dist)) {
        fail();
        goto done;
    }
    printf("nearest to %s:\n", names[first_id]);
    /* Fewer vectors than NEAREST leave OSP_INDEX_NO_ID in the rest. */
    for (int k = 0; k < NEAREST && hit[k] != OSP_INDEX_NO_ID; k++)
        printf("  %d  %-24s %.6f\n", k + 1, names[hit[k]], dist[k]);
    status = 0;

done:
    osp_index_free(loaded);
    osp_index_free(index);
    for (int64_t i = 0; i < n_files; i++) free(names[i]);
    free(names);
    free(path);
    free(ids);
    free(query);
    free(vecs);
    free(act);
    free(x);
    osp_net_free(net);
    return status;
}
