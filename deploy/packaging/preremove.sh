#!/bin/sh
# Stop the service when the package goes away (deb: "remove"; rpm: $1 = 0),
# not on an upgrade, which restarts it in postinstall.
set -e
if [ -d /run/systemd/system ] && { [ "$1" = remove ] || [ "$1" = 0 ]; }; then
  systemctl disable --now edge-node.service >/dev/null 2>&1 || true
fi
