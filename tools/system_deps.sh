#!/usr/bin/env bash
# Debian packages the serving path uses: haproxy (Serve's HAProxy ingress) and redis-server (the
# Redis event-store backend, started by its tests). Installs what is missing when it can (root or
# passwordless sudo); otherwise says what the fallback is. Never fails the caller.
set -u
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v redis-server >/dev/null || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "note: ${missing[*]} not installed and no root: serving falls back to Serve's Python proxy; Redis tests skip." >&2
    exit 0
  fi
fi
echo "installing ${missing[*]} (apt-get)" >&2
if ! { $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; }; }; then
  echo "note: apt-get could not install ${missing[*]}: serving falls back to Serve's Python proxy; Redis tests skip." >&2
fi
# Debian starts the packaged services; the project starts its own instances on free ports.
for svc in haproxy redis-server; do $SUDO service "$svc" stop >/dev/null 2>&1 || true; done
exit 0
