/* The platform's connection to Redis and the pieces the queue and the
 * worker share: the keys of docs/platform.md, the Lua scripts that change
 * a task's state atomically, task records, notification. */
#ifndef OSPREY_PLATFORM_BROKER_H
#define OSPREY_PLATFORM_BROKER_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#include "osprey/platform.h"

struct osp_broker {
    redisContext *c;
    char where[300]; /* "HOST:PORT", for messages */
};

#define OSP__GROUP "workers" /* the one consumer group of every queue stream */

/* Runs one command (words and their lengths; lens NULL: C strings). The
 * reply, or NULL with the error set (a Redis error reply included, which
 * is freed). Free the reply with freeReplyObject. */
redisReply *osp__broker_call(osp_broker *b, int argc, const char *const *argv, const size_t *lens);
/* The same with printf-style words (hiredis's format: %s, %b, %d). */
redisReply *osp__broker_cmd(osp_broker *b, const char *fmt, ...);

/* Creates the consumer group of every priority's stream (an existing one is
 * kept). */
int osp__broker_ensure_groups(osp_broker *b);

/* The Lua scripts (scripts.c); each runs atomically in Redis. Their
 * arguments are given where they are called. */
extern const char osp__script_submit[];
extern const char osp__script_start[];
extern const char osp__script_finish[];
extern const char osp__script_keep[];
extern const char osp__script_cancel[];
extern const char osp__script_requeue[];
extern const char osp__script_aside[];

/* Runs a script with ARGV args (no KEYS): the reply or NULL as
 * osp__broker_call. */
redisReply *osp__broker_eval(osp_broker *b, const char *script, int argc, const char *const *argv);

/* The time now as a string of seconds with milliseconds ("1733600000.123"). */
void osp__now_string(char buf[32]);

/* Posts the record of each task in ids (an array reply of task ids, from
 * item `from` on) to its --notify URL, if it has one. Failures are logged,
 * never returned: a lost notification does not undo a task. */
void osp__notify_tasks(osp_broker *b, const redisReply *ids, size_t from);
/* One HTTP POST of a JSON body (libcurl), at most timeout_s. */
int osp__http_post_json(const char *url, const char *body, long timeout_s);

#endif
