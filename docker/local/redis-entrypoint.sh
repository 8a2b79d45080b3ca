#!/bin/sh
# As the redis image's entrypoint does: a server started from the command line alone (no
# config file) runs with protected mode off, so its peers on the container network may
# connect; the published port stays on the host's loopback (compose.yaml).
set -eu
if [ "${1:-}" = redis-server ]; then
  shift
  case "${1:-}" in
    *.conf) exec redis-server "$@" ;;
    *) exec redis-server "$@" --protected-mode no ;;
  esac
fi
exec "$@"
