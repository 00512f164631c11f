"""Several registered models run as one detector: ``coco_yolov5n+vessel_cpu`` in a source's ``models``, in
``seawatch detect --models`` or in ``seawatch evaluate --vessel-models``.

Each member runs on the same frames (or the same tiles, under tiled inference). For a label that more than one
member emits, their boxes are fused as views of one frame (:func:`seawatch.vision.tiling.fuse_views`): one box per
object, its confidence the mean over those members (a member that missed it counts 0), so what both models find
keeps its score and what only one finds keeps half. Labels only one member emits pass through as that member gave
them. A group therefore replaces its members in a source's model list.

Why: two differently trained models err differently. On the two held-out port cameras (models/VESSEL.md, "CPU training"),
COCO's boat class fused with a model fine-tuned on CPU ranks vessels better than either alone, and better than
COCO with its own mirror image as the second view at the same cost (two passes a tile).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from seawatch.errors import ModelError
from seawatch.vision.detections import Detections

SEP = "+"


def members_of(name: str) -> tuple[str, ...] | None:
    """The member names of a group name (``a+b`` -> ``("a", "b")``), None for one model's name. Raises
    ModelError for an empty member or one named twice."""
    if SEP not in name:
        return None
    parts = tuple(p.strip() for p in name.split(SEP))
    if any(not p for p in parts):
        raise ModelError(f"model group {name!r} has an empty member; write NAME{SEP}NAME, e.g. coco_yolov5n{SEP}vessel")
    if len(set(parts)) != len(parts):
        raise ModelError(f"model group {name!r} names a model twice")
    if any(":" in p for p in parts):
        raise ModelError(f"model group {name!r}: a variant (NAME:VARIANT) applies to the whole group, not a member")
    return parts


class FusedDetector:
    """A model group with the detector interface the pipeline, tiling and evaluation use (``detect``, ``labels``,
    ``name``, ``settings``, timings)."""

    def __init__(self, name: str, members: list, parallel: bool = False) -> None:
        """``parallel``: the members run at the same time, each in its own thread (onnxruntime releases the GIL),
        rather than one after the other; :func:`seawatch.vision.detector.load_detector` then gives each member its
        share of the CPU threads."""
        if len(members) < 2:
            raise ModelError(f"model group {name!r} needs at least two models")
        self.name = name
        self.members = list(members)
        self._pool = ThreadPoolExecutor(len(members) - 1, thread_name_prefix=f"group-{name}") if parallel else None
        labels: list[str] = []
        for m in self.members:
            labels += [lab for lab in m.labels if lab not in labels]
        self.labels = tuple(labels)
        first = self.members[0].settings
        self.settings = replace(first, conf=min(m.settings.conf for m in self.members),
                                max_det=max(m.settings.max_det for m in self.members))
        # the tile size a group is trained for (tiling "auto"): its members' smallest, so no member sees less
        # detail than it was trained on
        from seawatch.vision.tiling import model_tile

        self.tile_px = min(model_tile(m).size_px for m in self.members)

    @property
    def last_timing(self):
        return self._timing("last_timing")

    @property
    def total_timing(self):
        return self._timing("total_timing")

    def _timing(self, attr: str):
        """The members' stage times added up, over the frames the group saw (each member saw the same ones): the
        work done; members running side by side take less wall time than that."""
        first = getattr(self.members[0], attr)
        return replace(sum((getattr(m, attr) for m in self.members[1:]), first), frames=first.frames)

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        if self._pool is None:
            per_member = [m.detect(images) for m in self.members]
        else:  # the first member in this thread, the others beside it
            others = [self._pool.submit(m.detect, images) for m in self.members[1:]]
            per_member = [self.members[0].detect(images)] + [f.result() for f in others]
        return [self._fuse([out[i] for out in per_member]) for i in range(len(images))]

    __call__ = detect

    def _fuse(self, parts: list[Detections]) -> Detections:
        from seawatch.vision.tiling import fuse_views

        out: list[Detections] = []  # per label, on the group's label table and in its name
        for k, label in enumerate(self.labels):
            views = [self._relabel(p.with_label(label), k) for p, m in zip(parts, self.members) if label in m.labels]
            out.append(views[0] if len(views) == 1 else fuse_views(views))
        merged = Detections.merge(out)
        order = np.argsort(-merged.confidence, kind="stable")[: self.settings.max_det]
        return merged[order]

    def _relabel(self, det: Detections, k: int) -> Detections:
        return Detections(det.xyxy_px, det.confidence, np.full(len(det), k, np.int32), self.labels, None, self.name)

    def __repr__(self) -> str:
        return (f"FusedDetector({self.name!r}, members={[m.name for m in self.members]}, "
                f"parallel={self._pool is not None})")


def default_conf(name: str) -> float:
    """The operating threshold of a model or group: a group's is the mean of its members' (mean fusion maps
    members that each score exactly their threshold onto it)."""
    from seawatch.vision import registry

    members = members_of(name) or (name,)
    return float(np.mean([registry.get_manifest(m).defaults.conf for m in members]))


__all__ = ["SEP", "FusedDetector", "members_of", "default_conf"]
