/* SPDX-License-Identifier: MIT */
/*
 * evloop.c: the event loop every sluice program runs on.
 *
 * With epoll, libevent's changelist folds the add/delete pairs a loop turn
 * makes on one socket (a reply queued, then written at once) into at most
 * one epoll_ctl: profiling showed 18 epoll_ctl calls per accepted message
 * without it.
 *
 * Two priorities. Events that end a wait someone else is blocked on (the
 * spool's answers: a 250 that is due) are SL_EVLOOP_PRIO_HIGH; everything
 * else has the default, low one: when the spool's answer comes in the
 * same poll as fifty sessions' reads, the 250s go out first. (Polling
 * again after every few low callbacks, event_config_set_max_dispatch_
 * interval, cost 3 us of CPU per message in extra epoll_waits for no
 * measurable gain in the reply step: not done.)
 */
#include <event2/event.h>

#include "util/evloop.h"

struct event_base *
sl_evloop_new(void)
{
	struct event_config *cfg = event_config_new();
	struct event_base *base;

	if (cfg == NULL)
		return NULL;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	/* before any event exists: new events get the low one (n / 2) */
	if (base != NULL && event_base_priority_init(base, 2) != 0) {
		event_base_free(base);
		return NULL;
	}
	return base;
}
