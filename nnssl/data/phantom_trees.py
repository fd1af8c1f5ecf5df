"""Branching pulmonary vessel and airway trees for CT phantoms, rasterized as tubes with a partial-volume edge.

A tree grows by recursive splitting of points sampled in one lung: each branch heads for the centroid of its points,
the points split in two along their principal axis, and child radii follow Murray's law (r^3 shared in proportion to
the points each child supplies), so the tree fills the lung and thins towards the periphery.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnssl.data.phantom_anatomy import BodyFrame, Thorax, Tissue

POINTS_PER_TREE = 256
LEAF_POINTS = 2
MAX_DEPTH = 8
AIRWAY_DEPTH = 3  # lobar / segmental bronchi only; smaller airways are below CT resolution here
AIRWAY_WALL = 1.4  # outer wall radius over lumen radius
MURRAY_EXPONENT = 3.0


@dataclass(frozen=True)
class Segment:
    """A straight tube between two points in mm (Z, Y, X) from voxel (0, 0, 0)."""

    start: np.ndarray  # (3,)
    end: np.ndarray  # (3,)
    radius: float  # mm


def grow_tree(rng: np.random.Generator, root: np.ndarray, points: np.ndarray, radius: float,
              max_depth: int = MAX_DEPTH) -> list[Segment]:
    """Grow a branching tree from ``root`` (3,) towards ``points`` (K, 3), both in mm.

    Returns:
        The tree's segments; the first starts at ``root`` with ``radius``.
    """
    segments: list[Segment] = []
    stack = [(root, points, radius, 0)]
    while stack:
        start, pts, r, depth = stack.pop()
        centroid = pts.mean(axis=0)  # (3,)
        if len(pts) <= LEAF_POINTS or depth >= max_depth:
            segments.append(Segment(start, centroid, r))
            continue
        end = start + rng.uniform(0.35, 0.6) * (centroid - start)
        segments.append(Segment(start, end, r))
        centred = pts - centroid  # (K, 3)
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]  # principal direction (3,)
        proj = centred @ axis  # (K,)
        first = proj < np.median(proj)
        for half in (pts[first], pts[~first]):
            if len(half):
                share = (len(half) / len(pts)) ** (1.0 / MURRAY_EXPONENT)
                stack.append((end, half, r * share, depth + 1))
    return segments


def tube_fraction(shape: tuple[int, int, int], spacing: np.ndarray,
                  segment: Segment, radius: float) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """Voxel coverage of a tube of ``radius`` around ``segment``, inside its bounding box.

    Returns:
        ``(box, fraction)``: the box as slices into the volume and the coverage in [0, 1], shaped like the box;
        None if the tube lies outside the volume.
    """
    edge = float(spacing.min())  # width of the partial-volume ramp
    a, b = segment.start, segment.end
    lo = np.maximum(np.floor((np.minimum(a, b) - radius - edge) / spacing).astype(int), 0)
    hi = np.minimum(np.ceil((np.maximum(a, b) + radius + edge) / spacing).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None
    z = (np.arange(lo[0], hi[0]) * spacing[0] - a[0])[:, None, None]  # (z, 1, 1) mm from start
    y = (np.arange(lo[1], hi[1]) * spacing[1] - a[1])[None, :, None]  # (1, y, 1)
    x = (np.arange(lo[2], hi[2]) * spacing[2] - a[2])[None, None, :]  # (1, 1, x)
    ab = b - a
    along = np.clip((z * ab[0] + y * ab[1] + x * ab[2]) / max(float(ab @ ab), 1e-6), 0.0, 1.0)  # (z, y, x)
    dist = np.sqrt((z - along * ab[0]) ** 2 + (y - along * ab[1]) ** 2 + (x - along * ab[2]) ** 2)
    fraction = np.clip((radius - dist) / edge + 0.5, 0.0, 1.0).astype(np.float32)  # (z, y, x)
    return tuple(slice(int(l0), int(h0)) for l0, h0 in zip(lo, hi, strict=True)), fraction


def _sample_points(rng: np.random.Generator, mask: np.ndarray, spacing: np.ndarray, count: int) -> np.ndarray:
    """``count`` random points (K, 3) in mm inside ``mask``, jittered within their voxels."""
    flat = np.flatnonzero(mask)
    chosen = rng.choice(flat, size=min(count, flat.size), replace=False)
    index = np.stack(np.unravel_index(chosen, mask.shape), axis=1)  # (K, 3)
    return (index + rng.uniform(-0.5, 0.5, size=index.shape)) * spacing


def add_pulmonary_trees(rng: np.random.Generator, frame: BodyFrame, thorax: Thorax) -> np.ndarray:
    """Paint bronchi into ``thorax.tissue`` (gas lumen, soft-tissue wall) and rasterize arteries and veins.

    Returns:
        float32 (Z, Y, X): blood-vessel coverage in [0, 1], already limited to lungs and mediastinal fat.
    """
    spacing = np.asarray(frame.spacing, dtype=float)
    mm = {name: frame.to_mm(*point) for name, point in thorax.landmarks.items()}
    region = thorax.lung | thorax.mediastinum
    vessels = np.zeros(frame.shape, dtype=np.float32)
    min_radius = 0.3 * float(spacing.min())  # thinner vessels would vanish entirely; this keeps them faint
    scale = frame.half_width
    for side, hilum in ((frame.p < 0, mm["hilum_right"]), (frame.p > 0, mm["hilum_left"])):
        lung_side = thorax.lung & side  # (Z, Y, X)
        if not lung_side.any():
            continue
        artery_r, vein_r, bronchus_r = (scale * rng.uniform(*span) for span in
                                        ((0.055, 0.07), (0.05, 0.065), (0.04, 0.05)))
        segments = [Segment(mm["pulmonary_trunk"], hilum, artery_r)]
        segments += grow_tree(rng, hilum, _sample_points(rng, lung_side, spacing, POINTS_PER_TREE), artery_r)
        vein_root = 0.5 * (mm["left_atrium"] + hilum)
        segments.append(Segment(mm["left_atrium"], vein_root, vein_r))
        segments += grow_tree(rng, vein_root, _sample_points(rng, lung_side, spacing, POINTS_PER_TREE), vein_r)
        for segment in segments:
            _max_into(vessels, frame.shape, spacing, segment, max(segment.radius, min_radius))
        airway_points = _sample_points(rng, lung_side, spacing, POINTS_PER_TREE // 4)
        airways = [Segment(mm["carina"], hilum, bronchus_r)]
        airways += grow_tree(rng, hilum, airway_points, bronchus_r, max_depth=AIRWAY_DEPTH)
        _paint_airways(thorax, frame.shape, spacing, airways, region)
    vessels *= region
    return vessels


def _max_into(volume: np.ndarray, shape: tuple[int, int, int], spacing: np.ndarray, segment: Segment,
              radius: float) -> None:
    painted = tube_fraction(shape, spacing, segment, radius)
    if painted is not None:
        box, fraction = painted
        np.maximum(volume[box], fraction, out=volume[box])


def _paint_airways(thorax: Thorax, shape: tuple[int, int, int], spacing: np.ndarray, airways: list[Segment],
                   region: np.ndarray) -> None:
    """Walls first for every branch, then lumens, so a lumen is never covered by a neighbour's wall."""
    for radius_factor, tissue in ((AIRWAY_WALL, Tissue.SOFT), (1.0, Tissue.GAS)):
        for segment in airways:
            painted = tube_fraction(shape, spacing, segment, segment.radius * radius_factor)
            if painted is not None:
                box, fraction = painted
                thorax.tissue[box][(fraction >= 0.5) & region[box]] = tissue
