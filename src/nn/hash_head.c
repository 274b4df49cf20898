/* A learned binary hash head kept with a network (docs/hashing.md): its
 * weights travel with the model, so the codes of a catalogue and those of
 * a later query come from the same head over the same layer. This file
 * only holds and checks it; src/hash trains and applies it, src/io saves
 * and loads it. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "osprey/nn.h"

static void hash_free(osp_net_hash *h) {
    if (!h) return;
    osp_free(h->layer);
    osp_free(h->weight);
    osp_free(h->bias);
    osp_free(h);
}

const osp_net_hash *osp_net_get_hash(const osp_net *net) { return net ? net->hash : NULL; }

static int check(const osp_net *net, const osp_net_hash *h) {
    if (h->bits < 8 || h->bits > 1024 || h->bits % 8)
        return osp_error(OSP_EINVAL, "hash head: %d bits: a hash takes a multiple of 8 from 8 to 1024", h->bits);
    if (!h->layer || !*h->layer)
        return osp_error(OSP_EINVAL, "hash head: no layer: a head stored in a model names the layer it reads");
    if (strlen(h->layer) >= 256) return osp_error(OSP_EINVAL, "hash head: layer name too long");
    if (h->normalize != 0 && h->normalize != 1)
        return osp_error(OSP_EINVAL, "hash head: normalize is %d, not 0 or 1", h->normalize);
    if (!memchr(h->method, '\0', sizeof h->method) || strcmp(h->method, "dsh"))
        return osp_error(OSP_EINVAL, "hash head: method '%.15s' is not one this osprey knows ('dsh')", h->method);
    int64_t channels = 0, plane = 0;
    if (osp_net_embedding_size(net, h->layer, &channels, &plane)) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", osp_last_error());
        return osp_error(OSP_EINVAL, "hash head: %s", msg);
    }
    if (h->dim != channels)
        return osp_error(OSP_EINVAL, "hash head: it takes vectors of %d values, layer '%s' gives %lld", h->dim,
                         h->layer, (long long)channels);
    if (!h->weight || !h->bias) return osp_error(OSP_EINVAL, "hash head: no weights");
    for (int64_t i = 0; i < (int64_t)h->bits * h->dim; i++)
        if (!isfinite(h->weight[i])) return osp_error(OSP_EINVAL, "hash head: a weight is not finite");
    for (int i = 0; i < h->bits; i++)
        if (!isfinite(h->bias[i])) return osp_error(OSP_EINVAL, "hash head: a bias is not finite");
    /* The head's tensors share the file with the network's parameters. */
    for (int i = 0; i < osp_graph_param_count(net->graph); i++) {
        const char *name = osp_graph_param(net->graph, i)->name;
        if (!strcmp(name, "hash.weight") || !strcmp(name, "hash.bias"))
            return osp_error(OSP_EINVAL, "hash head: the network has a parameter named '%s' already", name);
    }
    return OSP_OK;
}

int osp_net_set_hash(osp_net *net, const osp_net_hash *hash) {
    if (!hash) {
        hash_free(net->hash);
        net->hash = NULL;
        return OSP_OK;
    }
    int rc = check(net, hash);
    if (rc) return rc;
    const size_t nw = (size_t)hash->bits * (size_t)hash->dim;
    osp_net_hash *h = osp_calloc(1, sizeof *h);
    if (!h) return OSP_ENOMEM;
    h->bits = hash->bits;
    h->dim = hash->dim;
    h->normalize = hash->normalize;
    memcpy(h->method, hash->method, sizeof h->method);
    const size_t len = strlen(hash->layer);
    h->layer = osp_alloc(len + 1);
    h->weight = osp_alloc(nw * sizeof *h->weight);
    h->bias = osp_alloc((size_t)hash->bits * sizeof *h->bias);
    if (!h->layer || !h->weight || !h->bias) {
        hash_free(h);
        return OSP_ENOMEM;
    }
    memcpy(h->layer, hash->layer, len + 1);
    memcpy(h->weight, hash->weight, nw * sizeof *h->weight);
    memcpy(h->bias, hash->bias, (size_t)hash->bits * sizeof *h->bias);
    hash_free(net->hash);
    net->hash = h;
    return OSP_OK;
}
