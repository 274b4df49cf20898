/* Thread-local error messages and the code table. */
#include <stdio.h>
#include <string.h>

#include "osprey/core.h"

#define MESSAGE_LEN 512

static _Thread_local char last_message[MESSAGE_LEN];

const char *osp_last_error(void) { return last_message; }

void osp_error_clear(void) { last_message[0] = '\0'; }

const char *osp_strerror(int code) {
    switch (code) {
#define OSP_X_MSG(name, value, msg) \
    case value: return msg;
        OSP_ERROR_TABLE(OSP_X_MSG)
#undef OSP_X_MSG
    default: return "unknown error";
    }
}

const char *osp_err_name(int code) {
    switch (code) {
#define OSP_X_NAME(name, value, msg) \
    case value: return "OSP_" #name;
        OSP_ERROR_TABLE(OSP_X_NAME)
#undef OSP_X_NAME
    default: return "OSP_UNKNOWN";
    }
}

int osp_error(int code, const char *fmt, ...) {
    /* Format aside first: callers may pass osp_last_error() itself as an
     * argument, to wrap the previous message ("saving: %s"). */
    char message[MESSAGE_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    memcpy(last_message, message, sizeof message);
    return code;
}
