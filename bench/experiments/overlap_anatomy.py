"""Where the classifier's step hides communication: gradient readiness on one rank, a step on Horovod's timeline.

    python bench/experiments/overlap_anatomy.py ready              # one process, about 1 minute
    python bench/experiments/overlap_anatomy.py timeline FILE      # a Horovod timeline (JSON)

``ready``: the bench classifier of ``bench scaling-model`` (tiny config, batch 32, one
thread), alone. For each trainable variable, the median ms of a forward pass and the
backward pass as far as that variable's gradient (``tape.gradient`` of the variables from
it to the output; a sum of squares stands in for the loss, the layers are the model's):
when in the backward pass each gradient is ready, and so how long the rest of the backward
pass is after it, the window in which Horovod can send it.

``timeline FILE``: FILE from ``HOROVOD_TIMELINE=FILE cosmotrain bench scaling-model
--nodes 2 --link-mbit 1000 --quick``. One line per classifier step (warm-up and timed), in
ms from the dense kernel's negotiation: the time to the next step, the dense kernels'
allreduce, when the first convolution's gradient was negotiated (the background thread
sends one allreduce at a time, so not before the dense one is done) and when the step's
last allreduce ended. Figures in docs/cluster.md (validating it across nodes).
"""
import collections
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path


def ready() -> None:
    import numpy as np
    import tensorflow as tf

    from cosmotrain import dist
    from cosmotrain.bench.step import bench_config, prepared_run, quiet_logs, write_bench_dataset

    dist.init_horovod(threads=1, allreduce=dist.AllreduceConfig())
    quiet_logs()
    scratch = Path(tempfile.mkdtemp())
    write_bench_dataset(scratch / "data", n_train=128)
    model = prepared_run(bench_config(32), scratch / "data", scratch / "run").trainer.model
    variables = model.trainable_variables
    x = tf.constant(np.random.default_rng(0).normal(size=(32, *model.inputs[0].shape[1:])).astype(np.float32))

    def upto(first: int):
        @tf.function(autograph=False)
        def grads(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(x, training=True)))
            return tape.gradient(loss, variables[first:])
        return grads

    calls = [upto(i) for i in range(len(variables))]
    forward = tf.function(lambda x: tf.reduce_sum(tf.square(model(x, training=True))), autograph=False)
    ms = {}
    for name, call in [("forward only", forward)] + [(v.name, c) for v, c in zip(variables, calls)]:
        call(x)  # trace
        times = []
        for _ in range(60):
            start = time.perf_counter()
            out = call(x)
            [o.numpy() for o in (out if isinstance(out, list) else [out])]
            times.append(1e3 * (time.perf_counter() - start))
        ms[name] = statistics.median(times)
    total = ms[variables[0].name]
    print(f"{'variable':28s} {'bytes':>9s} {'ready ms':>9s} {'backward left ms':>17s}")
    print(f"{'forward only':28s} {'':9s} {ms['forward only']:9.2f}")
    for v in reversed(variables):
        print(f"{v.name:28s} {v.shape.num_elements() * 4:9d} {ms[v.name]:9.2f} {total - ms[v.name]:17.2f}")


def timeline(path: str) -> None:
    text = Path(path).read_text().rstrip().rstrip(",")
    events = json.loads(text if text.endswith("]") else text + "]")
    names = {e["pid"]: e["args"].get("name", "?") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    spans, open_ = [], collections.defaultdict(list)
    for e in events:
        name = names.get(e.get("pid"), "")
        if "galaxy_cnn" not in name and name != "classifier_flags":
            continue
        if e.get("ph") == "B":
            open_[e["pid"]].append((e["name"], e["ts"]))
        elif e.get("ph") == "E" and open_[e["pid"]]:
            what, start = open_[e["pid"]].pop()
            if what in ("NEGOTIATE_ALLREDUCE", "MPI_ALLREDUCE"):
                spans.append((start, e["ts"], what, _short(name)))
    spans.sort()
    steps = [s[0] for s in spans if s[2] == "NEGOTIATE_ALLREDUCE" and s[3] == "dense0 kernel"]
    print("ms from the dense kernel's negotiation")
    print(f"{'step':>4s} {'period':>7s} {'dense sent':>15s} {'rest ready':>10s} {'comm done':>9s}")
    for i, (zero, following) in enumerate(zip(steps, steps[1:])):
        mine = [(a - zero, b - zero, what, tensor) for a, b, what, tensor in spans if zero <= a < following]
        dense = next((a, b) for a, b, what, tensor in mine if what == "MPI_ALLREDUCE" and tensor == "dense0 kernel")
        rest = min((a for a, b, what, tensor in mine if what == "NEGOTIATE_ALLREDUCE" and "conv0_0" in tensor),
                   default=float("nan"))
        done = max(b for a, b, what, tensor in mine if what == "MPI_ALLREDUCE")
        print(f"{i:4d} {(following - zero) / 1e3:7.2f} {dense[0] / 1e3:7.2f}-{dense[1] / 1e3:7.2f} {rest / 1e3:10.2f} "
              f"{done / 1e3:9.2f}")


def _short(name: str) -> str:
    found = re.search(r"galaxy_cnn_(\w+?)_(Conv2D|MatMul|BiasAdd)", name)
    if not found:
        return name
    return f"{found.group(1)} {'bias' if found.group(2) == 'BiasAdd' else 'kernel'}"


if __name__ == "__main__":
    ready() if sys.argv[1:2] == ["ready"] else timeline(sys.argv[2])
