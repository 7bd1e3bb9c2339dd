/* waitlines FILE N TIMEOUT_MS
 * Waits until FILE holds at least N newlines and prints that moment (CLOCK_REALTIME, µs),
 * or "timeout". Reads only what was appended since its last look, every 1 ms: `wc -l` of the
 * whole file every 10 ms re-read up to 27 MB each time, took a core from the supervisor it
 * measured (the more, the bigger that supervisor's log lines) and rounded to 10 ms plus a
 * process start. FILE may not exist yet. Logs must not rotate while it runs. */
#include "common.h"
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_us(int clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: waitlines FILE N TIMEOUT_MS\n"); return 2; }
    long long want = atoll(argv[2]);
    long long deadline = now_us(CLOCK_MONOTONIC) + atoll(argv[3]) * 1000LL;
    static char buf[1 << 16];
    long long got = 0;
    int fd = -1;
    const struct timespec tick = {0, 1000000};
    while (now_us(CLOCK_MONOTONIC) < deadline) {
        if (fd < 0) fd = open(argv[1], O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t n;
            while ((n = read(fd, buf, sizeof buf)) > 0) {
                for (char *p = buf, *end = buf + n; (p = memchr(p, '\n', end - p)); p++) got++;
            }
            if (got >= want) { printf("%lld\n", now_us(CLOCK_REALTIME)); return 0; }
        }
        nanosleep(&tick, NULL);
    }
    puts("timeout");
    return 1;
}
