"""Short-axis cine CMR phantom for the five ACDC groups, with an optional spurious feature.

A patient is a stack of short-axis slices (base -> apex) over one cardiac cycle. The LV is a
wobbled circle whose cavity shrinks with the contraction curve while the myocardium keeps
its area per angle (so it thickens in systole); the RV is a crescent (an ellipse wrapped
around the LV epicardium). Groups differ by what defines them clinically:

- NOR: normal LV size, wall and EF; normal RV.
- DCM: dilated LV cavity, thin wall, low EF.
- HCM: small cavity, thick (septum-predominant) wall, high EF.
- MINF: a thin, akinetic segment (the infarct) and reduced global EF.
- RV: dilated, hypokinetic RV; normal LV.

The body around the heart (skin, subcutaneous fat, muscle, lungs, liver, spine, descending
aorta, epicardial fat) gives the SSFP look: bright blood and fat, dark myocardium and lungs.
Intensities are int16 around 0-1000 with a smooth coil-bias field and Rician noise.

`spurious="train"` plants a bright blob outside the heart whose position encodes the group
with probability `spurious_p` (a shortcut); `spurious="broken"` draws the position
independently of the group (the shortcut is broken). The blob is drawn from its own random
stream, so turning it on or off changes nothing inside the heart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from alan.phantom.shapes import contraction, ellipse_radius, fourier_wobble, random_wobble

GROUPS: tuple[str, ...] = ("NOR", "DCM", "HCM", "MINF", "RV")
#: ACDC label values.
LABEL_CODES: dict[str, int] = {"RV": 1, "MYO": 2, "LV": 3}
#: Candidate blob centres (mm, patient frame: x to the image right, y down; origin = body
#: centre), one per group in `GROUPS` order; all inside the body, inside the field of view and
#: at least ~15 mm away from the largest hearts.
SPURIOUS_SITES: tuple[tuple[float, float], ...] = ((-70.0, -85.0), (60.0, -88.0), (-80.0, 45.0), (-32.0, 68.0), (75.0, 40.0))


@dataclass(frozen=True)
class CMRPatient:
    """Anatomy and function of one CMR patient (lengths in mm, fractions in [0, 1])."""

    group: str
    lv_radius: float
    wall: float
    septal_extra: float
    ef: float
    rv_scale: float
    rv_ef: float
    infarct_angle: float | None
    infarct_width: float
    infarct_wall: float
    systole: float
    wobble_lv: np.ndarray = field(repr=False)
    wobble_rv: np.ndarray = field(repr=False)
    height: float = 170.0
    weight: float = 75.0

    @classmethod
    def random(cls, group: str, rng: np.random.Generator) -> CMRPatient:
        if group not in GROUPS:
            raise ValueError(f"unknown group {group!r}; expected one of {GROUPS}")
        u = rng.uniform
        lv = {"NOR": (22, 26), "DCM": (31, 37), "HCM": (16, 20), "MINF": (25, 30), "RV": (22, 26)}[group]
        wall = {"NOR": (7, 9), "DCM": (4.5, 6), "HCM": (13, 17), "MINF": (7, 9), "RV": (7, 9)}[group]
        ef = {"NOR": (0.56, 0.70), "DCM": (0.12, 0.32), "HCM": (0.68, 0.80), "MINF": (0.28, 0.45), "RV": (0.55, 0.68)}[group]
        rv = {"RV": (1.45, 1.75), "DCM": (1.0, 1.15)}.get(group, (0.9, 1.1))
        rv_ef = {"RV": (0.18, 0.35), "DCM": (0.3, 0.45)}.get(group, (0.45, 0.6))
        return cls(
            group=group,
            lv_radius=float(u(*lv)),
            wall=float(u(*wall)),
            septal_extra=float(u(0.2, 0.45)) if group == "HCM" else 0.0,
            ef=float(u(*ef)),
            rv_scale=float(u(*rv)),
            rv_ef=float(u(*rv_ef)),
            infarct_angle=float(u(0, 2 * np.pi)) if group == "MINF" else None,
            infarct_width=float(u(np.deg2rad(70), np.deg2rad(110))),
            infarct_wall=float(u(3.0, 4.5)),
            systole=float(u(0.33, 0.42)),
            wobble_lv=random_wobble(rng, 3, 0.02),
            wobble_rv=random_wobble(rng, 3, 0.04),
            height=float(np.round(u(150, 195))),
            weight=float(np.round(u(50, 110))),
        )


@dataclass
class CMRCine:
    """One generated CMR patient: images and labels (Z, T, H, W), 0-based ED/ES, spacing.

    `labels` uses the ACDC values (`LABEL_CODES`); `spacing` is (row, col, slice) in mm.
    `spurious` describes the planted blob (site index, in-class or not), or is None.
    """

    group: str
    image: np.ndarray
    labels: np.ndarray
    ed: int
    es: int
    spacing: tuple[float, float, float]
    patient: CMRPatient
    contraction: np.ndarray
    spurious: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def mask(self, label: str) -> np.ndarray:
        return self.labels == LABEL_CODES[label]

    @property
    def masks(self) -> dict[str, np.ndarray]:
        return {name: self.mask(name) for name in LABEL_CODES}

    def volume_ml(self, label: str, frame: int) -> float:
        """Volume of a label at a frame by slice summation (voxel count x voxel volume)."""
        sr, sc, sz = self.spacing
        return float(self.mask(label)[:, frame].sum() * sr * sc * sz / 1000.0)


def _heart(p: CMRPatient, x: np.ndarray, y: np.ndarray, z: float, c: np.ndarray):
    """Label maps (T, H, W) and the RV free wall for heart-frame coords (x, y) in mm at level z."""
    c3 = c[:, None, None]
    taper = np.sqrt(max(1.0 - 0.72 * z**2, 0.05))  # cavity narrows toward the apex
    r = np.hypot(x, y)
    th = np.arctan2(y, x)
    r0 = p.lv_radius * taper * fourier_wobble(th, p.wobble_lv)
    # Septum sits toward the RV (image left, theta = pi); HCM thickens it further.
    septal = np.cos(th - np.pi).clip(0, None) ** 2
    w = p.wall * (0.85 + 0.15 * taper) * (1.0 + p.septal_extra * septal)
    motion = np.ones_like(th)
    if p.infarct_angle is not None:
        d = np.angle(np.exp(1j * (th - p.infarct_angle)))
        scar = np.clip(1.5 - 2.0 * np.abs(d) / p.infarct_width, 0, 1)
        scar = scar * scar * (3 - 2 * scar)  # smoothstep across the border zone
        w = w * (1 - scar) + p.infarct_wall * scar
        motion = 1.0 - scar
    # Radial shortening giving the target EF over the remaining (contracting) myocardium.
    active = float(np.mean(motion)) if p.infarct_angle is not None else 1.0
    k = 1.0 - np.sqrt(1.0 - min(p.ef / max(active, 0.5), 0.92))
    area = (r0 + w) ** 2 - r0**2
    rad = r0[None] * (1.0 - c3 * k * motion[None])
    lv = r[None] < rad
    outer = r[None] ** 2 < rad**2 + area[None]
    myo = outer & ~lv
    # RV crescent: an ellipse wrapped around the LV's left (septal) side, minus the LV
    # epicardium; T is its free-wall distance from the epicardium (larger when dilated).
    rv_taper = 1.0 - 0.8 * z**1.5
    e = p.lv_radius * taper + p.wall
    thick = 0.55 * e * p.rv_scale * rv_taper
    thick_top = 0.3 * e * p.rv_scale * rv_taper
    a_rv = 0.95 * e + 0.5 * thick
    cx, cy = -(e + thick) + a_rv, -0.08 * e
    b_rv = e + thick_top
    rv_k = 1.0 - np.sqrt(1.0 - p.rv_ef)
    dx, dy = x - cx, y - cy
    r_rv = np.hypot(dx, dy)
    th_rv = np.arctan2(dy, dx)
    r0_rv = ellipse_radius(th_rv, a_rv, b_rv) * fourier_wobble(th_rv, p.wobble_rv)
    # The free wall moves in; the septal side is the LV's (subtracted below).
    rv_rad = r0_rv[None] * (1.0 - c3 * rv_k * 0.45)
    present = rv_taper > 0.35
    rv = (r_rv[None] < rv_rad) & ~outer & present
    rv_wall = (r_rv[None] < rv_rad + 3.0) & ~outer & ~rv & present
    fat = (r_rv[None] < rv_rad + 5.5) & ~outer & ~rv & ~rv_wall & present & (np.cos(th_rv + 2.0) > 0.6)[None]
    return lv, myo, rv, rv_wall, outer, fat


def cmr_patient(
    group: str = "NOR",
    rng: np.random.Generator | int | None = 0,
    *,
    size: tuple[int, int] = (128, 128),
    n_slices: int = 6,
    n_frames: int | None = None,
    spurious: str | None = None,
    spurious_p: float = 0.9,
    spurious_rng: np.random.Generator | int | None = None,
    patient: CMRPatient | None = None,
) -> CMRCine:
    """Generate one short-axis cine stack of `group`.

    `spurious`: None (no blob), "train" (site = the group's site with probability
    `spurious_p`, otherwise another site) or "broken" (site uniform, independent of the group).
    The blob's randomness comes from `spurious_rng` (default: derived from `rng` before any
    other draw), so the rest of the image is the same with or without it.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    # Child streams: the blob's stream is split off first so it never shifts the others.
    blob_rng, anat_rng, noise_rng = (np.random.default_rng(s) for s in rng.bit_generator.seed_seq.spawn(3))
    if spurious_rng is not None:
        blob_rng = spurious_rng if isinstance(spurious_rng, np.random.Generator) else np.random.default_rng(spurious_rng)
    p = CMRPatient.random(group, anat_rng) if patient is None else patient
    H, W = size
    T = int(anat_rng.integers(20, 26)) if n_frames is None else int(n_frames)
    es = int(round(p.systole * T))
    tau = np.arange(T) / T
    c = contraction(tau, es / T)
    px = float(anat_rng.uniform(1.4, 1.7)) * 128.0 / max(H, W)  # mm per pixel (FOV ~180-220 mm)
    dz = float(anat_rng.choice([8.0, 10.0]))
    # Patient frame (mm): body centre at the origin; random global pose.
    rot = float(anat_rng.normal(0, np.deg2rad(8)))
    shift = anat_rng.normal(0, 5.0, 2)
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    X0, Y0 = (cols - (W - 1) / 2) * px - shift[0], (rows - (H - 1) / 2) * px - shift[1] - 15.0
    cr, sr = np.cos(rot), np.sin(rot)
    X, Y = cr * X0 + sr * Y0, -sr * X0 + cr * Y0
    body_a, body_b = anat_rng.uniform(150, 175), anat_rng.uniform(105, 125)
    heart_c = np.array([anat_rng.uniform(12, 25), anat_rng.uniform(-25, -12)])
    heart_rot = float(anat_rng.normal(0, np.deg2rad(12)))
    ch, sh = np.cos(heart_rot), np.sin(heart_rot)
    hx0, hy0 = X - heart_c[0], Y - heart_c[1]
    hx, hy = ch * hx0 + sh * hy0, -sh * hx0 + ch * hy0
    lv_i = float(anat_rng.uniform(650, 900))
    lev = {
        "air": 0.0, "skin": 250.0, "fat": float(anat_rng.uniform(650, 800)), "muscle": float(anat_rng.uniform(180, 240)),
        "lung": 30.0, "liver": float(anat_rng.uniform(280, 360)), "bone": 320.0, "cortex": 60.0,
        "blood": lv_i, "myo": float(anat_rng.uniform(140, 200)), "medi": float(anat_rng.uniform(220, 300)),
    }
    bias = 1.0 + 0.2 * np.clip(-Y / body_b, -1, 1) + float(np.clip(0.05 * anat_rng.standard_normal(), -0.1, 0.1))
    liver_top = float(anat_rng.uniform(0.5, 0.75))
    rings = anat_rng.uniform(0.2, 0.8, 4)  # epicardial fat extents

    texture = (1.0 + 0.07 * ndimage.gaussian_filter(anat_rng.standard_normal((H, W)), 2.5 * H / 128) / 0.11).astype(np.float32)
    zs = np.linspace(0.05, 0.92, n_slices)
    image = np.empty((n_slices, T, H, W), np.float32)
    labels = np.zeros((n_slices, T, H, W), np.uint8)
    rb = np.hypot(X / body_a, Y / body_b)
    for k, z in enumerate(zs):
        # Static body for this slice.
        bg = np.full((H, W), lev["air"], np.float32)
        bg[rb < 1.0] = lev["skin"]
        bg[rb < 0.98] = lev["fat"]
        bg[rb < 0.9] = lev["muscle"]
        inner = rb < 0.8
        bg[inner] = lev["medi"]
        lung_l = np.hypot((X + 70) / 55, (Y - 10) / 70) < 1
        lung_r = np.hypot((X - 75) / 50, (Y - 5) / 68) < 1
        bg[inner & (lung_l | lung_r)] = lev["lung"]
        if z > liver_top:  # liver rises into the lower slices on the patient's right (image left)
            liver = np.hypot((X + 60) / 70, (Y - 55) / (25 + 80 * (z - liver_top))) < 1
            bg[inner & liver] = lev["liver"]
        spine = np.hypot(X + 2, Y - 80) < 17
        bg[spine] = lev["cortex"]
        bg[np.hypot(X + 2, Y - 80) < 14] = lev["bone"]
        bg[np.hypot(X - 24, Y - 58) < 11] = lev["blood"] * 0.95  # descending aorta
        bg *= texture
        lv, myo, rv, rv_wall, outer, rv_fat = _heart(p, hx, hy, float(z), c)
        # Epicardial fat: patches in the grooves around the heart.
        th = np.arctan2(hy, hx)
        rr = np.hypot(hx, hy)
        epi = (p.lv_radius + p.wall) * 1.0
        fat = (rr < epi * (1.12 + 0.1 * rings[0])) & (np.cos(th - (np.pi / 2 + rings[1])) > 0.75)
        fat |= (rr < epi * 1.1) & (np.cos(th - (-np.pi / 2 - rings[2])) > 0.85)
        # Tissue codes per frame, then one lookup: 0 keeps the static body.
        code = np.zeros((T, H, W), np.uint8)
        code[fat[None] & ~outer] = 1
        code[rv_fat] = 1
        code[(rr < epi * 1.05)[None] & ~outer] = 2
        code[rv_wall] = 3
        code[rv] = 4
        code[myo] = 5
        code[lv] = 6
        lut = np.array([0, lev["fat"], lev["medi"], lev["myo"] * 1.1, lev["blood"] * 0.97, lev["myo"], lev["blood"]], np.float32)
        image[k] = np.where(code == 0, bg[None], lut[code])
        lab = labels[k]
        lab[code == 4] = LABEL_CODES["RV"]
        lab[code == 5] = LABEL_CODES["MYO"]
        lab[code == 6] = LABEL_CODES["LV"]
    # Smooth flow/coil texture in the blood, then the bias field.
    image *= (bias * (1.0 + 0.04 * ndimage.gaussian_filter(noise_rng.standard_normal((H, W)), 4.0)))[None, None].astype(np.float32)

    info: dict[str, Any] | None = None
    if spurious is not None:
        if spurious not in ("train", "broken"):
            raise ValueError(f"spurious must be None, 'train' or 'broken', not {spurious!r}")
        own = GROUPS.index(group)
        if spurious == "broken":
            site = int(blob_rng.integers(len(SPURIOUS_SITES)))
        elif blob_rng.random() < spurious_p:
            site = own
        else:
            site = int(blob_rng.choice([i for i in range(len(SPURIOUS_SITES)) if i != own]))
        sx, sy = SPURIOUS_SITES[site]
        radius = float(blob_rng.uniform(6.0, 8.0))
        level = float(blob_rng.uniform(1250, 1450))
        blob = np.hypot(X - sx, Y - sy) < radius
        image[:, :, blob] = level
        info = {"site": site, "in_class": site == own, "mode": spurious, "radius_mm": radius, "level": level}

    image = ndimage.gaussian_filter(image, (0, 0, 0.6, 0.6), truncate=3.0)
    # Rician noise; the quadrature channel reuses the same draws shifted by a large odd
    # offset (other pixels, so independent in practice) to halve the cost.
    sigma = float(noise_rng.uniform(10, 25))
    n1 = noise_rng.standard_normal(image.size, dtype=np.float32) * sigma
    n2 = np.roll(n1, 7919 + int(noise_rng.integers(1000)))
    image = np.sqrt((image + n1.reshape(image.shape)) ** 2 + n2.reshape(image.shape) ** 2)
    return CMRCine(
        group=group,
        image=np.clip(np.rint(image), 0, 32767).astype(np.int16),
        labels=labels,
        ed=0,
        es=es,
        spacing=(px, px, dz),
        patient=p,
        contraction=c,
        spurious=info,
        meta={"slice_levels": zs.tolist(), "noise_sigma": sigma},
    )
