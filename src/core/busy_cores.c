/* The cores other processes keep busy, and the threads an inference step
 * should take because of them.
 *
 * Why: threads that spin while they wait for work (what the osprey command
 * asks of OpenMP for inference: a batch of one image is dozens of short
 * parallel loops, and on a virtual machine waking a sleeping thread costs
 * tens of microseconds each) are fast on idle cores but many times slower
 * when another process wants the same cores, since a spinning thread holds
 * a core that the thread it waits for needs. So an inference step takes
 * only the cores that others left idle over the last quarter of a second.
 *
 * The estimate: busy time of the CPUs this process may run on (user, nice,
 * system, irq and softirq ticks of /proc/stat, not steal), less this
 * process's own CPU time, over the wall time between two samples. Linux
 * only; elsewhere nobody else is taken to be busy. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "busy_cores.h"
#include "osprey/core.h"

/* Seconds between samples: /proc/stat counts in ticks of 10 ms, so a
 * shorter window would be mostly rounding. */
#define SAMPLE_SECONDS 0.25

double osp__busy_cores_between(const osp__cpu_sample *a, const osp__cpu_sample *b) {
    const double wall = b->wall - a->wall;
    if (!a->valid || !b->valid || wall <= 0) return 0;
    const double others = ((b->busy - a->busy) - (b->own - a->own)) / wall;
    return others > 0 ? others : 0;
}

int osp__threads_beside(int want, int cores, double busy) {
    if (want <= 1) return want < 1 ? 1 : want;
    const int idle = cores - (int)(busy + 0.5); /* a core counts busy from half its time */
    return idle < 1 ? 1 : idle < want ? idle : want;
}

osp__cpu_sample osp__cpu_sample_now(void) {
    osp__cpu_sample s = {0};
    s.wall = osp_now();
#ifdef __linux__
    struct timespec own;
    cpu_set_t mine;
    const long hz = sysconf(_SC_CLK_TCK);
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &own) || hz <= 0 ||
        sched_getaffinity(0, sizeof mine, &mine))
        return s;
    s.own = (double)own.tv_sec + (double)own.tv_nsec * 1e-9;
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return s;
    char line[512];
    unsigned long long ticks = 0;
    int cpus = 0;
    while (fgets(line, sizeof line, f)) {
        int cpu;
        unsigned long long user, nice, sys, idle, iowait, irq, softirq;
        if (strncmp(line, "cpu", 3) || line[3] < '0' || line[3] > '9') continue;
        if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu", &cpu, &user, &nice, &sys,
                   &idle, &iowait, &irq, &softirq) != 8 ||
            cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &mine))
            continue;
        ticks += user + nice + sys + irq + softirq;
        cpus++;
    }
    fclose(f);
    s.busy = (double)ticks / (double)hz;
    s.valid = cpus > 0;
#endif
    return s;
}

int osp_threads_for_inference(void) {
#ifdef _OPENMP
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static osp__cpu_sample last;
    static _Atomic double busy; /* read without the lock by those who do not sample */
    const int want = omp_get_max_threads();
    if (want <= 1) return 1;
    /* Whoever holds the lock is taking a sample: the others use the last. */
    if (pthread_mutex_trylock(&lock) == 0) {
        if (!last.valid || osp_now() - last.wall >= SAMPLE_SECONDS) {
            osp__cpu_sample now = osp__cpu_sample_now();
            if (last.valid) busy = osp__busy_cores_between(&last, &now);
            last = now;
        }
        pthread_mutex_unlock(&lock);
    }
    return osp__threads_beside(want, omp_get_num_procs(), busy);
#else
    return 1;
#endif
}
