/* Helpers shared by the subcommands: option values, errors, progress. */
#ifndef OSPREY_TOOLS_CLI_H
#define OSPREY_TOOLS_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "osprey/osprey.h"

/* Prints "osprey CMD: message" to stderr and returns 1 (a user error). */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same with the library's last error appended. */
int cli_fail_lib(const char *cmd, const char *what);

/* 1 (after printing why) unless a file can be written at path as the
 * library writes files (a temporary beside it, renamed into place): path
 * is not a folder, and its folder exists and takes new files. opt names
 * the option in the message ("--out"). */
int cli_check_output(const char *cmd, const char *opt, const char *path);

/* Option values; on a bad value print why and return 1. */
int cli_int(const char *cmd, const char *opt, const char *s, long min, long max, int *out);
int cli_int64(const char *cmd, const char *opt, const char *s, int64_t min, int64_t max, int64_t *out);
/* A size in bytes: a number with an optional K, M, G or T (powers of 1024,
 * "4G", "1.5G", "512MiB"); at least one byte. */
int cli_bytes(const char *cmd, const char *opt, const char *s, int64_t *out);
int cli_u64(const char *cmd, const char *opt, const char *s, uint64_t *out);
int cli_float(const char *cmd, const char *opt, const char *s, double min, double max, float *out);

/* "s" unless n is 1: "%lld file%s". */
static inline const char *cli_s(int64_t n) { return n == 1 ? "" : "s"; }

/* 1 if stderr is a terminal (progress lines are drawn only there). */
int cli_tty(void);
/* "1:02:03" or "2:03". */
void cli_format_duration(double seconds, char *buf, size_t len);

/* Options that choose how image datasets are read, shared by the commands
 * that read them (see cli_image_option). */
typedef struct cli_image_options {
    osp_transform transform; /* shape 0x0x0 until the network gives it */
    int64_t max_pixels;
    int workers;             /* -1 = the dataset's default */
    int prefetch;            /* 0 = the default (2) */
    int augment_set;         /* --augment was given */
} cli_image_options;

/* Defaults: center resize, crop fraction 0.875, no augmentation. */
cli_image_options cli_image_defaults(void);
/* Parses one image option (name without "--"); returns 0 when done, 1 after
 * printing an error, -1 if name is not an image option. */
int cli_image_option(const char *cmd, const char *name, const char *value, cli_image_options *o);

/* Opens a dataset: a directory with the MNIST IDX files, an IDX images
 * file, a folder of class folders or a list file (osp_dataset_open). Image
 * samples take the network's input shape; labels number as class_names
 * does (n_classes of them; NULL = the dataset's own sorted names). split
 * chooses IDX train or test files. */
int cli_open_dataset(const char *cmd, const char *path, osp_split split, const osp_net *net,
                     const cli_image_options *io, const char *const *class_names, int n_classes,
                     osp_dataset **out);

/* DATA "synthetic:N": N generated samples shaped for net
 * (osp_dataset_synthetic); the test split is other samples of the same
 * classes. -1 if path is not synthetic:N, else 0, or 1 after printing why. */
int cli_open_synthetic(const char *cmd, const char *path, osp_split split, const osp_net *net,
                       osp_dataset **out);

/* ---- the task platform (docs/platform.md) ---------------------------------- */

/* The broker options every platform command takes, for getopt_long:
 * --broker URL (default $OSPREY_BROKER, else redis://127.0.0.1:6379) and
 * --broker-password-file FILE. */
#define CLI_BROKER_OPTIONS \
    {"broker", required_argument, 0, 0x100}, {"broker-password-file", required_argument, 0, 0x101}
#define CLI_OPT_BROKER 0x100
#define CLI_OPT_BROKER_PASSWORD 0x101
#define CLI_BROKER_HELP \
    "  --broker URL          the Redis server: redis://[:PASSWORD@]HOST[:PORT][/DB]\n" \
    "                        (default $OSPREY_BROKER, else redis://127.0.0.1:6379)\n" \
    "  --broker-password-file FILE  the password, kept off the command line\n"

/* The options that place a task (osp_task_spec), taken by submit and
 * sweep, for getopt_long, and cli_task_option to read them. */
#define CLI_TASK_OPTIONS                                                                      \
    {"priority", required_argument, 0, 0x110}, {"cores", required_argument, 0, 0x111},       \
        {"gpus", required_argument, 0, 0x112}, {"tags", required_argument, 0, 0x113},        \
        {"after", required_argument, 0, 0x114}, {"notify", required_argument, 0, 0x115},     \
        {"max-tries", required_argument, 0, 0x116}

/* Option c of CLI_TASK_OPTIONS, with its argument, into spec: 0 when it was
 * one (1 after printing why its argument is wrong); -1 for any other c. */
int cli_task_option(const char *cmd, int c, const char *arg, osp_task_spec *spec);

/* Connects to the broker; 1 after printing why it cannot. */
int cli_broker(const char *cmd, const char *url, const char *password_file, osp_broker **out);

/* 1 (after printing why) unless argv (an osprey subcommand and its
 * arguments) may be a task: osp_task_check_argv, and every --option it
 * gives is one that the subcommand's --help lists. */
int cli_check_task(const char *cmd, int argc, const char *const *argv);

#endif
