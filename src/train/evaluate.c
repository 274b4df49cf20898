/* Evaluation: top-1, top-5 and mean cross-entropy over a whole dataset;
 * for multi-label data, mAP, per-label precision / recall / F1, micro and
 * macro F1, and the per-label thresholds that maximise F1. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "loader.h"
#include "osprey/train.h"
#include "train_impl.h"

/* Rank of the true class among the scores (0 = best). A tie goes to the
 * lower class index, as the argmax of training's accuracy does, so a model
 * whose scores are all equal is right for one class only, not for all; a
 * NaN score for the true class ranks last. */
static int rank_of(const float *v, int n, int label) {
    const float s = v[label];
    if (s != s) return n;
    int rank = 0;
    for (int i = 0; i < n; i++)
        if (v[i] > s || (v[i] == s && i < label)) rank++;
    return rank;
}

int osp_train_evaluate(osp_net *net, osp_dataset *data, int batch, osp_eval_result *out) {
    int rc = osp_train_check_data(net, data);
    if (rc) return rc;
    if (data->multi_label) {
        osp_multilabel_eval *e;
        if ((rc = osp_train_evaluate_multilabel(net, data, batch, &e))) return rc;
        out->count = e->count;
        out->top1 = e->subset_accuracy;
        out->top5 = NAN;
        out->loss = e->loss;
        osp_multilabel_eval_free(e);
        return OSP_OK;
    }
    if (batch <= 0) return osp_error(OSP_EINVAL, "batch size must be positive");
    if (batch > data->count) batch = (int)data->count;
    osp_graph *g = net->graph;
    osp_node *logits = osp_graph_node(g, net->logits_node);
    logits->keep = 1; /* inference planning must not recycle the logits */
    const int64_t size = osp_shape_numel(&net->input);
    const int k = (int)logits->size;
    float *x = osp_alloc((size_t)batch * (size_t)size * sizeof(float));
    int32_t *labels = osp_alloc((size_t)batch * sizeof(int32_t));
    if (!x || !labels) rc = OSP_ENOMEM;
    /* Unreadable samples are left out (and logged in data's skip log). */
    osp_loader *loader = NULL;
    osp_loader_config lc = osp__loader_config(net, data, batch, 0, 0);
    if (!rc) rc = osp_loader_new(data, &lc, &loader);
    if (!rc) rc = osp_loader_start(loader, 0, NULL, data->count, 0);
    double loss_sum = 0;
    int64_t top1 = 0, top5 = 0, evaluated = 0;
    const osp_backend *be = osp_graph_backend(g);
    while (!rc) {
        int n;
        if ((rc = osp_loader_next(loader, x, labels, &n)) || n == 0) break;
        evaluated += n;
        /* A changed batch size re-plans within the same arena. */
        if ((rc = osp_graph_plan(g, n, OSP_MODE_INFER))) break;
        osp_exec ex = {.be = be, .mode = OSP_MODE_INFER, .batch = n};
        if ((rc = osp_graph_forward(g, x, &ex))) break;
        double loss;
        if ((rc = osp__batch_loss(be, 0, n, k, logits->out, labels, NULL, NULL, &loss))) break;
        loss_sum += loss * n;
        for (int i = 0; i < n; i++) {
            int r = rank_of(logits->out + (int64_t)i * k, k, labels[i]);
            top1 += r < 1;
            top5 += r < 5;
        }
    }
    osp_loader_free(loader);
    osp_free(x);
    osp_free(labels);
    if (rc) return rc;
    if (evaluated == 0)
        return osp_error(OSP_ENOENT, "%s: no sample is readable", data->source ? data->source : "data");
    out->count = evaluated;
    out->top1 = (double)top1 / (double)evaluated;
    out->top5 = (double)top5 / (double)evaluated;
    out->loss = loss_sum / (double)evaluated;
    return OSP_OK;
}

/* ---- multi-label ------------------------------------------------------------ */

void osp_multilabel_eval_free(osp_multilabel_eval *e) {
    if (!e) return;
    free(e->ap);
    free(e->precision);
    free(e->recall);
    free(e->f1);
    free(e->positives);
    free(e->threshold);
    free(e->best_threshold);
    free(e->best_f1);
    free(e);
}

static double f1_of(int64_t tp, int64_t fp, int64_t fn) {
    return tp > 0 ? 2.0 * (double)tp / (double)(2 * tp + fp + fn) : 0.0;
}

typedef struct scored {
    float score;
    uint8_t positive;
} scored;

/* Descending scores; among equal scores, negatives first (a pessimistic
 * order, so ties never flatter the AP). */
static int by_score_desc(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (int)x->positive - (int)y->positive;
}

/* One label over n samples: AP (scikit-learn's average_precision_score:
 * the precision at each positive, averaged, ties taken together), and the
 * F1-maximising threshold: half-way between the lowest score kept and the
 * highest left out. */
static void label_stats(scored *s, int64_t n, int64_t positives, double *ap, float *best_t,
                        double *best_f1) {
    *ap = NAN;
    *best_t = 0.5f;
    *best_f1 = 0;
    if (positives == 0 || n == 0) return;
    qsort(s, (size_t)n, sizeof *s, by_score_desc);
    int64_t tp = 0, fp = 0;
    double sum = 0, prev_recall = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j < n && s[j].score == s[i].score) { /* a block of ties moves as one */
            tp += s[j].positive;
            fp += !s[j].positive;
            j++;
        }
        double precision = (double)tp / (double)(tp + fp), recall = (double)tp / (double)positives;
        sum += (recall - prev_recall) * precision;
        prev_recall = recall;
        double f1 = f1_of(tp, fp, positives - tp);
        if (f1 > *best_f1) {
            *best_f1 = f1;
            double lo = j < n ? s[j].score : 0.0;
            double t = 0.5 * ((double)s[i].score + lo);
            if (t > s[i].score) t = s[i].score; /* s[i] must stay at or above it */
            if (!(t > 1e-6)) t = 1e-6;         /* thresholds lie in (0, 1) */
            if (t > 1 - 1e-6) t = 1 - 1e-6;
            *best_t = (float)t;
        }
        i = j;
    }
    *ap = sum;
}

int osp_train_evaluate_multilabel(osp_net *net, osp_dataset *data, int batch,
                                  osp_multilabel_eval **out) {
    if (!out) return osp_error(OSP_EINVAL, "osp_train_evaluate_multilabel: no output");
    *out = NULL;
    int rc = osp_train_check_data(net, data);
    if (rc) return rc;
    const char *src = data->source ? data->source : "data";
    if (!data->multi_label || !data->labels_multi)
        return osp_error(OSP_EINVAL, "%s: one label per image; multi-label evaluation needs "
                         "multi-label data", src);
    if (!net->multi_label)
        return osp_error(OSP_EINVAL, "%s is multi-label data but the model is single-label (one "
                         "softmax over its classes): train one with --loss bce", src);
    if (batch <= 0) return osp_error(OSP_EINVAL, "batch size must be positive");
    if (batch > data->count) batch = (int)data->count;
    osp_graph *g = net->graph;
    osp_node *logits = osp_graph_node(g, net->logits_node);
    logits->keep = 1;
    const int64_t size = osp_shape_numel(&net->input);
    const int k = (int)logits->size;
    if (k != net->n_classes || data->n_classes > k)
        return osp_error(OSP_ESHAPE, "%s: %d labels for a network of %d outputs", src, data->n_classes, k);
    /* Every sample's scores and targets are kept: AP needs them sorted. */
    float *scores = malloc((size_t)data->count * (size_t)k * sizeof(float));
    uint8_t *truth = malloc((size_t)data->count * (size_t)k);
    float *x = osp_alloc((size_t)batch * (size_t)size * sizeof(float));
    float *t = osp_alloc((size_t)batch * (size_t)k * sizeof(float));
    osp_multilabel_eval *e = calloc(1, sizeof *e);
    if (e) {
        e->ap = calloc((size_t)k, sizeof *e->ap);
        e->precision = calloc((size_t)k, sizeof *e->precision);
        e->recall = calloc((size_t)k, sizeof *e->recall);
        e->f1 = calloc((size_t)k, sizeof *e->f1);
        e->positives = calloc((size_t)k, sizeof *e->positives);
        e->threshold = calloc((size_t)k, sizeof *e->threshold);
        e->best_threshold = calloc((size_t)k, sizeof *e->best_threshold);
        e->best_f1 = calloc((size_t)k, sizeof *e->best_f1);
    }
    if (!scores || !truth || !x || !t || !e || !e->ap || !e->precision || !e->recall || !e->f1 ||
        !e->positives || !e->threshold || !e->best_threshold || !e->best_f1)
        rc = osp_error(OSP_ENOMEM, "%s: out of memory for the evaluation", src);
    osp_loader *loader = NULL;
    osp_loader_config lc = osp__loader_config(net, data, batch, 0, 0);
    lc.multi_hot = 1;
    if (!rc) rc = osp_loader_new(data, &lc, &loader);
    if (!rc) rc = osp_loader_start(loader, 0, NULL, data->count, 0);
    double loss_sum = 0;
    int64_t evaluated = 0;
    const osp_backend *be = osp_graph_backend(g);
    while (!rc) {
        int n;
        if ((rc = osp_loader_next_hot(loader, x, t, &n)) || n == 0) break;
        if ((rc = osp_graph_plan(g, n, OSP_MODE_INFER))) break;
        osp_exec ex = {.be = be, .mode = OSP_MODE_INFER, .batch = n};
        if ((rc = osp_graph_forward(g, x, &ex))) break;
        float *sc = scores + evaluated * k;
        double loss;
        if ((rc = osp__batch_loss(be, 1, n, k, logits->out, t, sc, NULL, &loss))) break;
        loss_sum += loss * n;
        for (int64_t i = 0; i < (int64_t)n * k; i++) truth[evaluated * k + i] = t[i] > 0.5f;
        evaluated += n;
    }
    osp_loader_free(loader);
    osp_free(x);
    osp_free(t);
    if (!rc && evaluated == 0) rc = osp_error(OSP_ENOENT, "%s: no sample is readable", src);
    scored *col = rc ? NULL : malloc((size_t)evaluated * sizeof *col);
    if (!rc && !col) rc = osp_error(OSP_ENOMEM, "%s: out of memory for the evaluation", src);
    if (!rc) {
        e->n_labels = k;
        e->count = evaluated;
        e->loss = loss_sum / (double)evaluated;
        int64_t all_tp = 0, all_fp = 0, all_fn = 0, exact = 0;
        for (int64_t i = 0; i < evaluated; i++) {
            int all = 1;
            for (int c = 0; c < k; c++) {
                int yes = scores[i * k + c] >= osp_net_threshold(net, c);
                all &= yes == truth[i * k + c];
            }
            exact += all;
        }
        double ap_sum = 0, f1_sum = 0;
        int with_pos = 0;
        for (int c = 0; c < k; c++) {
            float th = osp_net_threshold(net, c);
            int64_t tp = 0, fp = 0, fn = 0;
            for (int64_t i = 0; i < evaluated; i++) {
                int yes = scores[i * k + c] >= th, pos = truth[i * k + c];
                tp += yes && pos;
                fp += yes && !pos;
                fn += !yes && pos;
                col[i].score = scores[i * k + c];
                col[i].positive = (uint8_t)pos;
            }
            e->threshold[c] = th;
            e->positives[c] = tp + fn;
            e->precision[c] = tp + fp > 0 ? (double)tp / (double)(tp + fp) : 0;
            e->recall[c] = tp + fn > 0 ? (double)tp / (double)(tp + fn) : 0;
            e->f1[c] = f1_of(tp, fp, fn);
            all_tp += tp;
            all_fp += fp;
            all_fn += fn;
            label_stats(col, evaluated, tp + fn, &e->ap[c], &e->best_threshold[c], &e->best_f1[c]);
            if (tp + fn > 0) {
                ap_sum += e->ap[c];
                f1_sum += e->f1[c];
                with_pos++;
            }
        }
        e->map = with_pos ? ap_sum / with_pos : NAN;
        e->macro_f1 = with_pos ? f1_sum / with_pos : NAN;
        e->micro_precision = all_tp + all_fp > 0 ? (double)all_tp / (double)(all_tp + all_fp) : 0;
        e->micro_recall = all_tp + all_fn > 0 ? (double)all_tp / (double)(all_tp + all_fn) : 0;
        e->micro_f1 = f1_of(all_tp, all_fp, all_fn);
        e->subset_accuracy = (double)exact / (double)evaluated;
    }
    free(col);
    free(scores);
    free(truth);
    if (rc) {
        osp_multilabel_eval_free(e);
        return rc;
    }
    *out = e;
    return OSP_OK;
}

int osp_multilabel_thresholds(osp_net *net, osp_dataset *data, int batch, osp_multilabel_eval **ev) {
    if (ev) *ev = NULL;
    if (!net->multi_label)
        return osp_error(OSP_EINVAL, "per-label thresholds are for multi-label models; this one "
                         "is single-label");
    osp_multilabel_eval *e;
    int rc = osp_train_evaluate_multilabel(net, data, batch, &e);
    if (rc) return rc;
    rc = osp_net_set_thresholds(net, e->best_threshold, e->n_labels);
    if (rc || !ev) osp_multilabel_eval_free(e);
    else *ev = e;
    return rc;
}
