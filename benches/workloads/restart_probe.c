/* restart_probe PIDFILE COUNT GAP_MS TIMEOUT_MS
 * COUNT times: read the service's main pid from PIDFILE (written by sleeper), SIGKILL it,
 * then poll every 1 ms until PIDFILE names a different pid that is alive; record the time.
 * Waits GAP_MS between rounds. Prints "min median p90 max ok" in milliseconds. */
#include "common.h"
#include <errno.h>
#include <signal.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long read_pid(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long p = -1;
    if (fscanf(f, "%ld", &p) != 1) p = -1;
    fclose(f);
    return p;
}

static int alive(long pid) { return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM); }

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: restart_probe PIDFILE COUNT GAP_MS TIMEOUT_MS\n"); return 2; }
    const char *pf = argv[1];
    int count = atoi(argv[2]);
    int gap = atoi(argv[3]);
    double timeout = atof(argv[4]);
    double *t = calloc((size_t)count, sizeof *t);
    int ok = 0;
    struct timespec tick = {0, 1000000};
    for (int i = 0; i < count; i++) {
        long old = read_pid(pf);
        double wait0 = now_ms();
        while (!alive(old) && now_ms() - wait0 < timeout) { nanosleep(&tick, NULL); old = read_pid(pf); }
        if (!alive(old)) break;
        double t0 = now_ms();
        kill((pid_t)old, SIGKILL);
        long cur;
        for (;;) {
            cur = read_pid(pf);
            if (cur != old && alive(cur)) break;
            if (now_ms() - t0 > timeout) { cur = -1; break; }
            nanosleep(&tick, NULL);
        }
        if (cur < 0) break;
        t[ok++] = now_ms() - t0;
        struct timespec g = {gap / 1000, (long)(gap % 1000) * 1000000L};
        nanosleep(&g, NULL);
    }
    if (ok == 0) { printf("nan nan nan nan 0\n"); return 1; }
    qsort(t, (size_t)ok, sizeof *t, cmp);
    int p90 = (int)(0.9 * (ok - 1) + 0.5);
    printf("%.1f %.1f %.1f %.1f %d\n", t[0], t[ok / 2], t[p90], t[ok - 1], ok);
    return ok == count ? 0 : 1;
}
