"""Lung tumours for CT phantoms: lobulated or spiculated solid nodules, 3-40 mm, placed inside the lungs.

A tumour is star-shaped around its centre: its surface radius in direction ``u`` is
``R * (1 + sum_k a_k cos(pi f_k u.d_k + phi_k)) + sum_j L_j max(0, u.e_j)^P_j`` (lobules, then thin spicules along
a few directions ``e_j``). It is painted with a partial-volume edge; the label is the part covering at least half a
voxel, kept connected to the centre.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

TUMOUR_COUNT_PROBABILITIES = (0.05, 0.45, 0.3, 0.2)  # P(0), P(1), P(2), P(3) tumours per scan
DIAMETER_RANGE_MM = (3.0, 40.0)
MIN_SLICES_ACROSS = 2.0  # the smallest tumour still spans this many slices, so it stays visible
SPICULATED_PROBABILITY = 0.4
LOBULES = 4
MAX_LOBULATION = 0.3  # lobules change the radius by at most this fraction
MAX_SPICULE = 0.6  # spicules reach at most this fraction of R beyond the surface
PLACEMENT_TRIES = 20
EDT_STRIDE = 2  # the lung distance map for placement is computed on every 2nd voxel


@dataclass(frozen=True)
class Tumour:
    """One tumour of a phantom.

    Attributes:
        centre_mm: centre in mm (Z, Y, X) from voxel (0, 0, 0).
        diameter_mm: nominal diameter ``2 R`` before lobules and spicules.
        volume_mm3: volume of its label.
        spiculated: whether it has spicules.
    """

    centre_mm: tuple[float, float, float]
    diameter_mm: float
    volume_mm3: float
    spiculated: bool


def diameter_bounds(spacing: tuple[float, float, float],
                    diameter_range_mm: tuple[float, float] = DIAMETER_RANGE_MM) -> tuple[float, float]:
    """Smallest and largest nominal diameter (mm) for this voxel spacing."""
    low = max(diameter_range_mm[0], MIN_SLICES_ACROSS * max(spacing))
    return low, max(low, diameter_range_mm[1])


def add_tumours(rng: np.random.Generator, lung: np.ndarray, spacing: tuple[float, float, float], hu: np.ndarray,
                label: np.ndarray, tumour_hu: float, count: int | None = None,
                diameter_range_mm: tuple[float, float] = DIAMETER_RANGE_MM) -> tuple[Tumour, ...]:
    """Place up to ``count`` tumours (drawn from ``TUMOUR_COUNT_PROBABILITIES`` if None) fully inside ``lung``.

    Args:
        rng: the phantom's random generator.
        lung: bool (Z, Y, X) lung parenchyma.
        spacing: voxel size in mm (Z, Y, X).
        hu: float32 (Z, Y, X) image, blended with the tumours in place.
        label: uint8 (Z, Y, X), set to 1 on the tumours in place.
        tumour_hu: the tumours' mean HU.
        count: number of tumours wanted; fewer are placed when the lungs have no room.
        diameter_range_mm: nominal diameters are drawn log-uniformly from this range (mm), clipped to what the
            spacing shows and the lungs hold.

    Returns:
        The placed tumours.
    """
    if count is None:
        count = int(rng.choice(len(TUMOUR_COUNT_PROBABILITIES), p=TUMOUR_COUNT_PROBABILITIES))
    sp = np.asarray(spacing, dtype=float)
    coarse = lung[::EDT_STRIDE, ::EDT_STRIDE, ::EDT_STRIDE]
    depth = ndimage.distance_transform_edt(coarse, sampling=EDT_STRIDE * sp)  # mm to the lung border
    margin = float(sp.max())  # about the coarse grid's error; painting is clipped to the lung regardless
    d_low, d_high = diameter_bounds(spacing, diameter_range_mm)
    placed: list[tuple[np.ndarray, float]] = []
    tumours: list[Tumour] = []
    for _ in range(count):
        room = 2.0 * (float(depth.max()) - margin) / (1.0 + MAX_LOBULATION)
        if min(room, d_high) < d_low:
            break
        diameter = math.exp(rng.uniform(math.log(d_low), math.log(min(room, d_high))))
        centre = _find_centre(rng, depth, sp, 0.5 * diameter, margin, placed)
        while centre is None and diameter > d_low:  # no room left for this size: try smaller
            diameter = max(d_low, 0.7 * diameter)
            centre = _find_centre(rng, depth, sp, 0.5 * diameter, margin, placed)
        if centre is None:
            break
        spiculated = bool(rng.uniform() < SPICULATED_PROBABILITY)
        volume = _paint(rng, centre, 0.5 * diameter, spiculated, lung, sp, hu, label, tumour_hu)
        if volume > 0:
            placed.append((centre, 0.5 * diameter))
            centre_mm = tuple(round(float(c), 2) for c in centre)
            tumours.append(Tumour(centre_mm, round(diameter, 2), round(volume, 1), spiculated))
    return tuple(tumours)


def _find_centre(rng: np.random.Generator, depth: np.ndarray, spacing: np.ndarray, radius: float, margin: float,
                 placed: list[tuple[np.ndarray, float]]) -> np.ndarray | None:
    """A centre (mm) deep enough in the lung for ``radius`` and clear of the tumours already placed."""
    candidates = np.flatnonzero(depth >= radius * (1.0 + MAX_LOBULATION) + margin)
    if candidates.size == 0:
        return None
    for _ in range(PLACEMENT_TRIES):
        index = np.array(np.unravel_index(rng.choice(candidates), depth.shape)) * EDT_STRIDE
        centre = (index + rng.uniform(-0.5, 0.5, size=3)) * spacing
        if all(np.linalg.norm(centre - c) > (1 + MAX_LOBULATION) * (radius + r) + margin for c, r in placed):
            return centre
    return None


def _paint(rng: np.random.Generator, centre: np.ndarray, radius: float, spiculated: bool, lung: np.ndarray,
           spacing: np.ndarray, hu: np.ndarray, label: np.ndarray, tumour_hu: float) -> float:
    """Blend one tumour into ``hu`` and ``label``; returns its label volume in mm^3."""
    reach = radius * (1 + MAX_LOBULATION + MAX_SPICULE) + float(spacing.max())
    lo = np.maximum(np.floor((centre - reach) / spacing).astype(int), 0)
    hi = np.minimum(np.ceil((centre + reach) / spacing).astype(int) + 1, lung.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    dz, dy, dx = (
        (np.arange(lo[i], hi[i]) * spacing[i] - centre[i]).reshape([-1 if j == i else 1 for j in range(3)])
        for i in range(3)
    )  # (z, 1, 1), (1, y, 1), (1, 1, x) mm from the centre
    dist = np.sqrt(dz**2 + dy**2 + dx**2) + 1e-6  # (z, y, x)

    def cosine(direction: np.ndarray) -> np.ndarray:
        return (dz * direction[0] + dy * direction[1] + dx * direction[2]) / dist  # (z, y, x) u.direction

    surface = np.ones_like(dist)
    for _ in range(LOBULES):
        surface += rng.uniform(0.02, MAX_LOBULATION / LOBULES) * np.cos(
            math.pi * rng.uniform(1.0, 3.0) * cosine(_unit(rng)) + rng.uniform(0, 2 * math.pi))
    surface *= radius
    if spiculated:
        for _ in range(int(rng.integers(5, 13))):
            length = rng.uniform(0.25, MAX_SPICULE) * radius
            surface += length * np.clip(cosine(_unit(rng)), 0, None) ** rng.uniform(100.0, 400.0)
    edge = float(spacing.min())
    cover = np.clip((surface - dist) / edge + 0.5, 0.0, 1.0) * lung[box]  # (z, y, x)
    inside = cover >= 0.5
    parts, _ = ndimage.label(inside)
    core = parts[tuple(int(round(c)) for c in (centre / spacing - lo).clip(0, np.array(inside.shape) - 1))]
    if core == 0:
        return 0.0
    keep = parts == core
    cover = np.where(keep | ~inside, cover, 0.0)  # detached spicule tips are dropped from image and label alike
    texture = ndimage.gaussian_filter(rng.standard_normal(dist.shape), 1.0)  # (z, y, x) mottled interior
    texture *= rng.uniform(5.0, 12.0) / (texture.std() + 1e-6)
    hu[box] += (cover * (tumour_hu + texture - hu[box])).astype(np.float32)
    label[box][keep] = 1
    return float(keep.sum() * np.prod(spacing))


def _unit(rng: np.random.Generator) -> np.ndarray:
    vector = rng.standard_normal(3)
    return vector / np.linalg.norm(vector)
