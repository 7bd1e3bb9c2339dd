#!/usr/bin/env bash
# Installs what the session-manager tests need: a Chromium binary.
# Idempotent: does nothing when CHROMIUM_PATH or one of chromium,
# chromium-browser, google-chrome is already available.
set -euo pipefail

if [[ -n "${CHROMIUM_PATH:-}" && -x "${CHROMIUM_PATH}" ]]; then
    echo "session-manager deps: using CHROMIUM_PATH=${CHROMIUM_PATH}"
    exit 0
fi
for name in chromium chromium-browser google-chrome; do
    if path=$(command -v "$name" 2>/dev/null); then
        echo "session-manager deps: found $name at $path"
        exit 0
    fi
done

echo "session-manager deps: no Chromium found, installing with apt-get"
if [[ $(id -u) -eq 0 ]]; then SUDO=(); else SUDO=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q chromium
command -v chromium >/dev/null || { echo "session-manager deps: chromium still missing after install" >&2; exit 1; }
echo "session-manager deps: installed $(chromium --version 2>/dev/null | tail -n1)"
