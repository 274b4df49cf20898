/* train_spec: trains a network from a spec file with a loop of one's own.
 *
 *     train_spec SPEC.cfg MODEL_OUT.osp [STEPS]
 *
 * What it shows: building a network from its text spec, a dataset, an
 * optimizer, the training step in a loop that the caller owns (its order
 * of samples, its learning-rate schedule, its logging), saving the model,
 * and measuring it on held-out data.
 *
 * The data are synthetic (osp_dataset_synthetic): each class is a fixed
 * random pattern showing faintly through noise, in the network's input
 * shape, so any spec with an image input can be tried without a dataset.
 * The exit status is 1 if the held-out accuracy is not clearly above
 * chance: halfway from chance to perfect. (osp_train does all of this in
 * one call, with checkpoints, data loading threads and MPI; this is the
 * loop for a program that needs to hold the reins.) */
#include <stdio.h>
#include <stdlib.h>

#include <osprey/osprey.h>

#define SEED 1           /* weights, data and sample order derive from it */
#define TRAIN_COUNT 4096 /* samples 0 .. TRAIN_COUNT-1 train */
#define VAL_COUNT 1024   /* the next VAL_COUNT are held out */
#define BATCH 32
#define LR 0.05f
#define LOG_EVERY 25
#define DEFAULT_STEPS 200

/* Library messages say what failed and on which input (a file name,
 * "file:line" in a spec): they need no more context. */
static void fail(void) { fprintf(stderr, "train_spec: %s\n", osp_last_error()); }

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: train_spec SPEC.cfg MODEL_OUT.osp [STEPS]\n");
        return 2;
    }
    const char *spec = argv[1], *out = argv[2];
    const long steps = argc == 4 ? strtol(argv[3], NULL, 10) : DEFAULT_STEPS;
    if (steps < 1) {
        fprintf(stderr, "train_spec: STEPS must be a positive number\n");
        return 2;
    }
    int status = 1;
    osp_dataset *train = NULL, *val = NULL;
    osp_optim *opt = NULL;
    float *x = NULL;
    int32_t *labels = NULL;
    int64_t *order = NULL;

    /* The spec's [net] section gives the input shape, mean and std; the
     * layers follow. The weights start from the seed, as in PyTorch's
     * default initialisation of each layer. */
    osp_net *net = NULL;
    if (osp_net_load_spec(spec, SEED, &net)) {
        fail();
        return 1;
    }
    printf("%s: input %lldx%lldx%lld, %d classes, %lld parameters\n", spec,
           (long long)net->input.dim[0], (long long)net->input.dim[1], (long long)net->input.dim[2],
           net->n_classes, (long long)osp_net_param_count(net));

    /* Two views of one synthetic set (the same seed: the same class
     * patterns) numbered from different starts: other samples of the same
     * classes, to measure what was learnt rather than what was seen. */
    if (osp_dataset_synthetic(&net->input, net->n_classes, 0, TRAIN_COUNT, SEED, &train) ||
        osp_dataset_synthetic(&net->input, net->n_classes, TRAIN_COUNT, VAL_COUNT, SEED, &val)) {
        fail();
        goto done;
    }
    /* The samples' shape must be the input's and the labels within the
     * outputs: checked once here with a clear message, rather than found
     * out at the first step. */
    if (osp_train_check_data(net, train)) {
        fail();
        goto done;
    }

    /* The optimizer works on the graph's one flat array of weights, so it
     * is made for that array's length: osp_graph_weights gives it
     * (padding between parameters included, which is more than
     * osp_net_param_count). SGD with momentum 0.9 by default. */
    int64_t n_weights = 0;
    if (!osp_graph_weights(net->graph, &n_weights)) {
        fprintf(stderr, "train_spec: the network has no weights to train\n");
        goto done;
    }
    const osp_optim_config oc = osp_optim_defaults(OSP_OPTIM_SGD);
    if (osp_optim_new(&oc, n_weights, &opt)) {
        fail();
        goto done;
    }
    /* The learning rate falls along a half cosine over the run. */
    const osp_sched schedule = {.kind = OSP_SCHED_COSINE, .total_steps = steps};

    const int64_t in_size = osp_shape_numel(&net->input);
    x = malloc(BATCH * (size_t)in_size * sizeof *x);
    labels = malloc(BATCH * sizeof *labels);
    order = malloc(TRAIN_COUNT * sizeof *order);
    if (!x || !labels || !order) {
        fprintf(stderr, "train_spec: out of memory\n");
        goto done;
    }

    double loss_sum = 0;
    int64_t correct = 0, seen = 0, pos = TRAIN_COUNT;
    int64_t epoch = -1;
    for (int64_t step = 0; step < steps; step++) {
        /* A new epoch visits the samples in a new order: a generator
         * derived from (seed, epoch) shuffles them, so that the run does
         * not depend on anything but the seed. */
        if (pos + BATCH > TRAIN_COUNT) {
            osp_rng rng;
            osp_rng_derive(&rng, SEED, 0, (uint64_t)++epoch);
            for (int64_t i = 0; i < TRAIN_COUNT; i++) order[i] = i;
            osp_rng_shuffle(&rng, order, TRAIN_COUNT);
            pos = 0;
        }
        /* Reads the batch's samples (on several threads) and normalises
         * them with the network's mean and std: x is then what
         * osp_net_image_input would have made of photos. */
        if (osp_train_load_batch(net, train, order + pos, BATCH, x, labels)) {
            fail();
            goto done;
        }
        pos += BATCH;

        /* Forward, loss, backward and the optimizer's update, in one call.
         * step and the seed draw dropout's masks; the result is the
         * batch's loss and right answers before the update. */
        osp_step_result r;
        const float lr = osp_sched_lr(&schedule, LR, step);
        if (osp_train_step(net, opt, x, labels, BATCH, lr, step, SEED, &r)) {
            fail();
            goto done;
        }
        loss_sum += r.loss;
        correct += r.correct;
        seen += BATCH;
        if ((step + 1) % LOG_EVERY == 0 || step + 1 == steps) {
            const int64_t n = seen / BATCH;
            printf("step %5lld  loss %.4f  train top-1 %.3f  lr %.4f\n", (long long)(step + 1),
                   loss_sum / (double)n, (double)correct / (double)seen, lr);
            loss_sum = 0;
            correct = seen = 0;
        }
    }

    /* The model file holds the spec, the weights and the input's size and
     * normalisation: osp_model_load gives back a network that runs. It is
     * written to a temporary name and renamed, never left half-written. */
    if (osp_model_save(net, out)) {
        fail();
        goto done;
    }

    /* Inference mode (batch norm's running statistics, no dropout) over
     * every held-out sample, 128 at a time. */
    osp_eval_result ev;
    if (osp_train_evaluate(net, val, 128, &ev)) {
        fail();
        goto done;
    }
    const double chance = 1.0 / net->n_classes;
    printf("saved %s; held-out top-1 %.3f (chance %.3f) on %lld samples, loss %.4f\n", out, ev.top1,
           chance, (long long)ev.count, ev.loss);
    if (ev.top1 < chance + (1 - chance) / 2) {
        fprintf(stderr, "train_spec: the network did not learn (top-1 %.3f)\n", ev.top1);
        goto done;
    }
    status = 0;

done:
    free(order);
    free(labels);
    free(x);
    osp_optim_free(opt);
    osp_dataset_free(val);
    osp_dataset_free(train);
    osp_net_free(net);
    return status;
}
