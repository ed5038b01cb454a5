#!/usr/bin/env bash
# Single-node SLURM test cluster on loopback, for exercising the workflow's
# `profiles/slurm` profile (snakemake-executor-plugin-slurm) on one machine.
#
#   scripts/slurm-cluster.sh up      install (if needed), configure, start, smoke-test
#   scripts/slurm-cluster.sh down    stop slurmd, slurmctld, munged (idempotent)
#   scripts/slurm-cluster.sh status  daemons + sinfo; exit 0 iff the cluster is usable
#
# Target: Debian 12 (SLURM 22.05, munge 0.5.15), run as root, no systemd needed.
# Daemons listen on 127.0.0.1 only.  No accounting (slurmdbd) is set up, so use
# the profile's `slurm-status-command: squeue`; see profiles/slurm/README.md.
#
# Environment:
#   WQ_SLURM_DIR          state/spool/pid/log directory  [/var/lib/whisperquant-slurm]
#   WQ_SLURM_PARTITION    name of the single partition   [cpu]
#   WQ_SLURM_UP_TIMEOUT   seconds to wait for the node   [60]
#   WQ_SLURM_FORCE=1      overwrite an /etc/slurm/slurm.conf this script did not write
#
# The config must live at /etc/slurm/slurm.conf: the slurm jobstep plugin strips
# SLURM_* variables (SLURM_CONF included) before its inner `srun`, which then
# only finds the compiled-in default path.
set -euo pipefail

readonly CONF=/etc/slurm/slurm.conf
readonly BASE_DIR="${WQ_SLURM_DIR:-/var/lib/whisperquant-slurm}"
readonly LOG_DIR="$BASE_DIR/log"
readonly RUN_DIR="$BASE_DIR/run"
readonly STATE_DIR="$BASE_DIR/state"
readonly SPOOL_DIR="$BASE_DIR/spool"
readonly LOCK_FILE="$BASE_DIR/.lock"
readonly PARTITION="${WQ_SLURM_PARTITION:-cpu}"
readonly UP_TIMEOUT="${WQ_SLURM_UP_TIMEOUT:-60}"
readonly MARKER="# Managed by whisperquant scripts/slurm-cluster.sh"

readonly MUNGE_RUN=/run/munge
readonly MUNGE_PID="$MUNGE_RUN/munged.pid"
readonly MUNGE_KEY=/etc/munge/munge.key
readonly MUNGE_LOG_DIR=/var/log/munge
readonly MUNGE_LOG="$MUNGE_LOG_DIR/munged.log"
readonly CTLD_PID="$RUN_DIR/slurmctld.pid"
readonly SLURMD_PID="$RUN_DIR/slurmd.pid"
readonly CTLD_LOG="$LOG_DIR/slurmctld.log"
readonly SLURMD_LOG="$LOG_DIR/slurmd.log"
readonly PACKAGES=(slurmctld slurmd slurm-client munge)

# Client commands must read /etc/slurm/slurm.conf, not an inherited config,
# and must not pick up job context when this runs inside a SLURM job.
unset SLURM_CONF SLURM_JOB_ID SLURM_JOBID

NODE="$(hostname -s)"
readonly NODE

say() { printf '[slurm-cluster] %s\n' "$*"; }
warn() { printf '[slurm-cluster] WARNING: %s\n' "$*" >&2; }

show_logs() {
    local f
    {
        printf '[slurm-cluster] logs: %s %s %s (config: %s)\n' "$CTLD_LOG" "$SLURMD_LOG" "$MUNGE_LOG" "$CONF"
        for f in "$CTLD_LOG" "$SLURMD_LOG" "$MUNGE_LOG"; do
            if [[ -s "$f" ]]; then
                printf -- '--- last lines of %s ---\n' "$f"
                tail -n 15 "$f" || true
            fi
        done
    } >&2
}

die() {
    printf '[slurm-cluster] ERROR: %s\n' "$*" >&2
    show_logs
    exit 1
}

now_ms() { date +%s%3N; }

elapsed() { # elapsed START_MS -> "12.345 s"
    local d=$(($(now_ms) - $1))
    printf '%d.%03d s' $((d / 1000)) $((d % 1000))
}

# PIDs of live (non-zombie) processes whose command name is exactly $1
# (no procps needed).
pids_by_name() {
    local f pid comm stat
    for f in /proc/[0-9]*/comm; do
        pid="${f#/proc/}"
        pid="${pid%/comm}"
        { read -r comm <"$f"; } 2>/dev/null || continue
        [[ "$comm" == "$1" ]] || continue
        { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || continue
        stat="${stat##*) }"
        [[ "${stat:0:1}" == Z ]] && continue
        printf '%s\n' "$pid"
    done
}

# Signal every process named exactly $2 with signal $1.  Never fails.
kill_by_name() {
    local pids
    pids="$(pids_by_name "$2" | tr '\n' ' ')"
    if [[ -n "${pids// /}" ]]; then
        # shellcheck disable=SC2086 # word splitting of the pid list is intended
        kill "-$1" $pids 2>/dev/null || true
    fi
}

# daemon_pid NAME PIDFILE: print the PID of the running daemon, or fail.
daemon_pid() {
    local name="$1" pidfile="$2" pid=""
    if [[ -r "$pidfile" ]]; then
        pid="$(tr -dc '0-9' <"$pidfile")"
        if [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == "$name" ]]; then
            printf '%s\n' "$pid"
            return 0
        fi
    fi
    pid="$(pids_by_name "$name" | head -n 1)"
    [[ -n "$pid" ]] || return 1
    printf '%s\n' "$pid"
}

is_running() { daemon_pid "$1" "$2" >/dev/null; }

need_root() {
    [[ "${EUID:-$(id -u)}" -eq 0 ]] || die "must run as root (writes $CONF, starts daemons)"
}

# ---------------------------------------------------------------- install ---

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get (Debian 12 expected)"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # apt-get update only when the package lists do not know the packages yet.
    local apt_log="$LOG_DIR/apt.log"
    if ! apt-cache show --no-all-versions "${missing[@]}" >/dev/null 2>&1; then
        timeout 180 apt-get update -qq >"$apt_log" 2>&1 || die "apt-get update failed, see $apt_log"
    fi
    timeout 300 apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1 ||
        die "apt-get install ${missing[*]} failed, see $apt_log"
}

# ------------------------------------------------------------------ munge ---

munge_works() { timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }

start_munge() {
    if [[ ! -s "$MUNGE_KEY" ]]; then
        say "creating munge key $MUNGE_KEY"
        mkdir -p "$(dirname "$MUNGE_KEY")"
        timeout 30 mungekey --create --keyfile="$MUNGE_KEY" || die "mungekey --create failed"
    fi
    chown munge:munge "$(dirname "$MUNGE_KEY")" "$MUNGE_KEY"
    chmod 0700 "$(dirname "$MUNGE_KEY")"
    chmod 0600 "$MUNGE_KEY"

    if is_running munged "$MUNGE_PID" && munge_works; then
        say "munged already running (pid $(daemon_pid munged "$MUNGE_PID"))"
        return 0
    fi
    if is_running munged "$MUNGE_PID"; then
        warn "munged runs but credentials fail; restarting it"
        stop_daemon munged "$MUNGE_PID"
    fi
    mkdir -p "$MUNGE_RUN" "$MUNGE_LOG_DIR" /var/lib/munge
    chown munge:munge "$MUNGE_RUN" "$MUNGE_LOG_DIR" /var/lib/munge
    chmod 0755 "$MUNGE_RUN"
    chmod 0700 "$MUNGE_LOG_DIR"
    # Stale socket/lock from an unclean stop would make munged refuse to start.
    rm -f "$MUNGE_RUN/munge.socket.2" "$MUNGE_RUN/munge.socket.2.lock" "$MUNGE_PID"
    timeout 15 runuser -u munge -- munged 9>&- || die "munged failed to start"
    local deadline=$((SECONDS + 10))
    until munge_works; do
        ((SECONDS < deadline)) || die "munged started but 'munge -n | unmunge' fails"
        sleep 0.2
    done
    say "munged started (pid $(daemon_pid munged "$MUNGE_PID"))"
}

# ----------------------------------------------------------------- config ---

render_config() {
    local node_line real margin
    node_line="$(timeout 20 slurmd -C 2>/dev/null | grep '^NodeName=' | head -n 1)" ||
        die "'slurmd -C' failed to report the node's hardware"
    real="${node_line##*RealMemory=}"
    real="${real%% *}"
    [[ "$real" =~ ^[0-9]+$ ]] || die "cannot parse RealMemory from: $node_line"
    # Stay below what the kernel reports, so the node never drains with
    # "Low RealMemory" when free memory fluctuates: 5 %, at least 512 MB.
    margin=$((real / 20))
    ((margin >= 512)) || margin=512
    ((real > margin)) || die "node reports only ${real} MB of memory"
    node_line="${node_line/RealMemory=$real/RealMemory=$((real - margin))}"

    cat <<EOF
$MARKER
# Loopback single-node test cluster.  Regenerated by 'up'; do not edit by hand.
ClusterName=whisperquant
SlurmctldHost=${NODE}(127.0.0.1)
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
# Reject at submit time jobs no node/partition can ever run (e.g. more CPUs
# than the node has) instead of leaving them PENDING forever.
EnforcePartLimits=ALL
# Finished jobs stay visible to squeue for 300 s: the executor plugin's
# 'squeue' status command needs MinJobAge >= 3 x its initial status delay.
MinJobAge=300
InactiveLimit=0
KillWait=30
Waittime=0
SlurmctldTimeout=120
SlurmdTimeout=300
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info
# No GRES: this test cluster has no GPUs.
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

# write_config: prints "changed" when $CONF was (re)written.
write_config() {
    local tmp
    tmp="$(mktemp)"
    render_config >"$tmp"
    if [[ -f "$CONF" ]] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
        return 0
    fi
    if [[ -f "$CONF" ]] && ! grep -qxF "$MARKER" "$CONF" && [[ "${WQ_SLURM_FORCE:-0}" != 1 ]]; then
        rm -f "$tmp"
        die "$CONF exists and was not written by this script; refusing to overwrite (set WQ_SLURM_FORCE=1)"
    fi
    mkdir -p "$(dirname "$CONF")"
    install -m 0644 "$tmp" "$CONF"
    rm -f "$tmp"
    echo changed
}

# ---------------------------------------------------------------- daemons ---

# stop_daemon NAME PIDFILE: TERM, wait up to 15 s, then KILL.  Never fails.
stop_daemon() {
    local name="$1" pidfile="$2" pids=() pid deadline
    while read -r pid; do
        [[ -n "$pid" ]] && pids+=("$pid")
    done < <({ daemon_pid "$name" "$pidfile" || true; pids_by_name "$name"; } | sort -u)
    if ((${#pids[@]} == 0)); then
        say "$name not running"
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "${pids[@]}" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while [[ -n "$(pids_by_name "$name")" ]] && ((SECONDS < deadline)); do
        sleep 0.2
    done
    if [[ -n "$(pids_by_name "$name")" ]]; then
        warn "$name did not stop on SIGTERM; sending SIGKILL"
        kill_by_name KILL "$name"
        sleep 0.5
    fi
    rm -f "$pidfile"
    say "$name stopped (pid ${pids[*]})"
}

ctld_up() { timeout 10 scontrol ping 2>/dev/null | grep -q ' is UP'; }

start_slurmctld() {
    if is_running slurmctld "$CTLD_PID"; then
        say "slurmctld already running (pid $(daemon_pid slurmctld "$CTLD_PID"))"
        return 0
    fi
    timeout 30 slurmctld 9>&- || die "slurmctld failed to start"
    local deadline=$((SECONDS + 30))
    until ctld_up; do
        is_running slurmctld "$CTLD_PID" || die "slurmctld exited right after start"
        ((SECONDS < deadline)) || die "slurmctld does not answer 'scontrol ping' after 30 s"
        sleep 0.5
    done
    say "slurmctld started (pid $(daemon_pid slurmctld "$CTLD_PID"))"
}

start_slurmd() {
    if is_running slurmd "$SLURMD_PID"; then
        say "slurmd already running (pid $(daemon_pid slurmd "$SLURMD_PID"))"
        return 0
    fi
    timeout 30 slurmd 9>&- || die "slurmd failed to start"
    sleep 0.3
    is_running slurmd "$SLURMD_PID" || die "slurmd exited right after start"
    say "slurmd started (pid $(daemon_pid slurmd "$SLURMD_PID"))"
}

node_state() { timeout 10 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }

wait_node_ready() {
    local deadline=$((SECONDS + UP_TIMEOUT)) state resumed=0
    while :; do
        state="$(node_state || true)"
        case "$state" in
            idle | mixed | allocated | completing) break ;;
            drain* | down*)
                if ((resumed == 0)); then
                    say "node $NODE is '$state'; resuming it"
                    timeout 10 scontrol update NodeName="$NODE" State=RESUME || true
                    resumed=1
                fi
                ;;
        esac
        ((SECONDS < deadline)) || die "node $NODE not usable after ${UP_TIMEOUT} s (state: '${state:-unknown}')"
        sleep 0.5
    done
    say "node $NODE is $state"
    if [[ "$state" == allocated || "$state" == completing ]]; then
        # A busy node would make the smoke job queue behind real jobs.
        say "node busy: smoke test skipped"
        return 0
    fi
    # End-to-end smoke test: allocation, munge credential, slurmstepd.
    timeout 60 srun --job-name=wq-smoke -N1 -n1 --mem=64 -t 1 -p "$PARTITION" true ||
        die "smoke test 'srun -N1 true' failed"
    say "smoke test 'srun -N1 true' passed"
}

# --------------------------------------------------------------- commands ---

cmd_up() {
    local t0 changed
    t0="$(now_ms)"
    need_root
    mkdir -p "$BASE_DIR"
    # Serialize concurrent 'up'/'down' calls.  Daemons are started with fd 9
    # closed, else they would inherit (and hold) the lock forever.
    exec 9>"$LOCK_FILE"
    flock -w 120 9 || die "another slurm-cluster.sh holds $LOCK_FILE"

    mkdir -p "$LOG_DIR" "$RUN_DIR" "$STATE_DIR" "$SPOOL_DIR"
    install_packages
    start_munge
    changed="$(write_config)"
    if [[ "$changed" == changed ]]; then
        say "wrote $CONF"
        if is_running slurmctld "$CTLD_PID" || is_running slurmd "$SLURMD_PID"; then
            say "config changed: restarting slurmctld and slurmd"
            stop_daemon slurmd "$SLURMD_PID"
            stop_daemon slurmctld "$CTLD_PID"
        fi
    else
        say "$CONF unchanged"
    fi
    start_slurmctld
    start_slurmd
    wait_node_ready
    timeout 10 sinfo || true
    say "cluster up in $(elapsed "$t0") (logs: $LOG_DIR)"
}

cmd_down() {
    local jobs
    if mkdir -p "$BASE_DIR" 2>/dev/null && { exec 9>"$LOCK_FILE"; } 2>/dev/null; then
        flock -w 30 9 || warn "could not lock $LOCK_FILE; stopping anyway"
    fi
    if command -v squeue >/dev/null && is_running slurmctld "$CTLD_PID" && ctld_up; then
        jobs="$(timeout 10 squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING -o '%i' 2>/dev/null | tr '\n' ' ' || true)"
        if [[ -n "${jobs// /}" ]]; then
            say "cancelling jobs: $jobs"
            # shellcheck disable=SC2086 # word splitting of the id list is intended
            timeout 20 scancel $jobs || true
            sleep 2
        fi
    fi
    stop_daemon slurmd "$SLURMD_PID"
    stop_daemon slurmctld "$CTLD_PID"
    # Job steps survive slurmd; on a throwaway cluster they go too.
    kill_by_name TERM slurmstepd
    stop_daemon munged "$MUNGE_PID"
    say "cluster down"
}

cmd_status() {
    local ok=0 d pidfile
    for d in munged slurmctld slurmd; do
        case "$d" in
            munged) pidfile="$MUNGE_PID" ;;
            slurmctld) pidfile="$CTLD_PID" ;;
            slurmd) pidfile="$SLURMD_PID" ;;
        esac
        if is_running "$d" "$pidfile"; then
            say "$d: running (pid $(daemon_pid "$d" "$pidfile"))"
        else
            say "$d: not running"
            ok=1
        fi
    done
    if ! command -v sinfo >/dev/null; then
        say "sinfo: not installed"
        return 1
    fi
    if ((ok == 0)) && ctld_up; then
        timeout 10 sinfo || ok=1
        case "$(node_state || true)" in
            idle | mixed | allocated | completing) ;;
            *) ok=1 ;;
        esac
    else
        say "slurmctld does not answer (scontrol ping)"
        ok=1
    fi
    if ((ok == 0)); then
        say "cluster usable"
    else
        say "cluster NOT usable (logs: $LOG_DIR, $MUNGE_LOG)"
    fi
    return "$ok"
}

main() {
    case "${1:-}" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        *)
            printf 'usage: %s up|down|status\n' "${0##*/}" >&2
            exit 2
            ;;
    esac
}

main "$@"
