/* SPDX-License-Identifier: MIT */
/*
 * shaping.h: traffic shaping, what the scheduler and the control commands
 * see of it: per-site limits (connections, messages per connection,
 * recipients per transaction, a message rate, a connection rate), source
 * addresses and their HELO, warm-up budgets, and rules that act on what
 * receivers answer; shared by every node through Redis when [shaping]
 * redis is set.
 *
 * A site is a [site] of the shaping file, or, for destinations no [site]
 * matches, one named after their next hops (the scheduler's site key),
 * which has no limits but can be acted on by rules (site = *). A path is
 * one source address -> site pair (a site without `source` has one path,
 * the system's choice of address): every limit of a site applies to each
 * of its paths, and so does the warm-up of the path's [source].
 *
 * The scheduler asks before it opens a connection (shaping_open: a slot of
 * the path's connection limit and a token of its connection rate) and
 * before it hands a message to a connection (shaping_send: a token of the
 * path's rate and a unit of its warm-up budget). Either answers GO, or
 * WAIT: the waiter given is called back once asking again is worth it
 * (a token came, a slot freed, a wait ended), one waiter per event, so no
 * decision walks the sites or the queue.
 *
 * Threads: the event loop thread.
 */
#ifndef SL_SHAPING_H
#define SL_SHAPING_H

#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

struct dns;
struct event_base;
struct sl_conf;
struct shaping;
struct shaping_site;
struct shaping_path;

/* Someone waiting for a path or a site (embedded in the waiter). */
struct shaping_wait {
	TAILQ_ENTRY(shaping_wait) entry;
	void *list;		/* the list it is on; NULL: none */
	void (*fn)(struct shaping_wait *w);
};

enum shaping_answer {
	SHAPING_GO = 0,		/* go ahead: the token or slot is taken */
	SHAPING_WAIT,		/* not now; w is called back */
	SHAPING_NONE,		/* no path can be used (no source binds) */
};

/*
 * Shaping by the file in conf ([shaping] file; "" for none: NULL is
 * returned and err is ""), or NULL with "file:line: message" in err.
 * With [shaping] redis, limits are shared from the first answer of Redis
 * on; until then, and whenever Redis is down, each node keeps to its
 * share (limit / [shaping] nodes). conf is read, not kept.
 */
struct shaping *shaping_new(struct event_base *base, struct dns *dns,
    const struct sl_conf *conf, char *err, size_t errlen);
/* Check [shaping] file and redis of conf (sluiced -n): 0, or -1 with
 * "[shaping] file: file:line: message" in err. */
int shaping_check(const struct sl_conf *conf, char *err, size_t errlen);
/*
 * Read the file again and use it (reload). Sites keep their actions;
 * connections keep their path until they close. -1 with err (the old
 * configuration stays).
 */
int shaping_reload(struct shaping *sh, const struct sl_conf *conf, char *err,
    size_t errlen);
void shaping_free(struct shaping *sh);
/* Tests: a clock of their own (microseconds since the epoch). */
void shaping_set_clock(struct shaping *sh, int64_t (*now_us)(void *),
    void *arg);

/*
 * The site of a destination (one reference; shaping_site_put): the
 * [site] domain or one of hosts matches, else the implicit site called
 * key (the scheduler's site key).
 */
struct shaping_site *shaping_site_get(struct shaping *sh, const char *domain,
    const char *const *hosts, size_t nhosts, const char *key);
void shaping_site_put(struct shaping_site *site);
const char *shaping_site_name(const struct shaping_site *site);
/* The site's settings, 0 (or NULL) where [delivery]'s apply. */
int shaping_site_messages_per_connection(const struct shaping_site *site);
int shaping_site_recipients_per_transaction(const struct shaping_site *site);
/*
 * 0 if the site may send now; else the unix ms its suspension ends and a
 * reason ("suspended by rule tss04 until ...") in why (static until the
 * next call).
 */
int64_t shaping_site_suspended(struct shaping_site *site, const char **why);

/* w waits for the site's actions to change (a resume, another node's
 * word): for a destination held by a suspension. */
void shaping_site_hold(struct shaping_site *site, struct shaping_wait *w);

/*
 * A path to open a connection on. pin: the destination's hash (used when
 * the site pins sources). family: AF_INET / AF_INET6 the next hops have
 * (a bit mask: 1 << family). GO: *out is the path, a slot held until
 * shaping_conn_closed(). WAIT: w is called back; why says what it waits
 * for. NONE: no source of the site can reach these hops (why).
 */
enum shaping_answer shaping_open(struct shaping_site *site, uint32_t pin,
    unsigned families, struct shaping_wait *w, struct shaping_path **out,
    const char **why);
/* The connection opened on p is ready for messages (greeted). */
void shaping_conn_ready(struct shaping_path *p);
/* The connection opened on p is gone: its slot is free. ready: it had
 * been reported ready. */
void shaping_conn_closed(struct shaping_path *p, int ready);
/* The address to bind to (NULL: the system's choice) and its name. */
const struct sockaddr_storage *shaping_path_source(const struct shaping_path *p,
    socklen_t *len);
const char *shaping_path_name(const struct shaping_path *p);
/* The HELO name for connections on p, or NULL for [server] hostname. */
const char *shaping_path_helo(const struct shaping_path *p);
/* p's address could not be bound (why): logged once, skipped a while. */
void shaping_path_unbindable(struct shaping_path *p, const char *why);
/*
 * 1 if a message could go on p now (nothing is taken): a connection asks
 * this before it takes a job, and shaping_send() once the job's body is
 * in and the message would go out at once, so the receiver sees the
 * tokens' spacing, not that of reading bodies. 0: w is called back when
 * one is due.
 */
int shaping_send_due(struct shaping_path *p, struct shaping_wait *w,
    const char **why);
/* A message may go on a connection of p: GO, or WAIT (w called back). */
enum shaping_answer shaping_send(struct shaping_path *p, struct shaping_wait *w,
    const char **why);
/* w no longer waits (no-op if it does not). */
void shaping_wait_cancel(struct shaping_wait *w);

/*
 * Every reply a receiver gave (greeting, each command, end of data) at
 * site: the rules count it and act. Returns 1 if a rule matched it (the
 * rules, not the built-in 421 throttle, then answer it).
 */
int shaping_reply(struct shaping_site *site, const char *reply);
/* What a matching rule says about one recipient's reply: */
enum shaping_verdict {
	SHAPING_KEEP = 0,	/* nothing: the reply decides */
	SHAPING_BOUNCE,		/* fail it now (reply made permanent) */
	SHAPING_RETRY_IN,	/* defer it until *retry_s from now */
};
enum shaping_verdict shaping_verdict(struct shaping_site *site,
    const char *reply, int64_t *retry_s, const char **rule);

/*
 * sluice shaping status: the sites, their limits, current rates, actions
 * in force and until when, sources and warm-up, Redis. A new JSON object
 * (jansson's json_t), the caller's to json_decref.
 */
struct json_t;
struct json_t *shaping_status(struct shaping *sh);
/* sluice shaping resume SITE: end its actions here and in Redis. 0, or -1
 * if no such site has any. */
int shaping_resume(struct shaping *sh, const char *site);
/* One line per site with an action in force, for queue summary: the
 * site's name, what and until when (unix s); fn returns non-zero to stop. */
typedef int shaping_action_fn(void *arg, const char *site, const char *rule,
    const char *action, int64_t until);
void shaping_foreach_action(struct shaping *sh, shaping_action_fn *fn,
    void *arg);

#endif
