#!/bin/sh
# The model store, owned by the daemon's user. On a host running systemd:
# reload units; on a first install enable and start the service (Debian's
# convention, kept for the .rpm too); on an upgrade restart it if it runs.
set -e
install -d -m 0750 -o edge-node -g edge-node /var/lib/edge-node
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
  # deb: "configure" with no previous version; rpm: $1 = 1 on a first install.
  if [ "$1" = 1 ] || { [ "$1" = configure ] && [ -z "$2" ]; }; then
    systemctl enable --now edge-node.service >/dev/null 2>&1 ||
      echo "edge-node: installed; start it with: systemctl enable --now edge-node" >&2
  elif systemctl is-active --quiet edge-node.service; then
    systemctl try-restart edge-node.service >/dev/null 2>&1 || true
  fi
fi
