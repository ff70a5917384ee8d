#!/usr/bin/env bash
# Zero-downtime upgrade of a running Switchyard to the binary on PATH (or $SWITCHYARD) and
# the configuration FILE. The new process checks everything (configuration, certificates,
# first discovery) before it asks the running one (found through pid_file) to hand over its
# listening sockets; if anything fails, it exits non-zero and the running process goes on.
# For configuration changes a hot reload (SIGHUP, `systemctl reload`) keeps more: prefer it.
#   scripts/upgrade.sh /etc/switchyard/switchyard.yaml
set -euo pipefail
CONF=${1:?usage: upgrade.sh CONFIG_FILE}
BIN=${SWITCHYARD:-switchyard}
"$BIN" -t -c "$CONF"
exec "$BIN" -u -d -c "$CONF"
