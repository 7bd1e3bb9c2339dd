/* sleeper [PIDFILE]: publish our pid (optional), then sleep until killed.
 * Default SIGTERM disposition: exits at once on a graceful stop. */
#include "common.h"

int main(int argc, char **argv) {
    if (argc > 1) write_pidfile(argv[1], (long)getpid());
    sleep_forever();
    return 0;
}
