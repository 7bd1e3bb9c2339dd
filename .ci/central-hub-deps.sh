#!/usr/bin/env bash
# Installs what central-hub's tests need beyond the Rust toolchain: MariaDB
# (the tests start their own private mariadbd; no service is started here).
# Idempotent: does nothing when mariadbd is already installed.
set -euo pipefail

have_mariadbd() {
    command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]
}

if have_mariadbd; then
    echo "central-hub-deps: mariadbd present, nothing to do"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "central-hub-deps: installing mariadb-server"
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mariadb-server

have_mariadbd || { echo "central-hub-deps: mariadbd still missing after install" >&2; exit 1; }
echo "central-hub-deps: mariadbd installed"
