/* The Lua scripts that change a task's state. Redis runs each one alone,
 * so a state and what goes with it (the queue entry, the dependants, the
 * history line, the event) change together or not at all: this is what
 * gives each task exactly one result (docs/platform.md). ARGV[1] is always
 * the time now; the keys are those of docs/platform.md. */
#include "broker.h"

/* Shared by every script: the time, events, the queueing of a task, and
 * the end of a task (which queues or cancels the tasks waiting on it).
 * `ended` collects the tasks that ended, for their notifications. */
#define PRELUDE                                                                                         \
    "local now = ARGV[1]\n"                                                                             \
    "local function key(id) return 'osprey:task:' .. id end\n"                                          \
    "local function publish(id, state)\n"                                                               \
    "  redis.call('PUBLISH', 'osprey:events', cjson.encode({task = id, state = state, time = tonumber(now)}))\n" \
    "end\n"                                                                                             \
    "local function final(s) return s == 'done' or s == 'failed' or s == 'cancelled' or s == 'dead' end\n" \
    "local function queue(id, prio)\n"                                                                  \
    "  redis.call('HSET', key(id), 'state', 'queued', 'queued_at', now)\n"                              \
    "  redis.call('XADD', 'osprey:queue:' .. prio, '*', 'task', id, 'v', '1')\n"                        \
    "  publish(id, 'queued')\n"                                                                         \
    "end\n"                                                                                             \
    "local ended = {}\n"                                                                                \
    "local function finish(id, state, reason)\n"                                                        \
    "  local k = key(id)\n"                                                                             \
    "  redis.call('HSET', k, 'state', state, 'ended', now)\n"                                           \
    "  if reason then redis.call('HSET', k, 'reason', reason) end\n"                                    \
    "  redis.call('XADD', 'osprey:history', 'MAXLEN', '~', '100000', '*', 'task', id, 'state', state)\n" \
    "  publish(id, state)\n"                                                                            \
    "  ended[#ended + 1] = id\n"                                                                        \
    "  local w = 'osprey:waiters:' .. id\n"                                                             \
    "  local waiters = redis.call('SMEMBERS', w)\n"                                                     \
    "  redis.call('DEL', w)\n"                                                                          \
    "  for _, t in ipairs(waiters) do\n"                                                                \
    "    if redis.call('HGET', key(t), 'state') == 'waiting' then\n"                                    \
    "      if state == 'done' then queue(t, redis.call('HGET', key(t), 'priority'))\n"                  \
    "      else finish(t, 'cancelled', 'task ' .. id .. ' that it waited for ended ' .. state) end\n"   \
    "    end\n"                                                                                         \
    "  end\n"                                                                                           \
    "end\n"

/* ARGV: now, id, priority, after ('' none), then the record's field/value
 * pairs. Returns the tasks that ended (a task whose dependency already
 * failed is cancelled at once). */
const char osp__script_submit[] = PRELUDE
    "local id, prio, after = ARGV[2], ARGV[3], ARGV[4]\n"
    "local dep\n"
    "if after ~= '' then\n"
    "  dep = redis.call('HGET', key(after), 'state')\n"
    "  if not dep then return redis.error_reply('ENOENT no task ' .. after) end\n"
    "end\n"
    "local f = {}\n"
    "for i = 5, #ARGV do f[#f + 1] = ARGV[i] end\n"
    "redis.call('HSET', key(id), 'id', id, 'created', now, 'tries', '0', unpack(f))\n"
    "redis.call('ZADD', 'osprey:tasks', id, id)\n"
    "if not dep or dep == 'done' then queue(id, prio)\n"
    "elseif final(dep) then finish(id, 'cancelled', 'task ' .. after .. ' that it waits for ended ' .. dep)\n"
    "else\n"
    "  redis.call('SADD', 'osprey:waiters:' .. after, id)\n"
    "  redis.call('HSET', key(id), 'state', 'waiting')\n"
    "  publish(id, 'waiting')\n"
    "end\n"
    "return ended\n";

/* ARGV: now, id, worker, stream, entry: a worker took the entry. Returns
 * {'run', attempt}; {'skip'} (the task ended or was never to run: the
 * entry is dropped); {'missing'} (no such task: a foreign message); or
 * {'ended', ids...} (a cancel that its lost worker never saw, or a task
 * whose tries are spent: it goes to the dead letters). */
const char osp__script_start[] = PRELUDE
    "local id, worker, stream, entry = ARGV[2], ARGV[3], ARGV[4], ARGV[5]\n"
    "local k = key(id)\n"
    "local st = redis.call('HGET', k, 'state')\n"
    "local function drop() redis.call('XACK', stream, 'workers', entry); redis.call('XDEL', stream, entry) end\n"
    "if not st then return {'missing'} end\n"
    "if st == 'cancelling' then\n"
    "  drop(); finish(id, 'cancelled', 'cancelled'); return {'ended', unpack(ended)}\n"
    "end\n"
    "if st ~= 'queued' and st ~= 'running' then drop(); return {'skip'} end\n"
    "local tries = redis.call('HINCRBY', k, 'tries', 1)\n"
    "local max = tonumber(redis.call('HGET', k, 'max_tries')) or 3\n"
    "if tries > max then\n"
    "  drop()\n"
    "  redis.call('HSET', k, 'tries', tostring(tries - 1))\n"
    "  redis.call('XADD', 'osprey:dead', 'MAXLEN', '~', '10000', '*', 'task', id, 'tries', tostring(tries - 1))\n"
    "  finish(id, 'dead', 'its worker was lost on each of its ' .. (tries - 1) .. ' tries')\n"
    "  return {'ended', unpack(ended)}\n"
    "end\n"
    "redis.call('HSET', k, 'state', 'running', 'worker', worker, 'attempt', tostring(tries), 'started', now,\n"
    "           'heartbeat', now, 'stream', stream, 'entry', entry)\n"
    "redis.call('HDEL', k, 'progress')\n"
    "publish(id, 'running')\n"
    "return {'run', tostring(tries)}\n";

/* ARGV: now, id, attempt, worker, state (done or failed), exit code,
 * summary, files, dir, reason. Only the worker running the task's current
 * attempt may end it: any other gets {'stale'} and changes nothing. Else
 * {'ended', ids...}; the entry is acknowledged with the result, in the
 * same step. */
const char osp__script_finish[] = PRELUDE
    "local id, attempt, worker, state = ARGV[2], ARGV[3], ARGV[4], ARGV[5]\n"
    "local k = key(id)\n"
    "local cur = redis.call('HMGET', k, 'state', 'attempt', 'worker', 'stream', 'entry')\n"
    "if (cur[1] ~= 'running' and cur[1] ~= 'cancelling') or cur[2] ~= attempt or cur[3] ~= worker then\n"
    "  return {'stale'}\n"
    "end\n"
    "local reason = ARGV[10]\n"
    "if cur[1] == 'cancelling' then state = 'cancelled'; reason = 'cancelled' end\n"
    "if reason == '' then reason = nil end\n"
    "redis.call('HSET', k, 'exit_code', ARGV[6], 'summary', ARGV[7], 'files', ARGV[8], 'dir', ARGV[9])\n"
    "redis.call('XACK', cur[4], 'workers', cur[5])\n"
    "redis.call('XDEL', cur[4], cur[5])\n"
    "finish(id, state, reason)\n"
    "return {'ended', unpack(ended)}\n";

/* ARGV: now, id, attempt, worker: the heartbeat of a running task. The
 * entry's idle time is reset (XCLAIM to itself), so that no other worker
 * reclaims it. Returns 1 (go on), 2 (cancelled: stop the command) or 0
 * (the task is no longer this worker's: stop the command). */
const char osp__script_keep[] = PRELUDE
    "local k = key(ARGV[2])\n"
    "local cur = redis.call('HMGET', k, 'state', 'attempt', 'worker', 'stream', 'entry')\n"
    "if cur[2] ~= ARGV[3] or cur[3] ~= ARGV[4] then return 0 end\n"
    "if cur[1] ~= 'running' and cur[1] ~= 'cancelling' then return 0 end\n"
    "redis.call('XCLAIM', cur[4], 'workers', ARGV[4], 0, cur[5], 'JUSTID')\n"
    "redis.call('HSET', k, 'heartbeat', now)\n"
    "if cur[1] == 'cancelling' then return 2 end\n"
    "return 1\n";

/* ARGV: now, id. Returns {state after, ended ids...}, or {'ended', state}
 * for a task that had already ended; an error reply
 * 'ENOENT ...' if there is no such task. */
const char osp__script_cancel[] = PRELUDE
    "local id = ARGV[2]\n"
    "local st = redis.call('HGET', key(id), 'state')\n"
    "if not st then return redis.error_reply('ENOENT no task ' .. id) end\n"
    "if st == 'queued' or st == 'waiting' then\n"
    "  finish(id, 'cancelled', 'cancelled'); return {'cancelled', unpack(ended)}\n"
    "end\n"
    "if st == 'running' then\n"
    "  redis.call('HSET', key(id), 'state', 'cancelling'); publish(id, 'cancelling'); return {'cancelling'}\n"
    "end\n"
    "return {'ended', st}\n";

/* ARGV: now, id, stream, entry: a worker that cannot run the task puts it
 * back at the end of its stream (a task still queued, or running on a
 * worker that was lost). Returns 1 if it went back. */
const char osp__script_requeue[] = PRELUDE
    "local st = redis.call('HGET', key(ARGV[2]), 'state')\n"
    "redis.call('XACK', ARGV[3], 'workers', ARGV[4])\n"
    "redis.call('XDEL', ARGV[3], ARGV[4])\n"
    "if st == 'queued' or st == 'running' then\n"
    "  redis.call('XADD', ARGV[3], '*', 'task', ARGV[2], 'v', '1')\n"
    "  redis.call('HINCRBY', key(ARGV[2]), 'passed', 1)\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

/* ARGV: now, stream, entry, reason, fields: a message no worker can read
 * is moved to osprey:malformed. */
const char osp__script_aside[] = PRELUDE
    "redis.call('XADD', 'osprey:malformed', 'MAXLEN', '~', '10000', '*', 'stream', ARGV[2], 'entry', ARGV[3],\n"
    "           'reason', ARGV[4], 'fields', ARGV[5], 'time', now)\n"
    "redis.call('XACK', ARGV[2], 'workers', ARGV[3])\n"
    "redis.call('XDEL', ARGV[2], ARGV[3])\n"
    "return 1\n";
