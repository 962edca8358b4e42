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

const char *const shaping_scripts[SHAPING_LUA_N] = {
	/*
	 * GCRA. KEYS[1] the limiter, ARGV[1] the interval in microseconds.
	 * Returns 0 (the event may happen now, counted) or the microseconds
	 * to wait. The key holds the theoretical arrival time and lives one
	 * interval and a second.
	 */
	[SHAPING_LUA_GCRA] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
	"local iv = tonumber(ARGV[1])\n"
	"local tat = tonumber(redis.call('GET', KEYS[1]))\n"
	"if tat ~= nil and tat > now then return tat - now end\n"
	"redis.call('SET', KEYS[1], string.format('%.0f', now + iv), 'PX',\n"
	"    math.floor(iv / 1000) + 1000)\n"
	"return 0\n",

	/*
	 * A connection slot. KEYS[1] a sorted set of the open connections,
	 * scored by when each expires; ARGV[1] this connection, ARGV[2] the
	 * limit, ARGV[3] the lifetime in ms (the holder renews it). Returns 1
	 * (held: taken or renewed) or 0 (all slots taken).
	 */
	[SHAPING_LUA_CONN] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
	"if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and\n"
	"    redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then\n"
	"  return 0\n"
	"end\n"
	"redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])\n"
	"redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))\n"
	"return 1\n",

	/*
	 * A unit of a budget. KEYS[1] the counter of one window, ARGV[1] the
	 * budget, ARGV[2] the counter's lifetime in ms. Returns the count
	 * after taking one, or minus the count when the budget is spent.
	 */
	[SHAPING_LUA_BUDGET] =
	"local n = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
	"if n >= tonumber(ARGV[1]) then return -n end\n"
	"n = redis.call('INCR', KEYS[1])\n"
	"if n == 1 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) end\n"
	"return n\n",

	/*
	 * An action of a rule, shared. KEYS[1] the hash of actions; ARGV[1]
	 * the field ("site\tkind"), ARGV[2] its value ("until_ms rule value"),
	 * ARGV[3] until, unix ms. A later until wins; the hash lives as long
	 * as its longest action. Returns 1 if set, 0 if one lasting longer
	 * was there.
	 */
	[SHAPING_LUA_ACTION] =
	"local old = redis.call('HGET', KEYS[1], ARGV[1])\n"
	"local untl = tonumber(ARGV[3])\n"
	"if old and tonumber(string.match(old, '^%d+')) >= untl then\n"
	"  return 0\n"
	"end\n"
	"redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
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
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
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
};
