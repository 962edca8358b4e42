/* SPDX-License-Identifier: MIT */
/*
 * ctl_shaping.c: the shaping commands of the control socket and the HTTP
 * API (docs/CONTROL.md, docs/HTTP.md):
 *
 *   shaping.status               sites, limits, rates, actions, Redis
 *   shaping.resume {"site": S}   end the actions in force at site S
 *
 * Without a shaping file both answer that shaping is off.
 */
#include <string.h>

#include <jansson.h>

#include "control/control.h"
#include "log/log.h"
#include "shaping/shaping.h"
#include "sluiced/ctl_int.h"
#include "sluiced/sluiced.h"

static int
ctl_shaping_on(struct sluiced_ctl *ctl, struct control_req *req)
{
	if (ctl->d->shaping != NULL)
		return 1;
	control_reply_err(req, CONTROL_ERR_FAILED, NULL, "shaping is off: "
	    "no [shaping] file");
	return 0;
}

void
ctl_shaping_status(struct sluiced_ctl *ctl, struct control_req *req,
    json_t *args)
{
	if (ctl_shaping_on(ctl, req))
		control_reply(req, shaping_status(ctl->d->shaping));
}

void
ctl_shaping_resume(struct sluiced_ctl *ctl, struct control_req *req,
    json_t *args)
{
	json_t *site = json_object_get(args, "site");

	if (!json_is_string(site)) {
		control_reply_err(req, CONTROL_ERR_BADARG, NULL, "a site is "
		    "needed: {\"site\": \"NAME\"}");
		return;
	}
	if (!ctl_shaping_on(ctl, req))
		return;
	log_info("control: shaping resume %s asked (%s)",
	    json_string_value(site), control_req_who(req));
	if (shaping_resume(ctl->d->shaping, json_string_value(site)) != 0) {
		control_reply_err(req, CONTROL_ERR_NOTFOUND, NULL, "site %s has "
		    "no action in force", json_string_value(site));
		return;
	}
	control_reply(req, json_pack("{s:O, s:b}", "site", site, "resumed", 1));
}
