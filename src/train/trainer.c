/* The training loop: shuffled minibatches, forward, fused softmax +
 * cross-entropy, backward, optimizer step, checkpoints.
 *
 * Everything a step needs (the batch buffers, the graph's arena) is
 * allocated before the first step; a step allocates nothing.
 *
 * In an MPI job every rank runs this loop. Epoch e's permutation is the
 * same on every rank; step s's global batch is positions [sG, sG + G) of
 * it, and rank r takes the slice [r*G/N, (r+1)*G/N) of those (a last,
 * shorter batch is cut at the same places, so a rank may get nothing). A
 * rank's gradient, a mean over its slice, is scaled by its share of the
 * global batch before the ranks' gradients are summed: the sum is then the
 * gradient of the mean loss over the global batch, as one process with
 * batch G computes it. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "loader.h"
#include "osprey/train.h"
#include "train_impl.h"

osp_train_config osp_train_defaults(void) {
    osp_train_config c;
    memset(&c, 0, sizeof c);
    c.epochs = 10;
    c.batch = 64;
    c.lr = 0.01f;
    c.optim = osp_optim_defaults(OSP_OPTIM_SGD);
    c.schedule.kind = OSP_SCHED_CONSTANT;
    c.schedule.gamma = 0.1f;
    c.seed = 1;
    c.overlap = 1;
    c.bucket_mb = 1.0f;
    c.comm_thread = 1;
    c.max_staleness = 4;
    c.worker_timeout_s = 60;
    return c;
}

int osp_train_check_data(const osp_net *net, const osp_dataset *data) {
    if (!osp_shape_equal(&data->sample_shape, &net->input)) {
        char want[96], got[96];
        osp_shape_format(&net->input, want, sizeof want);
        osp_shape_format(&data->sample_shape, got, sizeof got);
        return osp_error(OSP_ESHAPE, "%s: samples are %s but the network's input is %s",
                         data->source ? data->source : "data", got, want);
    }
    if (data->n_classes > net->n_classes)
        return osp_error(OSP_ESHAPE, "%s: %d classes but the network has %d outputs",
                         data->source ? data->source : "data", data->n_classes, net->n_classes);
    if (data->count <= 0)
        return osp_error(OSP_EINVAL, "%s: the dataset is empty", data->source ? data->source : "data");
    return OSP_OK;
}

int osp_train_load_batch(const osp_net *net, osp_dataset *data, const int64_t *idx, int batch,
                         float *x, int32_t *labels) {
    const int64_t size = osp_shape_numel(&net->input);
    int failed = 0;
    int64_t failed_at = -1;
    char message[512] = "";
    /* Each sample is written by one thread; the first failure is kept. */
#pragma omp parallel for schedule(dynamic, 4)
    for (int b = 0; b < batch; b++) {
        int rc = data->get(data, idx[b], x + (int64_t)b * size, &labels[b]);
        if (rc == OSP_OK && (labels[b] < 0 || labels[b] >= net->n_classes)) {
            osp_error(OSP_ERANGE, "%s: sample %lld has label %d, outside the network's %d outputs",
                      data->source ? data->source : "data", (long long)idx[b], labels[b],
                      net->n_classes);
            rc = OSP_ERANGE;
        }
        if (rc != OSP_OK) {
#pragma omp critical(osp_load_batch_error)
            if (!failed || idx[b] < failed_at) {
                failed = rc;
                failed_at = idx[b];
                snprintf(message, sizeof message, "%s", osp_last_error());
            }
        }
    }
    if (failed) return osp_error(failed, "%s", message);
    osp_net_normalize(net, x, batch);
    return OSP_OK;
}

static char *config_json(const osp__run *r) {
    const osp_train_config *cfg = r->cfg;
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "epochs", cfg->epochs);
    cJSON_AddNumberToObject(o, "batch", cfg->batch);
    cJSON_AddNumberToObject(o, "lr", cfg->lr);
    cJSON_AddStringToObject(o, "optimizer", osp_optim_name(cfg->optim.kind));
    cJSON_AddStringToObject(o, "schedule", osp_sched_name(cfg->schedule.kind));
    cJSON_AddNumberToObject(o, "warmup_epochs", cfg->warmup_epochs);
    cJSON_AddNumberToObject(o, "step_epochs", cfg->step_epochs);
    cJSON_AddNumberToObject(o, "gamma", cfg->schedule.gamma);
    cJSON_AddNumberToObject(o, "threads", osp_threads_get());
    cJSON_AddNumberToObject(o, "ranks", r->ranks);
    if (cfg->hogwild > 1) cJSON_AddNumberToObject(o, "hogwild", cfg->hogwild);
    /* the mode the run took (auto resolved): a resumed run steps the same way */
    if (r->ranks == 1 && cfg->hogwild <= 1)
        cJSON_AddStringToObject(o, "threads_mode", osp_threads_mode_name(r->replicas ? OSP_THREADS_REPLICAS
                                                                                     : OSP_THREADS_LAYERS));
    if (cfg->freeze_until) cJSON_AddStringToObject(o, "freeze_until", cfg->freeze_until);
    if (cfg->head_layer) cJSON_AddStringToObject(o, "head_layer", cfg->head_layer);
    if (cfg->lr_backbone > 0) cJSON_AddNumberToObject(o, "lr_backbone", cfg->lr_backbone);
    if (r->data && r->data->multi_label) cJSON_AddStringToObject(o, "loss", "bce");
    /* Checked by osp_checkpoint_verify: a file whose tensors were damaged
     * after it was written is not taken for a valid checkpoint. */
    cJSON_AddNumberToObject(o, "crc32c", (double)osp_checkpoint_crc(r->net, r->opt));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

int osp__save_checkpoint(osp__run *r, int64_t step) {
    const osp_train_config *cfg = r->cfg;
    if (!cfg->checkpoint || r->rank != 0) return OSP_OK;
    char *config = config_json(r);
    if (!config) return OSP_ENOMEM;
    osp_train_state st = {.step = step, .seed = cfg->seed, .config = config};
    int rc = osp_checkpoint_save(r->net, r->opt, &st, cfg->checkpoint);
    if (!rc && cfg->keep_checkpoints > 0) {
        /* The same bytes under a second name: a hard link is atomic, and
         * costs no second write. */
        char path[4096];
        osp_checkpoint_step_path(cfg->checkpoint, step, path, sizeof path);
        unlink(path);
        if (link(cfg->checkpoint, path) != 0) rc = osp_checkpoint_save(r->net, r->opt, &st, path);
        if (!rc) osp_checkpoint_prune(cfg->checkpoint, cfg->keep_checkpoints);
    }
    cJSON_free(config);
    if (rc) return osp_error(rc, "saving checkpoint: %s", osp_last_error());
    return OSP_OK;
}

/* This rank's part of a step's global batch of n samples: [lo, hi). The
 * slice of a full batch, cut short by a shorter one. */
static void rank_part(const osp__run *r, int64_t n, int64_t *lo, int64_t *hi) {
    int64_t a = r->slice_lo, b = (int64_t)r->slice_lo + r->slice;
    *lo = a < n ? a : n;
    *hi = b < n ? b : n;
}

/* Samples in step in_epoch's global batch. */
static int64_t global_batch_at(const osp__run *r, int64_t in_epoch) {
    int64_t left = r->data->count - in_epoch * r->cfg->batch;
    return left < r->cfg->batch ? left : r->cfg->batch;
}

/* One step on the loader's next batch (of this rank's samples). */
static int train_step(osp__run *r, int64_t step, int64_t global, int batch, osp_step_result *out,
                      osp_rank_timing *tm) {
    osp_graph *g = r->net->graph;
    osp_node *logits = osp_graph_node(g, r->net->logits_node);
    const int distributed = r->reducer != NULL;
    double t0 = osp_now();
    int rc;
    if (batch > 0) {
        int loaded;
        if (r->targets) rc = osp_loader_next_hot(r->loader, r->x, r->targets, &loaded);
        else rc = osp_loader_next(r->loader, r->x, r->labels, &loaded);
        if (rc) return rc;
        if (loaded != batch)
            return osp_error(OSP_ESTATE, "the loader gave %d samples for a batch of %d", loaded, batch);
    }
    double t1 = osp_now();
    tm->load_s += t1 - t0;
    float lr = osp_sched_lr(&r->sched, r->cfg->lr, step);
    double loss = 0;
    int64_t correct = 0;
    osp_exec ex = {.be = osp_graph_backend(r->net->graph), .mode = OSP_MODE_TRAIN, .batch = batch,
                   .seed = r->cfg->seed, .step = (uint64_t)step};
    if (r->split_on) { /* osp__split_start saw to it that batch > 0 */
        r->split.global = global;
        r->split.share = (float)((double)batch / (double)global);
        r->split.bytes = 0;
        ex.hooks = &r->hooks;
    }
    if (r->split.lazy) ex.hooks = &r->hooks;
    if (r->replicas) { /* forward and backward together, over the threads */
        osp_replicas_batch rb = {.x = r->x, .labels = r->targets ? NULL : r->labels,
                                 .targets = r->targets, .batch = batch, .seed = r->cfg->seed,
                                 .step = (uint64_t)step};
        if ((rc = osp_replicas_step(r->replicas, &rb, &loss, &correct))) return rc;
    } else if (batch > 0 && r->targets) {
        if ((rc = osp__forward_loss_hot(r->net, r->x, r->targets, &ex, &loss, &correct))) return rc;
    } else if (batch > 0 && (rc = osp__forward_loss(r->net, r->x, r->labels, &ex, &loss, &correct))) {
        return rc;
    }
    if (!distributed) {
        if (!isfinite(loss))
            return osp_error(OSP_ERANGE, "the loss diverged (%g) at step %lld: lower the learning rate",
                             loss, (long long)step);
        if (!r->replicas && (rc = osp_graph_backward_from(g, logits->id, &ex))) return rc;
        double t2 = osp_now();
        tm->compute_s += t2 - t1;
        osp__run_update(r, osp_graph_weights(g, NULL), osp_graph_grads(g, NULL), lr);
        tm->update_s += osp_now() - t2;
        out->loss = loss;
        out->correct = correct;
        return OSP_OK;
    }
    /* The ranks' sums go with the gradients: loss and correct answers
     * weighted by samples, so the job's figures are the global batch's. */
    double stats[3] = {loss * batch, (double)correct, (double)batch};
    if ((rc = osp__reducer_settle(r->reducer, &tm->comm_wait_s, &tm->update_s))) return rc;
    osp__reducer_begin(r->reducer, (float)((double)batch / (double)global));
    osp__reducer_stats(r->reducer, stats, 3);
    if (batch > 0) {
        rc = osp_graph_backward_each(g, logits->id, &ex, osp__reducer_node_done, r->reducer);
        if (rc) return rc;
    } else { /* nothing to learn from here, but every bucket must be sent */
        int64_t nw;
        float *grads = osp_graph_grads(g, &nw); /* nw is set by this call: not in one expression */
        memset(grads, 0, (size_t)nw * sizeof(float));
        for (int i = osp_graph_node_count(g) - 1; i > 0; i--) osp__reducer_node_done(r->reducer, i);
    }
    tm->compute_s += osp_now() - t1;
    if (r->split.rc) return r->split.rc;
    double t2 = osp_now();
    if (r->split.mp) /* its blocks, at the same Adam step as the buckets */
        osp__mp_update(r->split.mp, r->opt, osp_graph_weights(g, NULL), osp_graph_grads(g, NULL), lr);
    tm->update_s += osp_now() - t2;
    tm->comm_bytes += r->split.bytes + osp__reducer_bytes(r->reducer);
    rc = osp__reducer_finish(r->reducer, r->opt, osp_graph_weights(g, NULL), lr,
                             r->n_groups ? r->groups : NULL, r->n_groups, &tm->comm_wait_s,
                             &tm->update_s);
    if (rc) return rc;
    out->loss = stats[2] > 0 ? stats[0] / stats[2] : 0;
    out->correct = (int64_t)llround(stats[1]);
    if (!isfinite(out->loss))
        return osp_error(OSP_ERANGE, "the loss diverged (%g) at step %lld: lower the learning rate",
                         out->loss, (long long)step);
    return OSP_OK;
}

void osp__epoch_order(osp__run *r, int epoch) {
    osp_rng rng;
    osp_rng_derive(&rng, r->cfg->seed, OSP__RNG_STREAM_DATA, (uint64_t)epoch);
    for (int64_t i = 0; i < r->data->count; i++) r->order[i] = i;
    osp_rng_shuffle(&rng, r->order, r->data->count);
}

/* This rank's samples of the epoch, step after step; returns how many. */
static int64_t rank_order(osp__run *r) {
    int64_t n = 0;
    for (int64_t s = 0; s < r->steps_per_epoch; s++) {
        int64_t lo, hi, first = s * r->cfg->batch;
        rank_part(r, global_batch_at(r, s), &lo, &hi);
        for (int64_t i = lo; i < hi; i++) r->rank_order[n++] = r->order[first + i];
    }
    return n;
}

/* A contiguous part of a dataset (a rank's share of the validation set). */
typedef struct view {
    osp_dataset *base;
    int64_t first;
} view;

static int view_get(osp_dataset *ds, int64_t i, float *out, int32_t *label) {
    view *v = ds->impl;
    return v->base->get(v->base, v->first + i, out, label);
}

static const char *view_name(const osp_dataset *ds, int64_t i) {
    const view *v = ds->impl;
    return v->base->name ? v->base->name(v->base, v->first + i) : NULL;
}

/* The view lives on the stack and borrows the rest from its base:
 * osp_dataset_free releases only the skip log its loader made. */
static void view_destroy(osp_dataset *ds) { (void)ds; }

int osp__validate(osp__run *r, osp_dataset *val, osp_train_progress *p) {
    const int batch = r->cfg->batch > 256 ? r->cfg->batch : 256;
    osp_eval_result ev = {0};
    int rc;
    if (r->ranks == 1) {
        if ((rc = osp_train_evaluate(r->net, val, batch, &ev))) return rc;
    } else {
        int64_t lo = val->count * r->rank / r->ranks, hi = val->count * (r->rank + 1) / r->ranks;
        view v = {val, lo};
        osp_dataset part = *val;
        part.count = hi - lo;
        part.impl = &v;
        part.get = view_get;
        part.name = val->name ? view_name : NULL;
        part.get_augmented = NULL;
        part.label = NULL;
        part.destroy = view_destroy;
        part.skips = NULL;
        part.n_left_out = 0;
        part.n_left_out_kept = 0;
        part.left_out = NULL;
        int ok = 1;
        if (part.count > 0 && osp_train_evaluate(r->net, &part, batch, &ev)) ok = 0;
        osp_dataset_report_skipped(&part);
        osp_dataset_free(&part);
        if (osp_dist_min(r->dist, ok) != 1) {
            if (!ok) return osp_error(OSP_EIO, "validation on rank %d: %s", r->rank, osp_last_error());
            return osp_error(OSP_EIO, "validation failed on another rank");
        }
        double sums[4] = {ev.top1 * ev.count, ev.top5 * ev.count, ev.loss * ev.count, (double)ev.count};
        if ((rc = osp__dist_sum(r->dist, sums, 4))) return rc;
        ev.count = (int64_t)sums[3];
        ev.top1 = sums[0] / fmax(sums[3], 1);
        ev.top5 = sums[1] / fmax(sums[3], 1);
        ev.loss = sums[2] / fmax(sums[3], 1);
    }
    p->val_top1 = ev.top1;
    p->val_top5 = ev.top5;
    p->val_loss = ev.loss;
    return OSP_OK;
}

/* The ranks' weights must agree; a difference is a bug, caught here. */
static int check_same_weights(osp__run *r) {
    if (r->ranks == 1) return OSP_OK;
    int64_t n;
    const float *w = osp_graph_weights(r->net->graph, &n);
    int crc = (int)(osp_crc32c(0, w, (size_t)n * sizeof(float)) >> 1);
    int lo = osp_dist_min(r->dist, crc), hi = -osp_dist_min(r->dist, -crc);
    if (lo != hi) return osp_error(OSP_ESTATE, "the ranks' weights differ (a bug): stopping");
    return OSP_OK;
}

static int train_loop(osp__run *r, osp_dataset *val, int64_t start_step) {
    const osp_train_config *cfg = r->cfg;
    int64_t step = start_step;
    int64_t stop = cfg->stop_after > 0 && cfg->stop_after < r->total_steps ? cfg->stop_after : r->total_steps;
    double run_start = osp_now();
    int64_t run_images = 0;
    osp_rank_timing *all = osp_calloc((size_t)r->ranks, sizeof *all);
    if (!all) return OSP_ENOMEM;
    int rc = OSP_OK;
    while (step < stop && !rc) {
        int epoch = (int)(step / r->steps_per_epoch);
        int64_t in_epoch = step % r->steps_per_epoch;
        osp__epoch_order(r, epoch);
        if (r->ranks > 1) {
            int64_t n = rank_order(r);
            rc = osp_loader_start(r->loader, epoch, r->rank_order, n, in_epoch * r->slice);
        } else {
            rc = osp_loader_start(r->loader, epoch, r->order, r->data->count, in_epoch * cfg->batch);
        }
        if (rc) break;
        double loss_sum = 0, epoch_start = osp_now();
        int64_t seen = 0, right = 0, steps_here = 0;
        osp_rank_timing tm = {.rank = r->rank};
        for (; in_epoch < r->steps_per_epoch && step < stop; in_epoch++) {
            int64_t global = global_batch_at(r, in_epoch), lo, hi;
            rank_part(r, global, &lo, &hi);
            osp_step_result res = {0};
            double t0 = osp_now();
            if ((rc = train_step(r, step, global, (int)(hi - lo), &res, &tm))) break;
            /* lazy update: whole weights before they are checked, saved or validated */
            const int64_t done = step + 1;
            if ((in_epoch + 1 == r->steps_per_epoch || done == stop ||
                 (cfg->checkpoint && cfg->checkpoint_every > 0 && done % cfg->checkpoint_every == 0)) &&
                (rc = osp__reducer_settle(r->reducer, &tm.comm_wait_s, &tm.update_s)))
                break;
            tm.total_s += osp_now() - t0;
            tm.steps++;
            step++;
            steps_here++;
            loss_sum += res.loss;
            seen += global;
            right += res.correct;
            run_images += global;
            osp_train_progress p = {0};
            p.epoch = epoch;
            p.epochs = cfg->epochs;
            p.step = step;
            p.total_steps = r->total_steps;
            p.steps_per_epoch = r->steps_per_epoch;
            p.step_in_epoch = in_epoch + 1;
            p.lr = osp_sched_lr(&r->sched, cfg->lr, step - 1);
            p.step_loss = res.loss;
            p.epoch_loss = loss_sum / (double)steps_here;
            p.epoch_accuracy = (double)right / (double)seen;
            double now = osp_now();
            p.images_per_s = (double)seen / fmax(now - epoch_start, 1e-9);
            double run_rate = (double)run_images / fmax(now - run_start, 1e-9);
            int64_t images_left = (r->total_steps - step) * cfg->batch;
            p.eta_s = run_rate > 0 ? (double)images_left / run_rate : 0;
            p.epoch_end = in_epoch + 1 == r->steps_per_epoch;
            p.val_top1 = p.val_top5 = p.val_loss = NAN;
            p.ranks = r->ranks;
            p.comm_wait_s = tm.comm_wait_s;
            p.comm_fraction = tm.total_s > 0 ? tm.comm_wait_s / tm.total_s : 0;
            p.comm_bytes_per_step = tm.comm_bytes / (double)tm.steps;
            int at_stop = step == stop;
            int every = cfg->checkpoint_every > 0 && step % cfg->checkpoint_every == 0;
            /* the model-parallel blocks to every rank: whole weights to check, save, validate */
            if (r->split.mp && (p.epoch_end || at_stop || (cfg->checkpoint && every)) &&
                (rc = osp__mp_gather(r->split.mp, r->opt, osp_graph_weights(r->net->graph, NULL))))
                break;
            if (p.epoch_end || at_stop) {
                if ((rc = check_same_weights(r))) break;
                if ((rc = osp__dist_gather_timing(r->dist, &tm, all))) break;
                if (r->rank == 0) p.rank_timing = all;
            }
            if (cfg->checkpoint && (every || p.epoch_end || at_stop)) {
                if ((rc = osp__save_checkpoint(r, step))) break;
            }
            if (p.epoch_end && val && (rc = osp__validate(r, val, &p))) break;
            if (cfg->on_step) cfg->on_step(&p, cfg->user);
            if (p.epoch_end) { /* after the epoch's line, so the report reads under it */
                char what[32];
                snprintf(what, sizeof what, "epoch %d", epoch + 1);
                osp_loader_report(r->loader, what);
                if (val) osp_dataset_report_skipped(val);
            }
        }
    }
    osp_free(all);
    return rc;
}

int64_t osp_train_convert_step(int64_t count, int old_batch, int new_batch, int64_t step) {
    if (old_batch <= 0 || new_batch <= 0 || count <= 0 || old_batch == new_batch) return step;
    int64_t old_spe = (count + old_batch - 1) / old_batch, new_spe = (count + new_batch - 1) / new_batch;
    int64_t epoch = step / old_spe, done = step % old_spe * old_batch;
    return epoch * new_spe + done / new_batch;
}

/* Every rank starts from rank 0's weights, statistics and optimizer state. */
static int share_state(osp__run *r) {
    if (r->ranks == 1) return OSP_OK;
    int64_t nw, nb;
    float *w = osp_graph_weights(r->net->graph, &nw);
    float *b = osp_graph_buffers(r->net->graph, &nb);
    int rc = osp__dist_bcast_floats(r->dist, w, nw);
    if (!rc) rc = osp__dist_bcast_floats(r->dist, b, nb);
    if (!rc && r->opt->m) rc = osp__dist_bcast_floats(r->dist, r->opt->m, r->opt->n);
    if (!rc && r->opt->v) rc = osp__dist_bcast_floats(r->dist, r->opt->v, r->opt->n);
    if (!rc) rc = osp_dist_bcast(r->dist, &r->opt->t, sizeof r->opt->t);
    return rc;
}

void osp__run_update(const osp__run *r, float *w, const float *g, float lr) {
    if (r->n_groups) osp_optim_step_groups(r->opt, w, g, lr, r->groups, r->n_groups);
    else osp_optim_step(r->opt, w, g, lr);
}

/* The offset of the first weight of a node at or after node `from` (the
 * end of the weights if none). */
static int64_t weights_from(const osp_graph *g, int from) {
    int64_t n_weights;
    osp_graph_weights((osp_graph *)g, &n_weights);
    for (int i = 0; i < osp_graph_param_count(g); i++) {
        const osp_param *p = osp_graph_param(g, i);
        if (p->kind == OSP_PARAM_WEIGHT && p->node >= from) return p->offset;
    }
    return n_weights;
}

int osp__finetune_setup(osp__run *r, int *frozen_until) {
    const osp_train_config *cfg = r->cfg;
    osp_graph *g = r->net->graph;
    int rc, until = 0;
    *frozen_until = 0;
    r->n_groups = 0;
    /* A graph the caller froze (osp_graph_freeze) stays so. */
    const int caller_frozen = cfg->freeze_until ? 0 : osp_graph_frozen_until(g);
    if (!cfg->freeze_until && !(cfg->lr_backbone > 0) && !cfg->head_layer && !caller_frozen)
        return OSP_OK;
    if (cfg->lr_backbone < 0 || !isfinite(cfg->lr_backbone))
        return osp_error(OSP_EINVAL, "the backbone's learning rate must be positive");
    if (cfg->freeze_until) {
        osp_node *n = osp_graph_find(g, cfg->freeze_until);
        if (!n || n->id == 0)
            return osp_error(OSP_ENOENT, "cannot freeze up to layer '%s': the network has no such "
                             "layer ('osprey info MODEL' lists them)", cfg->freeze_until);
        until = n->id;
    } else {
        until = caller_frozen;
    }
    int head = osp_graph_node_count(g);
    if (cfg->lr_backbone > 0 || cfg->head_layer) {
        if ((rc = osp_net_find_head(r->net, cfg->head_layer, &head))) return rc;
        if (head <= until)
            return osp_error(OSP_EINVAL, "the head '%s' is frozen (up to '%s'): nothing of it "
                             "would learn", osp_graph_node(g, head)->name, osp_graph_node(g, until)->name);
    }
    int64_t n_weights;
    osp_graph_weights(g, &n_weights);
    const int64_t lo = weights_from(g, until + 1), hi = weights_from(g, head);
    if (lo >= n_weights)
        return osp_error(OSP_EINVAL, "every layer with weights is frozen (up to '%s'): nothing "
                         "to train", osp_graph_node(g, until)->name);
    if (cfg->freeze_until) {
        if ((rc = osp_graph_freeze(g, until))) return rc;
        *frozen_until = until; /* undone after the run */
    }
    const float backbone = cfg->lr_backbone > 0 ? cfg->lr_backbone / cfg->lr : 1.0f;
    if (hi > lo) r->groups[r->n_groups++] = (osp_param_group){lo, hi, backbone};
    if (n_weights > hi) r->groups[r->n_groups++] = (osp_param_group){hi, n_weights, 1.0f};
    return OSP_OK;
}

static int osp__train_run(osp__run *rp, osp_dataset *val, int64_t start_step);

/* The loss for data: multi-label data only with bce, single-label only
 * with softmax; 1 for bce. Refusals come before anything is done. */
static int check_loss(const osp_net *net, const osp_dataset *data, const osp_dataset *val,
                      const osp_train_config *cfg, int *bce) {
    const char *src = data && data->source ? data->source : "data";
    *bce = 0;
    if (cfg->loss < OSP_LOSS_AUTO || cfg->loss > OSP_LOSS_BCE)
        return osp_error(OSP_EINVAL, "unknown loss %d", cfg->loss);
    if (!data) return OSP_OK;
    const int multi = data->multi_label != 0;
    if (multi && cfg->loss == OSP_LOSS_SOFTMAX)
        return osp_error(OSP_EINVAL, "%s is multi-label data (images with several labels, or none) "
                         "but softmax cross-entropy needs exactly one label per image: train it "
                         "with --loss bce (the default for such data)", src);
    if (!multi && cfg->loss == OSP_LOSS_BCE)
        return osp_error(OSP_EINVAL, "%s has one label per image: --loss bce is for multi-label "
                         "data (a list of path<TAB>label,label lines or JSON Lines, see "
                         "docs/multilabel.md)", src);
    if (val && (val->multi_label != 0) != multi)
        return osp_error(OSP_EINVAL, "%s is %s data but the validation set %s is %s", src,
                         multi ? "multi-label" : "single-label", val->source ? val->source : "",
                         multi ? "single-label" : "multi-label");
    if (!multi) return OSP_OK;
    if (!data->labels_multi)
        return osp_error(OSP_EINVAL, "%s: a multi-label dataset without its labels", src);
    if (data->n_classes != net->n_classes)
        return osp_error(OSP_ESHAPE, "%s: %d labels but the network has %d outputs: a multi-label "
                         "model has one output per label", src, data->n_classes, net->n_classes);
    *bce = 1;
    return OSP_OK;
}

int osp_train(osp_net *net, osp_dataset *data, osp_dataset *val, const osp_train_config *cfg,
              osp_optim *opt, int64_t start_step) {
    int frozen = 0, bce = 0;
    osp__run r = {.net = net, .data = data, .cfg = cfg, .opt = opt};
    int rc = check_loss(net, data, val, cfg, &bce);
    if (rc) return rc;
    /* Single-label training leaves the network as it was (a model trained
     * before keeps its flag). */
    if (bce) osp_net_set_multi_label(net, 1);
    rc = osp__finetune_setup(&r, &frozen);
    if (rc) return rc;
    rc = osp__train_run(&r, val, start_step);
    /* The network runs as a whole again, as it is saved. */
    if (frozen) osp_graph_freeze(net->graph, 0);
    /* Per-label thresholds from the validation set, stored in the model. */
    if (!rc && bce && val) {
        int batch = cfg->batch > 256 ? cfg->batch : 256;
        rc = osp_multilabel_thresholds(net, val, batch, NULL);
    }
    return rc;
}

static int osp__train_run(osp__run *rp, osp_dataset *val, int64_t start_step) {
    osp_net *net = rp->net;
    osp_dataset *data = rp->data;
    const osp_train_config *cfg = rp->cfg;
    if (cfg->epochs <= 0 || cfg->batch <= 0 || !(cfg->lr > 0) || !isfinite(cfg->lr))
        return osp_error(OSP_EINVAL, "epochs, batch and learning rate must be positive");
    int rc = osp_train_check_data(net, data);
    if (!rc && val) rc = osp_train_check_data(net, val);
    if (rc) return rc;
    osp__run r = *rp;
    r.dist = cfg->dist;
    r.rank = osp_dist_rank(cfg->dist);
    r.ranks = osp_dist_size(cfg->dist);
    if (r.ranks > 1 && cfg->hogwild > 1)
        return osp_error(OSP_EINVAL, "Hogwild and MPI data parallelism do not combine: choose one");
    if (cfg->param_servers > 0 && (r.ranks <= cfg->param_servers || cfg->hogwild > 1))
        return osp_error(OSP_EINVAL, "%d parameter server%s need an MPI job of at least %d ranks "
                         "(mpirun -np), without Hogwild", cfg->param_servers,
                         cfg->param_servers == 1 ? "" : "s", cfg->param_servers + 1);
    if (cfg->batch < r.ranks && cfg->param_servers <= 0)
        return osp_error(OSP_EINVAL, "a global batch of %d cannot be shared by %d ranks", cfg->batch,
                         r.ranks);
    r.slice_lo = (int)((int64_t)cfg->batch * r.rank / r.ranks);
    r.slice = (int)((int64_t)cfg->batch * (r.rank + 1) / r.ranks) - r.slice_lo;
    r.steps_per_epoch = (data->count + cfg->batch - 1) / cfg->batch;
    r.total_steps = r.steps_per_epoch * cfg->epochs;
    if (start_step < 0 || start_step > r.total_steps)
        return osp_error(OSP_EINVAL, "cannot resume at step %lld of a %lld-step run",
                         (long long)start_step, (long long)r.total_steps);
    r.sched = cfg->schedule;
    r.sched.total_steps = r.total_steps;
    r.sched.warmup_steps = (int64_t)cfg->warmup_epochs * r.steps_per_epoch;
    r.sched.step_size = (int64_t)llround(cfg->step_epochs * (double)r.steps_per_epoch);
    int64_t n_weights;
    osp_graph_weights(net->graph, &n_weights);
    int own_opt = 0;
    if (!r.opt) {
        rc = osp_optim_new_for(&cfg->optim, n_weights, osp_graph_backend(net->graph), &r.opt);
        if (rc) return rc;
        own_opt = 1;
    } else if (r.opt->n != n_weights) {
        return osp_error(OSP_EINVAL, "the optimizer state does not match the network");
    }
    if (cfg->param_servers > 0) {
        rc = osp__train_param_server(&r, val, start_step);
        if (own_opt) osp_optim_free(r.opt);
        return rc;
    }
    if (cfg->hogwild > 1) {
        rc = osp__train_hogwild(&r, val, start_step);
        if (own_opt) osp_optim_free(r.opt);
        return rc;
    }
    const int64_t size = osp_shape_numel(&net->input);
    const int batch = r.ranks > 1 ? r.slice : cfg->batch;
    r.x = osp_alloc((size_t)batch * (size_t)size * sizeof(float));
    r.labels = osp_alloc((size_t)batch * sizeof(int32_t));
    if (data->multi_label) {
        r.targets = osp_alloc((size_t)(batch > 0 ? batch : 1) * (size_t)net->n_classes * sizeof(float));
        if (!r.targets) rc = OSP_ENOMEM;
    }
    r.order = osp_alloc((size_t)data->count * sizeof(int64_t));
    if (r.ranks > 1) r.rank_order = osp_alloc((size_t)data->count * sizeof(int64_t));
    if (!r.x || !r.labels || !r.order || (r.ranks > 1 && !r.rank_order)) rc = OSP_ENOMEM;
    if (!rc) rc = osp__split_start(&r);
    const int replicas = r.ranks > 1 ? 1 : osp_replicas_for(net, batch, osp_threads_get(), cfg->threads_mode);
    if (!rc && replicas > 1) rc = osp_replicas_new(net, replicas, &r.replicas);
    if (!rc && r.ranks > 1) {
        osp__reducer_config rcfg = {.bucket_mb = cfg->bucket_mb, .overlap = cfg->overlap,
                                    .compress = cfg->compress, .reduce = cfg->reduce,
                                    .thread = cfg->comm_thread, .lazy = cfg->lazy_update,
                                    .skip = osp__mp_skip(r.split.mp)};
        rc = osp__reducer_new(r.dist, net->graph, &rcfg, &r.reducer);
        if (!rc && cfg->lazy_update) { /* beside the layers' hooks, if any */
            r.split.lazy = r.reducer;
            r.hooks.user = &r.split;
            r.hooks.before_node = osp__split_before_node;
        }
    }
    if (!rc) rc = share_state(&r);
    osp_loader_config lc = osp__loader_config(net, data, batch > 0 ? batch : 1, cfg->seed, 1);
    lc.multi_hot = r.targets != NULL;
    if (!rc) rc = osp_loader_new(data, &lc, &r.loader);
    if (!rc) rc = train_loop(&r, val, start_step);
    osp_loader_free(r.loader);
    osp_replicas_free(r.replicas);
    osp__reducer_free(r.reducer);
    osp__mp_free(r.split.mp);
    osp_free(r.x);
    osp_free(r.labels);
    osp_free(r.targets);
    osp_free(r.order);
    osp_free(r.rank_order);
    if (own_opt) osp_optim_free(r.opt);
    return rc;
}
