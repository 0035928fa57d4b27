#!/usr/bin/env bash
# Set the link bandwidth of every node of the running cluster (tc tbf on both ends of each
# node's link, so each node sends and receives at most MBIT Mbit/s).
#   scripts/cluster/shape.sh MBIT      e.g. 200; 0 = unshaped
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

if [ $# != 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then cl_die "usage: shape.sh MBIT (a whole number of Mbit/s; 0 = unshaped)"; fi
cl_is_up || cl_die "no cluster is up in $CL_DIR (scripts/cluster/up.sh N)"
cl_shape "$1"
cl_log "links shaped to $1 Mbit/s (0 = unshaped)"
