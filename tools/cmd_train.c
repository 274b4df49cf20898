#include <stdio.h>

#include "commands.h"

int cmd_train(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "osprey train: not built yet\n");
    return 2;
}
