/* SPDX-License-Identifier: MIT */
/* evloop.h: create the event loop (libevent) with sluice's settings. */
#ifndef SL_EVLOOP_H
#define SL_EVLOOP_H

struct event_base;

/* Priorities (evloop.c): the spool's answers high, everything else low. */
#define SL_EVLOOP_PRIO_HIGH 0
#define SL_EVLOOP_PRIO_LOW 1

/* A new event base; NULL on failure. Free with event_base_free(). */
struct event_base *sl_evloop_new(void);

#endif
