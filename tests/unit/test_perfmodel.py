"""The scaling model's parts: the α–β fit, Horovod's fusion buffers, the step and the efficiency."""
import numpy as np
import pytest

from cosmotrain import perfmodel
from cosmotrain.perfmodel import MB, Horovod, Link, Workload


@pytest.mark.parametrize("n", [2, 4])
def test_fit_recovers_alpha_and_beta_from_ring_allreduce_times(n):
    link = Link(alpha=80e-6, beta=8 / 200e6)  # 80 us, 200 Mbit/s
    sizes = 4096 * 4.0 ** np.arange(8)
    rng = np.random.default_rng(0)
    times = [perfmodel.ring_seconds(s, n, link) * rng.uniform(0.98, 1.02) for s in sizes]
    fitted = perfmodel.fit_link(sizes, times, n)
    assert fitted.alpha == pytest.approx(link.alpha, rel=0.05)
    assert fitted.mbit_per_s == pytest.approx(200, rel=0.02)


def test_fusion_packs_tensors_up_to_the_threshold_and_zero_sends_each_alone():
    assert perfmodel.fusion_buffers([3, 3, 3, 5], 7) == [6, 3, 5]
    assert perfmodel.fusion_buffers([3, 3, 10], 7) == [6, 10]  # a tensor above the threshold goes alone
    assert perfmodel.fusion_buffers([3, 3, 3], 0) == [3, 3, 3]


def test_one_rank_is_perfectly_efficient_and_more_ranks_pay_for_their_bytes():
    work = Workload("w", 0.1, ((4 * MB,),))
    link = Link(50e-6, 8 / 1e9)
    assert perfmodel.efficiency(work, 1, link) == 1.0
    two, four = perfmodel.efficiency(work, 2, link), perfmodel.efficiency(work, 4, link)
    assert 1.0 > two > four
    # the ring's bandwidth term: 2(n-1)/n S beta; fp16 halves it
    comm = perfmodel.comm_seconds(work, 2, link)
    assert comm == pytest.approx(2 * link.alpha + 4 * MB * link.beta)
    assert perfmodel.comm_seconds(work, 2, link, Horovod(fp16=True)) == pytest.approx(2 * link.alpha + 2 * MB * link.beta)


def test_without_fusion_every_tensor_pays_the_latency():
    work = Workload("w", 0.01, (tuple([1000] * 50),))
    link = Link(100e-6, 1e-9)
    fused, unfused = (perfmodel.comm_seconds(work, 4, link, Horovod(t)) for t in (128, 0))
    assert unfused - fused == pytest.approx(49 * 6 * link.alpha)


def test_a_shapers_bucket_spares_each_round_its_first_bytes_once_refilled_by_the_compute():
    link, shaped = Link(100e-6, 8 / 200e6), Link(100e-6, 8 / 200e6, burst=100e3)  # 200 Mbit/s, 100 KB bucket
    work = Workload("w", 0.02, ((MB, MB), (MB,)))  # two rounds, 10 ms of compute before each: 250 KB refill
    spared = perfmodel.comm_seconds(work, 2, link) - perfmodel.comm_seconds(work, 2, shaped)
    assert spared == pytest.approx(2 * 100e3 * link.beta)  # once per round, not once per buffer
    unfused = perfmodel.comm_seconds(work, 2, link, Horovod(0)) - perfmodel.comm_seconds(work, 2, shaped, Horovod(0))
    assert unfused == pytest.approx(spared)  # the round's later buffers find the bucket empty
    brief = Workload("w", 0.004, work.rounds)  # 2 ms before each round refill only 50 KB
    assert perfmodel.comm_seconds(brief, 2, link) - perfmodel.comm_seconds(brief, 2, shaped) == \
        pytest.approx(2 * 50e3 * link.beta)
    assert perfmodel.comm_seconds(work, 1, shaped) == 0.0


def test_contention_slows_only_the_compute():
    work = Workload("w", 0.1, ((MB,),))
    link = Link(0, 1e-9)
    assert perfmodel.step_seconds(work, 4, link, contention=2.0) - perfmodel.step_seconds(work, 4, link) == \
        pytest.approx(0.1)


def test_the_slower_link_sets_the_bandwidth_once_a_job_spans_nodes():
    nvlink, network = Link.from_gbps(600, 2), Link.from_gbps(100, 10)
    assert perfmodel.hierarchical_link(4, 4, nvlink, network) == nvlink
    across = perfmodel.hierarchical_link(8, 4, nvlink, network)
    assert across.beta == network.beta and across.alpha == network.alpha
