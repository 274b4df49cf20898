/* One writer at a time in an output folder: an exclusive flock on the
 * folder itself, held by a run or a merge for as long as it works there.
 * The kernel drops the lock when its holder dies, however it dies, so a
 * lock is never left behind; but the processes of a killed job (the ranks
 * of an mpirun, each in a process group of its own) can take a moment to
 * go, and a rerun started in that moment would meet their locks. So a
 * writer that finds the folder locked waits, saying so, for up to a
 * timeout before it gives up. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "lock.h"

/* Between tries: short against a process's exit, long against a busy loop. */
#define POLL_S 0.05

int osp__folder_lock(const char *dir, double timeout_s, int *fd_out) {
    *fd_out = -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return osp_error(OSP_EIO, "%s: %s", dir, strerror(errno));
    const double until = osp_now() + (timeout_s > 0 ? timeout_s : 0);
    int said = 0;
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) break;
        if (errno == EINTR) continue;
        if (errno != EWOULDBLOCK) {
            int e = errno;
            close(fd);
            return osp_error(OSP_EIO, "%s: cannot lock it: %s", dir, strerror(e));
        }
        if (osp_now() >= until) {
            close(fd);
            if (timeout_s > 0)
                return osp_error(OSP_ESTATE, "%s: another run or merge into it is still running after %g s",
                                 dir, timeout_s);
            return osp_error(OSP_ESTATE, "%s: another run or merge into it is running", dir);
        }
        if (!said++)
            osp_log(OSP_LOG_WARN, "%s: another run or merge into it is running; waiting up to %g s for it to end",
                    dir, timeout_s);
        struct timespec pause = {0, (long)(POLL_S * 1e9)};
        nanosleep(&pause, NULL);
    }
    *fd_out = fd;
    return OSP_OK;
}

void osp__folder_unlock(int fd) {
    if (fd >= 0) close(fd); /* closing the last descriptor releases the lock */
}
