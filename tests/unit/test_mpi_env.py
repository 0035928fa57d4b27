"""Open MPI settings made before MPI starts: the allreduce algorithm rules, the TCP eager limit."""
import os
from pathlib import Path

from cosmotrain import placement

RULES = ("OMPI_MCA_coll_tuned_use_dynamic_rules", "OMPI_MCA_coll_tuned_dynamic_rules_filename")
YIELD = "OMPI_MCA_mpi_yield_when_idle"
EAGER = "OMPI_MCA_btl_tcp_eager_limit"
ALLREDUCE, RING, OWN_CHOICE = 2, 4, 0  # Open MPI's collective id and algorithm numbers


def _rules(path: Path) -> dict:
    """Open MPI's rules file → {collective: {comm size: [(from bytes, algorithm)]}}."""
    numbers = iter(int(w) for w in path.read_text().split())
    out = {}
    for _ in range(next(numbers)):
        collective, sizes = next(numbers), {}
        for _ in range(next(numbers)):
            comm, rows = next(numbers), []
            for _ in range(next(numbers)):
                start, algorithm, _faninout, _segment = (next(numbers) for _ in range(4))
                rows.append((start, algorithm))
            sizes[comm] = rows
        out[collective] = sizes
    assert next(numbers, None) is None, "trailing numbers in the rules file"
    return out


def test_large_allreduces_on_three_or_more_ranks_use_the_ring(monkeypatch):
    for var in (*RULES, YIELD):
        monkeypatch.delenv(var, raising=False)
    placement.set_mpi_env()
    assert os.environ[RULES[0]] == "1"
    rules = _rules(Path(os.environ[RULES[1]]))[ALLREDUCE]
    assert rules[2] == [(0, OWN_CHOICE)]                      # 2 ranks: ring and the rest move the same bytes
    assert rules[3] == [(0, OWN_CHOICE), (512 * 1024, RING)]  # used for every size of communicator from 3 up


def test_a_users_own_rules_are_kept(monkeypatch):
    monkeypatch.setenv(RULES[0], "0")
    monkeypatch.delenv(RULES[1], raising=False)
    monkeypatch.delenv(YIELD, raising=False)
    placement.set_mpi_env()
    assert os.environ[RULES[0]] == "0" and RULES[1] not in os.environ


def test_messages_of_a_fused_gradient_buffer_go_eagerly_over_tcp_unless_the_user_chose(monkeypatch):
    """Two ranks exchanging 32 MiB halves of a 64 MiB fusion buffer skip the rendezvous that
    queues behind the peer's data (bench/README.md, P8); a user's own limit is kept."""
    monkeypatch.delenv(EAGER, raising=False)
    placement.set_mpi_env()
    assert int(os.environ[EAGER]) >= 64 * 2 ** 20 // 2 + 4096
    monkeypatch.setenv(EAGER, "65536")
    placement.set_mpi_env()
    assert os.environ[EAGER] == "65536"
