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

/* Option values; on a bad value print why and return 1. */
int cli_int(const char *cmd, const char *opt, const char *s, long min, long max, int *out);
int cli_int64(const char *cmd, const char *opt, const char *s, int64_t min, int64_t max, int64_t *out);
int cli_u64(const char *cmd, const char *opt, const char *s, uint64_t *out);
int cli_float(const char *cmd, const char *opt, const char *s, double min, double max, float *out);

/* 1 if stderr is a terminal (progress lines are drawn only there). */
int cli_tty(void);
/* "1:02:03" or "2:03". */
void cli_format_duration(double seconds, char *buf, size_t len);

/* Opens a dataset: a directory with the four MNIST IDX files, or an IDX
 * images file. split chooses train or test files. */
int cli_open_dataset(const char *cmd, const char *path, osp_split split, osp_dataset **out);

#endif
