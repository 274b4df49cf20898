#include <stdio.h>

#include "commands.h"

int cmd_info(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "osprey info: not built yet\n");
    return 2;
}
