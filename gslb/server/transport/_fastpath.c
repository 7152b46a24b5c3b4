/* gslb.server.transport._fastpath: the UDP batch loop (recvmmsg/sendmmsg) with the reply cache's
 * common hits answered in C.
 *
 * This is gslb.server.transport.udp.MmsgReader._batch and the first lines of
 * gslb.answer.respond.respond, written again over the same Python objects: a datagram
 * is answered here only when the Python path would answer it from the reply
 * cache without looking further, and with the same bytes, the same counters and
 * the same draws from the same random.Random:
 *
 *   - a fixed reply (static data, a negative answer): state.udp_cache[query[2:]];
 *   - a balanced name's reply kept per routing decision (answer.cache.memo_hit): the
 *     cache entry for this query, or for the same query from another ECS subnet
 *     (engine._ecs_template), its plan's compiled table (geo_compile.Compiled:
 *     the first-level index and the bisect over the arrays), the entry's memo.
 *
 * Anything else, or anything unexpected, goes to gslb.server.transport.udp.handle, as
 * every datagram does without this module. Rate limiting, the query log, TSIG,
 * DNS cookies in the query and a UDP size over the cookie-less cap always take
 * the Python path. tests/test_fastpath.py compares both paths byte for byte.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>
#include <sys/socket.h>

#define BATCH 64
#define MAX_BATCHES 16
#define IN_SLOT 4096
#define OUT_SLOT 1280
#define EDNS_MAX_UDP 1232
#define OPT_ECS 8
#define OPT_COOKIE 10
#define FALLBACK 0xFFFFFFFFu

/* interned attribute names */
static PyObject *s_state, *s_udp_cache, *s_plans, *s_balanced_counts, *s_stats, *s_queries,
    *s_dropped, *s_rrl, *s_query_log_every, *s_cookies, *s_nocookie_udp, *s_rng, *s_name,
    *s_memo_plan, *s_tail, *s_memo, *s_skey, *s_needs_client, *s_decisions, *s_record, *s_ecs,
    *s_v4, *s_v6, *s_shift, *s_kshift, *s_starts, *s_index, *s_codes, *s_random, *s_randrange,
    *s_ecs_tag, *s_too_long, *s_send_failed;

typedef struct {
    PyObject_HEAD
    int fd;
    PyObject *holder;
    PyObject *handle; /* gslb.server.transport.udp.handle(ctr, holder, data, host) */
    PyObject *ctr;
    PyObject *hosts; /* raw peer address -> its text */
    unsigned long long fast, slow, errors;
    struct mmsghdr *rmsgs, *smsgs;
    struct iovec *in_iov, *out_iov;
    struct sockaddr_in6 *names;
    unsigned char *inbuf, *outbuf;
} Batcher;

/* per batch: what the Python path reads per query */
typedef struct {
    PyObject *cache, *plans, *counts, *queries, *rng; /* borrowed from owned state/holder */
    int cookies;
    long cap;
} Ctx;

static int counter_add(PyObject *d, PyObject *key, Py_ssize_t by) {
    /* d[key] += by, for a collections.Counter (a dict: a missing key counts 0) */
    PyObject *old = PyDict_GetItemWithError(d, key);
    if (old == NULL && PyErr_Occurred()) return -1;
    PyObject *n;
    if (old == NULL) {
        n = PyLong_FromSsize_t(by);
    } else {
        PyObject *b = PyLong_FromSsize_t(by);
        if (b == NULL) return -1;
        n = PyNumber_Add(old, b);
        Py_DECREF(b);
    }
    if (n == NULL) return -1;
    int r = PyDict_SetItem(d, key, n);
    Py_DECREF(n);
    return r;
}

static int dropped_add(Batcher *self, PyObject *what, Py_ssize_t by) {
    PyObject *stats = PyObject_GetAttr(self->holder, s_stats);
    if (stats == NULL) return -1;
    PyObject *dropped = PyObject_GetAttr(stats, s_dropped);
    Py_DECREF(stats);
    if (dropped == NULL) return -1;
    int r = counter_add(dropped, what, by);
    Py_DECREF(dropped);
    return r;
}

/* the offset of the query's OPT record when it is the only record after the question
 * and ends the message, else -1 (gslb.dns.wire.query_opt) */
static long query_opt(const unsigned char *d, long n) {
    static const unsigned char want[8] = {0, 1, 0, 0, 0, 0, 0, 1};
    if (n < 23 || memcmp(d + 4, want, 8) != 0) return -1;
    long pos = 12;
    while (pos < n && d[pos]) pos += 1 + d[pos];
    pos += 5;
    if (pos + 11 > n || d[pos] || d[pos + 1] != 0 || d[pos + 2] != 41) return -1;
    return pos + 11 + ((d[pos + 9] << 8) | d[pos + 10]) == n ? pos : -1;
}

typedef struct {
    int family; /* 4 or 6 */
    uint64_t hi, lo; /* IPv4: lo; IPv6: the two halves */
    int source;
} Client;

/* engine._ecs_template: the octets of the ECS address that ends the query (its count,
 * 0 for a query that is not that) and the client it names */
static int ecs_template(const unsigned char *d, long n, Client *c) {
    long opt = query_opt(d, n);
    if (opt < 0) return 0;
    int rdlen = (d[opt + 9] << 8) | d[opt + 10];
    if (rdlen < 8) return 0;
    const unsigned char *o = d + opt + 11;
    int code = (o[0] << 8) | o[1], olen = (o[2] << 8) | o[3], family = (o[4] << 8) | o[5];
    int source = o[6], scope = o[7];
    int k = (source + 7) >> 3;
    if (code != OPT_ECS || olen != rdlen - 4 || olen != 4 + k || scope || !source) return 0;
    int full;
    if (family == 1) {
        if (source > 32) return 0;
        full = 4;
    } else if (family == 2) {
        if (source > 128) return 0;
        full = 16;
    } else {
        return 0;
    }
    const unsigned char *raw = d + n - k;
    if ((source & 7) && (raw[k - 1] & (0xFF >> (source & 7)))) return 0;
    unsigned char a[16] = {0};
    memcpy(a, raw, k);
    c->family = family == 1 ? 4 : 6;
    c->source = source;
    if (full == 4) {
        c->hi = 0;
        c->lo = ((uint64_t)a[0] << 24) | ((uint64_t)a[1] << 16) | ((uint64_t)a[2] << 8) | a[3];
    } else {
        uint64_t hi = 0, lo = 0;
        for (int i = 0; i < 8; i++) hi = (hi << 8) | a[i];
        for (int i = 8; i < 16; i++) lo = (lo << 8) | a[i];
        c->hi = hi;
        c->lo = lo;
    }
    return k;
}

/* the peer as a client (gslb.dns.wire.client_of: an IPv4-mapped IPv6 peer is IPv4) */
static void peer_client(const struct sockaddr_in6 *sa, Client *c) {
    if (sa->sin6_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        c->family = 4;
        c->hi = 0;
        c->lo = ntohl(s4->sin_addr.s_addr);
        c->source = 32;
        return;
    }
    const unsigned char *a = sa->sin6_addr.s6_addr;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, mapped, 12) == 0) {
        c->family = 4;
        c->hi = 0;
        c->lo = ((uint64_t)a[12] << 24) | ((uint64_t)a[13] << 16) | ((uint64_t)a[14] << 8) | a[15];
        c->source = 32;
        return;
    }
    uint64_t hi = 0, lo = 0;
    for (int i = 0; i < 8; i++) hi = (hi << 8) | a[i];
    for (int i = 8; i < 16; i++) lo = (lo << 8) | a[i];
    c->family = 6;
    c->hi = hi;
    c->lo = lo;
    c->source = 128;
}

static int long_attr(PyObject *o, PyObject *name, long *out) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    *out = PyLong_AsLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* geo_compile.Compiled._code: the code of the piece holding the client (FALLBACK when
 * the arrays are not what this reads: then the Python path decides). -1 on error. */
static int64_t table_code(PyObject *table, const Client *c) {
    PyObject *t = PyObject_GetAttr(table, c->family == 4 ? s_v4 : s_v6);
    if (t == NULL) return -1;
    int64_t result = FALLBACK;
    long shift, kshift;
    PyObject *starts = NULL, *index = NULL, *codes = NULL;
    Py_buffer bs = {0}, bi = {0}, bc = {0};
    int got_s = 0, got_i = 0, got_c = 0;
    if (long_attr(t, s_shift, &shift) < 0 || long_attr(t, s_kshift, &kshift) < 0) goto error;
    starts = PyObject_GetAttr(t, s_starts);
    index = PyObject_GetAttr(t, s_index);
    codes = PyObject_GetAttr(t, s_codes);
    if (starts == NULL || index == NULL || codes == NULL) goto error;
    if (!PyObject_CheckBuffer(starts)) goto done; /* IPv6 cut by subnets: Python ints */
    if (PyObject_GetBuffer(starts, &bs, PyBUF_FORMAT | PyBUF_ND) < 0) goto error;
    got_s = 1;
    if (PyObject_GetBuffer(index, &bi, PyBUF_FORMAT | PyBUF_ND) < 0) goto error;
    got_i = 1;
    if (PyObject_GetBuffer(codes, &bc, PyBUF_FORMAT | PyBUF_ND) < 0) goto error;
    got_c = 1;
    if (bi.itemsize != 4 || (bc.itemsize != 4 && bc.itemsize != 2)) goto done;
    uint64_t key;
    if (c->family == 4) {
        if (shift != 0 || bs.itemsize != 4) goto done;
        key = c->lo;
    } else {
        if (shift != 64 || bs.itemsize != 8) goto done;
        key = c->hi;
    }
    uint64_t k = key >> kshift;
    Py_ssize_t nidx = bi.len / 4, nstarts = bs.len / bs.itemsize, ncodes = bc.len / bc.itemsize;
    if ((Py_ssize_t)k + 1 >= nidx) goto done;
    const uint32_t *ix = (const uint32_t *)bi.buf;
    Py_ssize_t lo = (Py_ssize_t)ix[k] - 1, hi = ix[k + 1];
    if (lo < 0) lo = 0;
    if (hi > nstarts) hi = nstarts;
    /* bisect_right(starts, key, lo, hi) */
    if (bs.itemsize == 4) {
        const uint32_t *st = (const uint32_t *)bs.buf;
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (key < st[mid]) hi = mid; else lo = mid + 1;
        }
    } else {
        const uint64_t *st = (const uint64_t *)bs.buf;
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            if (key < st[mid]) hi = mid; else lo = mid + 1;
        }
    }
    Py_ssize_t at = lo - 1;
    if (at < 0 || at >= ncodes) goto done;
    if (bc.itemsize == 2) { /* two-octet codes (geo_compile._Table): 0xFFFF is FALLBACK */
        uint16_t c16 = ((const uint16_t *)bc.buf)[at];
        result = c16 == 0xFFFF ? FALLBACK : c16;
    } else {
        result = ((const uint32_t *)bc.buf)[at];
    }
    goto done;
error:
    result = -1;
done:
    if (got_s) PyBuffer_Release(&bs);
    if (got_i) PyBuffer_Release(&bi);
    if (got_c) PyBuffer_Release(&bc);
    Py_XDECREF(starts);
    Py_XDECREF(index);
    Py_XDECREF(codes);
    Py_DECREF(t);
    return result;
}

/* 1: answered (*out a new reference), 0: take the Python path, -1: a Python error */
static int memo_reply(Batcher *self, Ctx *cx, PyObject *e, const unsigned char *d, long n,
                      const Client *ecs, const struct sockaddr_in6 *peer, PyObject **out) {
    (void)self;
    int rc = 0;
    PyObject *name = NULL, *mplan = NULL, *memo = NULL, *skey = NULL, *key = NULL;
    PyObject *decisions = NULL, *record = NULL, *use_ecs = NULL, *needs = NULL, *drawn = NULL, *m = NULL;
    long tail;
    if (long_attr(e, s_tail, &tail) < 0) goto error;
    if (tail < 0 || tail > n - 12) goto done;
    name = PyObject_GetAttr(e, s_name);
    mplan = PyObject_GetAttr(e, s_memo_plan);
    if (name == NULL || mplan == NULL) goto error;
    PyObject *plan = PyDict_GetItemWithError(cx->plans, name); /* borrowed; mplan holds it */
    if (plan == NULL) {
        if (PyErr_Occurred()) goto error;
        goto done;
    }
    if (plan != mplan) goto done; /* a new plan (health, reload): the Python path starts its memo */
    long long k = 0;
    needs = PyObject_GetAttr(plan, s_needs_client);
    if (needs == NULL) goto error;
    int nc = PyObject_IsTrue(needs);
    if (nc < 0) goto error;
    if (nc) {
        decisions = PyObject_GetAttr(plan, s_decisions);
        if (decisions == NULL) goto error;
        if (decisions == Py_None) goto done;
        record = PyObject_GetAttr(plan, s_record);
        if (record == NULL) goto error;
        use_ecs = PyObject_GetAttr(record, s_ecs);
        if (use_ecs == NULL) goto error;
        int ue = PyObject_IsTrue(use_ecs);
        if (ue < 0) goto error;
        Client c;
        if (ecs != NULL && ue) {
            c = *ecs;
        } else {
            peer_client(peer, &c);
        }
        int64_t code = table_code(decisions, &c);
        if (code < 0) goto error;
        if (code == FALLBACK) goto done;
        long long scope = code & 0xFF;
        k = code - scope + (scope < c.source ? scope : c.source);
    }
    memo = PyObject_GetAttr(e, s_memo);
    if (memo == NULL) goto error;
    key = PyLong_FromLongLong(k);
    if (key == NULL) goto error;
    m = PyDict_GetItemWithError(memo, key);
    if (m == NULL) {
        if (PyErr_Occurred()) goto error;
        goto done;
    }
    Py_INCREF(m); /* held: the draw below runs the RNG's code */
    if (!PyTuple_CheckExact(m) || PyTuple_GET_SIZE(m) != 4) goto done;
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(m, 0));
    PyObject *replies = PyTuple_GET_ITEM(m, 1), *cum = PyTuple_GET_ITEM(m, 2), *ckey = PyTuple_GET_ITEM(m, 3);
    if (!PyTuple_CheckExact(replies) || PyTuple_GET_SIZE(replies) == 0) goto done;
    Py_ssize_t nr = PyTuple_GET_SIZE(replies), pick = 0;
    if (kind == 1) { /* CHOICE: random.choices(..., cum_weights)[0] */
        Py_ssize_t nc2 = PyTuple_GET_SIZE(cum);
        if (nc2 != nr) goto done;
        double total = PyLong_AsDouble(PyTuple_GET_ITEM(cum, nc2 - 1));
        if (total == -1.0 && PyErr_Occurred()) goto error;
        drawn = PyObject_CallMethodNoArgs(cx->rng, s_random);
        if (drawn == NULL) goto error;
        double x = PyFloat_AsDouble(drawn) * total;
        /* bisect_right(cum, x, 0, n - 1): Python compares the float with each int */
        Py_ssize_t lo = 0, hi = nr - 1;
        while (lo < hi) {
            Py_ssize_t mid = (lo + hi) / 2;
            double cv = PyLong_AsDouble(PyTuple_GET_ITEM(cum, mid));
            if (x < cv) hi = mid; else lo = mid + 1;
        }
        pick = lo;
    } else if (kind == 2) { /* ROTATE: rng.randrange(n) */
        PyObject *nn = PyLong_FromSsize_t(nr);
        if (nn == NULL) goto error;
        drawn = PyObject_CallMethodOneArg(cx->rng, s_randrange, nn);
        Py_DECREF(nn);
        if (drawn == NULL) goto error;
        pick = PyLong_AsSsize_t(drawn);
        if (pick < 0 || pick >= nr) goto error;
    } else if (kind != 0) {
        goto done;
    }
    PyObject *r = PyTuple_GET_ITEM(replies, pick);
    if (!PyBytes_CheckExact(r)) goto done;
    Py_ssize_t rl = PyBytes_GET_SIZE(r);
    PyObject *reply = PyBytes_FromStringAndSize(NULL, 2 + rl + tail);
    if (reply == NULL) goto error;
    char *w = PyBytes_AS_STRING(reply);
    memcpy(w, d, 2);
    memcpy(w + 2, PyBytes_AS_STRING(r), rl);
    memcpy(w + 2 + rl, d + n - tail, tail);
    if (cx->counts != Py_None && counter_add(cx->counts, ckey, 1) < 0) {
        Py_DECREF(reply);
        goto error;
    }
    skey = PyObject_GetAttr(e, s_skey);
    if (skey == NULL || counter_add(cx->queries, skey, 1) < 0) {
        Py_DECREF(reply);
        goto error;
    }
    *out = reply;
    rc = 1;
    goto done;
error:
    rc = -1;
done:
    Py_XDECREF(name);
    Py_XDECREF(mplan);
    Py_XDECREF(memo);
    Py_XDECREF(skey);
    Py_XDECREF(key);
    Py_XDECREF(decisions);
    Py_XDECREF(record);
    Py_XDECREF(use_ecs);
    Py_XDECREF(needs);
    Py_XDECREF(drawn);
    Py_XDECREF(m);
    return rc;
}

/* 1: answered (*out a new reference), 0: the Python path, -1: a Python error */
static int fast_reply(Batcher *self, Ctx *cx, const unsigned char *d, long n,
                      const struct sockaddr_in6 *peer, PyObject **out) {
    if (n < 12) return 0;
    /* transport.answer: a query that may carry a TSIG record */
    if (n > 12 && (d[10] || d[11] > 1 || (d[11] == 1 && query_opt(d, n) < 0))) return 0;
    if (cx->cookies && n > 22 && d[11] == 1 && !d[10]) {
        long opt = query_opt(d, n);
        if (opt < 0) return 0;
        long pos = opt + 11;
        while (pos + 4 <= n) { /* cookies.find_cookie */
            int code = (d[pos] << 8) | d[pos + 1], len = (d[pos + 2] << 8) | d[pos + 3];
            if (code == OPT_COOKIE) return 0;
            pos += 4 + len;
        }
        long payload = (d[opt + 3] << 8) | d[opt + 4];
        if (payload > EDNS_MAX_UDP) payload = EDNS_MAX_UDP;
        if (payload < 512) payload = 512;
        if (cx->cap && payload > cx->cap) return 0; /* the query is rewritten first */
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)d + 2, n - 2);
    if (key == NULL) return -1;
    PyObject *hit = PyDict_GetItemWithError(cx->cache, key); /* borrowed */
    Py_DECREF(key);
    if (hit == NULL && PyErr_Occurred()) return -1;
    if (hit != NULL) {
        if (PyTuple_CheckExact(hit)) { /* a FixedReply: (reply after the ID, stats key) */
            if (PyTuple_GET_SIZE(hit) != 2 || !PyBytes_CheckExact(PyTuple_GET_ITEM(hit, 0))) return 0;
            PyObject *tailb = PyTuple_GET_ITEM(hit, 0);
            Py_ssize_t tl = PyBytes_GET_SIZE(tailb);
            PyObject *reply = PyBytes_FromStringAndSize(NULL, 2 + tl);
            if (reply == NULL) return -1;
            memcpy(PyBytes_AS_STRING(reply), d, 2);
            memcpy(PyBytes_AS_STRING(reply) + 2, PyBytes_AS_STRING(tailb), tl);
            if (counter_add(cx->queries, PyTuple_GET_ITEM(hit, 1), 1) < 0) {
                Py_DECREF(reply);
                return -1;
            }
            *out = reply;
            return 1;
        }
        Client c, *ecs = NULL;
        if (ecs_template(d, n, &c)) ecs = &c;
        /* the entry's own ECS client is this query's (the same bytes): tail says if it has one.
         * The entry is held: the RNG and the counters are Python objects */
        Py_INCREF(hit);
        int r = memo_reply(self, cx, hit, d, n, ecs, peer, out);
        Py_DECREF(hit);
        return r;
    }
    if (d[10] != 0 || d[11] != 1) return 0;
    Client c;
    int k = ecs_template(d, n, &c);
    if (!k) return 0;
    PyObject *part = PyBytes_FromStringAndSize((const char *)d + 2, n - 2 - k);
    if (part == NULL) return -1;
    PyObject *tkey = PyTuple_Pack(2, s_ecs_tag, part);
    Py_DECREF(part);
    if (tkey == NULL) return -1;
    PyObject *entry = PyDict_GetItemWithError(cx->cache, tkey);
    Py_DECREF(tkey);
    if (entry == NULL) return PyErr_Occurred() ? -1 : 0;
    if (PyTuple_CheckExact(entry)) return 0;
    Py_INCREF(entry);
    int r = memo_reply(self, cx, entry, d, n, &c, peer, out);
    Py_DECREF(entry);
    return r;
}

static PyObject *host_text(Batcher *self, const struct sockaddr_in6 *sa) {
    PyObject *raw;
    if (sa->sin6_family == AF_INET) {
        raw = PyBytes_FromStringAndSize((const char *)&((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else {
        raw = PyBytes_FromStringAndSize((const char *)&sa->sin6_addr, 16);
    }
    if (raw == NULL) return NULL;
    PyObject *host = PyDict_GetItemWithError(self->hosts, raw);
    if (host != NULL) {
        Py_DECREF(raw);
        Py_INCREF(host);
        return host;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(raw);
        return NULL;
    }
    char buf[INET6_ADDRSTRLEN];
    const char *t = sa->sin6_family == AF_INET
                        ? inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, sizeof buf)
                        : inet_ntop(AF_INET6, &sa->sin6_addr, buf, sizeof buf);
    if (t == NULL) {
        Py_DECREF(raw);
        PyErr_SetFromErrno(PyExc_OSError);
        return NULL;
    }
    host = PyUnicode_FromString(buf);
    if (host == NULL) {
        Py_DECREF(raw);
        return NULL;
    }
    if (PyDict_GET_SIZE(self->hosts) >= 65536) PyDict_Clear(self->hosts);
    if (PyDict_SetItem(self->hosts, raw, host) < 0) {
        Py_DECREF(raw);
        Py_DECREF(host);
        return NULL;
    }
    Py_DECREF(raw);
    return host;
}

static int ctx_load(Batcher *self, Ctx *cx, PyObject **owned_state, PyObject **owned_stats) {
    /* what handle() and respond() read for every query, read once per batch (the event
     * loop swaps the state between callbacks, never during one) */
    memset(cx, 0, sizeof *cx);
    PyObject *h = self->holder;
    PyObject *state = PyObject_GetAttr(h, s_state);
    if (state == NULL) return -1;
    *owned_state = state;
    PyObject *stats = PyObject_GetAttr(h, s_stats);
    if (stats == NULL) return -1;
    *owned_stats = stats;
    PyObject *v;
    int fast = 1;
    v = PyObject_GetAttr(h, s_rrl);
    if (v == NULL) return -1;
    if (v != Py_None) fast = 0; /* rate limiting: every answer goes through the limiter */
    Py_DECREF(v);
    long every;
    if (long_attr(h, s_query_log_every, &every) < 0) return -1;
    if (every) fast = 0;
    v = PyObject_GetAttr(h, s_cookies);
    if (v == NULL) return -1;
    cx->cookies = v != Py_None;
    Py_DECREF(v);
    if (long_attr(h, s_nocookie_udp, &cx->cap) < 0) return -1;
    if (!fast) return 0;
    /* borrowed: owned by state/stats/holder, which outlive the batch */
    cx->cache = PyObject_GetAttr(state, s_udp_cache);
    cx->plans = PyObject_GetAttr(state, s_plans);
    cx->counts = PyObject_GetAttr(state, s_balanced_counts);
    cx->queries = PyObject_GetAttr(stats, s_queries);
    cx->rng = PyObject_GetAttr(h, s_rng);
    if (!cx->cache || !cx->plans || !cx->counts || !cx->queries || !cx->rng) return -1;
    if (!PyDict_Check(cx->cache) || !PyDict_Check(cx->plans) || !PyDict_Check(cx->queries) ||
        (cx->counts != Py_None && !PyDict_Check(cx->counts))) {
        Py_CLEAR(cx->cache);
        Py_CLEAR(cx->plans);
        Py_CLEAR(cx->counts);
        Py_CLEAR(cx->queries);
        Py_CLEAR(cx->rng);
    }
    return 0;
}

static void ctx_clear(Ctx *cx) {
    Py_CLEAR(cx->cache);
    Py_CLEAR(cx->plans);
    Py_CLEAR(cx->counts);
    Py_CLEAR(cx->queries);
    Py_CLEAR(cx->rng);
}

/* one recvmmsg batch answered; the number of datagrams taken, -1 on a Python error */
static int one_batch(Batcher *self) {
    int n = recvmmsg(self->fd, self->rmsgs, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) return 0;
    Ctx cx;
    PyObject *state = NULL, *stats = NULL;
    int j = 0, failed = 0;
    if (ctx_load(self, &cx, &state, &stats) < 0) {
        failed = 1;
        n = 0;
    }
    for (int i = 0; i < n; i++) {
        struct mmsghdr *rm = &self->rmsgs[i];
        unsigned char *d = self->inbuf + (size_t)i * IN_SLOT;
        long len = rm->msg_len;
        socklen_t namelen = rm->msg_hdr.msg_namelen;
        rm->msg_hdr.msg_namelen = sizeof(struct sockaddr_in6); /* reset for the next recvmmsg */
        if (rm->msg_hdr.msg_flags & MSG_TRUNC) {
            if (dropped_add(self, s_too_long, 1) < 0) { failed = 1; break; }
            continue;
        }
        PyObject *reply = NULL;
        int got = 0;
        if (cx.cache != NULL) {
            got = fast_reply(self, &cx, d, len, &self->names[i], &reply);
            if (got < 0) { /* not expected: answer it the usual way, and show the first one */
                if (self->errors++ == 0) {
                    PyErr_WriteUnraisable((PyObject *)self);
                } else {
                    PyErr_Clear();
                }
                got = 0;
            }
        }
        if (got) {
            self->fast++;
        } else {
            self->slow++;
            PyObject *data = PyBytes_FromStringAndSize((const char *)d, len);
            PyObject *host = data ? host_text(self, &self->names[i]) : NULL;
            if (host == NULL) {
                Py_XDECREF(data);
                failed = 1;
                break;
            }
            reply = PyObject_CallFunctionObjArgs(self->handle, self->ctr, self->holder, data, host, NULL);
            Py_DECREF(data);
            Py_DECREF(host);
            if (reply == NULL) { failed = 1; break; }
            if (reply == Py_None) {
                Py_DECREF(reply);
                continue;
            }
            if (!PyBytes_Check(reply)) {
                Py_DECREF(reply);
                continue;
            }
        }
        Py_ssize_t rl = PyBytes_GET_SIZE(reply);
        if (rl > OUT_SLOT) { /* cannot happen for UDP-sized replies; keep it correct anyway */
            ssize_t r;
            do {
                r = sendto(self->fd, PyBytes_AS_STRING(reply), rl, MSG_DONTWAIT,
                           (struct sockaddr *)&self->names[i], namelen);
            } while (r < 0 && errno == EINTR);
            Py_DECREF(reply);
            if (r < 0 && dropped_add(self, s_send_failed, 1) < 0) { failed = 1; break; }
            continue;
        }
        memcpy(self->outbuf + (size_t)j * OUT_SLOT, PyBytes_AS_STRING(reply), rl);
        Py_DECREF(reply);
        self->out_iov[j].iov_len = rl;
        self->smsgs[j].msg_hdr.msg_name = &self->names[i];
        self->smsgs[j].msg_hdr.msg_namelen = namelen;
        j++;
    }
    for (int i = 0; i < n; i++) self->rmsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
    ctx_clear(&cx);
    Py_XDECREF(state);
    Py_XDECREF(stats);
    int sent = 0;
    while (sent < j) {
        int k = sendmmsg(self->fd, self->smsgs + sent, j - sent, MSG_DONTWAIT);
        if (k <= 0) {
            if (k < 0 && errno == EINTR) continue;
            break;
        }
        sent += k;
    }
    if (failed) return -1;
    if (sent < j && dropped_add(self, s_send_failed, j - sent) < 0) return -1;
    return n;
}

static PyObject *Batcher_run(Batcher *self, PyObject *Py_UNUSED(ignored)) {
    /* several batches while datagrams keep coming (MmsgReader.on_readable says why) */
    long total = 0;
    for (int b = 0; b < MAX_BATCHES; b++) {
        int n = one_batch(self);
        if (n < 0) return NULL;
        total += n;
        if (n < BATCH) break;
    }
    return PyLong_FromLong(total);
}

static void Batcher_dealloc(Batcher *self) {
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->holder);
    Py_CLEAR(self->handle);
    Py_CLEAR(self->ctr);
    Py_CLEAR(self->hosts);
    PyMem_Free(self->rmsgs);
    PyMem_Free(self->smsgs);
    PyMem_Free(self->in_iov);
    PyMem_Free(self->out_iov);
    PyMem_Free(self->names);
    PyMem_Free(self->inbuf);
    PyMem_Free(self->outbuf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Batcher_traverse(Batcher *self, visitproc visit, void *arg) {
    Py_VISIT(self->holder);
    Py_VISIT(self->handle);
    Py_VISIT(self->ctr);
    Py_VISIT(self->hosts);
    return 0;
}

static int Batcher_clear(Batcher *self) {
    Py_CLEAR(self->holder);
    Py_CLEAR(self->handle);
    Py_CLEAR(self->ctr);
    Py_CLEAR(self->hosts);
    return 0;
}

static int Batcher_init(Batcher *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "holder", "handle", "ctr", NULL};
    int fd;
    PyObject *holder, *handle, *ctr;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOOO", kwlist, &fd, &holder, &handle, &ctr)) return -1;
    self->fd = fd;
    Py_INCREF(holder);
    Py_XSETREF(self->holder, holder);
    Py_INCREF(handle);
    Py_XSETREF(self->handle, handle);
    Py_INCREF(ctr);
    Py_XSETREF(self->ctr, ctr);
    Py_XSETREF(self->hosts, PyDict_New());
    if (self->hosts == NULL) return -1;
    if (self->rmsgs == NULL) {
        self->rmsgs = PyMem_Calloc(BATCH, sizeof(struct mmsghdr));
        self->smsgs = PyMem_Calloc(BATCH, sizeof(struct mmsghdr));
        self->in_iov = PyMem_Calloc(BATCH, sizeof(struct iovec));
        self->out_iov = PyMem_Calloc(BATCH, sizeof(struct iovec));
        self->names = PyMem_Calloc(BATCH, sizeof(struct sockaddr_in6));
        self->inbuf = PyMem_Malloc((size_t)BATCH * IN_SLOT);
        self->outbuf = PyMem_Malloc((size_t)BATCH * OUT_SLOT);
        if (!self->rmsgs || !self->smsgs || !self->in_iov || !self->out_iov || !self->names ||
            !self->inbuf || !self->outbuf) {
            PyErr_NoMemory();
            return -1;
        }
    }
    for (int i = 0; i < BATCH; i++) {
        self->in_iov[i].iov_base = self->inbuf + (size_t)i * IN_SLOT;
        self->in_iov[i].iov_len = IN_SLOT;
        self->out_iov[i].iov_base = self->outbuf + (size_t)i * OUT_SLOT;
        self->rmsgs[i].msg_hdr.msg_name = &self->names[i];
        self->rmsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
        self->rmsgs[i].msg_hdr.msg_iov = &self->in_iov[i];
        self->rmsgs[i].msg_hdr.msg_iovlen = 1;
        self->smsgs[i].msg_hdr.msg_iov = &self->out_iov[i];
        self->smsgs[i].msg_hdr.msg_iovlen = 1;
    }
    return 0;
}

static PyMemberDef Batcher_members[] = {
    {"fast", T_ULONGLONG, offsetof(Batcher, fast), READONLY, "datagrams answered in C"},
    {"slow", T_ULONGLONG, offsetof(Batcher, slow), READONLY, "datagrams handed to the Python path"},
    {"errors", T_ULONGLONG, offsetof(Batcher, errors), READONLY, "Python errors in the C path (then: Python)"},
    {NULL},
};

static PyMethodDef Batcher_methods[] = {
    {"run", (PyCFunction)Batcher_run, METH_NOARGS,
     "Answer what the socket holds, up to 16 batches of 64; returns the datagrams taken."},
    {NULL},
};

static PyTypeObject BatcherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gslb.server.transport._fastpath.Batcher",
    .tp_basicsize = sizeof(Batcher),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "recvmmsg/sendmmsg batches over one UDP socket, reply-cache hits answered in C",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Batcher_init,
    .tp_dealloc = (destructor)Batcher_dealloc,
    .tp_traverse = (traverseproc)Batcher_traverse,
    .tp_clear = (inquiry)Batcher_clear,
    .tp_members = Batcher_members,
    .tp_methods = Batcher_methods,
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "gslb.server.transport._fastpath",
    "The UDP batch loop with reply-cache hits answered in C (see gslb/server/transport/_fastpath.c).", -1,
    NULL, NULL, NULL, NULL, NULL,
};

#define INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL

PyMODINIT_FUNC PyInit__fastpath(void) {
    INTERN(s_state, "state");
    INTERN(s_udp_cache, "udp_cache");
    INTERN(s_plans, "plans");
    INTERN(s_balanced_counts, "balanced_counts");
    INTERN(s_stats, "stats");
    INTERN(s_queries, "queries");
    INTERN(s_dropped, "dropped");
    INTERN(s_rrl, "rrl");
    INTERN(s_query_log_every, "query_log_every");
    INTERN(s_cookies, "cookies");
    INTERN(s_nocookie_udp, "nocookie_udp");
    INTERN(s_rng, "rng");
    INTERN(s_name, "name");
    INTERN(s_memo_plan, "memo_plan");
    INTERN(s_tail, "tail");
    INTERN(s_memo, "memo");
    INTERN(s_skey, "skey");
    INTERN(s_needs_client, "needs_client");
    INTERN(s_decisions, "decisions");
    INTERN(s_record, "record");
    INTERN(s_ecs, "ecs");
    INTERN(s_v4, "v4");
    INTERN(s_v6, "v6");
    INTERN(s_shift, "shift");
    INTERN(s_kshift, "kshift");
    INTERN(s_starts, "starts");
    INTERN(s_index, "index");
    INTERN(s_codes, "codes");
    INTERN(s_random, "random");
    INTERN(s_randrange, "randrange");
    INTERN(s_ecs_tag, "ecs");
    INTERN(s_too_long, "too_long");
    INTERN(s_send_failed, "send_failed");
    if (PyType_Ready(&BatcherType) < 0) return NULL;
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL) return NULL;
    Py_INCREF(&BatcherType);
    if (PyModule_AddObject(m, "Batcher", (PyObject *)&BatcherType) < 0) {
        Py_DECREF(&BatcherType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
