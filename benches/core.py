#!/usr/bin/env python3
"""Core latencies of leadmaster-supervisord, measured on real processes (release build).

1. restart latency: SIGKILL of a service's main pid -> a new main pid alive (backoff 0s);
2. ready -> dependent spawn: the dependency's READY=1 handled -> the dependent spawned,
   both timestamps taken by the daemon (microsecond log timestamps);
3. daemon idle RSS and CPU seconds over IDLE_SECS with 50 `sleep` services;
4. `lmctl status` latency while 100 leftovers (each ignoring SIGTERM, in its own session)
   are being reaped after their service's main process exited.

Usage: benches/core.py [--idle-secs 60] [--only-logs|--only-reaping]   (cargo build --release
first; the binaries are looked up in $CARGO_TARGET_DIR/release, else target/release)
Cleans up everything it started: the daemon (SIGTERM, then SIGKILL) and, through it, its
services.
"""
import json, os, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where cargo put the release build: CARGO_TARGET_DIR when set, as cargo itself does.
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release")
DAEMON, LMCTL = os.path.join(BIN, "leadmaster-supervisord"), os.path.join(BIN, "lmctl")
HELPER = os.path.join(BIN, "lm-test-helper")
CGROUPS = os.environ.get("LM_BENCH_CGROUPS", "auto")
IDLE = int(sys.argv[sys.argv.index("--idle-secs") + 1]) if "--idle-secs" in sys.argv else 60


class Daemon:
    def __init__(self, body, logs=""):
        self.dir = tempfile.mkdtemp(prefix="lm-bench-")
        self.cfg = os.path.join(self.dir, "supervisor.toml")
        with open(self.cfg, "w") as f:
            f.write(f'[supervisor]\nstate_dir = "var"\ncgroups = "{CGROUPS}"\n\n[logs]\ntimestamp = "%Y-%m-%dT%H:%M:%S%.6f%:z"\n' + logs + "\n" + body)
        self.proc = subprocess.Popen([DAEMON, "--config", self.cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while subprocess.run([LMCTL, "--config", self.cfg, "ping"], capture_output=True).returncode != 0:
            if time.time() > deadline:
                raise SystemExit("daemon did not answer")
            time.sleep(0.05)

    def ctl(self, *args):
        return subprocess.run([LMCTL, "--config", self.cfg, *args], capture_output=True, text=True)

    def status(self):
        return {s["name"]: s for s in json.loads(self.ctl("status", "--json").stdout)}

    def children(self):
        pid = self.proc.pid
        out = set()
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out |= {int(x) for x in f.read().split()}
        return out

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def wait_for(cond, timeout=10):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.0005)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def fmt(xs):
    return f"min {min(xs):.2f} / median {statistics.median(xs):.2f} / p90 {pct(xs, 90):.2f} / max {max(xs):.2f} ms (n={len(xs)})"


def restart_latency():
    d = Daemon(f'[services.s]\ncommand = "{HELPER}"\nargs = ["sleep"]\nbackoff = {{ initial = "0s" }}\nmin_uptime = "0s"\n')
    try:
        wait_for(lambda: d.status()["s"]["state"] == "running")
        times = []
        for _ in range(20):
            old = d.status()["s"]["pid"]
            before = d.children()
            t0 = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: any(alive(p) for p in d.children() - before - {old}))
            times.append((time.perf_counter() - t0) * 1000)
            wait_for(lambda: d.status()["s"]["state"] == "running")
        return times
    finally:
        d.close()


def ts(line):
    from datetime import datetime
    return datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()


def ready_to_spawn():
    d = Daemon(
        f'[services.a]\ncommand = "{HELPER}"\nargs = ["notify", "50"]\nready = {{ notify = true, timeout = "5s" }}\n\n'
        f'[services.b]\ncommand = "{HELPER}"\nargs = ["sleep"]\ndepends_on = {{ a = "ready" }}\n'
    )
    log = os.path.join(d.dir, "var", "logs", "supervisor.log")
    try:
        for _ in range(20):
            wait_for(lambda: d.status()["b"]["state"] == "running")
            d.ctl("stop", "b", "a")
            wait_for(lambda: all(s["state"] == "stopped" for s in d.status().values()))
            d.ctl("start", "b", "--no-wait")
        wait_for(lambda: d.status()["b"]["state"] == "running")
        # Each spawn of b against the READY=1 of a that came just before it.
        delays, last_ready = [], None
        for line in open(log).read().splitlines():
            if " a|event ready after" in line:
                last_ready = ts(line)
            elif " b|event spawned pid" in line and last_ready is not None:
                delays.append((ts(line) - last_ready) * 1000)
                last_ready = None
        return delays
    finally:
        d.close()


def idle_usage(n, secs):
    body = "".join(f'[services.s{i}]\ncommand = "sleep"\nargs = ["100000"]\n\n' for i in range(n))
    d = Daemon(body)
    try:
        wait_for(lambda: sum(s["state"] == "running" for s in d.status().values()) == n, 30)
        time.sleep(2)
        hz = os.sysconf("SC_CLK_TCK")

        def cpu():
            f = open(f"/proc/{d.proc.pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / hz

        c0 = cpu()
        time.sleep(secs)
        c1 = cpu()
        rss = [l for l in open(f"/proc/{d.proc.pid}/status") if l.startswith("VmRSS")][0].split()[1]
        return int(rss), c1 - c0
    finally:
        d.close()


def log_pipeline(n=200_000):
    d = Daemon(
        f'[services.flood]\ncommand = "{HELPER}"\nargs = ["flood", "{n}"]\nrestart = "never"\nautostart = false\n',
        logs='max_size = "1GiB"\n',
    )
    out = os.path.join(d.dir, "var", "logs", "flood.out.log")
    err = os.path.join(d.dir, "var", "logs", "flood.err.log")
    try:
        t0 = time.perf_counter()
        d.ctl("start", "flood", "--no-wait")
        last = f"line {n - 1:08} "
        def done():
            try:
                with open(out, "rb") as f:
                    f.seek(max(0, os.path.getsize(out) - 400))
                    return last.encode() in f.read()
            except OSError:
                return False
        wait_for(done, 120)
        t1 = time.perf_counter()
        wait_for(lambda: os.path.exists(err) and "FLOOD" in open(err).read(), 10)
        flood = [l for l in open(err).read().splitlines() if "FLOOD" in l][0].split("FLOOD ", 1)[1]
        stats = dict(kv.split("=") for kv in flood.split())
        seqs = [l.split("|out line ", 1)[1][:8] for l in open(out) if "|out line " in l]
        missing = n - len(set(seqs))
        return n / (t1 - t0), stats, missing, len(seqs) - len(set(seqs)), d.status()["flood"]["log_dropped"]
    finally:
        d.close()


def status_while_reaping(n=100, samples=40):
    """Status round trips (ms) while the daemon reaps N stubborn leftovers (2 s grace each
    batch, then SIGKILL): the reap runs off the actor, so status must stay fast."""
    d = Daemon(f'[services.swarm]\ncommand = "{HELPER}"\nargs = ["swarm", "{n}", "1500"]\n'
               'restart = "never"\nstart_grace = "0s"\nstop_timeout = "5s"\n')
    try:
        wait_for(lambda: d.status()["swarm"]["state"] == "stopping", timeout=15)
        times = []
        while len(times) < samples and d.status()["swarm"]["state"] == "stopping":
            t0 = time.perf_counter()
            d.ctl("status", "--json")
            times.append((time.perf_counter() - t0) * 1000)
        return times
    finally:
        d.close()


def status_during_startup_reap(n=100, window=2.0):
    """A daemon is SIGKILLed, leaving a service with N children that ignore SIGTERM. A new
    daemon on the same state dir reaps them (SIGTERM, 2 s grace, SIGKILL) before starting
    anything: status round trips (ms) during that window."""
    d = Daemon(f'[services.swarm]\ncommand = "{HELPER}"\nargs = ["swarm", "{n}"]\n')
    try:
        wait_for(lambda: d.status()["swarm"]["processes"] >= n + 1, timeout=20)
        d.proc.kill()
        d.proc.wait()
        d.proc = subprocess.Popen([DAEMON, "--config", d.cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times = []
        t_end = time.time() + window
        while time.time() < t_end:
            t0 = time.perf_counter()
            ok = d.ctl("status", "--json").returncode in (0, 3)
            if ok:
                times.append((time.perf_counter() - t0) * 1000)
            else:
                time.sleep(0.005)
        return times
    finally:
        d.close()


if __name__ == "__main__":
    for b in (DAEMON, LMCTL, HELPER):
        if not os.path.exists(b):
            raise SystemExit(f"{b} is missing: run `cargo build --release` first")
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}")
    if "--only-logs" in sys.argv:
        print(log_pipeline())
        raise SystemExit(0)
    if "--only-reaping" in sys.argv:
        print("status while 100 leftovers are reaped (ms):", fmt(status_while_reaping()))
        print("status while a crashed daemon's 100 leftovers are reaped at start (ms):", fmt(status_during_startup_reap()))
        raise SystemExit(0)
    print("restart latency (SIGKILL -> new pid alive, backoff 0s):", fmt(restart_latency()))
    print("ready -> dependent spawned:", fmt(ready_to_spawn()))
    rate, stats, missing, dup, dropped = log_pipeline()
    blocked_per_s = float(stats["blocked_ms"]) / (float(stats["elapsed_ms"]) / 1000)
    print(
        f"log pipeline: 200000 lines of ~100 B on disk at {rate:,.0f} lines/s; child wrote them in "
        f"{stats['elapsed_ms']} ms, blocked on the pipe {stats['blocked_ms']} ms ({blocked_per_s:.0f} ms per second), "
        f"longest write {stats['max_write_ms']} ms; missing {missing}, duplicated {dup}, dropped {dropped}"
    )
    print("status while 100 leftovers are reaped (ms):", fmt(status_while_reaping()))
    print("status while a crashed daemon's 100 leftovers are reaped at start (ms):", fmt(status_during_startup_reap()))
    rss, cpu = idle_usage(50, IDLE)
    print(f"idle with 50 services over {IDLE}s: daemon RSS {rss} KiB, CPU {cpu:.2f} s ({cpu / IDLE * 100:.3f}%)")
