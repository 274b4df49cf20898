/* Embeddings of token layers (T x D per sample): the class token or the
 * mean of the tokens, as `osprey embed --pool` and `osprey similar` make
 * them. The spatial default stays osp_embedding_from_layer (run.c). */
#include <math.h>
#include <string.h>

#include "osprey/nn.h"

int osp_pool_parse(const char *name, osp_pool *out) {
    if (!name || !*name) *out = OSP_POOL_DEFAULT;
    else if (!strcmp(name, "cls")) *out = OSP_POOL_CLS;
    else if (!strcmp(name, "mean")) *out = OSP_POOL_MEAN;
    else return osp_error(OSP_EINVAL, "pooling '%s': cls (token 0) or mean (of the tokens)", name);
    return OSP_OK;
}

const char *osp_pool_name(osp_pool pool) {
    return pool == OSP_POOL_CLS ? "cls" : pool == OSP_POOL_MEAN ? "mean" : "";
}

int osp_net_embed_shape(const osp_net *net, const char *layer, osp_pool pool, osp_embed_shape *out) {
    memset(out, 0, sizeof *out);
    out->pool = pool;
    if (pool == OSP_POOL_DEFAULT) {
        int rc = osp_net_embedding_size(net, layer, &out->dim, &out->plane);
        out->size = out->dim * out->plane;
        return rc;
    }
    int node;
    int64_t size;
    int rc = osp_net_find_layer(net, layer, &node, &size);
    if (rc) return rc;
    const osp_shape *sh = &osp_graph_node_const(net->graph, node)->shape;
    if (sh->ndim != 2) {
        char s[64];
        osp_shape_format(sh, s, sizeof s);
        return osp_error(OSP_ESHAPE, "layer '%s' is %s, not tokens x features: --pool %s is for "
                         "token layers (a C x H x W layer is averaged over its plane without it)",
                         layer ? layer : "output", s, osp_pool_name(pool));
    }
    out->tokens = sh->dim[0];
    out->dim = sh->dim[1];
    out->plane = 1;
    out->size = size;
    return OSP_OK;
}

void osp_embedding_pool(const float *layer, const osp_embed_shape *s, int normalize, float *out) {
    if (s->pool == OSP_POOL_DEFAULT) {
        osp_embedding_from_layer(layer, s->dim, s->plane, normalize, out);
        return;
    }
    const int64_t T = s->tokens, D = s->dim;
    if (s->pool == OSP_POOL_CLS) memcpy(out, layer, (size_t)D * sizeof *out);
    else
        for (int64_t d = 0; d < D; d++) {
            double sum = 0; /* in token order, the same in every command */
            for (int64_t t = 0; t < T; t++) sum += layer[t * D + d];
            out[d] = (float)(sum / (double)T);
        }
    if (!normalize) return;
    double ss = 0;
    for (int64_t d = 0; d < D; d++) ss += (double)out[d] * out[d];
    if (ss > 0) {
        const float inv = (float)(1.0 / sqrt(ss));
        for (int64_t d = 0; d < D; d++) out[d] *= inv;
    }
}
