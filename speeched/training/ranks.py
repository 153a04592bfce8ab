"""Multi-process sanity check after training, written to `rank_check.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from accelerate.utils import gather_object

from speeched.training.run import TrainingError


def check_ranks(
    accelerator: Any, model: Any, ids_seen: dict[int, set[str]], out: Path
) -> dict[str, Any] | None:
    """Identical weights on every rank (DDP kept them in sync) and disjoint data within the first epoch (the
    sampler sharded correctly). Returns the report on the main process; raises if the weights differ."""
    if accelerator.num_processes == 1:
        return None
    checksum = float(sum(p.detach().double().sum().item() for p in model.parameters()))
    first = min(ids_seen) if ids_seen else 0
    seen = sorted(ids_seen.get(first, set()))
    gathered = gather_object([{"rank": accelerator.process_index, "checksum": checksum, "ids": seen}])
    if not accelerator.is_main_process:
        return None
    sums = [g["checksum"] for g in gathered]
    sets = [set(g["ids"]) for g in gathered]
    report = {
        "checksums": sums,
        "weights_identical": len(set(sums)) == 1,
        "ids_per_rank": [len(x) for x in sets],
        "overlap_first_epoch": sorted(set.intersection(*sets)) if sets else [],
    }
    (Path(out) / "rank_check.json").write_text(json.dumps(report, indent=2))
    if not report["weights_identical"]:
        raise TrainingError(f"weights differ across ranks after training: {sums}")
    return report
