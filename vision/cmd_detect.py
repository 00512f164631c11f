"""``seawatch detect PATH...``: detections for images, folders and videos as JSON lines.

One JSON object per detection on stdout (or ``--out``)::

    {"source": "a.jpg", "frame_index": 0, "timestamp_ns": null, "model": "fire_smoke", "label": "fire",
     "confidence": 0.8123, "xyxy_px": [10.5, 20.0, 110.2, 90.7]}

``timestamp_ns`` is the frame's presentation time in a video (null for images). A file that cannot be read gets
one ``seawatch: error: ...`` line on stderr and the run continues; so does a model that cannot be loaded when
``--models`` is not given (the default set, every provisioned model; a model named in ``--models`` that cannot be
loaded stops the run). The exit status is 1 when any file failed or any model was skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from seawatch.errors import InputError, ModelError, ModelNotProvisioned, SeawatchError
from seawatch.vision.annotate import draw

log = logging.getLogger(__name__)

HELP = "detections for images, folders and videos (JSON lines, optional annotated output)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image or video files, or folders (searched recursively)")
    parser.add_argument("--models", default=None,
                        help="comma-separated registry names, A+B a group of models with their boxes fused "
                             "(default: every provisioned model)")
    parser.add_argument("--variant", default="fp32", help="model variant to load (fp32, int8, ...)")
    parser.add_argument("--conf", type=float, default=None, help="confidence threshold (default: each model's)")
    parser.add_argument("--iou", type=float, default=None, help="NMS IoU threshold (default: each model's)")
    parser.add_argument("--imgsz", type=int, default=None, help="inference size of the long side, px")
    parser.add_argument("--max-det", type=int, default=None, help="most boxes per frame and model")
    parser.add_argument("--tile", default=None, metavar="SIZE[:OVERLAP]",
                        help="tiled inference for small objects, e.g. 640:0.2 (plus a whole-frame pass), or auto[:OVERLAP] "
                             "for each model's trained tile size; more sizes after commas (auto,288) and +flip (each "
                             "frame also mirrored) add views that are fused (one more pass each)")
    parser.add_argument("--batch", type=int, default=4, help="frames per inference batch (default 4)")
    parser.add_argument("--stride-frames", type=int, default=1, help="analyse every Nth video frame (default 1)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.jsonl", help="write JSON lines here, not stdout")
    parser.add_argument("--annotate", type=Path, default=None, metavar="DIR",
                        help="write annotated images, and videos as H.264 MP4, into DIR")
    parser.add_argument("--yolo-labels", type=Path, default=None, metavar="DIR",
                        help="also write each analysed frame to DIR/images and its detections as YOLO labels to "
                             "DIR/labels (classes in DIR/classes.txt): pre-labels of your own camera's frames to "
                             "correct in a labelling tool and train on (README: your own cameras)")
    parser.add_argument("--yolo-classes", default=None, metavar="LABELS",
                        help="comma-separated labels written with --yolo-labels, in class-id order (default: every "
                             "label of the models, e.g. vessel)")
    parser.add_argument("--providers", default="auto",
                        help="onnxruntime execution providers: auto, or a list such as cuda,cpu")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


MAX_IMGSZ_PX = 8192  # a batch of 4 at 8192 px is 3 GiB of float32 input; 100000 px asked for 28 GiB and died


def check_imgsz_arg(value: int | None) -> None:
    """``--imgsz`` within 1..8192 px (the detector rounds it up to a multiple of the model's stride, 32 mostly)."""
    _positive("imgsz", value)
    if value is not None and value > MAX_IMGSZ_PX:
        raise InputError(f"--imgsz must be at most {MAX_IMGSZ_PX} px, got {value} (the input grows with its square); "
                         "models are trained at 640-1280 px: use --tile for small objects in large frames")


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise InputError(f"--{name} must be >= 1, got {value}")


def provisioned_models(variant: str = "fp32") -> list[str]:
    """Registered models whose ``variant`` is in the cache (by lock file; the checksum is checked at load)."""
    from seawatch.vision import registry

    out = []
    for name in registry.load_manifests():
        lock = registry.read_lock(name)
        if lock and variant in lock.get("variants", {}):
            out.append(name)
    return out


# ------------------------------------------------------------------------------------------------ annotation

class VideoWriter:
    """Annotated frames -> H.264 MP4 (libx264, yuv420p, +faststart), opened at the first frame."""

    def __init__(self, path: Path, rate: Fraction):
        self.path = path
        self.rate = rate
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None

    def write(self, bgr: np.ndarray) -> None:
        import av

        if self._container is None:
            h, w = bgr.shape[:2]
            self._size = (w - w % 2, h - h % 2)  # yuv420p needs even sides
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), "w", options={"movflags": "+faststart"})
            self._stream = self._container.add_stream("libx264", rate=self.rate,
                                                      options={"preset": "veryfast", "crf": "23"})
            self._stream.width, self._stream.height = self._size
            self._stream.pix_fmt = "yuv420p"
        w, h = self._size
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr[:h, :w]), format="bgr24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None


class Annotator:
    """Decides output names in the annotation folder and keeps one video writer open per video."""

    IMAGE_OUT_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}

    def __init__(self, out_dir: Path, stride_frames: int):
        self.out_dir = out_dir
        self.stride_frames = stride_frames
        self._names: dict[Path, Path] = {}
        self._used: set[Path] = set()
        self._videos: dict[Path, VideoWriter] = {}

    def _name(self, source: Path, suffix: str) -> Path:
        if source in self._names:
            return self._names[source]
        cand = self.out_dir / f"{source.stem}{suffix}"
        n = 2
        while cand in self._used:
            cand = self.out_dir / f"{source.stem}_{n}{suffix}"
            n += 1
        self._used.add(cand)
        self._names[source] = cand
        return cand

    def add(self, frame, dets_by_model: list) -> None:
        import cv2

        img = draw(frame.image, dets_by_model)
        if frame.kind == "image":
            ext = frame.source.suffix.lower()
            path = self._name(frame.source, ext if ext in self.IMAGE_OUT_EXTS else ".jpg")
            ok, buf = cv2.imencode(path.suffix, img)
            if not ok:
                raise InputError(f"{path}: cannot encode the annotated image")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buf.tobytes())
        else:
            writer = self._videos.get(frame.source)
            if writer is None:
                fps = frame.fps or 25.0
                rate = Fraction(fps / self.stride_frames).limit_denominator(1001)
                writer = self._videos[frame.source] = VideoWriter(self._name(frame.source, ".mp4"), rate)
            writer.write(img)

    def finish(self, source: Path | None = None) -> None:
        """Close the writer of ``source`` (all writers when None)."""
        for src in [source] if source is not None else list(self._videos):
            w = self._videos.pop(src, None)
            if w is not None:
                w.close()


class YoloWriter:
    """Frames and their detections as a YOLO-labelled image folder (``images/``, ``labels/``, ``classes.txt``), the
    layout a dataset manifest's source reads (``datasets/*.yaml``): pre-labels to correct, then train on.

    An image keeps its bytes (same name); a video frame is written as JPEG named ``<video stem>_f<frame index>``.
    Only detections whose label is in ``classes`` are written; a frame with none gets an empty label file (a known
    negative once checked). Names that would collide get ``_2``, ``_3``..."""

    def __init__(self, out_dir: Path, classes: list[str]):
        self.out_dir = Path(out_dir)
        self.classes = list(classes)
        self.frames = self.boxes = 0
        self._used: set[str] = set()
        self._stems: dict[Path, str] = {}
        try:
            (self.out_dir / "images").mkdir(parents=True, exist_ok=True)
            (self.out_dir / "labels").mkdir(parents=True, exist_ok=True)
            (self.out_dir / "classes.txt").write_text("".join(f"{c}\n" for c in self.classes))
        except OSError as exc:
            raise InputError(f"--yolo-labels {out_dir}: cannot write: {exc.strerror or exc}") from exc

    def _stem(self, source: Path) -> str:
        if source not in self._stems:
            stem, n = source.stem, 2
            while stem in self._used:
                stem, n = f"{source.stem}_{n}", n + 1
            self._used.add(stem)
            self._stems[source] = stem
        return self._stems[source]

    def add(self, frame, dets_by_model: list) -> None:
        import shutil

        import cv2

        h, w = frame.image.shape[:2]
        stem = self._stem(frame.source)
        if frame.kind == "image":
            name = stem + frame.source.suffix.lower()
            shutil.copyfile(frame.source, self.out_dir / "images" / name)
        else:
            stem = f"{stem}_f{frame.frame_index:06d}"
            ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise InputError(f"{frame.source}: cannot encode frame {frame.frame_index}")
            (self.out_dir / "images" / f"{stem}.jpg").write_bytes(buf.tobytes())
        from seawatch.vision.trainsets import yolo_lines

        lines = []
        for det in dets_by_model:
            for box, lab in zip(det.xyxy_px.tolist(), det.label.tolist()):
                if lab in self.classes:
                    lines += yolo_lines(box, w, h, self.classes.index(lab))
        (self.out_dir / "labels" / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines))
        self.frames += 1
        self.boxes += len(lines)


# ------------------------------------------------------------------------------------------------ run

def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from seawatch.vision.detector import load_detector
    from seawatch.vision.media import MediaError, expand_paths, iter_media, media_kind, probe_video
    from seawatch.vision.tiling import check_tile_text, detect_tiled, tile_for

    _positive("batch", args.batch)
    _positive("stride-frames", args.stride_frames)
    check_imgsz_arg(args.imgsz)
    _positive("max-det", args.max_det)
    for key in ("conf", "iou"):
        v = getattr(args, key)
        if v is not None and not 0.0 <= v <= 1.0:
            raise InputError(f"--{key} must be in [0, 1], got {v}")
    try:
        check_tile_text(args.tile)
    except ValueError as exc:
        raise InputError(f"--tile: {exc}") from None

    files = expand_paths(args.paths)  # before the (slow) model loading: nothing to analyse is said at once
    if not files:
        raise InputError(f"nothing to analyse: {', '.join(map(str, args.paths))} hold(s) no image or video files "
                         "(folders are searched recursively for .jpg, .png, .mp4, ... files)")
    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else provisioned_models(args.variant)
    if not names:
        raise ModelNotProvisioned("no provisioned models: run `seawatch models fetch` or pass --models")
    overrides = {k: v for k, v in (("conf", args.conf), ("iou", args.iou), ("imgsz", args.imgsz),
                                   ("max_det", args.max_det)) if v is not None}
    detectors = []
    broken: list[str] = []
    for n in names:
        try:
            detectors.append(load_detector(n, args.variant, providers=args.providers, intra_op_threads=args.threads,
                                           **overrides))
        except ModelError as exc:
            if args.models:  # asked for by name: no partial answer
                raise
            # the default set: one broken model (say a bad registration) must not stop the others
            broken.append(n)
            print(f"seawatch: error: model {n!r} skipped: {exc}", file=sys.stderr)
    if not detectors:
        raise ModelError(f"no provisioned model could be loaded ({', '.join(broken)}; errors above)")
    tiles = [tile_for(args.tile, d, batch=args.batch) for d in detectors]
    for d in detectors:
        log.info("loaded %r", d)

    total = 0
    for f in files:
        if media_kind(f) == "video":
            n, _ = probe_video(f)
            total += -(-n // args.stride_frames) if n else 0
        else:
            total += 1
    try:
        out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    except OSError as exc:
        raise InputError(f"--out {args.out}: cannot write: {exc.strerror or exc}") from exc
    annotator = Annotator(args.annotate, args.stride_frames) if args.annotate else None
    yolo = None
    if args.yolo_labels:
        model_labels = list(dict.fromkeys(lab for d in detectors for lab in d.labels))
        classes = [c.strip() for c in args.yolo_classes.split(",") if c.strip()] if args.yolo_classes else model_labels
        unknown = [c for c in classes if c not in model_labels]
        if not classes or unknown:
            raise InputError(f"--yolo-classes: {', '.join(unknown) or 'none given'} not among the models' labels "
                             f"({', '.join(model_labels)})")
        yolo = YoloWriter(args.yolo_labels, classes)
    failed: set[Path] = set()
    n_frames = n_dets = 0
    bar = tqdm(total=total or None, unit="frame", file=sys.stderr, disable=True if args.no_progress else None,
               dynamic_ncols=True)

    def report(source: Path, message: str) -> None:
        failed.add(source)
        bar.write(f"seawatch: error: {message}", file=sys.stderr)

    def process(batch: list) -> None:
        nonlocal n_frames, n_dets
        images = [f.image for f in batch]
        per_model = []
        try:
            for det, tile in zip(detectors, tiles):
                per_model.append(detect_tiled(det, images, tile) if tile else det.detect(images))
        except ModelError as exc:
            for src in dict.fromkeys(f.source for f in batch):
                report(src, f"{src}: {exc}")
            bar.update(len(batch))
            return
        for i, frame in enumerate(batch):
            frame_dets = [res[i] for res in per_model]
            for det in frame_dets:
                for rec in det.to_records():
                    out.write(json.dumps({"source": str(frame.source), "frame_index": frame.frame_index,
                                          "timestamp_ns": frame.timestamp_ns, "model": det.model, **rec}) + "\n")
                n_dets += len(det)
            if annotator is not None:
                try:
                    annotator.add(frame, frame_dets)
                except (SeawatchError, OSError, ValueError) as exc:
                    report(frame.source, f"{frame.source}: annotation failed: {exc}")
            if yolo is not None:
                try:
                    yolo.add(frame, frame_dets)
                except (SeawatchError, OSError) as exc:
                    report(frame.source, f"{frame.source}: YOLO labels not written: {exc}")
        n_frames += len(batch)
        bar.update(len(batch))

    t0 = time.perf_counter()
    pending: list = []
    current: Path | None = None
    try:
        for item in iter_media(args.paths, args.stride_frames):
            if isinstance(item, MediaError):
                report(item.source, item.message)
                continue
            if current is not None and item.source != current and annotator is not None:
                # a new file: flush so the previous video's writer can be closed in order
                if pending:
                    process(pending)
                    pending = []
                annotator.finish(current)
            current = item.source
            pending.append(item)
            if len(pending) >= args.batch:
                process(pending)
                pending = []
        if pending:
            process(pending)
        out.flush()
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): stop quietly, and keep Python's exit-time flush from complaining
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        log.info("output closed by the reader; stopping")
    finally:
        bar.close()
        if annotator is not None:
            annotator.finish()
        if out is not sys.stdout:
            out.close()
    dt = time.perf_counter() - t0
    for d in detectors:
        t = d.total_timing
        if t.frames:
            log.info("%s: %d frames, pre %.1f ms, infer %.1f ms, post %.1f ms per frame", d.name, t.frames,
                     t.pre_ns / 1e6 / t.frames, t.infer_ns / 1e6 / t.frames, t.post_ns / 1e6 / t.frames)
    log.info("%d frames, %d detections, %d files failed, %.1f s", n_frames, n_dets, len(failed), dt)
    if yolo is not None:
        print(f"seawatch: {yolo.frames} frames with {yolo.boxes} pre-labelled boxes ({', '.join(yolo.classes)}) in "
              f"{args.yolo_labels}", file=sys.stderr)
    if failed:
        print(f"seawatch: {len(failed)} of {len(files)} files failed", file=sys.stderr)
    if broken:
        print(f"seawatch: {len(broken)} of {len(names)} models skipped: {', '.join(broken)}", file=sys.stderr)
    return 1 if failed or broken else 0
