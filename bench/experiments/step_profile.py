"""When does a 2-node classifier step compute, and when does it wait? TensorFlow's profiler on each node.

    python bench/experiments/step_profile.py [MBITS]      # root, from the checkout; default 200

On each of 2 nodes (one rank, one core; ``make cluster-test``'s cluster, links shaped to
MBITS Mbit/s), the classifier trainer's step as ``bench scaling-model`` times it (tiny config,
per-rank batch 32, in-memory batches), then ``tf.profiler`` around 4 more steps. From each
node's trace it prints, per step: the step's wall time, when the dense kernel's gradient
(most of the bytes) was computed, and when the backward pass's last op ended, in ms from
the step's start; the rest of the step is the gradients' allreduces and Adam's update.
About a minute. Figures in docs/cluster.md (P8).
"""
import json
import socket
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DENSE_GRADIENT = "dense0/MatMul/MatMul_1"


def worker() -> None:
    from cosmotrain import dist

    ctx = dist.init_horovod(threads=1)
    import tensorflow as tf

    from cosmotrain.bench.step import (bench_config, memory_batches, prepared_run, quiet_logs,
                                       time_trainer_steps, write_bench_dataset)

    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="step-profile-") as tmp:  # node-local /tmp
        scratch = Path(tmp)
        data = write_bench_dataset(scratch / "data", n_train=4 * 32)
        run = prepared_run(bench_config(32), data, scratch / "run")
        batches = memory_batches(20, 32, seed=1 + ctx.rank)
        time_trainer_steps(run, batches)  # trace, first-step broadcast, Horovod's negotiation
        tf.profiler.experimental.start(str(scratch / "profile"))
        time_trainer_steps(run, batches[:4], 1)
        tf.profiler.experimental.stop()
        steps = read_steps(next((scratch / "profile").rglob("*.xplane.pb")))
    every = dict(dist.allgather_object((socket.gethostname(), steps)))
    if ctx.is_root:
        print(json.dumps(every), flush=True)


def read_steps(path: Path) -> list:
    """Per ``_train_step`` call: wall ms, and when the dense kernel's gradient and the whole
    backward pass ended (ms from the call's start)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(path.read_bytes())
    steps, ops = [], []
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                start = line.timestamp_ns / 1e6 + event.offset_ps / 1e9
                span = (start, start + event.duration_ps / 1e9, names.get(event.metadata_id, ""))
                if span[2] == "_train_step":
                    steps.append(span)
                elif line.name.startswith("tf_Compute") and ":" in span[2]:  # "name:OpType" = one op
                    ops.append(span)
    found = []
    for begin, end, _ in sorted(steps):
        inside = [op for op in ops if begin <= op[0] <= end]
        dense = [op[1] for op in inside if DENSE_GRADIENT in op[2]]
        backward_end = max(op[1] for op in inside if "gradient_tape/" in op[2])
        found.append({"step_ms": round(end - begin, 1),
                      "dense_gradient_ms": round(dense[0] - begin, 1) if dense else None,
                      "backward_end_ms": round(backward_end - begin, 1)})
    return found


def main() -> None:
    from cosmotrain.bench.cluster import cluster

    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import step_profile; step_profile.worker()"
    with cluster(2) as running:  # unshaped again on leaving
        for mbit in [int(m) for m in (sys.argv[1] if len(sys.argv) > 1 else "200").split(",")]:
            running.shape(mbit)
            for host, steps in running.srun(2, code)[0].items():
                print(f"{mbit} Mbit/s, {host}:", *steps, sep="\n  ", flush=True)


if __name__ == "__main__":
    main()
