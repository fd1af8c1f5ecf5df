"""Procedural thorax anatomy for CT phantoms: a tissue-class map (Z, Y, X) drawn from one random generator.

Axes follow nnU-Net/SimpleITK arrays: Z from caudal (index 0, upper abdomen) to cranial (lung apex), Y from anterior
to posterior, X from the patient's right to left (LPS), so the heart lies at larger X. In-plane anatomy is laid out in
*body units* ``(p, q)``: millimetres from the body centre divided by the body's lateral half-width ``s``, after a small
in-plane tilt; ``q > 0`` is posterior. The cranio-caudal position is ``t`` in [0, 1] over the scanned range, because a
chest scan is collimated to the thorax. Vessel and airway trees (``phantom_trees``) and tumours
(``phantom_tumours``) live in millimetres.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np


class Tissue(enum.IntEnum):
    """Tissue classes of a phantom; each gets one HU value per case (see ``TISSUE_HU``)."""

    AIR = 0  # outside the body
    LUNG = 1
    FAT = 2
    MUSCLE = 3
    SOFT = 4  # mediastinum, oesophagus, spinal canal, airway walls, abdomen
    BLOOD = 5  # heart, great vessels, pulmonary vessels (non-contrast)
    LIVER = 6
    CARTILAGE = 7  # costal cartilage, intervertebral discs
    MARROW = 8  # cancellous bone
    CORTEX = 9  # cortical bone
    GAS = 10  # air inside the body: trachea, bronchi, stomach
    TABLE = 11  # the scanner table under the patient
    TUMOUR = 12


# HU range per tissue; one value is drawn per case (non-contrast CT).
TISSUE_HU: dict[Tissue, tuple[float, float]] = {
    Tissue.AIR: (-1000.0, -1000.0),
    Tissue.LUNG: (-900.0, -850.0),
    Tissue.FAT: (-110.0, -80.0),
    Tissue.MUSCLE: (40.0, 60.0),
    Tissue.SOFT: (25.0, 45.0),
    Tissue.BLOOD: (35.0, 50.0),
    Tissue.LIVER: (50.0, 70.0),
    Tissue.CARTILAGE: (90.0, 160.0),
    Tissue.MARROW: (220.0, 330.0),
    Tissue.CORTEX: (800.0, 1200.0),
    Tissue.GAS: (-1000.0, -980.0),
    Tissue.TABLE: (150.0, 400.0),
    Tissue.TUMOUR: (30.0, 60.0),
}

LUNG_GRAVITY_HU = 60.0  # dependent (posterior) lung is denser than anterior lung by about this much
TABLE_PROBABILITY = 0.7


def superellipse_radius(u: np.ndarray, v: np.ndarray, exponent: float) -> np.ndarray:
    """``(|u|^n + |v|^n)^(1/n)``: 1 on a superellipse with unit half-axes (n = 2 is an ellipse)."""
    return (np.abs(u) ** exponent + np.abs(v) ** exponent) ** (1.0 / exponent)


@dataclass
class BodyFrame:
    """One patient's geometry: the body-unit coordinates of every voxel and the map back to millimetres.

    Attributes:
        spacing: voxel size in mm (Z, Y, X).
        half_width: the body's lateral half-width ``s`` in mm.
        aspect: antero-posterior over lateral half-axis (``e``).
        centre: body centre in mm (Y, X) from voxel (0, 0).
        tilt: in-plane rotation in radians.
        girth_amp, girth_phase: the outline scales by ``1 + amp * sin(pi * t + phase)`` along Z.
        p, q: (1, Y, X) body-unit coordinates at unit girth.
        t: (Z, 1, 1) cranio-caudal position in [0, 1].
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    half_width: float
    aspect: float
    centre: tuple[float, float]
    tilt: float
    girth_amp: float
    girth_phase: float
    p: np.ndarray
    q: np.ndarray
    t: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, shape: tuple[int, int, int],
             spacing: tuple[float, float, float]) -> BodyFrame:
        """Draw size, aspect, position and tilt of a body that fits the field of view."""
        nz, ny, nx = shape
        fov_y, fov_x = ny * spacing[1], nx * spacing[2]
        aspect = rng.uniform(0.62, 0.78)
        girth_amp = rng.uniform(0.02, 0.06)
        # The widest slice (girth 1 + amp) keeps a margin of a few percent to the image border.
        half_width = min(rng.uniform(0.36, 0.44) * fov_x, 0.44 * fov_y / aspect) / (1 + girth_amp)
        room_x = max(0.5 * fov_x - 1.05 * half_width * (1 + girth_amp), 0.0)
        room_y = max(0.5 * fov_y - 1.05 * half_width * aspect * (1 + girth_amp), 0.0)
        centre = (0.5 * fov_y + rng.uniform(-0.6, 0.6) * room_y, 0.5 * fov_x + rng.uniform(-0.6, 0.6) * room_x)
        tilt = math.radians(rng.uniform(-6.0, 6.0))
        dy = (np.arange(ny, dtype=np.float32) * spacing[1] - centre[0])[None, :, None]  # (1, Y, 1)
        dx = (np.arange(nx, dtype=np.float32) * spacing[2] - centre[1])[None, None, :]  # (1, 1, X)
        cos, sin = math.cos(tilt), math.sin(tilt)
        p = ((cos * dx + sin * dy) / half_width).astype(np.float32)  # (1, Y, X)
        q = ((-sin * dx + cos * dy) / half_width).astype(np.float32)  # (1, Y, X)
        t = (np.arange(nz, dtype=np.float32) / max(nz - 1, 1))[:, None, None]  # (Z, 1, 1)
        return cls(shape, spacing, half_width, aspect, centre, tilt, girth_amp, rng.uniform(-0.5, 0.5), p, q, t)

    def girth(self, t: np.ndarray | float) -> np.ndarray | float:
        """Outline scale factor at height ``t``."""
        return 1.0 + self.girth_amp * np.sin(np.pi * t + self.girth_phase)

    def to_mm(self, p: float, q: float, t: float) -> np.ndarray:
        """Body units (at girth of height ``t``) -> millimetres (Z, Y, X) from voxel (0, 0, 0)."""
        scale = self.half_width * float(self.girth(t))
        cos, sin = math.cos(self.tilt), math.sin(self.tilt)
        x = self.centre[1] + scale * (cos * p - sin * q)
        y = self.centre[0] + scale * (sin * p + cos * q)
        return np.array([t * (self.shape[0] - 1) * self.spacing[0], y, x])


@dataclass
class Thorax:
    """The rendered anatomy: tissue classes plus the masks and landmarks the lesion painters need."""

    tissue: np.ndarray  # uint8 (Z, Y, X) of Tissue
    lung: np.ndarray  # bool (Z, Y, X), lung parenchyma before vessels and tumours
    mediastinum: np.ndarray  # bool (Z, Y, X), mediastinal fat that vessels may cross
    landmarks: dict[str, tuple[float, float, float]]  # named points in body units (p, q, t)


def render_thorax(rng: np.random.Generator, frame: BodyFrame) -> Thorax:
    """Lay out body wall, skeleton, lungs, heart, great vessels, airways and upper abdomen as tissue classes."""
    f = frame
    e = f.aspect
    g = f.girth(f.t)  # (Z, 1, 1)
    pp, qq = f.p / g, f.q / g  # (Z, Y, X) body units at each slice's girth
    exponent = rng.uniform(2.2, 2.8)
    radius = superellipse_radius(f.p, f.q / e, exponent) / g  # (Z, Y, X), 1 on the skin
    fat, muscle, wall = rng.uniform(0.04, 0.12), rng.uniform(0.05, 0.08), 0.07
    r_cavity = 1.0 - fat - muscle - wall

    tissue = np.full(f.shape, Tissue.AIR, dtype=np.uint8)
    tissue[radius <= 1.0] = Tissue.FAT
    tissue[radius <= 1.0 - fat] = Tissue.MUSCLE
    cavity = radius <= r_cavity

    # Upper abdomen under a two-domed diaphragm (the right dome sits higher, above the liver).
    dia_base, dia_height = rng.uniform(0.04, 0.1), rng.uniform(0.12, 0.2)
    dome = np.clip(1 - ((np.abs(f.p) - 0.35) / 0.55) ** 2 - ((f.q + 0.05) / 0.75) ** 2, 0, None)
    diaphragm = dia_base + dia_height * dome + 0.03 * (f.p < 0)  # (1, Y, X) in t
    thorax = cavity & (f.t > diaphragm)
    abdomen = cavity & ~thorax
    tissue[thorax] = Tissue.FAT
    tissue[abdomen & (pp < 0.15)] = Tissue.LIVER
    tissue[abdomen & (pp >= 0.15)] = Tissue.SOFT
    dome_top = dia_base + dia_height
    bubble = ((pp - 0.38) / 0.14) ** 2 + ((qq + 0.12) / 0.11) ** 2 + ((f.t - dome_top + 0.07) / 0.04) ** 2 <= 1
    tissue[bubble & abdomen] = Tissue.GAS

    # Spine: vertebral body, canal, posterior elements, paraspinal muscles; discs every vertebra.
    qv, rv = e - 0.45, rng.uniform(0.11, 0.13)
    q_canal = qv + rv + 0.07
    pitch = rng.uniform(0.075, 0.09)  # one vertebra (and one rib) per pitch of t
    level = np.mod(f.t / pitch + rng.uniform(0, 1), 1.0)  # (Z, 1, 1) position within a vertebra
    vb_dist = np.hypot(f.p, f.q - qv)  # (1, Y, X)
    canal_dist = np.hypot(f.p, f.q - q_canal)
    paraspinal = ((np.abs(f.p) - 0.17) / 0.14) ** 2 + ((f.q - qv - 0.26) / 0.12) ** 2 <= 1
    tissue[paraspinal & (radius <= 1.0 - fat)] = Tissue.MUSCLE
    arch = ((canal_dist > 0.065) & (canal_dist < 0.1) & (f.q > qv + 0.5 * rv)) | (
        (np.abs(f.p) < 0.025) & (f.q > q_canal) & (f.q < e - 0.1)) | (
        (np.abs(f.q - q_canal) < 0.03) & (np.abs(f.p) < 0.22))
    tissue[arch & (level < 0.6)] = Tissue.CORTEX
    tissue[np.broadcast_to(canal_dist <= 0.065, f.shape)] = Tissue.SOFT
    body_of_vertebra = np.broadcast_to(vb_dist <= rv, f.shape)
    tissue[body_of_vertebra] = Tissue.MARROW
    tissue[body_of_vertebra & (vb_dist > rv - 0.025)] = Tissue.CORTEX
    tissue[body_of_vertebra & (level > 0.82)] = Tissue.CARTILAGE

    # Ribs: a ring in the chest wall, one rib per pitch, sloping caudally towards the front; cartilage in front.
    angle = np.abs(np.angle(np.exp(1j * (np.arctan2(f.q, f.p) - np.pi / 2)))) / np.pi  # 0 spine .. 1 sternum
    rib_height, slope = 0.4, rng.uniform(1.0, 1.6)
    rib_phase = np.mod((f.t + slope * pitch * angle) / pitch + rng.uniform(0, 1), 1.0)  # (Z, Y, X)
    rib_r = ((radius - r_cavity - 0.035) / 0.026) ** 2 + ((rib_phase - rib_height / 2) / (rib_height / 2)) ** 2
    rib = (rib_r <= 1) & (f.t < rng.uniform(0.95, 1.05)) & (angle > 0.08)  # ribs start beside the spine
    tissue[rib & (angle < 0.82)] = Tissue.CORTEX
    tissue[rib & (angle < 0.82) & (rib_r < 0.3)] = Tissue.MARROW
    tissue[rib & (angle >= 0.82)] = Tissue.CARTILAGE

    # Heart on the diaphragm, left of the midline, wrapped in pericardial fat; great vessels above it.
    heart_t = dome_top + rng.uniform(0.08, 0.12)
    heart_ax = (rng.uniform(0.32, 0.38), rng.uniform(0.22, 0.27), rng.uniform(0.13, 0.17))
    heart_p, heart_q, heart_tilt = rng.uniform(0.1, 0.17), rng.uniform(-0.18, -0.12), rng.uniform(0.3, 0.6)
    along = (pp - heart_p) * math.cos(heart_tilt) - (qq - heart_q) * math.sin(heart_tilt)  # long axis, to the left
    across = (pp - heart_p) * math.sin(heart_tilt) + (qq - heart_q) * math.cos(heart_tilt)
    heart_r = (along / heart_ax[0]) ** 2 + (across / heart_ax[1]) ** 2 + ((f.t - heart_t) / heart_ax[2]) ** 2
    heart = (heart_r <= 1) & thorax
    arch_t = heart_t + heart_ax[2] + rng.uniform(0.15, 0.22)
    carina_t = arch_t - 0.05
    vessels_2d = {  # name: (p, q, radius, t_low, t_high)
        "descending_aorta": (0.14, qv - rv + 0.02, 0.07, 0.0, arch_t),
        "ascending_aorta": (0.02, -0.12, 0.075, heart_t, arch_t),
        "pulmonary_trunk": (0.15, -0.22, 0.06, heart_t, heart_t + heart_ax[2] + 0.06),
        "vena_cava": (-0.13, -0.1, 0.05, heart_t, 1.0),
        "oesophagus": (0.04, qv - rv - 0.04, 0.045, 0.0, 1.0),
    }
    great = np.zeros(f.shape, dtype=bool)
    for name, (vp, vq, vr, lo, hi) in vessels_2d.items():
        tube = (np.hypot(pp - vp, qq - vq) <= vr) & (f.t >= lo) & (f.t <= hi) & cavity
        tissue[tube] = Tissue.SOFT if name == "oesophagus" else Tissue.BLOOD
        great |= tube
    # Aortic arch: a tube from the ascending to the descending aorta over a few slices.
    a, b = np.array([0.02, -0.12]), np.array([0.14, qv - rv + 0.02])
    u = np.clip(((pp - a[0]) * (b[0] - a[0]) + (qq - a[1]) * (b[1] - a[1])) / np.sum((b - a) ** 2), 0, 1)
    arch_tube = (np.hypot(pp - a[0] - u * (b[0] - a[0]), qq - a[1] - u * (b[1] - a[1])) <= 0.07) & (
        np.abs(f.t - arch_t) < 0.035) & cavity
    tissue[arch_tube] = Tissue.BLOOD
    great |= arch_tube
    q_trachea = qv - rv - 0.13
    trachea = (np.hypot(pp, qq - q_trachea) <= 0.065) & (f.t > carina_t) & cavity
    tissue[trachea] = Tissue.SOFT
    tissue[trachea & (np.hypot(pp, qq - q_trachea) <= 0.05)] = Tissue.GAS
    great |= trachea

    # Lungs: one ellipse per side that narrows towards the apex, inside the cavity, around the mediastinum.
    apex_t, apex_height = rng.uniform(0.95, 1.08), rng.uniform(0.3, 0.4)
    narrowing = 1 - np.clip((f.t - apex_t + apex_height) / apex_height, 0, 1) ** 2  # (Z, 1, 1) domed apex
    lung_c, lung_a = rng.uniform(0.42, 0.48), rng.uniform(0.4, 0.45)
    lung = (((np.abs(pp) - lung_c) / lung_a) ** 2 + ((qq - 0.05) / (e * r_cavity)) ** 2 <= narrowing) & thorax
    lung &= (np.abs(pp - 0.01) > rng.uniform(0.08, 0.11)) & ~great & (vb_dist > rv + 0.04) & ~paraspinal
    pericardium = (heart_r <= 1.3) & thorax
    lung &= ~pericardium
    tissue[lung] = Tissue.LUNG
    tissue[pericardium & ~great & ~lung] = Tissue.FAT
    tissue[heart] = Tissue.BLOOD

    # Sternum in front of the mediastinum, along the heart and above it.
    sternum = (np.abs(pp) < 0.09) & (qq < 0) & (radius > r_cavity - 0.01) & (radius < r_cavity + 0.07) & (
        f.t > heart_t - 0.1) & (f.t < apex_t - 0.05)
    tissue[sternum] = Tissue.CORTEX
    tissue[sternum & (np.abs(pp) < 0.07) & (np.abs(radius - r_cavity - 0.03) < 0.025)] = Tissue.MARROW

    if rng.uniform() < TABLE_PROBABILITY:
        _add_table(rng, frame, tissue)

    mediastinum = thorax & (tissue == Tissue.FAT)
    landmarks = {
        "pulmonary_trunk": (0.15, -0.22, heart_t + heart_ax[2]),
        "left_atrium": (heart_p - 0.05, heart_q + 0.15, heart_t),
        "carina": (0.0, q_trachea, carina_t),
        "hilum_right": (-0.22, 0.0, carina_t - 0.08),
        "hilum_left": (0.24, 0.0, carina_t - 0.1),
    }
    return Thorax(tissue, lung, mediastinum, landmarks)


def _add_table(rng: np.random.Generator, frame: BodyFrame, tissue: np.ndarray) -> None:
    """A thin curved plate under the patient, in scanner (untilted) coordinates, a few mm below the back."""
    f = frame
    ny, nx = f.shape[1:]
    y = np.arange(ny, dtype=np.float32)[:, None] * f.spacing[1]  # (Y, 1) mm
    x = np.arange(nx, dtype=np.float32)[None, :] * f.spacing[2]  # (1, X) mm
    back = f.centre[0] + f.half_width * f.aspect * (1 + f.girth_amp) + rng.uniform(1.0, 4.0)
    curve = back + rng.uniform(0.05, 0.15) * (x - f.centre[1]) ** 2 / f.half_width  # (1, X) mm
    thickness = max(2.0, 1.5 * f.spacing[1])
    plate = (y >= curve) & (y < curve + thickness) & (np.abs(x - f.centre[1]) < 1.3 * f.half_width)  # (Y, X)
    tissue[:, plate] = Tissue.TABLE
