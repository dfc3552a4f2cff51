"""Several machines, tested on one: the multi-node torchrun command of docs/distributed.md, two "nodes" on this machine.

Each node is its own git clone, as on real machines, and fetches data/train.npy with `dvc pull`; both run the same
command with their own --node_rank at the same time. Node 0 must end up with the very bytes `dvc repro` gives on
one machine with the same train.nproc, and `dvc commit -f train` then records them in dvc.lock without training.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dvc.utils.serialize import parse_yaml

from tests.conftest import ROOT, clone_repo, env, prepared, run, set_params

pytestmark = pytest.mark.slow  # every test starts torchrun and its ranks

TORCHRUN = Path(sys.executable).parent / "torchrun"
# train.nproc is the total number of processes (2 nodes x 1), so dvc.lock records how the model was trained.
SMALL = {
    "data.synthetic": {"n": 1000, "low": 0, "high": 10},
    "train.batch_size": 96,
    "train.epochs": 3,
    "train.nproc": 2,
}
OUTPUTS = ("mymodel.pth", "loss.tsv", "model_summary.txt")
LAUNCH_TIMEOUT_S = 120  # both launchers together; a run takes ~15 s here, a lost peer would wait 600 s


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_command(node_rank, port):
    """The command for one node (docs/distributed.md). c10d ignores --node_rank and ranks the nodes itself (by host
    name; here, by pid), so the global rank 0 may be on either node: the first process of every node writes outputs."""
    return [
        str(TORCHRUN),
        "--nnodes=2",
        f"--node_rank={node_rank}",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}",
        "-m",
        "stages.train",
    ]


def torchrun_on(nodes, logs, **extra_env):
    """Start the command on every node at once; return each launcher's exit code. Its output goes to `logs`."""
    port = free_port()
    launchers = []
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    try:
        for node_rank, (node, log) in enumerate(zip(nodes, logs, strict=True)):
            with log.open("w") as out:
                launchers.append(
                    subprocess.Popen(
                        node_command(node_rank, port),
                        cwd=node,
                        env=env(GLOO_SOCKET_IFNAME="lo", **extra_env),  # lo: the interface the "nodes" share
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own process group: the launcher and its ranks
                    )
                )
        return [launcher.wait(timeout=max(0.0, deadline - time.monotonic())) for launcher in launchers]
    finally:
        for launcher in launchers:  # a timeout or a failed start must leave no launcher or rank behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()


def test_two_nodes_give_the_one_node_bytes_and_dvc_commit_records_them(tmp_path):
    node0 = clone_repo(tmp_path / "node0")
    set_params(node0, **SMALL)
    run(["dvc", "repro", "prepare"], node0)
    run(["dvc", "push", "data/train.npy"], node0)  # to the default remote, ../addnet-storage beside the clones
    run(["git", "commit", "-qam", "1000 pairs, 2 processes"], node0)
    node1, one_node = tmp_path / "node1", tmp_path / "one-node"
    for clone in (node1, one_node):
        run(["git", "clone", "-q", str(node0), str(clone)], tmp_path)
        run(["dvc", "pull", "data/train.npy"], clone)  # what each node needs besides the repo

    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    exit_codes = torchrun_on([node0, node1], logs)
    output = "\n".join(f"--- {log.name}\n{log.read_text()}" for log in logs)
    assert exit_codes == [0, 0], output
    assert "on cpu x 2" in output, output  # the global rank 0, on either node, trained with 2 processes

    result = run(["dvc", "repro", "train"], one_node)  # train.nproc 2 on one node: the stage starts torchrun itself
    assert "--nproc_per_node=2" in result.stdout, result.stdout
    for name in OUTPUTS:
        assert (node0 / "artifacts" / name).read_bytes() == (one_node / "artifacts" / name).read_bytes(), name
        assert (node1 / "artifacts" / name).read_bytes() == (one_node / "artifacts" / name).read_bytes(), name

    # torchrun ran outside DVC, so dvc.lock still describes the old model. `dvc commit` asks before recording a
    # stage whose deps changed (and fails without a terminal); -f records them as they are, running nothing.
    model = (node0 / "artifacts/mymodel.pth").read_bytes()
    result = run(["dvc", "commit", "-f", "train"], node0)
    assert "Running stage" not in result.stdout and (node0 / "artifacts/mymodel.pth").read_bytes() == model
    lock = lambda clone: parse_yaml((clone / "dvc.lock").read_text(), "dvc.lock")["stages"]["train"]  # noqa: E731
    assert lock(node0) == lock(one_node)  # exactly what `dvc repro train` recorded on one node
    assert "up to date" in run(["dvc", "status", "train"], node0).stdout

    result = run(["dvc", "repro"], node0)  # the stages that read the new model still have to run; train does not
    assert "Stage 'train' didn't change, skipping" in result.stdout, result.stdout
    assert "Running stage 'train'" not in result.stdout and "Running stage 'evaluate'" in result.stdout
    assert (node0 / "artifacts/mymodel.pth").read_bytes() == model


def test_a_node_with_other_data_is_one_line_and_nothing_trains(tmp_path):
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    for node, high in zip(nodes, (10, 11), strict=True):  # node1 drew its data from another range
        prepared(node, **{**SMALL, "data.synthetic": {"n": 1000, "low": 0, "high": high}})
    set_params(nodes[1], **{"data.synthetic": {"n": 1000, "low": 0, "high": 10}})  # the same params.yaml: other data

    logs = [tmp_path / "node0.log", tmp_path / "node1.log"]
    exit_codes = torchrun_on(nodes, logs, PYTHONPATH=str(ROOT))
    output = "\n".join(log.read_text() for log in logs)
    assert exit_codes != [0, 0], output  # (and torchrun's own failure report: the user started torchrun here)
    line = r"train\[rank \d\]: error: rank 1 \(node [^)]+\) has data/train.npy md5 '[0-9a-f]{32}', but rank 0 .*"
    assert re.search(line + "nothing was trained", output), output
    assert not any((node / "artifacts").exists() for node in nodes)
