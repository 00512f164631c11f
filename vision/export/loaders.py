"""Load a manifest's PyTorch checkpoint with the framework that made it (export and reference path only).

Three loaders, selected by ``manifest.export.loader``:

- ``ultralytics``: ``ultralytics.YOLO``; classes the checkpoint pickled under another module (fire_smoke's
  FasterNet blocks under ``__main__``) are made resolvable from a Python file inside the wheel, only while loading.
- ``yolov12_split_attn``: ``seawatch.vision.export.yolov12_compat.load_yolov12_split_attn`` (YOLOv12 fork weights).
- ``yolov5``: the original YOLOv5 layout (``models.yolo`` / ``models.common``), loaded with the PyPI ``yolov5``
  distribution aliased in as ``models`` / ``utils`` for the load only. That distribution is installed with
  ``--no-deps`` (scripts/setup.sh); its hub helpers are never used.

Everything heavy is imported inside functions. Nothing here touches the network: ultralytics is configured
offline (``YOLO_OFFLINE``, no auto-install, settings under the cache) before its first import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import types
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from seawatch import paths
from seawatch.errors import ExportError
from seawatch.vision.registry import ModelManifest

log = logging.getLogger(__name__)


def use_cpu_threads(n: int | None = None) -> None:
    """Torch threads for training on the CPU: ultralytics uses one core fewer than the machine has (one thread on a
    2-core machine, half the speed); ``n`` (default: every core). Call after importing ultralytics, before training."""
    import ultralytics.utils.torch_utils as tu

    tu.NUM_THREADS = max(1, n or os.cpu_count() or 1)


def prepare_ultralytics_env() -> None:
    """Point ultralytics at a config folder under the cache and keep it offline; call before importing it."""
    cfg = paths.cache_dir() / "ultralytics"
    cfg.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cfg))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "true" if log.isEnabledFor(logging.DEBUG) else "false")
    try:
        from ultralytics.utils import SETTINGS  # every caller imports ultralytics next anyway

        if SETTINGS.get("sync", False):
            SETTINGS.update(sync=False)  # no analytics events
    except ImportError:
        pass  # the export toolchain is absent; the caller reports that
    except Exception as exc:  # settings are a convenience; never fail a load on them
        log.debug("could not turn off ultralytics settings sync: %s", exc)


@dataclass
class LoadedModel:
    """A checkpoint loaded for export or reference inference.

    Attributes:
        module: the ``torch.nn.Module`` in eval mode, float32, on the CPU.
        names: class names by class id, as the checkpoint stores them.
        stride_px: largest stride of the network.
        yolo: the ``ultralytics.YOLO`` wrapper (ultralytics-family loaders), else None.
    """

    module: Any
    names: tuple[str, ...]
    stride_px: int
    yolo: Any = None


def _names_tuple(names: Any) -> tuple[str, ...]:
    if isinstance(names, dict):
        return tuple(str(names[k]) for k in sorted(names))
    return tuple(str(n) for n in names)


def load_module_from_wheel(wheel: Path, member: str, module_name: str) -> types.ModuleType:
    """Execute one Python file from inside a wheel as a fresh module (not installed, not left in sys.modules)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            source = zf.read(member).decode("utf-8")
    except KeyError as exc:
        raise ExportError(f"{wheel.name}: has no member {member!r} to resolve pickled classes from") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise ExportError(f"{wheel}: cannot read {member}: {exc}") from exc
    mod = types.ModuleType(module_name)
    mod.__file__ = f"{wheel}/{member}"
    try:
        exec(compile(source, mod.__file__, "exec"), mod.__dict__)  # noqa: S102 - the pinned wheel's own code
    except Exception as exc:
        raise ExportError(f"{wheel.name}: {member} failed to import: {type(exc).__name__}: {exc}") from exc
    return mod


@contextlib.contextmanager
def pickled_module_shims(shims: dict[str, types.ModuleType]) -> Iterator[None]:
    """Make the classes of each shim module resolvable under the module name a checkpoint pickled them with.

    Attributes are added only where missing and removed again afterwards, so nothing leaks into ``__main__``.
    """
    added: list[tuple[types.ModuleType, str]] = []
    created: list[str] = []
    try:
        for target, mod in shims.items():
            host = sys.modules.get(target)
            if host is None:
                host = types.ModuleType(target)
                sys.modules[target] = host
                created.append(target)
            for attr, value in vars(mod).items():
                if attr.startswith("__") or hasattr(host, attr):
                    continue
                setattr(host, attr, value)
                added.append((host, attr))
        yield
    finally:
        for host, attr in added:
            with contextlib.suppress(AttributeError):
                delattr(host, attr)
        for target in created:
            sys.modules.pop(target, None)


def shims_for(manifest: ModelManifest, wheel: Path | None) -> dict[str, types.ModuleType]:
    out: dict[str, types.ModuleType] = {}
    for target, member in manifest.export.pickled_modules.items():
        if wheel is None:
            raise ExportError(f"model {manifest.name!r}: pickled_modules need the source wheel, which is not available")
        out[target] = load_module_from_wheel(wheel, member, f"_seawatch_shim_{manifest.name}_{len(out)}")
    return out


def _load_ultralytics(weights: Path, shims: dict[str, types.ModuleType]) -> LoadedModel:
    prepare_ultralytics_env()
    from ultralytics import YOLO

    try:
        with pickled_module_shims(shims):
            yolo = YOLO(str(weights), task="detect")
    except Exception as exc:
        raise ExportError(f"{weights}: ultralytics cannot load it: {type(exc).__name__}: {exc}") from exc
    return _from_yolo(yolo)


def _from_yolo(yolo: Any) -> LoadedModel:
    module = yolo.model.float().eval()
    stride = int(max(getattr(module, "stride", [32])))
    return LoadedModel(module=module, names=_names_tuple(module.names), stride_px=stride, yolo=yolo)


def _load_yolov12(weights: Path) -> LoadedModel:
    prepare_ultralytics_env()
    try:
        from seawatch.vision.export.yolov12_compat import load_yolov12_split_attn
    except ImportError as exc:
        raise ExportError(
            "export loader 'yolov12_split_attn' needs seawatch.vision.export.yolov12_compat."
            f"load_yolov12_split_attn, which is not available ({exc})"
        ) from exc
    try:
        yolo = load_yolov12_split_attn(weights)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{weights}: the YOLOv12 split-attention loader failed: {type(exc).__name__}: {exc}") from exc
    return _from_yolo(yolo)


@contextlib.contextmanager
def yolov5_modules() -> Iterator[types.ModuleType]:
    """Alias the PyPI ``yolov5`` distribution's ``models`` / ``utils`` as the original top-level names.

    Yields the ``yolov5`` package. Aliases exist only inside the block; what was there before is restored.
    """
    prepare_ultralytics_env()  # yolov5's utils import ultralytics
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources deprecation and similar noise from yolov5's imports
            import yolov5  # noqa: F401  - the distribution installed with --no-deps
            import yolov5.models.common
            import yolov5.models.experimental
            import yolov5.models.yolo
            import yolov5.utils
    except ImportError as exc:
        raise ExportError(
            "the yolov5 loader needs the PyPI distribution yolov5==7.0.14 installed with --no-deps "
            f"(see scripts/setup.sh) plus seaborn, pandas and setuptools<81: {type(exc).__name__}: {exc}"
        ) from exc
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("yolov5").setLevel(logging.WARNING)  # "Fusing layers..." and model summaries
    aliases = {
        "models": yolov5.models,
        "models.yolo": yolov5.models.yolo,
        "models.common": yolov5.models.common,
        "models.experimental": yolov5.models.experimental,
        "utils": yolov5.utils,
    }
    saved = {k: sys.modules.get(k) for k in aliases}
    sys.modules.update(aliases)
    try:
        yield yolov5
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _load_yolov5(weights: Path) -> LoadedModel:
    import torch

    with yolov5_modules():
        try:
            ckpt = torch.load(str(weights), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ExportError(f"{weights}: cannot load as a YOLOv5 checkpoint: {type(exc).__name__}: {exc}") from exc
    model = ckpt.get("ema") or ckpt.get("model") if isinstance(ckpt, dict) else None
    if model is None or not hasattr(model, "names"):
        raise ExportError(f"{weights}: not a YOLOv5 checkpoint (no 'model' with class names)")
    model = model.float().eval()
    stride = int(max(model.stride)) if hasattr(model, "stride") else 32
    return LoadedModel(module=model, names=_names_tuple(model.names), stride_px=stride)


def load_checkpoint(manifest: ModelManifest, weights: Path, wheel: Path | None = None) -> LoadedModel:
    """Load ``weights`` (a .pt file) the way ``manifest.export.loader`` says.

    Raises ExportError with the file and the reason when the checkpoint cannot be loaded.
    """
    loader = manifest.export.loader
    if loader == "ultralytics":
        return _load_ultralytics(weights, shims_for(manifest, wheel))
    if loader == "yolov12_split_attn":
        return _load_yolov12(weights)
    if loader == "yolov5":
        return _load_yolov5(weights)
    raise ExportError(f"model {manifest.name!r}: unknown export loader {loader!r} (ultralytics, yolov12_split_attn, yolov5)")


def check_names(manifest: ModelManifest, loaded: LoadedModel, where: Path) -> None:
    """The checkpoint's own class names must equal the manifest's ``classes``."""
    if tuple(loaded.names) != tuple(manifest.classes):
        raise ExportError(
            f"model {manifest.name!r}: {where} has classes {list(loaded.names)} but the manifest says "
            f"{list(manifest.classes)}"
        )
