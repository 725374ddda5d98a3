#!/usr/bin/env bash
# Real services for the integration tests (DESIGN.md section 8): a redis-server
# from Debian's packages, a single-node KRaft Apache Kafka broker whose jars
# come from Maven Central, an S3-compatible server (moto, from PyPI), a Google
# Cloud Storage emulator (fake-gcs-server, built with `go install` from the Go
# module proxy) and an Azure Blob Storage emulator (Azurite, from npm) for the
# offline log in object storage. Nothing is
# assumed to be installed or running: `up` installs what is missing, starts
# them on 127.0.0.1 and waits until they answer; `down` stops exactly the
# processes `up` started (by recorded PID).
#
#   .ci/services.sh up       install if needed, start, wait until ready
#   .ci/services.sh down     stop what `up` started
#   .ci/services.sh env      print the variables the tests read (KEY=VALUE)
#   .ci/services.sh status   say what is running
#
# Settings (environment):
#   FEATURESTORE_CACHE                  cache of Kafka jars and service state
#                                       (default ~/.cache/featurestore)
#   FEATURESTORE_REDIS_PORT             default 16379
#   FEATURESTORE_KAFKA_PORT             default 19092
#   FEATURESTORE_KAFKA_CONTROLLER_PORT  default 19093
#   FEATURESTORE_S3_PORT                default 19900
#   FEATURESTORE_GCS_PORT               default 19910
#   FEATURESTORE_AZURE_PORT             default 19920
#   FEATURESTORE_KAFKA_VERSION          default 4.1.1 (4.0.1 or newer: kafka-go
#                                       needs JoinGroup v1, dropped in 4.0.0)
#   FEATURESTORE_SERVICES_TIMEOUT       seconds `up` waits for each service (default 180)
#
# `up` also makes a Python virtual environment with the packages of
# .ci/requirements.txt (pip, from PyPI) for the interoperability tests; `env`
# names its interpreter.
set -euo pipefail

HOST=127.0.0.1
KAFKA_VERSION=${FEATURESTORE_KAFKA_VERSION:-4.1.1}
REDIS_PORT=${FEATURESTORE_REDIS_PORT:-16379}
KAFKA_PORT=${FEATURESTORE_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${FEATURESTORE_KAFKA_CONTROLLER_PORT:-19093}
S3_PORT=${FEATURESTORE_S3_PORT:-19900}
GCS_PORT=${FEATURESTORE_GCS_PORT:-19910}
AZURE_PORT=${FEATURESTORE_AZURE_PORT:-19920}
# The buckets `up` creates for the tests, which use a prefix each.
S3_BUCKET=featurestore-test
GCS_BUCKET=featurestore-test
FAKE_GCS_VERSION=v1.56.1
# 3.35.0: the newest Azurite whose package runs on Debian 12's Node.js 18
# (3.36 wants Node 21, 3.37 Node 22).
AZURITE_VERSION=3.35.0
TIMEOUT=${FEATURESTORE_SERVICES_TIMEOUT:-180}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${FEATURESTORE_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/featurestore}
KAFKA_HOME=$CACHE/kafka-$KAFKA_VERSION
KAFKA_LIBS=$KAFKA_HOME/libs
# State is per port pair so that two checkouts using other ports do not clash.
STATE=$CACHE/services/redis-$REDIS_PORT-kafka-$KAFKA_PORT
REQUIREMENTS=$ROOT/.ci/requirements.txt
# One environment per requirements file content, shared by all port pairs.
VENV=$CACHE/python/$(sha256sum "$REQUIREMENTS" | cut -c1-12)
REDIS_DIR=$STATE/redis
KAFKA_DIR=$STATE/kafka
S3_DIR=$STATE/s3
GCS_DIR=$STATE/gcs
FAKE_GCS=$CACHE/fake-gcs-server-$FAKE_GCS_VERSION/fake-gcs-server
AZURE_DIR=$STATE/azure
AZURITE_HOME=$CACHE/azurite-$AZURITE_VERSION

KAFKA_JVM_OPTS=(
  -Xms128m -Xmx512m
  # Short-lived test broker on 2 cores: cheap GC and C1 only start fastest.
  -XX:+UseSerialGC -XX:TieredStopAtLevel=1
  -XX:+ExitOnOutOfMemoryError
  -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties"
)

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  echo "usage: $0 up|down|env|status" >&2
  exit 2
}

# ---------------------------------------------------------------- helpers

# port_open PORT: true if something accepts TCP connections on $HOST:PORT.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# pid_of NAME: the recorded PID of a service we started, if it still runs and
# is still that service (PIDs get reused); empty otherwise.
pid_of() {
  local name=$1 pidfile=$STATE/$1.pid pid pattern
  [[ -f $pidfile ]] || return 0
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  case $name in
    # Redis retitles itself "redis-server 127.0.0.1:PORT".
    redis) pattern="redis-server.*[: ]$REDIS_PORT( |$)" ;;
    kafka) pattern="kafka\.Kafka.*$KAFKA_DIR/server\.properties" ;;
    s3) pattern="moto\.server .*-p $S3_PORT( |$)" ;;
    gcs) pattern="fake-gcs-server .*-port $GCS_PORT( |$)" ;;
    azure) pattern="azurite/dist/src/blob/main\.js .*--blobPort $AZURE_PORT( |$)" ;;
  esac
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -Eq "$pattern"; then
    echo "$pid"
  fi
}

# stop NAME: stop the recorded process, politely first.
stop() {
  local name=$1 pid i
  pid=$(pid_of "$name")
  if [[ -z $pid ]]; then
    rm -f "$STATE/$name.pid"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do # 30 s
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) did not stop in 30s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$STATE/$name.pid"
}

tail_logs() {
  local f
  for f in "$@"; do
    [[ -s $f ]] || continue
    echo "----- last lines of $f" >&2
    tail -n 40 "$f" >&2
  done
  echo "-----" >&2
}

# running NAME READY ADDR: true, saying so, if the NAME this script started
# still answers (the function READY); one that does not answer is stopped.
running() {
  local name=$1 ready=$2 addr=$3 pid
  pid=$(pid_of "$name")
  [[ -n $pid ]] || return 1
  if $ready; then
    log "$name already running on $addr (pid $pid)"
    return 0
  fi
  log "$name (pid $pid) does not answer; restarting it"
  stop "$name"
  return 1
}

# await NAME READY ADDR LOG...: wait until the NAME just started answers
# (READY); if it exits first, or TIMEOUT passes, show the LOGs and fail.
await() {
  local name=$1 ready=$2 addr=$3 deadline=$((SECONDS + TIMEOUT))
  shift 3
  until $ready; do
    # Not pid_of: the child may not have exec'd the server yet.
    if ! kill -0 "$(<"$STATE/$name.pid")" 2>/dev/null; then
      tail_logs "$@"
      die "$name exited during startup"
    fi
    if ((SECONDS >= deadline)); then
      tail_logs "$@"
      log "error: $name did not answer on $addr within ${TIMEOUT}s"
      stop "$name"
      exit 1
    fi
    sleep 0.2
  done
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo -n "$@"
  else
    die "need root to run: $*"
  fi
}

# install_missing: Debian packages for whatever is not on PATH.
install_missing() {
  local pkgs=()
  command -v redis-server >/dev/null || pkgs+=(redis-server)
  command -v redis-cli >/dev/null || pkgs+=(redis-tools)
  command -v java >/dev/null || pkgs+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || pkgs+=(maven)
  command -v timeout >/dev/null || pkgs+=(coreutils)
  command -v curl >/dev/null || pkgs+=(curl)
  command -v python3 >/dev/null || pkgs+=(python3)
  command -v node >/dev/null || pkgs+=(nodejs)
  command -v npm >/dev/null || pkgs+=(npm)
  python3 -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)
  ((${#pkgs[@]})) || return 0
  command -v apt-get >/dev/null || die "missing ${pkgs[*]} and no apt-get to install them"
  log "installing ${pkgs[*]} with apt-get"
  # Keep the package's own init script from starting a system-wide
  # redis-server on port 6379: only ours should run. policy-rc.d is Debian's
  # documented switch for this; ours is removed again right after.
  local policy=/usr/sbin/policy-rc.d ours=
  if [[ ! -e $policy ]]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' >$policy && chmod 755 $policy"
    ours=1
  fi
  local rc=0
  {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  } || rc=$?
  [[ -z $ours ]] || as_root rm -f "$policy"
  ((rc == 0)) || die "apt-get install ${pkgs[*]} failed (exit $rc)"
}

# with_retries WHAT LOG CMD...: run CMD (a download) up to three times, its
# output in LOG, backing off; shows LOG and fails if the third run fails.
with_retries() {
  local what=$1 out=$2 attempt
  shift 2
  for attempt in 1 2 3; do
    # A stalled download (Maven waits up to 30 minutes for a read by
    # default) must not use up CI's 90 minutes: 15 minutes an attempt.
    timeout --kill-after=30s 900 "$@" >"$out" 2>&1 && return 0
    if ((attempt == 3)); then
      tail_logs "$out"
      return 1
    fi
    log "$what failed (attempt $attempt); retrying"
    sleep $((attempt * 5))
  done
}

# fetch_kafka: broker jars into $KAFKA_LIBS via Maven, once per version and pom.
fetch_kafka() {
  local pom=$ROOT/.ci/kafka/pom.xml stamp want tmp
  stamp=$KAFKA_HOME/.complete
  want="$KAFKA_VERSION $(sha256sum "$pom" | cut -d' ' -f1)"
  if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
    return 0
  fi
  log "fetching Kafka $KAFKA_VERSION jars with Maven into $KAFKA_LIBS"
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/.kafka-$KAFKA_VERSION.XXXXXX")
  if ! with_retries mvn "$tmp/mvn.log" mvn -B -q -Dstyle.color=never -Dmaven.wagon.rto=120000 -f "$pom" \
    -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$tmp/libs"; then
    rm -rf "$tmp"
    die "mvn could not fetch Kafka $KAFKA_VERSION"
  fi
  [[ -n $(compgen -G "$tmp/libs/kafka_2.13-*.jar") ]] || die "no kafka_2.13 jar in $tmp/libs"
  echo "$want" >"$tmp/.complete"
  rm -rf "$KAFKA_HOME"
  mv "$tmp" "$KAFKA_HOME"
}

# ---------------------------------------------------------------- redis

redis_ready() {
  [[ $(timeout 5 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

start_redis() {
  running redis redis_ready "$HOST:$REDIS_PORT" && return 0
  rm -f "$STATE/redis.pid"
  port_open "$REDIS_PORT" && die "port $HOST:$REDIS_PORT is taken by a process this script did not start; stop it or set FEATURESTORE_REDIS_PORT"
  rm -rf "$REDIS_DIR"
  mkdir -p "$REDIS_DIR"
  nohup redis-server --bind "$HOST" --port "$REDIS_PORT" --dir "$REDIS_DIR" \
    --daemonize no --save "" --appendonly no --protected-mode yes \
    --logfile "$REDIS_DIR/redis.log" >"$REDIS_DIR/stdout.log" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE/redis.pid"
  await redis redis_ready "$HOST:$REDIS_PORT" "$REDIS_DIR/stdout.log" "$REDIS_DIR/redis.log"
  log "redis $(redis-server --version | grep -o 'v=[^ ]*' | cut -c3-) ready on $HOST:$REDIS_PORT (pid $(<"$STATE/redis.pid"))"
}

# ---------------------------------------------------------------- kafka

kafka_java() {
  java "${KAFKA_JVM_OPTS[@]}" -cp "$KAFKA_LIBS/*" "$@"
}

# The broker's configuration is featurestore/testenv's, which the brokers of
# the tests' own use too (testenv.KafkaOwn); fill in its placeholders.
write_kafka_config() {
  local t="$ROOT/featurestore/testenv"
  sed -e "s|@HOST@|$HOST|g" -e "s|@PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|@DATA@|$KAFKA_DIR/data|g" -e "s|@AUTO_CREATE_TOPICS@|true|g" \
    "$t/kafka-server.properties" >"$KAFKA_DIR/server.properties"
  sed -e "s|@LOG@|$KAFKA_DIR/server.log|g" "$t/kafka-log4j2.properties" >"$KAFKA_DIR/log4j2.properties"
}

# kafka_answers: a real round trip, not only an open port. Describing a group
# needs metadata and the group coordinator, and makes the broker create
# __consumer_offsets, so the first consumer group in a test joins at once
# instead of getting COORDINATOR_NOT_AVAILABLE. The group does not exist; the
# broker saying so is the answer we wait for.
kafka_answers() {
  timeout 60 java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2-tools.properties" \
    -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
    --bootstrap-server "$HOST:$KAFKA_PORT" --describe --group featurestore-services-check \
    --timeout 10000 >"$KAFKA_DIR/check.log" 2>&1 || true
  grep -Eq 'GroupIdNotFound|does not exist' "$KAFKA_DIR/check.log"
}

kafka_ready() {
  port_open "$KAFKA_PORT" && kafka_answers
}

start_kafka() {
  local cluster_id
  running kafka kafka_ready "$HOST:$KAFKA_PORT" && return 0
  rm -f "$STATE/kafka.pid"
  local port
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_open "$port" && die "port $HOST:$port is taken by a process this script did not start; stop it or set FEATURESTORE_KAFKA_PORT / FEATURESTORE_KAFKA_CONTROLLER_PORT"
  done
  fetch_kafka

  # A fresh cluster every time: tests never see an earlier run's topics.
  rm -rf "$KAFKA_DIR"
  mkdir -p "$KAFKA_DIR/data"
  write_kafka_config
  printf 'status = warn\nrootLogger.level = WARN\n' >"$KAFKA_DIR/log4j2-tools.properties"
  # A cluster id is 16 random bytes in URL-safe base64 without padding; one
  # that starts with '-' would be read as an option.
  cluster_id=-
  while [[ $cluster_id == -* ]]; do
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
  done
  if ! kafka_java kafka.tools.StorageTool format --cluster-id "$cluster_id" \
    --config "$KAFKA_DIR/server.properties" --ignore-formatted >"$KAFKA_DIR/format.log" 2>&1; then
    tail_logs "$KAFKA_DIR/format.log"
    die "formatting the KRaft storage failed"
  fi

  nohup java "${KAFKA_JVM_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
    >"$KAFKA_DIR/stdout.log" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE/kafka.pid"
  await kafka kafka_ready "$HOST:$KAFKA_PORT" "$KAFKA_DIR/stdout.log" "$KAFKA_DIR/server.log" "$KAFKA_DIR/check.log"
  log "kafka $KAFKA_VERSION ready on $HOST:$KAFKA_PORT (pid $(<"$STATE/kafka.pid"), logs in $KAFKA_DIR)"
}

# python_env: the virtual environment of .ci/requirements.txt, made once.
python_env() {
  local stamp=$VENV/.complete attempt
  [[ -f $stamp ]] && return 0
  log "installing $(grep -cv '^\s*\(#\|$\)' "$REQUIREMENTS") Python packages into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
  for attempt in 1 2 3; do
    if "$VENV/bin/pip" install -q --disable-pip-version-check --no-input -r "$REQUIREMENTS" >&2; then
      touch "$stamp"
      return 0
    fi
    log "pip install failed (attempt $attempt of 3)"
    sleep $((attempt * 5))
  done
  die "pip install -r $REQUIREMENTS failed"
}

# ---------------------------------------------------------------- s3

# s3_ready: the server answers, and the tests' bucket exists (PUT creates it;
# moto accepts it unsigned, and again when it exists).
s3_ready() {
  [[ $(curl -s -o /dev/null -w '%{http_code}' -X PUT "http://$HOST:$S3_PORT/$S3_BUCKET" 2>/dev/null) == 200 ]]
}

start_s3() {
  running s3 s3_ready "$HOST:$S3_PORT" && return 0
  rm -f "$STATE/s3.pid"
  port_open "$S3_PORT" && die "port $HOST:$S3_PORT is taken by a process this script did not start; stop it or set FEATURESTORE_S3_PORT"
  rm -rf "$S3_DIR"
  mkdir -p "$S3_DIR"
  # In memory: a fresh server holds nothing from an earlier run.
  nohup "$VENV/bin/python" -m moto.server -H "$HOST" -p "$S3_PORT" \
    >"$S3_DIR/server.log" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE/s3.pid"
  await s3 s3_ready "$HOST:$S3_PORT" "$S3_DIR/server.log"
  log "s3 (moto) ready on $HOST:$S3_PORT, bucket $S3_BUCKET (pid $(<"$STATE/s3.pid"))"
}

# ---------------------------------------------------------------- gcs

# fetch_fake_gcs: the emulator's binary, built once per version with the Go
# toolchain the tests use (the module comes from the Go module proxy).
fetch_fake_gcs() {
  local tmp
  [[ -x $FAKE_GCS ]] && return 0
  command -v go >/dev/null || die "go not found: it builds fake-gcs-server"
  log "building fake-gcs-server $FAKE_GCS_VERSION with go install (a minute or two, once)"
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/.fake-gcs-server.XXXXXX")
  if ! (cd "$tmp" && GOBIN="$tmp" GOFLAGS= with_retries "go install" "$tmp/go.log" \
    go install "github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION"); then
    rm -rf "$tmp"
    die "go install fake-gcs-server@$FAKE_GCS_VERSION failed"
  fi
  mkdir -p "$(dirname "$FAKE_GCS")"
  mv "$tmp/fake-gcs-server" "$FAKE_GCS"
  rm -rf "$tmp"
}

# gcs_ready: the emulator answers, and the tests' bucket exists (POST creates
# it; 409 when it exists already).
gcs_ready() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -d "{\"name\":\"$GCS_BUCKET\"}" "http://$HOST:$GCS_PORT/storage/v1/b" 2>/dev/null) || return 1
  [[ $code == 200 || $code == 409 ]]
}

start_gcs() {
  running gcs gcs_ready "$HOST:$GCS_PORT" && return 0
  rm -f "$STATE/gcs.pid"
  port_open "$GCS_PORT" && die "port $HOST:$GCS_PORT is taken by a process this script did not start; stop it or set FEATURESTORE_GCS_PORT"
  fetch_fake_gcs
  rm -rf "$GCS_DIR"
  mkdir -p "$GCS_DIR"
  # In memory: a fresh emulator holds nothing from an earlier run. The
  # client reads objects at http://HOST:PORT/BUCKET/KEY, which the emulator
  # serves only for its public host.
  nohup "$FAKE_GCS" -scheme http -host "$HOST" -port "$GCS_PORT" \
    -public-host "$HOST:$GCS_PORT" -external-url "http://$HOST:$GCS_PORT" \
    -backend memory -log-level warn >"$GCS_DIR/server.log" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE/gcs.pid"
  await gcs gcs_ready "$HOST:$GCS_PORT" "$GCS_DIR/server.log"
  log "gcs (fake-gcs-server $FAKE_GCS_VERSION) ready on $HOST:$GCS_PORT, bucket $GCS_BUCKET (pid $(<"$STATE/gcs.pid"))"
}

# ---------------------------------------------------------------- azure

# fetch_azurite: the emulator from npm, installed once per version.
fetch_azurite() {
  local tmp
  [[ -f $AZURITE_HOME/.complete ]] && return 0
  log "installing Azurite $AZURITE_VERSION with npm (a minute or two, once)"
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$CACHE/.azurite.XXXXXX")
  if ! with_retries "npm install" "$tmp/npm.log" npm install --prefix "$tmp" --no-audit --no-fund \
    --loglevel=error "azurite@$AZURITE_VERSION"; then
    rm -rf "$tmp"
    die "npm install azurite@$AZURITE_VERSION failed"
  fi
  touch "$tmp/.complete"
  rm -rf "$AZURITE_HOME"
  mv "$tmp" "$AZURITE_HOME"
}

# azure_ready: the emulator answers (a listing without credentials is
# refused, 403: the answer we wait for). The tests make their container.
azure_ready() {
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$HOST:$AZURE_PORT/devstoreaccount1?comp=list" 2>/dev/null) == 403 ]]
}

start_azure() {
  running azure azure_ready "$HOST:$AZURE_PORT" && return 0
  rm -f "$STATE/azure.pid"
  port_open "$AZURE_PORT" && die "port $HOST:$AZURE_PORT is taken by a process this script did not start; stop it or set FEATURESTORE_AZURE_PORT"
  fetch_azurite
  rm -rf "$AZURE_DIR"
  mkdir -p "$AZURE_DIR"
  # In memory: a fresh emulator holds nothing from an earlier run.
  nohup node "$AZURITE_HOME/node_modules/azurite/dist/src/blob/main.js" --blobHost "$HOST" --blobPort "$AZURE_PORT" \
    --inMemoryPersistence --skipApiVersionCheck --silent \
    >"$AZURE_DIR/server.log" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE/azure.pid"
  await azure azure_ready "$HOST:$AZURE_PORT" "$AZURE_DIR/server.log"
  log "azure (Azurite $AZURITE_VERSION) ready on $HOST:$AZURE_PORT (pid $(<"$STATE/azure.pid"))"
}

# ---------------------------------------------------------------- commands

cmd_up() {
  local start=$SECONDS
  mkdir -p "$STATE"
  install_missing
  command -v java >/dev/null || die "java not found after install"
  # A failed `up` leaves nothing running behind it.
  trap 'rc=$?; if ((rc != 0)); then log "up failed; stopping the services"; cmd_down; fi' EXIT
  start_redis
  start_kafka
  python_env
  start_s3
  start_gcs
  start_azure
  trap - EXIT
  log "up in $((SECONDS - start))s; state in $STATE"
}

cmd_down() {
  stop azure
  stop gcs
  stop s3
  stop kafka
  stop redis
}

cmd_env() {
  echo "FEATURESTORE_TEST_REDIS_ADDR=$HOST:$REDIS_PORT"
  echo "FEATURESTORE_TEST_KAFKA_BROKERS=$HOST:$KAFKA_PORT"
  echo "FEATURESTORE_TEST_KAFKA_LIBS=$KAFKA_LIBS"
  echo "FEATURESTORE_TEST_PYTHON=$VENV/bin/python"
  echo "FEATURESTORE_TEST_S3_ENDPOINT=http://$HOST:$S3_PORT"
  echo "FEATURESTORE_TEST_GCS_ENDPOINT=http://$HOST:$GCS_PORT"
  echo "FEATURESTORE_TEST_AZURE_ENDPOINT=http://$HOST:$AZURE_PORT"
}

cmd_status() {
  local name pid rc=0
  for name in redis kafka s3 gcs azure; do
    pid=$(pid_of "$name")
    if [[ -n $pid ]]; then
      echo "$name: running (pid $pid)"
    else
      echo "$name: stopped"
      rc=1
    fi
  done
  return $rc
}

# lock: one `up` or `down` at a time per state dir (the daemons do not inherit
# the lock: they are started with 9>&-), so that two concurrent
# `make test` runs do not both start a broker on the same ports.
lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  if command -v flock >/dev/null && ! flock -w 600 9; then
    die "another .ci/services.sh holds $STATE/.lock"
  fi
}

[[ $# -eq 1 ]] || usage
case $1 in
  up) lock && cmd_up ;;
  down) lock && cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  *) usage ;;
esac
