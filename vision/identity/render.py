"""Rendered hull numbers for evaluation and tests: random registrations painted on real vessel crops or
hull-like textures, then seen through a camera (perspective, roll, downscale, blur, noise, JPEG).

Chinese fishing numbers are drawn as province + port + 渔 + five digits with real province/port abbreviations;
Latin registrations as EU port letters + number (``SC 12``, ``UK 165``) or pinyin name + number
(``MIN SHI YU 6688``). CJK text needs a font with the glyphs: WenQuanYi Zen Hei (Debian ``fonts-wqy-zenhei``,
installed by scripts/setup.sh) or Noto Sans CJK.

Every function takes a ``numpy.random.Generator`` so that a seed reproduces the same images. Images are BGR
uint8 (H, W, 3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seawatch.errors import InputError

log = logging.getLogger(__name__)

FONT_PATHS = (
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
)
# province abbreviation -> port abbreviations that appear on fishing hull numbers
PORTS = {
    "浙": ("岱", "象", "普", "温", "椒", "嵊", "舟", "玉", "瑞", "苍"),
    "闽": ("狮", "霞", "连", "漳", "晋", "平", "东", "龙"),
    "粤": ("湛", "阳", "汕", "惠", "珠", "江", "茂"),
    "鲁": ("荣", "烟", "威", "蓬", "日", "青", "岚", "文"),
    "辽": ("大", "丹", "庄", "营", "锦", "葫", "长"),
    "苏": ("连", "启", "射", "滨", "如", "海"),
    "冀": ("黄港", "秦", "唐", "沧"),
    "琼": ("三", "临", "儋", "文", "万"),
    "桂": ("北", "防", "钦"),
    "沪": ("崇", "金"),
    "津": ("塘", "汉"),
}
EU_PORTS = ("SC", "UK", "TX", "GY", "NC", "HH", "SD", "BX", "NEU", "FIN", "SAS", "ST", "WH", "OD")
PINYIN = {"浙": "ZHE", "闽": "MIN", "粤": "YUE", "鲁": "LU", "辽": "LIAO", "苏": "SU", "冀": "JI", "琼": "QIONG",
          "桂": "GUI", "沪": "HU", "津": "JIN"}
HULL_COLOURS_RGB = ((25, 40, 95), (150, 30, 30), (225, 222, 210), (30, 90, 50), (110, 112, 118), (200, 90, 30))


def find_cjk_font() -> Path:
    for p in FONT_PATHS:
        if p.is_file():
            return p
    raise InputError("no CJK font found (looked for " + ", ".join(str(p) for p in FONT_PATHS)
                     + "); apt-get install fonts-wqy-zenhei")


def random_hull_number(rng: np.random.Generator) -> str:
    """e.g. ``浙岱渔03891``, ``冀黄港渔05211``."""
    prov = list(PORTS)[int(rng.integers(len(PORTS)))]
    port = PORTS[prov][int(rng.integers(len(PORTS[prov])))]
    return f"{prov}{port}渔{int(rng.integers(0, 100000)):05d}"


def random_latin_registration(rng: np.random.Generator) -> str:
    """e.g. ``SC 12`` (EU port letters + number) or ``MIN SHI YU 6688`` (pinyin name + number)."""
    if rng.random() < 0.5:
        return f"{EU_PORTS[int(rng.integers(len(EU_PORTS)))]} {int(rng.integers(1, 1000))}"
    prov = list(PORTS)[int(rng.integers(len(PORTS)))]
    return f"{PINYIN[prov]} {'HAI' if rng.random() < 0.5 else 'YU'} {int(rng.integers(10, 10000))}"


def hull_texture(rng: np.random.Generator, width_px: int, height_px: int) -> np.ndarray:
    """A painted steel hull side: base colour, vertical streaks and panel seams, a dark boot top at the bottom."""
    import cv2

    colour = np.array(HULL_COLOURS_RGB[int(rng.integers(len(HULL_COLOURS_RGB)))][::-1], np.float32)
    img = np.empty((height_px, width_px, 3), np.float32)
    img[:] = colour * rng.uniform(0.85, 1.1)
    shade = np.linspace(1.05, 0.85, height_px, dtype=np.float32)[:, None, None]  # light from above
    img *= shade
    for _ in range(int(rng.integers(4, 12))):  # rust streaks / seams
        x = int(rng.integers(0, width_px))
        cv2.line(img, (x, 0), (x + int(rng.integers(-15, 15)), height_px), (colour * rng.uniform(0.6, 0.9)).tolist(),
                 int(rng.integers(1, 4)))
    img[int(height_px * rng.uniform(0.8, 0.9)):] = (25, 25, 30)
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def vessel_crops(media_dir: Path, *, min_height_px: int = 40, max_crops: int = 64) -> list[np.ndarray]:
    """Real watercraft crops from the shared media's ``A_boats`` frames (YOLO labels, class 2 = sea craft)."""
    import cv2

    out: list[np.ndarray] = []
    for label in sorted((Path(media_dir) / "A_boats").glob("*.txt")):
        img_path = label.with_suffix(".jpg")
        if not img_path.is_file():
            continue
        img = None
        for line in label.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) != 5 or parts[0] != "2":
                continue
            if img is None:
                img = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
                if img is None:
                    break
            h, w = img.shape[:2]
            cx, cy, bw, bh = (float(v) for v in parts[1:])
            x0, x1 = int((cx - bw / 2) * w), int((cx + bw / 2) * w)
            y0, y1 = int((cy - bh / 2) * h), int((cy + bh / 2) * h)
            if y1 - y0 >= min_height_px and x1 - x0 >= min_height_px:
                out.append(img[max(0, y0):y1, max(0, x0):x1].copy())
        if len(out) >= max_crops:
            break
    return out[:max_crops]


@dataclass(frozen=True, slots=True)
class Degradation:
    """How a camera sees the painted hull. ``yaw_deg`` foreshortening (the hull seen obliquely), ``roll_deg``
    in-plane tilt, ``blur_sigma_px`` Gaussian blur after downscaling, ``noise`` sensor noise sigma (grey
    levels), ``jpeg_q`` JPEG quality (None: none)."""

    yaw_deg: float = 0.0
    roll_deg: float = 0.0
    blur_sigma_px: float = 0.0
    noise: float = 0.0
    jpeg_q: int | None = None

    @classmethod
    def random(cls, rng: np.random.Generator, severity: float = 1.0) -> "Degradation":
        return cls(yaw_deg=float(rng.uniform(-35, 35) * severity), roll_deg=float(rng.uniform(-5, 5) * severity),
                   blur_sigma_px=float(rng.uniform(0.0, 1.0) * severity), noise=float(rng.uniform(2, 12) * severity),
                   jpeg_q=int(rng.integers(35, 90)))


def paint_text(background: np.ndarray, text: str, rng: np.random.Generator, *, text_px: int = 96,
               text_frac: float = 0.22, font_path: Path | None = None) -> np.ndarray:
    """``background`` stretched to a vessel-crop canvas with ``text`` painted on its hull, at render scale.

    The canvas is ``text_px / text_frac`` rows high (the text is ``text_frac`` of the crop height) and wide
    enough for the text plus margins; the text is white or black, whichever contrasts with the paint under it.
    Of a dozen heights in the lower 70 % of the crop, the one where the background under the text is most
    uniform is used (on a real crop, that is the flat hull side, or sometimes the water in front of it).
    """
    import cv2
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path or find_cjk_font()), text_px)
    probe = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
    tw, th = x1 - x0, y1 - y0
    h = int(round(text_px / text_frac))
    w = int(max(tw * rng.uniform(1.25, 1.7), h * 1.6))
    canvas = cv2.resize(background, (w, h), interpolation=cv2.INTER_CUBIC)
    tx = int((w - tw) * rng.uniform(0.3, 0.7))
    # numbers are painted on the flat side of the hull: the most uniform band in the lower part of the crop
    grey = cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY).astype(np.float32)
    lo, hi = int(h * 0.3), max(int(h * 0.3) + 1, int(h * 0.92) - th)
    cands = np.linspace(lo, hi, 12).astype(int)
    ty = int(min(cands, key=lambda y: float(grey[y:y + th, tx:tx + tw].std()) if th > 0 else 0.0))
    region = canvas[max(0, ty):ty + th, max(0, tx):tx + tw]
    light = region.size == 0 or float(region.mean()) < 128
    ink = (240, 240, 235) if light else (20, 20, 25)
    img = Image.fromarray(canvas[:, :, ::-1].copy())
    ImageDraw.Draw(img).text((tx - x0, ty - y0), text, font=font, fill=ink)
    return np.asarray(img)[:, :, ::-1].copy()


def degrade(image: np.ndarray, crop_height_px: int, deg: Degradation, rng: np.random.Generator) -> np.ndarray:
    """The painted canvas as a camera crop ``crop_height_px`` rows high (width follows the aspect)."""
    import cv2

    h, w = image.shape[:2]
    img = image
    if deg.yaw_deg:
        # an oblique view: the far end of the hull is shorter and the hull shorter overall
        k = float(np.sin(np.radians(abs(deg.yaw_deg)))) * 0.5
        far = h * k / 2
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        if deg.yaw_deg > 0:
            dst = np.float32([[0, 0], [w, far], [w, h - far], [0, h]])
        else:
            dst = np.float32([[0, far], [w, 0], [w, h], [0, h - far]])
        dst[:, 0] *= float(np.cos(np.radians(deg.yaw_deg)))
        img = cv2.warpPerspective(img, cv2.getPerspectiveTransform(src, dst), (int(np.ceil(dst[:, 0].max())), h),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if deg.roll_deg:
        hh, ww = img.shape[:2]
        m = cv2.getRotationMatrix2D((ww / 2, hh / 2), deg.roll_deg, 1.0)
        img = cv2.warpAffine(img, m, (ww, hh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    hh, ww = img.shape[:2]
    out_w = max(8, int(round(ww * crop_height_px / hh)))
    img = cv2.resize(img, (out_w, crop_height_px), interpolation=cv2.INTER_AREA)
    if deg.blur_sigma_px > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), deg.blur_sigma_px)
    if deg.noise > 0:
        img = np.clip(img.astype(np.float32) + rng.normal(0, deg.noise, img.shape), 0, 255).astype(np.uint8)
    if deg.jpeg_q is not None:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(deg.jpeg_q)])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return img


def render_crop(text: str, crop_height_px: int, rng: np.random.Generator, *, background: np.ndarray | None = None,
                deg: Degradation | None = None, text_frac: float = 0.22) -> np.ndarray:
    """One camera crop of a vessel carrying ``text``: paint on ``background`` (default: a hull texture), degrade."""
    if background is None:
        background = hull_texture(rng, 480, 200)
    canvas = paint_text(background, text, rng, text_frac=text_frac)
    return degrade(canvas, crop_height_px, deg if deg is not None else Degradation(), rng)


def sea_frame(rng: np.random.Generator, width_px: int = 1280, height_px: int = 720) -> np.ndarray:
    """A sea-and-sky background frame (gradient sky, textured water)."""
    import cv2

    img = np.empty((height_px, width_px, 3), np.float32)
    horizon = int(height_px * 0.3)
    img[:horizon] = np.linspace(235, 180, horizon, dtype=np.float32)[:, None, None] * np.array([1.0, 0.9, 0.75], np.float32)
    water = np.linspace(120, 70, height_px - horizon, dtype=np.float32)[:, None, None] * np.array([1.0, 0.75, 0.4], np.float32)
    img[horizon:] = water
    waves = cv2.GaussianBlur(rng.normal(0, 10, (height_px - horizon, width_px)).astype(np.float32), (0, 0), 2.0)
    img[horizon:] += waves[:, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def place_boat(frame: np.ndarray, crop: np.ndarray, x0_px: int, y0_px: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A copy of ``frame`` with a boat-shaped region (a hull narrowing to a bow, carrying ``crop``'s pixels)
    pasted with its top-left at (x0, y0); returns the frame and the boat's box (x0, y0, x1, y1) pixels."""
    import cv2

    out = frame.copy()
    h, w = crop.shape[:2]
    fh, fw = out.shape[:2]
    x1, y1 = min(fw, x0_px + w), min(fh, y0_px + h)
    if x1 <= x0_px or y1 <= y0_px:
        return out, (float(x0_px), float(y0_px), float(x0_px), float(y0_px))
    mask = np.zeros((h, w), np.uint8)
    bow = int(w * 0.12)
    # hull outline: straight stern, bow raked forward, a deckhouse on the upper third
    pts = np.array([[0, int(h * 0.35)], [w - 1, int(h * 0.25)], [w - 1 - bow, h - 1], [int(w * 0.04), h - 1]], np.int32)
    cv2.fillPoly(mask, [pts], 255)
    cv2.rectangle(mask, (int(w * 0.15), 0), (int(w * 0.45), int(h * 0.35)), 255, -1)
    region = out[y0_px:y1, x0_px:x1]
    m = mask[: y1 - y0_px, : x1 - x0_px].astype(bool)
    region[m] = crop[: y1 - y0_px, : x1 - x0_px][m]
    return out, (float(x0_px), float(y0_px), float(x1), float(y1))


__all__ = ["Degradation", "degrade", "find_cjk_font", "hull_texture", "paint_text", "place_boat",
           "random_hull_number", "random_latin_registration", "render_crop", "sea_frame", "vessel_crops"]
