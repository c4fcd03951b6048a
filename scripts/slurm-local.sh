#!/usr/bin/env bash
# slurm-local.sh: a real single-node SLURM cluster on loopback, for the integration tests and for
# trying the SLURM profile on one machine (Debian 12, root, no systemd needed).
#
#   scripts/slurm-local.sh start [--gpu]   install what is missing, write the configuration, start
#                                          munged, MariaDB, slurmdbd, slurmctld and slurmd
#   scripts/slurm-local.sh stop            stop the daemons that this script started, no others
#   scripts/slurm-local.sh status          which daemons run, who started them, and `sinfo`
#
# `--gpu` advertises one fake GPU (GRES gpu:fake:1 backed by /dev/null), so that `gpu: 1` requests
# are scheduled for real; `start` without it switches back. Both are idempotent: a second `start`
# installs nothing, starts nothing and returns in about a second.
#
# Accounting runs through slurmdbd + MariaDB because the Snakemake SLURM plugin polls job states with
# `sacct` by default, and without a database that poll fails and the workflow waits forever
# (snakemake-executor-plugin-slurm issue #38). The recipe and its pitfalls:
# ../shared/notes/slurm-local.md.
#
# Exit status: 0 done; 1 something failed; 3 this machine cannot run it (not root, no apt-get, the
# packages cannot be installed, a SLURM configuration that this script did not write). Tests skip
# on 3 and print the reason.
#
# Settings (environment): SLURM_LOCAL_ACCOUNT (default scalinglab) is the account created for the
# calling user; SLURM_LOCAL_PARTITION (default local) is the one partition; SLURM_LOCAL_TIMEOUT
# (default 30) bounds every SLURM call in seconds; SLURM_LOCAL_APT_TIMEOUT (default 300) bounds
# the package installation.
set -euo pipefail

ACCOUNT=${SLURM_LOCAL_ACCOUNT:-scalinglab}
PARTITION=${SLURM_LOCAL_PARTITION:-local}
CALL_TIMEOUT=${SLURM_LOCAL_TIMEOUT:-30}
APT_TIMEOUT=${SLURM_LOCAL_APT_TIMEOUT:-300}
CLUSTER=scalinglab
NODE=localhost
DB_PASS=slurmlocal # a loopback-only test database
MARK="# written by scalinglab scripts/slurm-local.sh"
STATE=/run/scalinglab-slurm
STARTED=$STATE/started # one daemon name per line: the ones this script started

# name -> pidfile; the name is also the process name in /proc/PID/comm
declare -A PIDFILE=(
  [munged]=/run/munge/munged.pid
  [mariadbd]=/run/mysqld/mysqld.pid
  [slurmdbd]=/run/slurmdbd.pid
  [slurmctld]=/run/slurmctld.pid
  [slurmd]=/run/slurmd.pid
)
STOP_ORDER=(slurmd slurmctld slurmdbd mariadbd munged)

log() { echo "[slurm-local] $*" >&2; }
cannot() { log "cannot run here: $*"; exit 3; }
t() { timeout -k 5 "$CALL_TIMEOUT" "$@"; } # every SLURM (and database) call goes through this

# Is daemon $1 running? Checked by the PID in its pidfile and the process name, so that a stale
# pidfile whose PID was reused does not count.
alive() {
  local pidfile=${PIDFILE[$1]} pid
  [ -s "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ]
}

ours() { [ -f "$STARTED" ] && grep -qx "$1" "$STARTED"; }
mark_ours() { mkdir -p "$STATE" && { ours "$1" || echo "$1" >>"$STARTED"; }; }
unmark() { [ -f "$STARTED" ] && sed -i "/^$1\$/d" "$STARTED" || true; }

wait_for() { # wait_for SECONDS WHAT CMD...
  local secs=$1 what=$2
  shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$end" ]; then
      log "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# Start daemon $1 with the command that follows, unless it already runs (then it is left as is and
# not taken for ours).
start_daemon() {
  local name=$1
  shift
  alive "$name" && return 0
  rm -f "${PIDFILE[$name]}"
  t "$@"
  wait_for 30 "$name pidfile" alive "$name"
  mark_ours "$name"
  log "started $name ($(cat "${PIDFILE[$name]}"))"
}

# Stop daemon $1 if this script started it: SIGTERM by PID, then wait for /proc/PID to go (slurmctld
# removes its pidfile before it exits, so the pidfile cannot be the thing waited on).
stop_daemon() {
  local name=$1 pid
  if ! ours "$name"; then return 0; fi
  if alive "$name"; then
    pid=$(cat "${PIDFILE[$name]}")
    kill "$pid"
    local end=$((SECONDS + 30))
    while [ -e "/proc/$pid" ]; do
      if [ "$SECONDS" -ge "$end" ]; then
        log "$name ($pid) still runs 30 s after SIGTERM; sending SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
    log "stopped $name ($pid)"
  fi
  unmark "$name"
}

# --- packages -----------------------------------------------------------------------------------
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null || cannot "SLURM is not installed and there is no apt-get"
  log "installing ${missing[*]} (at most ${APT_TIMEOUT}s)"
  # Keep the packages' init scripts from starting system-wide daemons during the installation: the
  # daemons started here are the ones this script can account for and stop.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && own_policy=1
  fi
  local rc=0
  export DEBIAN_FRONTEND=noninteractive
  timeout -k 10 "$APT_TIMEOUT" apt-get update -qq >/dev/null 2>&1 || true
  timeout -k 10 "$APT_TIMEOUT" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >"$STATE/apt.log" 2>&1 || rc=$?
  [ "$own_policy" = 1 ] && rm -f "$policy"
  if [ "$rc" -ne 0 ]; then
    tail -n 5 "$STATE/apt.log" >&2 || true
    cannot "apt-get install ${missing[*]} failed (exit $rc; log in $STATE/apt.log)"
  fi
}

# --- configuration --------------------------------------------------------------------------------
# Refuse to overwrite a configuration that someone else wrote: this machine may be a real node.
check_ours() {
  local f
  for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf /etc/slurm/gres.conf; do
    if [ -s "$f" ] && ! head -n 1 "$f" | grep -qxF "$MARK"; then
      cannot "$f exists and was not written by this script"
    fi
  done
}

slurm_conf() { # slurm_conf FAKE_GPU
  local cpus mem_mb gres_types="" gres_node=""
  cpus=$(nproc)
  # the node must not claim more memory than the machine has, or slurmd marks it invalid
  mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
  if [ "$1" = 1 ]; then
    gres_types="GresTypes=gpu"
    gres_node=" Gres=gpu:fake:1"
  fi
  cat <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job that gives no --mem takes the whole node and jobs run one at a time
DefMemPerCPU=500
ReturnToService=2
# squeue keeps finished jobs this long; the plugin's squeue mode needs 3x its first poll delay
MinJobAge=300
# seconds between SIGTERM and SIGKILL at a time limit or cancel: the trainer saves in this window
KillWait=30
MailProg=/bin/true
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=${PIDFILE[slurmctld]}
SlurmdPidFile=${PIDFILE[slurmd]}
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
$gres_types
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus RealMemory=$mem_mb$gres_node State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

slurmdbd_conf() {
  cat <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=${PIDFILE[slurmdbd]}
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
}

# Write file $1 with the text on stdin when it differs; returns 0 when it changed.
write_if_changed() {
  local new
  new=$(cat)
  if [ -f "$1" ] && [ "$new" = "$(cat "$1")" ]; then return 1; fi
  printf '%s\n' "$new" >"$1"
  return 0
}

# --- start ------------------------------------------------------------------------------------------
start() {
  local fake_gpu=$1
  [ "$(id -u)" = 0 ] || cannot "must run as root (it installs packages and starts system daemons)"
  [ -r /etc/debian_version ] || cannot "not a Debian system (the packages come from apt)"
  mkdir -p "$STATE"
  check_ours
  install_packages

  # munge: the authentication every SLURM daemon and client uses
  install -d -o munge -g munge -m 0755 /run/munge
  [ -s /etc/munge/munge.key ] || t mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 0600 /etc/munge/munge.key
  start_daemon munged runuser -u munge -- /usr/sbin/munged
  wait_for 10 munged bash -c 'munge -n | unmunge'

  # configuration; a changed slurm.conf (GPU mode switched) needs a restart of both daemons
  install -d /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  local changed=0
  slurm_conf "$fake_gpu" | write_if_changed /etc/slurm/slurm.conf && changed=1
  if [ "$fake_gpu" = 1 ]; then
    printf '%s\nAutoDetect=off\nNodeName=%s Name=gpu Type=fake File=/dev/null\n' "$MARK" "$NODE" |
      write_if_changed /etc/slurm/gres.conf || true
  else
    rm -f /etc/slurm/gres.conf
  fi
  if [ "$changed" = 1 ]; then
    log "wrote /etc/slurm/slurm.conf (fake GPU: $fake_gpu)"
    local d
    for d in slurmd slurmctld; do
      if alive "$d" && ! ours "$d"; then
        cannot "$d runs but was not started by this script; it would keep the old configuration"
      fi
      stop_daemon "$d"
    done
  fi

  # MariaDB + slurmdbd, so that sacct works
  install -d -o mysql -g mysql /run/mysqld
  if [ ! -d /var/lib/mysql/mysql ]; then
    timeout 120 mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  if ! alive mariadbd; then
    rm -f "${PIDFILE[mariadbd]}"
    setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 \
      --pid-file="${PIDFILE[mariadbd]}" \
      --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
      </dev/null >>/var/log/mariadbd-slurm-local.log 2>&1 &
    wait_for 60 "mariadbd pidfile" alive mariadbd
    mark_ours mariadbd
    log "started mariadbd ($(cat "${PIDFILE[mariadbd]}"))"
  fi
  wait_for 60 mariadb t mariadb-admin ping
  # ALTER USER as well: CREATE USER IF NOT EXISTS keeps an old password, and slurmdbd then loops
  # on "Access denied" without ever opening its port
  t mariadb -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
  slurmdbd_conf | write_if_changed /etc/slurm/slurmdbd.conf || true
  chmod 0600 /etc/slurm/slurmdbd.conf # slurmdbd refuses a file others can read
  start_daemon slurmdbd /usr/sbin/slurmdbd
  wait_for 60 slurmdbd t sacctmgr -n list cluster
  local me
  me=$(id -un)
  t sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" ||
    t sacctmgr -i add cluster "$CLUSTER" >/dev/null
  t sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" ||
    t sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=scalinglab \
      Organization=scalinglab >/dev/null
  t sacctmgr -n -P list assoc user="$me" account="$ACCOUNT" format=account | grep -q . ||
    t sacctmgr -i add user "$me" Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null

  # controller and node
  start_daemon slurmctld /usr/sbin/slurmctld
  wait_for 30 slurmctld t scontrol ping
  start_daemon slurmd /usr/sbin/slurmd -N "$NODE"
  if ! wait_for 30 "node $NODE idle" node_ready; then
    t scontrol update NodeName="$NODE" State=RESUME || true
    wait_for 15 "node $NODE idle" node_ready || {
      t sinfo -R >&2 || true
      exit 1
    }
  fi
  log "ready: $(t sinfo -h -o '%P %a %D %T %N %G'); account $ACCOUNT"
}

node_ready() { t sinfo -h -n "$NODE" -o '%T' | grep -qE '^(idle|mixed|allocated|completing)$'; }

# --- stop / status ----------------------------------------------------------------------------------
stop() {
  if [ ! -s "$STARTED" ]; then
    log "nothing to stop (no daemon was started by this script)"
    return 0
  fi
  # cancel what is left, so that no job step outlives slurmd
  if ours slurmctld && alive slurmctld; then
    t squeue -h -o %i 2>/dev/null | xargs -r timeout "$CALL_TIMEOUT" scancel 2>/dev/null || true
  fi
  local d
  for d in "${STOP_ORDER[@]}"; do stop_daemon "$d"; done
  rm -f "$STARTED"
}

status() {
  local d ok=0 who
  for d in "${STOP_ORDER[@]}"; do
    who=$(ours "$d" && echo "started by this script" || echo "not started by this script")
    if alive "$d"; then
      echo "$d: running ($(cat "${PIDFILE[$d]}"), $who)"
    else
      echo "$d: stopped"
    fi
  done
  if [ -f /etc/slurm/gres.conf ]; then echo "fake GPU: on"; else echo "fake GPU: off"; fi
  if alive slurmctld && node_ready; then
    t sinfo -o '%P %a %D %T %N %G' || true
  else
    ok=1
  fi
  return $ok
}

usage() {
  echo "usage: $0 start [--gpu] | stop | status" >&2
  exit 2
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
start)
  gpu=0
  for arg in "$@"; do
    case "$arg" in
    --gpu) gpu=1 ;;
    *) usage ;;
    esac
  done
  start "$gpu"
  ;;
stop) [ $# -eq 0 ] || usage && stop ;;
status) [ $# -eq 0 ] || usage && status ;;
*) usage ;;
esac
