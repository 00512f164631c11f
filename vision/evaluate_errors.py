"""``seawatch evaluate --errors DIR``: where a model goes wrong, as pictures.

For each scored (label, model) the false positives at the operating threshold and the labelled boxes it missed
there are collected; ``write`` puts into ``DIR``:

- ``<label>_<model>_false_positives.jpg``: the surest false boxes first (a model's precision at high confidence is
  lost to these: buoys, pilings, masts, houses on the shore, a boat boxed twice);
- ``<label>_<model>_misses.jpg``: the largest missed boxes first (small distant ones are expected misses; a large
  one is a real failure);
- ``errors.json``: every entry (file, box, confidence, kind), for a labelling tool or a script.

Each cell is a crop around the box (three times its size, at least 96 px of the frame), the model's box in red,
the labelled boxes in green, with the image's index in ``errors.json``'s ``files`` and the confidence.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seawatch.vision.metrics import box_iou

log = logging.getLogger(__name__)

CELL_PX = 160
COLUMNS = 8
MAX_CELLS = 64
NEAR_IOU = 0.1  # a false box overlapping a labelled one this much is misplaced or a duplicate, not background


@dataclass
class _Entry:
    file: int  # index into ErrorLog.files
    xyxy: tuple[float, float, float, float]
    conf: float | None  # None for a miss
    kind: str  # background | near_labelled | miss


@dataclass
class ErrorLog:
    files: list[str] = field(default_factory=list)
    entries: dict[tuple[str, str], list[_Entry]] = field(default_factory=dict)
    _index: dict[str, int] = field(default_factory=dict)
    _gt: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # per (file, label): for drawing

    def add(self, label: str, model: str, path: Path, pred_xyxy: np.ndarray, pred_conf: np.ndarray,
            tp: np.ndarray, gt_xyxy: np.ndarray, found: np.ndarray) -> None:
        """One image's predictions of ``label`` at or above the model's operating threshold, their match flags,
        and the labelled boxes with whether each was found at that threshold."""
        key = str(path)
        if key not in self._index:
            self._index[key] = len(self.files)
            self.files.append(key)
        i = self._index[key]
        self._gt[(i, label)] = np.asarray(gt_xyxy, np.float32).reshape(-1, 4)
        out = self.entries.setdefault((label, model), [])
        pred_xyxy = np.asarray(pred_xyxy, np.float32).reshape(-1, 4)
        near = (box_iou(pred_xyxy, gt_xyxy).max(axis=1) >= NEAR_IOU if len(gt_xyxy) and len(pred_xyxy)
                else np.zeros(len(pred_xyxy), bool))
        for b, c, t, n in zip(pred_xyxy, pred_conf, tp, near):
            if not t:
                out.append(_Entry(i, tuple(float(v) for v in b), float(c), "near_labelled" if n else "background"))
        for b, f in zip(np.asarray(gt_xyxy, np.float32).reshape(-1, 4), found):
            if not f:
                out.append(_Entry(i, tuple(float(v) for v in b), None, "miss"))

    def summary(self) -> dict[str, dict[str, dict[str, int]]]:
        out: dict[str, dict[str, dict[str, int]]] = {}
        for (label, model), es in sorted(self.entries.items()):
            kinds = {"background": 0, "near_labelled": 0, "miss": 0}
            for e in es:
                kinds[e.kind] += 1
            out.setdefault(label, {})[model] = {"false_background": kinds["background"],
                                                "false_near_labelled": kinds["near_labelled"],
                                                "missed": kinds["miss"]}
        return out

    def write(self, out_dir: Path) -> list[Path]:
        """The contact sheets and errors.json; returns the files written. Raises InputError when ``out_dir``
        cannot be written."""
        from seawatch.errors import InputError

        out_dir = Path(out_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--errors {out_dir}: cannot create the folder: {exc}") from None
        sheets: list[tuple[Path, str, list[_Entry]]] = []
        for (label, model), es in sorted(self.entries.items()):
            safe = f"{label}_{model}".replace(":", "-").replace("+", "-").replace("/", "-")
            fps = sorted((e for e in es if e.kind != "miss"), key=lambda e: -(e.conf or 0.0))
            misses = sorted((e for e in es if e.kind == "miss"), key=lambda e: -_side(e.xyxy))
            for name, sel in (("false_positives", fps), ("misses", misses)):
                if sel:
                    sheets.append((out_dir / f"{safe}_{name}.jpg", label, sel[:MAX_CELLS]))
        # every cell cut from its frame with the frame read once, one frame in memory at a time
        cells: dict[tuple[int, int], np.ndarray] = {}
        wanted: dict[int, list[tuple[int, int, _Entry, str]]] = {}
        for k, (_, label, sel) in enumerate(sheets):
            for j, e in enumerate(sel):
                wanted.setdefault(e.file, []).append((k, j, e, label))
        for file, todo in sorted(wanted.items()):
            img = self._read(file)
            for k, j, e, label in todo:
                cells[(k, j)] = self._cell(e, label, img)
        written = []
        for k, (path, _, sel) in enumerate(sheets):
            if _sheet([cells[(k, j)] for j in range(len(sel))], path):
                written.append(path)
        report = {"files": self.files,
                  "errors": {f"{label}/{model}": [{"file": e.file, "xyxy_px": [round(v, 1) for v in e.xyxy],
                                                    "conf": None if e.conf is None else round(e.conf, 4),
                                                    "kind": e.kind} for e in es]
                             for (label, model), es in sorted(self.entries.items())}}
        try:
            (out_dir / "errors.json").write_text(json.dumps(report, indent=1) + "\n")
        except OSError as exc:
            raise InputError(f"--errors {out_dir}: cannot write errors.json: {exc}") from None
        written.append(out_dir / "errors.json")
        return written

    def _read(self, file: int) -> np.ndarray | None:
        from seawatch.errors import InputError
        from seawatch.vision.media import read_image

        try:
            return read_image(Path(self.files[file]))
        except InputError as exc:
            log.warning("evaluate --errors: %s", exc)
            return None

    def _cell(self, e: _Entry, label: str, img: np.ndarray | None) -> np.ndarray:
        import cv2

        cell = np.zeros((CELL_PX, CELL_PX, 3), np.uint8)
        if img is not None:
            x1, y1, x2, y2 = e.xyxy
            side = max(96.0, 3.0 * _side(e.xyxy))
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            h, w = img.shape[:2]
            X0, Y0 = int(max(0, min(w - 1, cx - side / 2))), int(max(0, min(h - 1, cy - side / 2)))
            X1, Y1 = int(min(w, max(X0 + 1, cx + side / 2))), int(min(h, max(Y0 + 1, cy + side / 2)))
            crop = img[Y0:Y1, X0:X1].copy()
            for g in self._gt.get((e.file, label), ()):
                cv2.rectangle(crop, (int(g[0] - X0), int(g[1] - Y0)), (int(g[2] - X0), int(g[3] - Y0)), (0, 255, 0), 1)
            if e.kind != "miss":
                cv2.rectangle(crop, (int(x1 - X0), int(y1 - Y0)), (int(x2 - X0), int(y2 - Y0)), (0, 0, 255), 1)
            scale = CELL_PX / max(crop.shape[:2])
            crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                              interpolation=cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA)
            cell[:crop.shape[0], :crop.shape[1]] = crop
        text = f"#{e.file} " + (f"{e.conf:.2f}" if e.conf is not None else f"{_side(e.xyxy):.0f}px")
        cv2.putText(cell, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3)
        cv2.putText(cell, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1)
        return cell


def _side(xyxy) -> float:
    return float(max(xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]))


def _sheet(cells: list[np.ndarray], path: Path) -> bool:
    import cv2

    if not cells:
        return False
    rows = (len(cells) + COLUMNS - 1) // COLUMNS
    sheet = np.full((rows * CELL_PX, min(len(cells), COLUMNS) * CELL_PX, 3), 40, np.uint8)
    for k, c in enumerate(cells):
        r, col = divmod(k, COLUMNS)
        sheet[r * CELL_PX:(r + 1) * CELL_PX, col * CELL_PX:(col + 1) * CELL_PX] = c
    return bool(cv2.imwrite(str(path), sheet, [cv2.IMWRITE_JPEG_QUALITY, 90]))
