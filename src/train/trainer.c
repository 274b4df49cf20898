/* The training loop: shuffled minibatches, forward, fused softmax +
 * cross-entropy, backward, optimizer step, checkpoints.
 *
 * Everything a step needs (the batch buffers, the graph's arena) is
 * allocated before the first step; a step allocates nothing. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "loader.h"
#include "osprey/train.h"

/* Stream tag for osp_rng_derive: the data order of each epoch. */
#define RNG_STREAM_DATA 0x64617461u

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
    return c;
}

int osp_check_data(const osp_net *net, const osp_dataset *data) {
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

int osp_load_batch(const osp_net *net, osp_dataset *data, const int64_t *idx, int batch, float *x,
                   int32_t *labels) {
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

static char *config_json(const osp_train_config *cfg) {
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
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static int save_checkpoint(const osp_net *net, const osp_optimizer *opt, const osp_train_config *cfg,
                           int64_t step, const char *config) {
    osp_train_state st = {.step = step, .seed = cfg->seed, .config = (char *)config};
    int rc = osp_checkpoint_save(net, opt, &st, cfg->checkpoint);
    if (rc) return osp_error(rc, "saving checkpoint: %s", osp_last_error());
    return OSP_OK;
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

typedef struct run {
    osp_net *net;
    osp_dataset *data;
    const osp_train_config *cfg;
    osp_optimizer *opt;
    osp_schedule sched;
    float *x;
    int32_t *labels;
    int64_t *order;
    osp_loader *loader; /* decodes batches ahead on worker threads */
    char *config;
    int64_t steps_per_epoch, total_steps;
} run;

/* One step on the loader's next batch (of r->order's samples). Returns the
 * loss. */
static int train_step(run *r, int64_t step, int batch, double *loss, int *correct) {
    osp_graph *g = r->net->graph;
    osp_node *logits = osp_graph_node(g, r->net->logits_node);
    int loaded;
    int rc = osp_loader_next(r->loader, r->x, r->labels, &loaded);
    if (rc) return rc;
    if (loaded != batch) {
        osp_error(OSP_ESTATE, "the loader gave %d samples for a batch of %d", loaded, batch);
        return OSP_ESTATE;
    }
    if ((rc = osp_graph_plan(g, batch, OSP_MODE_TRAIN))) return rc;
    osp_exec ex = {.be = osp_backend_default(), .mode = OSP_MODE_TRAIN, .batch = batch,
                   .seed = r->cfg->seed, .step = (uint64_t)step};
    if ((rc = osp_graph_forward(g, r->x, &ex))) return rc;
    const int k = (int)logits->size;
    *loss = ex.be->softmax_xent(batch, k, logits->out, r->labels, NULL, logits->dout);
    *correct = 0;
    for (int b = 0; b < batch; b++) *correct += argmax(logits->out + (int64_t)b * k, k) == r->labels[b];
    if (!isfinite(*loss))
        return osp_error(OSP_ERANGE, "the loss diverged (%g) at step %lld: lower the learning rate",
                         *loss, (long long)step);
    if ((rc = osp_graph_backward_from(g, logits->id, &ex))) return rc;
    float lr = osp_schedule_lr(&r->sched, r->cfg->lr, step);
    osp_optimizer_step(r->opt, osp_graph_weights(g, NULL), osp_graph_grads(g, NULL), lr);
    return OSP_OK;
}

static void epoch_order(run *r, int epoch) {
    osp_rng rng;
    osp_rng_derive(&rng, r->cfg->seed, RNG_STREAM_DATA, (uint64_t)epoch);
    for (int64_t i = 0; i < r->data->count; i++) r->order[i] = i;
    osp_rng_shuffle(&rng, r->order, r->data->count);
}

static int train_loop(run *r, osp_dataset *val, int64_t start_step) {
    const osp_train_config *cfg = r->cfg;
    int64_t step = start_step;
    int64_t stop = cfg->stop_after > 0 && cfg->stop_after < r->total_steps ? cfg->stop_after : r->total_steps;
    double run_start = osp_now();
    int64_t run_images = 0;
    while (step < stop) {
        int epoch = (int)(step / r->steps_per_epoch);
        int64_t in_epoch = step % r->steps_per_epoch;
        epoch_order(r, epoch);
        int started = osp_loader_start(r->loader, epoch, r->order, r->data->count, in_epoch * cfg->batch);
        if (started) return started;
        double loss_sum = 0, epoch_start = osp_now();
        int64_t seen = 0, right = 0, steps_here = 0;
        for (; in_epoch < r->steps_per_epoch && step < stop; in_epoch++) {
            int64_t first = in_epoch * cfg->batch;
            int64_t left = r->data->count - first;
            int batch = (int)(left < cfg->batch ? left : cfg->batch);
            double loss;
            int correct;
            int rc = train_step(r, step, batch, &loss, &correct);
            if (rc) return rc;
            step++;
            steps_here++;
            loss_sum += loss;
            seen += batch;
            right += correct;
            run_images += batch;
            osp_train_progress p = {0};
            p.epoch = epoch;
            p.epochs = cfg->epochs;
            p.step = step;
            p.total_steps = r->total_steps;
            p.steps_per_epoch = r->steps_per_epoch;
            p.step_in_epoch = in_epoch + 1;
            p.lr = osp_schedule_lr(&r->sched, cfg->lr, step - 1);
            p.step_loss = loss;
            p.epoch_loss = loss_sum / (double)steps_here;
            p.epoch_accuracy = (double)right / (double)seen;
            double now = osp_now();
            p.images_per_s = (double)seen / fmax(now - epoch_start, 1e-9);
            double run_rate = (double)run_images / fmax(now - run_start, 1e-9);
            int64_t images_left = (r->total_steps - step) * cfg->batch;
            p.eta_s = run_rate > 0 ? (double)images_left / run_rate : 0;
            p.epoch_end = in_epoch + 1 == r->steps_per_epoch;
            p.val_top1 = p.val_top5 = p.val_loss = NAN;
            int at_stop = step == stop;
            int every = cfg->checkpoint_every > 0 && step % cfg->checkpoint_every == 0;
            if (cfg->checkpoint && (every || p.epoch_end || at_stop)) {
                if ((rc = save_checkpoint(r->net, r->opt, cfg, step, r->config))) return rc;
            }
            if (p.epoch_end && val) {
                osp_eval_result ev;
                if ((rc = osp_evaluate(r->net, val, cfg->batch > 256 ? cfg->batch : 256, &ev))) return rc;
                p.val_top1 = ev.top1;
                p.val_top5 = ev.top5;
                p.val_loss = ev.loss;
            }
            if (cfg->on_step) cfg->on_step(&p, cfg->user);
            if (p.epoch_end) { /* after the epoch's line, so the report reads under it */
                char what[32];
                snprintf(what, sizeof what, "epoch %d", epoch + 1);
                osp__loader_report(r->loader, r->data, what);
                if (val) osp_dataset_report_skipped(val);
            }
        }
    }
    return OSP_OK;
}

int osp_train(osp_net *net, osp_dataset *data, osp_dataset *val, const osp_train_config *cfg,
              osp_optimizer *opt, int64_t start_step) {
    if (cfg->epochs <= 0 || cfg->batch <= 0 || !(cfg->lr > 0) || !isfinite(cfg->lr))
        return osp_error(OSP_EINVAL, "epochs, batch and learning rate must be positive");
    int rc = osp_check_data(net, data);
    if (!rc && val) rc = osp_check_data(net, val);
    if (rc) return rc;
    run r = {.net = net, .data = data, .cfg = cfg, .opt = opt};
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
        r.opt = osp_optimizer_new(&cfg->optim, n_weights);
        if (!r.opt) return OSP_ENOMEM;
        own_opt = 1;
    } else if (r.opt->n != n_weights) {
        return osp_error(OSP_EINVAL, "the optimizer state does not match the network");
    }
    const int64_t size = osp_shape_numel(&net->input);
    r.x = osp_alloc((size_t)cfg->batch * (size_t)size * sizeof(float));
    r.labels = osp_alloc((size_t)cfg->batch * sizeof(int32_t));
    r.order = osp_alloc((size_t)data->count * sizeof(int64_t));
    r.config = config_json(cfg);
    if (!r.x || !r.labels || !r.order || !r.config) rc = OSP_ENOMEM;
    osp_loader_config lc = osp__loader_config(net, data, cfg->batch, cfg->seed, 1);
    if (!rc) rc = osp_loader_new(data, &lc, &r.loader);
    if (!rc) rc = train_loop(&r, val, start_step);
    osp_loader_free(r.loader);
    osp_free(r.x);
    osp_free(r.labels);
    osp_free(r.order);
    cJSON_free(r.config);
    if (own_opt) osp_optimizer_free(r.opt);
    return rc;
}
