/* The process-wide stop request of the HTTP servers: a flag a signal
 * handler may set. */
#include <signal.h>

#include "osprey/serve.h"

static volatile sig_atomic_t stop_requested;

void osp_serve_stop(void) { stop_requested = 1; }

int osp_serve_stopping(void) { return stop_requested != 0; }
