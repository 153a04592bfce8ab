"""2 "nodes" × 1 process on this machine (torchrun --nnodes 2 --node_rank 0/1, rendezvous on 127.0.0.1)
consuming a streamed source: disjoint data per rank, identical weights after DDP steps, exact resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from test_streaming import synth_shards

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, torch.distributed as dist
    from speeched.data.config import DataSource
    from speeched.data.stream_loader import build_stream_loader

    folder, out, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    loader, state_fn, load_fn = build_stream_loader(
        [DataSource(path=folder, streaming=True, stream_buffer=16)], sampling_rate=16000, rank=rank,
        world_size=world, num_workers=0, seed=5, max_duration=1.0)
    if mode == "resume":
        load_fn(json.load(open(f"{out}/state{rank}.json")))
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = []
    while len(ids) < n:
        for batch in loader:
            x = torch.tensor([[float(it["array"].mean()), float(it["array"].std())] for it in batch])
            loss = model(x).pow(2).mean()
            opt.zero_grad(); loss.backward(); opt.step()
            ids.append([it["id"] for it in batch])
            if len(ids) == n:
                break
    if mode == "head":
        json.dump(state_fn(), open(f"{out}/state{rank}.json", "w"))
    weights = [p.detach().clone() for p in model.parameters()]
    gathered = [None] * world
    dist.all_gather_object(gathered, [w.tolist() for w in weights])
    json.dump({"ids": ids, "weights": gathered}, open(f"{out}/{mode}{rank}.json", "w"))
    dist.destroy_process_group()
    """
)


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def launch_two_nodes(script, folder, out, mode, n):
    skip = ("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    port = free_port()
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
        cmd += ["--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", port]
        cmd += [str(script), str(folder), str(out), mode, str(n)]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    for p in procs:
        output, _ = p.communicate(timeout=300)
        assert p.returncode == 0, output[-3000:]
    return [json.loads((out / f"{mode}{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow  # two torchrun launches × 2 processes: ~1-2 min on 2 shared cores
def test_two_nodes_disjoint_identical_weights_exact_resume(tmp_path):
    folder = tmp_path / "shards"
    ids, _ = synth_shards(folder, n=80, shard_size=8_000)
    script = tmp_path / "node.py"
    script.write_text(SCRIPT)
    full = launch_two_nodes(script, folder, tmp_path, "full", 8)
    seen = [set(i for b in r["ids"] for i in b) for r in full]
    assert seen[0] and seen[1] and not seen[0] & seen[1]  # each rank reads its own shards
    assert full[0]["weights"][0] == full[0]["weights"][1]  # DDP kept the ranks in sync
    head = launch_two_nodes(script, folder, tmp_path, "head", 3)
    rest = launch_two_nodes(script, folder, tmp_path, "resume", 5)
    for r in (0, 1):
        assert head[r]["ids"] + rest[r]["ids"] == full[r]["ids"]
    assert set(ids) >= seen[0] | seen[1]
