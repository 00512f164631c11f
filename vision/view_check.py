"""Has a fixed camera been moved, covered or put out of focus? A cheap check of its picture against a reference view.

A camera on a mast or a quay that is bumped, turned, sways loose or slips on its mount keeps sending pictures, so
nothing about the stream says it is wrong, yet every event is placed on the map through the calibrated pose that
no longer holds (at a harbour camera's shallow angles 0.1 deg of tilt is tens of metres on the water) and its pixel
zones no longer cover what they were drawn on. A covered or sprayed lens detects nothing, silently.

:func:`measure` compares one picture with a :class:`ViewReference` (both as small grey images, ``analysis_width_px``
wide, default 640: a few milliseconds, run every ``interval_s``, never on every frame):

- **moved**: ORB features of the reference matched to the picture, then a similarity (shift, rotation, zoom) fitted
  by RANSAC, so boats, cars, smoke and water, which move, are outvoted by the quays, masts and buildings, which do
  not. When the reference was learnt (:class:`ViewMonitor`: the first stable minute) only its features seen in place
  through that minute are used (the static parts of the scene). The shift is reported in full-size pixels at the
  principal point and, for a calibrated camera, as pan / tilt / roll degrees through its intrinsics (a rotation of
  the camera about its centre moves the principal point by ``f * tan(angle)``). A picture with detail that matches
  nothing of the reference (turned away) counts as moved too.
- **covered** (blinded): the share of the reference's detailed blocks (16x16 px at the analysis size, grey-level
  standard deviation over ``DETAIL_STD``) that are flat now. Structure, not brightness, is compared, so dusk, a
  cloud or an IR switch-over at night do not count; a black cap, tape, spray or a hand flattens nearly every block.
- **blurred** (out of focus): a contrast-free sharpness, mean absolute Laplacian over mean gradient magnitude on
  the blocks detailed in both, against the reference's. Dimming scales both alike; defocus takes the second
  derivative down much more than the first.

:class:`ViewMonitor` keeps one camera's reference and the persistence of each condition: raised when it held for
``raise_after_s`` (default 30 s) at every check, ended when it was clear for ``clear_after_s``.

A dark, flat picture is a cover only when it went so from one check to the next (a cap, a hand, tape): a scene that
faded into the dark over minutes (dusk over an unlit sea, a camera without infrared) is night, not a cover, and
raises nothing until it is seen again (``covered_when_dark: false``: a dark picture is never a cover).

Limits (documented in service/README.md): a camera covered while its scene is already pitch-black at night (no
light, no IR) cannot be told from the night; fog, heavy rain or spray on the
lens flatten the picture too and are reported as covered or blurred (it is blind all the same); a scene with hardly
any static structure (open sea and sky) may give too few features to measure a shift (the picture then has detail
but matches nothing: reported moved only while it has as much detail as the reference); a slow slip of a fraction of
the threshold per restart is not seen when the reference is re-taken (it is stored, so a restart does not).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from seawatch.errors import InputError

if TYPE_CHECKING:
    from seawatch.drone.geometry import CameraIntrinsics  # vision may use drone

log = logging.getLogger(__name__)

BLOCK_PX = 16  # detail blocks at the analysis size
DETAIL_STD = 4.0  # grey levels: a block with less spread is flat (sensor noise in the dark is about 1-3)
DARK_MEAN = 20.0  # grey level: a picture darker than this on average is dark (night without light or IR)
ORB_FEATURES = 1200
RATIO_TEST = 0.8  # Lowe's ratio on Hamming distances
RANSAC_PX = 2.0  # at the analysis size
MIN_INLIERS = 12
STATIC_VOTE_SHARE = 0.5  # a reference feature seen in place in at least this share of the learning checks is static
MIN_STATIC = 40  # fewer static features than this: keep them all (a scene with little texture)

PHASE_MIN_RESPONSE = 0.07  # phase correlation peak: unrelated scenes gave <= 0.045, the car park by night >= 0.087

MOVED, COVERED, BLURRED = "moved", "covered", "blurred"
CONDITIONS = (MOVED, COVERED, BLURRED)


class ViewCheckConfig(BaseModel):
    """Per fixed camera (``sources[].view_check``, defaults in ``source_alerts.view_check``): the view check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="check this fixed camera's view (drone cameras never are)")
    interval_s: float = Field(5.0, ge=0.5, le=3600.0, description="seconds between checks (one downscaled grey picture)")
    analysis_width_px: int = Field(640, ge=160, le=1920, description="pictures are checked at this width")
    raise_after_s: float = Field(30.0, ge=0.0, le=86400.0,
                                 description="a condition must hold at every check this long before it is raised")
    clear_after_s: float = Field(30.0, ge=0.0, le=86400.0,
                                 description="a raised condition must be clear this long before it ends")
    reference_after_s: float = Field(60.0, ge=0.0, le=3600.0,
                                     description="without a stored reference, the view must be stable this long "
                                                 "after start before it becomes the reference")
    moved_px: float = Field(4.0, gt=0.0, le=1000.0, description="moved: the principal point shifted at least this "
                                                                "many full-size pixels")
    moved_deg: float = Field(0.1, gt=0.0, le=180.0, description="calibrated cameras: moved when pan or tilt turned "
                                                                "this much (0.1 deg of tilt is tens of metres far out)")
    moved_roll_deg: float = Field(0.5, gt=0.0, le=180.0, description="moved: the picture rotated at least this much")
    moved_zoom: float = Field(0.03, gt=0.0, le=1.0, description="moved: the picture's scale changed by this share")
    covered_fraction: float = Field(0.8, gt=0.0, le=1.0, description="covered: this share of the reference's detailed "
                                                                     "blocks is flat now")
    covered_when_dark: bool = Field(True, description="also raise covered when the picture is dark (mean grey < 20) "
                                                      "and went dark at once, not over minutes like a dusk; off: a "
                                                      "dark picture is never a cover")
    blurred_ratio: float = Field(0.6, gt=0.0, lt=1.0, description="blurred: sharpness under this share of the "
                                                                   "reference's")
    severity: str = Field("high", pattern="^(low|medium|high|critical)$", description="the incidents' severity")


def grey_small(image: np.ndarray, width_px: int) -> np.ndarray:
    """``(h, width_px) uint8`` grey copy of a BGR (or grey) frame, downscaled with area averaging."""
    import cv2

    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] < 16 or img.shape[1] < 16:
        raise InputError(f"view check: a picture must be (H, W[, 3]) and at least 16x16, got shape {img.shape}")
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    h, w = g.shape
    if w > width_px:
        g = cv2.resize(g, (width_px, max(16, round(h * width_px / w))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(g, np.uint8)


def _block_std(g: np.ndarray) -> np.ndarray:
    """``(rows, cols)`` grey-level standard deviation of each BLOCK_PX block (the partial edge blocks dropped)."""
    h, w = (g.shape[0] // BLOCK_PX) * BLOCK_PX, (g.shape[1] // BLOCK_PX) * BLOCK_PX
    b = g[:h, :w].astype(np.float32).reshape(h // BLOCK_PX, BLOCK_PX, w // BLOCK_PX, BLOCK_PX)
    return b.std(axis=(1, 3))


def _sharpness(g: np.ndarray, blocks: np.ndarray) -> float:
    """Mean |Laplacian| over mean gradient magnitude on the ``blocks`` (bool mask of BLOCK_PX blocks): independent
    of contrast and brightness, lower when out of focus. NaN without a block."""
    import cv2

    if not blocks.any():
        return float("nan")
    f = g.astype(np.float32)
    lap = np.abs(cv2.Laplacian(f, cv2.CV_32F, ksize=1))
    gx, gy = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=1), cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=1)
    grad = np.sqrt(gx * gx + gy * gy)
    mask = np.kron(blocks, np.ones((BLOCK_PX, BLOCK_PX), bool))
    h, w = mask.shape
    den = float(grad[:h, :w][mask].mean())
    return float(lap[:h, :w][mask].mean()) / den if den > 1e-6 else float("nan")


def _features(g: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """ORB keypoint positions ``(N, 2) float32`` and descriptors ``(N, 32) uint8`` (None without any), found on a
    contrast-equalised copy so a dim picture still gives features."""
    import cv2

    eq = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(g)
    orb = cv2.ORB_create(nfeatures=ORB_FEATURES, fastThreshold=10)
    kps, desc = orb.detectAndCompute(eq, None)
    pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
    return pts, desc


def intrinsics_of(calibration) -> CameraIntrinsics | None:
    """A calibrated camera's intrinsics (focal lengths and principal point, what the angles need) from its
    ``CalibrationConfig``; None without camera intrinsics (ground control points only)."""
    cam = getattr(calibration, "camera", None) if calibration is not None else None
    return cam.build() if cam is not None else None


@dataclass(frozen=True, slots=True)
class ViewReference:
    """A camera's reference view: its grey picture at the analysis size, the full-size picture's size, its ORB
    features (``static`` marks those kept for registration), detailed blocks and sharpness; ``origin`` says where
    it came from (``learnt``: the first stable minute, ``reset``, ``calibration``) and ``created_ns`` when."""

    grey: np.ndarray
    full_size: tuple[int, int]  # (width, height) of the camera's pictures
    points: np.ndarray
    descriptors: np.ndarray | None
    static: np.ndarray
    detail: np.ndarray  # (rows, cols) bool
    sharpness: float
    origin: str
    created_ns: int
    image: np.ndarray | None = field(default=None, compare=False, repr=False)  # a small BGR copy for snapshots

    @classmethod
    def from_frame(cls, image: np.ndarray, width_px: int, origin: str, created_ns: int) -> "ViewReference":
        g = grey_small(image, width_px)
        pts, desc = _features(g)
        detail = _block_std(g) >= DETAIL_STD
        h, w = np.asarray(image).shape[:2]
        return cls(g, (int(w), int(h)), pts, desc, np.ones(len(pts), bool), detail, _sharpness(g, detail), origin,
                   int(created_ns), _small_bgr(image, width_px))

    def with_static(self, votes: np.ndarray, checks: int) -> "ViewReference":
        """The same reference registering with only the features seen in place in at least half the ``checks``
        (all of them when that leaves too few)."""
        keep = votes >= max(1, math.ceil(STATIC_VOTE_SHARE * checks))
        if int(keep.sum()) < MIN_STATIC:
            keep = np.ones(len(self.points), bool)
        return ViewReference(self.grey, self.full_size, self.points, self.descriptors, keep, self.detail,
                             self.sharpness, self.origin, self.created_ns, self.image)

    # ---- stored per camera -------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write to ``path`` (``.npz``; written beside and renamed, so a crash leaves the old one) and a JPEG of
        the view beside it (``.jpg``) for people."""
        import cv2

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        meta = {"full_size": list(self.full_size), "sharpness": self.sharpness, "origin": self.origin,
                "created_ns": self.created_ns}
        np.savez_compressed(tmp, grey=self.grey, points=self.points, static=self.static, detail=self.detail,
                            descriptors=self.descriptors if self.descriptors is not None else np.zeros((0, 32), np.uint8),
                            image=self.image if self.image is not None else np.zeros((0, 0, 3), np.uint8),
                            meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        tmp.replace(path)
        if self.image is not None:
            cv2.imwrite(str(path.with_suffix(".jpg")), self.image)

    @classmethod
    def load(cls, path: Path) -> "ViewReference | None":
        """The reference stored at ``path``, or None (absent, or unreadable: logged, and a new one is learnt)."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                desc = z["descriptors"]
                image = z["image"]
                return cls(z["grey"], tuple(meta["full_size"]), z["points"], desc if len(desc) else None,
                           z["static"].astype(bool), z["detail"].astype(bool), float(meta["sharpness"]),
                           str(meta["origin"]), int(meta["created_ns"]), image if image.size else None)
        except Exception as exc:  # noqa: BLE001 - a damaged file must not stop the camera
            log.warning("view reference %s is unreadable (%s): a new one is learnt", path, exc)
            return None


def _small_bgr(image: np.ndarray, width_px: int) -> np.ndarray:
    import cv2

    img = np.asarray(image)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    h, w = img.shape[:2]
    if w > width_px:
        img = cv2.resize(img, (width_px, max(1, round(h * width_px / w))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


@dataclass(frozen=True, slots=True)
class ViewMeasure:
    """One check of a picture against the reference.

    ``method``: how it was registered: ``features`` (ORB + RANSAC similarity: shift, rotation, zoom), ``phase``
    (phase correlation of the edges: a shift only; the features did not match, e.g. a day reference at night) or
    None (neither: covered, or nothing of the reference in view). Then ``inliers`` (features that agree), ``dx_px``,
    ``dy_px`` (where the reference's principal point is seen now, minus where it was; full-size pixels),
    ``rotation_deg`` (counter-clockwise in the picture), ``zoom`` (scale, 1 = same) and, for a calibrated camera,
    how far it turned since the reference: ``pan_deg`` (positive: to the right, clockwise from above), ``tilt_deg``
    (positive: up) and ``roll_deg``. ``lost_detail``: the share of the reference's detailed blocks that are flat
    now; ``detail``: blocks detailed now over the reference's; ``sharpness_ratio``: sharpness now over the
    reference's; ``brightness``: mean grey level. ``moved`` / ``blurred`` are None when they cannot be told (the
    picture is covered)."""

    method: str | None
    inliers: int
    dx_px: float
    dy_px: float
    rotation_deg: float
    zoom: float
    pan_deg: float | None
    tilt_deg: float | None
    roll_deg: float | None
    lost_detail: float
    detail: float
    sharpness_ratio: float
    brightness: float
    moved: bool | None
    covered: bool
    blurred: bool | None
    took_ms: float = 0.0

    @property
    def matched(self) -> bool:
        return self.method is not None

    @property
    def shift_px(self) -> float:
        return math.hypot(self.dx_px, self.dy_px)

    def conditions(self) -> dict[str, bool | None]:
        """Condition -> held at this check (None: cannot be told)."""
        return {MOVED: self.moved, COVERED: self.covered, BLURRED: self.blurred}

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (rounded) for an incident's attributes."""
        def r(v, n=2):
            return None if v is None or not math.isfinite(v) else round(float(v), n)

        return {"method": self.method, "inliers": self.inliers, "shift_px": r(self.shift_px, 1), "dx_px": r(self.dx_px, 1),
                "dy_px": r(self.dy_px, 1), "rotation_deg": r(self.rotation_deg), "zoom": r(self.zoom, 3),
                "pan_deg": r(self.pan_deg), "tilt_deg": r(self.tilt_deg), "roll_deg": r(self.roll_deg),
                "lost_detail": r(self.lost_detail), "detail": r(self.detail), "sharpness_ratio": r(self.sharpness_ratio),
                "brightness": r(self.brightness, 1)}

    def finding(self) -> str:
        """What was found, in words: ``moved by 23 px (pan +0.52 deg, tilt -0.10 deg, roll +0.01 deg)``, ..."""
        out = []
        if self.moved:
            if self.method is None:
                out.append("moved: the picture no longer shows its reference view")
            else:
                angles = ("" if self.pan_deg is None else
                          f" (pan {self.pan_deg:+.2f} deg, tilt {self.tilt_deg:+.2f} deg, roll {self.roll_deg:+.2f} deg)")
                out.append(f"moved by {self.shift_px:.0f} px{angles}"
                           + (f", rotated {self.rotation_deg:+.2f} deg" if self.pan_deg is None and self.method == "features" else "")
                           + (f", zoom x{self.zoom:.3f}" if abs(self.zoom - 1.0) >= 0.01 else ""))
        if self.covered:
            out.append(f"covered: {self.lost_detail:.0%} of the reference's detail is gone")
        if self.blurred:
            out.append(f"blurred: sharpness {self.sharpness_ratio:.0%} of the reference's")
        return "; ".join(out) or "the view matches its reference"


def _edges(g: np.ndarray) -> np.ndarray:
    """Gradient magnitude over its local mean (``float32``, analysis size): the scene's structure with the lighting
    divided out, so a day reference and an infrared night picture correlate."""
    import cv2

    f = cv2.GaussianBlur(g.astype(np.float32), (0, 0), 1.0)
    gx, gy = cv2.Sobel(f, cv2.CV_32F, 1, 0), cv2.Sobel(f, cv2.CV_32F, 0, 1)
    m = np.sqrt(gx * gx + gy * gy)
    return m / (cv2.GaussianBlur(m, (0, 0), 8.0) + 1.0)


def _phase_shift(reference: ViewReference, g: np.ndarray) -> tuple[float, float] | None:
    """Translation (analysis pixels) of ``g`` against the reference by phase correlation of their edges, or None
    when the correlation peak is too weak to believe (PHASE_MIN_RESPONSE)."""
    import cv2

    win = cv2.createHanningWindow((g.shape[1], g.shape[0]), cv2.CV_32F)
    (sx, sy), response = cv2.phaseCorrelate(_edges(reference.grey), _edges(g), win)
    return (float(sx), float(sy)) if response >= PHASE_MIN_RESPONSE else None


def register(reference: ViewReference, g: np.ndarray) -> tuple[np.ndarray | None, int, np.ndarray, str | None]:
    """``(similarity (2, 3), inliers, per reference feature: an inlier, method)`` taking the reference (analysis
    size) to ``g``: ORB features of the reference's static parts matched and fitted by RANSAC (``features``), else a
    phase correlation of the edges (``phase``, a shift only), else ``(None, 0, ..., None)``."""
    import cv2

    inlier_ref = np.zeros(len(reference.points), bool)
    pts, desc = _features(g)
    idx = np.flatnonzero(reference.static)
    n = 0
    if reference.descriptors is not None and desc is not None and len(desc) >= 2 and len(idx) >= 2:
        pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(reference.descriptors[idx], desc, k=2)
        good = [(idx[p[0].queryIdx], p[0].trainIdx) for p in pairs
                if len(p) == 2 and p[0].distance < RATIO_TEST * p[1].distance]
        if len(good) >= MIN_INLIERS:
            src = reference.points[[a for a, _ in good]]
            dst = pts[[b for _, b in good]]
            m, inl = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX,
                                                 maxIters=3000, confidence=0.999, refineIters=20)
            if m is not None and inl is not None:
                inl = inl.ravel().astype(bool)
                n = int(inl.sum())
                if n >= MIN_INLIERS:
                    inlier_ref[[a for (a, _), ok in zip(good, inl) if ok]] = True
                    return m, n, inlier_ref, "features"
    shift = _phase_shift(reference, g)
    if shift is None:
        return None, n, inlier_ref, None
    return np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]]), n, inlier_ref, "phase"


def _analysis_grey(reference: ViewReference, image: np.ndarray) -> np.ndarray:
    import cv2

    g = grey_small(image, reference.grey.shape[1])
    if g.shape != reference.grey.shape:  # another picture size than the reference's (the stream changed)
        g = cv2.resize(g, (reference.grey.shape[1], reference.grey.shape[0]), interpolation=cv2.INTER_AREA)
    return g


def measure(reference: ViewReference, image: np.ndarray, config: ViewCheckConfig,
            intrinsics: CameraIntrinsics | None = None) -> ViewMeasure:
    """Check one picture (BGR or grey, the camera's full size) against ``reference``: see the module's docstring."""
    t0 = time.perf_counter()
    g = _analysis_grey(reference, image)
    full_w, full_h = reference.full_size
    scale = full_w / g.shape[1]
    detail_now = _block_std(g) >= DETAIL_STD
    ref_detail = reference.detail
    n_ref = int(ref_detail.sum())
    lost = float((ref_detail & ~detail_now).sum()) / n_ref if n_ref else 0.0
    detail = float(detail_now.sum()) / n_ref if n_ref else 0.0
    brightness = float(g.mean())
    covered = n_ref > 0 and lost >= config.covered_fraction and (config.covered_when_dark or brightness >= DARK_MEAN)
    both = ref_detail & detail_now
    sharp = _sharpness(g, both) if both.sum() >= max(4, 0.05 * n_ref) else float("nan")
    ratio = sharp / reference.sharpness if math.isfinite(sharp) and reference.sharpness > 0 else float("nan")
    blurred = None if covered or not math.isfinite(ratio) else ratio < config.blurred_ratio

    m, n, _, method = register(reference, g) if not covered else (None, 0, None, None)
    k = intrinsics
    # the calibration's intrinsics, scaled to the size of the pictures checked
    sx, sy = (full_w / k.width_px, full_h / k.height_px) if k is not None else (1.0, 1.0)
    cx, cy = (k.cx_px * sx, k.cy_px * sy) if k is not None else (full_w / 2.0, full_h / 2.0)
    dx = dy = rot = zoom = float("nan")
    pan = tilt = roll = None
    if m is not None:
        c = np.array([cx / scale, cy / scale, 1.0])
        p = m @ c
        dx, dy = float(p[0] - c[0]) * scale, float(p[1] - c[1]) * scale
        # image y points down, so atan2(m10, m00) turns clockwise on screen: counter-clockwise is reported positive
        rot = -math.degrees(math.atan2(m[1, 0], m[0, 0]))
        zoom = math.hypot(m[0, 0], m[1, 0])
        if k is not None:
            pan = -math.degrees(math.atan2(dx, k.fx_px * sx))  # the scene moves left when the camera turns right
            tilt = math.degrees(math.atan2(dy, k.fy_px * sy))  # and down when it looks up
            roll = rot  # measured against the project's pose convention (tests/test_view_check.py)
    moved: bool | None
    if covered:
        moved = None  # nothing to measure: the covered condition says it
    elif m is None:
        # detail, but nothing of the reference: turned away (or a scene too changed to match: see the limits)
        moved = True if detail >= 0.8 and lost < 0.5 else None
    else:
        moved = (math.hypot(dx, dy) >= config.moved_px or abs(rot) >= config.moved_roll_deg
                 or abs(zoom - 1.0) >= config.moved_zoom
                 or (pan is not None and max(abs(pan), abs(tilt or 0.0)) >= config.moved_deg))
    return ViewMeasure(method, n, dx, dy, rot, zoom, pan, tilt, roll, lost, detail, ratio, brightness,
                       None if moved is None else bool(moved), bool(covered), blurred,
                       (time.perf_counter() - t0) * 1000.0)


@dataclass(frozen=True, slots=True)
class ViewChange:
    """A condition raised (``phase`` ``start``: it began at ``since_ns``) or ended (``end``: clear since
    ``since_ns``) at the check of ``at_ns``, with that check's ``measure`` (None for an end by reference reset)."""

    condition: str
    phase: str
    since_ns: int
    at_ns: int
    measure: ViewMeasure | None
    reason: str = ""


class ViewMonitor:
    """One fixed camera's view check: its reference (stored at ``path``), the checks' cadence and each condition's
    persistence.

    Without a stored reference the first stable ``reference_after_s`` after start is learnt: the first picture with
    detail is the candidate, every check after it must register on it within half ``moved_px`` (else the newest
    picture is the candidate and the time starts again), and the candidate's features that were seen in place in at
    least half the checks are the static ones registration uses from then on. :meth:`set_reference` takes a
    picture as the reference at once (calibration applied, an administrator's reset): all its features are used.

    Not thread-safe: the service calls it from its watch thread, under a lock for resets."""

    def __init__(self, source_id: str, config: ViewCheckConfig, intrinsics: CameraIntrinsics | None = None,
                 path: Path | None = None) -> None:
        self.source_id = source_id
        self.config = config
        self.intrinsics = intrinsics
        self.path = path
        self.reference = ViewReference.load(path) if path is not None else None
        if self.reference is not None:
            log.info("source %s: view reference from %s (%s, %s)", source_id, path, self.reference.origin,
                     time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.reference.created_ns / 1e9)))
        self._candidate: ViewReference | None = None
        self._votes = np.zeros(0, np.int32)
        self._checks = 0
        self._candidate_ns = 0
        self.last_check_ns: int | None = None
        self.last: ViewMeasure | None = None
        self.pending: dict[str, int] = {}  # condition -> since when it holds (not raised yet)
        self.raised: dict[str, int] = {}  # condition -> since when it held (raised)
        self.clearing: dict[str, int] = {}  # raised condition -> since when it is clear
        self._seeing_ns: int | None = None  # the last check that saw most of the reference's detail
        # learning without a reference: since when, and how often the candidate was dropped because the picture moved
        # (a camera whose whole picture keeps moving never learns one, and is never checked: the API says so)
        self._learning_since_ns: int | None = None
        self._learning_restarts = 0

    @property
    def learning(self) -> bool:
        return self.reference is None

    def due(self, now_ns: int) -> bool:
        """A check is due at ``now_ns`` (also when the clock went back: the stream's clock was re-synchronised)."""
        last = self.last_check_ns
        return last is None or now_ns < last or now_ns - last >= int(self.config.interval_s * 1e9)

    def check(self, image: np.ndarray, now_ns: int) -> list[ViewChange]:
        """Check one picture taken at ``now_ns`` (call when :meth:`due`); the conditions raised or ended now."""
        last = self.last_check_ns
        # no pictures for a while (the camera was down), or the clock went back: what was pending starts again
        gap = last is not None and (now_ns - last > 3 * int(self.config.interval_s * 1e9) or now_ns < last)
        self.last_check_ns = int(now_ns)
        if self.reference is None:
            if self._learning_since_ns is None:
                self._learning_since_ns = int(now_ns)
            self._learn(image, now_ns)
            if self.reference is not None:  # learnt on this picture: it saw the scene
                self._seeing_ns = int(now_ns)
            return []
        if gap:
            self.pending.clear()
            self.clearing.clear()
        m = measure(self.reference, image, self.config, self.intrinsics)
        self.last = m
        out: list[ViewChange] = []
        cfg = self.config
        conds = m.conditions()
        if m.covered and m.brightness < DARK_MEAN and COVERED not in self.raised and COVERED not in self.pending:
            # dark and flat: a cover only when the picture went so from one check to the next (a cap, a hand, tape);
            # one that faded into the dark over minutes (dusk over an unlit sea) is night, not a cover
            seeing = self._seeing_ns
            if seeing is None or now_ns - seeing > 2 * int(cfg.interval_s * 1e9):
                conds[COVERED] = None
        if not m.covered and m.lost_detail < 0.5:
            self._seeing_ns = int(now_ns)
        for cond, held in conds.items():
            if held is None:
                continue
            if held:
                self.clearing.pop(cond, None)
                if cond not in self.raised:
                    since = self.pending.setdefault(cond, int(now_ns))
                    if now_ns - since >= int(cfg.raise_after_s * 1e9):
                        self.raised[cond] = self.pending.pop(cond)
                        out.append(ViewChange(cond, "start", since, int(now_ns), m))
            else:
                self.pending.pop(cond, None)
                if cond in self.raised:
                    clear = self.clearing.setdefault(cond, int(now_ns))
                    if now_ns - clear >= int(cfg.clear_after_s * 1e9):
                        del self.raised[cond]
                        del self.clearing[cond]
                        out.append(ViewChange(cond, "end", clear, int(now_ns), m, "the view matches its reference again"))
        return out

    def _learn(self, image: np.ndarray, now_ns: int) -> None:
        cfg = self.config
        cand = self._candidate
        if cand is not None:
            g = _analysis_grey(cand, image)
            m, _, inl, method = register(cand, g)
            scale = cand.full_size[0] / g.shape[1]
            stable = m is not None and math.hypot(m[0, 2], m[1, 2]) * scale < cfg.moved_px / 2 and abs(
                math.degrees(math.atan2(m[1, 0], m[0, 0]))) < cfg.moved_roll_deg / 2
            if stable:
                self._votes += inl
                self._checks += 1
                if now_ns - self._candidate_ns >= int(cfg.reference_after_s * 1e9) and self._checks >= 2:
                    self._adopt(cand.with_static(self._votes, self._checks))
                return
            log.debug("source %s: view not stable yet (%s): learning its reference again", self.source_id,
                      "no match" if m is None else f"{method}")
            self._learning_restarts += 1
        cand = ViewReference.from_frame(image, cfg.analysis_width_px, "learnt", now_ns)
        if cand.detail.mean() < 0.1:  # dark or covered at start: nothing to compare with later
            log.info("source %s: the picture has little detail (%.0f%% of blocks): waiting for a better one to learn "
                     "the view reference from", self.source_id, 100 * cand.detail.mean())
            self._candidate = None
            return
        if cfg.reference_after_s <= 0:
            self._adopt(cand)
            return
        self._candidate, self._votes, self._checks, self._candidate_ns = cand, np.zeros(len(cand.points), np.int32), 0, int(now_ns)

    def _adopt(self, reference: ViewReference) -> None:
        self.reference = reference
        self._candidate = None
        self._learning_since_ns, self._learning_restarts = None, 0
        log.info("source %s: view reference %s (%d of %d features static)", self.source_id, reference.origin,
                 int(reference.static.sum()), len(reference.points))
        self._save()

    def _save(self) -> None:
        if self.path is None or self.reference is None:
            return
        try:
            self.reference.save(self.path)
        except OSError as exc:
            log.error("source %s: cannot store its view reference at %s: %s (it is kept in memory)", self.source_id,
                      self.path, exc)

    def set_reference(self, image: np.ndarray | None, origin: str, now_ns: int) -> list[ViewChange]:
        """Take ``image`` as the reference now (None: learn one again from the next stable minute); every raised
        condition ends (``reference <origin>``) and nothing pending is kept."""
        out = [ViewChange(c, "end", int(now_ns), int(now_ns), self.last, f"view reference {origin}")
               for c in list(self.raised)]
        self.raised.clear()
        self.pending.clear()
        self.clearing.clear()
        self.last = None
        self._candidate = None
        if image is None:
            self.reference = None
            self._learning_since_ns, self._learning_restarts = None, 0
            if self.path is not None:
                self.path.unlink(missing_ok=True)
        else:
            self._adopt(ViewReference.from_frame(image, self.config.analysis_width_px, origin, now_ns))
            self._seeing_ns = int(now_ns)  # the picture taken as the reference sees the scene
        return out

    def status(self) -> dict[str, Any]:
        """The check's state for the API: ``state`` in a word (``learning``, ``ok``, ``moved`` / ``covered`` /
        ``blurred`` (raised; the first of these), or ``checking`` while a condition holds but is not raised yet),
        ``finding`` (the last check's finding in words), the reference's origin and time, what is raised and what
        is pending (condition -> since when, UTC ns), when it was last checked, and the last check's measures; while
        learning, since when (``learning_since_ns``) and how often the picture moved under the candidate
        (``learning_restarts``): a camera whose picture never holds still is never checked."""
        ref, last = self.reference, self.last
        raised = sorted(self.raised)
        first = next((c for c in (MOVED, COVERED, BLURRED) if c in self.raised), None)
        state = "learning" if ref is None else first or ("checking" if self.pending else "ok")
        return {"state": state, "learning": ref is None, "reference_origin": None if ref is None else ref.origin,
                "reference_ns": None if ref is None else ref.created_ns, "raised": raised,
                "pending": {c: int(t) for c, t in sorted(self.pending.items())},
                "last_check_ns": self.last_check_ns,
                "learning_since_ns": self._learning_since_ns if ref is None else None,
                "learning_restarts": self._learning_restarts if ref is None else 0,
                "finding": None if ref is None or last is None else last.finding(),
                "last": None if last is None else last.as_dict()}


def snapshot_image(current: np.ndarray, reference: ViewReference | None, width_px: int = 960) -> np.ndarray:
    """The current picture (left) beside the reference view (right), each ``width_px`` wide, labelled, as one BGR
    image: what an operator compares in an incident's snapshot."""
    import cv2

    cur = _small_bgr(current, width_px)
    if cur.shape[1] < width_px:
        cur = cv2.resize(cur, (width_px, round(cur.shape[0] * width_px / cur.shape[1])))
    panels = [cur]
    if reference is not None and reference.image is not None:
        ref = cv2.resize(reference.image, (cur.shape[1], cur.shape[0]), interpolation=cv2.INTER_AREA)
        panels.append(ref)
    out = np.hstack(panels) if len(panels) > 1 else cur.copy()
    for i, text in enumerate(("now", "reference")[:len(panels)]):
        x = 10 + i * cur.shape[1]
        cv2.putText(out, text, (x, 34), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(out, text, (x, 34), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
    return out
