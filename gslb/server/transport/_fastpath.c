/* gslb.server.transport._fastpath: the UDP batch loop (recvmmsg/sendmmsg) with the stages of a
 * query that the reply cache answers run in C, and the rate limiter.
 *
 * This is gslb.server.transport.udp.MmsgReader._batch, gslb.server.transport.answer and
 * gslb.server.transport.udp.handle written again over the same Python objects, in the
 * order gslb/dns/request.py lists: one parse of the datagram (the question's end, its name
 * folded to lower case, the lone OPT record, its UDP size and COOKIE option, whether a
 * TSIG may follow); the DNS cookie checked and made (RFC 7873, RFC 9018 SipHash-2-4 server
 * cookies, the same secrets, stamps and verdicts as gslb.dns.cookies) and the option taken
 * out of the query; the reply cache; the reply's cookie put in and the question's case
 * given back (0x20); response rate limiting (RateLimiter below, the same buckets as
 * gslb.dns.rrl, which the server uses in its place when this module is built), the
 * counters, the sampled query log. A datagram is answered here only when the Python path
 * would answer it from the reply cache without looking further, and with the same bytes,
 * the same counters and the same draws from the same random.Random:
 *
 *   - a fixed reply (static data, a negative answer, a signed zone's reply until its
 *     signatures are due for renewal): state.udp_cache[query[2:]];
 *   - a balanced name's reply kept per routing decision (answer.cache.memo_hit): the
 *     cache entry for this query, or for the same query from another ECS subnet
 *     (answer.cache.ecs_template), its plan's compiled table (geo_compile.Compiled:
 *     the first-level index and the bisect over the arrays), the entry's memo.
 *
 * Anything else, or anything unexpected, goes to gslb.server.transport.udp.handle, as
 * every datagram does without this module: TSIG, a malformed cookie (FORMERR), a client
 * whose UDP limit leaves no room for the cookie, a query the cache does not hold.
 * tests/test_fastpath.py compares both paths byte for byte. The code that reads the
 * datagram runs under AddressSanitizer and UndefinedBehaviorSanitizer in CI with the fuzz
 * corpus (tests/test_sanitizers.py, docs/reliability.md).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64
#define MAX_BATCHES 16
#define IN_SLOT 4096
#define OUT_SLOT 1280
#define EDNS_MAX_UDP 1232
#define OPT_ECS 8
#define OPT_COOKIE 10
#define FALLBACK 0xFFFFFFFFu
#define MAX_SECRETS 8
/* gslb.dns.cookies */
#define COOKIE_PAST 3600
#define COOKIE_FUTURE 300
#define COOKIE_RENEW 1800
#define COOKIE_REUSE 300
/* gslb.server.transport: what a query's cookie was */
#define NO_COOKIE 0
#define CLIENT_COOKIE 1
#define VALID_COOKIE 2
#define BADCOOKIE 23
#define RRL_SEND 0
#define RRL_DROP 1
#define RRL_SLIP 2

/* interned attribute names */
static PyObject *s_state, *s_udp_cache, *s_plans, *s_balanced_counts, *s_stats, *s_queries,
    *s_dropped, *s_rrl, *s_query_log_every, *s_cookies, *s_nocookie_udp, *s_rng, *s_name,
    *s_memo_plan, *s_tail, *s_memo, *s_skey, *s_needs_client, *s_decisions, *s_record, *s_ecs,
    *s_v4, *s_v6, *s_shift, *s_kshift, *s_starts, *s_index, *s_codes, *s_random, *s_randrange,
    *s_ecs_tag, *s_too_long, *s_send_failed, *s_secrets, *s_valid, *s_fresh, *s_hashes,
    *s_badcookie, *s_slipped, *s_seen, *s_udp, *s_send, *s_drop, *s_slip;

static PyTypeObject LimiterType;

typedef struct {
    PyObject_HEAD
    int fd;
    PyObject *holder;
    PyObject *handle; /* gslb.server.transport.udp.handle(ctr, holder, data, host) */
    PyObject *ctr;
    PyObject *hosts; /* raw peer address -> its text */
    PyObject *log; /* gslb.server.metrics.log_query(host, transport, reply), or None */
    PyObject *slip_opt; /* gslb.server.transport.udp.SLIP_OPT */
    unsigned long long fast, slow, errors;
    struct CookieMemo *memo; /* cookies made and verified lately (a hash spared each) */
    struct mmsghdr *rmsgs, *smsgs;
    struct iovec *in_iov, *out_iov;
    struct sockaddr_in6 *names;
    unsigned char *inbuf, *outbuf;
} Batcher;

/* ------------------------------------------------------------------ SipHash-2-4 */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                     \
    do {                                                             \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);    \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                       \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                       \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);    \
    } while (0)

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* SipHash-2-4 of data under a 16-octet key (gslb.dns.cookies.siphash24: its 8 octets are
 * this value little-endian) */
static uint64_t siphash24(const unsigned char *key, const unsigned char *data, size_t n) {
    uint64_t k0 = le64(key), k1 = le64(key + 8);
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    size_t whole = n - n % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = le64(data + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)n << 56;
    for (size_t i = 0; i < n % 8; i++) b |= (uint64_t)data[whole + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static void put_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_be16(unsigned char *p, unsigned v) {
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

/* ------------------------------------------------------------------ counters */

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

static int attr_counter_add(PyObject *o, PyObject *attr, PyObject *key, Py_ssize_t by) {
    /* o.attr[key] += by */
    PyObject *d = PyObject_GetAttr(o, attr);
    if (d == NULL) return -1;
    int r = PyDict_Check(d) ? counter_add(d, key, by) : 0;
    Py_DECREF(d);
    return r;
}

static int int_attr_add(PyObject *o, PyObject *attr, long by) {
    /* o.attr += by */
    PyObject *v = PyObject_GetAttr(o, attr);
    if (v == NULL) return -1;
    PyObject *b = PyLong_FromLong(by);
    if (b == NULL) {
        Py_DECREF(v);
        return -1;
    }
    PyObject *n = PyNumber_Add(v, b);
    Py_DECREF(v);
    Py_DECREF(b);
    if (n == NULL) return -1;
    int r = PyObject_SetAttr(o, attr, n);
    Py_DECREF(n);
    return r;
}

static int dropped_add(Batcher *self, PyObject *what, Py_ssize_t by) {
    PyObject *stats = PyObject_GetAttr(self->holder, s_stats);
    if (stats == NULL) return -1;
    int r = attr_counter_add(stats, s_dropped, what, by);
    Py_DECREF(stats);
    return r;
}

static int long_attr(PyObject *o, PyObject *name, long *out) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    *out = PyLong_AsLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* ------------------------------------------------------------------ the parse */

/* gslb.dns.request.Request: what the stages read, from one walk */
typedef struct {
    long qend; /* the end of the question (type and class included); 0: not read */
    long opt; /* the lone OPT record ending the query, else -1 */
    long payload; /* 512, or the EDNS size up to 1232 */
    long cs, ce; /* the COOKIE option with its header, or -1 */
    int maybe_tsig;
    int mixed; /* the name has upper-case letters */
} Req;

static void parse_req(const unsigned char *d, long n, Req *r) {
    r->qend = 0;
    r->opt = -1;
    r->payload = 512;
    r->cs = r->ce = -1;
    r->maybe_tsig = 0;
    r->mixed = 0;
    if (n < 12) return;
    if (d[4] == 0 && d[5] == 1) {
        long pos = 12;
        int mixed = 0;
        while (pos < n) {
            int ln = d[pos];
            if (ln == 0 || ln > 63) break;
            if (pos + 1 + ln > n) { /* a label past the end: not read */
                pos = n;
                break;
            }
            for (int i = 1; i <= ln; i++) mixed |= d[pos + i] >= 'A' && d[pos + i] <= 'Z';
            pos += 1 + ln;
        }
        if (pos < n && d[pos] == 0 && pos + 5 <= n && pos - 11 <= 255) {
            r->qend = pos + 5;
            r->mixed = mixed;
        }
    }
    long q = r->qend;
    static const unsigned char one_ar[6] = {0, 0, 0, 0, 0, 1};
    if (q && q + 11 <= n && memcmp(d + 6, one_ar, 6) == 0 && d[q] == 0 && d[q + 1] == 0 && d[q + 2] == 41 &&
        q + 11 + ((d[q + 9] << 8) | d[q + 10]) == n)
        r->opt = q;
    r->maybe_tsig = n > 12 && (d[10] || d[11] > 1 || (d[11] == 1 && r->opt < 0));
    if (r->opt < 0) return;
    long o = r->opt;
    long payload = (d[o + 3] << 8) | d[o + 4];
    r->payload = payload > EDNS_MAX_UDP ? EDNS_MAX_UDP : payload < 512 ? 512 : payload;
    long p = o + 11;
    while (p + 4 <= n) {
        int code = (d[p] << 8) | d[p + 1], ln = (d[p + 2] << 8) | d[p + 3];
        if (code == OPT_COOKIE) {
            if (p + 4 + ln <= n) {
                r->cs = p;
                r->ce = p + 4 + ln;
            }
            break;
        }
        p += 4 + ln;
    }
}

/* the offset of the first name's root label, walked from 12 (gslb.dns.wire.question_end) */
static long question_end(const unsigned char *m, long n) {
    long pos = 12;
    while (pos < n && m[pos]) pos += 1 + m[pos];
    return pos;
}
/* ------------------------------------------------------------------ clients and tables */

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


/* ------------------------------------------------------------------ the rate limiter */

/* gslb.dns.rrl.RateLimiter in C: the same keys (client /24 or /56, response kind, the
 * name of a positive answer), token buckets, slips, sweep and counters, so the C loop
 * limits without leaving C. tests/test_rrl.py drives both with the same events. */

typedef struct RNode {
    struct RNode *next;
    uint64_t h;
    double tokens, at;
    long denied;
    unsigned klen;
    unsigned char key[];
} RNode;

typedef struct {
    PyObject_HEAD
    double rate;
    long slip;
    Py_ssize_t max_keys;
    RNode **b;
    size_t nb; /* a power of two */
    Py_ssize_t count;
    unsigned long long dropped, slipped;
    unsigned char hkey[16]; /* a random SipHash key: the table's hashes cannot be aimed at */
} Limiter;

#define RKEY_MAX (2 + 7 + 255)

/* the bucket key: kind, prefix length, the client's /24 (3 octets) or /56 (7), the name */
static unsigned rrl_key(unsigned char *k, int kind, const unsigned char *prefix, int plen,
                        const unsigned char *name, long nlen) {
    k[0] = (unsigned char)kind;
    k[1] = (unsigned char)plen;
    memcpy(k + 2, prefix, plen);
    if (nlen > 255) nlen = 255;
    for (long i = 0; i < nlen; i++) {
        unsigned char c = name[i];
        k[2 + plen + i] = c >= 'A' && c <= 'Z' ? c + 32 : c;
    }
    return 2 + plen + (unsigned)nlen;
}

/* gslb.dns.rrl._kind: (0, the qname) for a positive answer, 1 for negative, 2 for errors */
static int rrl_kind(const unsigned char *reply, long n, long *nlen) {
    *nlen = 0;
    if (n < 12) return 2;
    int rcode = reply[3] & 0xF;
    if (rcode == 0 || rcode == 3) {
        if (rcode == 0 && (reply[6] || reply[7])) {
            long end = question_end(reply, n);
            *nlen = (end > n ? n : end) - 12;
            return 0;
        }
        return 1;
    }
    return 2;
}

static RNode **rrl_slot(Limiter *L, const unsigned char *k, unsigned klen, uint64_t h) {
    RNode **p = &L->b[h & (L->nb - 1)];
    while (*p != NULL && ((*p)->h != h || (*p)->klen != klen || memcmp((*p)->key, k, klen) != 0)) p = &(*p)->next;
    return p;
}

static void rrl_clear(Limiter *L) {
    for (size_t i = 0; i < L->nb; i++) {
        RNode *e = L->b[i];
        while (e != NULL) {
            RNode *nx = e->next;
            PyMem_Free(e);
            e = nx;
        }
        L->b[i] = NULL;
    }
    L->count = 0;
}

static void rrl_sweep(Limiter *L, double now) {
    /* forget keys that have refilled completely (idle for a second or more) */
    for (size_t i = 0; i < L->nb; i++) {
        RNode **p = &L->b[i];
        while (*p != NULL) {
            if (now - (*p)->at < 1.0) {
                p = &(*p)->next;
            } else {
                RNode *dead = *p;
                *p = dead->next;
                PyMem_Free(dead);
                L->count--;
            }
        }
    }
    if (L->count >= L->max_keys) rrl_clear(L); /* still full: an attack from many networks */
}

static int rrl_grow(Limiter *L) {
    size_t nb = L->nb * 2;
    RNode **b = PyMem_Calloc(nb, sizeof(RNode *));
    if (b == NULL) return -1;
    for (size_t i = 0; i < L->nb; i++) {
        RNode *e = L->b[i];
        while (e != NULL) {
            RNode *nx = e->next;
            e->next = b[e->h & (nb - 1)];
            b[e->h & (nb - 1)] = e;
            e = nx;
        }
    }
    PyMem_Free(L->b);
    L->b = b;
    L->nb = nb;
    return 0;
}

/* RateLimiter.check: RRL_SEND, RRL_DROP or RRL_SLIP; -1 out of memory */
static int rrl_check(Limiter *L, const unsigned char *prefix, int plen, const unsigned char *reply, long n,
                     double now) {
    unsigned char k[RKEY_MAX];
    long nlen;
    int kind = rrl_kind(reply, n, &nlen);
    unsigned klen = rrl_key(k, kind, prefix, plen, reply + 12, nlen);
    uint64_t h = siphash24(L->hkey, k, klen);
    RNode **p = rrl_slot(L, k, klen, h);
    RNode *e = *p;
    if (e == NULL) {
        if (L->count >= L->max_keys) rrl_sweep(L, now);
        if ((size_t)L->count >= L->nb && rrl_grow(L) < 0) return -1;
        e = PyMem_Malloc(sizeof(RNode) + klen);
        if (e == NULL) return -1;
        e->h = h;
        e->klen = klen;
        memcpy(e->key, k, klen);
        e->tokens = L->rate - 1;
        e->at = now;
        e->denied = 0;
        RNode **slot = &L->b[h & (L->nb - 1)];
        e->next = *slot;
        *slot = e;
        L->count++;
        return RRL_SEND;
    }
    double t = e->tokens + (now - e->at) * L->rate;
    e->tokens = L->rate < t ? L->rate : t;
    e->at = now;
    if (e->tokens >= 1) {
        e->tokens -= 1;
        return RRL_SEND;
    }
    e->denied++;
    if (L->slip && e->denied % L->slip == 0) {
        L->slipped++;
        return RRL_SLIP;
    }
    L->dropped++;
    return RRL_DROP;
}

static int rrl_negative_exhausted(Limiter *L, const unsigned char *prefix, int plen, double now) {
    unsigned char k[RKEY_MAX];
    unsigned klen = rrl_key(k, 1, prefix, plen, NULL, 0);
    RNode *e = *rrl_slot(L, k, klen, siphash24(L->hkey, k, klen));
    return e != NULL && e->tokens + (now - e->at) * L->rate < 1;
}

/* the client's network as rrl keys it: 3 octets for IPv4 (IPv4-mapped too), 7 for IPv6 */
static int prefix_of_raw(const unsigned char *a, int len, unsigned char *out) {
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (len == 16 && memcmp(a, mapped, 12) == 0) {
        a += 12;
        len = 4;
    }
    if (len == 4) {
        memcpy(out, a, 3);
        return 3;
    }
    memcpy(out, a, 7);
    return 7;
}

static int prefix_of_sockaddr(const struct sockaddr_in6 *sa, unsigned char *out) {
    if (sa->sin6_family == AF_INET)
        return prefix_of_raw((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr, 4, out);
    return prefix_of_raw(sa->sin6_addr.s6_addr, 16, out);
}

static int prefix_of_text(PyObject *host, unsigned char *out) {
    const char *t = PyUnicode_AsUTF8(host);
    if (t == NULL) return -1;
    unsigned char a[16];
    if (strchr(t, ':') == NULL) {
        if (inet_pton(AF_INET, t, a) != 1) goto bad;
        return prefix_of_raw(a, 4, out);
    }
    char buf[INET6_ADDRSTRLEN + 1];
    size_t n = strcspn(t, "%");
    if (n >= sizeof buf) goto bad;
    memcpy(buf, t, n);
    buf[n] = 0;
    if (inet_pton(AF_INET6, buf, a) != 1) goto bad;
    return prefix_of_raw(a, 16, out);
bad:
    PyErr_Format(PyExc_OSError, "illegal IP address string passed to inet_pton: %s", t);
    return -1;
}

static int Limiter_init(Limiter *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"rate", "slip", "max_keys", NULL};
    double rate;
    long slip = 2;
    Py_ssize_t max_keys = 200000;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "d|ln", kwlist, &rate, &slip, &max_keys)) return -1;
    if (!(rate > 0)) {
        PyErr_SetString(PyExc_ValueError, "rate must be > 0");
        return -1;
    }
    if (slip < 0 || max_keys < 1) {
        PyErr_SetString(PyExc_ValueError, "slip must be >= 0 and max_keys >= 1");
        return -1;
    }
    if (self->b != NULL) rrl_clear(self);
    self->rate = rate;
    self->slip = slip;
    self->max_keys = max_keys;
    if (self->b == NULL) {
        self->nb = 1024;
        self->b = PyMem_Calloc(self->nb, sizeof(RNode *));
        if (self->b == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    if (getrandom(self->hkey, sizeof self->hkey, 0) != (ssize_t)sizeof self->hkey) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static void Limiter_dealloc(Limiter *self) {
    if (self->b != NULL) {
        rrl_clear(self);
        PyMem_Free(self->b);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Limiter_check(Limiter *self, PyObject *args) {
    PyObject *host;
    Py_buffer reply;
    double now;
    if (!PyArg_ParseTuple(args, "Uy*d", &host, &reply, &now)) return NULL;
    unsigned char prefix[7];
    int plen = prefix_of_text(host, prefix);
    int r = plen < 0 ? -1 : rrl_check(self, prefix, plen, reply.buf, reply.len, now);
    PyBuffer_Release(&reply);
    if (r < 0) return plen < 0 ? NULL : PyErr_NoMemory();
    PyObject *out = r == RRL_SEND ? s_send : r == RRL_DROP ? s_drop : s_slip;
    Py_INCREF(out);
    return out;
}

static PyObject *Limiter_negative_exhausted(Limiter *self, PyObject *args) {
    PyObject *host;
    double now;
    if (!PyArg_ParseTuple(args, "Ud", &host, &now)) return NULL;
    unsigned char prefix[7];
    int plen = prefix_of_text(host, prefix);
    if (plen < 0) return NULL;
    return PyBool_FromLong(rrl_negative_exhausted(self, prefix, plen, now));
}

static Py_ssize_t Limiter_len(Limiter *self) { return self->count; }

static PyMemberDef Limiter_members[] = {
    {"rate", T_DOUBLE, offsetof(Limiter, rate), READONLY, "answers per second per key"},
    {"slip", T_LONG, offsetof(Limiter, slip), READONLY, "every slip-th limited answer is sent truncated"},
    {"max_keys", T_PYSSIZET, offsetof(Limiter, max_keys), READONLY, "keys kept before a sweep"},
    {"dropped", T_ULONGLONG, offsetof(Limiter, dropped), READONLY, "answers dropped"},
    {"slipped", T_ULONGLONG, offsetof(Limiter, slipped), READONLY, "answers sent truncated"},
    {NULL},
};

static PyMethodDef Limiter_methods[] = {
    {"check", (PyCFunction)Limiter_check, METH_VARARGS,
     "check(client, reply, now) -> 'send', 'drop' or 'slip' (gslb.dns.rrl.RateLimiter.check)"},
    {"negative_exhausted", (PyCFunction)Limiter_negative_exhausted, METH_VARARGS,
     "negative_exhausted(client, now) -> whether a negative answer now would be limited"},
    {NULL},
};

static PySequenceMethods Limiter_seq = {.sq_length = (lenfunc)Limiter_len};

static PyTypeObject LimiterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gslb.server.transport._fastpath.RateLimiter",
    .tp_basicsize = sizeof(Limiter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Response rate limiting: gslb.dns.rrl.RateLimiter's buckets in C",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Limiter_init,
    .tp_dealloc = (destructor)Limiter_dealloc,
    .tp_members = Limiter_members,
    .tp_methods = Limiter_methods,
    .tp_as_sequence = &Limiter_seq,
};

/* ------------------------------------------------------------------ per batch */

/* The cookies a loop made and verified lately, direct-mapped: a resolver's next query
 * with the same client cookie (or server cookie) from the same address costs a compare,
 * as gslb.dns.cookies.Cookies's memos make it cost a dict look-up. Emptied when the
 * secrets change. */
#define CMEMO 512
struct CookieMemo {
    int nsecrets;
    unsigned char secrets[MAX_SECRETS][16];
    struct {
        unsigned char client[8], addr[16], cookie[16];
        uint32_t ts;
        int alen, used;
    } fresh[CMEMO];
    struct {
        unsigned char opt[24], addr[16];
        int alen, secret, used;
    } ok[CMEMO];
};

/* what the Python path reads per query, read once per batch (the event loop swaps the
 * state between callbacks, never during one) */
typedef struct {
    PyObject *cache, *plans, *counts, *queries, *rng; /* borrowed from owned state/holder */
    PyObject *cookie_stats; /* holder.stats.cookies (a Counter), borrowed */
    PyObject *cookies_obj; /* holder.cookies (gslb.dns.cookies.Cookies), borrowed */
    int cookies;
    int nsecrets;
    unsigned char secrets[MAX_SECRETS][16];
    long cap;
    long every; /* the query log: one in this many; 0: off */
    Limiter *rrl; /* borrowed; NULL: off */
    double wall, mono; /* time.time(), time.monotonic() */
    uint32_t now; /* int(time.time()) */
    long valid, fresh, hashes; /* cookie counters, added to the Python ones after the batch */
    long extra; /* room the cache's reply is made with at its end (for the cookie option) */
    struct CookieMemo *memo;
} Ctx;

/* ------------------------------------------------------------------ cookies */

static long serial_age(uint32_t ts, uint32_t now) {
    /* gslb.dns.cookies._age: seconds from ts to now in serial-number arithmetic */
    uint32_t d = now - ts;
    return d >= 0x80000000u ? (long)d - 0x100000000L : (long)d;
}

/* the client address as RFC 9018 hashes it (4 octets for IPv4, IPv4-mapped too); its length */
static int cookie_addr(const struct sockaddr_in6 *sa, unsigned char *out) {
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (sa->sin6_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 4;
    }
    if (memcmp(sa->sin6_addr.s6_addr, mapped, 12) == 0) {
        memcpy(out, sa->sin6_addr.s6_addr + 12, 4);
        return 4;
    }
    memcpy(out, sa->sin6_addr.s6_addr, 16);
    return 16;
}

/* gslb.dns.cookies.server_cookie: version 1, reserved, the stamp, the hash (16 octets) */
static void make_server_cookie(const unsigned char *secret, const unsigned char *client, const unsigned char *addr,
                               int alen, uint32_t ts, unsigned char *out) {
    unsigned char buf[8 + 8 + 16];
    out[0] = 1;
    out[1] = out[2] = out[3] = 0;
    out[4] = (unsigned char)(ts >> 24);
    out[5] = (unsigned char)(ts >> 16);
    out[6] = (unsigned char)(ts >> 8);
    out[7] = (unsigned char)ts;
    memcpy(buf, client, 8);
    memcpy(buf + 8, out, 8);
    memcpy(buf + 16, addr, alen);
    put_le64(out + 8, siphash24(secret, buf, 16 + alen));
}

static unsigned memo_slot(const unsigned char *k8, const unsigned char *addr, int alen) {
    uint64_t h = le64(k8);
    for (int i = 0; i < alen; i++) h = (h ^ addr[i]) * 0x100000001b3ULL;
    return (unsigned)(h ^ (h >> 29)) % CMEMO;
}

/* the client's fresh server cookie (gslb.dns.cookies.Cookies._fresh: stamped with the time
 * rounded down to five minutes), from the memo when it made it already */
static void fresh_cookie(Ctx *cx, const unsigned char *client, const unsigned char *addr, int alen,
                         unsigned char *out) {
    uint32_t ts = cx->now - cx->now % COOKIE_REUSE;
    struct CookieMemo *m = cx->memo;
    unsigned i = memo_slot(client, addr, alen);
    if (m->fresh[i].used && m->fresh[i].ts == ts && m->fresh[i].alen == alen &&
        memcmp(m->fresh[i].client, client, 8) == 0 && memcmp(m->fresh[i].addr, addr, alen) == 0) {
        memcpy(out, m->fresh[i].cookie, 16);
        return;
    }
    cx->hashes++;
    make_server_cookie(cx->secrets[0], client, addr, alen, ts, out);
    memcpy(m->fresh[i].client, client, 8);
    memcpy(m->fresh[i].addr, addr, alen);
    memcpy(m->fresh[i].cookie, out, 16);
    m->fresh[i].ts = ts;
    m->fresh[i].alen = alen;
    m->fresh[i].used = 1;
}

/* which secret made the 24-octet option o for this address: its index, or -1 (not ours) */
static int verified(Ctx *cx, const unsigned char *o, const unsigned char *addr, int alen) {
    struct CookieMemo *m = cx->memo;
    unsigned i = memo_slot(o + 16, addr, alen);
    if (m->ok[i].used && m->ok[i].alen == alen && memcmp(m->ok[i].opt, o, 24) == 0 &&
        memcmp(m->ok[i].addr, addr, alen) == 0)
        return m->ok[i].secret;
    unsigned char buf[16 + 16];
    memcpy(buf, o, 16);
    memcpy(buf + 16, addr, alen);
    for (int s = 0; s < cx->nsecrets; s++) {
        cx->hashes++;
        unsigned char h[8];
        put_le64(h, siphash24(cx->secrets[s], buf, 16 + alen));
        if (memcmp(h, o + 16, 8) == 0) {
            memcpy(m->ok[i].opt, o, 24);
            memcpy(m->ok[i].addr, addr, alen);
            m->ok[i].alen = alen;
            m->ok[i].secret = s;
            m->ok[i].used = 1;
            return s;
        }
    }
    return -1;
}

/* gslb.dns.cookies.Cookies.check for the option data o (n octets, 8 or 16..40): whether it
 * carries a valid server cookie of ours; the reply's whole COOKIE option (28 octets) in rop */
static int cookie_verdict(Ctx *cx, const unsigned char *o, long n, const struct sockaddr_in6 *peer,
                          unsigned char *rop) {
    unsigned char addr[16];
    int alen = cookie_addr(peer, addr);
    rop[0] = 0;
    rop[1] = OPT_COOKIE;
    rop[2] = 0;
    rop[3] = 24;
    if (n == 24 && o[8] == 1) {
        uint32_t ts = ((uint32_t)o[12] << 24) | ((uint32_t)o[13] << 16) | ((uint32_t)o[14] << 8) | o[15];
        long age = serial_age(ts, cx->now);
        if (-COOKIE_FUTURE <= age && age <= COOKIE_PAST) {
            int s = verified(cx, o, addr, alen);
            if (s >= 0) {
                cx->valid++;
                if (s == 0 && age <= COOKIE_RENEW && !o[9] && !o[10] && !o[11]) {
                    memcpy(rop + 4, o, 24); /* still fresh and as we make them: kept */
                } else {
                    memcpy(rop + 4, o, 8);
                    fresh_cookie(cx, o, addr, alen, rop + 12);
                }
                return 1;
            }
        }
    }
    cx->fresh++;
    memcpy(rop + 4, o, 8);
    fresh_cookie(cx, o, addr, alen, rop + 12);
    return 0;
}

/* gslb.dns.cookies.add_option in place: the reply r (n octets, with room for olen more
 * after them) gets the option appended to its OPT record (which ends it); 0 (nothing
 * changed) when the reply has no OPT last, as the Python one's None */
static int add_option(unsigned char *r, long n, const unsigned char *option, long olen, long start) {
    if (n < 12) return 0;
    int qd = (r[4] << 8) | r[5], an = (r[6] << 8) | r[7], ns = (r[8] << 8) | r[9], ar = (r[10] << 8) | r[11];
    if (!ar) return 0;
    long pos = start && qd == 1 ? start : 12;
    for (int i = 0; i < (pos == 12 ? qd : 0); i++) {
        while (pos < n && r[pos] && r[pos] < 0xC0) pos += 1 + r[pos];
        pos += pos < n && r[pos] >= 0xC0 ? 2 : 1;
        pos += 4;
    }
    long last = -1;
    for (long i = 0; i < (long)an + ns + ar; i++) {
        last = pos;
        while (pos < n && r[pos] && r[pos] < 0xC0) pos += 1 + r[pos];
        pos += pos < n && r[pos] >= 0xC0 ? 2 : 1;
        if (pos + 10 > n) return 0;
        pos += 10 + ((r[pos + 8] << 8) | r[pos + 9]);
    }
    if (last < 0 || pos != n || last + 11 > n || r[last] != 0 || r[last + 1] != 0 || r[last + 2] != 0x29) return 0;
    unsigned rdlen = ((r[last + 9] << 8) | r[last + 10]) + (unsigned)olen;
    if (rdlen > 0xFFFF) return 0;
    put_be16(r + last + 9, rdlen);
    memcpy(r + n, option, olen);
    return 1;
}

/* gslb.dns.wire.header's flags for an error reply to reply r: QR, the opcode, RD, CD, rcode */
static void error_header(unsigned char *w, const unsigned char *r, int rcode, int qd, int ar, int tc) {
    unsigned qflags = (r[2] << 8) | r[3];
    unsigned flags = 0x8000 | (qflags & (0x7800 | 0x0100 | 0x0010)) | (tc ? 0x0200 : 0) | (rcode & 0xF);
    w[0] = r[0];
    w[1] = r[1];
    put_be16(w + 2, flags);
    put_be16(w + 4, qd);
    put_be16(w + 6, 0);
    put_be16(w + 8, 0);
    put_be16(w + 10, ar);
}

/* gslb.dns.rrl.truncated: the header with TC=1 and the question, no records, then opt */
static PyObject *truncated_of(const unsigned char *r, long n, const unsigned char *opt, long olen);

static PyObject *truncated_reply(PyObject *reply, const unsigned char *opt, long olen) {
    return truncated_of((const unsigned char *)PyBytes_AS_STRING(reply), PyBytes_GET_SIZE(reply), opt, olen);
}

static PyObject *truncated_of(const unsigned char *r, long n, const unsigned char *opt, long olen) {
    long end = r[5] == 1 ? question_end(r, n) + 5 : 12;
    if (end > n) end = n;
    PyObject *out = PyBytes_FromStringAndSize(NULL, end + olen);
    if (out == NULL) return NULL;
    unsigned char *w = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(w, r, 4);
    w[2] |= 0x02;
    put_be16(w + 4, end > 12 ? 1 : 0);
    memset(w + 6, 0, 4);
    put_be16(w + 10, olen ? 1 : 0);
    memcpy(w + 12, r + 12, end - 12);
    if (olen) memcpy(w + end, opt, olen); /* opt may be NULL when there is none */
    return out;
}

/* an OPT record as gslb.dns.wire.opt_record(do, rcode_hi, option) makes it (11 octets + option) */
static long opt_with(unsigned char *w, int do_bit, int rcode_hi, const unsigned char *option, long olen) {
    w[0] = 0;
    put_be16(w + 1, 41);
    put_be16(w + 3, EDNS_MAX_UDP);
    w[5] = (unsigned char)rcode_hi;
    w[6] = do_bit ? 0x80 : 0;
    w[7] = w[8] = 0;
    put_be16(w + 9, (unsigned)olen);
    memcpy(w + 11, option, olen);
    return 11 + olen;
}

/* gslb.server.transport.badcookie: BADCOOKIE with the question and a fresh server cookie */
static PyObject *badcookie_reply(PyObject *reply, const unsigned char *option, long olen) {
    const unsigned char *r = (const unsigned char *)PyBytes_AS_STRING(reply);
    long n = PyBytes_GET_SIZE(reply);
    long end = r[5] == 1 ? question_end(r, n) + 5 : 12;
    if (end > n) end = n;
    PyObject *out = PyBytes_FromStringAndSize(NULL, end + 11 + olen);
    if (out == NULL) return NULL;
    unsigned char *w = (unsigned char *)PyBytes_AS_STRING(out);
    error_header(w, r, BADCOOKIE & 0xF, end > 12 ? 1 : 0, 1, 0);
    memcpy(w + 12, r + 12, end - 12);
    opt_with(w + end, 0, BADCOOKIE >> 4, option, olen);
    return out;
}
/* ------------------------------------------------------------------ the reply cache */

/* 1: answered (*out a new reference), 0: take the Python path, -1: a Python error */
static int memo_reply(Batcher *self, Ctx *cx, PyObject *e, const unsigned char *d, long n,
                      const Client *ecs, const struct sockaddr_in6 *peer, PyObject **out, PyObject **skey_out) {
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
    if (!PyTuple_CheckExact(m) || (PyTuple_GET_SIZE(m) != 4 && PyTuple_GET_SIZE(m) != 5)) goto done;
    if (PyTuple_GET_SIZE(m) == 5) { /* a signed answer's replies: kept until its signatures are due */
        double due = PyFloat_AsDouble(PyTuple_GET_ITEM(m, 4));
        if (due == -1.0 && PyErr_Occurred()) goto error;
        if (cx->wall >= due) goto done;
    }
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
    PyObject *reply = PyBytes_FromStringAndSize(NULL, 2 + rl + tail + cx->extra);
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
    if (skey == NULL) {
        Py_DECREF(reply);
        goto error;
    }
    *out = reply;
    *skey_out = skey;
    skey = NULL;
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

/* answer.cache.lookup for the query d (n octets: its cookie taken out, its name in lower
 * case): 1: answered (*out and *skey new references), 0: the Python path, -1: a Python error */
static int cache_reply(Batcher *self, Ctx *cx, const unsigned char *d, long n,
                       const struct sockaddr_in6 *peer, PyObject **out, PyObject **skey) {
    PyObject *key = PyBytes_FromStringAndSize((const char *)d + 2, n - 2);
    if (key == NULL) return -1;
    PyObject *hit = PyDict_GetItemWithError(cx->cache, key); /* borrowed */
    Py_DECREF(key);
    if (hit == NULL && PyErr_Occurred()) return -1;
    if (hit != NULL) {
        if (PyTuple_CheckExact(hit)) { /* a FixedReply: (reply after the ID, stats key[, due]) */
            Py_ssize_t size = PyTuple_GET_SIZE(hit);
            if ((size != 2 && size != 3) || !PyBytes_CheckExact(PyTuple_GET_ITEM(hit, 0))) return 0;
            if (size == 3) { /* a signed reply: kept until its signatures are due for renewal */
                double due = PyFloat_AsDouble(PyTuple_GET_ITEM(hit, 2));
                if (due == -1.0 && PyErr_Occurred()) return -1;
                if (cx->wall >= due) return 0;
            }
            PyObject *tailb = PyTuple_GET_ITEM(hit, 0);
            Py_ssize_t tl = PyBytes_GET_SIZE(tailb);
            PyObject *reply = PyBytes_FromStringAndSize(NULL, 2 + tl + cx->extra);
            if (reply == NULL) return -1;
            memcpy(PyBytes_AS_STRING(reply), d, 2);
            memcpy(PyBytes_AS_STRING(reply) + 2, PyBytes_AS_STRING(tailb), tl);
            *out = reply;
            *skey = PyTuple_GET_ITEM(hit, 1);
            Py_INCREF(*skey);
            return 1;
        }
        Client c, *ecs = NULL;
        if (ecs_template(d, n, &c)) ecs = &c;
        /* the entry's own ECS client is this query's (the same bytes): tail says if it has one.
         * The entry is held: the RNG and the counters are Python objects */
        Py_INCREF(hit);
        int r = memo_reply(self, cx, hit, d, n, ecs, peer, out, skey);
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
    int r = memo_reply(self, cx, entry, d, n, &c, peer, out, skey);
    Py_DECREF(entry);
    return r;
}

/* the stages of gslb.server.transport.answer that the cache answers: 1: answered (*out, *skey
 * new references; *kind what the cookie was, rop the reply's COOKIE option when there was
 * one; *edns the query had a lone OPT), 0: the Python path, -1: a Python error */
static int fast_reply(Batcher *self, Ctx *cx, const unsigned char *d, long n, const struct sockaddr_in6 *peer,
                      unsigned char *scratch, PyObject **out, PyObject **skey, int *kind, unsigned char *rop,
                      int *edns) {
    Req r;
    parse_req(d, n, &r); /* 1. the parse */
    if (r.maybe_tsig || !r.qend) return 0; /* 2. TSIG, and what the engine's parser answers */
    *edns = r.opt >= 0;
    *kind = NO_COOKIE;
    const unsigned char *q = d;
    long m = n, limit = r.payload;
    long sv = cx->valid, sf = cx->fresh, sh = cx->hashes;
    int got = 0;
    if (cx->cookies && r.opt >= 0) { /* 3. the cookie */
        if (r.cs < 0) {
            if (cx->cap && r.payload > cx->cap) return 0; /* the query is rewritten first */
        } else {
            long ol = r.ce - r.cs - 4;
            if (ol != 8 && !(ol >= 16 && ol <= 40)) return 0; /* malformed: FORMERR */
            int valid = cookie_verdict(cx, d + r.cs + 4, ol, peer, rop);
            if (!valid && cx->cap) {
                long c = cx->cap < 512 ? 512 : cx->cap;
                if (c < limit) limit = c;
            }
            /* gslb.dns.cookies.rewrite_query: the option out, the UDP size less its room */
            long o = r.opt, cut = r.ce - r.cs;
            memcpy(scratch, d, o + 3);
            put_be16(scratch + o + 3, (unsigned)(limit - 28 < 512 ? 512 : limit - 28));
            memcpy(scratch + o + 5, d + o + 5, 4);
            put_be16(scratch + o + 9, (unsigned)(((d[o + 9] << 8) | d[o + 10]) - cut));
            memcpy(scratch + o + 11, d + o + 11, r.cs - (o + 11));
            memcpy(scratch + r.cs, d + r.ce, n - r.ce);
            q = scratch;
            m = n - cut;
            *kind = valid ? VALID_COOKIE : CLIENT_COOKIE;
        }
    }
    if (r.mixed) { /* 4. the cache, on the name in lower case */
        if (q != scratch) {
            memcpy(scratch, d, n);
            q = scratch;
        }
        for (long i = 12; i < r.qend - 5; i++)
            if (scratch[i] >= 'A' && scratch[i] <= 'Z') scratch[i] += 32;
    }
    cx->extra = *kind != NO_COOKIE ? 28 : 0; /* the reply is made with room for the cookie */
    got = cache_reply(self, cx, q, m, peer, out, skey);
    cx->extra = 0;
    if (got <= 0) goto python;
    /* 5. the finish: the question's case given back, the cookie put in */
    if (r.mixed) {
        unsigned char *w = (unsigned char *)PyBytes_AS_STRING(*out);
        if (PyBytes_GET_SIZE(*out) >= r.qend && w[4] == 0 && w[5] == 1 && memcmp(w + 12, q + 12, r.qend - 12) == 0)
            memcpy(w + 12, d + 12, r.qend - 12);
    }
    if (*kind != NO_COOKIE) { /* the reply has 28 octets of room at its end */
        unsigned char *w = (unsigned char *)PyBytes_AS_STRING(*out);
        long rn = PyBytes_GET_SIZE(*out) - 28;
        if (!add_option(w, rn, rop, 28, r.opt)) { /* no OPT (a bare error): as it is */
            if (_PyBytes_Resize(out, rn) < 0) goto error;
        } else if (rn + 28 > limit) { /* only for a client whose limit is 512 */
            unsigned char ob[11 + 28];
            long obl = opt_with(ob, d[r.opt + 7] & 0x80, 0, rop, 28);
            PyObject *t = truncated_of(w, rn, ob, obl); /* the question and header only: unchanged */
            if (t == NULL) goto error;
            Py_DECREF(*out);
            *out = t;
        }
    }
    return 1;
error:
    Py_CLEAR(*out);
    Py_CLEAR(*skey);
    return -1;
python:
    cx->valid = sv; /* the Python path counts the cookie itself */
    cx->fresh = sf;
    cx->hashes = sh;
    return got < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------ the loop */

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
    /* what handle() and answer() read for every query, read once per batch */
    memset(cx, 0, sizeof *cx);
    PyObject *h = self->holder;
    PyObject *state = PyObject_GetAttr(h, s_state);
    if (state == NULL) return -1;
    *owned_state = state;
    PyObject *stats = PyObject_GetAttr(h, s_stats);
    if (stats == NULL) return -1;
    *owned_stats = stats;
    int fast = 1;
    PyObject *v = PyObject_GetAttr(h, s_rrl);
    if (v == NULL) return -1;
    if (v != Py_None) {
        if (Py_TYPE(v) == &LimiterType) {
            cx->rrl = (Limiter *)v; /* held until ctx_clear */
            v = NULL;
        } else {
            fast = 0; /* a limiter this loop does not know: every answer through it in Python */
        }
    }
    Py_XDECREF(v);
    if (long_attr(h, s_query_log_every, &cx->every) < 0) return -1;
    v = PyObject_GetAttr(h, s_cookies);
    if (v == NULL) return -1;
    cx->cookies = v != Py_None;
    if (cx->cookies) {
        cx->cookies_obj = v; /* held until ctx_clear */
        PyObject *secrets = PyObject_GetAttr(v, s_secrets);
        if (secrets == NULL) return -1;
        if (!PyTuple_Check(secrets) || PyTuple_GET_SIZE(secrets) < 1 || PyTuple_GET_SIZE(secrets) > MAX_SECRETS) {
            fast = 0;
        } else {
            cx->nsecrets = (int)PyTuple_GET_SIZE(secrets);
            for (int i = 0; i < cx->nsecrets; i++) {
                PyObject *sec = PyTuple_GET_ITEM(secrets, i);
                if (!PyBytes_Check(sec) || PyBytes_GET_SIZE(sec) != 16) {
                    fast = 0;
                    break;
                }
                memcpy(cx->secrets[i], PyBytes_AS_STRING(sec), 16);
            }
        }
        cx->memo = self->memo;
        if (cx->memo->nsecrets != cx->nsecrets ||
            memcmp(cx->memo->secrets, cx->secrets, sizeof cx->secrets) != 0) { /* new secrets: forget */
            memset(cx->memo, 0, sizeof *cx->memo);
            cx->memo->nsecrets = cx->nsecrets;
            memcpy(cx->memo->secrets, cx->secrets, sizeof cx->secrets);
        }
        Py_DECREF(secrets);
        cx->cookie_stats = PyObject_GetAttr(stats, s_cookies);
        if (cx->cookie_stats == NULL) return -1;
        if (!PyDict_Check(cx->cookie_stats)) fast = 0;
    } else {
        Py_DECREF(v);
    }
    if (long_attr(h, s_nocookie_udp, &cx->cap) < 0) return -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cx->wall = ts.tv_sec + ts.tv_nsec * 1e-9;
    cx->now = (uint32_t)ts.tv_sec;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    cx->mono = ts.tv_sec + ts.tv_nsec * 1e-9;
    if (!fast) return 0;
    cx->cache = PyObject_GetAttr(state, s_udp_cache);
    cx->plans = PyObject_GetAttr(state, s_plans);
    cx->counts = PyObject_GetAttr(state, s_balanced_counts);
    cx->queries = PyObject_GetAttr(stats, s_queries);
    cx->rng = PyObject_GetAttr(h, s_rng);
    if (!cx->cache || !cx->plans || !cx->counts || !cx->queries || !cx->rng) return -1;
    if (!PyDict_Check(cx->cache) || !PyDict_Check(cx->plans) || !PyDict_Check(cx->queries) ||
        (cx->counts != Py_None && !PyDict_Check(cx->counts))) {
        Py_CLEAR(cx->cache);
    }
    return 0;
}

/* the batch's cookie and rate-limit counts into the Python counters */
static int ctx_flush(Ctx *cx, PyObject *stats, long dropped, long slipped, long badcookies) {
    if (dropped && attr_counter_add(stats, s_rrl, s_dropped, dropped) < 0) return -1;
    if (slipped && attr_counter_add(stats, s_rrl, s_slipped, slipped) < 0) return -1;
    if (badcookies && counter_add(cx->cookie_stats, s_badcookie, badcookies) < 0) return -1;
    if (cx->valid && counter_add(cx->cookie_stats, s_valid, cx->valid) < 0) return -1;
    if (cx->fresh && counter_add(cx->cookie_stats, s_fresh, cx->fresh) < 0) return -1;
    if (cx->cookies_obj != NULL && (cx->valid || cx->fresh || cx->hashes)) {
        PyObject *cs = PyObject_GetAttr(cx->cookies_obj, s_stats); /* Cookies.stats */
        if (cs == NULL) return -1;
        int r = (cx->valid && int_attr_add(cs, s_valid, cx->valid) < 0) ||
                (cx->fresh && int_attr_add(cs, s_fresh, cx->fresh) < 0) ||
                (cx->hashes && int_attr_add(cs, s_hashes, cx->hashes) < 0);
        Py_DECREF(cs);
        if (r) return -1;
    }
    cx->valid = cx->fresh = cx->hashes = 0;
    return 0;
}

static void ctx_clear(Ctx *cx) {
    Py_CLEAR(cx->cache);
    Py_CLEAR(cx->plans);
    Py_CLEAR(cx->counts);
    Py_CLEAR(cx->queries);
    Py_CLEAR(cx->rng);
    Py_CLEAR(cx->cookie_stats);
    Py_CLEAR(cx->cookies_obj);
    Py_XDECREF((PyObject *)cx->rrl);
    cx->rrl = NULL;
}

/* the sampled query log (gslb.server.transport.udp.handle): ctr.seen counts, and one in
 * every gets logged */
static int query_log(Batcher *self, Ctx *cx, const struct sockaddr_in6 *peer, PyObject *reply) {
    long seen;
    if (long_attr(self->ctr, s_seen, &seen) < 0) return -1;
    seen++;
    PyObject *v = PyLong_FromLong(seen);
    if (v == NULL) return -1;
    int r = PyObject_SetAttr(self->ctr, s_seen, v);
    Py_DECREF(v);
    if (r < 0) return -1;
    if (seen % cx->every || self->log == Py_None) return 0;
    PyObject *host = host_text(self, peer);
    if (host == NULL) return -1;
    PyObject *res = PyObject_CallFunctionObjArgs(self->log, host, s_udp, reply, NULL);
    Py_DECREF(host);
    if (res == NULL) return -1;
    Py_DECREF(res);
    return 0;
}

/* one recvmmsg batch answered; the number of datagrams taken, -1 on a Python error */
static int one_batch(Batcher *self) {
    int n = recvmmsg(self->fd, self->rmsgs, BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0) return 0;
    Ctx cx;
    PyObject *state = NULL, *stats = NULL;
    int j = 0, failed = 0;
    long dropped = 0, slipped = 0, badcookies = 0;
    unsigned char scratch[IN_SLOT];
    PyObject *qkeys[BATCH]; /* stats.queries keys answered in C, and how often */
    long qcounts[BATCH];
    int nqk = 0;
    if (ctx_load(self, &cx, &state, &stats) < 0) {
        failed = 1;
        n = 0;
    }
    for (int i = 0; i < n; i++) {
        struct mmsghdr *rm = &self->rmsgs[i];
        unsigned char *d = self->inbuf + (size_t)i * IN_SLOT;
        long len = rm->msg_len;
        socklen_t namelen = rm->msg_hdr.msg_namelen;
        const struct sockaddr_in6 *peer = &self->names[i];
        rm->msg_hdr.msg_namelen = sizeof(struct sockaddr_in6); /* reset for the next recvmmsg */
        if (rm->msg_hdr.msg_flags & MSG_TRUNC) {
            if (dropped_add(self, s_too_long, 1) < 0) { failed = 1; break; }
            continue;
        }
        PyObject *reply = NULL, *skey = NULL;
        int got = 0, kind = NO_COOKIE, edns = 0;
        unsigned char rop[28];
        if (cx.cache != NULL) {
            got = fast_reply(self, &cx, d, len, peer, scratch, &reply, &skey, &kind, rop, &edns);
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
            int act = RRL_SEND;
            if (cx.rrl != NULL && kind != VALID_COOKIE) { /* a valid server cookie cannot be spoofed */
                unsigned char pfx[7];
                int pl = prefix_of_sockaddr(peer, pfx);
                act = rrl_check(cx.rrl, pfx, pl, (const unsigned char *)PyBytes_AS_STRING(reply),
                                PyBytes_GET_SIZE(reply), cx.mono);
                if (act < 0) {
                    PyErr_NoMemory();
                    failed = 1;
                }
            }
            PyObject *sent = reply;
            if (act == RRL_SLIP) {
                slipped++;
                if (kind == CLIENT_COOKIE) { /* it can come back with the cookie, and pass */
                    badcookies++;
                    sent = badcookie_reply(reply, rop, 28);
                } else {
                    sent = edns ? truncated_reply(reply, (const unsigned char *)PyBytes_AS_STRING(self->slip_opt),
                                                  PyBytes_GET_SIZE(self->slip_opt))
                                : truncated_reply(reply, NULL, 0);
                }
                Py_DECREF(reply);
                if (sent == NULL) failed = 1;
            } else if (act == RRL_DROP) {
                dropped++;
                Py_DECREF(reply);
                sent = NULL;
            }
            reply = sent;
            if (reply != NULL && !failed) { /* counted per batch: the same few keys (objects) recur */
                int k = 0;
                while (k < nqk && qkeys[k] != skey) k++;
                if (k == nqk) {
                    qkeys[nqk] = skey; /* the reference moves here */
                    qcounts[nqk++] = 0;
                    skey = NULL;
                }
                qcounts[k]++;
            }
            Py_XDECREF(skey);
            if (reply != NULL && !failed && cx.every && query_log(self, &cx, peer, reply) < 0) failed = 1;
            if (failed) {
                Py_XDECREF(reply);
                break;
            }
            if (reply == NULL) continue;
        } else {
            self->slow++;
            PyObject *data = PyBytes_FromStringAndSize((const char *)d, len);
            PyObject *host = data ? host_text(self, peer) : NULL;
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
    for (int k = 0; k < nqk; k++) {
        if (!failed && counter_add(cx.queries, qkeys[k], qcounts[k]) < 0) failed = 1;
        Py_DECREF(qkeys[k]);
    }
    /* the counters of cookies are only counted with cookies on (cookie_stats is there) */
    if (stats != NULL && !failed && ctx_flush(&cx, stats, dropped, slipped, badcookies) < 0) failed = 1;
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
    Py_CLEAR(self->log);
    Py_CLEAR(self->slip_opt);
    PyMem_Free(self->memo);
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
    Py_VISIT(self->log);
    return 0;
}

static int Batcher_clear(Batcher *self) {
    Py_CLEAR(self->holder);
    Py_CLEAR(self->handle);
    Py_CLEAR(self->ctr);
    Py_CLEAR(self->hosts);
    Py_CLEAR(self->log);
    return 0;
}

static int Batcher_init(Batcher *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "holder", "handle", "ctr", "log", "slip_opt", NULL};
    int fd;
    PyObject *holder, *handle, *ctr, *logf = Py_None, *slip_opt = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOOO|OS", kwlist, &fd, &holder, &handle, &ctr, &logf, &slip_opt))
        return -1;
    if (slip_opt == NULL) {
        slip_opt = PyBytes_FromStringAndSize(NULL, 0);
        if (slip_opt == NULL) return -1;
    } else {
        Py_INCREF(slip_opt);
    }
    Py_XSETREF(self->slip_opt, slip_opt);
    Py_INCREF(logf);
    Py_XSETREF(self->log, logf);
    self->fd = fd;
    Py_INCREF(holder);
    Py_XSETREF(self->holder, holder);
    Py_INCREF(handle);
    Py_XSETREF(self->handle, handle);
    Py_INCREF(ctr);
    Py_XSETREF(self->ctr, ctr);
    Py_XSETREF(self->hosts, PyDict_New());
    if (self->hosts == NULL) return -1;
    if (self->memo == NULL) {
        self->memo = PyMem_Calloc(1, sizeof(struct CookieMemo));
        if (self->memo == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
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
    INTERN(s_secrets, "secrets");
    INTERN(s_valid, "valid");
    INTERN(s_fresh, "fresh");
    INTERN(s_hashes, "hashes");
    INTERN(s_badcookie, "badcookie");
    INTERN(s_slipped, "slipped");
    INTERN(s_seen, "seen");
    INTERN(s_udp, "udp");
    INTERN(s_send, "send");
    INTERN(s_drop, "drop");
    INTERN(s_slip, "slip");
    if (PyType_Ready(&BatcherType) < 0 || PyType_Ready(&LimiterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL) return NULL;
    Py_INCREF(&BatcherType);
    if (PyModule_AddObject(m, "Batcher", (PyObject *)&BatcherType) < 0) {
        Py_DECREF(&BatcherType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&LimiterType);
    if (PyModule_AddObject(m, "RateLimiter", (PyObject *)&LimiterType) < 0) {
        Py_DECREF(&LimiterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
