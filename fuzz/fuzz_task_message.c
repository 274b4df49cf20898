/* Fuzz target: what a worker reads from the broker, all untrusted: a queue
 * message (fields split at NUL bytes) and a task's argv as stored in its
 * hash (the same bytes as JSON). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "osprey/platform.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *fields[8];
    size_t lens[8];
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= size && n < 8; i++)
        if (i == size || data[i] == 0) {
            fields[n] = (const char *)data + start;
            lens[n++] = i - start;
            start = i + 1;
        }
    char id[OSP_TASK_ID_MAX];
    if (osp_task_message_decode(fields, lens, n, id) == OSP_OK) {
        const size_t l = strlen(id);
        if (!osp_task_id_valid(id, l)) __builtin_trap();
    }
    int argc;
    char **argv;
    if (osp_task_argv_decode((const char *)data, size, &argc, &argv) == OSP_OK) {
        if (argc < 1 || argv[argc] || osp_task_check_argv(argc, (const char *const *)argv)) __builtin_trap();
        free(argv);
    }
    char *copy = malloc(size + 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    copy[size] = 0;
    osp_broker_url u;
    osp_broker_url_parse(copy, &u);
    osp_sweep_grid *g;
    if (osp_sweep_grid_parse(copy, &g) == OSP_OK) {
        const int64_t points = osp_sweep_grid_size(g);
        if (points < 1 || points > 10000) __builtin_trap();
        osp_sweep_point p;
        osp_sweep_grid_point(g, points - 1, &p);
        osp_sweep_grid_free(g);
    }
    free(copy);
    return 0;
}
