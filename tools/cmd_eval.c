/* osprey eval: top-1, top-5 and loss of a model on a dataset. */
#include <getopt.h>
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
            "  --json                print one JSON object: top1, top5, loss, count\n");
}

int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"data", required_argument, 0, 'd'},
        {"split", required_argument, 0, 's'}, {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},        {"resize", required_argument, 0, 'i'},
        {"crop-fraction", required_argument, 0, 'i'}, {"max-pixels", required_argument, 0, 'i'},
        {"workers", required_argument, 0, 'i'}, {0, 0, 0, 0}};
    const char *model = NULL, *data_path = NULL;
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
    osp_eval_result r;
    int rc = osp_evaluate(net, data, batch, &r);
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
