/* SPDX-License-Identifier: MIT */
/* evloop.h: create the event loop (libevent) with sluice's settings. */
#ifndef SL_EVLOOP_H
#define SL_EVLOOP_H

struct event_base;

/* A new event base; NULL on failure. Free with event_base_free(). */
struct event_base *sl_evloop_new(void);

#endif
