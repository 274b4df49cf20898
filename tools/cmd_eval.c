#include <stdio.h>

#include "commands.h"

int cmd_eval(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "osprey eval: not built yet\n");
    return 2;
}
