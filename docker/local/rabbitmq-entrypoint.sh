#!/bin/sh
# The rabbitmq image's entrypoint turns RABBITMQ_DEFAULT_USER/PASS into the first user; Debian's
# server reads them from its config instead. Written to a file of its own next to the ones
# compose mounts into conf.d.
set -eu
if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then
  umask 077
  printf 'default_user = %s\ndefault_pass = %s\nloopback_users = none\n' \
    "$RABBITMQ_DEFAULT_USER" "${RABBITMQ_DEFAULT_PASS:-}" > /etc/rabbitmq/conf.d/05-default-user.conf
fi
exec rabbitmq-server "$@"
