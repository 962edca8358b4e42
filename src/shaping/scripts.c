/* SPDX-License-Identifier: MIT */
/*
 * scripts.c: the Lua scripts that make shared limits atomic in Redis. Each
 * runs whole inside Redis, so nodes asking at the same moment cannot both
 * take the last token, slot or unit of budget; each key it writes expires,
 * so what a dead node held goes away by itself. Times come from Redis's
 * own clock (TIME), so the nodes' clocks need not agree, except for the
 * warm-up window, which is a calendar day (or unit) the caller names.
 *
 * Loaded with SCRIPT LOAD at each connection and run with EVALSHA by
 * src/shaping/redis.c (EVAL when Redis has lost them).
 */
#include "shaping/shaping_int.h"

/* Redis's clock, in microseconds and in milliseconds. */
#define NOW_US \
	"local t = redis.call('TIME')\n" \
	"local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
#define NOW_MS \
	"local t = redis.call('TIME')\n" \
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

const char *const shaping_scripts[SHAPING_LUA_N] = {
	/*
	 * A message on a path. KEYS[1] its rate limiter (GCRA: the key holds
	 * the theoretical arrival time, in us), KEYS[2] its warm-up counter
	 * for this window; ARGV[1] the interval in us (0: no rate), ARGV[2]
	 * the budget (0: none), ARGV[3] the counter's lifetime in ms.
	 * Returns {0, used} (go: counted in both), {1, us to wait} or
	 * {2, used} (the budget is spent); nothing is taken unless it goes.
	 */
	[SHAPING_LUA_SEND] =
	NOW_US
	"local iv = tonumber(ARGV[1])\n"
	"local budget = tonumber(ARGV[2])\n"
	"local used = 0\n"
	"if budget > 0 then\n"
	"  used = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
	"  if used >= budget then return {2, used} end\n"
	"end\n"
	"if iv > 0 then\n"
	"  local tat = tonumber(redis.call('GET', KEYS[1]))\n"
	"  if tat ~= nil and tat > now then return {1, tat - now} end\n"
	"  redis.call('SET', KEYS[1], string.format('%.0f', now + iv), 'PX',\n"
	"      math.floor(iv / 1000) + 1000)\n"
	"end\n"
	"if budget > 0 then\n"
	"  used = redis.call('INCR', KEYS[2])\n"
	"  if used == 1 then redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3])) end\n"
	"end\n"
	"return {0, used}\n",

	/*
	 * A connection on a path. KEYS[1] the sorted set of its open
	 * connections, scored by when each lapses unless renewed; KEYS[2] its
	 * connection rate limiter; ARGV[1] this connection's name, ARGV[2]
	 * the limit (0: none), ARGV[3] the lifetime in ms, ARGV[4] the
	 * interval in us (0: no rate). Returns {0, open} (go: the slot and
	 * the token taken), {1, us to wait} or {2, open} (no slot free).
	 */
	[SHAPING_LUA_OPEN] =
	NOW_US
	"local limit = tonumber(ARGV[2])\n"
	"local iv = tonumber(ARGV[4])\n"
	"local ms = math.floor(now / 1000)\n"
	"redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)\n"
	"local open = redis.call('ZCARD', KEYS[1])\n"
	"if limit > 0 and open >= limit then return {2, open} end\n"
	"if iv > 0 then\n"
	"  local tat = tonumber(redis.call('GET', KEYS[2]))\n"
	"  if tat ~= nil and tat > now then return {1, tat - now} end\n"
	"  redis.call('SET', KEYS[2], string.format('%.0f', now + iv), 'PX',\n"
	"      math.floor(iv / 1000) + 1000)\n"
	"end\n"
	"redis.call('ZADD', KEYS[1], ms + tonumber(ARGV[3]), ARGV[1])\n"
	"redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))\n"
	"return {0, open + 1}\n",

	/*
	 * A connection still open. KEYS[1] the sorted set, ARGV[1] its name,
	 * ARGV[2] the lifetime in ms. Counted whatever the limit (it is
	 * open), e.g. again after Redis lost it.
	 */
	[SHAPING_LUA_RENEW] =
	NOW_MS
	"redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n"
	"if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then\n"
	"  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))\n"
	"end\n"
	"return 1\n",

	/*
	 * An action of a rule, shared. KEYS[1] the hash of actions; ARGV[1]
	 * the field ("site\tkind"), ARGV[2] its value ("until_ms rule
	 * value"), ARGV[3] until, unix ms. A later until wins; the hash lives
	 * as long as its longest action. Returns 1 if set, 0 if one lasting
	 * longer was there.
	 */
	[SHAPING_LUA_ACTION] =
	"local old = redis.call('HGET', KEYS[1], ARGV[1])\n"
	"local untl = tonumber(ARGV[3])\n"
	"if old and tonumber(string.match(old, '^%d+')) >= untl then\n"
	"  return 0\n"
	"end\n"
	"redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
	NOW_MS
	"local ttl = redis.call('PTTL', KEYS[1])\n"
	"if untl - now > ttl then\n"
	"  redis.call('PEXPIRE', KEYS[1], math.max(untl - now, 1000))\n"
	"end\n"
	"return 1\n",

	/*
	 * The actions in force. KEYS[1] the hash; fields whose until has
	 * passed are removed. Returns field, value, field, value, ...
	 */
	[SHAPING_LUA_ACTIONS] =
	NOW_MS
	"local all = redis.call('HGETALL', KEYS[1])\n"
	"local out = {}\n"
	"for i = 1, #all, 2 do\n"
	"  local untl = tonumber(string.match(all[i + 1], '^%d+') or '0')\n"
	"  if untl <= now then\n"
	"    redis.call('HDEL', KEYS[1], all[i])\n"
	"  else\n"
	"    out[#out + 1] = all[i]\n"
	"    out[#out + 1] = all[i + 1]\n"
	"  end\n"
	"end\n"
	"return out\n",

	/*
	 * The first value wins: KEYS[1] keeps ARGV[1] unless it has one
	 * already; returns the value kept (a warm-up's start, shared).
	 */
	[SHAPING_LUA_FIRST] =
	"redis.call('SET', KEYS[1], ARGV[1], 'NX')\n"
	"return redis.call('GET', KEYS[1])\n",
};
