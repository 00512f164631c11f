"""Load YOLOv12 checkpoints whose area-attention blocks keep separate ``qk`` and ``v`` convolutions.

The original YOLOv12 code (sunsmarterjie/yolov12, an Ultralytics 8.3.63 fork) builds each area-attention block
(``AAttn``) from four convolutions::

    qk   = Conv(dim, 2 * C, 1, act=False)          # C = num_heads * head_dim; q = channels [0, C), k = [C, 2C)
    v    = Conv(dim, C, 1, act=False)
    pe   = Conv(C, dim, 5, 1, 2, g=dim, act=False)  # depth-wise positional conv, applied to v
    proj = Conv(C, dim, 1, act=False)

and computes, for a ``(B, dim, H, W)`` input whose H*W tokens (row-major) are cut into ``area`` contiguous runs
(horizontal bands), ``proj(attention(q, k, v) + pe(v))`` with per-area, per-head ``softmax(q k^T / sqrt(head_dim)) v``.
Ultralytics 8.4 ships the same block with one fused ``qkv`` convolution instead, so such a checkpoint fails there
with ``'AAttn' object has no attribute 'qkv'``.

:func:`load_yolov12_split_attn` loads the checkpoint with stock ultralytics and changes the class of exactly those
block instances to :class:`SplitQKAAttn` (a subclass of ultralytics' ``AAttn`` with the forward above); nothing in
ultralytics is patched, so other models in the same process are unaffected.

Which token layout is the right one. The fork had two attention paths: flash-attn on CUDA (tokens cut into
contiguous runs, as above) and a plain path whose first version reshaped the *channel-major* ``(B, 2C, N)``
tensor into ``(B * area, 2C, N / area)``, which mixes channels and positions; a later fork commit made the plain
path match the flash path. The two layouts only differ for blocks with ``area > 1``. The helmet checkpoint's
batch-norm running statistics decide it: behind the area-4 blocks they match the activations of the contiguous-run
layout far better than those of the mixed layout (summed Gaussian KL over the 105 BN layers from the area-4 stage
on, 4 real hard-hat photos: 3.2 vs 11.2; 98 of the 105 layers favour it; see ``tests/test_yolov12_compat.py``), so
that layout is the one implemented here, in plain matmul + softmax (no flash-attn: the input dtype is kept where the
fork's flash path computed in fp16; ONNX-exportable; otherwise the same arithmetic).

Heavy imports (torch, ultralytics) happen inside functions; :class:`SplitQKAAttn` is built on first use.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seawatch import paths
from seawatch.errors import ExportError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from ultralytics import YOLO

log = logging.getLogger(__name__)

LOADER_NAME = "yolov12_split_attn"
"""The ``export.loader`` value of model manifests that need :func:`load_yolov12_split_attn`."""

_CLASS_CACHE: dict[str, type] = {}


def _prepare_ultralytics_env() -> None:
    """Config folder under the Seawatch cache, offline, no auto-install; must run before ultralytics is imported."""
    cfg = paths.cache_dir() / "ultralytics"
    cfg.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cfg))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    if "ultralytics" in sys.modules:  # its settings were read at import; the environment no longer matters
        log.debug("ultralytics already imported; YOLO_CONFIG_DIR=%s applies only to new processes",
                  os.environ["YOLO_CONFIG_DIR"])


def split_attention_forward(self: Any, x: "torch.Tensor") -> "torch.Tensor":
    """Area attention with split ``qk`` / ``v`` convolutions and a positional conv on ``v``.

    Args:
        x: ``(B, dim, H, W)`` feature map, any float dtype; ``H * W`` must be divisible by ``self.area``
            (always true for stride-32 letterboxed inputs, where H and W of every attention level are even).

    Returns:
        ``(B, dim, H, W)``, same dtype as ``x``.

    Shapes are taken from ``x`` and only reshapes with one inferred size are used, so the traced ONNX graph keeps
    batch, height and width dynamic; there is no data-dependent control flow.
    """
    b, _, h, w = x.shape
    heads, hd = self.num_heads, self.head_dim
    c = heads * hd
    areas = self.area if self.area > 1 else 1
    v = self.v(x)
    pos = self.pe(v)
    # qk channels: [q | k], each head a run of hd channels; tokens row-major, cut into `areas` contiguous runs.
    qk = self.qk(x).reshape(b, 2, heads, hd, areas, -1)
    q = qk[:, 0].permute(0, 3, 1, 4, 2)  # (b, areas, heads, m, hd)
    k = qk[:, 1].permute(0, 3, 1, 2, 4)  # (b, areas, heads, hd, m)
    val = v.reshape(b, heads, hd, areas, -1).permute(0, 3, 1, 4, 2)  # (b, areas, heads, m, hd)
    attn = ((q * (hd**-0.5)) @ k).softmax(dim=-1)  # (b, areas, heads, m, m)
    out = attn @ val  # (b, areas, heads, m, hd)
    out = out.permute(0, 2, 4, 1, 3).reshape(b, c, h, w)  # channel = head * hd + d, token = area * m + i
    return self.proj(out + pos)


def _split_attn_class() -> type:
    """The ``AAttn`` subclass with the split-attention forward (created once, on first use)."""
    cls = _CLASS_CACHE.get("SplitQKAAttn")
    if cls is None:
        from ultralytics.nn.modules.block import AAttn

        cls = type(
            "SplitQKAAttn",
            (AAttn,),
            {
                "__module__": __name__,
                "__qualname__": "SplitQKAAttn",
                "__doc__": "Ultralytics ``AAttn`` whose weights are the YOLOv12 fork's split qk / v / pe convs.",
                "forward": split_attention_forward,
            },
        )
        _CLASS_CACHE["SplitQKAAttn"] = cls
    return cls


def __getattr__(name: str) -> Any:
    # Lets pickle (torch.save of a converted model) and `from ... import SplitQKAAttn` find the lazy class.
    if name == "SplitQKAAttn":
        return _split_attn_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _conv_shape(block: Any, attr: str) -> tuple[int, int, int, int, int, int, int]:
    """(out, in, kh, kw, groups, stride, padding) of the Conv2d inside ultralytics ``Conv`` ``attr``."""
    conv = getattr(getattr(block, attr), "conv", None)
    if conv is None or not hasattr(conv, "weight"):
        raise ExportError(f"has no convolution in {attr!r}")
    o, i, kh, kw = conv.weight.shape
    return int(o), int(i) * int(conv.groups), int(kh), int(kw), int(conv.groups), int(conv.stride[0]), int(conv.padding[0])


def _check_split_block(name: str, block: Any) -> None:
    """Raise ExportError unless ``block`` has the split-attention layout this forward implements."""
    try:
        heads, hd = int(block.num_heads), int(block.head_dim)
        int(block.area)
        c = heads * hd
        qk = _conv_shape(block, "qk")
        v = _conv_shape(block, "v")
        pe = _conv_shape(block, "pe")
        proj = _conv_shape(block, "proj")
    except ExportError as exc:
        raise ExportError(f"split-attention block {name}: {exc}") from exc
    except (AttributeError, TypeError, ValueError) as exc:
        raise ExportError(f"split-attention block {name}: unexpected attributes ({exc})") from exc
    dim = qk[1]
    problems = []
    if qk[0] != 2 * c or qk[2:4] != (1, 1):
        problems.append(f"qk is {qk[0]}x{qk[1]} k{qk[2]}, expected {2 * c}x{dim} k1 (num_heads {heads} x head_dim {hd} x 2)")
    if v[:4] != (c, dim, 1, 1):
        problems.append(f"v is {v[0]}x{v[1]} k{v[2]}, expected {c}x{dim} k1")
    if pe[0] != c or pe[1] != c or pe[4] != c or pe[5] != 1 or pe[2] != pe[3] or pe[6] != pe[2] // 2:
        problems.append(f"pe is {pe[0]}x{pe[1]} k{pe[2]}x{pe[3]} groups {pe[4]} stride {pe[5]} pad {pe[6]}, "
                        f"expected a depth-wise 'same' conv over {c} channels")
    if proj[0] != dim or proj[1] != c or proj[2:4] != (1, 1):
        problems.append(f"proj is {proj[0]}x{proj[1]} k{proj[2]}, expected {dim}x{c} k1")
    if problems:
        raise ExportError(f"split-attention block {name}: " + "; ".join(problems))


def convert_split_attention(module: "torch.nn.Module") -> int:
    """Give every split-attention ``AAttn`` in ``module`` the split forward, in place; return how many.

    Blocks already in fused ``qkv`` form (stock ultralytics >= 8.3.78 checkpoints) are left alone. Raises
    ExportError when a block has neither layout or its convolutions have unexpected shapes.
    """
    from ultralytics.nn.modules.block import AAttn

    split_cls = _split_attn_class()
    converted = 0
    for name, sub in module.named_modules():
        if not isinstance(sub, AAttn):
            continue
        if isinstance(sub, split_cls):
            converted += 1
            continue
        has_split = all(name_ in sub._modules for name_ in ("qk", "v", "pe", "proj"))
        if "qkv" in sub._modules and not has_split:
            continue
        if not has_split:
            raise ExportError(f"attention block {name or '<root>'} has neither qkv nor qk/v/pe/proj "
                              f"(children: {sorted(sub._modules)})")
        _check_split_block(name or "<root>", sub)
        sub.__class__ = split_cls
        converted += 1
    return converted


def load_yolov12_split_attn(pt_path: str | os.PathLike[str]) -> "YOLO":
    """Load a YOLOv12 fork checkpoint (split ``qk`` / ``v`` attention) as an ``ultralytics.YOLO`` that runs it.

    The returned model's ``.predict(...)`` and ``.export(format="onnx", dynamic=True, ...)`` work with
    ultralytics 8.4; its attention blocks are :class:`SplitQKAAttn` instances (float32, CPU, eval mode).

    Raises:
        ExportError: the file is missing or unreadable, is not an ultralytics checkpoint, or holds no
            split-attention block (then it is not a checkpoint for this loader) or one of unexpected shape.
    """
    path = Path(pt_path).expanduser()
    if not path.is_file():
        raise ExportError(f"YOLOv12 weights not found: {path}")
    _prepare_ultralytics_env()
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise ExportError(f"loading {path} needs ultralytics (pip install 'seawatch[export]'): {exc}") from exc
    try:
        yolo = YOLO(str(path), task="detect")
    except Exception as exc:  # ultralytics raises many types; name the file and the cause
        raise ExportError(f"{path}: ultralytics cannot load this checkpoint: {type(exc).__name__}: {exc}") from exc
    if not hasattr(yolo, "model") or not hasattr(yolo.model, "modules"):
        raise ExportError(f"{path}: not a PyTorch checkpoint ultralytics can run")
    n = convert_split_attention(yolo.model)
    if n == 0:
        raise ExportError(f"{path}: no split-attention (qk / v / pe) blocks found; this is not a checkpoint for "
                          f"the {LOADER_NAME!r} loader (use the stock ultralytics loader)")
    yolo.model.float().eval()
    log.info("loaded %s: %d split-attention blocks converted, classes %s", path, n, yolo.model.names)
    return yolo
