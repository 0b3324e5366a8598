#!/usr/bin/env bash
# Start a real one-node SLURM cluster on this machine (Debian/Ubuntu, as root, no systemd needed):
# munged + slurmctld + slurmd, partitions `cpu` (default) and `gpu`, two fake GPUs as gres.
# It is the test bed of tests/cluster/ (the workflow submitted through `--executor slurm`), and a
# sandbox for trying profiles/slurm by hand. Stop it with scripts/slurm/stop_cluster.sh.
#
# Usage:  scripts/slurm/start_cluster.sh [STATE_DIR]
#         STATE_DIR defaults to $HAMFLOW_SLURM_DIR or /tmp/hamflow-slurm; it holds slurm.conf,
#         gres.conf, spool/state folders, daemon logs and `pids` (the daemons this script started).
# Exit:   0 cluster up (sinfo printed); 3 this machine cannot host it (not root, no apt-get, packages
#         not installable, a foreign slurm.conf or slurmctld present) with the reason on stderr;
#         anything else: a start-up failure, with the daemon log tails on stderr.
# No accounting daemon: use `slurm-status-command: squeue` (MinJobAge=600 keeps finished jobs
# visible to squeue/scontrol for 10 minutes).
set -euo pipefail

state_dir=${1:-${HAMFLOW_SLURM_DIR:-/tmp/hamflow-slurm}}
conf_dir=/etc/slurm # the job-step wrapper drops SLURM_CONF: configs must be at the default path

cannot_host() {
    echo "start_cluster: cannot host a test cluster here: $*" >&2
    exit 3
}

[ "$(id -u)" -eq 0 ] || cannot_host "not root (slurmd and munged need root)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || cannot_host "slurm-wlm/munge not installed and apt-get missing"
    echo "start_cluster: installing slurm-wlm and munge with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq slurm-wlm munge; } >"/tmp/hamflow-slurm-apt.log" 2>&1; then
        cannot_host "apt-get install slurm-wlm munge failed: $(tail -n 2 /tmp/hamflow-slurm-apt.log | tr '\n' ' ')"
    fi
fi

# Never take over a real cluster's configuration or daemons.
for name in slurm.conf gres.conf; do
    link=$conf_dir/$name
    if [ -e "$link" ] || [ -L "$link" ]; then
        [ -L "$link" ] && [ "$(readlink "$link")" = "$state_dir/etc/$name" ] ||
            cannot_host "$link exists and is not this harness's link (a real SLURM install?)"
    fi
done
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    cannot_host "a slurmctld/slurmd is already running (stop it first: scripts/slurm/stop_cluster.sh $state_dir)"
fi

mkdir -p "$state_dir"/{etc,state,spool,log,run,fakedev} "$conf_dir"
: >"$state_dir/pids"
# GNU nproc answers OMP_NUM_THREADS when set (tests/conftest.py sets it to 1): count the CPUs without it.
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
memory_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2)) # advertise half the RAM

# Fake GPU devices: gres needs File= entries, and slurmd accepts only device-like paths.
ln -sfn /dev/null "$state_dir/fakedev/nvidia0"
ln -sfn /dev/null "$state_dir/fakedev/nvidia1"

cat >"$state_dir/etc/slurm.conf" <<EOF
# Written by hamflow scripts/slurm/start_cluster.sh: one node, partitions cpu (default) and gpu.
ClusterName=hamflow-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
StateSaveLocation=$state_dir/state
SlurmdSpoolDir=$state_dir/spool
SlurmctldPidFile=$state_dir/run/slurmctld.pid
SlurmdPidFile=$state_dir/run/slurmd.pid
SlurmctldLogFile=$state_dir/log/slurmctld.log
SlurmdLogFile=$state_dir/log/slurmd.log
# Containers: no cgroups, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# Finished jobs stay visible to squeue/scontrol for 10 min (status polling without sacct).
MinJobAge=600
# Time-limit tests: SIGKILL follows the final SIGTERM after 10 s.
KillWait=10
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default memory per CPU every job takes the whole node's memory and jobs run one at a time.
DefMemPerCPU=500
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb Gres=gpu:fake:2 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost Default=NO MaxTime=INFINITE State=UP
EOF
cat >"$state_dir/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=localhost Name=gpu Type=fake File=$state_dir/fakedev/nvidia[0-1]
EOF
ln -sfn "$state_dir/etc/slurm.conf" "$conf_dir/slurm.conf"
ln -sfn "$state_dir/etc/gres.conf" "$conf_dir/gres.conf"

dump_logs() {
    for log in "$state_dir"/log/*.log /var/log/munge/munged.log; do
        [ -f "$log" ] && { echo "--- $log" && tail -n 20 "$log"; } >&2
    done
}

wait_for_pidfile() { # name pidfile
    local pid
    for _ in $(seq 50); do
        if [ -s "$2" ]; then
            pid=$(cat "$2")
            if kill -0 "$pid" 2>/dev/null; then
                echo "$1 $pid" >>"$state_dir/pids"
                return 0
            fi
        fi
        sleep 0.2
    done
    echo "start_cluster: $1 did not start" >&2
    dump_logs
    exit 1
}

# munge: reuse a running munged (not ours to stop), else start one and record its PID.
if ! munge -n >/dev/null 2>&1; then
    # munged runs as user munge and checks its paths' owners: keep Debian's /run/munge, /var/log/munge.
    install -d -o munge -g munge -m 0755 /run/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    wait_for_pidfile munged /run/munge/munged.pid
    for _ in $(seq 20); do munge -n >/dev/null 2>&1 && break || sleep 0.25; done
fi

rm -f "$state_dir/run/slurmctld.pid" "$state_dir/run/slurmd.pid"
/usr/sbin/slurmctld -i # -i: ignore state left by an earlier run of this harness
wait_for_pidfile slurmctld "$state_dir/run/slurmctld.pid"
/usr/sbin/slurmd -N localhost
wait_for_pidfile slurmd "$state_dir/run/slurmd.pid"

for _ in $(seq 100); do
    if sinfo -h -n localhost -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        sinfo
        exit 0
    fi
    sleep 0.2
done
echo "start_cluster: node localhost did not become idle" >&2
sinfo -N -l >&2 || true
dump_logs
exit 1
