/* SPDX-License-Identifier: MIT */
/*
 * inject.h: bulk injection: the request (one JSON document naming a
 * template and many recipients, docs/HTTP.md), its validation with
 * per-recipient rejections, and the expansion of the stored batch into one
 * MIME message per recipient at delivery (GMime).
 *
 * A batch is stored once: the template (the request without its
 * recipients, plus batch_id, mid, date and hostname: inject_batch_json())
 * as the message's body, and the recipient list (address and compact vars
 * per recipient) as its recipients. inject_batch_build() makes recipient
 * rid's message from those; it is deterministic (same bytes for the same
 * inputs), so a retried delivery sends what the first attempt sent.
 *
 * Threads: no shared state; GMime is initialised once (inject_init).
 */
#ifndef SL_INJECT_H
#define SL_INJECT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct evbuffer;

struct inject_limits {
	size_t max_recipients;	/* entries of "recipients", rejected too */
	size_t max_message_size; /* raw, a rendered part, attachments */
	size_t max_vars;	/* bytes of one recipient's vars as JSON */
};

struct inject_rcpt {
	char *email;		/* as given; owned */
	char *vars;		/* compact JSON object, or NULL; owned */
	size_t index;		/* in the request's recipients */
};

struct inject_reject {
	size_t index;		/* in the request's recipients */
	char *email;		/* as given, or NULL when not a string */
	char *reason;
};

struct inject_req {
	json_t *tpl;		/* every field but recipients, validated */
	char *sender;		/* envelope sender: the address of "from" */
	int archive;		/* "archive": true */
	int smtputf8;		/* a non-ASCII address among them */
	struct inject_rcpt *rcpts;
	size_t nrcpt, rcpt_cap;
	struct inject_reject *rejected;
	size_t nrejected, rej_cap;
};

/* Call once before any other function here (GMime's own setup). */
void inject_init(void);

/*
 * Parse and check a request (len bytes of JSON). The recipients array is
 * read one element at a time, so memory is the compact list, not a JSON
 * tree of it. Returns 0 and *out (free with inject_req_free), or -1 with
 * the reason for a 400 in err ("recipients: missing"). A bad recipient is
 * not an error: it goes to (*out)->rejected with its reason, also when its
 * values would make a part larger than lim->max_message_size (every
 * recipient's templates are rendered once here to know), so a batch that
 * was accepted never fails for its size at delivery.
 */
int inject_req_parse(const char *body, size_t len,
    const struct inject_limits *lim, struct inject_req **out, char *err,
    size_t errlen);
void inject_req_free(struct inject_req *r);

/*
 * The template to store for r as the batch's body: r->tpl with batch_id
 * (the MID in hex), mid, date (unix seconds) and hostname (for
 * Message-ID). Returns a new string (free()).
 */
char *inject_batch_json(const struct inject_req *r, uint64_t mid,
    int64_t date, const char *hostname);

/* ---- expansion at delivery (mime.c) ---- */

struct inject_batch;

/* Compile a stored template; NULL with a reason in err. */
struct inject_batch *inject_batch_new(const char *json, size_t len,
    char *err, size_t errlen);
void inject_batch_free(struct inject_batch *b);
/* The batch's "metadata" object (borrowed) or NULL; its batch_id. */
json_t *inject_batch_metadata(const struct inject_batch *b);
const char *inject_batch_id(const struct inject_batch *b);
/* 1 if the request asked for its messages to be archived. */
int inject_batch_archive(const struct inject_batch *b);
/* The batch's date (unix seconds): its messages' Date, and the t= of
 * their DKIM signatures, so a rebuilt message is the same bytes. */
int64_t inject_batch_date(const struct inject_batch *b);
/*
 * Append recipient rid's message (email, vars: compact JSON or NULL) to
 * out, CRLF line ends, ready for SMTP. Returns 0, or -1 with a reason
 * (the recipient fails for good: the values make an oversize message).
 */
int inject_batch_build(const struct inject_batch *b, const char *email,
    const char *vars, uint32_t rid, struct evbuffer *out, char *err,
    size_t errlen);

#endif
