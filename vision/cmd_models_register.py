"""``seawatch models register FILE --name N [--labels cls=label,...]``: add a user model to the registry.

FILE is an ONNX file (class names from its ``names`` metadata, as ultralytics writes it, or ``--classes``) or an
ultralytics ``.pt`` checkpoint (class names from the checkpoint). A manifest is written into the user manifest
folder (``<cache>/manifests``) and the model is provisioned at once: ``.pt`` files are exported and checked like
the built-in models, ONNX files are copied and verified. Built-in names cannot be shadowed.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
from pathlib import Path

HELP = "register a user model (.onnx or ultralytics .pt) under a name and provision it"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="an .onnx file or an ultralytics .pt checkpoint")
    parser.add_argument("--name", required=True, help="registry name (lowercase letters, digits, _ and -)")
    parser.add_argument("--labels", default="",
                        help="class=label pairs mapping the model's classes to Seawatch labels, comma separated "
                             "(default: classes already named like a Seawatch label)")
    parser.add_argument("--classes", default="",
                        help="class names by id, comma separated (only for ONNX files without names metadata)")
    parser.add_argument("--output-format", choices=("yolov8", "yolov5"),
                        help="raw output layout (default: read from the file)")
    parser.add_argument("--licence", default="unknown (user-registered)", help="licence of the weights")
    parser.add_argument("--description", default="", help="one line about the model")
    parser.add_argument("--imgsz", type=int, default=0, help="inference size in pixels (default: from the file, else 640)")
    parser.add_argument("--tile-px", type=int, default=0,
                        help="tile side (source pixels) the model was trained on; tiling `auto` uses it (default: imgsz)")
    parser.add_argument("--replace", action="store_true", help="replace an existing user manifest of that name")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the PyTorch vs ONNX Runtime export check (.pt files)")


def parse_labels(text: str, classes: tuple[str, ...]) -> dict[str, str]:
    """``"a=vessel,b=person"`` -> {"a": "vessel", "b": "person"}; default maps classes named like Seawatch labels."""
    from seawatch.errors import ConfigError
    from seawatch.vision.registry import SEAWATCH_LABELS

    if not text.strip():
        out = {c: c for c in classes if c in SEAWATCH_LABELS}
        if not out:
            raise ConfigError(
                f"no class of the model is named like a Seawatch label (classes: {list(classes)}); pass "
                f"--labels class=label,... with labels from: {', '.join(SEAWATCH_LABELS)}"
            )
        return out
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ConfigError(f"--labels: {item!r} is not class=label")
        cls, lab = (s.strip() for s in item.rsplit("=", 1))
        if cls not in classes:
            raise ConfigError(f"--labels: the model has no class {cls!r} (classes: {list(classes)})")
        if lab not in SEAWATCH_LABELS:
            raise ConfigError(f"--labels: {lab!r} is not a Seawatch label ({', '.join(SEAWATCH_LABELS)})")
        out[cls] = lab
    return out


def _names_from_meta(value: str) -> tuple[str, ...]:
    """Class names by id from a ``names`` metadata string: ``{0: 'boat', 1: 'person'}`` (ultralytics), its JSON
    form, or a list. ``()`` when there is none; ValueError with the reason when it is there but not understood
    (keys that are not class ids, ids with gaps), so the class count is never silently wrong."""
    if not value.strip():
        return ()
    try:
        names = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            names = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise ValueError("neither a Python nor a JSON literal") from None
    if isinstance(names, (list, tuple)):
        return tuple(str(n) for n in names)
    if not isinstance(names, dict):
        raise ValueError(f"a {type(names).__name__}, not a dict of class id -> name")
    try:
        ids = {int(k): v for k, v in names.items() if not isinstance(k, (bool, float))}
    except (ValueError, TypeError):
        ids = {}
    if len(ids) != len(names):
        raise ValueError("its keys are not integer class ids (a name -> id mapping?)")
    if sorted(ids) != list(range(len(ids))):
        raise ValueError(f"class ids {sorted(ids)} are not 0..{len(ids) - 1} without gaps")
    return tuple(str(ids[k]) for k in range(len(ids)))


def inspect_onnx(path: Path) -> dict:
    """Class names, output format and input size read from an ONNX file (what can be read)."""
    from seawatch.errors import InputError

    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{path}: not a readable ONNX file: {type(exc).__name__}: {exc}") from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    init = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in init]
    if len(inputs) != 1 or len(proto.graph.output) < 1:
        raise InputError(f"{path}: expected one image input and a detection output")

    def dims(v) -> list:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in v.type.tensor_type.shape.dim]

    out_dims = dims(proto.graph.output[0])
    in_dims = dims(inputs[0])
    info: dict = {"names": (), "output_dims": out_dims, "input_dims": in_dims,
                  "input_type": inputs[0].type.tensor_type.elem_type}
    try:
        info["names"] = _names_from_meta(meta.get("names", ""))
    except ValueError as exc:
        info["names_error"] = f"names metadata {meta['names'][:200]!r} not understood: {exc}"
    if str(meta.get("end2end", "")).strip().lower() == "true":
        raise InputError(
            f"{path}: an end-to-end export (metadata end2end=True: NMS inside the graph, output (B, max_det, 6) "
            f"x1, y1, x2, y2, score, class id), which Seawatch does not decode; register the .pt checkpoint, or "
            f"re-export the raw head (ultralytics: model.export(format='onnx', dynamic=True, nms=None))"
        )
    if meta.get("output_format") in ("yolov8", "yolov5"):
        info["output_format"] = meta["output_format"]
    imgsz = meta.get("imgsz")
    if imgsz:
        try:
            v = ast.literal_eval(imgsz)
            info["imgsz"] = int(max(v) if isinstance(v, (list, tuple)) else v)
        except (ValueError, SyntaxError, TypeError):
            pass
    if "imgsz" not in info and len(in_dims) == 4 and all(isinstance(d, int) and d > 0 for d in in_dims[2:]):
        info["imgsz"] = int(max(in_dims[2:]))
    return info


def infer_output_format(out_dims: list, nc: int) -> str | None:
    """yolov8: (B, 4+nc, N); yolov5: (B, N, 5+nc); None when the dims do not say (or fit both)."""
    if len(out_dims) != 3:
        return None
    v8, v5 = out_dims[1] == 4 + nc, out_dims[2] == 5 + nc
    if v8 != v5:
        return "yolov8" if v8 else "yolov5"
    return None


def looks_end_to_end(path: Path, info: dict, imgsz: int) -> bool | None:
    """For a one-class (B, N, 6) output, which is also the end-to-end layout (x1, y1, x2, y2, score, class id):
    True when one inference on a grey frame gives class id 0 in every row (a yolov5 class probability, a
    sigmoid, is never exactly 0 everywhere), False when it does not, None when the model cannot be run here."""
    import numpy as np

    from seawatch.vision.detector import input_layout

    in_dims = info["input_dims"]
    onnx_type = {2: "tensor(uint8)", 1: "tensor(float)", 10: "tensor(float16)"}.get(info["input_type"], "")
    layout = input_layout(onnx_type, in_dims)
    if layout is None:
        return None  # the layout check at provisioning says why
    fixed = [d if isinstance(d, int) and d > 0 else None for d in in_dims]
    b = fixed[0] or 1
    if layout[0] == "nhwc_u8":
        x = np.full((b, fixed[1] or imgsz, fixed[2] or imgsz, 3), 114, np.uint8)
    else:
        x = np.full((b, 3, fixed[2] or imgsz, fixed[3] or imgsz), 114 / 255, layout[1])
    try:
        from seawatch.vision.export.fetch import ort_session

        sess = ort_session(path)
        y = np.asarray(sess.run(None, {sess.get_inputs()[0].name: x})[0])
    except Exception as exc:  # onnxruntime's own exception types; the warm-up at provisioning reports it
        log.debug("probe inference of %s failed: %s", path, exc)
        return None
    if y.ndim != 3 or y.shape[2] != 6 or y.shape[1] == 0:
        return None
    return bool(np.all(y[..., 5] == 0))


def inspect_pt(path: Path) -> dict:
    """Class names and training size of an ultralytics checkpoint."""
    from seawatch.errors import InputError
    from seawatch.vision.export.loaders import prepare_ultralytics_env

    prepare_ultralytics_env()
    try:
        from ultralytics import YOLO

        yolo = YOLO(str(path), task="detect")
    except Exception as exc:
        raise InputError(
            f"{path}: not loadable as an ultralytics checkpoint ({type(exc).__name__}: {exc}); "
            "export it to ONNX yourself and register the .onnx"
        ) from exc
    names = yolo.model.names
    names = tuple(str(names[k]) for k in sorted(names)) if isinstance(names, dict) else tuple(map(str, names))
    args = (getattr(yolo, "ckpt", None) or {}).get("train_args") or {}
    imgsz = args.get("imgsz")
    info: dict = {"names": names, "output_format": "yolov8"}
    if isinstance(imgsz, int):
        info["imgsz"] = imgsz
    elif isinstance(imgsz, (list, tuple)) and imgsz:
        info["imgsz"] = int(max(imgsz))
    return info


def build_manifest(args: argparse.Namespace, path: Path) -> "object":
    """The user manifest for ``args`` (validated); raises ConfigError / InputError with the reason."""
    from pydantic import ValidationError

    from seawatch.errors import ConfigError, InputError
    from seawatch.vision.registry import ModelManifest, sha256_file

    suffix = path.suffix.lower()
    if suffix == ".onnx":
        info = inspect_onnx(path)
        family, kind = "onnx", "local_onnx"
    elif suffix == ".pt":
        info = inspect_pt(path)
        family, kind = "ultralytics", "file"
    else:
        raise InputError(f"{path}: register takes an .onnx file or an ultralytics .pt checkpoint")
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else info["names"]
    if not classes and info.get("names_error"):
        raise InputError(f"{path}: {info['names_error']}; pass the class names by id: --classes name0,name1,...")
    if not classes:
        raise InputError(f"{path}: no class names in the file's metadata; pass --classes name0,name1,...")
    if info["names"] and args.classes and tuple(info["names"]) != classes:
        raise ConfigError(f"--classes {list(classes)} disagrees with the file's own names {list(info['names'])}")
    fmt = args.output_format or info.get("output_format")
    imgsz = args.imgsz or info.get("imgsz") or 640
    if family == "onnx":
        nc, dims = len(classes), info["output_dims"]
        seen = infer_output_format(dims, nc)
        if fmt is not None and seen is not None and fmt != seen:
            said = "--output-format" if args.output_format else "the file's output_format metadata"
            raise InputError(
                f"{path}: {said} says {fmt}, but the output dims {dims} are {seen} for {nc} classes "
                f"(yolov8 (B, {4 + nc}, N), yolov5 (B, N, {5 + nc})); check --output-format / --classes"
            )
        if fmt is None and seen == "yolov5" and nc == 1:
            # (B, N, 6) is also the end-to-end layout (NMS in the graph: x1, y1, x2, y2, score, class id), which
            # would decode as yolov5 into nothing (score x class id 0); one probe inference tells them apart
            e2e = looks_end_to_end(path, info, imgsz)
            if e2e is None:
                raise InputError(
                    f"{path}: output dims {dims} with one class are either raw yolov5 (cx, cy, w, h, objectness, "
                    f"class probability) or an end-to-end export (x1, y1, x2, y2, score, class id) and a probe "
                    f"inference could not tell; pass --output-format yolov5 if it is raw yolov5"
                )
            if e2e:
                raise InputError(
                    f"{path}: output dims {dims} look like an end-to-end export (NMS inside the graph: x1, y1, x2, "
                    f"y2, score, class id; the class id column is all 0 on a probe frame), which Seawatch does not "
                    f"decode; export the raw head instead (ultralytics: nms=None), or pass --output-format yolov5 if "
                    f"it really is raw yolov5"
                )
        if fmt is None:
            fmt = seen
        if fmt is None:
            raise InputError(
                f"{path}: output dims {dims} fit neither yolov8 (B, {4 + nc}, N) nor yolov5 (B, N, {5 + nc}) for "
                f"{nc} classes; check --classes / --output-format"
            )
    data = {
        "name": args.name,
        "description": args.description or f"user-registered from {path.name}",
        "family": family,
        "output_format": fmt,
        "source": {"kind": kind, "paths": [str(path)]},
        "weights_sha256": sha256_file(path),
        "licence": args.licence,
        "classes": list(classes),
        "labels": parse_labels(args.labels, classes),
        "input_size_px": [imgsz, imgsz],
        "export": {"loader": "ultralytics", "check_imgsz": min(imgsz, 4096)},
        "defaults": {"imgsz": imgsz, **({"tile_px": int(args.tile_px)} if getattr(args, "tile_px", 0) else {})},
    }
    try:
        return ModelManifest.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"model {args.name!r}: the manifest built from {path} is invalid:\n{exc}") from exc


def run(args: argparse.Namespace) -> int:
    import yaml

    from seawatch.errors import ConfigError, InputError, SeawatchError
    from seawatch.paths import MANIFEST_DIR
    from seawatch.vision import registry
    from seawatch.vision.export.fetch import fetch_model, lock_summary

    path = Path(args.file).expanduser().resolve()
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if (MANIFEST_DIR / f"{args.name}.yaml").exists():
        raise ConfigError(f"{args.name!r} is a built-in model; pick another --name")
    target = registry.user_manifest_dir() / f"{args.name}.yaml"
    existing = registry.load_manifests()
    if args.name in existing and not (args.replace and target.exists()):
        raise ConfigError(f"a model named {args.name!r} is already registered (use --replace for your own manifests)")
    m = build_manifest(args, path)
    previous = target.read_bytes() if target.exists() else None
    text = "# written by `seawatch models register`\n" + yaml.safe_dump(m.model_dump(mode="json"), sort_keys=False)
    registry.atomic_write_bytes(target, text.encode())
    try:
        registry.load_manifest(target)  # the written file round-trips
        res = fetch_model(m, force=True, check=args.check)
    except (SeawatchError, KeyboardInterrupt):
        if previous is None:
            target.unlink(missing_ok=True)
        else:
            registry.atomic_write_bytes(target, previous)
        raise
    print(f"{m.name}: registered ({target}) and provisioned in {res.seconds:.1f} s -> {res.onnx_path} "
          f"({lock_summary(res.lock)}); labels {', '.join(m.seawatch_labels)}")
    return 0
