/* Running a network: the one call that turns inputs (or photos) into any
 * layers' outputs, so that a caller never plans graphs or picks backends. */
#include <math.h>
#include <string.h>

#include "osprey/image.h"
#include "osprey/nn.h"

int osp_net_transform(const osp_net *net, osp_transform *out) {
    const osp_shape *in = &net->input;
    if (in->ndim != 3 || (in->dim[0] != 1 && in->dim[0] != 3)) {
        char shape[96];
        osp_shape_format(in, shape, sizeof shape);
        return osp_error(OSP_ESHAPE,
                         "the network's input is %s, not an image (1 or 3 x height x width)", shape);
    }
    *out = osp_transform_defaults((int)in->dim[0], (int)in->dim[1], (int)in->dim[2]);
    return OSP_OK;
}

int osp_net_image_input(const osp_net *net, const void *buf, size_t len, const char *name,
                        const osp_transform *t, int64_t max_pixels, float *out) {
    osp_transform own;
    int rc;
    if (!t) {
        if ((rc = osp_net_transform(net, &own))) return rc;
        t = &own;
    } else if (t->channels != net->input.dim[0] || t->height != net->input.dim[1] ||
               t->width != net->input.dim[2] || net->input.ndim != 3) {
        return osp_error(OSP_ESHAPE, "the transform's %dx%dx%d is not the network's input",
                         t->channels, t->height, t->width);
    }
    if ((rc = osp_image_to_sample(buf, len, name, t, max_pixels, NULL, out))) return rc;
    osp_net_normalize(net, out, 1);
    return OSP_OK;
}

int osp_net_load_image(const osp_net *net, const char *path, const osp_transform *t, float *out) {
    void *buf = NULL;
    size_t len = 0;
    int rc = osp_file_read_all(path, osp_image_max_file_bytes(OSP_IMAGE_MAX_PIXELS), &buf, &len);
    if (rc) return rc;
    rc = osp_net_image_input(net, buf, len, path, t, 0, out);
    osp_free(buf);
    return rc;
}

int osp_net_find_layer(const osp_net *net, const char *layer, int *node, int64_t *size) {
    osp_graph *g = net->graph;
    int id;
    if (!layer) {
        id = osp_graph_node_count(g) - 1;
    } else if (!strcmp(layer, OSP_LAYER_LOGITS)) {
        id = net->logits_node;
    } else {
        const osp_node *n = osp_graph_find(g, layer);
        if (!n || n->id == 0)
            return osp_error(OSP_ENOENT, "the network has no layer '%s' ('osprey info' lists them)",
                             layer);
        id = n->id;
    }
    if (node) *node = id;
    if (size) *size = osp_graph_node_const(g, id)->size;
    return OSP_OK;
}

int osp_net_run(osp_net *net, const float *x, int64_t n, int batch, const char *const *layers,
                int n_layers, float *const *outs) {
    if (n < 0 || batch < 0 || n_layers < 0 || !outs || (n_layers > 0 && !layers))
        return osp_error(OSP_EINVAL, "osp_net_run: bad arguments");
    if (n == 0) return OSP_OK;
    if (!x) return osp_error(OSP_EINVAL, "osp_net_run: no input");
    if (batch == 0) batch = 64;
    if (batch > n) batch = (int)n;
    osp_graph *g = net->graph;
    /* Inference planning recycles every activation that no later op reads:
     * the layers asked for are marked to be kept, and a plan made before
     * they were is made again. */
    int ids[16];
    const int n_out = n_layers > 0 ? n_layers : 1;
    if (n_out > (int)(sizeof ids / sizeof ids[0]))
        return osp_error(OSP_EINVAL, "osp_net_run: at most %d layers at once",
                         (int)(sizeof ids / sizeof ids[0]));
    int replan = 0, rc;
    for (int i = 0; i < n_out; i++) {
        if ((rc = osp_net_find_layer(net, n_layers > 0 ? layers[i] : NULL, &ids[i], NULL))) return rc;
        osp_node *node = osp_graph_node(g, ids[i]);
        if (!node->keep) replan = 1;
        node->keep = 1;
    }
    if (replan) osp_graph_weights_changed(g);
    const int64_t in_size = osp_shape_numel(&net->input);
    const osp_backend *be = osp_graph_backend(g);
    for (int64_t first = 0; first < n; first += batch) {
        const int b = (int)(n - first < batch ? n - first : batch);
        osp_exec ex = {.be = be, .mode = OSP_MODE_INFER, .batch = b};
        if ((rc = osp_graph_plan(g, b, OSP_MODE_INFER))) return rc;
        if ((rc = osp_graph_forward(g, x + first * in_size, &ex))) return rc;
        for (int i = 0; i < n_out; i++) {
            const osp_node *node = osp_graph_node_const(g, ids[i]);
            float *dst = outs[i];
            if (!dst) return osp_error(OSP_EINVAL, "osp_net_run: output %d has no buffer", i);
            osp_graph_read(g, dst + first * node->size, node->out, (int64_t)b * node->size);
        }
    }
    return OSP_OK;
}

/* ---- from outputs to answers ------------------------------------------------ */

void osp_scores_from_logits(const float *logits, int64_t k, int sigmoid, float *out) {
    if (k <= 0) return;
    if (sigmoid) {
        for (int64_t j = 0; j < k; j++) out[j] = 1.0f / (1.0f + expf(-logits[j]));
        return;
    }
    float m = logits[0]; /* the largest first, so that exp cannot overflow */
    for (int64_t j = 1; j < k; j++) m = logits[j] > m ? logits[j] : m;
    double sum = 0;
    for (int64_t j = 0; j < k; j++) sum += out[j] = expf(logits[j] - m);
    for (int64_t j = 0; j < k; j++) out[j] = (float)(out[j] / sum);
}

int osp_top_k(const float *scores, int64_t n, int want, int *order) {
    int have = 0;
    if (want <= 0) return 0;
    /* insertion into the sorted few: want is small (a top 5, a top 100) */
    for (int64_t j = 0; j < n; j++) {
        int at = have < want ? have++ : want;
        if (at == want && !(scores[j] > scores[order[want - 1]])) continue;
        if (at == want) at = want - 1;
        while (at > 0 && scores[j] > scores[order[at - 1]]) {
            order[at] = order[at - 1];
            at--;
        }
        order[at] = (int)j;
    }
    return have;
}

int osp_net_embedding_size(const osp_net *net, const char *layer, int64_t *channels, int64_t *plane) {
    int node;
    int64_t size;
    int rc = osp_net_find_layer(net, layer, &node, &size);
    if (rc) return rc;
    const osp_shape *sh = &osp_graph_node_const(net->graph, node)->shape;
    const int64_t p = sh->ndim == 3 ? sh->dim[1] * sh->dim[2] : 1;
    if (p < 1 || size % p) return osp_error(OSP_ESHAPE, "layer '%s' has no whole planes", layer ? layer : "output");
    *channels = size / p;
    *plane = p;
    return OSP_OK;
}

void osp_embedding_from_layer(const float *layer, int64_t channels, int64_t plane, int normalize,
                              float *out) {
    for (int64_t c = 0; c < channels; c++) {
        double s = 0;
        for (int64_t i = 0; i < plane; i++) s += layer[c * plane + i];
        out[c] = (float)(s / (double)plane);
    }
    if (!normalize) return;
    double ss = 0;
    for (int64_t c = 0; c < channels; c++) ss += (double)out[c] * out[c];
    if (ss > 0) {
        const float inv = (float)(1.0 / sqrt(ss));
        for (int64_t c = 0; c < channels; c++) out[c] *= inv;
    }
}
