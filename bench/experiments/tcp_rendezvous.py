"""Two ranks over TCP: back-to-back allreduces under Open MPI's default and cosmotrain's eager limit.

    python bench/experiments/tcp_rendezvous.py [MBIT]      # root, from the checkout; default 50

On 2 nodes of ``make cluster-test``'s cluster (links shaped to MBIT Mbit/s), plain mpi4py
(no TensorFlow, no Horovod) times 30 allreduces of 1 MiB back to back and 30 with a barrier
before each, once with Open MPI's eager limit (64 KB) and once with cosmotrain's
(``placement.TCP_EAGER_LIMIT``). Above the limit a message waits for the receiver's
clear-to-send, which on 2 ranks queues behind the receiver's own data in the same TCP
stream; back to back the exchange then runs one way after the other. Prints rank 0's mean
and median ms per case. About 1 minute. Figures in docs/cluster.md (the scaling model).
"""
import json
import os
import sys

from cosmotrain.bench.cluster import cluster
from cosmotrain.placement import TCP_EAGER_LIMIT

WORKER = r'''
import json, statistics, sys, time
import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
x = np.ones(262144, np.float32)
y = np.empty_like(x)
comm.Allreduce(x, y)
out = {}
for case, barrier, pause in json.loads(sys.argv[1]):
    times = []
    for _ in range(30):
        if barrier:
            comm.Barrier()
        time.sleep(pause)
        start = time.perf_counter()
        comm.Allreduce(x, y)
        times.append(1e3 * (time.perf_counter() - start))
    out[case] = {"mean_ms": round(statistics.fmean(times), 1), "median_ms": round(statistics.median(times), 1)}
if comm.Get_rank() == 0:
    print(json.dumps(out))
'''  # 1 MiB allreduces of 2 ranks: [case, barrier first, seconds idle first] each (argv[1], JSON); link_burst.py too
CASES = [["back_to_back", False, 0.0], ["barrier_first", True, 0.0]]


def main(mbit: int) -> None:
    with cluster(2) as running:
        running.shape(mbit)
        for limit in (65536, TCP_EAGER_LIMIT):
            os.environ["OMPI_MCA_btl_tcp_eager_limit"] = str(limit)
            found = running.srun(2, WORKER, json.dumps(CASES))[0]
            print(f"{mbit} Mbit/s, eager limit {limit} B:", json.dumps(found), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
