"""The test cluster's shaped links after an idle: 1 MiB allreduces back to back and after a pause.

    python bench/experiments/link_burst.py [MBIT ...]      # root, from the checkout; default 50 200 1000

On 2 nodes of ``make cluster-test``'s cluster, plain mpi4py (no TensorFlow, no Horovod) times
30 allreduces of 1 MiB back to back, and 30 each after both ranks idled 30 ms (a barrier,
then a sleep: what a training step's compute does to the link). ``tc tbf`` fills its bucket
while the link idles and then passes that many bytes at once, so the second kind is faster
by about bucket ÷ rate; the allreduce sweep of ``bench allreduce`` (back to back) never
sees it. Prints rank 0's mean and median ms per case and the saving the bucket predicts. About a
minute per bandwidth (the worker is tcp_rendezvous.py's). Figures in docs/cluster.md (the scaling model).
"""
import json
import os
import sys

from cosmotrain.bench.cluster import cluster
from cosmotrain.placement import TCP_EAGER_LIMIT
from tcp_rendezvous import WORKER  # this folder: python puts it on the path

CASES = [["back_to_back", False, 0.0], ["after_30_ms_idle", True, 0.03]]


def main(mbits: list[int]) -> None:
    os.environ["OMPI_MCA_btl_tcp_eager_limit"] = str(TCP_EAGER_LIMIT)  # as cosmotrain runs (tcp_rendezvous.py)
    with cluster(2) as running:
        for mbit in mbits:
            burst = running.shape(mbit)
            found = running.srun(2, WORKER, json.dumps(CASES))[0]
            print(f"{mbit} Mbit/s, bucket {burst / 1e3:.0f} KB: ms {json.dumps(found)}; the bucket predicts "
                  f"{burst * 8 / (mbit * 1e6) * 1e3:.1f} ms saved after the idle", flush=True)
        running.shape(0)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [50, 200, 1000])
