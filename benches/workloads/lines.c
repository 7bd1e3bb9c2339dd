/* lines N STAMPFILE: write N lines of exactly 100 bytes (incl. newline) to stdout as fast as
 * possible, then sleep forever (so no supervisor restarts us and writes them twice).
 * Line k: "L%08d " + 80 x's + " E%08d\n"; a line is intact iff both numbers match and
 * the padding is whole. STAMPFILE gets "START_NS END_NS" (CLOCK_REALTIME) when done. */
#include "common.h"
#include <time.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: lines N STAMPFILE\n"); return 2; }
    long n = atol(argv[1]);
    static char buf[1 << 16];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    char pad[81];
    memset(pad, 'x', 80);
    pad[80] = 0;
    long long start = now_ns();
    for (long k = 1; k <= n; k++) {
        printf("L%08ld %s E%08ld\n", k, pad, k);
    }
    fflush(stdout);
    long long end = now_ns();
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[2]);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fprintf(f, "%lld %lld\n", start, end);
        fclose(f);
        rename(tmp, argv[2]);
    }
    sleep_forever();
    return 0;
}
