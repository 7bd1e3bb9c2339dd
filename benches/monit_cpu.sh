#!/usr/bin/env bash
# The daemon's extra CPU while `lmctl monit` runs: 50 idle services, the daemon's own
# utime+stime over a window without monit, then with monit (in an 80x24 tmux pane) with no
# service selected, then with one selected (its tree and log tail too). Release build.
# Usage: benches/monit_cpu.sh [SECONDS per window, default 30]
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-30}
cargo build --release --bin leadmaster-supervisord --bin lmctl >/dev/null
bin=$PWD/target/release
dir=$(mktemp -d)
tsock=$dir/tmux.sock
cleanup() {
    tmux -S "$tsock" kill-server 2>/dev/null || true
    "$bin/lmctl" --config "$dir/supervisor.toml" shutdown >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
{
    echo '[supervisor]'
    echo 'state_dir = "var"'
    for i in $(seq 1 50); do
        printf '[services.s%02d]\ncommand = "sleep"\nargs = ["100000"]\n' "$i"
    done
} >"$dir/supervisor.toml"
"$bin/lmctl" --config "$dir/supervisor.toml" start >/dev/null
pid=$("$bin/lmctl" --config "$dir/supervisor.toml" ping --json | sed 's/.*"pid":\([0-9]*\).*/\1/')
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
measure() {
    local a b
    a=$(ticks)
    sleep "$window"
    b=$(ticks)
    awk -v d=$((b - a)) -v hz="$hz" -v w="$window" \
        'BEGIN { printf "%.2f s CPU over %d s (%.2f%% of one core)\n", d / hz, w, 100 * d / hz / w }'
}
sleep 2
echo "daemon pid $pid, 50 services"
printf 'idle, no monit:          '
measure
tmux -S "$tsock" -f /dev/null new-session -d -x 80 -y 24 -s m \
    "$bin/lmctl --config $dir/supervisor.toml monit"
sleep 2
tmux -S "$tsock" capture-pane -p -t m | grep -q 's01 ' || {
    echo "monit is not showing the services:" >&2
    tmux -S "$tsock" capture-pane -p -t m >&2
    exit 1
}
printf 'monit, none selected:    '
measure
tmux -S "$tsock" send-keys -t m Down
sleep 2
tmux -S "$tsock" capture-pane -p -t m | grep -q 'log: s01' || {
    echo "monit did not select s01" >&2
    exit 1
}
printf 'monit, one selected:     '
measure
tmux -S "$tsock" kill-server
printf 'again without monit:     '
measure
