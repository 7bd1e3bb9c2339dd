/* Shared helpers for the benchmark workloads (compiled by benches/run.sh with cc -O2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Atomically publish a pid in `path` (write a temp file, then rename over). */
static inline void write_pidfile(const char *path, long pid) {
    if (!path || !*path) return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) { perror(tmp); return; }
    fprintf(f, "%ld\n", pid);
    fclose(f);
    if (rename(tmp, path) != 0) perror("rename");
}

static inline void sleep_forever(void) {
    for (;;) pause();
}
