/* osprey: one command for the life of an image model. Dispatches to the
 * subcommand files; each owns its options and its --help. */
#define _GNU_SOURCE /* sched_setaffinity */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

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
    fprintf(out, "usage: osprey COMMAND [OPTIONS]\n       osprey --version | --help\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'osprey COMMAND --help' (or -h) explains a command; 'osprey --version'\n"
                 "prints the version.\n");
}

/* Settings that the OpenMP and BLAS libraries read only when they load, so
 * the command sets them and starts itself again, once; what the user set is
 * left alone.
 * - OpenMP threads that spin at barriers while a peer thread is descheduled
 *   make a step many times slower on a machine shared with other work
 *   (measured: LeNet training on 2 threads, 810 images/s passive against
 *   129 spinning, under load): OMP_WAIT_POLICY=passive for training and
 *   everything else. Inference (run, eval, bench without --train) spins a
 *   bounded while instead (GOMP_SPINCOUNT): a batch of one image is dozens
 *   of parallel loops of tens of microseconds, and waking a sleeping thread
 *   costs about as much on a virtual machine (mobilenet_v2 at batch 1 on 2
 *   Zen 4 threads: 95 images/s passive, 149 spinning). Its steps take only
 *   the cores other processes leave idle (osp_threads_for_inference), so
 *   the spinning never competes with them.
 * - OpenBLAS 0.3.21 takes some AVX-512 CPUs for Haswell and runs its AVX2
 *   kernels at half the speed its AVX-512 ones reach there (120 against 220
 *   GFLOP/s per core): on a CPU with AVX-512, OPENBLAS_CORETYPE=SkylakeX. */
static int runs_inference(int argc, char **argv) {
    if (argc < 2) return 0;
    if (!strcmp(argv[1], "run") || !strcmp(argv[1], "eval")) return 1;
    if (strcmp(argv[1], "bench")) return 0;
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--train")) return 0;
    return 1;
}

/* Spins of a waiting OpenMP thread before it sleeps, for inference: about
 * 0.2 ms on Zen 4 (measured at batch 1, 2 threads, mobilenet_v2: 300
 * spins 1.0x passive, 3000 1.3x, 10000 1.4x). */
#define INFERENCE_SPINCOUNT "10000"

/* With OMP_PROC_BIND set, OpenMP binds the starting thread to its first
 * place as it loads, and the command started again keeps that narrower
 * set of processors: it then saw one core and ran one thread. So before
 * starting again, the process may run on every place's processors. */
static void unbind_before_exec(void) {
#if defined(_OPENMP) && defined(__linux__)
    if (omp_get_proc_bind() == omp_proc_bind_false) return;
    const int places = omp_get_num_places();
    cpu_set_t all;
    CPU_ZERO(&all);
    for (int p = 0; p < places; p++) {
        int n = omp_get_place_num_procs(p), ids[CPU_SETSIZE];
        if (n <= 0 || n > CPU_SETSIZE) continue;
        omp_get_place_proc_ids(p, ids);
        for (int i = 0; i < n; i++)
            if (ids[i] >= 0 && ids[i] < CPU_SETSIZE) CPU_SET(ids[i], &all);
    }
    if (CPU_COUNT(&all) > 0) sched_setaffinity(0, sizeof all, &all);
#endif
}

/* Under mpirun, Open MPI binds each rank to one core by default (for up to
 * two ranks), so a lone tag or embed rank ran its decoding workers and its
 * inference threads on one core of two. A tag or embed rank allowed fewer
 * CPUs than its share of the machine (the online CPUs over the ranks on
 * this node) may run on all of them; ranks that fill the machine keep
 * their binding. OpenMP counts the CPUs as it loads, hence before the
 * start again. Returns 1 if it widened the set. */
static int widen_mpi_binding(int argc, char **argv) {
#if defined(__linux__)
    if (argc < 2 || (strcmp(argv[1], "tag") && strcmp(argv[1], "embed"))) return 0;
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    if (!local) local = getenv("MPI_LOCALNRANKS"); /* MPICH's */
    const long ranks = local ? strtol(local, NULL, 10) : 0;
    const long online = sysconf(_SC_NPROCESSORS_ONLN), configured = sysconf(_SC_NPROCESSORS_CONF);
    cpu_set_t mine, all;
    if (ranks < 1 || online < 1 || sched_getaffinity(0, sizeof mine, &mine)) return 0;
    if (CPU_COUNT(&mine) >= online / ranks) return 0;
    CPU_ZERO(&all);
    for (long c = 0; c < configured && c < CPU_SETSIZE; c++) CPU_SET(c, &all);
    return sched_setaffinity(0, sizeof all, &all) == 0;
#else
    (void)argc;
    (void)argv;
    return 0;
#endif
}

static void set_library_environment(int argc, char **argv) {
    int changed = widen_mpi_binding(argc, argv);
    if (!getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT")) {
        if (runs_inference(argc, argv)) {
            if (setenv("GOMP_SPINCOUNT", INFERENCE_SPINCOUNT, 1) == 0) changed = 1;
        } else if (setenv("OMP_WAIT_POLICY", "passive", 1) == 0) {
            changed = 1;
        }
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!getenv("OPENBLAS_CORETYPE") && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && setenv("OPENBLAS_CORETYPE", "SkylakeX", 1) == 0)
        changed = 1;
#endif
    if (changed) {
        unbind_before_exec();
        execv("/proc/self/exe", argv); /* returns only on failure: go on as we are */
    }
}

int main(int argc, char **argv) {
    set_library_environment(argc, argv);
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
