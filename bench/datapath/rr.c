// SPDX-License-Identifier: Apache-2.0
/*
 * rr: a tiny netperf-style TCP_RR / TCP_CRR tool for bench/datapath (netperf
 * is not packaged in Debian).
 *
 *   rr -s [-b ADDR] [-p PORT] [-T MAX_SECONDS]
 *        server: accepts connections one at a time and echoes each byte back
 *        until the peer closes; exits after MAX_SECONDS (default 3600).
 *   rr -c ADDR [-p PORT] [-m rr|crr] [-t SECONDS]
 *        rr:  one connection, 1-byte request / 1-byte response, back to back
 *        crr: per transaction connect, 1-byte request/response, close with
 *             SO_LINGER 0 (RST: no TIME_WAIT, so ephemeral ports never run out)
 *        prints one line:  mode=rr ops=N seconds=S rate=R p50_us=X p99_us=Y
 *
 * The client is single-flight (one outstanding transaction), like netperf's
 * default, so rate = 1 / mean latency. Latency is wall time per transaction
 * (CLOCK_MONOTONIC); for crr it includes connect and close.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "rr: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void set_nodelay(int fd)
{
	int one = 1;

	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		die("setsockopt TCP_NODELAY");
}

static int parse_addr(const char *ip, int port, struct sockaddr_in *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, ip, &sa->sin_addr) == 1 ? 0 : -1;
}

static int run_server(const char *bind_ip, int port, int max_seconds)
{
	struct sockaddr_in sa;
	int one = 1, lfd;

	if (parse_addr(bind_ip, port, &sa) < 0) {
		fprintf(stderr, "rr: bad bind address %s\n", bind_ip);
		return 2;
	}
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0)
		die("socket");
	if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		die("setsockopt SO_REUSEADDR");
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("bind");
	if (listen(lfd, 128) < 0)
		die("listen");
	/* Bounded lifetime even if whoever started us forgets to stop us. */
	alarm((unsigned)max_seconds);
	fprintf(stderr, "rr: listening on %s:%d\n", bind_ip, port);
	for (;;) {
		char b;
		ssize_t n;
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		set_nodelay(fd);
		while ((n = read(fd, &b, 1)) == 1)
			if (write(fd, &b, 1) != 1)
				break;
		close(fd);
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

struct samples {
	uint32_t *v; /* ns, clamped to 4.29 s */
	size_t n, cap;
};

static void add_sample(struct samples *s, uint64_t ns)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 1 << 16;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		if (!s->v)
			die("realloc");
	}
	s->v[s->n++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static double pct_us(const struct samples *s, double p)
{
	size_t i;

	if (!s->n)
		return 0;
	i = (size_t)(p * (double)(s->n - 1) + 0.5);
	return s->v[i] / 1000.0;
}

static void xchg(int fd)
{
	char b = 'x';

	if (write(fd, &b, 1) != 1)
		die("write");
	if (read(fd, &b, 1) != 1) {
		if (errno == 0)
			errno = ECONNRESET;
		die("read");
	}
}

static int connect_to(const struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		die("socket");
	set_nodelay(fd);
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
		die("connect");
	return fd;
}

static int run_client(const char *ip, int port, int crr, double seconds)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	struct samples s = { 0 };
	struct sockaddr_in sa;
	uint64_t start, end, deadline, t0, t1;
	int fd = -1;

	if (parse_addr(ip, port, &sa) < 0) {
		fprintf(stderr, "rr: bad address %s\n", ip);
		return 2;
	}
	if (!crr)
		fd = connect_to(&sa);
	start = now_ns();
	deadline = start + (uint64_t)(seconds * 1e9);
	t0 = start;
	do {
		if (crr) {
			fd = connect_to(&sa);
			xchg(fd);
			if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
				die("setsockopt SO_LINGER");
			close(fd);
		} else {
			xchg(fd);
		}
		t1 = now_ns();
		add_sample(&s, t1 - t0);
		t0 = t1;
	} while (t1 < deadline);
	end = t1;
	if (!crr)
		close(fd);
	qsort(s.v, s.n, sizeof(*s.v), cmp_u32);
	printf("mode=%s ops=%zu seconds=%.3f rate=%.1f p50_us=%.1f p99_us=%.1f\n", crr ? "crr" : "rr", s.n,
	       (end - start) / 1e9, s.n / ((end - start) / 1e9), pct_us(&s, 0.50), pct_us(&s, 0.99));
	free(s.v);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: rr -s [-b ADDR] [-p PORT] [-T MAX_SECONDS]\n"
			"       rr -c ADDR [-p PORT] [-m rr|crr] [-t SECONDS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *bind_ip = "0.0.0.0", *server = NULL, *mode = "rr";
	int opt, port = 12865, is_server = 0, max_seconds = 3600;
	double seconds = 5;

	signal(SIGPIPE, SIG_IGN);
	while ((opt = getopt(argc, argv, "sb:c:p:m:t:T:")) != -1) {
		switch (opt) {
		case 's': is_server = 1; break;
		case 'b': bind_ip = optarg; break;
		case 'c': server = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'm': mode = optarg; break;
		case 't': seconds = atof(optarg); break;
		case 'T': max_seconds = atoi(optarg); break;
		default: usage();
		}
	}
	if (port <= 0 || port > 65535 || max_seconds <= 0 || seconds <= 0)
		usage();
	if (is_server)
		return run_server(bind_ip, port, max_seconds);
	if (!server || (strcmp(mode, "rr") && strcmp(mode, "crr")))
		usage();
	return run_client(server, port, !strcmp(mode, "crr"), seconds);
}
