/* SPDX-License-Identifier: MIT */
/*
 * evloop.c: the event loop every sluice program runs on.
 *
 * With epoll, libevent's changelist folds the add/delete pairs a loop turn
 * makes on one socket (a reply queued, then written at once) into at most
 * one epoll_ctl: profiling showed 18 epoll_ctl calls per accepted message
 * without it.
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
	return base;
}
