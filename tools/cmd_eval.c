/* osprey eval: top-1, top-5 and loss of a model on a dataset; for a
 * multi-label model on multi-label data, mAP, per-label precision, recall
 * and F1, micro and macro F1, and per-label thresholds. */
#include <getopt.h>
#include <math.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "eval";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey eval --model MODEL --data DATA [options]\n"
            "\n"
            "Evaluates MODEL on DATA (a folder of class folders, a list file, a directory\n"
            "holding the MNIST IDX files, or an IDX images file): top-1 and top-5 accuracy\n"
            "and mean cross-entropy loss. Unreadable images are left out and named.\n"
            "\n"
            "  --model MODEL         a model or checkpoint saved by 'osprey train'\n"
            "  --data DATA           the dataset (required)\n"
            "  --split train|test    which IDX files of DATA (default test)\n"
            "  --resize MODE         center, stretch or letterbox (default center)\n"
            "  --crop-fraction F     center: the input covers this much of the short side\n"
            "                        (default 0.875)\n"
            "  --max-pixels N        images with more pixels are skipped (default 64M)\n"
            "  --workers N           decoding threads (default: --threads)\n"
            "  --batch B             inference batch size (default 256)\n"
            "  --threads T           threads (default: all cores)\n"
            "  --json                print one JSON object: top1, top5, loss, count\n"
            "\n"
            "Multi-label models on multi-label data (docs/multilabel.md): mAP, micro and\n"
            "macro F1, exact-match accuracy, and per label its AP, precision, recall and\n"
            "F1 at the model's threshold, and the threshold that maximises F1 on DATA.\n"
            "  --save-thresholds OUT  store those F1-maximising thresholds in a copy of\n"
            "                        MODEL written to OUT (may be MODEL itself); choose\n"
            "                        them on validation data, not on the test set\n");
}

static void json_num(const char *key, double v, const char *sep) {
    if (isfinite(v)) printf("\"%s\": %.6f%s", key, v, sep);
    else printf("\"%s\": null%s", key, sep);
}

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

static void print_multilabel(const osp_net *net, const osp_multilabel_eval *e, int64_t skipped,
                             int json) {
    if (json) {
        printf("{\"multi_label\": true, ");
        json_num("map", e->map, ", ");
        json_num("micro_precision", e->micro_precision, ", ");
        json_num("micro_recall", e->micro_recall, ", ");
        json_num("micro_f1", e->micro_f1, ", ");
        json_num("macro_f1", e->macro_f1, ", ");
        json_num("subset_accuracy", e->subset_accuracy, ", ");
        json_num("loss", e->loss, ", ");
        printf("\"count\": %lld, \"skipped\": %lld, \"labels\": [", (long long)e->count,
               (long long)skipped);
        for (int c = 0; c < e->n_labels; c++) {
            printf("%s{\"label\": ", c ? ", " : "");
            char num[16];
            snprintf(num, sizeof num, "%d", c);
            json_str(net->labels ? net->labels[c] : num);
            printf(", \"positives\": %lld, ", (long long)e->positives[c]);
            json_num("ap", e->ap[c], ", ");
            json_num("precision", e->precision[c], ", ");
            json_num("recall", e->recall[c], ", ");
            json_num("f1", e->f1[c], ", ");
            json_num("threshold", e->threshold[c], ", ");
            json_num("best_threshold", e->best_threshold[c], ", ");
            json_num("best_f1", e->best_f1[c], "}");
        }
        printf("]}\n");
        return;
    }
    printf("mAP %.4f  micro-F1 %.4f (P %.4f R %.4f)  macro-F1 %.4f  exact %.2f%%  loss %.4f  "
           "(%lld sample%s%s)\n", e->map, e->micro_f1, e->micro_precision, e->micro_recall,
           e->macro_f1, 100 * e->subset_accuracy, e->loss, (long long)e->count, cli_s(e->count),
           skipped ? ", unreadable ones left out" : "");
    printf("%-20s %9s %7s %7s %7s %7s %9s %9s %8s\n", "label", "positives", "AP", "prec", "recall",
           "F1", "threshold", "best-thr", "best-F1");
    for (int c = 0; c < e->n_labels; c++) {
        char num[16];
        snprintf(num, sizeof num, "%d", c);
        printf("%-20.20s %9lld %7.4f %7.4f %7.4f %7.4f %9.4f %9.4f %8.4f\n",
               net->labels ? net->labels[c] : num, (long long)e->positives[c], e->ap[c],
               e->precision[c], e->recall[c], e->f1[c], e->threshold[c], e->best_threshold[c],
               e->best_f1[c]);
    }
}

int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"data", required_argument, 0, 'd'},
        {"split", required_argument, 0, 's'}, {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},        {"resize", required_argument, 0, 'i'},
        {"crop-fraction", required_argument, 0, 'i'}, {"max-pixels", required_argument, 0, 'i'},
        {"workers", required_argument, 0, 'i'}, {"save-thresholds", required_argument, 0, 'S'},
        {0, 0, 0, 0}};
    const char *model = NULL, *data_path = NULL, *save_thresholds = NULL;
    osp_split split = OSP_SPLIT_TEST;
    int batch = 256, threads = 0, json = 0, c, which = 0;
    cli_image_options images = cli_image_defaults();
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, &which)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'd': data_path = optarg; break;
        case 's':
            if (strcmp(optarg, "train") && strcmp(optarg, "test")) return cli_fail(CMD, "--split must be train or test");
            split = strcmp(optarg, "train") ? OSP_SPLIT_TEST : OSP_SPLIT_TRAIN;
            break;
        case 'b': if (cli_int(CMD, "--batch", optarg, 1, 65536, &batch)) return 1; break;
        case 't': if (cli_int(CMD, "--threads", optarg, 1, 1024, &threads)) return 1; break;
        case 'j': json = 1; break;
        case 'S': save_thresholds = optarg; break;
        case 'i': if (cli_image_option(CMD, opts[which].name, optarg, &images)) return 1; break;
        case 'h': usage(stdout); return 0;
        default: return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey eval --help')", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!model || !data_path) return cli_fail(CMD, "--model and --data are required (see 'osprey eval --help')");
    osp_threads_set(threads);
    osp_net *net;
    if (osp_model_load(model, &net)) return cli_fail_lib(CMD, NULL);
    osp_dataset *data;
    /* Classes are numbered as the model numbers them. */
    if (cli_open_dataset(CMD, data_path, split, net, &images, (const char *const *)net->labels,
                         net->labels ? net->n_classes : 0, &data)) {
        osp_net_free(net);
        return 1;
    }
    if (data->multi_label || save_thresholds) {
        int rc = OSP_OK;
        if (!data->multi_label)
            rc = osp_error(OSP_EINVAL, "%s has one label per image: --save-thresholds needs "
                           "multi-label data", data_path);
        osp_multilabel_eval *e = NULL;
        if (!rc) rc = osp_train_evaluate_multilabel(net, data, batch, &e);
        int64_t skipped = osp_dataset_skipped(data);
        osp_dataset_report_skipped(data);
        osp_dataset_free(data);
        int reported = 0; /* a message already printed */
        if (!rc && save_thresholds) {
            rc = osp_net_set_thresholds(net, e->best_threshold, e->n_labels);
            if (!rc && cli_check_output(CMD, "--save-thresholds", save_thresholds)) reported = 1;
            else if (!rc) rc = osp_model_save(net, save_thresholds);
        }
        if (reported) {
            osp_multilabel_eval_free(e);
            osp_net_free(net);
            return 1;
        }
        if (!rc) print_multilabel(net, e, skipped, json);
        if (!rc && save_thresholds && !json)
            fprintf(stderr, "saved the model with these best thresholds to %s\n", save_thresholds);
        osp_multilabel_eval_free(e);
        osp_net_free(net);
        return rc ? cli_fail_lib(CMD, NULL) : 0;
    }
    osp_eval_result r;
    int rc = osp_train_evaluate(net, data, batch, &r);
    int64_t skipped = osp_dataset_skipped(data);
    osp_dataset_report_skipped(data);
    osp_dataset_free(data);
    osp_net_free(net);
    if (rc) return cli_fail_lib(CMD, NULL);
    if (json)
        printf("{\"top1\": %.6f, \"top5\": %.6f, \"loss\": %.6f, \"count\": %lld, \"skipped\": %lld}\n",
               r.top1, r.top5, r.loss, (long long)r.count, (long long)skipped);
    else
        printf("top-1 %.2f%%  top-5 %.2f%%  loss %.4f  (%lld sample%s%s)\n", 100 * r.top1, 100 * r.top5,
               r.loss, (long long)r.count, cli_s(r.count), skipped ? ", unreadable ones left out" : "");
    return 0;
}
