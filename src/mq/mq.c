/* SPDX-License-Identifier: MIT */
/*
 * mq.c: the RabbitMQ consumer and publisher thread (mq.h).
 *
 * Connection states, moved only by mq_thread():
 *   DOWN -(mq_connect ok)-> UP -(any error)-> DOWN (gen++, backoff)
 * Every message and answer carries the generation of the connection it
 * came on; an answer for an older generation is dropped, because its
 * delivery tag means nothing on a new connection.
 *
 * Invariant: a request is acknowledged only by mq_done() without a reason
 * (the loop says durable) or after its dead-letter copy was published.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <event2/event.h>

#include "log/log.h"
#include "mq/mq.h"
#include "util/util.h"

/* An idle connection is looked at this often (heartbeats go out then). */
#define MQ_IDLE_MS 1000
#define MQ_BACKOFF_MAX 60
#define MQ_PUBLISH_MAX 100000

struct mq_msg {
	struct mq_msg *next;
	uint64_t gen, tag;
	char *body;
	size_t len;
	char *key;
	int redelivered;
	char *reason;		/* an answer: dead-letter reason, or NULL */
	int publish;		/* an event to publish (body, key = rkey) */
	char *logline;		/* a line for the log (the log is the loop's) */
	int requeue;		/* an answer: give it back to the broker */
};

struct mq_list {
	struct mq_msg *head, **tail;
	size_t n;
};

struct mq {
	struct event_base *base;
	mq_request_fn *fn;
	void *arg;
	char *url, *queue, *dlq, *exchange;
	int prefetch;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct mq_list in;	/* mu: requests for the loop */
	struct mq_list out;	/* mu: answers and publishes for the thread */
	int stopping;		/* mu */
	struct mq_stats st;	/* mu */
	int efd;			/* the thread tells the loop */
	int wake;			/* the loop tells the thread */
	struct event *ev;
	/* the thread's own */
	amqp_connection_state_t conn;
	uint64_t gen;
};

static void
mq_list_init(struct mq_list *l)
{
	l->head = NULL;
	l->tail = &l->head;
	l->n = 0;
}

static void
mq_list_push(struct mq_list *l, struct mq_msg *m)
{
	m->next = NULL;
	*l->tail = m;
	l->tail = &m->next;
	l->n++;
}

static void
mq_msg_free(struct mq_msg *m)
{
	free(m->logline);
	free(m->body);
	free(m->key);
	free(m->reason);
	free(m);
}

/* The thread's log lines go to the loop, which owns the log. */
static void
mq_log(struct mq *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
mq_log(struct mq *q, const char *fmt, ...)
{
	struct mq_msg *m = xcalloc(1, sizeof(*m));
	uint64_t one = 1;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&m->logline, fmt, ap) < 0)
		m->logline = NULL;
	va_end(ap);
	pthread_mutex_lock(&q->mu);
	mq_list_push(&q->in, m);
	pthread_mutex_unlock(&q->mu);
	while (write(q->efd, &one, sizeof(one)) == -1 && errno == EINTR)
		;
}

const char *
mq_msg_body(const struct mq_msg *m, size_t *len)
{
	*len = m->len;
	return m->body;
}

const char *
mq_msg_key(const struct mq_msg *m)
{
	return m->key;
}

int
mq_msg_redelivered(const struct mq_msg *m)
{
	return m->redelivered;
}

/* ---- the thread ---- */

static int
mq_rpc_ok(struct mq *q, const char *what)
{
	amqp_rpc_reply_t r = amqp_get_rpc_reply(q->conn);

	if (r.reply_type == AMQP_RESPONSE_NORMAL)
		return 1;
	mq_log(q, "amqp: %s failed (%s)", what, r.reply_type ==
	    AMQP_RESPONSE_LIBRARY_EXCEPTION ? amqp_error_string2(
	    r.library_error) : "the broker refused it");
	return 0;
}

static void
mq_disconnect(struct mq *q)
{
	if (q->conn == NULL)
		return;
	amqp_connection_close(q->conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(q->conn);
	q->conn = NULL;
	q->gen++;
	pthread_mutex_lock(&q->mu);
	q->st.connected = 0;
	pthread_mutex_unlock(&q->mu);
}

static int
mq_connect(struct mq *q)
{
	struct amqp_connection_info ci;
	char *url = xstrdup(q->url);
	amqp_socket_t *sock;
	struct timeval tv = { 10, 0 };
	int ok = 0;

	amqp_default_connection_info(&ci);
	if (amqp_parse_url(url, &ci) != AMQP_STATUS_OK) {
		mq_log(q, "amqp: [amqp] url is not an amqp:// URL");
		free(url);
		return 0;
	}
	/* "amqp://host:port/" names no vhost: the default one, "/" */
	if (ci.vhost == NULL || ci.vhost[0] == '\0')
		ci.vhost = "/";
	q->conn = amqp_new_connection();
	sock = amqp_tcp_socket_new(q->conn);
	if (sock == NULL || amqp_socket_open_noblock(sock, ci.host, ci.port,
	    &tv) != AMQP_STATUS_OK) {
		mq_log(q, "amqp: cannot connect to %s:%d", ci.host, ci.port);
		amqp_destroy_connection(q->conn);
		q->conn = NULL;
		free(url);
		return 0;
	}
	amqp_set_rpc_timeout(q->conn, &tv);
	if (amqp_login(q->conn, ci.vhost, 0, 131072, 30,
	    AMQP_SASL_METHOD_PLAIN, ci.user, ci.password).reply_type !=
	    AMQP_RESPONSE_NORMAL) {
		mq_log(q, "amqp: login to %s:%d failed", ci.host, ci.port);
		goto done;
	}
	amqp_channel_open(q->conn, 1);
	if (!mq_rpc_ok(q, "channel open"))
		goto done;
	if (q->queue[0] != '\0') {
		amqp_queue_declare(q->conn, 1, amqp_cstring_bytes(q->queue), 0,
		    1, 0, 0, amqp_empty_table);
		if (!mq_rpc_ok(q, "declaring [amqp] queue"))
			goto done;
		amqp_queue_declare(q->conn, 1, amqp_cstring_bytes(q->dlq), 0, 1,
		    0, 0, amqp_empty_table);
		if (!mq_rpc_ok(q, "declaring [amqp] dead_letter_queue"))
			goto done;
		amqp_basic_qos(q->conn, 1, 0, (uint16_t)q->prefetch, 0);
		if (!mq_rpc_ok(q, "basic.qos"))
			goto done;
		amqp_basic_consume(q->conn, 1, amqp_cstring_bytes(q->queue),
		    amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
		if (!mq_rpc_ok(q, "basic.consume"))
			goto done;
	}
	ok = 1;
	mq_log(q, "amqp: connected to %s:%d, consuming '%s'", ci.host,
	    ci.port, q->queue);
done:
	free(url);
	if (!ok) {
		amqp_destroy_connection(q->conn);
		q->conn = NULL;
	}
	return ok;
}

/* The key: header "Idempotency-Key" (any case), else message_id. */
static char *
mq_key_of(const amqp_basic_properties_t *p)
{
	if (p->_flags & AMQP_BASIC_HEADERS_FLAG) {
		for (int i = 0; i < p->headers.num_entries; i++) {
			const amqp_table_entry_t *e = &p->headers.entries[i];
			if (e->key.len == 15 && sl_strncaseeq(e->key.bytes,
			    "idempotency-key", 15) && (e->value.kind ==
			    AMQP_FIELD_KIND_UTF8 || e->value.kind ==
			    AMQP_FIELD_KIND_BYTES))
				return xstrndup(e->value.value.bytes.bytes,
				    e->value.value.bytes.len);
		}
	}
	if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
		return xstrndup(p->message_id.bytes, p->message_id.len);
	return NULL;
}

static void
mq_received(struct mq *q, amqp_envelope_t *env)
{
	struct mq_msg *m = xcalloc(1, sizeof(*m));
	uint64_t one = 1;

	m->gen = q->gen;
	m->tag = env->delivery_tag;
	m->redelivered = env->redelivered;
	m->len = env->message.body.len;
	m->body = xmalloc(m->len + 1);
	memcpy(m->body, env->message.body.bytes, m->len);
	m->body[m->len] = '\0';
	m->key = mq_key_of(&env->message.properties);
	pthread_mutex_lock(&q->mu);
	mq_list_push(&q->in, m);
	q->st.received++;
	pthread_mutex_unlock(&q->mu);
	while (write(q->efd, &one, sizeof(one)) == -1 && errno == EINTR)
		;
}

/* Send one answer or publish; 0, or -1 when the connection failed. */
static int
mq_send(struct mq *q, struct mq_msg *m)
{
	amqp_basic_properties_t p = { 0 };
	amqp_table_entry_t h[2];
	int n = 0;

	p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
	p.delivery_mode = 2;	/* persistent */
	p.content_type = amqp_cstring_bytes("application/json");
	if (m->publish)
		return amqp_basic_publish(q->conn, 1, amqp_cstring_bytes(
		    q->exchange), amqp_cstring_bytes(m->key ? m->key : ""), 0, 0,
		    &p, (amqp_bytes_t){ m->len, m->body }) == AMQP_STATUS_OK ?
		    0 : -1;
	if (m->gen != q->gen)
		return 0;	/* its tag belongs to a closed connection */
	if (m->requeue)
		return amqp_basic_reject(q->conn, 1, m->tag, 1) ==
		    AMQP_STATUS_OK ? 0 : -1;
	if (m->reason != NULL) {
		h[n].key = amqp_cstring_bytes("x-sluice-reason");
		h[n].value.kind = AMQP_FIELD_KIND_UTF8;
		h[n++].value.value.bytes = amqp_cstring_bytes(m->reason);
		if (m->key != NULL) {
			h[n].key = amqp_cstring_bytes("idempotency-key");
			h[n].value.kind = AMQP_FIELD_KIND_UTF8;
			h[n++].value.value.bytes = amqp_cstring_bytes(m->key);
		}
		p._flags |= AMQP_BASIC_HEADERS_FLAG;
		p.headers.num_entries = n;
		p.headers.entries = h;
		if (amqp_basic_publish(q->conn, 1, amqp_empty_bytes,
		    amqp_cstring_bytes(q->dlq), 0, 0, &p, (amqp_bytes_t){
		    m->len, m->body }) != AMQP_STATUS_OK)
			return -1;
	}
	return amqp_basic_ack(q->conn, 1, m->tag, 0) == AMQP_STATUS_OK ? 0 : -1;
}

/* Send every queued answer; -1 if the connection failed on the way. */
static int
mq_flush(struct mq *q)
{
	struct mq_msg *m, *next;
	struct mq_list todo;
	int rc = 0;

	pthread_mutex_lock(&q->mu);
	todo = q->out;
	mq_list_init(&q->out);
	pthread_mutex_unlock(&q->mu);
	for (m = todo.head; m != NULL; m = next) {
		next = m->next;
		if (rc == 0 && mq_send(q, m) != 0)
			rc = -1;
		pthread_mutex_lock(&q->mu);
		if (rc == 0 && m->publish)
			q->st.published++;
		else if (rc == 0 && m->gen == q->gen && !m->requeue)
			*(m->reason ? &q->st.dead : &q->st.acked) += 1;
		else if (m->publish)
			q->st.dropped++;
		pthread_mutex_unlock(&q->mu);
		mq_msg_free(m);
	}
	return rc;
}

/* Wait up to ms, or until stopping. Returns 1 when stopping. */
static int
mq_sleep(struct mq *q, int64_t ms)
{
	struct timespec ts;
	int stop;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&q->mu);
	if (!q->stopping)
		pthread_cond_timedwait(&q->cv, &q->mu, &ts);
	stop = q->stopping;
	pthread_mutex_unlock(&q->mu);
	return stop;
}

static void *
mq_thread(void *arg)
{
	struct mq *q = arg;
	int backoff = 0;

	for (;;) {
		amqp_envelope_t env;
		amqp_rpc_reply_t r;
		struct timeval tv = { 0, 0 };
		int stop;

		pthread_mutex_lock(&q->mu);
		stop = q->stopping;
		pthread_mutex_unlock(&q->mu);
		if (q->conn == NULL) {
			if (stop)
				break;
			if (!mq_connect(q)) {
				backoff = backoff ? backoff * 2 : 1;
				if (backoff > MQ_BACKOFF_MAX)
					backoff = MQ_BACKOFF_MAX;
				mq_sleep(q, (int64_t)backoff * 1000);
				continue;
			}
			pthread_mutex_lock(&q->mu);
			q->st.connected = 1;
			if (q->gen > 0)
				q->st.reconnects++;
			pthread_mutex_unlock(&q->mu);
			backoff = 0;
		}
		if (mq_flush(q) != 0) {
			mq_log(q, "amqp: connection lost; reconnecting");
			mq_disconnect(q);
			continue;
		}
		if (stop)
			break;
		amqp_maybe_release_buffers(q->conn);
		/* sleep until the broker sends or the loop has answers: no
		 * polling while idle */
		if (!amqp_data_in_buffer(q->conn) &&
		    !amqp_frames_enqueued(q->conn)) {
			struct pollfd p[2] = {
				{ amqp_get_sockfd(q->conn), POLLIN, 0 },
				{ q->wake, POLLIN, 0 },
			};
			uint64_t v;

			if (poll(p, 2, MQ_IDLE_MS) > 0 && (p[1].revents & POLLIN))
				while (read(q->wake, &v, sizeof(v)) == -1 &&
				    errno == EINTR)
					;
		}
		r = amqp_consume_message(q->conn, &env, &tv, 0);
		if (r.reply_type == AMQP_RESPONSE_NORMAL) {
			mq_received(q, &env);
			amqp_destroy_envelope(&env);
			continue;
		}
		if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
		    r.library_error == AMQP_STATUS_TIMEOUT)
			continue;
		mq_log(q, "amqp: connection lost (%s); reconnecting",
		    r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION ?
		    amqp_error_string2(r.library_error) : "closed by the broker");
		mq_disconnect(q);
	}
	mq_disconnect(q);
	return NULL;
}

/* ---- the loop side ---- */

static void
mq_deliver(evutil_socket_t fd, short what, void *arg)
{
	struct mq *q = arg;
	struct mq_msg *m, *next;
	struct mq_list got;
	uint64_t v;

	while (read(fd, &v, sizeof(v)) == -1 && errno == EINTR)
		;
	pthread_mutex_lock(&q->mu);
	got = q->in;
	mq_list_init(&q->in);
	pthread_mutex_unlock(&q->mu);
	for (m = got.head; m != NULL; m = next) {
		next = m->next;
		if (m->logline != NULL) {
			log_info("%s", m->logline);
			mq_msg_free(m);
			continue;
		}
		q->fn(q->arg, m);
	}
}

static void
mq_wake(struct mq *q)
{
	uint64_t one = 1;

	while (write(q->wake, &one, sizeof(one)) == -1 && errno == EINTR)
		;
}

static void
mq_out(struct mq *q, struct mq_msg *m)
{
	mq_wake(q);
	pthread_mutex_lock(&q->mu);
	if (m->publish && q->out.n >= MQ_PUBLISH_MAX) {
		q->st.dropped++;
		pthread_mutex_unlock(&q->mu);
		mq_msg_free(m);
		return;
	}
	mq_list_push(&q->out, m);
	pthread_mutex_unlock(&q->mu);
}

void
mq_done(struct mq *q, struct mq_msg *m, const char *dead_reason)
{
	free(m->reason);
	m->reason = dead_reason ? xstrdup(dead_reason) : NULL;
	mq_out(q, m);
}

void
mq_requeue(struct mq *q, struct mq_msg *m)
{
	m->requeue = 1;
	mq_out(q, m);
}

void
mq_publish(struct mq *q, const char *rkey, const char *body, size_t len)
{
	struct mq_msg *m;

	if (q == NULL || q->exchange[0] == '\0')
		return;
	m = xcalloc(1, sizeof(*m));
	m->publish = 1;
	m->key = xstrdup(rkey);
	m->body = xstrndup(body, len);
	m->len = len;
	mq_out(q, m);
}

struct mq *
mq_new(struct event_base *base, const struct mq_conf *conf,
    mq_request_fn *fn, void *arg, char *err, size_t errlen)
{
	struct mq *q = xcalloc(1, sizeof(*q));

	q->base = base;
	q->fn = fn;
	q->arg = arg;
	q->url = xstrdup(conf->url);
	q->queue = xstrdup(conf->queue ? conf->queue : "");
	q->dlq = xstrdup(conf->dead_letter_queue ? conf->dead_letter_queue :
	    "");
	q->exchange = xstrdup(conf->exchange ? conf->exchange : "");
	q->prefetch = conf->prefetch;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	mq_list_init(&q->in);
	mq_list_init(&q->out);
	q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	q->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	q->ev = event_new(base, q->efd, EV_READ | EV_PERSIST, mq_deliver, q);
	if (q->efd == -1 || q->wake == -1 || q->ev == NULL ||
	    event_add(q->ev, NULL) != 0 ||
	    pthread_create(&q->thread, NULL, mq_thread, q) != 0) {
		snprintf(err, errlen, "amqp: cannot start its thread");
		if (q->ev)
			event_free(q->ev);
		if (q->efd != -1)
			close(q->efd);
		if (q->wake != -1)
			close(q->wake);
		free(q->url);
		free(q->queue);
		free(q->dlq);
		free(q->exchange);
		free(q);
		return NULL;
	}
	pthread_setname_np(q->thread, "amqp");
	return q;
}

void
mq_free(struct mq *q)
{
	struct mq_msg *m, *next;

	if (q == NULL)
		return;
	pthread_mutex_lock(&q->mu);
	q->stopping = 1;
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
	mq_wake(q);
	/* answers queued so far are sent before the connection closes */
	pthread_join(q->thread, NULL);
	/* requests never handed to the loop: the broker redelivers them */
	for (m = q->in.head; m != NULL; m = next) {
		next = m->next;
		mq_msg_free(m);
	}
	for (m = q->out.head; m != NULL; m = next) {
		next = m->next;
		mq_msg_free(m);
	}
	event_free(q->ev);
	close(q->efd);
	close(q->wake);
	pthread_cond_destroy(&q->cv);
	pthread_mutex_destroy(&q->mu);
	free(q->url);
	free(q->queue);
	free(q->dlq);
	free(q->exchange);
	free(q);
}

void
mq_stats_get(struct mq *q, struct mq_stats *out)
{
	pthread_mutex_lock(&q->mu);
	*out = q->st;
	pthread_mutex_unlock(&q->mu);
}
