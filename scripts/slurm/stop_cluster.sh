#!/usr/bin/env bash
# Stop the cluster that scripts/slurm/start_cluster.sh started: cancel its jobs, stop the daemons it
# recorded in STATE_DIR/pids (by PID, newest first), remove its /etc/slurm links. Safe to run twice.
#
# Usage:  scripts/slurm/stop_cluster.sh [STATE_DIR]   (same default as start_cluster.sh)
set -uo pipefail

state_dir=${1:-${HAMFLOW_SLURM_DIR:-/tmp/hamflow-slurm}}
pids_file=$state_dir/pids
[ -f "$pids_file" ] || {
    echo "stop_cluster: nothing recorded in $pids_file" >&2
    exit 0
}

# Jobs first (snakemake does not scancel its jobs when it is stopped), while slurmctld still runs.
if grep -q '^slurmctld ' "$pids_file"; then
    job_ids=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')
    if [ -n "${job_ids// /}" ]; then
        echo "stop_cluster: scancel $job_ids" >&2
        # shellcheck disable=SC2086
        scancel $job_ids 2>/dev/null
        for _ in $(seq 40); do
            [ -z "$(squeue -h -t RUNNING,COMPLETING,PENDING -o %A 2>/dev/null)" ] && break
            sleep 0.25
        done
    fi
fi

# Daemons in reverse start order (slurmd, slurmctld, munged), each by its recorded PID.
tac "$pids_file" | while read -r name pid; do
    [ -n "${pid:-}" ] || continue
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
            echo "stop_cluster: $name (pid $pid) killed after 10 s" >&2
        else
            echo "stop_cluster: stopped $name (pid $pid)" >&2
        fi
    fi
done
: >"$pids_file"

for name in slurm.conf gres.conf; do
    link=/etc/slurm/$name
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$state_dir/etc/$name" ]; then
        rm -f "$link"
    fi
done
exit 0
