#include "cluster/master/consensus.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include <openssl/crypto.h>

#include "cluster/base/log.h"
#include "cluster/base/sha256.h"
#include "cluster/base/util.h"

struct proposal {
	struct raft_apply req;
	struct consensus *c;
	void *cmd;
	size_t len;
	int status;
	bool done;
	bool abandoned; /* the proposer timed out: the loop frees it */
	struct proposal *next;
};

struct consensus {
	struct consensus_options opt;
	struct consensus_fsm fsm_cb;
	char *dir;
	char *self;

	uv_loop_t loop;
	uv_async_t wake;
	uv_timer_t timer;
	/* libraft's TCP transport, wrapped by `filter`, which raft uses: connections to
	 * the Raft port are accepted only from the IPv4 addresses of the peers. */
	struct raft_uv_transport transport;
	struct raft_uv_transport filter;
	raft_uv_accept_cb accept_cb;
	raft_uv_transport_close_cb close_cb;
	struct in_addr *allowed;
	int n_allowed;
	uint64_t refused, last_refusal_log_ns;
	bool auth;			/* opt.auth_key given: connections prove it */
	uint8_t auth_mac_key[32];	/* HMAC-SHA256(key, "kelp raft v1") */
	struct pending_accept *pending; /* incoming connections reading their proof */
	struct raft_io io;
	struct raft_fsm fsm;
	struct raft raft;
	pthread_t thread;
	int start_status;
	bool started;

	pthread_mutex_t lock; /* queue, stopping, published leader state, proposal done */
	pthread_cond_t cond;
	struct proposal *queue;
	bool stopping;
	bool closed;
	bool is_leader;
	char leader[128];
	uint64_t term;

	/* loop thread only: a new leader first applies everything committed before it */
	struct raft_barrier barrier;
	bool barrier_pending;
	bool leader_ready;
	uint64_t ready_term;
};

/*
 * libraft 0.15 copies entry payloads in whole 8-byte words (a payload of another
 * length reads past its buffer on the receiving side), so payloads are padded with
 * spaces to a multiple of 8: the state machine's commands are JSON, where trailing
 * whitespace is harmless.
 */
static size_t pad8(size_t len)
{
	return (len + 7) & ~(size_t)7;
}

/* ---------------------------------------------------------------- state machine glue */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
	struct consensus *c = fsm->data;

	*result = NULL;
	return c->fsm_cb.apply(c->fsm_cb.ctx, buf->base, buf->len) < 0 ? RAFT_INVALID : 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n)
{
	struct consensus *c = fsm->data;
	void *data;
	size_t len;

	if (c->fsm_cb.snapshot(c->fsm_cb.ctx, &data, &len) < 0)
		return RAFT_NOMEM;
	*bufs = raft_malloc(sizeof(**bufs));
	if (!*bufs) {
		free(data);
		return RAFT_NOMEM;
	}
	/* libraft moves entries and snapshots in 8-byte units: pad (see propose). */
	(*bufs)[0].base = raft_malloc(pad8(len));
	if (!(*bufs)[0].base) {
		raft_free(*bufs);
		free(data);
		return RAFT_NOMEM;
	}
	memset((*bufs)[0].base, ' ', pad8(len));
	memcpy((*bufs)[0].base, data, len);
	(*bufs)[0].len = pad8(len);
	*n = 1;
	free(data);
	return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
	struct consensus *c = fsm->data;
	int ret = c->fsm_cb.restore(c->fsm_cb.ctx, buf->base, buf->len);

	raft_free(buf->base);
	return ret < 0 ? RAFT_INVALID : 0;
}

/* ---------------------------------------------------------------- loop thread */

static void apply_done(struct raft_apply *req, int status, void *result)
{
	struct proposal *p = req->data;
	struct consensus *c = p->c;
	bool free_it;

	(void)result;
	pthread_mutex_lock(&c->lock);
	p->status = status == 0							  ? 0
		    : (status == RAFT_NOTLEADER || status == RAFT_LEADERSHIPLOST) ? -EPERM
										  : -EIO;
	p->done = true;
	free_it = p->abandoned;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (free_it)
		free(p);
}

static void barrier_done(struct raft_barrier *req, int status)
{
	struct consensus *c = req->data;

	c->barrier_pending = false;
	if (status == 0 && raft_state(&c->raft) == RAFT_LEADER) {
		c->leader_ready = true;
		c->ready_term = c->raft.current_term;
	}
}

static void publish_state(struct consensus *c)
{
	raft_id id;
	const char *addr = NULL;
	bool raft_leader_now = raft_state(&c->raft) == RAFT_LEADER;
	bool leader, was;

	/*
	 * A new leader may not have applied every entry its predecessor committed (it
	 * learns the commit index with its own first entry). It counts as leader only
	 * once a barrier has gone through: then the state machine is complete, and the
	 * sequence can skip the last reserved block.
	 */
	if (!raft_leader_now || c->ready_term != c->raft.current_term)
		c->leader_ready = false;
	if (raft_leader_now && !c->leader_ready && !c->barrier_pending) {
		c->barrier.data = c;
		if (raft_barrier(&c->raft, &c->barrier, barrier_done) == 0)
			c->barrier_pending = true;
	}
	leader = raft_leader_now && c->leader_ready;

	raft_leader(&c->raft, &id, &addr);
	pthread_mutex_lock(&c->lock);
	was = c->is_leader;
	pthread_mutex_unlock(&c->lock);
	/* Tell the owner before others can see the new leadership (fresh key block). */
	if (leader != was && c->fsm_cb.on_leader_change)
		c->fsm_cb.on_leader_change(c->fsm_cb.ctx, leader);
	pthread_mutex_lock(&c->lock);
	c->is_leader = leader;
	snprintf(c->leader, sizeof(c->leader), "%s", addr ? addr : "");
	c->term = c->raft.current_term;
	pthread_mutex_unlock(&c->lock);
	if (leader != was)
		log_info("consensus: %s is %s leader (term %llu)", c->self,
			 leader ? "now" : "no longer", (unsigned long long)c->raft.current_term);
}

static void drain_queue(uv_async_t *handle)
{
	struct consensus *c = handle->data;
	struct proposal *list;

	pthread_mutex_lock(&c->lock);
	list = c->queue;
	c->queue = NULL;
	pthread_mutex_unlock(&c->lock);
	/* The queue is LIFO: reverse it to propose in arrival order. */
	{
		struct proposal *rev = NULL;

		while (list) {
			struct proposal *next = list->next;

			list->next = rev;
			rev = list;
			list = next;
		}
		list = rev;
	}
	while (list) {
		struct proposal *p = list;
		struct raft_buffer buf;
		int rv;

		list = p->next;
		buf.base = raft_malloc(pad8(p->len));
		buf.len = pad8(p->len);
		rv = buf.base ? 0 : RAFT_NOMEM;
		if (rv == 0) {
			memset(buf.base, ' ', buf.len);
			memcpy(buf.base, p->cmd, p->len);
			p->req.data = p;
			rv = raft_apply(&c->raft, &p->req, &buf, 1, apply_done);
			if (rv != 0)
				raft_free(buf.base);
		}
		if (rv != 0)
			apply_done(&p->req, rv, NULL);
	}
	pthread_mutex_lock(&c->lock);
	if (c->stopping && !c->closed) {
		c->closed = true;
		pthread_mutex_unlock(&c->lock);
		uv_timer_stop(&c->timer);
		uv_close((uv_handle_t *)&c->timer, NULL);
		uv_close((uv_handle_t *)&c->wake, NULL);
		raft_close(&c->raft, NULL);
		return;
	}
	pthread_mutex_unlock(&c->lock);
}

static void sweep_pending(struct consensus *c);

static void on_timer(uv_timer_t *t)
{
	publish_state(t->data);
	sweep_pending(t->data);
}

static void *loop_thread(void *arg)
{
	struct consensus *c = arg;

	uv_run(&c->loop, UV_RUN_DEFAULT);
	return NULL;
}

/* ---------------------------------------------------------------- peer filter */

/*
 * With a key, a connection's first bytes after libraft's handshake are its proof:
 * an 8-byte little-endian Unix time and HMAC-SHA256(raft key, time || connector's
 * address || "\n" || acceptor's address). The acceptor reads exactly these 40 bytes
 * (its read buffer never reaches into raft's data), checks the MAC and that the time
 * is within RAFT_AUTH_SKEW_S of its own, and only then hands the stream to raft.
 */
#define RAFT_AUTH_LEN	 40
#define RAFT_AUTH_SKEW_S 60

struct pending_accept {
	struct consensus *c;
	struct uv_stream_s *stream;
	raft_id id;
	char address[256];
	uint8_t buf[RAFT_AUTH_LEN];
	size_t got;
	uint64_t since_ns; /* a proof not complete after RAFT_AUTH_WAIT_NS: closed */
	struct pending_accept *next;
};

#define RAFT_AUTH_WAIT_NS (5ull * 1000000000ull)

static void raft_auth_mac(struct consensus *c, uint64_t t, const char *from, const char *to,
			  uint8_t out[32])
{
	uint8_t msg[8 + 2 * 256 + 1];
	size_t n = 0, fl = strnlen(from, 255), tl = strnlen(to, 255);

	for (int i = 0; i < 8; i++)
		msg[n++] = (uint8_t)(t >> (8 * i));
	memcpy(msg + n, from, fl);
	n += fl;
	msg[n++] = '\n';
	memcpy(msg + n, to, tl);
	n += tl;
	hmac_sha256(c->auth_mac_key, sizeof(c->auth_mac_key), msg, n, out);
}

static int filter_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
	struct consensus *c = t->impl;
	int rv = c->transport.init(&c->transport, id, address);

	if (rv != 0)
		memcpy(t->errmsg, c->transport.errmsg, sizeof(t->errmsg));
	return rv;
}

static void free_stream(uv_handle_t *h)
{
	raft_free(h);
}

static void log_refusal(struct consensus *c, const char *ip, const char *why)
{
	c->refused++;
	if (now_ns() - c->last_refusal_log_ns > 10000000000ull) {
		c->last_refusal_log_ns = now_ns();
		log_warn("consensus: refused a Raft connection from %s: %s (%" PRIu64
			 " refused so far)",
			 ip, why, c->refused);
	}
}

static void pending_remove(struct consensus *c, struct pending_accept *p)
{
	for (struct pending_accept **pp = &c->pending; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			return;
		}
}

static void auth_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct pending_accept *p = h->data;

	/* Exactly what is missing of the proof: never a byte of raft's own data. */
	*buf = uv_buf_init((char *)p->buf + p->got, (unsigned)(RAFT_AUTH_LEN - p->got));
}

static void auth_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct pending_accept *p = s->data;
	struct consensus *c = p->c;
	uint8_t want[32];
	uint64_t t = 0;
	int64_t skew;

	if (n == 0)
		return;
	if (n > 0)
		p->got += (size_t)n;
	if (n > 0 && p->got < RAFT_AUTH_LEN)
		return;
	uv_read_stop(s);
	pending_remove(c, p);
	if (n > 0) {
		for (int i = 0; i < 8; i++)
			t |= (uint64_t)p->buf[i] << (8 * i);
		skew = (int64_t)t - (int64_t)(now_ns() / 1000000000ull);
		raft_auth_mac(c, t, p->address, c->self, want);
		if (skew <= RAFT_AUTH_SKEW_S && skew >= -RAFT_AUTH_SKEW_S &&
		    CRYPTO_memcmp(want, p->buf + 8, 32) == 0) {
			s->data = NULL;
			c->accept_cb(&c->filter, p->id, p->address, p->stream);
			free(p);
			return;
		}
	}
	log_refusal(c, p->address,
		    n < 0 ? "closed before its proof of the key"
			  : "wrong proof of the key (-jwtKey differs?)");
	uv_close((uv_handle_t *)s, free_stream);
	free(p);
}

/* Runs on the loop's 50 ms timer: a connection that did not prove the key in time goes. */
static void sweep_pending(struct consensus *c)
{
	uint64_t now = now_ns();

	for (struct pending_accept **pp = &c->pending; *pp;) {
		struct pending_accept *p = *pp;

		if (now - p->since_ns < RAFT_AUTH_WAIT_NS) {
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		log_refusal(c, p->address, "no proof of the key within 5 s");
		uv_read_stop(p->stream);
		uv_close((uv_handle_t *)p->stream, free_stream);
		free(p);
	}
}

/* Outgoing: the proof goes out right after libraft's handshake, before raft's data. */
struct auth_connect {
	struct consensus *c;
	struct raft_uv_connect inner;  /* what the TCP transport completes */
	struct raft_uv_connect *outer; /* raft's request */
	char address[256];
	uv_write_t write;
	uint8_t proof[RAFT_AUTH_LEN];
};

static void auth_written(uv_write_t *w, int status)
{
	free(w->data);
}

static void auth_connected(struct raft_uv_connect *inner, struct uv_stream_s *stream, int status)
{
	struct auth_connect *a = inner->data;
	struct raft_uv_connect *outer = a->outer;
	uint64_t t = now_ns() / 1000000000ull;
	uv_buf_t buf;

	if (status != 0 || !stream) {
		free(a);
		outer->cb(outer, stream, status);
		return;
	}
	for (int i = 0; i < 8; i++)
		a->proof[i] = (uint8_t)(t >> (8 * i));
	raft_auth_mac(a->c, t, a->c->self, a->address, a->proof + 8);
	buf = uv_buf_init((char *)a->proof, RAFT_AUTH_LEN);
	a->write.data = a; /* freed when written (or cancelled by a close) */
	if (uv_write(&a->write, stream, &buf, 1, auth_written) != 0)
		free(a);
	/* libuv keeps writes in order: raft's first message follows the proof. */
	outer->cb(outer, stream, 0);
}

static void filter_accept(struct raft_uv_transport *tcp, raft_id id, const char *address,
			  struct uv_stream_s *stream)
{
	struct consensus *c = tcp->data;
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	char ip[INET6_ADDRSTRLEN] = "?";

	if (uv_tcp_getpeername((uv_tcp_t *)stream, (struct sockaddr *)&ss, &len) == 0 &&
	    ss.ss_family == AF_INET) {
		struct in_addr a = ((struct sockaddr_in *)&ss)->sin_addr;

		for (int i = 0; i < c->n_allowed; i++) {
			struct pending_accept *p;

			if (c->allowed[i].s_addr != a.s_addr)
				continue;
			if (!c->auth) {
				c->accept_cb(&c->filter, id, address, stream);
				return;
			}
			/* A peer's address: now its proof of the key. */
			p = calloc(1, sizeof(*p));
			if (p) {
				p->c = c;
				p->stream = stream;
				p->id = id;
				p->since_ns = now_ns();
				snprintf(p->address, sizeof(p->address), "%s", address);
				stream->data = p;
				if (uv_read_start(stream, auth_alloc, auth_read) == 0) {
					p->next = c->pending;
					c->pending = p;
					return;
				}
				free(p);
			}
			break;
		}
		inet_ntop(AF_INET, &a, ip, sizeof(ip));
	}
	/* Not a peer: closed before raft sees a byte of it; logged at most every 10 s. */
	log_refusal(c, ip, "not in -peers");
	uv_close((uv_handle_t *)stream, free_stream);
}

static int filter_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
	struct consensus *c = t->impl;
	int rv;

	c->accept_cb = cb;
	c->transport.data = c;
	rv = c->transport.listen(&c->transport, filter_accept);
	if (rv != 0)
		memcpy(t->errmsg, c->transport.errmsg, sizeof(t->errmsg));
	return rv;
}

static int filter_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
			  const char *address, raft_uv_connect_cb cb)
{
	struct consensus *c = t->impl;
	struct auth_connect *a;
	int rv;

	if (!c->auth) {
		rv = c->transport.connect(&c->transport, req, id, address, cb);
		if (rv != 0)
			memcpy(t->errmsg, c->transport.errmsg, sizeof(t->errmsg));
		return rv;
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		return RAFT_NOMEM;
	a->c = c;
	a->outer = req;
	req->cb = cb;
	a->inner.data = a;
	snprintf(a->address, sizeof(a->address), "%s", address);
	rv = c->transport.connect(&c->transport, &a->inner, id, address, auth_connected);
	if (rv != 0) {
		memcpy(t->errmsg, c->transport.errmsg, sizeof(t->errmsg));
		free(a);
	}
	return rv;
}

static void filter_closed(struct raft_uv_transport *tcp)
{
	struct consensus *c = tcp->data;

	if (c->close_cb)
		c->close_cb(&c->filter);
}

static void filter_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
	struct consensus *c = t->impl;

	/* Incoming connections still reading their proof die with the transport. */
	while (c->pending) {
		struct pending_accept *p = c->pending;

		c->pending = p->next;
		uv_read_stop(p->stream);
		uv_close((uv_handle_t *)p->stream, free_stream);
		free(p);
	}
	c->close_cb = cb;
	c->transport.data = c;
	c->transport.close(&c->transport, filter_closed);
}

/* The IPv4 addresses of every peer (host names resolved once, at start). */
static int resolve_peers(struct consensus *c)
{
	c->allowed = calloc((size_t)c->opt.n_peers * 8 + 1, sizeof(*c->allowed));
	if (!c->allowed)
		return -ENOMEM;
	for (int i = 0; i < c->opt.n_peers; i++) {
		const char *addr = c->opt.peers[i], *colon = strrchr(addr, ':');
		char host[256];
		struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res,
				*p;
		size_t hl = colon ? (size_t)(colon - addr) : strlen(addr);

		if (hl >= sizeof(host))
			return -EINVAL;
		memcpy(host, addr, hl);
		host[hl] = '\0';
		if (getaddrinfo(host, NULL, &hints, &res) != 0) {
			log_error("consensus: cannot resolve peer %s", host);
			return -EINVAL;
		}
		for (p = res; p && c->n_allowed < c->opt.n_peers * 8; p = p->ai_next)
			c->allowed[c->n_allowed++] = ((struct sockaddr_in *)p->ai_addr)->sin_addr;
		freeaddrinfo(res);
	}
	return 0;
}

static int raft_setup(struct consensus *c)
{
	struct raft_configuration conf;
	raft_id self_id = raft_digest(c->self, 0);
	int rv;

	rv = uv_loop_init(&c->loop);
	if (rv != 0)
		return -EIO;
	rv = raft_uv_tcp_init(&c->transport, &c->loop);
	if (rv != 0)
		return -EIO;
	if (resolve_peers(c) < 0)
		return -EINVAL;
	if (c->opt.auth_key && *c->opt.auth_key) {
		static const char label[] = "kelp raft v1";

		c->auth = true;
		hmac_sha256(c->opt.auth_key, strlen(c->opt.auth_key), label, sizeof(label) - 1,
			    c->auth_mac_key);
	}
	memset(&c->filter, 0, sizeof(c->filter));
	c->filter.impl = c;
	c->filter.init = filter_init;
	c->filter.listen = filter_listen;
	c->filter.connect = filter_connect;
	c->filter.close = filter_close;
	rv = raft_uv_init(&c->io, &c->loop, c->dir, &c->filter);
	if (rv != 0) {
		log_error("consensus: cannot open the Raft directory %s: %s", c->dir,
			  raft_strerror(rv));
		return -EIO;
	}
	c->fsm.version = 1;
	c->fsm.data = c;
	c->fsm.apply = fsm_apply;
	c->fsm.snapshot = fsm_snapshot;
	c->fsm.restore = fsm_restore;
	rv = raft_init(&c->raft, &c->io, &c->fsm, self_id, c->self);
	if (rv != 0) {
		log_error("consensus: raft_init: %s", raft_strerror(rv));
		return -EIO;
	}
	raft_configuration_init(&conf);
	for (int i = 0; i < c->opt.n_peers; i++) {
		rv = raft_configuration_add(&conf, raft_digest(c->opt.peers[i], 0), c->opt.peers[i],
					    RAFT_VOTER);
		if (rv != 0) {
			raft_configuration_close(&conf);
			log_error("consensus: bad peer %s: %s", c->opt.peers[i], raft_strerror(rv));
			return -EINVAL;
		}
	}
	rv = raft_bootstrap(&c->raft, &conf);
	raft_configuration_close(&conf);
	if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
		log_error("consensus: bootstrap: %s", raft_strerror(rv));
		return -EIO;
	}
	raft_set_election_timeout(&c->raft,
				  c->opt.election_timeout_ms ? c->opt.election_timeout_ms : 1000);
	raft_set_heartbeat_timeout(
	    &c->raft, (c->opt.election_timeout_ms ? c->opt.election_timeout_ms : 1000) / 10);
	raft_set_pre_vote(&c->raft, true);
	raft_set_snapshot_threshold(&c->raft,
				    c->opt.snapshot_threshold ? c->opt.snapshot_threshold : 256);
	raft_set_snapshot_trailing(&c->raft, 64);
	raft_uv_set_connect_retry_delay(&c->io, 200);
	rv = raft_start(&c->raft);
	if (rv != 0) {
		log_error("consensus: raft_start: %s (%s)", raft_strerror(rv),
			  raft_errmsg(&c->raft));
		return -EIO;
	}
	uv_async_init(&c->loop, &c->wake, drain_queue);
	c->wake.data = c;
	uv_timer_init(&c->loop, &c->timer);
	c->timer.data = c;
	uv_timer_start(&c->timer, on_timer, 50, 50);
	return 0;
}

int consensus_start(const struct consensus_options *opt, const struct consensus_fsm *fsm,
		    struct consensus **out)
{
	struct consensus *c = calloc(1, sizeof(*c));
	bool self_listed = false;
	int ret;

	if (!c)
		return -ENOMEM;
	for (int i = 0; i < opt->n_peers; i++)
		self_listed |= !strcmp(opt->peers[i], opt->self);
	if (!self_listed) {
		log_error("consensus: this node %s is not in the peer list", opt->self);
		free(c);
		return -EINVAL;
	}
	c->opt = *opt;
	c->fsm_cb = *fsm;
	c->dir = strdup(opt->dir);
	c->self = strdup(opt->self);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	ret = mkdir_p(opt->dir, 0755);
	if (ret == 0)
		ret = raft_setup(c);
	if (ret < 0) {
		free(c->dir);
		free(c->self);
		free(c);
		return ret;
	}
	if (pthread_create(&c->thread, NULL, loop_thread, c) != 0) {
		free(c);
		return -EAGAIN;
	}
	c->started = true;
	*out = c;
	return 0;
}

void consensus_stop(struct consensus *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_mutex_unlock(&c->lock);
	uv_async_send(&c->wake);
	pthread_join(c->thread, NULL);
	raft_uv_close(&c->io);
	raft_uv_tcp_close(&c->transport);
	uv_loop_close(&c->loop);
	free(c->allowed);
	free(c->dir);
	free(c->self);
	free(c);
}

int consensus_propose(struct consensus *c, const void *cmd, size_t len, int timeout_ms)
{
	struct proposal *p;
	struct timespec deadline;
	int ret;

	if (!consensus_is_leader(c))
		return -EPERM;
	p = calloc(1, sizeof(*p) + len);
	if (!p)
		return -ENOMEM;
	p->c = c;
	p->cmd = p + 1;
	p->len = len;
	memcpy(p->cmd, cmd, len);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&c->lock);
	if (c->stopping) {
		pthread_mutex_unlock(&c->lock);
		free(p);
		return -EPERM;
	}
	p->next = c->queue;
	c->queue = p;
	pthread_mutex_unlock(&c->lock);
	uv_async_send(&c->wake);
	pthread_mutex_lock(&c->lock);
	while (!p->done)
		if (pthread_cond_timedwait(&c->cond, &c->lock, &deadline) != 0)
			break;
	if (!p->done) {
		p->abandoned = true; /* apply_done frees it */
		pthread_mutex_unlock(&c->lock);
		return -ETIMEDOUT;
	}
	ret = p->status;
	pthread_mutex_unlock(&c->lock);
	free(p);
	return ret;
}

bool consensus_is_leader(struct consensus *c)
{
	bool v;

	pthread_mutex_lock(&c->lock);
	v = c->is_leader;
	pthread_mutex_unlock(&c->lock);
	return v;
}

bool consensus_leader(struct consensus *c, char *buf, size_t cap)
{
	pthread_mutex_lock(&c->lock);
	snprintf(buf, cap, "%s", c->leader);
	pthread_mutex_unlock(&c->lock);
	return buf[0] != '\0';
}

uint64_t consensus_term(struct consensus *c)
{
	uint64_t t;

	pthread_mutex_lock(&c->lock);
	t = c->term;
	pthread_mutex_unlock(&c->lock);
	return t;
}
