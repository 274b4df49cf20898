/* The pieces of busy_cores.c that its tests reach: samples of the CPUs'
 * busy time and the arithmetic on them. */
#ifndef OSPREY_CORE_BUSY_CORES_H
#define OSPREY_CORE_BUSY_CORES_H

typedef struct osp__cpu_sample {
    double wall; /* osp_now() */
    double busy; /* seconds the CPUs this process may use spent busy, since boot */
    double own;  /* seconds of CPU this process used */
    int valid;   /* 0: the system gave no figures */
} osp__cpu_sample;

osp__cpu_sample osp__cpu_sample_now(void);
/* Cores that other processes kept busy, on average, from a to b (>= 0). */
double osp__busy_cores_between(const osp__cpu_sample *a, const osp__cpu_sample *b);
/* Of want threads, those that fit on cores beside `busy` busy ones (>= 1). */
int osp__threads_beside(int want, int cores, double busy);

#endif
