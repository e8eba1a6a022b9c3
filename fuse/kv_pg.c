/*
 * kv_pg: the kv engine (fuse/kv.h) on PostgreSQL through libpq, the only file that
 * includes libpq-fe.h. Any number of mounts may use one database at once.
 *
 * Schema (created by the first mount of an empty database, under an advisory lock):
 *   kelp_format (name text primary key, value text)  format = 1, cluster_id = TopologyId
 *   kelp_kv (k bytea primary key, v bytea)           every table: k = table byte + key
 *   kelp_ino_seq, kelp_gc_seq                        sequences, INCREMENT 1024
 * One table keeps a transaction's reads and writes in one index (bytea compares as
 * memcmp, the order kv.h promises). Read-write transactions run at SERIALIZABLE,
 * read-only ones at REPEATABLE READ READ ONLY (one snapshot, never a conflict).
 * 40001 (serialization failure) and 40P01 (deadlock) become -EAGAIN: meta.c runs the
 * transaction again. A lost connection becomes -ENOTCONN and is reopened at the next
 * transaction.
 *
 * Inode numbers and gc sequence numbers come from the sequences a block of 1024 at a
 * time per mount (nextval is outside every transaction: no conflicts, never the same
 * block twice), handed out from memory; a restart skips the rest of a block.
 *
 * Connections: a pool of -connections (default 8) opened on demand; a transaction
 * holds one from begin to commit/abort. Statements are prepared once per connection,
 * parameters and results are binary.
 *
 * Round trips: every connection is in libpq's pipeline mode. BEGIN is sent with the
 * transaction's first statement, puts and deletes are sent without waiting (errors at
 * the next statement that waits, or the commit, failing the transaction), and the
 * ROLLBACK that ends a read-only transaction is not waited for (read with the next use
 * of the connection). A prefetch (kv.h) sends a transaction's first reads together
 * and keeps their results for the gets and scans that follow. A create is 2 round trips
 * (the parent and the name prefetched, then COMMIT with the writes), a lookup 1 (a
 * join), a stat 1. Every wait for the server is counted (kv.round_trips).
 */
#include "fuse/kv.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/base/log.h"
#include "cluster/base/util.h"

#define PG_FORMAT     1
#define ID_BLOCK      1024
#define SCAN_BATCH    256
#define KEY_MAX	      1024
#define DEFAULT_CONNS 8
#define IDLE_TXN_MS   "5000"

/* What a query sent in pipeline mode is waiting for. */
enum want { W_SYNC, W_IGNORE, W_CHECK, W_KEEP };

struct pg_conn {
	PGconn *c;
	bool busy;
	bool broken;	 /* lost: reopened at the next use */
	enum want *want; /* queries and syncs sent whose results are unread, in order */
	int n_want, cap_want;
};

struct kv_pg {
	struct kv base;
	char *url;
	char masked[512];
	pthread_mutex_t lock; /* conns[].busy, ids */
	pthread_cond_t cond;
	struct pg_conn *conns;
	int n_conns;
	uint64_t id_next[2], id_end[2];
	/* Lazy commits (kv_txn.lazy) that returned, and how many of them a commit that
	 * waited for the WAL flush is known to cover (atomic): equal, and p_sync of this
	 * process's own has nothing to flush. */
	uint64_t lazy_done, lazy_flushed;
	/* The database's synchronous_commit is off (at open): no commit waits for the
	 * flush, so every one counts as lazy and p_sync flushes them itself. */
	bool commits_lazy;
};

/* A read the transaction prefetched (kv_ops.prefetch): its bounds, with the table byte. */
struct pf {
	uint8_t *lo, *hi; /* a get: lo is the key */
	int lol, hil;
	bool scan, reverse;
	bool valid;  /* false once a put or del of the transaction touched it */
	int limit;   /* rows asked for: as many came back means there may be more */
	PGresult *r; /* kept in res */
};

struct pg_txn {
	struct kv_txn base;
	struct pg_conn *pc;
	PGresult **res; /* kept until the end: values point into them */
	int n_res, cap_res;
	struct pf *pf;
	int n_pf, cap_pf;
	bool begin_owed; /* a read-only transaction: BEGIN goes with its first statement */
	bool began;	 /* BEGIN sent: ROLLBACK at the end */
	bool bare;	 /* a single statement ran without BEGIN (kv_txn.single) */
};

enum stmt {
	S_GET,
	S_FOLLOW,
	S_PUT,
	S_DEL,
	S_SCAN,
	S_RSCAN,
	S_SCAN_FOLLOW,
	S_COUNT,
	S_NEXT_INO,
	S_NEXT_GC,
	S_N
};

static const char *const stmt_sql[S_N] = {
    [S_GET] = "SELECT v FROM kelp_kv WHERE k = $1",
    [S_FOLLOW] = "SELECT a.v, b.v FROM kelp_kv a LEFT JOIN kelp_kv b ON b.k = $2::bytea || a.v "
		 "WHERE a.k = $1",
    [S_PUT] = "INSERT INTO kelp_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = "
	      "EXCLUDED.v",
    [S_DEL] = "DELETE FROM kelp_kv WHERE k = $1",
    [S_SCAN] = "SELECT k, v FROM kelp_kv WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3",
    [S_RSCAN] = "SELECT k, v FROM kelp_kv WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3",
    [S_SCAN_FOLLOW] = "SELECT a.k, a.v, b.v FROM kelp_kv a LEFT JOIN kelp_kv b ON b.k = "
		      "$4::bytea || a.v WHERE a.k >= $1 AND a.k < $2 ORDER BY a.k LIMIT $3",
    [S_COUNT] = "SELECT count(*) FROM kelp_kv WHERE k >= $1 AND k < $2",
    [S_NEXT_INO] = "SELECT nextval('kelp_ino_seq')",
    [S_NEXT_GC] = "SELECT nextval('kelp_gc_seq')",
};

static const char *const stmt_name[S_N] = {
    [S_GET] = "get",
    [S_FOLLOW] = "follow",
    [S_PUT] = "put",
    [S_DEL] = "del",
    [S_SCAN] = "scan",
    [S_RSCAN] = "rscan",
    [S_SCAN_FOLLOW] = "scan_follow",
    [S_COUNT] = "count",
    [S_NEXT_INO] = "next_ino",
    [S_NEXT_GC] = "next_gc",
};

bool kv_is_pg_url(const char *spec)
{
	return spec && (!strncmp(spec, "postgres://", 11) || !strncmp(spec, "postgresql://", 13));
}

void kv_mask_url(const char *url, char *out, size_t cap)
{
	const char *scheme = strstr(url, "://"), *at, *colon, *pw;
	size_t n;

	snprintf(out, cap, "%s", url);
	if (!scheme)
		return;
	scheme += 3;
	at = strchr(scheme, '@');
	colon = strchr(scheme, ':');
	if (at && colon && colon < at) {
		n = (size_t)(colon + 1 - url);
		snprintf(out, cap, "%.*s***%s", (int)n, url, at);
	}
	/* password=... in the query string */
	pw = strstr(out, "password=");
	if (pw) {
		char rest[512];
		const char *amp = strchr(pw, '&');

		snprintf(rest, sizeof(rest), "%s", amp ? amp : "");
		snprintf((char *)pw, cap - (size_t)(pw - out), "password=***%s", rest);
	}
}

/* ---------------------------------------------------------------- errors */

static bool conn_lost(PGconn *c, const char *state)
{
	if (PQstatus(c) != CONNECTION_OK)
		return true;
	/* 08: connection exceptions; 57P01-3: the server shutting down or starting */
	return state && (!strncmp(state, "08", 2) || !strcmp(state, "57P01") ||
			 !strcmp(state, "57P02") || !strcmp(state, "57P03"));
}

/* The errno of a failed result (NULL res: the connection failed). */
static int pg_error(struct kv_pg *pg, PGconn *c, PGresult *res, const char *what)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (state && (!strcmp(state, "40001") || !strcmp(state, "40P01")))
		return -EAGAIN;
	if (conn_lost(c, state))
		return -ENOTCONN;
	if (state && !strcmp(state, "53100"))
		return -ENOSPC;
	log_error("meta: postgres %s: %s: %s", pg->masked, what,
		  res ? PQresultErrorMessage(res) : PQerrorMessage(c));
	return -EIO;
}

/* ---------------------------------------------------------------- connections */

static void notice(void *ctx, const char *message)
{
	log_debug("meta: postgres: %s", message);
}

static PGconn *pg_connect(struct kv_pg *pg, char *err, size_t cap)
{
	const char *keys[] = {"connect_timeout",
			      "keepalives_idle",
			      "keepalives_interval",
			      "keepalives_count",
			      "application_name",
			      "dbname",
			      NULL};
	const char *vals[] = {"5", "10", "3", "3", "kelp", pg->url, NULL};
	PGconn *c = PQconnectdbParams(keys, vals, 1);

	if (!c) {
		snprintf(err, cap, "out of memory");
		return NULL;
	}
	if (PQstatus(c) != CONNECTION_OK) {
		snprintf(err, cap, "%s", PQerrorMessage(c));
		for (char *p = err + strlen(err); p > err && (p[-1] == '\n' || p[-1] == ' ');)
			*--p = '\0';
		PQfinish(c);
		return NULL;
	}
	PQsetNoticeProcessor(c, notice, NULL);
	/*
	 * A transaction left open by a mount that stopped (SIGSTOP, a frozen VM) or was cut
	 * off holds its row locks until the server gives up on it: other mounts' writes to
	 * those rows would wait as long. Ours never wait for anything but the server
	 * between statements, so the server aborts one idle for IDLE_TXN_MS (the mount,
	 * when it comes back, finds the connection gone and runs the transaction again).
	 */
	{
		PGresult *r = PQexec(c, "SET idle_in_transaction_session_timeout = " IDLE_TXN_MS);

		if (PQresultStatus(r) != PGRES_COMMAND_OK)
			log_warn("meta: cannot set idle_in_transaction_session_timeout: %s",
				 PQerrorMessage(c));
		PQclear(r);
	}
	return c;
}

static int prepare_all(struct kv_pg *pg, PGconn *c)
{
	for (int i = 0; i < S_N; i++) {
		PGresult *r = PQprepare(c, stmt_name[i], stmt_sql[i], 0, NULL);
		int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : pg_error(pg, c, r, "prepare");

		PQclear(r);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static void conn_drop(struct pg_conn *pc)
{
	if (pc->c)
		PQfinish(pc->c);
	pc->c = NULL;
	pc->broken = false;
	pc->n_want = 0;
}

/* Takes a free connection (opened if needed, in pipeline mode). */
static int conn_take(struct kv_pg *pg, struct pg_conn **out)
{
	struct pg_conn *pc = NULL;
	char err[512];

	pthread_mutex_lock(&pg->lock);
	for (;;) {
		for (int i = 0; i < pg->n_conns && !pc; i++)
			if (!pg->conns[i].busy && pg->conns[i].c)
				pc = &pg->conns[i];
		for (int i = 0; i < pg->n_conns && !pc; i++)
			if (!pg->conns[i].busy)
				pc = &pg->conns[i];
		if (pc)
			break;
		pthread_cond_wait(&pg->cond, &pg->lock);
	}
	pc->busy = true;
	pthread_mutex_unlock(&pg->lock);
	if (pc->broken || (pc->c && PQstatus(pc->c) != CONNECTION_OK))
		conn_drop(pc);
	if (!pc->c) {
		pc->c = pg_connect(pg, err, sizeof(err));
		if (pc->c && (prepare_all(pg, pc->c) < 0 || !PQenterPipelineMode(pc->c))) {
			conn_drop(pc);
			snprintf(err, sizeof(err), "cannot prepare statements");
		}
		if (!pc->c) {
			log_debug("meta: postgres %s: %s", pg->masked, err);
			pthread_mutex_lock(&pg->lock);
			pc->busy = false;
			pthread_cond_signal(&pg->cond);
			pthread_mutex_unlock(&pg->lock);
			return -ENOTCONN;
		}
	}
	*out = pc;
	return 0;
}

static void conn_give(struct kv_pg *pg, struct pg_conn *pc)
{
	if (pc->broken)
		conn_drop(pc);
	pthread_mutex_lock(&pg->lock);
	pc->busy = false;
	pthread_cond_signal(&pg->cond);
	pthread_mutex_unlock(&pg->lock);
}

static int want_push(struct pg_conn *pc, enum want w)
{
	if (pc->n_want == pc->cap_want) {
		int cap = pc->cap_want ? pc->cap_want * 2 : 32;
		enum want *p = realloc(pc->want, (size_t)cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		pc->want = p;
		pc->cap_want = cap;
	}
	pc->want[pc->n_want++] = w;
	return 0;
}

/*
 * Reads every result the connection owes, in order: the first error of a W_CHECK or
 * W_KEEP query is returned; the i-th W_KEEP result goes to keep[i] for i < n_keep (the
 * caller clears them; the others are cleared here). One wait for the server: counted
 * as a round trip.
 */
static int drain_n(struct kv_pg *pg, struct pg_conn *pc, PGresult **keep, int n_keep)
{
	int rc = 0, kept = 0;

	__atomic_add_fetch(&pg->base.round_trips, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < pc->n_want; i++) {
		PGresult *r = PQgetResult(pc->c);
		ExecStatusType st;

		if (!r) {
			pc->broken = true;
			return -ENOTCONN;
		}
		st = PQresultStatus(r);
		if (pc->want[i] == W_SYNC) {
			PQclear(r);
			if (st != PGRES_PIPELINE_SYNC) {
				pc->broken = true;	    /* out of step: start afresh */
				return rc ? rc : -ENOTCONN; /* out of step: a new connection */
			}
			continue;
		}
		if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
			if (pc->want[i] == W_KEEP && kept < n_keep)
				keep[kept] = r;
			else
				PQclear(r);
		} else {
			if (st != PGRES_PIPELINE_ABORTED && pc->want[i] != W_IGNORE && !rc)
				rc = pg_error(pg, pc->c, r, "query");
			else if (conn_lost(pc->c, NULL) && !rc)
				rc = -ENOTCONN;
			PQclear(r);
		}
		if (pc->want[i] == W_KEEP)
			kept++;
		/* the end of this query's results */
		r = PQgetResult(pc->c);
		if (r) {
			PQclear(r);
			pc->broken = true;
			return rc ? rc : -ENOTCONN; /* out of step: a new connection */
		}
	}
	pc->n_want = 0;
	if (rc == -ENOTCONN)
		pc->broken = true;
	return rc;
}

static int drain(struct kv_pg *pg, struct pg_conn *pc, PGresult **keep)
{
	return drain_n(pg, pc, keep, keep ? 1 : 0);
}

/* Sends a sync and reads everything owed (see drain). */
static int sync_drain(struct kv_pg *pg, struct pg_conn *pc, PGresult **keep)
{
	int rc;

	if (!PQpipelineSync(pc->c)) {
		pc->broken = true;
		return -ENOTCONN;
	}
	rc = want_push(pc, W_SYNC);
	return rc < 0 ? rc : drain(pg, pc, keep);
}

/* ---------------------------------------------------------------- statements */

static struct kv_pg *pg_of(struct kv_txn *t)
{
	return (struct kv_pg *)t->kv;
}

static struct pg_txn *ptx(struct kv_txn *t)
{
	return (struct pg_txn *)t;
}

static int send_sql(struct pg_conn *pc, const char *sql, enum want w);

/*
 * Before a statement of the transaction: the BEGIN of a read-only one goes first,
 * unless the caller said it makes one statement only (kv_txn.single), which then runs
 * alone (its own snapshot, as every statement outside a transaction).
 */
static int ensure_begin(struct kv_txn *t)
{
	struct pg_txn *x = ptx(t);

	if (x->bare) {
		log_error("meta: postgres: a second statement in a one-statement transaction");
		return -EIO;
	}
	if (!x->begin_owed)
		return 0;
	x->begin_owed = false;
	if (t->single) {
		x->bare = true;
		return 0;
	}
	x->began = true;
	return send_sql(x->pc, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", W_CHECK);
}

/* Sends a prepared statement, no wait. */
static int send(struct kv_txn *t, enum stmt s, int n, const char *const *vals, const int *lens,
		const int *fmts, enum want w)
{
	struct pg_conn *pc = ptx(t)->pc;
	int rc = ensure_begin(t);

	if (rc < 0)
		return rc;

	if (!PQsendQueryPrepared(pc->c, stmt_name[s], n, vals, lens, fmts, 1)) {
		pc->broken = true;
		return -ENOTCONN;
	}
	return want_push(pc, w);
}

static int keep_result(struct pg_txn *x, PGresult *r)
{
	if (x->n_res == x->cap_res) {
		int cap = x->cap_res ? x->cap_res * 2 : 16;
		PGresult **p = realloc(x->res, (size_t)cap * sizeof(*p));

		if (!p) {
			PQclear(r);
			return -ENOMEM;
		}
		x->res = p;
		x->cap_res = cap;
	}
	x->res[x->n_res++] = r;
	return 0;
}

/*
 * Runs a prepared statement and waits for it (and for everything sent before it);
 * *out is kept by the transaction.
 */
static int run(struct kv_txn *t, enum stmt s, int n, const char *const *vals, const int *lens,
	       const int *fmts, PGresult **out)
{
	struct pg_txn *x = ptx(t);
	PGresult *r = NULL;
	int rc = send(t, s, n, vals, lens, fmts, W_KEEP);

	if (rc == 0)
		rc = sync_drain(pg_of(t), x->pc, &r);
	if (rc < 0) {
		if (r)
			PQclear(r);
		return rc;
	}
	if (!r) {
		x->pc->broken = true; /* out of step: a new connection */
		return -ENOTCONN;
	}
	rc = keep_result(x, r);
	if (rc == 0 && out)
		*out = r;
	return rc;
}

/* The table byte, then the key. */
static int tkey(uint8_t *buf, int table, const void *k, size_t klen)
{
	if (klen + 1 > KEY_MAX)
		return -ENAMETOOLONG;
	buf[0] = (uint8_t)table;
	memcpy(buf + 1, k, klen);
	return (int)klen + 1;
}

static int simple(PGconn *c, const char *sql, struct kv_pg *pg)
{
	PGresult *r = PQexec(c, sql);
	int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : pg_error(pg, c, r, sql);

	PQclear(r);
	return rc;
}

/* Sends a statement without parameters, no wait. */
static int send_sql(struct pg_conn *pc, const char *sql, enum want w)
{
	if (!PQsendQueryParams(pc->c, sql, 0, NULL, NULL, NULL, NULL, 1)) {
		pc->broken = true;
		return -ENOTCONN;
	}
	return want_push(pc, w);
}

static int p_begin(struct kv *kv, bool write, struct kv_txn **out)
{
	struct kv_pg *pg = (struct kv_pg *)kv;
	struct pg_txn *x = calloc(1, sizeof(*x));
	int rc;

	if (!x)
		return -ENOMEM;
	rc = conn_take(pg, &x->pc);
	if (rc < 0) {
		free(x);
		return rc;
	}
	/* The previous transaction's ROLLBACK may still be owed: read with this one. A
	 * read-only transaction's BEGIN waits for its first statement (ensure_begin). */
	if (write) {
		rc = send_sql(x->pc, "BEGIN ISOLATION LEVEL SERIALIZABLE", W_CHECK);
		x->began = true;
	} else {
		x->begin_owed = true;
	}
	if (rc < 0) {
		conn_give(pg, x->pc);
		free(x);
		return rc;
	}
	x->base.kv = kv;
	x->base.write = write;
	__atomic_add_fetch(&pg->base.txns, 1, __ATOMIC_RELAXED);
	*out = &x->base;
	return 0;
}

static void txn_free(struct kv_txn *t)
{
	struct pg_txn *x = ptx(t);

	for (int i = 0; i < x->n_res; i++)
		PQclear(x->res[i]);
	free(x->res);
	for (int i = 0; i < x->n_pf; i++)
		free(x->pf[i].lo);
	free(x->pf);
	conn_give(pg_of(t), x->pc);
	free(x);
}

static struct pf *pf_get(struct pg_txn *x, const uint8_t *key, int kl);
static struct pf *pf_scan(struct pg_txn *x, const uint8_t *lo, int lol, const uint8_t *hi, int hil,
			  bool reverse);
static void pf_touch(struct pg_txn *x, const uint8_t *key, int kl);

static int p_get(struct kv_txn *t, int table, const void *k, size_t klen, const uint8_t **v,
		 size_t *vlen)
{
	uint8_t key[KEY_MAX];
	int kl = tkey(key, table, k, klen), fmt = 1, rc;
	const char *vals[1] = {(const char *)key};
	struct pf *p;
	PGresult *r;

	if (kl < 0)
		return kl;
	p = pf_get(ptx(t), key, kl);
	if (p)
		r = p->r;
	else if ((rc = run(t, S_GET, 1, vals, &kl, &fmt, &r)) < 0)
		return rc;
	if (PQntuples(r) == 0)
		return -ENOENT;
	*v = (const uint8_t *)PQgetvalue(r, 0, 0);
	*vlen = (size_t)PQgetlength(r, 0, 0);
	return 0;
}

/* One statement (a join): one round trip. */
static int p_get_follow(struct kv_txn *t, int table, const void *k, size_t klen, int table2,
			const uint8_t **v, size_t *vlen, const uint8_t **v2, size_t *v2len)
{
	uint8_t key[KEY_MAX], t2 = (uint8_t)table2;
	int kl = tkey(key, table, k, klen), lens[2] = {0, 1}, fmts[2] = {1, 1}, rc;
	const char *vals[2] = {(const char *)key, (const char *)&t2};
	PGresult *r;

	if (kl < 0)
		return kl;
	lens[0] = kl;
	rc = run(t, S_FOLLOW, 2, vals, lens, fmts, &r);
	if (rc < 0)
		return rc;
	if (PQntuples(r) == 0)
		return -ENOENT;
	*v = (const uint8_t *)PQgetvalue(r, 0, 0);
	*vlen = (size_t)PQgetlength(r, 0, 0);
	if (PQgetisnull(r, 0, 1)) {
		*v2 = NULL;
		*v2len = 0;
	} else {
		*v2 = (const uint8_t *)PQgetvalue(r, 0, 1);
		*v2len = (size_t)PQgetlength(r, 0, 1);
	}
	return 0;
}

/*
 * After n W_KEEP statements were sent: one sync, everything owed read (the results of
 * statements sent before them too, so no earlier wait is needed), the n results kept
 * by the transaction in rs[]. One round trip.
 */
static int sync_keep(struct kv_txn *t, int n, PGresult **rs)
{
	struct pg_txn *x = ptx(t);
	int rc;

	memset(rs, 0, (size_t)n * sizeof(*rs));
	if (!PQpipelineSync(x->pc->c)) {
		x->pc->broken = true;
		return -ENOTCONN;
	}
	rc = want_push(x->pc, W_SYNC);
	if (rc == 0)
		rc = drain_n(pg_of(t), x->pc, rs, n);
	for (int i = 0; i < n && rc == 0; i++)
		if (!rs[i]) {
			x->pc->broken = true; /* out of step: a new connection */
			rc = -ENOTCONN;
		}
	for (int i = 0; i < n; i++) {
		if (rs[i] && rc < 0) {
			PQclear(rs[i]);
			rs[i] = NULL;
		} else if (rs[i] && (rc = keep_result(x, rs[i])) < 0) {
			rs[i] = NULL; /* cleared by keep_result */
		}
	}
	return rc;
}

/* n gets sent at once, one sync, one round trip. */
static int p_get_many(struct kv_txn *t, int table, int n, const void *const *keys,
		      const size_t *lens,
		      int (*fn)(void *ctx, int i, const uint8_t *v, size_t vlen), void *ctx)
{
	PGresult **rs;
	int rc = 0;

	if (n <= 0)
		return 0;
	rs = calloc((size_t)n, sizeof(*rs));
	if (!rs)
		return -ENOMEM;
	for (int i = 0; i < n && rc == 0; i++) {
		uint8_t key[KEY_MAX];
		int kl = tkey(key, table, keys[i], lens[i]), fmt = 1;
		const char *vals[1] = {(const char *)key};

		rc = kl < 0 ? kl : send(t, S_GET, 1, vals, &kl, &fmt, W_KEEP);
	}
	if (rc == 0)
		rc = sync_keep(t, n, rs);
	else if (!ptx(t)->pc->broken)
		ptx(t)->pc->broken = true; /* some sent, some not: start afresh */
	for (int i = 0; i < n && rc == 0; i++) {
		PGresult *r = rs[i];

		rc = fn(ctx, i, PQntuples(r) ? (const uint8_t *)PQgetvalue(r, 0, 0) : NULL,
			PQntuples(r) ? (size_t)PQgetlength(r, 0, 0) : 0);
	}
	free(rs);
	return rc > 0 ? 0 : rc;
}

/* ---------------------------------------------------------------- prefetch */

/* Keys compare as kv.h says: memcmp, shorter first on a tie. */
static int key_cmp(const uint8_t *a, int al, const uint8_t *b, int bl)
{
	int c = memcmp(a, b, (size_t)(al < bl ? al : bl));

	return c ? c : al - bl;
}

static int scan_bounds(int table, const void *from, size_t flen, const void *to, size_t tlen,
		       uint8_t *lo, int *lol, uint8_t *hi, int *hil)
{
	*lol = tkey(lo, table, from, flen);
	if (*lol < 0)
		return *lol;
	if (to) {
		*hil = tkey(hi, table, to, tlen);
		if (*hil < 0)
			return *hil;
	} else {
		hi[0] = (uint8_t)(table + 1);
		*hil = 1;
	}
	return 0;
}

static int pf_add(struct pg_txn *x, const uint8_t *lo, int lol, const uint8_t *hi, int hil,
		  bool scan, bool reverse, int limit, PGresult *r)
{
	struct pf *p;

	if (x->n_pf == x->cap_pf) {
		int cap = x->cap_pf ? x->cap_pf * 2 : 8;
		struct pf *q = realloc(x->pf, (size_t)cap * sizeof(*q));

		if (!q)
			return -ENOMEM;
		x->pf = q;
		x->cap_pf = cap;
	}
	p = &x->pf[x->n_pf];
	memset(p, 0, sizeof(*p));
	p->lo = malloc((size_t)lol + (size_t)(scan ? hil : 0));
	if (!p->lo)
		return -ENOMEM;
	memcpy(p->lo, lo, (size_t)lol);
	p->lol = lol;
	if (scan) {
		p->hi = p->lo + lol;
		memcpy(p->hi, hi, (size_t)hil);
		p->hil = hil;
	}
	p->scan = scan;
	p->reverse = reverse;
	p->limit = limit;
	p->r = r;
	p->valid = true;
	x->n_pf++;
	return 0;
}

static int p_prefetch(struct kv_txn *t, const struct kv_read *rd, int n)
{
	struct pg_txn *x = ptx(t);
	PGresult **rs;
	int rc = 0, sent = 0;

	if (n <= 0)
		return 0;
	for (int i = 0; i < n; i++)
		if (rd[i].klen + 1 > KEY_MAX ||
		    (rd[i].scan && rd[i].to && rd[i].tlen + 1 > KEY_MAX))
			return -ENAMETOOLONG;
	rs = calloc((size_t)n, sizeof(*rs));
	if (!rs)
		return -ENOMEM;
	for (int i = 0; i < n && rc == 0; i++, sent++) {
		uint8_t lo[KEY_MAX + 1], hi[KEY_MAX];
		int lol, hil, fmts[3] = {1, 1, 0};
		char lim[16];

		if (!rd[i].scan) {
			lol = tkey(lo, rd[i].table, rd[i].key, rd[i].klen);
			if (lol < 0) {
				rc = lol;
				break;
			}
			const char *vals[1] = {(const char *)lo};

			rc = send(t, S_GET, 1, vals, &lol, fmts, W_KEEP);
			continue;
		}
		rc = scan_bounds(rd[i].table, rd[i].key, rd[i].klen, rd[i].to, rd[i].tlen, lo, &lol,
				 hi, &hil);
		if (rc < 0)
			break;
		snprintf(lim, sizeof(lim), "%d", rd[i].limit > 0 ? rd[i].limit : SCAN_BATCH);
		{
			const char *vals[3] = {(const char *)lo, (const char *)hi, lim};
			int lens[3] = {lol, hil, 0};

			rc = send(t, rd[i].reverse ? S_RSCAN : S_SCAN, 3, vals, lens, fmts, W_KEEP);
		}
	}
	if (rc == 0) {
		rc = sync_keep(t, n, rs);
	} else if (sent > 0) {
		x->pc->broken = true; /* some sent, some not: start afresh */
	}
	for (int i = 0; i < n && rc == 0; i++) {
		uint8_t lo[KEY_MAX + 1], hi[KEY_MAX];
		int lol, hil = 0;

		if (rd[i].scan)
			rc = scan_bounds(rd[i].table, rd[i].key, rd[i].klen, rd[i].to, rd[i].tlen,
					 lo, &lol, hi, &hil);
		else
			lol = tkey(lo, rd[i].table, rd[i].key, rd[i].klen);
		if (rc == 0)
			rc = pf_add(x, lo, lol, hi, hil, rd[i].scan, rd[i].reverse,
				    rd[i].limit > 0 ? rd[i].limit : SCAN_BATCH, rs[i]);
	}
	free(rs);
	return rc;
}

/* The prefetched get of key (NULL if none). */
static struct pf *pf_get(struct pg_txn *x, const uint8_t *key, int kl)
{
	for (int i = 0; i < x->n_pf; i++) {
		struct pf *p = &x->pf[i];

		if (p->valid && !p->scan && p->lol == kl && !memcmp(p->lo, key, (size_t)kl))
			return p;
	}
	return NULL;
}

static struct pf *pf_scan(struct pg_txn *x, const uint8_t *lo, int lol, const uint8_t *hi, int hil,
			  bool reverse)
{
	for (int i = 0; i < x->n_pf; i++) {
		struct pf *p = &x->pf[i];

		if (p->valid && p->scan && p->reverse == reverse && p->lol == lol &&
		    p->hil == hil && !memcmp(p->lo, lo, (size_t)lol) &&
		    !memcmp(p->hi, hi, (size_t)hil))
			return p;
	}
	return NULL;
}

/* A put or del of key: prefetched reads that may have seen it are stale. */
static void pf_touch(struct pg_txn *x, const uint8_t *key, int kl)
{
	for (int i = 0; i < x->n_pf; i++) {
		struct pf *p = &x->pf[i];

		if (!p->valid)
			continue;
		if (p->scan ? key_cmp(key, kl, p->lo, p->lol) >= 0 &&
				  key_cmp(key, kl, p->hi, p->hil) < 0
			    : p->lol == kl && !memcmp(p->lo, key, (size_t)kl))
			p->valid = false;
	}
}

static int p_put(struct kv_txn *t, int table, const void *k, size_t klen, const void *v,
		 size_t vlen)
{
	uint8_t key[KEY_MAX];
	int kl = tkey(key, table, k, klen), lens[2], fmts[2] = {1, 1};
	const char *vals[2] = {(const char *)key, vlen ? (const char *)v : ""};

	struct pg_conn *pc = ptx(t)->pc;
	int rc;

	if (kl < 0)
		return kl;
	lens[0] = kl;
	lens[1] = (int)vlen;
	pf_touch(ptx(t), key, kl);
	/* Not waited for (see the top); a long run of them is read now and then, so the
	 * server never blocks on results nobody reads. */
	rc = send(t, S_PUT, 2, vals, lens, fmts, W_CHECK);
	if (rc == 0 && pc->n_want >= 64)
		rc = sync_drain(pg_of(t), pc, NULL);
	return rc;
}

/* Not waited for, like a put. */
static int p_del(struct kv_txn *t, int table, const void *k, size_t klen)
{
	uint8_t key[KEY_MAX];
	int kl = tkey(key, table, k, klen), fmt = 1, rc;
	const char *vals[1] = {(const char *)key};
	struct pg_conn *pc = ptx(t)->pc;

	if (kl < 0)
		return kl;
	pf_touch(ptx(t), key, kl);
	rc = send(t, S_DEL, 1, vals, &kl, &fmt, W_CHECK);
	if (rc == 0 && pc->n_want >= 64)
		rc = sync_drain(pg_of(t), pc, NULL);
	return rc;
}

/* Moves a scan's bounds past key k (the last one seen): the next batch starts after it
 * (or, reversed, before it). */
static int scan_past(uint8_t *lo, int *lol, uint8_t *hi, int *hil, bool reverse, const uint8_t *k,
		     int kl)
{
	if (kl > KEY_MAX)
		return -EIO;
	if (!reverse) {
		memcpy(lo, k, (size_t)kl);
		lo[kl] = 0; /* the smallest key above k */
		*lol = kl + 1;
	} else {
		memcpy(hi, k, (size_t)kl);
		*hil = kl;
	}
	return 0;
}

/* Hands rows [0, rows) of r to fn while seen < limit (limit <= 0: no limit). */
static int scan_rows(PGresult *r, int rows, int limit, int *seen, kv_scan_fn fn, void *ctx)
{
	int rc = 0;

	for (int i = 0; i < rows && rc == 0 && !(limit > 0 && *seen >= limit); i++) {
		const uint8_t *k = (const uint8_t *)PQgetvalue(r, i, 0);
		int kl = PQgetlength(r, i, 0);

		if (kl < 1)
			continue;
		rc = fn(ctx, k + 1, (size_t)kl - 1, (const uint8_t *)PQgetvalue(r, i, 1),
			(size_t)PQgetlength(r, i, 1));
		(*seen)++;
	}
	return rc;
}

static int p_scan(struct kv_txn *t, int table, const void *from, size_t flen, const void *to,
		  size_t tlen, bool reverse, int limit, kv_scan_fn fn, void *ctx)
{
	uint8_t lo[KEY_MAX + 1], hi[KEY_MAX];
	int lol, hil, fmts[3] = {1, 1, 0}, seen = 0, rc;
	struct pg_txn *x = ptx(t);
	struct pf *p;

	rc = scan_bounds(table, from, flen, to, tlen, lo, &lol, hi, &hil);
	if (rc < 0)
		return rc;
	p = pf_scan(x, lo, lol, hi, hil, reverse);
	if (p) {
		/* The prefetched first rows; then the rest, if the batch's limit cut it. */
		int rows = PQntuples(p->r);

		rc = scan_rows(p->r, rows, limit, &seen, fn, ctx);
		if (rc)
			return rc < 0 ? rc : 0;
		if (rows < p->limit || (limit > 0 && seen >= limit))
			return 0;
		rc = scan_past(lo, &lol, hi, &hil, reverse,
			       (const uint8_t *)PQgetvalue(p->r, rows - 1, 0),
			       PQgetlength(p->r, rows - 1, 0));
		if (rc < 0)
			return rc;
	}
	for (;;) {
		int batch = limit > 0 && limit - seen < SCAN_BATCH ? limit - seen : SCAN_BATCH;
		char lim[16];
		const char *vals[3] = {(const char *)lo, (const char *)hi, lim};
		int lens[3] = {lol, hil, 0}, rows;
		PGresult *r;

		snprintf(lim, sizeof(lim), "%d", batch);
		rc = run(t, reverse ? S_RSCAN : S_SCAN, 3, vals, lens, fmts, &r);
		if (rc < 0)
			return rc;
		rows = PQntuples(r);
		rc = scan_rows(r, rows, limit, &seen, fn, ctx);
		if (rc == 0 && rows == batch && !(limit > 0 && seen >= limit)) {
			/* Go on after (or, reversed, before) the last key of this batch. */
			rc = scan_past(lo, &lol, hi, &hil, reverse,
				       (const uint8_t *)PQgetvalue(r, rows - 1, 0),
				       PQgetlength(r, rows - 1, 0));
		} else if (rc == 0) {
			rows = -1; /* done */
		}
		/* The callbacks are done with this batch (kv.h): a scan of a whole table
		 * holds one batch at a time. run() kept it last. */
		if (x->n_res > 0 && x->res[x->n_res - 1] == r) {
			PQclear(r);
			x->n_res--;
		}
		if (rc)
			return rc < 0 ? rc : 0;
		if (rows < 0)
			return 0;
	}
}

/* One statement (a range joined to the second table): one round trip. */
static int p_scan_follow(struct kv_txn *t, int table, const void *from, size_t flen, const void *to,
			 size_t tlen, int limit, int table2, kv_follow_fn fn, void *ctx)
{
	uint8_t lo[KEY_MAX + 1], hi[KEY_MAX], t2 = (uint8_t)table2;
	int lol, hil, fmts[4] = {1, 1, 0, 1}, rows, rc;
	char lim[16];
	const char *vals[4] = {(const char *)lo, (const char *)hi, lim, (const char *)&t2};
	int lens[4] = {0, 0, 0, 1};
	PGresult *r;

	rc = scan_bounds(table, from, flen, to, tlen, lo, &lol, hi, &hil);
	if (rc < 0)
		return rc;
	lens[0] = lol;
	lens[1] = hil;
	snprintf(lim, sizeof(lim), "%d", limit);
	rc = run(t, S_SCAN_FOLLOW, 4, vals, lens, fmts, &r);
	if (rc < 0)
		return rc;
	rows = PQntuples(r);
	for (int i = 0; i < rows && rc == 0; i++) {
		const uint8_t *k = (const uint8_t *)PQgetvalue(r, i, 0);
		int kl = PQgetlength(r, i, 0);
		bool absent = PQgetisnull(r, i, 2);

		if (kl < 1)
			continue;
		rc = fn(ctx, k + 1, (size_t)kl - 1, (const uint8_t *)PQgetvalue(r, i, 1),
			(size_t)PQgetlength(r, i, 1),
			absent ? NULL : (const uint8_t *)PQgetvalue(r, i, 2),
			absent ? 0 : (size_t)PQgetlength(r, i, 2));
	}
	return rc < 0 ? rc : 0;
}

static int p_count(struct kv_txn *t, int table, uint64_t *n)
{
	uint8_t lo[1] = {(uint8_t)table}, hi[1] = {(uint8_t)(table + 1)};
	const char *vals[2] = {(const char *)lo, (const char *)hi};
	int lens[2] = {1, 1}, fmts[2] = {1, 1}, rc;
	PGresult *r;

	rc = run(t, S_COUNT, 2, vals, lens, fmts, &r);
	if (rc < 0)
		return rc;
	if (PQntuples(r) != 1 || PQgetlength(r, 0, 0) != 8)
		return -EIO;
	*n = rd64((const uint8_t *)PQgetvalue(r, 0, 0));
	return 0;
}

static int p_next_id(struct kv_txn *t, enum kv_id id, uint64_t first, uint64_t *out)
{
	struct kv_pg *pg = pg_of(t);
	PGresult *r;
	uint64_t start;
	int rc;

	pthread_mutex_lock(&pg->lock);
	if (pg->id_next[id] < pg->id_end[id]) {
		*out = pg->id_next[id]++;
		pthread_mutex_unlock(&pg->lock);
		return 0;
	}
	pthread_mutex_unlock(&pg->lock);
	/* nextval is never rolled back: the block is ours even if t aborts */
	rc = run(t, id == KV_ID_INO ? S_NEXT_INO : S_NEXT_GC, 0, NULL, NULL, NULL, &r);
	if (rc < 0)
		return rc;
	if (PQntuples(r) != 1 || PQgetlength(r, 0, 0) != 8)
		return -EIO;
	start = rd64((const uint8_t *)PQgetvalue(r, 0, 0));
	if (start < first)
		return -EIO;
	pthread_mutex_lock(&pg->lock);
	/* Another thread may have refilled meanwhile: the older block is dropped. */
	pg->id_next[id] = start + 1;
	pg->id_end[id] = start + ID_BLOCK;
	pthread_mutex_unlock(&pg->lock);
	*out = start;
	return 0;
}

/* Runs an unprepared statement with text parameters (binary results) and waits. */
static int run_sql(struct kv_txn *t, const char *sql, int n, const char *const *vals,
		   PGresult **out)
{
	struct pg_txn *x = ptx(t);
	struct pg_conn *pc = x->pc;
	PGresult *r = NULL;
	int rc = ensure_begin(t);

	if (rc < 0)
		return rc;
	if (!PQsendQueryParams(pc->c, sql, n, NULL, vals, NULL, NULL, 1)) {
		pc->broken = true;
		return -ENOTCONN;
	}
	rc = want_push(pc, W_KEEP);
	if (rc == 0)
		rc = sync_drain(pg_of(t), pc, &r);
	if (rc < 0) {
		if (r)
			PQclear(r);
		return rc;
	}
	if (!r) {
		pc->broken = true;
		return -ENOTCONN;
	}
	rc = keep_result(x, r);
	if (rc == 0)
		*out = r;
	return rc;
}

static const char *seq_name(enum kv_id id)
{
	return id == KV_ID_INO ? "kelp_ino_seq" : "kelp_gc_seq";
}

/* The sequence hands out blocks: the next one starts a block above the last. */
static int p_peek_id(struct kv_txn *t, enum kv_id id, uint64_t *out)
{
	char sql[160];
	PGresult *r;
	int rc;

	snprintf(sql, sizeof(sql),
		 "SELECT CASE WHEN is_called THEN last_value + %d ELSE last_value END FROM %s",
		 ID_BLOCK, seq_name(id));
	rc = run_sql(t, sql, 0, NULL, &r);
	if (rc < 0)
		return rc;
	if (PQntuples(r) != 1 || PQgetlength(r, 0, 0) != 8)
		return -EIO;
	*out = rd64((const uint8_t *)PQgetvalue(r, 0, 0));
	return 0;
}

static int p_raise_id(struct kv_txn *t, enum kv_id id, uint64_t next)
{
	char sql[200], val[32];
	const char *vals[1] = {val};
	uint64_t cur;
	PGresult *r;
	int rc = p_peek_id(t, id, &cur);

	if (rc < 0 || cur >= next)
		return rc;
	snprintf(val, sizeof(val), "%llu", (unsigned long long)next);
	snprintf(sql, sizeof(sql), "SELECT setval('%s', $1::bigint, false)", seq_name(id));
	return run_sql(t, sql, 1, vals, &r);
}

static int p_get_prop(struct kv_txn *t, const char *name, char *out, size_t cap)
{
	const char *vals[1] = {name};
	PGresult *r;
	int rc = run_sql(t, "SELECT value FROM kelp_format WHERE name = $1", 1, vals, &r);

	out[0] = '\0';
	if (rc < 0)
		return rc;
	if (PQntuples(r) == 1)
		snprintf(out, cap, "%.*s", PQgetlength(r, 0, 0), PQgetvalue(r, 0, 0));
	return 0;
}

static int p_set_prop(struct kv_txn *t, const char *name, const char *value)
{
	const char *vals[2] = {name, value};
	PGresult *r;

	return run_sql(t,
		       "INSERT INTO kelp_format VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET "
		       "value = EXCLUDED.value",
		       2, vals, &r);
}

/* After a commit that waited for the WAL flush, begun when `lazy` lazy commits had
 * returned: those are durable too (the WAL is one sequence). */
static void note_flushed(struct kv_pg *pg, uint64_t lazy)
{
	uint64_t cur = __atomic_load_n(&pg->lazy_flushed, __ATOMIC_ACQUIRE);

	while (cur < lazy && !__atomic_compare_exchange_n(&pg->lazy_flushed, &cur, lazy, false,
							  __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		;
}

/*
 * A lazy transaction (kv_txn.lazy) commits with synchronous_commit off: the COMMIT
 * returns once the server has it in memory (every other session sees it at once), and
 * the WAL writer flushes it within 3 x wal_writer_delay (0.6 s by default); any later
 * commit that waits for its flush flushes it too. The others wait as the database's
 * synchronous_commit says (on by default; off: they count as lazy, commits_lazy).
 */
static int p_commit(struct kv_txn *t)
{
	struct kv_pg *pg = pg_of(t);
	struct pg_txn *x = ptx(t);
	uint64_t lazy = __atomic_load_n(&pg->lazy_done, __ATOMIC_ACQUIRE);
	int rc = t->failed;

	if (!x->began && !rc) {
		txn_free(t); /* nothing was opened on the server */
		return 0;
	}
	if (!rc && t->write && t->lazy)
		rc = send_sql(x->pc, "SET LOCAL synchronous_commit = off", W_CHECK);
	if (!rc) {
		rc = send_sql(x->pc, "COMMIT", W_CHECK);
		if (rc == 0)
			rc = sync_drain(pg, x->pc, NULL);
	}
	if (rc == 0 && t->write) {
		if (t->lazy || pg->commits_lazy)
			__atomic_add_fetch(&pg->lazy_done, 1, __ATOMIC_ACQ_REL);
		else
			note_flushed(pg, lazy);
	}
	/* A put that failed before the COMMIT left the transaction open (the COMMIT was
	 * skipped): end it, or the connection's next user would find it aborted. */
	if (rc < 0 && x->began && !x->pc->broken && send_sql(x->pc, "ROLLBACK", W_IGNORE) == 0)
		sync_drain(pg, x->pc, NULL);
	txn_free(t);
	return rc;
}

/* The ROLLBACK is sent, not waited for: the next user of the connection reads it. */
static void p_abort(struct kv_txn *t)
{
	struct pg_txn *x = ptx(t);

	if (!x->began) {
		txn_free(t); /* nothing was opened on the server */
		return;
	}
	if (!x->pc->broken && (send_sql(x->pc, "ROLLBACK", W_IGNORE) < 0 ||
			       !PQpipelineSync(x->pc->c) || want_push(x->pc, W_SYNC) < 0))
		x->pc->broken = true;
	txn_free(t);
}

/*
 * Flushes the WAL up to now: a transaction that writes a WAL record (setval of a
 * sequence made for it: no row, no lock another session waits for) and commits with
 * synchronous_commit on, whatever the database's setting. One round trip. Skipped when
 * only this process's commits matter (all = false) and none of them is lazy since the
 * last commit that waited.
 */
static int p_sync(struct kv *kv, bool all)
{
	static const char *const sql[] = {"BEGIN", "SET LOCAL synchronous_commit = on",
					  "SELECT setval('kelp_sync_seq', 1)", "COMMIT"};
	struct kv_pg *pg = (struct kv_pg *)kv;
	uint64_t lazy = __atomic_load_n(&pg->lazy_done, __ATOMIC_ACQUIRE);
	struct pg_conn *pc;
	int rc;

	if (!all && __atomic_load_n(&pg->lazy_flushed, __ATOMIC_ACQUIRE) >= lazy)
		return 0;
	rc = conn_take(pg, &pc);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]) && rc == 0; i++)
		rc = send_sql(pc, sql[i], W_CHECK);
	if (rc == 0)
		rc = sync_drain(pg, pc, NULL);
	if (rc == 0)
		note_flushed(pg, lazy);
	else if (!pc->broken && send_sql(pc, "ROLLBACK", W_IGNORE) == 0)
		sync_drain(pg, pc, NULL);
	conn_give(pg, pc);
	return rc;
}

static void p_close(struct kv *kv)
{
	struct kv_pg *pg = (struct kv_pg *)kv;

	for (int i = 0; i < pg->n_conns; i++) {
		conn_drop(&pg->conns[i]);
		free(pg->conns[i].want);
	}
	free(pg->conns);
	free(pg->url);
	pthread_mutex_destroy(&pg->lock);
	pthread_cond_destroy(&pg->cond);
	free(pg);
}

static const struct kv_ops pg_ops = {
    .name = "postgres",
    .begin = p_begin,
    .get = p_get,
    .get_many = p_get_many,
    .get_follow = p_get_follow,
    .prefetch = p_prefetch,
    .put = p_put,
    .del = p_del,
    .scan = p_scan,
    .scan_follow = p_scan_follow,
    .count = p_count,
    .next_id = p_next_id,
    .peek_id = p_peek_id,
    .raise_id = p_raise_id,
    .get_prop = p_get_prop,
    .set_prop = p_set_prop,
    .commit = p_commit,
    .abort = p_abort,
    .sync = p_sync,
    .close = p_close,
};

/* ---------------------------------------------------------------- schema */

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS kelp_format (name text PRIMARY KEY, value text NOT NULL);"
    "CREATE TABLE IF NOT EXISTS kelp_kv (k bytea PRIMARY KEY, v bytea NOT NULL);"
    "CREATE SEQUENCE IF NOT EXISTS kelp_ino_seq START 2 INCREMENT 1024;"
    "CREATE SEQUENCE IF NOT EXISTS kelp_gc_seq START 1 INCREMENT 1024;"
    "CREATE SEQUENCE IF NOT EXISTS kelp_sync_seq;"
    "INSERT INTO kelp_format VALUES ('format', '1') ON CONFLICT DO NOTHING;";

/* A value of kelp_format, "" when absent. */
static int format_value(struct kv_pg *pg, PGconn *c, const char *name, char *out, size_t cap)
{
	const char *vals[1] = {name};
	PGresult *r = PQexecParams(c, "SELECT value FROM kelp_format WHERE name = $1", 1, NULL,
				   vals, NULL, NULL, 0);
	int rc = 0;

	out[0] = '\0';
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		rc = pg_error(pg, c, r, "read kelp_format");
	else if (PQntuples(r) == 1)
		snprintf(out, cap, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return rc;
}

/* Creates the schema if missing, then checks the format and the cluster id. */
static int check_schema(struct kv_pg *pg, PGconn *c, const char *cluster_id)
{
	char format[32], stored[128];
	int rc;

	/* One mount at a time creates it (CREATE ... IF NOT EXISTS races otherwise). */
	rc = simple(c, "BEGIN", pg);
	if (rc == 0) {
		PGresult *r = PQexec(c, "SELECT pg_advisory_xact_lock(4207120010)");

		rc = PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : pg_error(pg, c, r, "lock");
		PQclear(r);
	}
	if (rc == 0) {
		PGresult *r = PQexec(c, schema_sql);

		rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : pg_error(pg, c, r, "schema");
		PQclear(r);
	}
	if (rc == 0)
		rc = format_value(pg, c, "format", format, sizeof(format));
	if (rc == 0 && atoi(format) > PG_FORMAT) {
		log_error("meta: the database %s has format %s; this kelp (%s) knows format %d "
			  "at most: upgrade kelp",
			  pg->masked, format, KELP_VERSION, PG_FORMAT);
		rc = -EPROTONOSUPPORT;
	}
	if (rc == 0)
		rc = format_value(pg, c, "cluster_id", stored, sizeof(stored));
	if (rc == 0 && cluster_id && *cluster_id) {
		if (!*stored) {
			const char *vals[1] = {cluster_id};
			PGresult *r =
			    PQexecParams(c, "INSERT INTO kelp_format VALUES ('cluster_id', $1)", 1,
					 NULL, vals, NULL, NULL, 0);

			rc = PQresultStatus(r) == PGRES_COMMAND_OK
				 ? 0
				 : pg_error(pg, c, r, "cluster id");
			PQclear(r);
		} else if (strcmp(stored, cluster_id)) {
			log_error(
			    "meta: the database %s belongs to the cluster %s, and the masters "
			    "are the cluster %s: refusing to mount it",
			    pg->masked, stored, cluster_id);
			rc = -EXDEV;
		}
	}
	if (rc == 0)
		rc = simple(c, "COMMIT", pg);
	else
		simple(c, "ROLLBACK", pg);
	return rc;
}

int kv_pg_open(const char *url, const struct kv_pg_options *o, struct kv **out)
{
	struct kv_pg *pg = calloc(1, sizeof(*pg));
	uint64_t deadline;
	char err[512] = "";
	PGconn *c = NULL;
	int rc;

	if (!pg)
		return -ENOMEM;
	pg->url = strdup(url);
	pg->n_conns = o && o->connections > 0 ? o->connections : DEFAULT_CONNS;
	pg->conns = calloc((size_t)pg->n_conns, sizeof(*pg->conns));
	if (!pg->url || !pg->conns) {
		free(pg->url);
		free(pg->conns);
		free(pg);
		return -ENOMEM;
	}
	kv_mask_url(url, pg->masked, sizeof(pg->masked));
	pthread_mutex_init(&pg->lock, NULL);
	pthread_cond_init(&pg->cond, NULL);
	pg->base.ops = &pg_ops;
	pg->base.shared = true;
	/* The server may be starting: wait for it up to the timeout. */
	deadline =
	    monotonic_ns() + (uint64_t)(o && o->timeout_ms > 0 ? o->timeout_ms : 30000) * 1000000;
	for (;;) {
		c = pg_connect(pg, err, sizeof(err));
		if (c || monotonic_ns() >= deadline)
			break;
		/* A wrong database name, user or password does not go away by waiting. */
		if (strstr(err, "does not exist"))
			rc = -ENOENT;
		else if (strstr(err, "authentication failed") || strstr(err, "no password") ||
			 strstr(err, "permission denied") || strstr(err, "pg_hba.conf"))
			rc = -EACCES;
		else
			rc = 0;
		if (rc < 0) {
			log_error("meta: cannot use the metadata database %s: %s", pg->masked, err);
			p_close(&pg->base);
			return rc;
		}
		usleep(200000);
	}
	if (!c) {
		log_error("meta: cannot connect to the metadata database %s: %s", pg->masked, err);
		p_close(&pg->base);
		return -ENOTCONN;
	}
	rc = check_schema(pg, c, o ? o->cluster_id : NULL);
	if (rc == 0) {
		/* ALTER DATABASE/ROLE ... SET synchronous_commit = off: the operator's choice for
		 * every commit, but an fsync() must still reach the disk (p_sync). */
		PGresult *r = PQexec(c, "SHOW synchronous_commit");

		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
			pg->commits_lazy = strcmp(PQgetvalue(r, 0, 0), "off") == 0;
		else
			rc = pg_error(pg, c, r, "SHOW synchronous_commit");
		PQclear(r);
	}
	if (rc == 0)
		rc = prepare_all(pg, c);
	if (rc == 0 && !PQenterPipelineMode(c))
		rc = -EIO;
	if (rc < 0) {
		PQfinish(c);
		p_close(&pg->base);
		return rc;
	}
	pg->conns[0].c = c;
	*out = &pg->base;
	return 0;
}
