#!/bin/sh
# The model store (/var/lib/edge-node) and the edge-node user stay even on
# purge: the store is the device's data and may be all it can serve offline;
# remove both by hand (docs/operations.md). A purge removes the config that
# dpkg kept (the credentials folder included).
set -e
if [ "$1" = purge ]; then
  rm -rf /etc/edge-node
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
