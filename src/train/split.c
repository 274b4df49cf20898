/* The hooks through which layers reach the other ranks during a step
 * (osp_exec_hooks): synchronised batch norm (sync_bn.c), model-parallel
 * fully connected layers (model_parallel.c), and lazy update's wait
 * before each layer (distributed.c). Set up once per run. */
#include "train_impl.h"

void osp__split_rows(const osp__split *s, int q, int64_t *lo, int64_t *hi) {
    const int n = osp_dist_size(s->d);
    const int64_t a = (int64_t)s->batch * q / n, b = (int64_t)s->batch * (q + 1) / n;
    *lo = a < s->global ? a : s->global;
    *hi = b < s->global ? b : s->global;
}

void osp__split_hooks(osp__split *s, int sync_bn, osp_exec_hooks *h) {
    *h = (osp_exec_hooks){.user = s};
    if (sync_bn) h->sum = osp__split_sum;
    if (s->mp) {
        h->fc_forward = osp__mp_fc_forward;
        h->fc_backward = osp__mp_fc_backward;
    }
}

void osp__split_before_node(void *split, int node) {
    osp__split *s = split;
    osp__reducer_node_before(s->lazy, node);
}

int osp__split_start(osp__run *r) {
    const osp_train_config *cfg = r->cfg;
    if (r->ranks == 1 || (!cfg->sync_bn && !cfg->model_parallel)) return OSP_OK;
    /* Every hook is a collective: a rank without samples in a step would
     * run no layer and leave the others waiting. Only an epoch's last,
     * shorter batch can leave the last rank without any. */
    const int64_t last = r->data->count - (r->steps_per_epoch - 1) * cfg->batch;
    if (last <= (int64_t)cfg->batch * (r->ranks - 1) / r->ranks)
        return osp_error(OSP_EINVAL, "%s: each epoch's last batch has %lld samples, too few for "
                         "%d ranks; choose a --batch that leaves every rank a sample (or divides "
                         "the %lld samples)", cfg->model_parallel ? "--model-parallel" : "--sync-bn",
                         (long long)last, r->ranks, (long long)r->data->count);
    if (cfg->model_parallel && r->n_groups)
        return osp_error(OSP_EINVAL, "--model-parallel does not combine with fine-tuning "
                         "(--freeze, --lr-backbone, --head-layer)");
    r->split = (osp__split){.d = r->dist, .batch = cfg->batch};
    if (cfg->model_parallel) {
        int rc = osp__mp_new(r->dist, r->net->graph, r->net->logits_node, cfg->batch, &r->split.mp);
        if (rc) return rc;
        if (osp__mp_layers(r->split.mp) == 0)
            return osp_error(OSP_EINVAL, "--model-parallel fc: the network has no [fc] layer "
                             "to split besides its last (and with at least %d outputs)", r->ranks);
    }
    osp__split_hooks(&r->split, cfg->sync_bn, &r->hooks);
    r->split_on = 1;
    return OSP_OK;
}
