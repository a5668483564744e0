#!/usr/bin/env bash
# glibc-floor.sh prints the newest glibc symbol version each ELF file needs
# (its version-needs section: readelf -V, any architecture) and fails when
# one needs a newer glibc than MAX.
# Usage: scripts/glibc-floor.sh MAX FILE...   e.g. scripts/glibc-floor.sh 2.31 bin/*
set -euo pipefail
max=${1:?usage: scripts/glibc-floor.sh MAX FILE...}
shift
[ $# -gt 0 ] || { echo "glibc-floor: no files" >&2; exit 2; }
bad=0
for f in "$@"; do
  need=$(readelf -V -W "$f" | grep -o 'Name: GLIBC_[0-9][0-9.]*' | sed 's/Name: GLIBC_//' | sort -uV | tail -1)
  [ -n "$need" ] || need=none
  if [ "$need" != none ] && [ "$(printf '%s\n%s\n' "$need" "$max" | sort -V | tail -1)" != "$max" ]; then
    echo "glibc-floor: $f needs GLIBC_$need, newer than $max" >&2
    bad=1
  else
    echo "glibc-floor: $f needs GLIBC_$need (limit $max)" >&2
  fi
done
exit $bad
