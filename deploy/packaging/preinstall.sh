#!/bin/sh
# The edge-node system user must exist before the files are unpacked:
# /etc/edge-node/config.yaml belongs to its group. systemd-sysusers reads the
# same line the package installs as /usr/lib/sysusers.d/edge-node.conf; on a
# host without systemd, useradd makes the same user.
set -e
if ! getent passwd edge-node >/dev/null; then
  if command -v systemd-sysusers >/dev/null 2>&1; then
    echo 'u edge-node - "edge-node inference daemon" /var/lib/edge-node' | systemd-sysusers -
  else
    useradd --system --user-group --home-dir /var/lib/edge-node --no-create-home \
      --shell /usr/sbin/nologin --comment "edge-node inference daemon" edge-node
  fi
fi
