/* memtree MODE MIB PIDFILE HOLDERPIDFILE
 *   main:       the main process itself holds MIB MiB (control case).
 *   grandchild: main forks a child that forks a grandchild holding MIB MiB; all stay in
 *               the main's session and process group (a plain descendant).
 *   escape:     like crashpad: the child setsid()s, forks the grandchild holding MIB MiB,
 *               and exits; the grandchild is re-parented (to a subreaper or init) and is
 *               no longer in the service's session or process group.
 * PIDFILE gets the main pid, HOLDERPIDFILE the pid of the process holding the memory, and
 * PIDFILE.events one line per event, appended: "start PID NS" when a run begins and
 * "held PID NS" once the memory is resident (NS: CLOCK_REALTIME), so restart latencies
 * can be read afterwards without racing the supervisor. */
#include "common.h"
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>

static const char *events_of;

static void event(const char *what) {
    char path[4096], line[128];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(path, sizeof path, "%s.events", events_of);
    int n = snprintf(line, sizeof line, "%s %ld %lld\n", what, (long)getpid(),
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) != n) perror("write");
        close(fd);
    }
}

/* Kept in a global and written through a volatile pointer: a plain malloc + memset that is
 * never read is dead code to the optimizer, and the pages would never become resident. */
volatile char *held;

static void hold(size_t mib) {
    size_t n = mib << 20;
    char *p = malloc(n);
    if (!p) { perror("malloc"); exit(1); }
    held = p;
    for (size_t i = 0; i < n; i += 4096) held[i] = (char)(i >> 12 | 1); /* touch every page */
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: memtree MODE MIB PIDFILE HOLDERPIDFILE\n"); return 2; }
    const char *mode = argv[1];
    size_t mib = (size_t)atol(argv[2]);
    events_of = argv[3];
    event("start");
    write_pidfile(argv[3], (long)getpid());
    if (strcmp(mode, "main") == 0) {
        hold(mib);
        event("held");
        write_pidfile(argv[4], (long)getpid());
        sleep_forever();
    }
    int escape = strcmp(mode, "escape") == 0;
    pid_t child = fork();
    if (child == 0) {
        if (escape) setsid();
        pid_t gc = fork();
        if (gc == 0) {
            hold(mib);
            event("held");
            write_pidfile(argv[4], (long)getpid());
            sleep_forever();
        }
        if (escape) _exit(0);
        sleep_forever();
    }
    if (escape) waitpid(child, NULL, 0);
    sleep_forever();
    return 0;
}
