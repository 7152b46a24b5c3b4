/*
 * rawload: a saturating UDP DNS load generator for prebuilt query packets.
 *
 * Like ../shared/bench/dnsblast.c (sendmmsg/recvmmsg batches over several sockets,
 * a fixed window of queries in flight per socket), but it sends query packets
 * exactly as given, so they may carry any EDNS option (bench/compare.py uses it
 * for the ECS workload, which dnsblast cannot send). Output mimics dnsperf's
 * summary lines, plus latency percentiles.
 *
 *   gcc -O2 -o rawload bench/rawload.c
 *   ./rawload -s 127.0.0.1 -p 5353 -f queries.hex -l 10 [-c 8] [-q 32] [-t 1] [-Q qps] [-b 127.1.0.1]
 *
 * -Q caps the send rate (queries per second over all sockets), so a workload the
 * server drops on purpose (a rate-limited flood) is sent at a known rate whatever
 * comes back; pair it with a short -t.
 *
 * -b gives each socket a source address of its own: socket i binds to the base address
 * plus i in its third octet (127.1.0.1, 127.1.1.1, ...: one /24 per socket, as many
 * resolvers' networks are), all on the loopback interface.
 *
 * queries.hex: one DNS query message per line, in hex (the ID is overwritten). A line
 * "N:hex" is sent by socket N only (a query whose server cookie was made for that
 * socket's address); other lines by any socket.
 * Loopback only by intent: bench/compare.py points it at 127.0.0.1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXSOCK 64
#define BATCH 32
#define HIST_US 200000

typedef struct { unsigned char buf[512]; int len, sock; } query_t;
typedef struct {
    int fd, outstanding;
    uint16_t next_id;
    uint64_t sent_ns[65536]; /* 0: free */
    uint16_t fifo[65536];    /* ids in send order, for timeouts */
    uint32_t head, tail;
} sock_t;

static query_t *qs; static int nq;
static int *per[MAXSOCK], nper[MAXSOCK], pos[MAXSOCK]; /* each socket's queries (indexes into qs) */
static uint64_t hist[HIST_US + 1], n_sent, n_done, n_lost, rcodes[16];

static uint64_t now_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void load(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); exit(2); }
    char line[1200]; int cap = 1024;
    qs = malloc(sizeof(query_t) * cap);
    while (fgets(line, sizeof line, f)) {
        int n = 0, sock = -1;
        char *p = line, *colon = strchr(line, ':');
        if (colon) { sock = atoi(line); p = colon + 1; }
        for (; p[0] && p[1] && p[0] != '\n' && n < 512; p += 2) {
            unsigned v; if (sscanf(p, "%2x", &v) != 1) break;
            qs[nq].buf[n++] = (unsigned char)v;
        }
        if (n < 12) continue;
        qs[nq].len = n;
        qs[nq].sock = sock;
        if (++nq == cap) { cap *= 2; qs = realloc(qs, sizeof(query_t) * cap); }
    }
    fclose(f);
    if (!nq) { fprintf(stderr, "no queries in %s\n", path); exit(2); }
}

static double pct(double p) {
    uint64_t want = (uint64_t)(p * (double)n_done), acc = 0;
    for (int i = 0; i <= HIST_US; i++) { acc += hist[i]; if (acc > want) return i / 1000.0; }
    return HIST_US / 1000.0;
}

int main(int argc, char **argv) {
    const char *server = "127.0.0.1", *file = NULL;
    int port = 53, secs = 10, nsock = 8, window = 32, opt;
    double timeout = 1.0, rate = 0;
    const char *base = NULL;
    while ((opt = getopt(argc, argv, "s:p:f:l:c:q:t:Q:b:")) != -1) {
        switch (opt) {
        case 's': server = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'f': file = optarg; break;
        case 'l': secs = atoi(optarg); break;
        case 'c': nsock = atoi(optarg); break;
        case 'q': window = atoi(optarg); break;
        case 't': timeout = atof(optarg); break;
        case 'Q': rate = atof(optarg); break;
        case 'b': base = optarg; break;
        default:
            fprintf(stderr, "usage: %s -s addr -p port -f queries.hex [-l s] [-c socks] [-q win] [-t s] [-Q qps] [-b base]\n", argv[0]);
            return 2;
        }
    }
    if (!file || nsock < 1 || nsock > MAXSOCK || window < 1 || window > 4096) {
        fprintf(stderr, "-f file required; 1 <= -c <= %d; 1 <= -q <= 4096\n", MAXSOCK); return 2;
    }
    load(file);
    for (int i = 0; i < nsock; i++) {
        per[i] = malloc(sizeof(int) * (size_t)nq);
        for (int j = 0; j < nq; j++)
            if (qs[j].sock < 0 || qs[j].sock == i) per[i][nper[i]++] = j;
        if (!nper[i]) { fprintf(stderr, "no queries for socket %d in %s\n", i, file); return 2; }
    }
    struct in_addr src = {0};
    if (base && inet_pton(AF_INET, base, &src) != 1) { fprintf(stderr, "bad -b address\n"); return 2; }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, server, &dst.sin_addr) != 1) { fprintf(stderr, "bad address\n"); return 2; }
    sock_t *s = calloc((size_t)nsock, sizeof(sock_t));
    struct pollfd pfd[MAXSOCK];
    for (int i = 0; i < nsock; i++) {
        s[i].fd = socket(AF_INET, SOCK_DGRAM, 0);
        int sz = 4 << 20;
        setsockopt(s[i].fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        setsockopt(s[i].fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        if (base) {
            struct sockaddr_in me = {.sin_family = AF_INET};
            me.sin_addr.s_addr = htonl(ntohl(src.s_addr) + ((uint32_t)i << 8));
            if (bind(s[i].fd, (struct sockaddr *)&me, sizeof me) < 0) { perror("bind"); return 2; }
        }
        if (connect(s[i].fd, (struct sockaddr *)&dst, sizeof dst) < 0) { perror("connect"); return 2; }
        s[i].next_id = (uint16_t)(i * 7919);
        pfd[i].fd = s[i].fd; pfd[i].events = POLLIN;
    }
    printf("rawload: %s:%d, %d queries from %s, %d s, %d sockets x %d in flight\n",
           server, port, nq, file, secs, nsock, window);
    static unsigned char out[BATCH][512], in[BATCH][4096];
    struct mmsghdr msgs[BATCH]; struct iovec iov[BATCH];
    uint64_t tmo = (uint64_t)(timeout * 1e9), t0 = now_ns(), end = t0 + (uint64_t)secs * 1000000000ull;
    uint64_t now = t0;
    while ((now = now_ns()) < end) {
        for (int i = 0; i < nsock; i++) {
            sock_t *k = &s[i];
            /* time out the oldest queries first */
            while (k->head != k->tail) {
                uint16_t id = k->fifo[k->head & 0xFFFF];
                if (k->sent_ns[id] == 0) { k->head++; continue; }
                if (now - k->sent_ns[id] < tmo) break;
                k->sent_ns[id] = 0; k->outstanding--; n_lost++; k->head++;
            }
            int room = window - k->outstanding, m = 0;
            if (rate > 0) { /* no more than rate x elapsed queries sent so far */
                double allow = rate * (double)(now - t0) / 1e9 - (double)n_sent;
                if (allow < room) room = allow < 0 ? 0 : (int)allow;
            }
            while (room > 0 && m < BATCH) {
                uint16_t id = k->next_id++;
                if (k->sent_ns[id]) continue; /* still in flight: skip this id */
                query_t *q = &qs[per[i][pos[i]++ % nper[i]]];
                memcpy(out[m], q->buf, (size_t)q->len);
                out[m][0] = (unsigned char)(id >> 8); out[m][1] = (unsigned char)id;
                iov[m].iov_base = out[m]; iov[m].iov_len = (size_t)q->len;
                memset(&msgs[m], 0, sizeof msgs[m]);
                msgs[m].msg_hdr.msg_iov = &iov[m]; msgs[m].msg_hdr.msg_iovlen = 1;
                k->sent_ns[id] = now; k->fifo[k->tail++ & 0xFFFF] = id;
                k->outstanding++; room--; m++;
            }
            if (m) {
                int r = sendmmsg(k->fd, msgs, (unsigned)m, MSG_DONTWAIT);
                if (r < 0) r = 0;
                n_sent += (uint64_t)r;
                for (int j = r; j < m; j++) { /* not sent: free the slots again */
                    uint16_t id = (uint16_t)((out[j][0] << 8) | out[j][1]);
                    k->sent_ns[id] = 0; k->outstanding--;
                }
            }
        }
        if (poll(pfd, (nfds_t)nsock, 1) <= 0) continue;
        now = now_ns();
        for (int i = 0; i < nsock; i++) {
            if (!(pfd[i].revents & POLLIN)) continue;
            sock_t *k = &s[i];
            for (int j = 0; j < BATCH; j++) {
                iov[j].iov_base = in[j]; iov[j].iov_len = sizeof in[j];
                memset(&msgs[j], 0, sizeof msgs[j]);
                msgs[j].msg_hdr.msg_iov = &iov[j]; msgs[j].msg_hdr.msg_iovlen = 1;
            }
            int r = recvmmsg(k->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
            for (int j = 0; j < r; j++) {
                if (msgs[j].msg_len < 12) continue;
                uint16_t id = (uint16_t)((in[j][0] << 8) | in[j][1]);
                if (!k->sent_ns[id]) continue; /* late or unknown */
                uint64_t us = (now - k->sent_ns[id]) / 1000;
                hist[us > HIST_US ? HIST_US : us]++;
                rcodes[in[j][3] & 0xF]++;
                k->sent_ns[id] = 0; k->outstanding--; n_done++;
            }
        }
    }
    double run = (double)(now_ns() - t0) / 1e9;
    for (int i = 0; i < nsock; i++) n_lost += (uint64_t)s[i].outstanding; /* in flight at the end */
    printf("\nStatistics:\n\n");
    printf("  Queries sent:         %llu\n", (unsigned long long)n_sent);
    printf("  Queries completed:    %llu\n", (unsigned long long)n_done);
    printf("  Queries lost:         %llu\n", (unsigned long long)n_lost);
    printf("  Response codes:       NOERROR %llu, NXDOMAIN %llu, other %llu\n",
           (unsigned long long)rcodes[0], (unsigned long long)rcodes[3],
           (unsigned long long)(n_done - rcodes[0] - rcodes[3]));
    printf("  Run time (s):         %.6f\n", run);
    printf("  Queries per second:   %.6f\n", (double)n_done / run);
    printf("  Latency percentiles (ms): p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f\n",
           pct(0.50), pct(0.90), pct(0.99), pct(0.999));
    return 0;
}
