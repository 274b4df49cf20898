/* classify: the five likeliest labels of photos, by a trained model.
 *
 *     classify MODEL.osp IMAGE...
 *
 * What it shows: loading a model, turning photos into the network's input
 * (decode, resize, normalise: one call), running a batch of them in one
 * call, and reading the logits. An image that cannot be read is named with
 * the library's message and skipped; the exit status is then 1.
 *
 * Build it against an installed osprey with
 *     cc classify.c $(pkg-config --cflags --libs osprey) -o classify
 * (add --static to link libosprey.a). */
#include <stdio.h>
#include <stdlib.h>

#include <osprey/osprey.h>

#define TOP 5

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: classify MODEL.osp IMAGE...\n");
        return 2;
    }
    const char *model = argv[1];
    char **images = argv + 2;
    const int n_images = argc - 2;

    /* A model file holds everything needed to run it: the network spec,
     * the weights, the input size and normalisation, the label names. The
     * caller owns what _load returns. */
    osp_net *net = NULL;
    if (osp_model_load(model, &net)) {
        fprintf(stderr, "classify: %s\n", osp_last_error());
        return 1;
    }

    /* Sizes come from the network, per sample: its input (C x H x W
     * floats) and its logits, the layer that the loss reads (a network
     * that ends in [softmax] has them just before it). */
    const int64_t in_size = osp_shape_numel(&net->input);
    int64_t n_out = 0;
    if (osp_net_find_layer(net, OSP_LAYER_LOGITS, NULL, &n_out)) {
        fprintf(stderr, "classify: %s\n", osp_last_error());
        osp_net_free(net);
        return 1;
    }

    /* One input per image, side by side: the network runs on them all in
     * one call. ok[] lists which images made it in. */
    float *x = malloc((size_t)n_images * (size_t)in_size * sizeof *x);
    float *logits = malloc((size_t)n_images * (size_t)n_out * sizeof *logits);
    int *ok = malloc((size_t)n_images * sizeof *ok);
    int status = 0;
    if (!x || !logits || !ok) {
        fprintf(stderr, "classify: out of memory\n");
        status = 1;
        goto done;
    }

    int n = 0;
    for (int i = 0; i < n_images; i++) {
        /* Decodes the JPEG, PNG or WebP file (shrinking it while it
         * decodes where it can), resizes and crops it as the model was
         * evaluated in training (NULL: the network's own transform), and
         * normalises it with the model's mean and std. The message of a
         * failure names the file and what is wrong with it. */
        if (osp_net_load_image(net, images[i], NULL, x + (int64_t)n * in_size)) {
            fprintf(stderr, "classify: %s\n", osp_last_error());
            status = 1;
            continue;
        }
        ok[n++] = i;
    }

    /* One forward pass over the n inputs, at most 32 at a time (batch 0
     * would mean 64). Any layers can be asked for by name; here only the
     * logits, whose n x n_out floats go to logits. */
    const char *layers[] = {OSP_LAYER_LOGITS};
    float *outs[] = {logits};
    if (n > 0 && osp_net_run(net, x, n, 32, layers, 1, outs)) {
        fprintf(stderr, "classify: %s\n", osp_last_error());
        status = 1;
        goto done;
    }

    float *p = malloc((size_t)n_out * sizeof *p);
    int order[TOP];
    for (int j = 0; j < n && p; j++) {
        /* Probabilities from the logits (one softmax; pass 1 for a
         * multi-label model's independent sigmoids), then the TOP
         * likeliest classes, best first. */
        osp_scores_from_logits(logits + (int64_t)j * n_out, n_out, 0, p);
        const int top = osp_top_k(p, n_out, TOP, order);
        printf("%s\n", images[ok[j]]);
        for (int k = 0; k < top; k++) {
            const int c = order[k];
            /* labels holds n_classes names (the class folders the model
             * was trained on), or is NULL. */
            if (net->labels && c < net->n_classes)
                printf("  %8.4f  %s\n", p[c], net->labels[c]);
            else
                printf("  %8.4f  class %d\n", p[c], c);
        }
    }
    free(p);

done:
    free(ok);
    free(logits);
    free(x);
    osp_net_free(net);
    return status;
}
