/* osprey: one command for the life of an image model. Dispatches to the
 * subcommand files; each owns its options and its --help. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "osprey/osprey.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
#define OSP_X_ENTRY(name, summary) {#name, cmd_##name, summary},
    OSP_COMMAND_LIST(OSP_X_ENTRY)
#undef OSP_X_ENTRY
};

static void usage(FILE *out) {
    fprintf(out, "usage: osprey COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'osprey COMMAND --help' explains a command.\n");
}

/* OpenMP threads that spin at barriers while a peer thread is descheduled
 * make a step many times slower on a machine shared with other work
 * (measured: LeNet training on 2 threads, 810 images/s passive against 129
 * spinning, under load). libgomp reads its wait policy only when it loads,
 * so the command sets it and starts itself again, once; a policy the user
 * set is left alone. */
static void prefer_passive_threads(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv); /* returns only on failure: then go on as we are */
}

int main(int argc, char **argv) {
    prefer_passive_threads(argv);
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("osprey %s\n", OSP_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "osprey: unknown command '%s' (see 'osprey --help')\n", argv[1]);
    return 1;
}
