# shellcheck shell=bash
# The slurm.conf lines the one-node test cluster (scripts/slurm) and the multi-node one
# (scripts/cluster) share; each appends its own nodes, partition and timeouts.
#
# slurm_conf_common NAME CONTROLLER PORT DIR SPOOL_SUBDIR SLURMD_TAG KILLWAIT
#   SPOOL_SUBDIR and SLURMD_TAG tell one slurmd's files from another's ("/%n" and ".%n"
#   with several nodes on one machine, empty with one).
slurm_conf_common() {
  cat <<CONF
ClusterName=$1
SlurmctldHost=$2
SlurmctldPort=$3
SlurmdPort=$(($3 + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays a requeued job's restart (default 120 s); 20 s keeps tests short.
AuthInfo=socket=$4/munge/munge.sock,cred_expire=20
StateSaveLocation=$4/ctld
SlurmdSpoolDir=$4/spool$5
SlurmctldPidFile=$4/slurmctld.pid
SlurmdPidFile=$4/slurmd$6.pid
SlurmctldLogFile=$4/log/slurmctld.log
SlurmdLogFile=$4/log/slurmd$6.log
# No cgroup.conf and no cgroup plugins: this host has no systemd (see ENVIRONMENT.md).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=$7
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerParameters=sched_interval=2
CONF
}
