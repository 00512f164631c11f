"""Model soups: the uniform weight average of detectors fine-tuned from the same start (``seawatch models soup``).

Short fine-tuning runs of the same recipe that differ only by seed land in one basin of the loss; averaging their
weights (Wortsman et al., "Model soups", 2022) keeps what they share and smooths what chance gave each. Measured on
the unseen camera ``w4gnqsqx`` (scripts/gpu/README.md, hard negatives): two seeds of the hard-negative recipe scored recall at
precision 0.8 of 0.500 and 0.344 alone, 0.488 as a soup. Only checkpoints of one architecture (same tensor names
and shapes) mix; BatchNorm statistics are averaged like the weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from seawatch.errors import ModelError


def average_checkpoints(paths: list[Path], out: Path) -> dict:
    """Writes the uniform average of ultralytics checkpoints ``paths`` to ``out`` (the first one's structure and
    metadata, half precision as ultralytics saves). Returns what went in (file and sha256 each)."""
    import torch

    if len(paths) < 2:
        raise ModelError("a soup needs two or more checkpoints")
    ckpts, sds = [], []
    for p in paths:
        try:
            ck = torch.load(p, map_location="cpu", weights_only=False)
            sd = ck["model"].float().state_dict()
        except Exception as exc:  # noqa: BLE001 - a foreign or broken file: name it
            raise ModelError(f"{p}: not an ultralytics checkpoint ({type(exc).__name__}: {exc})") from exc
        ckpts.append(ck)
        sds.append(sd)
    ref = sds[0]
    for p, sd in zip(paths[1:], sds[1:]):
        if sd.keys() != ref.keys() or any(sd[k].shape != ref[k].shape for k in ref):
            raise ModelError(f"{p}: not the architecture of {paths[0]} (tensor names or shapes differ); "
                             "only models fine-tuned from the same start mix")
    avg = {k: (sum(sd[k] for sd in sds) / len(sds)) if v.dtype.is_floating_point else v for k, v in ref.items()}
    model = ckpts[0]["model"]
    model.load_state_dict(avg)
    ckpts[0]["model"] = model.half()
    ckpts[0]["ema"] = None
    ckpts[0]["optimizer"] = None
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpts[0], out)
    return {"soup_of": [{"file": str(p), "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest()} for p in paths]}
