/* The native receive side of bench.fanout (`--native-reader`): reads the sockets the Python
 * generator connected and readied, so that the generator's own per-frame cost (~3-4 us in Python)
 * does not cap the deliveries/s or add to the latency measured.
 *
 *   reader FDS_FILE        (the descriptors, inherited from the parent, one number per line)
 *
 * Per frame it does what loadgen.Client does: every `"ts":<float>` in a text or binary frame is one
 * delivered event; events with ts >= the window's start count, with latency now - ts. Pings are
 * answered with pongs (masked, key 0), a close frame is counted by its code and the socket closed.
 *
 * Commands on stdin, one per line, each answered with one line on stdout:
 *   reset START   -> "ok"                     a new window (START: epoch seconds)
 *   count         -> "COUNT LAST ALIVE FRAMES" LAST: epoch seconds of the last counted receipt
 *   report        -> "COUNT LAST P50 P99 MAX" latencies in seconds (-1 when none)
 *   closes        -> "CODE:N CODE:N ..."      close codes received so far (may be empty)
 *   quit          -> exits
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct { unsigned char *buf; size_t len; int alive; } conn_t;

#define MAX_FRAME ((size_t)64 << 20)  /* a frame this large is a broken server: the socket is dropped */
static unsigned char *scratch;        /* grows to the largest partial frame seen (a batched send queue) */
static size_t scratch_cap = 1 << 20;

static conn_t *conns;      /* indexed by descriptor */
static int max_fd;
static double win_start = 1e300, win_last;
static long long win_count, frames;
static double *lat; static size_t lat_len, lat_cap;
static long alive;
static long close_codes[5000];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void add_lat(double v) {
    if (lat_len == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 1 << 20;
        lat = realloc(lat, lat_cap * sizeof *lat);
        if (!lat) { perror("realloc"); exit(1); }
    }
    lat[lat_len++] = v;
}

static void drop(int fd, int epfd) {
    if (!conns[fd].alive) return;
    conns[fd].alive = 0;
    alive--;
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    shutdown(fd, SHUT_RDWR);  /* the Python side still holds a copy: close() alone would tell the server nothing */
    close(fd);
}

/* Control frames are tiny; a peer whose buffer stays full for ~1000 tries is given up (returns 0). */
static int send_all(int fd, const unsigned char *p, size_t n) {
    for (int tries = 0; n && tries < 1000; tries++) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) { if (errno == EAGAIN || errno == EINTR) continue; return 0; }
        p += w; n -= (size_t)w;
    }
    return n == 0;
}

static void events_in(const unsigned char *p, size_t n, double now) {
    static const char key[] = "\"ts\":";
    const unsigned char *end = p + n;
    while (p < end) {
        const unsigned char *hit = memmem(p, (size_t)(end - p), key, 5);
        if (!hit) return;
        char num[40]; size_t k = 0;
        const unsigned char *q = hit + 5;
        while (q < end && k < sizeof num - 1 && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' || *q == '-' || *q == '+'))
            num[k++] = (char)*q++;
        num[k] = 0;
        double ts = strtod(num, NULL);
        if (ts >= win_start) { win_count++; add_lat(now - ts); win_last = now; }
        p = q;
    }
}

/* Parse the whole frames of d[0..n); the number of bytes used (the rest is a partial frame),
 * or (size_t)-1 when the socket was closed. */
static size_t frames_in(int fd, const unsigned char *d, size_t n, int epfd, double now) {
    size_t pos = 0;
    while (n - pos >= 2) {
        size_t len = d[pos + 1] & 0x7F, hl = 2;
        if (len == 126) { if (n - pos < 4) break; len = ((size_t)d[pos + 2] << 8) | d[pos + 3]; hl = 4; }
        else if (len == 127) {
            if (n - pos < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | d[pos + 2 + i];
            hl = 10;
        }
        if (len > MAX_FRAME) { drop(fd, epfd); return (size_t)-1; }
        if (len > n - pos - hl) break;
        int op = d[pos] & 0x0F;
        const unsigned char *payload = d + pos + hl;
        pos += hl + len;
        if (op == 0 || op == 1 || op == 2) {
            frames++;
            events_in(payload, len, now);
        } else if (op == 9 && len <= 125) {
            unsigned char pong[131] = {0x8A, (unsigned char)(0x80 | len), 0, 0, 0, 0};
            memcpy(pong + 6, payload, len);
            if (!send_all(fd, pong, 6 + len)) { drop(fd, epfd); return (size_t)-1; }
        } else if (op == 8) {
            int code = len >= 2 ? (payload[0] << 8 | payload[1]) : 1005;
            if (code >= 0 && code < 5000) close_codes[code]++;
            unsigned char reply[8] = {0x88, 0x82, 0, 0, 0, 0, len >= 2 ? payload[0] : 0x03, len >= 2 ? payload[1] : 0xE8};
            send_all(fd, reply, 8);
            drop(fd, epfd);
            return (size_t)-1;
        }
    }
    return pos;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int command(char *line) {
    if (!strncmp(line, "reset ", 6)) {
        win_start = strtod(line + 6, NULL); win_last = win_start; win_count = 0; lat_len = 0;
        printf("ok\n");
    } else if (!strncmp(line, "count", 5)) {
        printf("%lld %.6f %ld %lld\n", win_count, win_last, alive, frames);
    } else if (!strncmp(line, "report", 6)) {
        if (!lat_len) { printf("%lld %.6f -1 -1 -1\n", win_count, win_last); }
        else {
            qsort(lat, lat_len, sizeof *lat, cmp);
            size_t i50 = (size_t)(0.5 * lat_len), i99 = (size_t)(0.99 * lat_len);
            if (i99 >= lat_len) i99 = lat_len - 1;
            printf("%lld %.6f %.6f %.6f %.6f\n", win_count, win_last, lat[i50], lat[i99], lat[lat_len - 1]);
        }
    } else if (!strncmp(line, "closes", 6)) {
        for (int i = 0; i < 5000; i++) if (close_codes[i]) printf("%d:%ld ", i, close_codes[i]);
        printf("\n");
    } else if (!strncmp(line, "quit", 4)) {
        return 0;
    } else {
        printf("error unknown command\n");
    }
    fflush(stdout);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: reader FDS_FILE\n"); return 2; }
    FILE *f = fopen(argv[1], "r");
    if (!f) { perror(argv[1]); return 2; }
    int fd, fds_n = 0, fds_cap = 1024, *fds = malloc(fds_cap * sizeof *fds);
    while (fscanf(f, "%d", &fd) == 1) {
        if (fds_n == fds_cap) fds = realloc(fds, (fds_cap *= 2) * sizeof *fds);
        fds[fds_n++] = fd;
        if (fd > max_fd) max_fd = fd;
    }
    fclose(f);
    conns = calloc((size_t)max_fd + 1, sizeof *conns);
    scratch = malloc(scratch_cap);
    int epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = 0;
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
    for (int i = 0; i < fds_n; i++) {
        ev.data.fd = fds[i];
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fds[i], &ev) == 0) { conns[fds[i]].alive = 1; alive++; }
    }
    enum { MAXEV = 1024 };
    struct epoll_event evs[MAXEV];
    char line[256]; size_t line_len = 0;
    for (;;) {
        int k = epoll_wait(epfd, evs, MAXEV, 1000);
        if (k < 0) { if (errno == EINTR) continue; perror("epoll_wait"); return 1; }
        for (int i = 0; i < k; i++) {
            int s = evs[i].data.fd;
            if (s == 0) {
                ssize_t r = read(0, line + line_len, sizeof line - 1 - line_len);
                if (r <= 0) return 0;  /* the parent went away */
                line_len += (size_t)r;
                char *nl;
                while ((nl = memchr(line, '\n', line_len))) {
                    *nl = 0;
                    if (!command(line)) return 0;
                    size_t used = (size_t)(nl - line) + 1;
                    memmove(line, nl + 1, line_len - used);
                    line_len -= used;
                }
                if (line_len == sizeof line - 1) line_len = 0;
                continue;
            }
            conn_t *c = &conns[s];
            size_t have = c->len;  /* a partial frame kept from the last read goes first */
            if (have) { memcpy(scratch, c->buf, have); free(c->buf); c->buf = NULL; c->len = 0; }
            for (;;) {
                if (scratch_cap - have < (1 << 16)) {  /* a frame larger than the buffer: grow it */
                    if (scratch_cap >= 2 * MAX_FRAME) { drop(s, epfd); have = 0; break; }
                    scratch_cap *= 2;
                    scratch = realloc(scratch, scratch_cap);
                    if (!scratch) { perror("realloc"); return 1; }
                }
                ssize_t r = recv(s, scratch + have, scratch_cap - have, MSG_DONTWAIT);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) { drop(s, epfd); have = 0; break; }
                if (r < 0) break;
                have += (size_t)r;
                size_t used = frames_in(s, scratch, have, epfd, now_s());
                if (used == (size_t)-1) { have = 0; break; }
                memmove(scratch, scratch + used, have - used);
                have -= used;
                if ((size_t)r < (1 << 16)) break;  /* drained for now: level-triggered epoll brings us back */
            }
            if (have && c->alive) { c->buf = malloc(have); memcpy(c->buf, scratch, have); c->len = have; }
        }
    }
}
