#!/usr/bin/env bash
# benches/run.sh: leadmaster-supervisord vs PM2 vs supervisord, side by side, in one run.
#
# Installs PM2 (npm, into benches/.tools/node) and supervisord (PyPI, into the venv
# benches/.tools/venv) when missing, builds our release binaries and the C workloads, runs
# every scenario on all three, writes benches/RESULTS.md and prints it. See benches/README.md.
#
# Knobs (environment): IDLE_SECS=30 SCALE_IDLE_SECS=10 RESTARTS=20 LOG_LINES=200000
# LOG_RUNS=9 STATUS_RUNS=20 SCALE="500 1000" (SCALE="" skips scenario 6) SCALE_STARTS=3
# KEEP=1 (keep the temp dir)
# IDLE_MAX_MEMORY=500 (MiB limit on every idle sleeper; empty for none)
# BUDGET_SECS=840 (the whole run is killed, and cleaned up, past this).
#
# Cleanup: every daemon we start is recorded and stopped through its own CLI (lmctl shutdown,
# `pm2 kill` with our private PM2_HOME, `supervisorctl shutdown`), then by its PID; a final
# sweep kills only processes whose executable lives in our temp dir or whose command line
# names it (PM2's God daemon shows its PM2_HOME there). Nothing is killed by name.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
TOOLS=$HERE/.tools
IDLE_SECS=${IDLE_SECS:-30}
SCALE_IDLE_SECS=${SCALE_IDLE_SECS:-10}
RESTARTS=${RESTARTS:-20}
LOG_LINES=${LOG_LINES:-200000}
LOG_RUNS=${LOG_RUNS:-9}
SCALE_STARTS=${SCALE_STARTS:-3}
STATUS_RUNS=${STATUS_RUNS:-20}
SCALE=${SCALE-500 1000}
IDLE_MAX_MEMORY=${IDLE_MAX_MEMORY-500}
BUDGET_SECS=${BUDGET_SECS:-840}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
PM2=$TOOLS/node/node_modules/.bin/pm2
SUPD=$TOOLS/venv/bin/supervisord
SUPCTL=$TOOLS/venv/bin/supervisorctl
KINDS=(ours pm2 supd)

RUN_START=${EPOCHREALTIME/./}
RUN=$(mktemp -d /tmp/lmbench.XXXXXX)
WL=$RUN/bin
mkdir -p "$WL"

log() { printf '[%6.1fs] %s\n' "$(( (${EPOCHREALTIME/./} - RUN_START) / 100000 ))e-1" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup (trap EXIT)
OURS=()      # "pid config" of each leadmaster-supervisord we started
PM2_HOMES=() # private PM2_HOME of each PM2 we started
SUPDS=()     # "pid config" of each supervisord we started
WATCHDOG=

cleanup() {
    local rc=$? entry pid cfg home i p exe
    trap - EXIT INT TERM
    [[ -n $WATCHDOG ]] && kill "$WATCHDOG" 2>/dev/null
    for entry in "${OURS[@]}"; do
        read -r pid cfg <<<"$entry"
        kill -0 "$pid" 2>/dev/null || continue
        timeout 15 "$BIN/lmctl" --config "$cfg" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null
        for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    for home in "${PM2_HOMES[@]}"; do
        [[ -f $home/pm2.pid ]] || continue
        pid=$(cat "$home/pm2.pid" 2>/dev/null)
        PM2_HOME=$home timeout 20 "$PM2" kill >/dev/null 2>&1
        [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
    done
    for entry in "${SUPDS[@]}"; do
        read -r pid cfg <<<"$entry"
        kill -0 "$pid" 2>/dev/null || continue
        timeout 15 "$SUPCTL" -c "$cfg" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null
        for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    # Sweep: leftovers that carry our markers (escaped grandchildren, orphans of a crash).
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        exe=$(readlink "$p/exe" 2>/dev/null) || exe=
        if [[ $exe == "$WL/"* ]] || { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF "$RUN"; then
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    wait 2>/dev/null
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $RUN"; else rm -rf "$RUN"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
# The watchdog kills its own sleep when told to stop, so no orphan keeps our stdout open.
( trap 'kill "$sp" 2>/dev/null; exit 0' TERM; sleep "$BUDGET_SECS" & sp=$!; wait "$sp" && kill -TERM $$ ) >/dev/null 2>&1 &
WATCHDOG=$!

# ---------------------------------------------------------------- setup
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ ! -x $PM2 ]]; then
    log "installing pm2 into $TOOLS/node"
    mkdir -p "$TOOLS/node"
    npm install --prefix "$TOOLS/node" --no-audit --no-fund pm2 >"$RUN/npm.log" 2>&1 || die "npm install pm2 failed (see $RUN/npm.log)"
fi
if [[ ! -x $SUPD ]]; then
    log "installing supervisor into $TOOLS/venv"
    python3 -m venv "$TOOLS/venv" && "$TOOLS/venv/bin/pip" install -q supervisor >"$RUN/pip.log" 2>&1 \
        || die "pip install supervisor failed (see $RUN/pip.log)"
fi
log "building release binaries (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$ROOT" && cargo build --release -q -p leadmaster-supervisor) || die "cargo build failed"
for w in sleeper lines memtree restart_probe waitlines; do
    cc -O2 -Wall -o "$WL/$w" "$HERE/workloads/$w.c" || die "cc $w.c failed"
done
CHECK_LINES=$HERE/workloads/check_lines.py

# Versions without starting anything (a bare `pm2 --version` would boot a God daemon in ~/.pm2).
V_PM2=$(node -p "require('$TOOLS/node/node_modules/pm2/package.json').version")
V_SUPD=$("$SUPD" --version)
V_OURS=$("$BIN/lmctl" --version | awk '{print $NF}')

declare -A R # results: R[key.kind]

now_us() { printf '%s' "${EPOCHREALTIME/./}"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
# CPU time of a daemon: "TICKS TID:NS TID:NS ...", its threads' schedstat run times (ns) and
# the process's utime+stime (/proc/PID/stat, 10 ms ticks, threads that ended included).
# cpu_secs takes two of these: the sum of each thread's growth, exact while no thread
# ends; a thread that ends inside the window takes its time with it (tokio ends a blocking
# thread after 10 s idle, and a 5 s window once came out negative). The ticks' difference
# counts ended threads, to within a tick: it is taken instead when a thread ended or when
# it exceeds the sum by a tick or more (a thread born and ended inside the window).
cpu_snap() {
    local t
    t=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}')
    printf '%s' "${t:-0}"
    for f in /proc/"$1"/task/*/schedstat; do
        t=${f%/schedstat}; printf ' %s:%s' "${t##*/}" "$(cut -d' ' -f1 "$f" 2>/dev/null)"
    done
}
cpu_secs() {
    awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        na = split(a, A, " "); nb = split(b, B, " ")
        for (i = 2; i <= na; i++) { split(A[i], p, ":"); before[p[1]] = p[2] }
        for (i = 2; i <= nb; i++) { split(B[i], p, ":"); sum += p[2] - before[p[1]]; after[p[1]] = 1 }
        for (t in before) if (!(t in after)) ended++
        ticks = (B[1] - A[1]) * 1e9 / hz
        if ((ended || ticks - sum >= 1e9 / hz) && ticks > sum) sum = ticks
        printf "%.3f", sum / 1e9 }'
}
# "min median p90 max" of numbers on stdin.
stats() { sort -g | awk '{a[NR]=$1} END {if (!NR) {print "nan nan nan nan"; exit}
    p=int(0.9*(NR-1)+0.5)+1; printf "%s %s %s %s\n", a[1], a[int((NR+1)/2)], a[p], a[NR]}'; }
fmt_ms() { awk -v us="$1" 'BEGIN {printf (us >= 100000 ? "%.0f" : "%.1f"), us/1000}'; }

# ---------------------------------------------------------------- configs
# A service spec is one line: NAME;MAXMEM_MIB;FAST;COMMAND;ARG... (';'-separated; MAXMEM empty
# for none; FAST=1: restart at once, no min uptime). One generator per supervisor.
gen_ours() { # DIR < specs
    local dir=$1 name mem fast cmd a
    {
        printf '[supervisor]\nstate_dir = "%s/var"\n\n[logs]\nmax_size = "1GiB"\n' "$dir"
        while IFS=';' read -r name mem fast cmd rest; do
            printf '\n[services.%s]\ncommand = "%s"\nargs = [' "$name" "$cmd"
            local first=1
            IFS=';' read -ra args <<<"$rest"
            for a in "${args[@]}"; do ((first)) || printf ', '; printf '"%s"' "$a"; first=0; done
            # start_grace 0s: counted as running at once, like supervisord's startsecs=0.
            printf ']\nmax_restarts = 1000\nstart_grace = "0s"\n'
            [[ -n $mem ]] && printf 'max_memory = "%sMiB"\n' "$mem"
            [[ $fast == 1 ]] && printf 'backoff = { initial = "0s" }\nmin_uptime = "0s"\n'
        done
    } >"$dir/supervisor.toml"
}
gen_pm2() {
    local dir=$1 name mem fast cmd a
    mkdir -p "$dir/logs"
    {
        printf 'module.exports = { apps: [\n'
        while IFS=';' read -r name mem fast cmd rest; do
            printf '  { name: "%s", script: "%s", interpreter: "none", args: [' "$name" "$cmd"
            local first=1
            IFS=';' read -ra args <<<"$rest"
            for a in "${args[@]}"; do ((first)) || printf ', '; printf '"%s"' "$a"; first=0; done
            printf '], autorestart: true, max_restarts: 1000, merge_logs: true,\n'
            printf '    out_file: "%s/logs/%s.out.log", error_file: "%s/logs/%s.err.log"' "$dir" "$name" "$dir" "$name"
            [[ -n $mem ]] && printf ', max_memory_restart: "%sM"' "$mem"
            [[ $fast == 1 ]] && printf ', restart_delay: 0, min_uptime: 0'
            printf ' },\n'
        done
        printf ']};\n'
    } >"$dir/ecosystem.config.js"
}
gen_supd() {
    local dir=$1 name mem fast cmd a
    mkdir -p "$dir/logs"
    {
        printf '[unix_http_server]\nfile=%s/supervisor.sock\n\n' "$dir"
        printf '[supervisord]\nlogfile=%s/supervisord.log\npidfile=%s/supervisord.pid\nchildlogdir=%s/logs\nnodaemon=true\n\n' "$dir" "$dir" "$dir"
        printf '[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n'
        printf '[supervisorctl]\nserverurl=unix://%s/supervisor.sock\n' "$dir"
        while IFS=';' read -r name mem fast cmd rest; do
            printf '\n[program:%s]\ncommand=%s %s\n' "$name" "$cmd" "${rest//;/ }"
            printf 'autostart=true\nautorestart=true\nstartsecs=0\nstartretries=1000\n'
            printf 'stdout_logfile=%s/logs/%s.out.log\nstdout_logfile_maxbytes=0\n' "$dir" "$name"
            printf 'stderr_logfile=%s/logs/%s.err.log\nstderr_logfile_maxbytes=0\n' "$dir" "$name"
        done
    } >"$dir/supervisord.conf"
}
sleepers() { # N [MAXMEM_MIB]
    local i
    for ((i = 1; i <= $1; i++)); do echo "s$i;${2:-};0;$WL/sleeper"; done
}

# ---------------------------------------------------------------- start / stop / query
# start_KIND DIR [ENV...]: launch the supervisor (it autostarts every service). Sets DPID.
start_ours() {
    local dir=$1; shift
    env "$@" "$BIN/leadmaster-supervisord" --config "$dir/supervisor.toml" >"$dir/daemon.log" 2>&1 &
    DPID=$!
    OURS+=("$DPID $dir/supervisor.toml")
}
start_pm2() {
    local dir=$1; shift
    PM2_HOMES+=("$dir/pm2home")
    env PM2_HOME="$dir/pm2home" "$@" "$PM2" start "$dir/ecosystem.config.js" >"$dir/pm2-start.log" 2>&1
    DPID=$(cat "$dir/pm2home/pm2.pid" 2>/dev/null)
}
start_supd() {
    local dir=$1; shift
    env "$@" "$SUPD" -c "$dir/supervisord.conf" >"$dir/daemon.log" 2>&1 &
    DPID=$!
    SUPDS+=("$DPID $dir/supervisord.conf")
}
stop_kind() { # KIND DIR PID
    local kind=$1 dir=$2 pid=$3 i
    case $kind in
        ours) timeout 30 "$BIN/lmctl" --config "$dir/supervisor.toml" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null ;;
        pm2) PM2_HOME=$dir/pm2home timeout 30 "$PM2" kill >/dev/null 2>&1 ;;
        supd) timeout 30 "$SUPCTL" -c "$dir/supervisord.conf" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null ;;
    esac
    for i in $(seq 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null
}
status_cmd() { # KIND DIR: the "status" verb of each, output to stdout
    case $1 in
        ours) "$BIN/lmctl" --config "$2/supervisor.toml" status --json 2>/dev/null ;;
        pm2) PM2_HOME=$2/pm2home "$PM2" jlist 2>/dev/null ;;
        supd) "$SUPCTL" -c "$2/supervisord.conf" status 2>/dev/null ;;
    esac
}
count_running() { # KIND DIR
    case $1 in
        ours) status_cmd "$@" | grep -cE '"state": "(running|ready)"' ;;
        pm2) status_cmd "$@" | grep -oE '"status":"online"' | wc -l ;;
        supd) status_cmd "$@" | grep -c ' RUNNING ' ;;
    esac
}
wait_running() { # KIND DIR N TIMEOUT_S: returns 0 when all N run
    local deadline=$(( $(now_us) + $4 * 1000000 )) c
    # Our status verb takes ~5 ms at 50 services but ~15 ms (and as much CPU again in the
    # client) at 1000: polled back to back on 2 cores it would slow the start it measures.
    local gap=0.01
    (( $3 > 100 )) && gap=0.05
    while (( $(now_us) < deadline )); do
        c=$(count_running "$1" "$2")
        (( c >= $3 )) && return 0
        [[ $1 == ours ]] && sleep "$gap"
    done
    log "$1: only ${c:-0}/$3 running after $4 s"
    return 1
}
main_pid_of() { # KIND DIR NAME: current main pid of one service, via the supervisor
    case $1 in
        ours) "$BIN/lmctl" --config "$2/supervisor.toml" status --json 2>/dev/null |
            python3 -c "import json,sys; print(next((s['pid'] or '') for s in json.load(sys.stdin) if s['name']=='$3'))" ;;
        pm2) PM2_HOME=$2/pm2home "$PM2" pid "$3" 2>/dev/null | tail -1 ;;
        supd) "$SUPCTL" -c "$2/supervisord.conf" pid "$3" 2>/dev/null ;;
    esac
}
stop_service() { # KIND DIR NAME
    case $1 in
        ours) "$BIN/lmctl" --config "$2/supervisor.toml" stop "$3" >/dev/null 2>&1 ;;
        pm2) PM2_HOME=$2/pm2home "$PM2" stop "$3" >/dev/null 2>&1 ;;
        supd) "$SUPCTL" -c "$2/supervisord.conf" stop "$3" >/dev/null 2>&1 ;;
    esac
}
log_file_of() { # KIND DIR NAME
    case $1 in
        ours) echo "$2/var/logs/$3.out.log" ;;
        *) echo "$2/logs/$3.out.log" ;;
    esac
}
wait_file() { # PATH TIMEOUT_S
    local deadline=$(( $(now_us) + $2 * 1000000 ))
    while [[ ! -s $1 ]]; do (( $(now_us) < deadline )) || return 1; sleep 0.02; done
}

# ---------------------------------------------------------------- scenarios 1, 2, 5
idle_phase() { # N TAG: start all three with N sleepers; start time, idle RSS/CPU, status latency
    local n=$1 tag=$2 kind dir t0 t1 i
    declare -A pid dirs c0
    for kind in "${KINDS[@]}"; do
        dir=$RUN/$tag-$kind; mkdir -p "$dir"; dirs[$kind]=$dir
        sleepers "$n" "$IDLE_MAX_MEMORY" | "gen_$kind" "$dir"
        log "$tag: starting $kind with $n sleepers"
        t0=$(now_us)
        "start_$kind" "$dir"
        if wait_running "$kind" "$dir" "$n" 60; then
            R[start$n.$kind]=$(( $(now_us) - t0 ))
        else
            R[start$n.$kind]=timeout
        fi
        [[ $kind == pm2 ]] && DPID=$(cat "$dir/pm2home/pm2.pid")
        pid[$kind]=$DPID
    done
    sleep 5
    log "$tag: measuring idle CPU and RSS of the three daemons over $IDLE_SECS s"
    for kind in "${KINDS[@]}"; do c0[$kind]=$(cpu_snap "${pid[$kind]}"); done
    sleep "$IDLE_SECS"
    for kind in "${KINDS[@]}"; do
        R[cpu$n.$kind]=$(cpu_secs "${c0[$kind]}" "$(cpu_snap "${pid[$kind]}")")
        R[rss$n.$kind]=$(rss_kib "${pid[$kind]}")
    done
    if (( n == 50 )); then
        for kind in "${KINDS[@]}"; do
            log "$tag: $kind status latency x$STATUS_RUNS"
            R[status.$kind]=$(for ((i = 0; i < STATUS_RUNS; i++)); do
                t0=$(now_us); status_cmd "$kind" "${dirs[$kind]}" >/dev/null; t1=$(now_us); echo $(( t1 - t0 ))
            done | stats | awk '{print $2}')
        done
    fi
    for kind in "${KINDS[@]}"; do stop_kind "$kind" "${dirs[$kind]}" "${pid[$kind]}"; done
}

# ---------------------------------------------------------------- scenario 3
restart_phase() {
    local kind dir out
    for kind in "${KINDS[@]}"; do
        dir=$RUN/restart-$kind; mkdir -p "$dir"
        echo "r;;1;$WL/sleeper;$dir/r.pid" | "gen_$kind" "$dir"
        log "restart: $kind, $RESTARTS x SIGKILL of the main pid"
        "start_$kind" "$dir"
        [[ $kind == pm2 ]] && DPID=$(cat "$dir/pm2home/pm2.pid")
        if wait_file "$dir/r.pid" 30 && sleep 1; then
            out=$("$WL/restart_probe" "$dir/r.pid" "$RESTARTS" 500 10000)
            R[restart.$kind]=$out
        else
            R[restart.$kind]="nan nan nan nan 0"
        fi
        stop_kind "$kind" "$dir" "$DPID"
    done
}

# ---------------------------------------------------------------- scenario 4
logs_phase() {
    local kind dir file start end seen i r audit
    declare -A times writes
    # LOG_RUNS rounds, the supervisors interleaved within each: one run of ~60 ms moved by
    # half on this machine (run to run, either way), so the rows are medians.
    for ((r = 1; r <= LOG_RUNS; r++)); do
        for kind in "${KINDS[@]}"; do
            dir=$RUN/logs-$kind-$r; mkdir -p "$dir"
            echo "w;;0;$WL/lines;$LOG_LINES;$dir/stamp" | "gen_$kind" "$dir"
            file=$(log_file_of "$kind" "$dir" w)
            log "logs: $kind, $LOG_LINES lines, round $r of $LOG_RUNS"
            "start_$kind" "$dir"
            [[ $kind == pm2 ]] && DPID=$(cat "$dir/pm2home/pm2.pid")
            # When the last line is on disk (µs, realtime): read incrementally, every 1 ms.
            seen=$("$WL/waitlines" "$file" "$LOG_LINES" 90000)
            [[ $seen == timeout ]] && seen=
            for ((i = 0; i < 500; i++)); do [[ -s $dir/stamp ]] && break; sleep 0.01; done
            sleep 1 # let any duplicate or straggler land before the audit
            read -r start end <"$dir/stamp" 2>/dev/null || { start=0; end=0; }
            if [[ -n $seen ]] && (( start > 0 )); then
                times[$kind]+="$(( seen - start / 1000 )) "
                writes[$kind]+="$(( (end - start) / 1000 )) "
            fi
            # Any run that lost, duplicated or tore a line shows in the row: the worst kept.
            audit=$(python3 "$CHECK_LINES" "$file" "$LOG_LINES" 2>/dev/null || echo "nan nan nan nan")
            R[logaudit.$kind]=$(printf '%s\n%s\n' "${R[logaudit.$kind]:-0 0 0 0}" "$audit" \
                | awk 'NR == 1 {for (i = 1; i <= 4; i++) m[i] = $i; next}
                       {for (i = 1; i <= 4; i++) if ($i == "nan" || (m[i] != "nan" && $i + 0 > m[i] + 0)) m[i] = $i}
                       END {print m[1], m[2], m[3], m[4]}')
            R[logsize.$kind]=$(du -sk "$(dirname "$file")" | awk '{print $1}')
            stop_kind "$kind" "$dir" "$DPID"
            rm -rf "$dir"
        done
    done
    for kind in "${KINDS[@]}"; do
        R[logtime.$kind]=$(tr ' ' '\n' <<<"${times[$kind]:-}" | grep . | stats | awk '$2 != "nan" {print $2}')
        R[logwrite.$kind]=$(tr ' ' '\n' <<<"${writes[$kind]:-}" | grep . | stats | awk '$2 != "nan" {print $2}')
        R[logtimes.$kind]=${times[$kind]:-}
        [[ -n ${R[logtime.$kind]} ]] || R[logtime.$kind]=timeout
    done
}

# ---------------------------------------------------------------- scenario 7
behaviour_phase() {
    local kind dir svc gc
    declare -A pid dirs
    for kind in "${KINDS[@]}"; do
        dir=$RUN/beh-$kind; mkdir -p "$dir"; dirs[$kind]=$dir
        {
            echo "esc;;0;$WL/memtree;escape;50;$dir/esc.pid;$dir/esc.holder"
            echo "memgc;100;0;$WL/memtree;grandchild;150;$dir/memgc.pid;$dir/memgc.holder"
            echo "memmain;100;0;$WL/memtree;main;150;$dir/memmain.pid;$dir/memmain.holder"
            echo "canary;;0;$WL/sleeper;$dir/canary.pid"
        } | "gen_$kind" "$dir"
        log "behaviour: starting $kind (LEAK_CANARY=1 in its environment)"
        # PM2 checks max_memory_restart every PM2_WORKER_INTERVAL (30 s by default): 1 s here so
        # the 10 s window measures *what* it counts, not how rarely it looks.
        "start_$kind" "$dir" LEAK_CANARY=1 PM2_WORKER_INTERVAL=1000
        [[ $kind == pm2 ]] && DPID=$(cat "$dir/pm2home/pm2.pid")
        pid[$kind]=$DPID
    done
    for kind in "${KINDS[@]}"; do
        dir=${dirs[$kind]}
        wait_file "$dir/canary.pid" 30
        if tr '\0' '\n' <"/proc/$(cat "$dir/canary.pid")/environ" 2>/dev/null | grep -q '^LEAK_CANARY='; then
            R[leak.$kind]="yes"
        else
            R[leak.$kind]="no"
        fi
    done
    # Memory limits. memtree appends "start PID NS" and "held PID NS" to PIDFILE.events; once
    # every holder is up we wait 10.5 s, then read the latency after the fact: from the first
    # run's "held" to the next run's "start". Nothing races the supervisor.
    for kind in "${KINDS[@]}"; do
        for svc in memgc memmain; do wait_file "${dirs[$kind]}/$svc.holder" 30; done
    done
    sleep 10.5
    for svc in memgc memmain; do
        for kind in "${KINDS[@]}"; do
            R[$svc.$kind]=$(awk '$1 == "held" && !h {h = $3} $1 == "start" && h && $3 > h {d = $3 - h; exit}
                END {if (!h) print "n/a (never held)"; else if (d && d <= 10e9) printf "yes (%.2f s)\n", d/1e9; else print "no (10 s)"}' \
                "${dirs[$kind]}/$svc.pid.events" 2>/dev/null)
        done
        R[$svc.supd]="n/a (no such feature)"
    done
    # Escaped grandchild after `stop esc`.
    for kind in "${KINDS[@]}"; do
        dir=${dirs[$kind]}
        gc=$(cat "$dir/esc.holder" 2>/dev/null)
        stop_service "$kind" "$dir" esc
        sleep 2
        if [[ -n $gc ]] && kill -0 "$gc" 2>/dev/null && [[ $(readlink "/proc/$gc/exe") == "$WL/memtree" ]]; then
            R[escape.$kind]="yes (left alive)"
            kill -KILL "$gc" 2>/dev/null # ours: it runs our workload binary
        elif [[ -n $gc ]]; then
            R[escape.$kind]="no (killed)"
        else
            R[escape.$kind]="n/a"
        fi
    done
    for kind in "${KINDS[@]}"; do stop_kind "$kind" "${dirs[$kind]}" "${pid[$kind]}"; done
}

# ---------------------------------------------------------------- scenario 6 (ours alone)
scale_phase() {
    local n dir t0 t1 c0 i r starts
    for n in $SCALE; do
        # SCALE_STARTS cold starts (one start of 1000 moved by ~40 % between minutes here):
        # the row is their median; idle CPU, RSS and status are taken on the first.
        starts=
        for ((r = 1; r <= SCALE_STARTS; r++)); do
            dir=$RUN/scale$n-$r; mkdir -p "$dir"
            sleepers "$n" | gen_ours "$dir"
            log "scale: ours with $n sleepers, start $r of $SCALE_STARTS"
            t0=$(now_us)
            start_ours "$dir"
            if wait_running ours "$dir" "$n" 120; then starts+="$(( $(now_us) - t0 )) "; fi
            if (( r == 1 )); then
                sleep 3
                c0=$(cpu_snap "$DPID")
                sleep "$SCALE_IDLE_SECS"
                R[scpu.$n]=$(cpu_secs "$c0" "$(cpu_snap "$DPID")")
                R[srss.$n]=$(rss_kib "$DPID")
                R[sstatus.$n]=$(for ((i = 0; i < 10; i++)); do
                    t0=$(now_us); status_cmd ours "$dir" >/dev/null; t1=$(now_us); echo $(( t1 - t0 ))
                done | stats | awk '{print $2}')
            fi
            stop_kind ours "$dir" "$DPID"
            rm -rf "$dir"
        done
        R[sstarts.$n]=$starts
        R[sstart.$n]=$(tr ' ' '\n' <<<"$starts" | grep . | stats | awk '$2 != "nan" {print $2}')
        [[ -n ${R[sstart.$n]} ]] || R[sstart.$n]=timeout
    done
}

# ---------------------------------------------------------------- run
idle_phase 2 idle2
idle_phase 50 idle50
restart_phase
logs_phase
behaviour_phase
[[ -n $SCALE ]] && scale_phase
TOTAL_S=$(( ($(now_us) - RUN_START) / 1000000 ))

# ---------------------------------------------------------------- report
cell() { local v=${R[$1]:-n/a}; echo "$v"; }
ms_cell() { local v=${R[$1]:-}; [[ $v =~ ^[0-9]+$ ]] && fmt_ms "$v" || echo "${v:-n/a}"; }
list_ms_cell() { local v out=; for v in ${R[$1]:-}; do out+="${out:+, }$(fmt_ms "$v")"; done; echo "${out:-n/a}"; }
row() { # LABEL KEY FORMATTER
    local label=$1 key=$2 f=${3:-cell} kind line="| $1 |"
    for kind in "${KINDS[@]}"; do line+=" $("$f" "$key.$kind") |"; done
    echo "$line"
}
restart_cell() { local a; read -ra a <<<"${R[$1]:-nan nan nan nan 0}"; echo "${a[0]} / ${a[1]} / ${a[2]} / ${a[3]}$( (( ${a[4]} < RESTARTS )) && echo " (${a[4]}/$RESTARTS ok)")"; }
audit_cell() { local a; read -ra a <<<"${R[$1]:-nan nan nan nan}"; echo "${a[1]} / ${a[2]} / ${a[3]}"; }
rate_cell() { local v=${R[$1]:-}; [[ $v =~ ^[0-9]+$ ]] && awk -v us="$v" -v n="$LOG_LINES" 'BEGIN {printf "%.0f k", n/(us/1e6)/1000}' || echo n/a; }
mem_kib() { awk '/^MemTotal:/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo; }

{
    echo "# Benchmark results"
    echo
    echo "Generated by \`benches/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); whole run ${TOTAL_S} s."
    echo "Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(mem_kib) RAM, Linux $(uname -r)."
    echo "Versions: leadmaster-supervisord $V_OURS (release build), PM2 $V_PM2 (node $(node --version)), supervisord $V_SUPD (python $("$TOOLS/venv/bin/python" -c 'import platform; print(platform.python_version())'))."
    echo
    echo "| scenario | leadmaster-supervisord | PM2 | supervisord |"
    echo "|---|---|---|---|"
    row "1. daemon RSS, 2 services (KiB)" rss2
    row "1. daemon CPU over ${IDLE_SECS} s idle, 2 services (s)" cpu2
    row "1. daemon RSS, 50 services (KiB)" rss50
    row "1. daemon CPU over ${IDLE_SECS} s idle, 50 services (s)" cpu50
    row "2. cold start of 2 services until all running (ms)" start2 ms_cell
    row "2. cold start of 50 services until all running (ms)" start50 ms_cell
    row "3. restart after SIGKILL, min / median / p90 / max of $RESTARTS (ms)" restart restart_cell
    row "4. $LOG_LINES lines: first write to all on disk, median of $LOG_RUNS (ms)" logtime ms_cell
    row "4. each run, in run order (ms)" logtimes list_ms_cell
    row "4. throughput (lines/s)" logtime rate_cell
    row "4. writer's own time to write them (ms)" logwrite ms_cell
    row "4. lines missing / duplicated / torn" logaudit audit_cell
    row "4. log dir size after (KiB)" logsize
    row "5. status with 50 services, median of $STATUS_RUNS (ms)" status ms_cell
    row "7. stop leaves the setsid'd grandchild alive" escape
    row "7. restarted when a grandchild holds 150 MiB (limit 100 MiB)" memgc
    row "7. restarted when main holds 150 MiB (limit 100 MiB, control)" memmain
    row "7. daemon env (LEAK_CANARY) leaks into children" leak
    if [[ -n $SCALE ]]; then
        echo
        echo "Scale, leadmaster-supervisord alone:"
        echo
        echo "| services | cold start until all running, median of $SCALE_STARTS (ms) | each start (ms) | daemon RSS (KiB) | daemon CPU over ${SCALE_IDLE_SECS} s idle (s) | status --json, median of 10 (ms) |"
        echo "|---|---|---|---|---|---|"
        for n in $SCALE; do
            echo "| $n | $(ms_cell sstart.$n) | $(list_ms_cell sstarts.$n) | ${R[srss.$n]:-n/a} | ${R[scpu.$n]:-n/a} | $(ms_cell sstatus.$n) |"
        done
    fi
    echo
    echo "supervisord has no memory limit of its own (the superlance \`memmon\` plugin is a separate"
    echo "event listener, not installed here). PM2 ran with \`PM2_WORKER_INTERVAL=1000\` in scenario 7."
    echo "See benches/README.md for how each number is taken."
} >"$HERE/RESULTS.md"
cat "$HERE/RESULTS.md"
log "done in ${TOTAL_S} s"
