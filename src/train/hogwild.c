/* Hogwild (Recht, Re, Wright and Niu, 2011): T worker threads each take
 * the next minibatch of the epoch, run forward and backward in their own
 * copy of the graph (their own activations and gradients), and apply the
 * optimizer step straight to the one shared set of weights, with no lock.
 *
 * This is a data race, on purpose: two workers may update the same weight
 * at the same time and one update can be lost, and a worker's forward pass
 * may read weights that another is halfway through changing. Stochastic
 * gradient descent tolerates that when updates are sparse or small, which
 * is the bet Hogwild makes; in exchange no worker ever waits for another.
 * In C11 terms the plain float loads and stores are a data race and so
 * undefined behaviour; on x86-64 (and the other targets osprey builds for)
 * an aligned float store is a single instruction and is never torn, which
 * is what the algorithm relies on. The sanitizers osprey's tests run
 * (AddressSanitizer, UndefinedBehaviorSanitizer) do not look for races;
 * ThreadSanitizer would report them, rightly.
 *
 * The momentum buffer (or Adam's moments) is shared the same way. Runs are
 * not reproducible: which worker takes which batch, and which updates it
 * sees, depend on timing.
 *
 * The workers are the threads of one OpenMP parallel region, so the kernels
 * and BLAS inside each worker run on one thread (the region is not nested).
 * Each worker decodes its own batches (a loader without threads of its
 * own). Checkpoints and validation happen between epochs, with the workers
 * stopped. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "loader.h"
#include "train_impl.h"

typedef struct worker {
    osp_net *net; /* its own graph: activations, gradients; the network's weights */
    float *x;
    int32_t *labels;
    float *targets; /* multi-label data: batch x outputs multi-hot; else NULL */
    osp_loader *loader;
} worker;

typedef struct shared {
    int64_t next;        /* the next batch of the epoch to take */
    int64_t done;        /* batches finished this epoch */
    int64_t seen, right;
    double loss_sum;
    int failed;
    char message[512];
} shared;

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static void worker_free(worker *w) {
    osp_net_free(w->net);
    osp_loader_free(w->loader);
    osp_free(w->x);
    osp_free(w->labels);
    osp_free(w->targets);
}

static int worker_new(osp__run *r, worker *w) {
    const osp_net *net = r->net;
    int rc = osp_net_from_spec(net->spec_text, strlen(net->spec_text), "hogwild worker", r->cfg->seed,
                               &w->net);
    if (rc) return rc;
    /* Share the weights and statistics; keep the own gradients. */
    if ((rc = osp_graph_share_params(w->net->graph, net->graph)))
        return osp_error(rc, "a Hogwild worker's graph does not match the network: %s",
                         osp_last_error());
    int frozen = osp_graph_frozen_until(net->graph);
    if (frozen && (rc = osp_graph_freeze(w->net->graph, frozen))) return rc;
    const int64_t size = osp_shape_numel(&net->input);
    w->x = osp_alloc((size_t)r->cfg->batch * (size_t)size * sizeof(float));
    w->labels = osp_alloc((size_t)r->cfg->batch * sizeof(int32_t));
    if (!w->x || !w->labels) return OSP_ENOMEM;
    if (r->data->multi_label &&
        !(w->targets = osp_alloc((size_t)r->cfg->batch * (size_t)net->n_classes * sizeof(float))))
        return OSP_ENOMEM;
    osp_loader_config lc = osp__loader_config(net, r->data, r->cfg->batch, r->cfg->seed, 1);
    lc.multi_hot = w->targets != NULL;
    lc.workers = 0;
    lc.prefetch = 1;
    return osp_loader_new(r->data, &lc, &w->loader);
}

/* Batch b of the epoch on worker w. */
static int worker_step(osp__run *r, worker *w, int epoch, int64_t b, double *loss, int *correct) {
    const osp_train_config *cfg = r->cfg;
    int64_t first = b * cfg->batch, left = r->data->count - first;
    int batch = (int)(left < cfg->batch ? left : cfg->batch), loaded;
    int rc = osp_loader_start(w->loader, epoch, r->order + first, batch, 0);
    if (!rc && w->targets) rc = osp_loader_next_hot(w->loader, w->x, w->targets, &loaded);
    else if (!rc) rc = osp_loader_next(w->loader, w->x, w->labels, &loaded);
    if (rc) return rc;
    if (loaded != batch)
        return osp_error(OSP_ESTATE, "the loader gave %d samples for a batch of %d", loaded, batch);
    osp_graph *g = w->net->graph;
    osp_node *logits = osp_graph_node(g, w->net->logits_node);
    int64_t step = (int64_t)epoch * r->steps_per_epoch + b;
    osp_exec ex = {.be = osp_graph_backend(g), .mode = OSP_MODE_TRAIN, .batch = batch,
                   .seed = cfg->seed, .step = (uint64_t)step};
    if (w->targets) { /* sigmoid + binary cross-entropy; correct = every label right */
        int64_t right = 0;
        if ((rc = osp__forward_loss_hot(w->net, w->x, w->targets, &ex, loss, &right))) return rc;
        *correct = (int)right;
    } else {
        if ((rc = osp_graph_plan(g, batch, OSP_MODE_TRAIN))) return rc;
        if ((rc = osp_graph_forward(g, w->x, &ex))) return rc;
        const int k = (int)logits->size;
        if ((rc = osp__batch_loss(ex.be, 0, batch, k, logits->out, w->labels, NULL, logits->dout,
                                  loss)))
            return rc;
        *correct = 0;
        for (int i = 0; i < batch; i++) *correct += argmax(logits->out + (int64_t)i * k, k) == w->labels[i];
    }
    if (!isfinite(*loss))
        return osp_error(OSP_ERANGE, "the loss diverged (%g) at step %lld: lower the learning rate",
                         *loss, (long long)step);
    if ((rc = osp_graph_backward_from(g, logits->id, &ex))) return rc;
    float lr = osp_sched_lr(&r->sched, cfg->lr, step);
    /* No lock: see the top of this file. */
    int64_t count;
    float *weights = osp_graph_weights(g, &count);
    osp__run_update(r, weights, osp_graph_grads(g, &count), lr);
    return OSP_OK;
}

static void fill_progress(const osp__run *r, const shared *sh, int epoch, double epoch_start,
                          double run_start, int64_t run_images, osp_train_progress *p) {
    int64_t done, seen, right;
    double loss_sum;
#pragma omp atomic read
    done = sh->done;
#pragma omp atomic read
    seen = sh->seen;
#pragma omp atomic read
    right = sh->right;
#pragma omp atomic read
    loss_sum = sh->loss_sum;
    int64_t in_epoch;
#pragma omp atomic read
    in_epoch = sh->next;
    memset(p, 0, sizeof *p);
    p->epoch = epoch;
    p->epochs = r->cfg->epochs;
    p->steps_per_epoch = r->steps_per_epoch;
    p->step_in_epoch = in_epoch < r->steps_per_epoch ? in_epoch : r->steps_per_epoch;
    p->step = (int64_t)epoch * r->steps_per_epoch + p->step_in_epoch;
    p->total_steps = r->total_steps;
    p->lr = osp_sched_lr(&r->sched, r->cfg->lr, p->step > 0 ? p->step - 1 : 0);
    p->epoch_loss = done ? loss_sum / (double)done : 0;
    p->step_loss = p->epoch_loss;
    p->epoch_accuracy = seen ? (double)right / (double)seen : 0;
    double now = osp_now();
    p->images_per_s = (double)seen / fmax(now - epoch_start, 1e-9);
    double rate = (double)(run_images + seen) / fmax(now - run_start, 1e-9);
    p->eta_s = rate > 0 ? (double)(r->total_steps - p->step) * r->cfg->batch / rate : 0;
    p->val_top1 = p->val_top5 = p->val_loss = NAN;
    p->ranks = r->cfg->hogwild;
}

int osp__train_hogwild(osp__run *r, osp_dataset *val, int64_t start_step) {
    const osp_train_config *cfg = r->cfg;
    const int T = cfg->hogwild;
    worker *ws = osp_calloc((size_t)T, sizeof *ws);
    r->order = osp_alloc((size_t)r->data->count * sizeof(int64_t));
    int rc = ws && r->order ? OSP_OK : OSP_ENOMEM;
    for (int k = 0; k < T && !rc; k++) rc = worker_new(r, &ws[k]);
    int64_t step = start_step;
    const int64_t stop = cfg->stop_after > 0 && cfg->stop_after < r->total_steps ? cfg->stop_after
                                                                                  : r->total_steps;
    double run_start = osp_now();
    int64_t run_images = 0;
    while (!rc && step < stop) {
        const int epoch = (int)(step / r->steps_per_epoch);
        const int64_t epoch_first = (int64_t)epoch * r->steps_per_epoch;
        osp__epoch_order(r, epoch);
        shared sh = {.next = step - epoch_first};
        const int64_t last = stop - epoch_first < r->steps_per_epoch ? stop - epoch_first
                                                                     : r->steps_per_epoch;
        double epoch_start = osp_now(), last_report = 0;
#pragma omp parallel num_threads(T)
        {
            const int k = omp_get_thread_num();
            omp_set_num_threads(1); /* kernels inside a worker: one thread */
            worker *w = &ws[k < T ? k : 0];
            for (;;) {
                int failed;
#pragma omp atomic read
                failed = sh.failed;
                if (failed) break;
                int64_t b;
#pragma omp atomic capture
                b = sh.next++;
                if (b >= last) break;
                double loss = 0;
                int correct = 0;
                int err = worker_step(r, w, epoch, b, &loss, &correct);
                if (err) {
#pragma omp critical(osp_hogwild_error)
                    if (!sh.failed) {
                        sh.failed = err;
                        snprintf(sh.message, sizeof sh.message, "%s", osp_last_error());
                    }
                    break;
                }
                int64_t first = b * cfg->batch, left = r->data->count - first;
#pragma omp atomic
                sh.done++;
#pragma omp atomic
                sh.seen += left < cfg->batch ? left : cfg->batch;
#pragma omp atomic
                sh.right += correct;
#pragma omp atomic
                sh.loss_sum += loss;
                /* The calling thread reports, now and then (never at an
                 * epoch's end: that line comes after the workers stop). */
                if (k == 0 && cfg->on_step && osp_now() - last_report > 0.1) {
                    last_report = osp_now();
                    osp_train_progress p;
                    fill_progress(r, &sh, epoch, epoch_start, run_start, run_images, &p);
                    if (p.step_in_epoch >= r->steps_per_epoch) p.step_in_epoch = r->steps_per_epoch - 1;
                    cfg->on_step(&p, cfg->user);
                }
            }
        }
        if (sh.failed) {
            rc = osp_error(sh.failed, "%s", sh.message);
            break;
        }
        step = epoch_first + last;
        osp_train_progress p;
        fill_progress(r, &sh, epoch, epoch_start, run_start, run_images, &p);
        run_images += sh.seen;
        p.step = step;
        p.step_in_epoch = last;
        p.epoch_end = last == r->steps_per_epoch;
        if (cfg->checkpoint && (rc = osp__save_checkpoint(r, step))) break;
        if (p.epoch_end && val && (rc = osp__validate(r, val, &p))) break;
        if (cfg->on_step) cfg->on_step(&p, cfg->user);
        if (p.epoch_end && val) osp_dataset_report_skipped(val);
    }
    if (ws)
        for (int k = 0; k < T; k++) worker_free(&ws[k]);
    osp_free(ws);
    osp_free(r->order);
    r->order = NULL;
    return rc;
}
