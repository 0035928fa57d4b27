"""Compute and communication on one core: each slowed by the other, on the 2-node test cluster.

    python bench/experiments/shared_core.py [MBITS]      # root, from the checkout; e.g. 200,1000

On each of 2 nodes (one rank, one core; ``make cluster-test``'s cluster, links shaped to
each of MBITS, default 200,1000 Mbit/s), twice per bandwidth: the classifier's compute-only
steps timed in a one-rank job of their own (``srun --mpi=none``: no Horovod beside them);
then, as a 2-node Horovod job, those steps timed with Horovod idle (its background thread
still meets the other rank every cycle), a 1 MiB Horovod allreduce timed alone and while
the rank's core runs the steps in a second thread, and the steps timed while 40 such
allreduces run. Prints the medians in ms (rank 0's for the job). About 3 minutes.
``HOROVOD_CYCLE_TIME=10`` exported changes Horovod's cycle from 1 ms for the whole run.
Figures in docs/cluster.md (P8).
"""
import json
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(alone: bool = False) -> None:
    sys.setswitchinterval(5e-4)  # the two Python threads take turns quickly (see feed.SWITCH_INTERVAL)
    from cosmotrain import dist
    from cosmotrain.bench.cluster import leave_job_step

    if alone:  # srun --mpi=none
        leave_job_step()

    ctx = dist.init_horovod(threads=1)
    import tensorflow as tf

    from cosmotrain.bench.step import IMAGE, bare_loop, bench_config, memory_batches, quiet_logs
    from cosmotrain.models.classifier import build_classifier

    quiet_logs()
    cfg = bench_config(batch=32)
    compute = bare_loop(build_classifier(cfg.model, (IMAGE, IMAGE, 3)), memory_batches(5, 32, seed=1 + ctx.rank))
    if alone:
        compute()
        median = statistics.median(compute()[0] for _ in range(20))
        print(json.dumps({"compute_without_horovod_ms": round(1e3 * median, 1)}))
        return
    x = tf.zeros([262144], tf.float32)
    reduce = tf.function(lambda v: dist.allreduce_mean(v, name="probe"), autograph=False)
    compute(), reduce(x)

    def reduces(n: int) -> float:
        times = []
        for _ in range(n):
            dist.barrier()
            start = time.perf_counter()
            reduce(x).numpy()
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    out = {"allreduce_alone_ms": reduces(10),
           "compute_beside_idle_horovod_ms": 1e3 * statistics.median(compute()[0] for _ in range(20))}
    stop = threading.Event()
    busy = threading.Thread(target=lambda: [compute() for _ in iter(stop.is_set, True)])
    busy.start()
    out["allreduce_beside_compute_ms"] = reduces(10)
    stop.set()
    busy.join()
    dist.barrier()
    sending = threading.Thread(target=lambda: [reduce(x).numpy() for _ in range(40)])
    sending.start()
    start, steps = time.perf_counter(), 0
    while sending.is_alive():
        compute()
        steps += 5
    out["compute_beside_allreduces_ms"] = 1e3 * (time.perf_counter() - start) / steps
    sending.join()
    dist.barrier()
    if ctx.is_root:
        print(json.dumps({k: round(v, 1) for k, v in out.items()}), flush=True)


def main() -> None:
    from cosmotrain.bench.cluster import cluster

    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import shared_core; "
            f"shared_core.worker(sys.argv[1] == 'alone')")
    with cluster(2) as running:  # unshaped again on leaving
        for mbit in [int(m) for m in (sys.argv[1] if len(sys.argv) > 1 else "200,1000").split(",")]:
            running.shape(mbit)
            for _ in range(2):
                alone = [r["compute_without_horovod_ms"] for r in running.srun(2, code, "alone", mpi=False)]
                print(f"{mbit} Mbit/s", {"compute_without_horovod_ms": alone, **running.srun(2, code, "job")[0]},
                      flush=True)


if __name__ == "__main__":
    main()
