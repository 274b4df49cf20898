/* Core: the estimate of cores other processes keep busy, and the threads
 * an inference step takes beside them. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/busy_cores.h"
#include "osprey/core.h"

Test(busy_cores, arithmetic) {
    osp__cpu_sample a = {.wall = 10.0, .busy = 100.0, .own = 5.0, .valid = 1};
    osp__cpu_sample b = {.wall = 10.5, .busy = 101.2, .own = 5.7, .valid = 1};
    /* 1.2 s busy in 0.5 s, 0.7 of it ours: one core's worth of others */
    cr_assert_float_eq(osp__busy_cores_between(&a, &b), 1.0, 1e-9);
    b.own = 6.5; /* more of our own time than all the busy time: nobody else */
    cr_assert_float_eq(osp__busy_cores_between(&a, &b), 0.0, 0);
    b.valid = 0;
    cr_assert_float_eq(osp__busy_cores_between(&a, &b), 0.0, 0);
    b = a; /* no time between the samples */
    cr_assert_float_eq(osp__busy_cores_between(&a, &b), 0.0, 0);

    cr_assert_eq(osp__threads_beside(2, 2, 0.0), 2);
    cr_assert_eq(osp__threads_beside(2, 2, 0.4), 2);
    cr_assert_eq(osp__threads_beside(2, 2, 0.6), 1);
    cr_assert_eq(osp__threads_beside(2, 2, 5.0), 1);
    cr_assert_eq(osp__threads_beside(8, 16, 3.0), 8);
    cr_assert_eq(osp__threads_beside(8, 16, 10.0), 6);
    cr_assert_eq(osp__threads_beside(1, 2, 0.0), 1);
    cr_assert_eq(osp__threads_beside(0, 2, 0.0), 1);
}

static volatile int spinning;

static void *spin(void *arg) {
    (void)arg;
    while (spinning) {
    }
    return NULL;
}

/* Others' cores over `seconds` while either a thread of ours or a child
 * process spins. */
static double busy_while_spinning(int in_child, double seconds) {
    pthread_t th;
    pid_t child = -1;
    spinning = 1;
    if (in_child) {
        child = fork();
        cr_assert_geq(child, 0);
        if (child == 0) {
            for (;;) {
            }
        }
    } else {
        cr_assert_eq(pthread_create(&th, NULL, spin, NULL), 0);
    }
    usleep(50000); /* let it start */
    osp__cpu_sample a = osp__cpu_sample_now();
    usleep((useconds_t)(seconds * 1e6));
    osp__cpu_sample b = osp__cpu_sample_now();
    spinning = 0;
    if (in_child) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    } else {
        pthread_join(th, NULL);
    }
    cr_assert(a.valid && b.valid, "no CPU figures from /proc/stat");
    return osp__busy_cores_between(&a, &b);
}

/* A spinning thread of our own is not someone else's load; a spinning
 * process is (a core's worth, less what the machine's other work makes of
 * the difference). */
Test(busy_cores, counts_other_processes_not_ours) {
#ifndef __linux__
    cr_skip_test("CPU figures are read on Linux only");
#endif
    const double ours = busy_while_spinning(0, 0.5);
    const double child = busy_while_spinning(1, 0.5);
    cr_assert_gt(child - ours, 0.5, "a spinning child counted %.2f cores, our own thread %.2f",
                 child, ours);
}
