/* osprey train: train a network from a spec (or continue a checkpoint). */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"

static const char *const CMD = "train";

static void usage(FILE *out) {
    fprintf(out,
            "usage: osprey train --net SPEC --data DATA [options]\n"
            "       osprey train --init MODEL --data DATA [--new-head] [--freeze LAYER] [options]\n"
            "       osprey train --resume CHECKPOINT --data DATA [options]\n"
            "\n"
            "Trains the network described by SPEC (see docs/netspec.md) on DATA: a folder\n"
            "with one sub-folder of JPEG/PNG/WebP images per class, a list file of\n"
            "path<TAB>label lines, a directory holding the MNIST IDX files, or an IDX\n"
            "images file. Images are resized to the input size of the spec.\n"
            "Multi-label data (path<TAB>label,label,... lines or JSON Lines, see\n"
            "docs/multilabel.md) trains with sigmoid + binary cross-entropy.\n"
            "\n"
            "data:\n"
            "  --data DATA           training data (required)\n"
            "  --loss auto|softmax|bce  softmax cross-entropy (one label per image) or\n"
            "                        binary cross-entropy per label (multi-label); auto\n"
            "                        (default) picks bce for multi-label data\n"
            "  --split train|test    which IDX files of DATA to train on (default train)\n"
            "  --val DATA            evaluate on DATA after each epoch (IDX: its test files)\n"
            "  --val-split F         hold out this fraction of each class of DATA instead\n"
            "  --max-pixels N        images with more pixels are skipped (default 64M)\n"
            "  --workers N           image decoding threads (default: --threads; 0 decodes\n"
            "                        on the training threads, between steps)\n"
            "  --prefetch N          batches decoded ahead (default 2)\n"
            "images (see docs/images.md):\n"
            "  --augment LIST        none, or a list of crop and flip (default crop,flip)\n"
            "  --crop-scale MIN,MAX  random crop area, a fraction of the image (default 0.08,1)\n"
            "  --crop-ratio MIN,MAX  random crop aspect ratio (default 0.75,1.333)\n"
            "  --multiscale MIN,MAX  scale the short side to a random length in MIN..MAX and\n"
            "                        crop the input size at random (replaces crop)\n"
            "  --jitter J            random brightness, contrast, saturation within 1 +- J\n"
            "  --resize MODE         center, stretch or letterbox: how validation images (and\n"
            "                        training images without crop) fit the input (default center)\n"
            "  --crop-fraction F     center: the input covers this much of the short side\n"
            "                        (default 0.875)\n"
            "schedule:\n"
            "  --epochs N            passes over the data (default 10)\n"
            "  --batch B             minibatch size (default 64)\n"
            "  --batch auto          measure first ('osprey advise', a few seconds) and train\n"
            "                        with the batch size (and, without --threads, the thread\n"
            "                        count) it recommends; a resumed run keeps its batch\n"
            "  --memory-budget SIZE  --batch auto: the largest planned memory of a batch\n"
            "                        (512M, 4G; K, M, G, T are powers of 1024)\n"
            "  --advise-seconds S    --batch auto: time for the measurements (default 3)\n"
            "  --lr LR               learning rate (default 0.01)\n"
            "  --optimizer NAME      sgd, adam or adamw (default sgd)\n"
            "  --momentum M          SGD momentum (default 0.9)\n"
            "  --nesterov            Nesterov momentum (SGD)\n"
            "  --weight-decay WD     L2 weight decay (decoupled for adamw; default 0, adamw 0.01)\n"
            "  --schedule NAME       constant, step or cosine (default constant)\n"
            "  --warmup EPOCHS       linear learning-rate warm-up (default 0)\n"
            "  --step-epochs E       step schedule: decay every E epochs (default 1/3 of the run)\n"
            "  --gamma G             step schedule: decay factor (default 0.1)\n"
            "fine-tuning (see docs/finetune.md):\n"
            "  --init MODEL          start from MODEL's weights (an osprey model, or one\n"
            "                        imported from ONNX) and its spec, labels, mean and std;\n"
            "                        the data's classes must be the model's\n"
            "  --new-head            replace the classifier with a new one for the data's\n"
            "                        classes (which become the labels)\n"
            "  --head-layer NAME     the classifier (default: the [fc] or 1x1 [conv] that\n"
            "                        produces the logits)\n"
            "  --freeze LAYER        keep LAYER and every layer before it as they are: no\n"
            "                        updates, batch norm statistics fixed\n"
            "  --lr-backbone LR      learning rate of the layers before the head (the head\n"
            "                        trains at --lr; default: --lr for all)\n"
            "run:\n"
            "  --threads T           threads for kernels and BLAS (default: all cores)\n"
            "  --threads-mode MODE   how one process uses its threads: layers (each layer's\n"
            "                        kernels split over them), replicas (one replica of the\n"
            "                        network per thread, each on a slice of the batch; the\n"
            "                        same numbers up to float32 rounding) or auto (default:\n"
            "                        layers, measured faster so far)\n"
            "  --seed S              seed for weights, data order and dropout (default 1)\n"
            "  --out MODEL           where to save the trained model\n"
            "  --checkpoint PATH     checkpoint file (default MODEL.ckpt when --out is given)\n"
            "  --checkpoint-every N  also checkpoint every N steps (default: each epoch)\n"
            "  --resume CHECKPOINT   continue a checkpointed run exactly where it stopped;\n"
            "                        its settings apply unless given again here\n"
            "  --resume auto         continue from the newest valid checkpoint of --checkpoint\n"
            "                        (or MODEL.ckpt), or start with --net if there is none\n"
            "  --keep-checkpoints K  also keep the newest K checkpoints as CHECKPOINT-step<N>\n"
            "  --stop-after STEPS    stop (after a checkpoint) once this many steps are done\n"
            "  --json                one JSON object per epoch on stdout (with each rank's\n"
            "                        timings in an MPI job)\n"
            "  --quiet               no progress output\n"
            "parallel (see docs/distributed.md):\n"
            "  --hogwild             --threads T lock-free workers, each on its own batches,\n"
            "                        updating shared weights (fast, not reproducible)\n"
            "  --distributed         data parallelism over MPI ranks; on by itself under\n"
            "                        mpirun/srun with more than one rank. --batch is per rank:\n"
            "                        the global batch is ranks x B\n"
            "  --no-overlap          exchange gradients after backward, not during it\n"
            "  --bucket-mb MB        gradient bucket size for the exchange (default 1)\n"
            "  --sync-bn             batch norm with the statistics of the whole global\n"
            "                        batch, summed over the ranks in every layer\n"
            "  --model-parallel fc   split the [fc] layers but the last by outputs over the\n"
            "                        ranks (inputs all-gathered); the rest data-parallel\n"
            "  --compress none|fp16|int8  send gradients at half (fp16) or a quarter (int8)\n"
            "                        of their size, with error feedback (default none);\n"
            "                        with --param-servers the pushes (weights stay float32)\n"
            "  --reduce ring|butterfly  sum buckets with allreduce (ring) or with\n"
            "                        reduce-scatter + all-gather (default ring)\n"
            "  --no-comm-thread      move the exchange along from the training thread,\n"
            "                        between layers, not in a thread of its own\n"
            "  --update step|lazy    apply each bucket's sum at the end of its step\n"
            "                        (default), or lazily: just before the next forward\n"
            "                        pass reaches its first layer\n"
            "  --lr-scale-ranks      multiply the learning rate by the number of ranks\n"
            "                        (with --warmup for large global batches)\n"
            "  --param-servers S     asynchronous training: the first S ranks hold the\n"
            "                        weights, the others train against them without\n"
            "                        waiting for each other; --batch is each update's\n"
            "  --max-staleness K     a worker more than K updates ahead of the slowest\n"
            "                        waits\n"
            "                        (default 4; -1: never)\n"
            "  --worker-timeout SEC  a worker silent this long is given up (default 60);\n"
            "                        surviving it needs mpirun --enable-recovery\n"
            "\n"
            "DATA may also be synthetic:N: N generated samples shaped for the network.\n"
            "The same seed and thread count give the same weights, bit for bit.\n");
}

typedef struct train_options {
    const char *net, *data, *val, *out, *checkpoint, *resume, *init;
    int new_head;
    char saved_freeze[256], saved_head[256];
    cli_image_options images;
    float val_split;
    osp_split split;
    int threads, json, quiet;
    osp_train_config cfg;
    int optimizer_set, weight_decay_set, momentum_set;
    int hogwild, distributed, lr_scale_ranks, batch_set, lr_set;
    int batch_auto;          /* --batch auto */
    int64_t memory_budget;   /* --memory-budget, bytes; 0 = none */
    float advise_seconds;
    float momentum, weight_decay;
    double last_draw;
} train_options;

enum {
    OPT_NET = 256, OPT_DATA, OPT_SPLIT, OPT_VAL, OPT_EPOCHS, OPT_BATCH, OPT_LR, OPT_OPTIMIZER,
    OPT_MOMENTUM, OPT_NESTEROV, OPT_WD, OPT_SCHEDULE, OPT_WARMUP, OPT_STEP_EPOCHS, OPT_GAMMA,
    OPT_THREADS, OPT_SEED, OPT_OUT, OPT_CHECKPOINT, OPT_CKPT_EVERY, OPT_RESUME, OPT_STOP,
    OPT_MODEL_PARALLEL,
    OPT_JSON, OPT_QUIET, OPT_HELP, OPT_VAL_SPLIT, OPT_IMAGE, OPT_HOGWILD, OPT_DISTRIBUTED,
    OPT_NO_OVERLAP, OPT_BUCKET_MB, OPT_SYNC_BN, OPT_LR_SCALE, OPT_KEEP, OPT_INIT, OPT_NEW_HEAD,
    OPT_HEAD_LAYER, OPT_FREEZE, OPT_LR_BACKBONE, OPT_LOSS, OPT_MEMORY_BUDGET, OPT_ADVISE_SECONDS,
    OPT_COMPRESS, OPT_REDUCE, OPT_NO_COMM_THREAD, OPT_UPDATE,
    OPT_PARAM_SERVERS, OPT_MAX_STALENESS, OPT_WORKER_TIMEOUT, OPT_THREADS_MODE
};

static const struct option long_options[] = {
    {"net", required_argument, 0, OPT_NET},       {"data", required_argument, 0, OPT_DATA},
    {"loss", required_argument, 0, OPT_LOSS},
    {"split", required_argument, 0, OPT_SPLIT},   {"val", required_argument, 0, OPT_VAL},
    {"epochs", required_argument, 0, OPT_EPOCHS}, {"batch", required_argument, 0, OPT_BATCH},
    {"lr", required_argument, 0, OPT_LR},         {"optimizer", required_argument, 0, OPT_OPTIMIZER},
    {"momentum", required_argument, 0, OPT_MOMENTUM}, {"nesterov", no_argument, 0, OPT_NESTEROV},
    {"weight-decay", required_argument, 0, OPT_WD}, {"schedule", required_argument, 0, OPT_SCHEDULE},
    {"warmup", required_argument, 0, OPT_WARMUP}, {"step-epochs", required_argument, 0, OPT_STEP_EPOCHS},
    {"gamma", required_argument, 0, OPT_GAMMA},   {"threads", required_argument, 0, OPT_THREADS},
    {"threads-mode", required_argument, 0, OPT_THREADS_MODE},
    {"seed", required_argument, 0, OPT_SEED},     {"out", required_argument, 0, OPT_OUT},
    {"checkpoint", required_argument, 0, OPT_CHECKPOINT},
    {"checkpoint-every", required_argument, 0, OPT_CKPT_EVERY},
    {"resume", required_argument, 0, OPT_RESUME}, {"stop-after", required_argument, 0, OPT_STOP},
    {"json", no_argument, 0, OPT_JSON},           {"quiet", no_argument, 0, OPT_QUIET},
    {"help", no_argument, 0, OPT_HELP},           {"val-split", required_argument, 0, OPT_VAL_SPLIT},
    {"hogwild", no_argument, 0, OPT_HOGWILD},     {"distributed", no_argument, 0, OPT_DISTRIBUTED},
    {"no-overlap", no_argument, 0, OPT_NO_OVERLAP}, {"bucket-mb", required_argument, 0, OPT_BUCKET_MB},
    {"compress", required_argument, 0, OPT_COMPRESS}, {"reduce", required_argument, 0, OPT_REDUCE},
    {"no-comm-thread", no_argument, 0, OPT_NO_COMM_THREAD}, {"update", required_argument, 0, OPT_UPDATE},
    {"sync-bn", no_argument, 0, OPT_SYNC_BN},     {"lr-scale-ranks", no_argument, 0, OPT_LR_SCALE},
    {"model-parallel", required_argument, 0, OPT_MODEL_PARALLEL},
    {"keep-checkpoints", required_argument, 0, OPT_KEEP},
    {"init", required_argument, 0, OPT_INIT},     {"new-head", no_argument, 0, OPT_NEW_HEAD},
    {"head-layer", required_argument, 0, OPT_HEAD_LAYER}, {"freeze", required_argument, 0, OPT_FREEZE},
    {"lr-backbone", required_argument, 0, OPT_LR_BACKBONE},
    {"memory-budget", required_argument, 0, OPT_MEMORY_BUDGET},
    {"advise-seconds", required_argument, 0, OPT_ADVISE_SECONDS},
    {"param-servers", required_argument, 0, OPT_PARAM_SERVERS},
    {"max-staleness", required_argument, 0, OPT_MAX_STALENESS},
    {"worker-timeout", required_argument, 0, OPT_WORKER_TIMEOUT},
    /* image options, parsed by cli_image_option */
    {"augment", required_argument, 0, OPT_IMAGE}, {"crop-scale", required_argument, 0, OPT_IMAGE},
    {"crop-ratio", required_argument, 0, OPT_IMAGE}, {"multiscale", required_argument, 0, OPT_IMAGE},
    {"jitter", required_argument, 0, OPT_IMAGE},  {"resize", required_argument, 0, OPT_IMAGE},
    {"crop-fraction", required_argument, 0, OPT_IMAGE}, {"max-pixels", required_argument, 0, OPT_IMAGE},
    {"workers", required_argument, 0, OPT_IMAGE}, {"prefetch", required_argument, 0, OPT_IMAGE},
    {0, 0, 0, 0}};

/* Settings saved in a checkpoint become the defaults of a resumed run. */
static int apply_saved_config(train_options *o, const char *json) {
    cJSON *c = cJSON_Parse(json);
    if (!cJSON_IsObject(c)) {
        cJSON_Delete(c);
        return cli_fail(CMD, "%s: the checkpoint's settings are unreadable", o->resume);
    }
    cJSON *v;
    if (cJSON_IsNumber(v = cJSON_GetObjectItem(c, "epochs"))) o->cfg.epochs = v->valueint;
    if (cJSON_IsNumber(v = cJSON_GetObjectItem(c, "batch"))) o->cfg.batch = v->valueint;
    if (cJSON_IsNumber(v = cJSON_GetObjectItem(c, "lr"))) o->cfg.lr = (float)v->valuedouble;
    if (cJSON_IsNumber(v = cJSON_GetObjectItem(c, "warmup_epochs"))) o->cfg.warmup_epochs = v->valueint;
    if (cJSON_IsNumber(v = cJSON_GetObjectItem(c, "step_epochs"))) o->cfg.step_epochs = (float)v->valuedouble;
    if (cJSON_IsNumber(v = cJSON_GetObjectItem(c, "gamma"))) o->cfg.schedule.gamma = (float)v->valuedouble;
    if (cJSON_IsNumber(v = cJSON_GetObjectItem(c, "threads"))) o->threads = v->valueint;
    int mode;
    if (cJSON_IsString(v = cJSON_GetObjectItem(c, "threads_mode")) &&
        !osp_threads_mode_parse(v->valuestring, &mode))
        o->cfg.threads_mode = mode;
    if (cJSON_IsNumber(v = cJSON_GetObjectItem(c, "lr_backbone"))) o->cfg.lr_backbone = (float)v->valuedouble;
    if (cJSON_IsString(v = cJSON_GetObjectItem(c, "freeze_until"))) {
        snprintf(o->saved_freeze, sizeof o->saved_freeze, "%s", v->valuestring);
        o->cfg.freeze_until = o->saved_freeze;
    }
    if (cJSON_IsString(v = cJSON_GetObjectItem(c, "head_layer"))) {
        snprintf(o->saved_head, sizeof o->saved_head, "%s", v->valuestring);
        o->cfg.head_layer = o->saved_head;
    }
    osp_sched_kind sk;
    if (cJSON_IsString(v = cJSON_GetObjectItem(c, "schedule")) && !osp_sched_parse(v->valuestring, &sk))
        o->cfg.schedule.kind = sk;
    cJSON_Delete(c);
    return 0;
}

static int parse_options(int argc, char **argv, train_options *o) {
    int c, which = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", long_options, &which)) != -1) {
        const char *a = optarg;
        int bad = 0;
        switch (c) {
        case OPT_NET: o->net = a; break;
        case OPT_LOSS: {
            osp_loss l;
            if (osp_loss_parse(a, &l)) bad = cli_fail(CMD, "--loss must be auto, softmax or bce, not '%s'", a);
            else o->cfg.loss = l;
            break;
        }
        case OPT_DATA: o->data = a; break;
        case OPT_VAL: o->val = a; break;
        case OPT_OUT: o->out = a; break;
        case OPT_CHECKPOINT: o->checkpoint = a; break;
        case OPT_RESUME: o->resume = a; break;
        case OPT_INIT: o->init = a; break;
        case OPT_NEW_HEAD: o->new_head = 1; break;
        case OPT_HEAD_LAYER: o->cfg.head_layer = a; break;
        case OPT_FREEZE: o->cfg.freeze_until = a; break;
        case OPT_LR_BACKBONE: bad = cli_float(CMD, "--lr-backbone", a, 1e-12, 1e6, &o->cfg.lr_backbone); break;
        case OPT_SPLIT:
            if (strcmp(a, "train") && strcmp(a, "test")) return cli_fail(CMD, "--split must be train or test");
            o->split = strcmp(a, "train") ? OSP_SPLIT_TEST : OSP_SPLIT_TRAIN;
            break;
        case OPT_EPOCHS: bad = cli_int(CMD, "--epochs", a, 1, 1000000, &o->cfg.epochs); break;
        case OPT_BATCH: {
            if (!strcmp(a, "auto")) {
                o->batch_auto = 1;
                break;
            }
            char *end;
            long b = strtol(a, &end, 10);
            if (end == a || *end || b < 1 || b > 65536)
                return cli_fail(CMD, "--batch must be an integer from 1 to 65536, or auto, not '%s'", a);
            o->cfg.batch = (int)b;
            o->batch_auto = 0;
            o->batch_set = 1;
            break;
        }
        case OPT_MEMORY_BUDGET: bad = cli_bytes(CMD, "--memory-budget", a, &o->memory_budget); break;
        case OPT_ADVISE_SECONDS: bad = cli_float(CMD, "--advise-seconds", a, 0.01, 3600, &o->advise_seconds); break;
        case OPT_LR:
            bad = cli_float(CMD, "--lr", a, 1e-12, 1e6, &o->cfg.lr);
            o->lr_set = 1;
            break;
        case OPT_HOGWILD: o->hogwild = 1; break;
        case OPT_DISTRIBUTED: o->distributed = 1; break;
        case OPT_NO_OVERLAP: o->cfg.overlap = 0; break;
        case OPT_BUCKET_MB: bad = cli_float(CMD, "--bucket-mb", a, 0.001, 1024, &o->cfg.bucket_mb); break;
        case OPT_SYNC_BN: o->cfg.sync_bn = 1; break;
        case OPT_MODEL_PARALLEL:
            if (strcmp(a, "fc") != 0)
                bad = cli_fail(CMD, "--model-parallel takes 'fc' (the fully connected layers), not '%s'", a);
            o->cfg.model_parallel = 1;
            break;
        case OPT_COMPRESS:
            if (strcmp(a, "none") == 0) o->cfg.compress = OSP_COMPRESS_NONE;
            else if (strcmp(a, "fp16") == 0) o->cfg.compress = OSP_COMPRESS_FP16;
            else if (strcmp(a, "int8") == 0) o->cfg.compress = OSP_COMPRESS_INT8;
            else return cli_fail(CMD, "--compress must be none, fp16 or int8, not '%s'", a);
            break;
        case OPT_REDUCE:
            if (strcmp(a, "ring") == 0) o->cfg.reduce = OSP_REDUCE_RING;
            else if (strcmp(a, "butterfly") == 0) o->cfg.reduce = OSP_REDUCE_BUTTERFLY;
            else return cli_fail(CMD, "--reduce must be ring or butterfly, not '%s'", a);
            break;
        case OPT_NO_COMM_THREAD: o->cfg.comm_thread = 0; break;
        case OPT_UPDATE:
            if (strcmp(a, "step") == 0) o->cfg.lazy_update = 0;
            else if (strcmp(a, "lazy") == 0) o->cfg.lazy_update = 1;
            else return cli_fail(CMD, "--update must be step or lazy, not '%s'", a);
            break;
        case OPT_PARAM_SERVERS:
            bad = cli_int(CMD, "--param-servers", a, 1, 65536, &o->cfg.param_servers);
            break;
        case OPT_MAX_STALENESS:
            bad = cli_int(CMD, "--max-staleness", a, -1, 1000000, &o->cfg.max_staleness);
            break;
        case OPT_WORKER_TIMEOUT:
            bad = cli_float(CMD, "--worker-timeout", a, 0.1, 1e6, &o->cfg.worker_timeout_s);
            break;
        case OPT_LR_SCALE: o->lr_scale_ranks = 1; break;
        case OPT_KEEP: bad = cli_int(CMD, "--keep-checkpoints", a, 0, 1000, &o->cfg.keep_checkpoints); break;
        case OPT_OPTIMIZER:
            if (osp_optim_parse(a, &o->cfg.optim.kind))
                return cli_fail(CMD, "--optimizer must be sgd, adam or adamw, not '%s'", a);
            o->optimizer_set = 1;
            break;
        case OPT_MOMENTUM:
            bad = cli_float(CMD, "--momentum", a, 0, 0.9999, &o->momentum);
            o->momentum_set = 1;
            break;
        case OPT_NESTEROV: o->cfg.optim.nesterov = 1; break;
        case OPT_WD:
            bad = cli_float(CMD, "--weight-decay", a, 0, 10, &o->weight_decay);
            o->weight_decay_set = 1;
            break;
        case OPT_SCHEDULE:
            if (osp_sched_parse(a, &o->cfg.schedule.kind))
                return cli_fail(CMD, "--schedule must be constant, step or cosine, not '%s'", a);
            break;
        case OPT_WARMUP: bad = cli_int(CMD, "--warmup", a, 0, 1000000, &o->cfg.warmup_epochs); break;
        case OPT_STEP_EPOCHS: bad = cli_float(CMD, "--step-epochs", a, 1e-3, 1e6, &o->cfg.step_epochs); break;
        case OPT_GAMMA: bad = cli_float(CMD, "--gamma", a, 0, 1, &o->cfg.schedule.gamma); break;
        case OPT_THREADS: bad = cli_int(CMD, "--threads", a, 1, 1024, &o->threads); break;
        case OPT_THREADS_MODE:
            if (osp_threads_mode_parse(a, &o->cfg.threads_mode))
                bad = cli_fail(CMD, "--threads-mode must be auto, layers or replicas, not '%s'", a);
            break;
        case OPT_SEED: bad = cli_u64(CMD, "--seed", a, &o->cfg.seed); break;
        case OPT_CKPT_EVERY: bad = cli_int64(CMD, "--checkpoint-every", a, 1, INT64_MAX / 2, &o->cfg.checkpoint_every); break;
        case OPT_STOP: bad = cli_int64(CMD, "--stop-after", a, 1, INT64_MAX / 2, &o->cfg.stop_after); break;
        case OPT_VAL_SPLIT: bad = cli_float(CMD, "--val-split", a, 1e-6, 0.999999, &o->val_split); break;
        case OPT_IMAGE: bad = cli_image_option(CMD, long_options[which].name, a, &o->images); break;
        case OPT_JSON: o->json = 1; break;
        case OPT_QUIET: o->quiet = 1; break;
        case 'h':
        case OPT_HELP: usage(stdout); return -1;
        default:
            return cli_fail(CMD, "unknown or incomplete option '%s' (see 'osprey train --help')", argv[optind - 1]);
        }
        if (bad) return 1;
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s' (see 'osprey train --help')", argv[optind]);
    return 0;
}

static void on_step(const osp_train_progress *p, void *user) {
    train_options *o = user;
    char eta[32];
    cli_format_duration(p->eta_s, eta, sizeof eta);
    int tty = cli_tty() && !o->quiet;
    double now = osp_now();
    if (tty && (now - o->last_draw > 0.1 || p->epoch_end)) {
        o->last_draw = now;
        int width = 24, filled = (int)(width * p->step_in_epoch / p->steps_per_epoch);
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < filled ? '=' : ' ';
        bar[width] = '\0';
        fprintf(stderr, "\repoch %d/%d [%s] loss %.4f acc %5.2f%% %.0f img/s", p->epoch + 1,
                p->epochs, bar, p->epoch_loss, 100 * p->epoch_accuracy, p->images_per_s);
        if (p->param_servers) fprintf(stderr, " staleness %.1f", p->staleness);
        else if (o->cfg.dist) fprintf(stderr, " comm wait %.0f%%", 100 * p->comm_fraction);
        fprintf(stderr, " ETA %s   ", eta);
        fflush(stderr);
    }
    if (!p->epoch_end) return;
    if (!o->quiet) {
        fprintf(stderr, "%sepoch %d/%d  loss %.4f  acc %.2f%%", tty ? "\r\033[K" : "", p->epoch + 1,
                p->epochs, p->epoch_loss, 100 * p->epoch_accuracy);
        if (!isnan(p->val_top1))
            fprintf(stderr, "  val loss %.4f  val acc %.2f%%", p->val_loss, 100 * p->val_top1);
        fprintf(stderr, "  %.0f img/s", p->images_per_s);
        if (p->param_servers) {
            fprintf(stderr, "  staleness %.2f", p->staleness);
            if (p->workers_lost) fprintf(stderr, "  %d worker%s lost", p->workers_lost, p->workers_lost == 1 ? "" : "s");
        } else if (o->cfg.dist) {
            fprintf(stderr, "  comm wait %.1f%%", 100 * p->comm_fraction);
        }
        fprintf(stderr, "  lr %.3g  ETA %s\n", p->lr, eta);
    }
    if (o->json) {
        printf("{\"epoch\": %d, \"step\": %lld, \"loss\": %.9g, \"accuracy\": %.6f, \"images_per_s\": %.1f, "
               "\"lr\": %.9g",
               p->epoch + 1, (long long)p->step, p->epoch_loss, p->epoch_accuracy, p->images_per_s, p->lr);
        if (!isnan(p->val_top1)) {
            /* multi-label: val_top1 is the exact-match accuracy, and there is no top-5 */
            printf(", \"val_top1\": %.6f, ", p->val_top1);
            if (isnan(p->val_top5)) printf("\"val_top5\": null, ");
            else printf("\"val_top5\": %.6f, ", p->val_top5);
            printf("\"val_loss\": %.9g", p->val_loss);
        }
        if (o->hogwild) printf(", \"hogwild_workers\": %d", p->ranks);
        if (o->cfg.dist) {
            printf(", \"ranks\": %d, \"global_batch\": %d, \"comm_wait_s\": %.6f, \"comm_fraction\": %.6f",
                   p->ranks, o->cfg.batch, p->comm_wait_s, p->comm_fraction);
            static const char *const compress[] = {"none", "fp16", "int8"};
            printf(", \"compress\": \"%s\", \"reduce\": \"%s\", \"comm_thread\": %s, \"update\": \"%s\", "
                   "\"comm_bytes_per_step\": %.0f",
                   compress[o->cfg.compress], o->cfg.reduce == OSP_REDUCE_BUTTERFLY ? "butterfly" : "ring",
                   o->cfg.comm_thread ? "true" : "false", o->cfg.lazy_update ? "lazy" : "step",
                   p->comm_bytes_per_step);
            if (p->param_servers)
                printf(", \"param_servers\": %d, \"workers_lost\": %d, \"staleness\": %.3f",
                       p->param_servers, p->workers_lost, p->staleness);
            if (p->rank_timing) {
                printf(", \"rank_timing\": [");
                for (int i = 0; i < p->ranks; i++) {
                    const osp_rank_timing *t = &p->rank_timing[i];
                    printf("%s{\"rank\": %d, \"steps\": %lld, \"load_s\": %.6f, \"compute_s\": %.6f, "
                           "\"comm_wait_s\": %.6f, \"update_s\": %.6f, \"total_s\": %.6f, "
                           "\"comm_bytes_per_step\": %.0f}",
                           i ? ", " : "", t->rank, (long long)t->steps, t->load_s, t->compute_s,
                           t->comm_wait_s, t->update_s, t->total_s,
                           t->steps ? t->comm_bytes / (double)t->steps : 0.0);
                }
                printf("]");
            }
        }
        printf("}\n");
        fflush(stdout);
    }
}

/* Label names for the model: the dataset's (class numbers for data that
 * has no names, such as IDX). The network's outputs are the data's
 * classes by now (fit_classes). */
static int name_labels(osp_net *net, const osp_dataset *ds) {
    if (net->labels) return 0;
    if (ds->class_names && ds->n_classes != net->n_classes)
        return osp_error(OSP_ESTATE, "%d classes for %d outputs", ds->n_classes, net->n_classes);
    char **names = osp_calloc((size_t)net->n_classes, sizeof *names);
    if (!names) return OSP_ENOMEM;
    int rc = 0;
    for (int i = 0; i < net->n_classes && !rc; i++) {
        names[i] = osp_alloc(32);
        if (!names[i]) rc = OSP_ENOMEM;
        else if (ds->class_names && i < ds->n_classes) snprintf(names[i], 32, "%.31s", ds->class_names[i]);
        else snprintf(names[i], 32, "%d", i);
    }
    if (!rc) rc = osp_net_set_labels(net, (const char *const *)names, net->n_classes);
    for (int i = 0; i < net->n_classes; i++) osp_free(names[i]);
    osp_free(names);
    return rc;
}

/* --init MODEL: the model's network, weights, labels and normalisation. */
static int load_init(const train_options *o, osp_net **out) {
    osp_file_kind kind = osp_file_sniff_path(o->init);
    if (kind == OSP_FILE_ONNX)
        return cli_fail(CMD, "--init %s is an ONNX model: import it first ('osprey import %s --out "
                        "MODEL.osp'), then give --init MODEL.osp", o->init, o->init);
    if (kind != OSP_FILE_UNKNOWN && kind != OSP_FILE_SAFETENSORS)
        return cli_fail(CMD, "--init %s is %s, not an osprey model (--net takes a spec)", o->init,
                        osp_file_kind_phrase(kind));
    if (osp_model_load(o->init, out)) return cli_fail_lib(CMD, "--init");
    /* Training moves the layer a hash head reads: its codes would no longer
     * match. The new model has none; train one again on its vectors. */
    if (osp_net_get_hash(*out)) {
        osp_log(OSP_LOG_WARN, "--init %s: its hash head is not carried over (training changes the layer it "
                "reads): train one again with 'osprey hash train'", o->init);
        osp_net_set_hash(*out, NULL);
    }
    return 0;
}

static int open_data(train_options *o, const char *path, osp_split split, osp_net *net,
                     const char *const *names, int n_names, osp_dataset **out);

static int has_name(const char *const *names, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (names[i] && !strcmp(names[i], name)) return 1;
    return 0;
}

/* The network's outputs become the data's classes: a model given with
 * --init must already have them (its labels, in its order: the data is
 * opened again numbered so), unless --new-head gives it a new classifier;
 * a network from a spec has its classifier sized for them. */
static int fit_classes(train_options *o, osp_net **netp, osp_dataset **datap) {
    osp_net *net = *netp;
    osp_dataset *data = *datap;
    const int synthetic = !strncmp(o->data, "synthetic:", 10);
    const int classes = data->n_classes;
    const char *from = o->init ? o->init : o->net;
    if (o->init && !o->new_head) {
        const char *const *labels = (const char *const *)net->labels;
        const char *const *names = (const char *const *)data->class_names;
        if (synthetic) return 0;
        if (!labels || !names) {
            if (classes == net->n_classes) return 0;
            return cli_fail(CMD, "%s has %d outputs but %s has %d classes: give --new-head to train "
                            "a new classifier for the data's classes", from, net->n_classes, o->data,
                            classes);
        }
        char unknown[512] = "", missing[512] = "";
        for (int c = 0; c < classes; c++)
            if (!has_name(labels, net->n_classes, names[c]) && strlen(unknown) < 400)
                snprintf(unknown + strlen(unknown), sizeof unknown - strlen(unknown), "%s'%s'",
                         *unknown ? ", " : "", names[c]);
        for (int c = 0; c < net->n_classes; c++)
            if (!has_name(names, classes, labels[c]) && strlen(missing) < 400)
                snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s'%s'",
                         *missing ? ", " : "", labels[c]);
        if (*unknown || *missing)
            return cli_fail(CMD, "the classes of %s are not those of %s (%d outputs)%s%s%s%s: give "
                            "--new-head to train a new classifier for the data's %d classes",
                            o->data, from, net->n_classes, *unknown ? "; not in the model: " : "",
                            unknown, *missing ? "; not in the data: " : "", missing, classes);
        int same = 1;
        for (int c = 0; c < classes && same; c++) same = !strcmp(names[c], labels[c]);
        if (same) return 0;
        osp_dataset_free(data);
        *datap = NULL;
        return open_data(o, o->data, o->split, net, labels, net->n_classes, datap);
    }
    if (classes == net->n_classes && !o->new_head) return 0;
    int head;
    if (osp_net_find_head(net, o->cfg.head_layer, &head)) {
        if (o->new_head) return cli_fail_lib(CMD, "--new-head");
        return cli_fail(CMD, "%s has %d classes but %s has %d outputs, and no classifier to size "
                        "for them: %s", o->data, classes, from, net->n_classes, osp_last_error());
    }
    osp_net *resized;
    if (osp_net_resize_head(net, head, classes, o->cfg.seed, &resized)) return cli_fail_lib(CMD, NULL);
    const char *name = osp_graph_node(net->graph, head)->name;
    if (!o->quiet && o->new_head)
        fprintf(stderr, "new classifier '%s': %d output%s for the classes of %s (the model had %d)\n",
                name, classes, classes == 1 ? "" : "s", o->data, net->n_classes);
    else if (!o->quiet)
        fprintf(stderr, "note: the classifier '%s' of %s has %d outputs; sized for the %d classes "
                "of %s\n", name, from, net->n_classes, classes, o->data);
    osp_net_free(net);
    *netp = resized;
    return 0;
}

/* Threads per rank when --threads is not given: the cores shared among the
 * ranks on this machine. */
static int default_threads(void) {
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    int n = local ? atoi(local) : 0;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 1 || cores <= 0) return 0;
    return cores / n > 1 ? (int)(cores / n) : 1;
}

/* --data synthetic:N */
static int open_data(train_options *o, const char *path, osp_split split, osp_net *net,
                     const char *const *names, int n_names, osp_dataset **out) {
    int rc = cli_open_synthetic(CMD, path, split, net, out);
    if (rc >= 0) return rc;
    return cli_open_dataset(CMD, path, split, net, &o->images, names, n_names, out);
}

/* --resume auto: rank 0 looks for the newest valid checkpoint and tells the
 * others (they read the same file: the checkpoint directory is shared). */
static int resolve_auto(train_options *o, osp_dist *dist, char *found, size_t cap) {
    found[0] = '\0';
    if (!o->checkpoint) return cli_fail(CMD, "--resume auto needs --out MODEL or --checkpoint PATH");
    if (osp_dist_rank(dist) == 0) {
        char *path = NULL;
        if (osp_checkpoint_find_latest(o->checkpoint, &path, NULL) == 0) {
            snprintf(found, cap, "%s", path);
            osp_free(path);
        }
    }
    if (osp_dist_bcast(dist, found, cap)) return cli_fail_lib(CMD, NULL);
    if (!found[0] && !o->net && !o->init)
        return cli_fail(CMD, "--resume auto found no checkpoint at %s and no --net or --init to "
                        "start from", o->checkpoint);
    return 0;
}

/* One progress line for the job: rank 0's; the other ranks say only what
 * goes wrong. */
static void quiet_rank(train_options *o) {
    o->quiet = 1;
    o->json = 0;
    osp_log_set_level(OSP_LOG_ERROR);
}

static int train_main(train_options *o, int argc, char **argv, osp_dist *dist);

/* --batch auto: the advisor's batch (and threads, unless --threads was
 * given) for a new run; a resumed run keeps its checkpoint's batch. */
static int choose_batch(train_options *o, const osp_net *net, osp_dataset *data) {
    if (o->resume) {
        if (!o->quiet)
            fprintf(stderr, "--batch auto: keeping the checkpoint's batch %d\n", o->cfg.batch);
        return 0;
    }
    osp_advise_config ac = osp_advise_defaults();
    ac.seconds = o->advise_seconds > 0 ? o->advise_seconds : 3;
    ac.memory_budget = o->memory_budget;
    ac.threads = o->threads;
    ac.optim = o->cfg.optim.kind;
    ac.seed = o->cfg.seed;
    osp_advice *a;
    if (osp_advise(net, data, &ac, &a)) return cli_fail_lib(CMD, "--batch auto");
    o->cfg.batch = a->batch;
    if (!o->threads) osp_threads_set(a->threads);
    if (!o->quiet)
        fprintf(stderr, "--batch auto: batch %d, %d thread%s, after %d measurements: %s\n", a->batch,
                osp_threads_get(), osp_threads_get() == 1 ? "" : "s", a->n_points, a->reason);
    osp_advice_free(a);
    return 0;
}

int cmd_train(int argc, char **argv) {
    train_options o;
    memset(&o, 0, sizeof o);
    o.cfg = osp_train_defaults();
    o.images = cli_image_defaults();
    int rc = parse_options(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    if (!o.data) return cli_fail(CMD, "--data is required (see 'osprey train --help')");
    int auto_resume = o.resume && !strcmp(o.resume, "auto");
    if (o.net && o.init) return cli_fail(CMD, "give --net SPEC or --init MODEL, not both");
    if (!auto_resume && (!!o.net + !!o.resume + !!o.init) != 1)
        return cli_fail(CMD, "give one of --net SPEC (a new network), --init MODEL (fine-tuning) or "
                        "--resume CHECKPOINT");
    if (o.new_head && !o.init)
        return cli_fail(CMD, "--new-head replaces the classifier of a model: it needs --init MODEL");
    if (o.hogwild && o.distributed)
        return cli_fail(CMD, "--hogwild and --distributed do not combine: choose one");
    if ((o.memory_budget || o.advise_seconds > 0) && !o.batch_auto)
        return cli_fail(CMD, "--memory-budget and --advise-seconds go with --batch auto");
    /* The advisor measures one synchronous process: ranks measuring at
     * once would time each other. */
    if (o.batch_auto && (o.hogwild || o.distributed || osp_dist_launched()))
        return cli_fail(CMD, "--batch auto measures one synchronous process: for %s, run 'osprey "
                        "advise' first and give --batch", o.hogwild ? "--hogwild" : "an MPI job");
    if (o.cfg.compress != OSP_COMPRESS_NONE && o.cfg.reduce == OSP_REDUCE_BUTTERFLY)
        return cli_fail(CMD, "--compress sums packed buckets with an all-gather: it does not "
                        "combine with --reduce butterfly");
    if (o.cfg.param_servers && (o.cfg.model_parallel || o.cfg.sync_bn || o.lr_scale_ranks ||
                                o.cfg.lazy_update))
        return cli_fail(CMD, "--param-servers trains asynchronously: --model-parallel, --sync-bn, "
                        "--update lazy and --lr-scale-ranks belong to synchronous data parallelism");
    if (o.cfg.param_servers && (o.hogwild || !osp_dist_launched()))
        return cli_fail(CMD, "--param-servers %d needs an MPI job of at least %d ranks: mpirun -np N "
                        "osprey train ... (and mpirun --enable-recovery to survive a lost worker)",
                        o.cfg.param_servers, o.cfg.param_servers + 1);
    osp_dist *dist = NULL;
    if (o.distributed || (!o.hogwild && osp_dist_launched())) {
        if (osp_dist_new(&dist)) return cli_fail_lib(CMD, "--distributed");
        o.cfg.dist = dist;
        if (osp_dist_rank(dist) != 0) quiet_rank(&o);
    }
    int status = train_main(&o, argc, argv, dist);
    /* The other ranks may be waiting for this one: end the whole job. */
    if (status && osp_dist_size(dist) > 1) osp_dist_abort(dist, status);
    osp_dist_free(dist);
    return status;
}

static int train_main(train_options *o_, int argc, char **argv, osp_dist *dist) {
    train_options o = *o_;
    const int ranks = osp_dist_size(dist), rank = osp_dist_rank(dist);
    char ckpt[4096], found[4096];
    if (!o.checkpoint && o.out) {
        snprintf(ckpt, sizeof ckpt, "%s.ckpt", o.out);
        o.checkpoint = ckpt;
    }
    if (o.resume && !strcmp(o.resume, "auto")) {
        if (resolve_auto(&o, dist, found, sizeof found)) return 1;
        o.resume = found[0] ? found : NULL;
        if (o.resume && rank == 0 && !o.quiet) fprintf(stderr, "resuming from %s\n", o.resume);
    }

    osp_net *net = NULL;
    osp_optim *opt = NULL;
    osp_train_state state = {0};
    osp_dataset *data = NULL, *val = NULL;
    int status = 1, saved_batch = 0;
    if (o.resume) {
        if (osp_checkpoint_load(o.resume, &net, &opt, &state)) return cli_fail_lib(CMD, NULL);
        if (osp_checkpoint_verify(net, opt, &state, o.resume)) {
            cli_fail_lib(CMD, NULL);
            goto fail;
        }
        if (state.config && apply_saved_config(&o, state.config)) goto fail;
        saved_batch = o.cfg.batch; /* global */
        /* Options given on this command line win over the saved ones. */
        o.batch_set = o.lr_set = 0;
        const char *resume = o.resume;
        if (parse_options(argc, argv, &o)) goto fail;
        o.resume = resume;
        if (rank != 0) quiet_rank(&o);
        if (o.batch_set && !o.cfg.param_servers) o.cfg.batch *= ranks;
        if (o.lr_scale_ranks && o.lr_set) o.cfg.lr *= (float)ranks;
        o.cfg.seed = state.seed;
        o.cfg.optim = opt->cfg;
    } else {
        if (o.init) {
            if (load_init(&o, &net)) return 1;
        } else if (osp_net_load_spec(o.net, o.cfg.seed, &net)) {
            return cli_fail_lib(CMD, NULL);
        }
        if (!o.optimizer_set) o.cfg.optim.kind = OSP_OPTIM_SGD;
        osp_optim_config d = osp_optim_defaults(o.cfg.optim.kind);
        d.nesterov = o.cfg.optim.nesterov;
        o.cfg.optim = d;
        if (o.momentum_set) o.cfg.optim.momentum = o.momentum;
        if (o.weight_decay_set) o.cfg.optim.weight_decay = o.weight_decay;
        if (!o.cfg.param_servers) o.cfg.batch *= ranks; /* --batch is per rank */
        if (o.lr_scale_ranks) o.cfg.lr *= (float)ranks;
    }
    if (o.cfg.step_epochs <= 0) o.cfg.step_epochs = o.cfg.epochs / 3.0f > 1 ? o.cfg.epochs / 3.0f : 1;
    if (dist && o.threads == 0) o.threads = default_threads();
    osp_threads_set(o.threads);
    if (o.hogwild) o.cfg.hogwild = osp_threads_get();

    if (!o.checkpoint && o.resume) o.checkpoint = o.resume;
    o.cfg.checkpoint = o.checkpoint;
    o.cfg.on_step = on_step;
    o.cfg.user = &o;

    if (o.val && o.val_split > 0) {
        cli_fail(CMD, "give --val DATA or --val-split F, not both");
        goto fail;
    }
    if (o.cfg.warmup_epochs > o.cfg.epochs) {
        cli_fail(CMD, "--warmup %d is longer than the run (%d epoch%s): the learning rate would "
                 "never reach --lr; give at most --warmup %d, or more --epochs",
                 o.cfg.warmup_epochs, o.cfg.epochs, o.cfg.epochs == 1 ? "" : "s", o.cfg.epochs);
        goto fail;
    }
    /* Where the model and checkpoints go must take them: find out now,
     * not after the training. Rank 0 writes them. */
    if (rank == 0 && ((o.out && cli_check_output(CMD, "--out", o.out)) ||
                      (o.checkpoint && cli_check_output(CMD, "--checkpoint", o.checkpoint))))
        goto fail;
    if (!o.images.augment_set) o.images.transform.augment.crop = o.images.transform.augment.flip = 1;
    /* A resumed model numbers its classes already: the data must agree. */
    if (open_data(&o, o.data, o.split, net, o.resume ? (const char *const *)net->labels : NULL,
                  o.resume && net->labels ? net->n_classes : 0, &data))
        goto fail;
    if (!o.resume && fit_classes(&o, &net, &data)) goto fail;
    if (o.val_split > 0) {
        osp_dataset *all = data;
        data = NULL;
        if (osp_dataset_split(all, o.val_split, &data, &val)) {
            osp_dataset_free(all);
            cli_fail_lib(CMD, NULL);
            goto fail;
        }
    }
    if (o.val && open_data(&o, o.val, OSP_SPLIT_TEST, net, (const char *const *)data->class_names,
                           data->class_names ? data->n_classes : 0, &val))
        goto fail;
    if (name_labels(net, data)) {
        cli_fail_lib(CMD, NULL);
        goto fail;
    }
    /* A run continued with another global batch (another number of ranks
     * with --batch given again) goes on from the same place in the data. */
    if (o.resume && saved_batch && saved_batch != o.cfg.batch) {
        int64_t step = osp_train_convert_step(data->count, saved_batch, o.cfg.batch, state.step);
        if (!o.quiet)
            fprintf(stderr, "global batch %d (was %d): step %lld continues as step %lld\n", o.cfg.batch,
                    saved_batch, (long long)state.step, (long long)step);
        state.step = step;
    }
    if (o.batch_auto && choose_batch(&o, net, data)) goto fail;
    if (!o.quiet) {
        fprintf(stderr, "training %s (%lld parameters) on %lld sample%s of %s: %d epoch%s, batch %d, %s lr %g, %d thread%s",
                o.resume ? o.resume : o.init ? o.init : o.net, (long long)osp_net_param_count(net), (long long)data->count,
                data->count == 1 ? "" : "s", o.data, o.cfg.epochs, o.cfg.epochs == 1 ? "" : "s",
                o.cfg.batch, osp_optim_name(o.cfg.optim.kind), o.cfg.lr, osp_threads_get(),
                osp_threads_get() == 1 ? "" : "s");
        if (dist && o.cfg.param_servers)
            fprintf(stderr, " (batch per update), %d parameter server%s and %d workers", o.cfg.param_servers,
                    o.cfg.param_servers == 1 ? "" : "s", ranks - o.cfg.param_servers);
        else if (dist) fprintf(stderr, " per rank, %d ranks (%d per rank)", ranks, o.cfg.batch / ranks);
        if (o.hogwild) fprintf(stderr, " (Hogwild workers)");
        if (data->multi_label)
            fprintf(stderr, "; multi-label data: %d labels, sigmoid + binary cross-entropy", data->n_classes);
        fprintf(stderr, "%s\n", o.resume ? " (resumed)" : "");
    }
    if (!o.quiet && (o.cfg.freeze_until || o.cfg.lr_backbone > 0)) {
        fprintf(stderr, "fine-tuning:");
        if (o.cfg.freeze_until) fprintf(stderr, " layers up to '%s' frozen", o.cfg.freeze_until);
        if (o.cfg.lr_backbone > 0)
            fprintf(stderr, "%s backbone lr %g, %s%s%s lr %g", o.cfg.freeze_until ? ";" : "",
                    o.cfg.lr_backbone, o.cfg.head_layer ? "head '" : "classifier",
                    o.cfg.head_layer ? o.cfg.head_layer : "", o.cfg.head_layer ? "'" : "", o.cfg.lr);
        fputc('\n', stderr);
    }
    if (!o.quiet && val && o.val_split > 0)
        fprintf(stderr, "holding out %lld samples for validation\n", (long long)val->count);
    if (osp_train(net, data, val, &o.cfg, opt, state.step)) {
        if (cli_tty() && !o.quiet) fputc('\n', stderr);
        cli_fail_lib(CMD, ranks > 1 ? (rank ? "rank" : "rank 0") : NULL);
        goto fail;
    }
    const int64_t skipped = osp_dataset_skipped(data) + (val ? osp_dataset_skipped(val) : 0);
    if (!o.quiet && skipped > 0)
        fprintf(stderr, "%lld unreadable file%s skipped\n", (long long)skipped,
                skipped == 1 ? " was" : "s were");
    int64_t total_steps = (data->count + o.cfg.batch - 1) / o.cfg.batch * o.cfg.epochs;
    if (o.cfg.stop_after > 0 && o.cfg.stop_after < total_steps) {
        /* An unfinished run leaves its checkpoint, not a model that looks done. */
        if (!o.quiet)
            fprintf(stderr, "stopped after step %lld of %lld; continue with --resume %s\n",
                    (long long)o.cfg.stop_after, (long long)total_steps,
                    o.checkpoint ? o.checkpoint : "(no checkpoint: give --out or --checkpoint)");
    } else if (o.out && rank == 0) {
        if (osp_model_save(net, o.out)) {
            cli_fail_lib(CMD, "saving the model");
            goto fail;
        }
        if (!o.quiet) fprintf(stderr, "saved model to %s\n", o.out);
    } else if (!o.quiet && !o.out) {
        fprintf(stderr, "note: no --out given, so the trained model was not saved\n");
    }
    status = 0;
fail:
    osp_dataset_free(data);
    osp_dataset_free(val);
    osp_net_free(net);
    osp_optim_free(opt);
    osp_free(state.config);
    return status;
}
