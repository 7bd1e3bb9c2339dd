#!/usr/bin/env bash
# Installs what the metrics tests need: promtool (Debian's `prometheus` package), to check
# the /metrics output. Idempotent: does nothing when promtool is already on PATH.
set -euo pipefail

if path=$(command -v promtool 2>/dev/null); then
    echo "metrics deps: found promtool at $path"
    exit 0
fi
echo "metrics deps: no promtool found, installing prometheus with apt-get"
if [[ $(id -u) -eq 0 ]]; then SUDO=(); else SUDO=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends prometheus
command -v promtool >/dev/null || { echo "metrics deps: promtool still missing after install" >&2; exit 1; }
echo "metrics deps: installed $(promtool --version 2>&1 | head -n1)"
