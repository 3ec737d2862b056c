"""Echocardiography phantom: A4C, A2C, PLAX and PSAX views with ground-truth masks.

Anatomy is built from star-shaped superellipses with a low-order Fourier wobble (see
`shapes`), placed in a "heart frame" and mapped into a sector-shaped field of view by a
random similarity pose. The cardiac cycle is a smooth contraction curve (0 at ED, 1 at ES):
the LV cavity shrinks radially and its base (the mitral plane) moves toward the apex, the
myocardium keeps its area per angle (so the wall thickens in systole), the atria fill in
antiphase. Every pixel's label comes from the same closed-form test that draws the image, so
masks and images agree exactly; the LV contour sampled from that test gives method-of-disks
tracings (long axis + 20 chords) and the volumes and EF the writers report.

The image model: reflectivity map (dark blood, bright myocardium and walls, textured
tissue, near-field haze) -> point-spread blur -> multiplicative Rayleigh speckle (complex
Gaussian field, spatially smoothed, partly carried over from frame to frame) -> depth
attenuation -> gain and a compression curve -> additive noise -> sector mask -> uint8.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage, optimize

from alan.phantom.shapes import (
    contraction,
    disk_chords,
    disks_volume,
    ellipse_radius,
    fourier_wobble,
    from_local,
    random_wobble,
    to_local,
)

VIEWS: tuple[str, ...] = ("A4C", "A2C", "PLAX", "PSAX")
#: Codes of the label maps the echo phantom returns (0 = background).
LABEL_CODES: dict[str, int] = {"LV": 1, "MYO": 2, "LA": 3, "RV": 4}
#: Structures visible (and labelled) per view.
VIEW_LABELS: dict[str, tuple[str, ...]] = {
    "A4C": ("LV", "MYO", "LA", "RV"),
    "A2C": ("LV", "MYO", "LA"),
    "PLAX": ("LV", "MYO", "LA", "RV"),
    "PSAX": ("LV", "MYO", "RV"),
}
#: Aortic-stenosis grades (TMED-2 diagnosis labels), index = severity.
AS_GRADES: tuple[str, ...] = ("no_AS", "mild_AS", "mildtomod_AS", "moderate_AS", "severe_AS")
QUALITIES: tuple[str, ...] = ("Good", "Medium", "Poor")

_BASE_FRACTION = 0.75  # the LV ellipse is cut at 75% of its semi-axis below its centre (mitral plane)
N_CHORDS = 20
_APEX_EXPONENT = 1.6
#: Relative spread of the LV's length and width about their means (+-20 %).
LV_SIZE_SPREAD = 0.20  # superellipse exponent of the LV's apical half (2 = ellipse)


@dataclass(frozen=True)
class EchoPatient:
    """Patient-level anatomy shared by all views of one heart (lengths in depth units).

    One depth unit is the image height; `depth_mm` converts it to millimetres.
    """

    ef_target: float
    lv_length: float
    lv_halfwidth: float
    width_ratio_2ch: float
    wall: float
    apex_wall: float
    la_size: float
    rv_size: float
    hr: float
    systole: float
    k_long: float
    k_apex: float
    k_radial: float
    wobble_lv: np.ndarray = field(repr=False)
    wobble_la: np.ndarray = field(repr=False)
    wobble_rv: np.ndarray = field(repr=False)
    depth_mm: float = 160.0
    as_grade: int = 0
    sex: str = "F"
    age: int = 60

    @classmethod
    def random(cls, rng: np.random.Generator, ef: float | None = None, as_grade: int | None = None) -> EchoPatient:
        """Draw a patient; `ef` (fraction, default U(0.30, 0.75)) is the target ejection fraction."""
        ef = float(rng.uniform(0.30, 0.75)) if ef is None else float(ef)
        dilation = 1.0 + 0.4 * max(0.0, 0.5 - ef)  # low EF hearts are larger
        p = cls(
            ef_target=ef,
            lv_length=0.55 * float(rng.uniform(1 - LV_SIZE_SPREAD, 1 + LV_SIZE_SPREAD)) * dilation**0.5,
            lv_halfwidth=0.152 * float(rng.uniform(1 - LV_SIZE_SPREAD, 1 + LV_SIZE_SPREAD)) * dilation,
            width_ratio_2ch=float(rng.uniform(0.95, 1.12)),
            wall=float(rng.uniform(0.045, 0.06)),
            apex_wall=float(rng.uniform(0.03, 0.042)),
            la_size=float(rng.uniform(0.85, 1.2)),
            rv_size=float(rng.uniform(0.85, 1.15)),
            hr=float(rng.uniform(55, 95)),
            systole=float(rng.uniform(0.33, 0.40)),
            k_long=0.06 + 0.14 * ef,
            k_apex=0.04,
            k_radial=0.2,
            wobble_lv=random_wobble(rng, 3, 0.025),
            wobble_la=random_wobble(rng, 3, 0.04),
            wobble_rv=random_wobble(rng, 3, 0.04),
            depth_mm=float(rng.uniform(150, 170)),
            as_grade=int(rng.integers(0, len(AS_GRADES))) if as_grade is None else int(as_grade),
            sex=str(rng.choice(["F", "M"])),
            age=int(rng.integers(20, 90)),
        )
        return p.calibrated()

    def calibrated(self) -> EchoPatient:
        """Solve the radial shortening so the single-plane (A4C) disks EF equals `ef_target`."""
        ed = _lv_disks(self, "A4C", 0.0)[2]

        def gap(k: float) -> float:
            return 1.0 - _lv_disks(replace(self, k_radial=k), "A4C", 1.0)[2] / ed - self.ef_target

        lo, hi = 0.0, 0.75
        if gap(lo) >= 0 or gap(hi) <= 0:
            k1 = lo if gap(lo) >= 0 else hi
        else:
            k1 = float(optimize.brentq(gap, lo, hi, xtol=1e-5))
        return replace(self, k_radial=k1)


@dataclass(frozen=True)
class Pose:
    """Placement of the heart frame in the image (depth units): origin, rotation, scale."""

    origin: tuple[float, float]
    phi: float
    scale: float


@dataclass(frozen=True)
class Sector:
    """Fan-shaped field of view: apex at (0, apex_y), half-angle (rad), radius (depth units)."""

    apex_y: float = 0.0
    half_angle: float = np.deg2rad(40.0)
    radius: float = 0.98


@dataclass
class EchoSequence:
    """One generated echo sequence (or still image, T = 1) and its ground truth.

    `labels` holds `LABEL_CODES` per pixel; `tracings` maps ED and ES frame indices of apical
    views to (21, 4) arrays of (X1, Y1, X2, Y2) in pixel coordinates (X = column, Y = row):
    row 0 the long axis apex -> mitral-valve midpoint, rows 1.. the chords base -> apex.
    Volumes are single-plane method-of-disks volumes in mL, `ef` in percent.
    """

    view: str
    frames: np.ndarray
    labels: np.ndarray
    contraction: np.ndarray
    phases: np.ndarray
    ed: int | None
    es: int | None
    fps: float
    spacing_mm: float
    tracings: dict[int, np.ndarray] = field(default_factory=dict)
    edv: float | None = None
    esv: float | None = None
    ef: float | None = None
    quality: str = "Good"
    meta: dict[str, Any] = field(default_factory=dict)

    def mask(self, label: str) -> np.ndarray:
        """bool (T, H, W) mask of one label."""
        return self.labels == LABEL_CODES[label]

    @property
    def masks(self) -> dict[str, np.ndarray]:
        return {name: self.mask(name) for name in VIEW_LABELS[self.view]}


# ---------------------------------------------------------------- anatomy (heart frame)


def _lv_params(p: EchoPatient, view: str) -> dict[str, float]:
    a = p.lv_halfwidth * (p.width_ratio_2ch if view == "A2C" else 1.0)
    b = p.lv_length / (1.0 + _BASE_FRACTION)
    return {"a": a, "b": b, "L": p.lv_length}


def _k_of_theta(theta: np.ndarray, p: EchoPatient) -> np.ndarray:
    """Fractional inward motion at ES along direction theta.

    Radial (k_radial) across the long axis, k_apex toward the apex, half the radial motion
    toward the base (bounded so the mitral plane, which descends by k_long, still cuts the
    shape). Motion is monotonic in c, so the cavities are nested over the cycle.
    """
    s2 = np.sin(theta) ** 2
    k_base = min(0.5 * p.k_radial, 0.2 + 1.5 * p.k_long)
    along = np.where(np.sin(theta) < 0, p.k_apex, k_base)
    return p.k_radial * (1.0 - s2) + along * s2


def _wall_of_theta(theta: np.ndarray, p: EchoPatient) -> np.ndarray:
    s2 = np.sin(theta) ** 2
    along = np.where(np.sin(theta) < 0, p.apex_wall, p.wall)
    return p.wall * (1.0 - s2) + along * s2


def _lv_r0(theta: np.ndarray, p: EchoPatient, a: float, b: float) -> np.ndarray:
    """ED radius of the LV cavity about its centre: a bullet (pointier superellipse apex-side)."""
    expo = np.where(np.sin(theta) < 0, _APEX_EXPONENT, 2.0)
    # The wobble fades toward the base direction so the mitral plane always cuts the shape.
    fade = 1.0 - np.clip(np.sin(theta), 0.0, None) ** 2
    return ellipse_radius(theta, a, b, expo) * (1.0 + (fourier_wobble(theta, p.wobble_lv) - 1.0) * fade)


def _lv_radius(theta: np.ndarray, p: EchoPatient, a: float, b: float, c: float) -> np.ndarray:
    r0 = _lv_r0(theta, p, a, b)
    return r0 * (1.0 - c * _k_of_theta(theta, p))


def _lv_contour(p: EchoPatient, view: str, c: float, n: int = 1440):
    """Closed LV polygon (u, v) in the heart frame at contraction c, with the base ends."""
    g = _lv_params(p, view)
    theta = np.linspace(-np.pi, np.pi, n, endpoint=False)
    r = _lv_radius(theta, p, g["a"], g["b"], c)
    u, v = r * np.cos(theta), g["b"] + r * np.sin(theta)
    base = g["L"] * (1.0 - p.k_long * c)
    inside = v < base
    # Rotate so the cut part (around theta = +pi/2) is at the end of the arrays.
    start = int(np.argmax(inside & ~np.roll(inside, 1)))
    u, v, inside = np.roll(u, -start), np.roll(v, -start), np.roll(inside, -start)
    k = int(np.argmin(inside))  # first point past the cut (inside[:k] all True)

    def cut(i0: int, i1: int) -> np.ndarray:
        t = (base - v[i0]) / (v[i1] - v[i0])
        return np.array([u[i0] + t * (u[i1] - u[i0]), base])

    end_a = cut(k - 1, k)  # leaving the arc
    end_b = cut(-1, 0)  # entering the arc
    pu = np.concatenate([[end_b[0]], u[:k], [end_a[0]]])
    pv = np.concatenate([[end_b[1]], v[:k], [end_a[1]]])
    return pu, pv, end_a, end_b


def _lv_disks(p: EchoPatient, view: str, c: float, pose: Pose | None = None, px: float = 1.0, cx: float = 0.0):
    """(chords (20, 4), long axis (4,), volume in units^3) of the LV at contraction c.

    With a `pose`, coordinates are pixels (x = column, y = row) for `px` pixels per depth
    unit and column offset `cx`; otherwise heart-frame units.
    """
    pu, pv, end_a, end_b = _lv_contour(p, view, c)
    if pose is not None:
        x, y = from_local(pu, pv, pose.origin, pose.phi, pose.scale)
        pu, pv = cx + x * px, y * px
    base = np.array([(pu[0] + pu[-1]) / 2.0, (pv[0] + pv[-1]) / 2.0])
    far = np.argmax(np.hypot(pu - base[0], pv - base[1]))
    apex = np.array([pu[far], pv[far]])
    chords = disk_chords(pu, pv, apex, base, N_CHORDS)
    length = float(np.hypot(*(apex - base)))
    return chords, np.concatenate([apex, base]), disks_volume(chords, length), length


def _star(u, v, center, a, b, wobble=None, rot=0.0, p=2.0):
    """(r, R0) of points (u, v) about `center` for a superellipse (a, b) rotated by `rot`."""
    du, dv = u - center[0], v - center[1]
    r = np.hypot(du, dv)
    th = np.arctan2(dv, du) - rot
    r0 = ellipse_radius(th, a, b, p)
    if wobble is not None:
        r0 = r0 * fourier_wobble(th, wobble)
    return r, r0


def _structures(
    view: str, p: EchoPatient, u: np.ndarray, v: np.ndarray, c: np.ndarray, closed: np.ndarray
) -> dict[str, np.ndarray]:
    """Boolean (T, H, W) regions of a view: labelled ones plus 'tissue', 'blood', 'bright'.

    `closed` (T,) says when the atrioventricular valves are shut (a thin leaflet line on the
    atrial side of the valve plane, excluded from the atrium's mask).
    """
    c3 = c[:, None, None]
    shut = closed[:, None, None]
    T = len(c)
    shape = (T, *u.shape)
    out: dict[str, np.ndarray] = {}
    if view == "PSAX":
        return _psax(p, u, v, c3, shape)
    g = _lv_params(p, view)
    a, b, L = g["a"], g["b"], g["L"]
    # LV cavity and myocardium around centre (0, b).
    du, dv = u, v - b
    r = np.hypot(du, dv)
    th = np.arctan2(dv, du)
    r0 = _lv_r0(th, p, a, b)
    k = _k_of_theta(th, p)
    w = _wall_of_theta(th, p)
    area = (r0 + w) ** 2 - r0**2
    rad = r0[None] * (1.0 - c3 * k[None])
    base = L * (1.0 - p.k_long * c3)
    above = v[None] < base
    lv = (r[None] < rad) & above
    lv_outer_full = r[None] ** 2 < rad**2 + area[None]
    myo = lv_outer_full & above & ~lv
    out["LV"], out["MYO"] = lv, myo
    tissue = np.zeros(shape, bool)
    blood = np.zeros(shape, bool)
    bright = np.zeros(shape, bool)
    la_scale = 1.0 + 0.13 * c3

    if view in ("A4C", "A2C"):
        # Left atrium below the mitral plane.
        a_la, b_la = 0.10 * p.la_size, 0.12 * p.la_size
        center = (0.01 if view == "A4C" else 0.0, L + 0.5 * b_la)
        r_la, r0_la = _star(u, v, center, a_la, b_la, p.wobble_la)
        below = v[None] >= base
        la = (r_la[None] < r0_la[None] * la_scale) & below
        leaflet = la & shut & (v[None] < base + 0.012)
        la &= ~leaflet
        tissue |= leaflet
        la_wall = (r_la[None] < r0_la[None] * la_scale + 0.018) & below & ~la
        if view == "A4C":
            # Right heart: RV left of the septum, RA below the tricuspid plane.
            u_sep = -0.66 * a - 0.5 * p.wall
            a_rv, b_top = 0.1 * p.rv_size, 0.33 * L
            b_rv = (L + 0.04 - b_top) / 2.0
            c_rv = (-(a + p.wall) - 0.45 * a_rv, b_top + b_rv)
            r_rv, r0_rv = _star(u, v, c_rv, a_rv, b_rv, p.wobble_rv, rot=0.22)
            base_rv = base - 0.02
            rv_rad = r0_rv[None] * (1.0 - 0.12 * c3)
            rv_region = (v[None] < base_rv) & ~lv_outer_full
            rv = (r_rv[None] < rv_rad) & rv_region
            rv_wall = (r_rv[None] < rv_rad + 0.02) & rv_region & ~rv
            a_ra, b_ra = 0.085 * p.la_size, 0.11 * p.la_size
            r_ra, r0_ra = _star(u, v, (c_rv[0] + 0.02, L + 0.5 * b_ra), a_ra, b_ra, -p.wobble_la)
            below_rv = v[None] >= base_rv
            ra = (r_ra[None] < r0_ra[None] * la_scale) & below_rv & (u[None] < u_sep - 0.012)
            tricuspid = ra & shut & (v[None] < base_rv + 0.012)
            ra &= ~tricuspid
            tissue |= tricuspid
            ra_wall = (r_ra[None] < r0_ra[None] * la_scale + 0.018) & below_rv & ~ra
            la &= u[None] > u_sep + 0.012
            la_wall = (la_wall | ((r_la[None] < r0_la[None] * la_scale) & below)) & ~la
            out["RV"] = rv
            tissue |= rv_wall | ra_wall
            blood |= ra
        out["LA"] = la
        tissue |= la_wall
    elif view == "PLAX":
        # Heart frame rotated so v runs left -> right; u > 0 is anterior (up on screen).
        rv_c = (a + p.wall + 0.045 * p.rv_size, 0.55 * L)
        r_rv, r0_rv = _star(u, v, rv_c, 0.075 * p.rv_size, 0.36, p.wobble_rv, p=2.5)
        rv_rad = r0_rv[None] * (1.0 - 0.1 * c3)
        rv = (r_rv[None] < rv_rad) & ~lv_outer_full
        rv_wall = (r_rv[None] < rv_rad + 0.022) & ~lv_outer_full & ~rv
        # Aortic root continuing the LV outflow (upper base), LA behind it (lower base).
        ao_c = (0.5 * a, L + 0.1)
        r_ao, r0_ao = _star(u, v, ao_c, 0.07, 0.14, p=4.0)
        beyond = v[None] >= base
        ao = (r_ao[None] < r0_ao[None]) & beyond
        ao_wall = (r_ao[None] < r0_ao[None] + 0.022) & beyond & ~ao
        la_c = (-0.5 * a - 0.03, L + 0.12)
        r_la, r0_la = _star(u, v, la_c, 0.1 * p.la_size, 0.11 * p.la_size, p.wobble_la)
        la = (r_la[None] < r0_la[None] * la_scale) & beyond & ~ao & ~ao_wall
        la_wall = (r_la[None] < r0_la[None] * la_scale + 0.018) & beyond & ~la & ~ao
        # Descending aorta behind the LA; pericardium behind the posterior wall.
        r_da, _ = _star(u, v, (-a - p.wall - 0.07, L + 0.02), 0.03, 0.03)
        da = np.broadcast_to(r_da < 0.03, shape)
        da_wall = np.broadcast_to((r_da >= 0.03) & (r_da < 0.045), shape)
        r_out = np.sqrt(rad**2 + area[None])
        peri = (r[None] > r_out + 0.012) & (r[None] < r_out + 0.04) & (u[None] < -0.4 * a) & ~la & ~la_wall
        # Aortic valve cusps: closed in diastole, thicker and brighter with stenosis.
        thick = 0.01 + 0.008 * p.as_grade
        closed = (c3 < 0.15) | (c3 > 0.85) if p.as_grade < 3 else (c3 < 0.3) | (c3 > 0.7)
        cusp = ao & (np.abs(v[None] - (base + 0.03)) < thick) & closed
        hinge = ao & (np.abs(v[None] - (base + 0.03)) < thick + 0.01) & (np.abs(np.abs(u - ao_c[0]) - 0.06) < thick)[None]
        out["RV"], out["LA"] = rv, la
        tissue |= rv_wall | ao_wall | la_wall | da_wall | cusp | hinge
        blood |= (ao & ~cusp & ~hinge) | da
        bright |= peri
        if p.as_grade >= 2:
            bright |= cusp | hinge
    return out | {"tissue": tissue, "blood": blood, "bright": bright}


def _psax(p: EchoPatient, u, v, c3, shape) -> dict[str, np.ndarray]:
    a = p.lv_halfwidth
    r = np.hypot(u, v)
    th = np.arctan2(v, u)
    r0 = a * fourier_wobble(th, p.wobble_lv)
    area = (r0 + p.wall) ** 2 - r0**2
    rad = r0[None] * (1.0 - c3 * p.k_radial)
    lv = r[None] < rad
    outer = r[None] ** 2 < rad**2 + area[None]
    myo = outer & ~lv
    e = a + p.wall
    r_rv, r0_rv = _star(u, v, (-0.62 * e, -0.12 * e), 1.05 * e * p.rv_size, 1.22 * e, p.wobble_rv, rot=0.25)
    rv_rad = r0_rv[None] * (1.0 - 0.08 * c3)
    rv = (r_rv[None] < rv_rad) & ~outer
    rv_wall = (r_rv[None] < rv_rad + 0.022) & ~outer & ~rv
    r_out = np.sqrt(rad**2 + area[None])
    peri = (r[None] > r_out + 0.012) & (r[None] < r_out + 0.04) & (np.sin(th) > 0.35)[None] & ~rv & ~rv_wall
    return {"LV": lv, "MYO": myo, "RV": rv, "tissue": rv_wall, "blood": np.zeros(shape, bool), "bright": peri}


# ---------------------------------------------------------------- pose, phases, rendering


#: Spread of the probe pose and heart size, chosen from published EchoNet-Dynamic and CAMUS
#: figures (apical views tilted by up to ~15 degrees about the apex, depth settings and heart
#: sizes varying by ~15-20 %, the heart off the sector's midline by up to ~6 % of the depth).
POSE_SPREAD: dict[str, float] = {
    "tilt_deg": 15.0,  # rotation about the LV apex: N(0, tilt/2) clipped to +-tilt
    "sweep_deg": 10.0,  # rotation of the whole heart about the transducer (moves it across the fan): U(-s, s)
    "lateral": 0.03,  # heart offset across the sector, depth units: U(-l, l)
    "axial": 0.025,  # offset along the beam, depth units: U(-a, a)
    "zoom": 0.15,  # depth / zoom: scale = exp(U(-z, z)), about +-15 %
}
def random_pose(view: str, rng: np.random.Generator, jitter: float = 1.0) -> Pose:
    """Typical placement of each view's heart frame plus a random similarity (`POSE_SPREAD`).

    The heart frame's origin is the LV apex, so `tilt` turns the heart about its apex; `sweep`
    turns the whole heart about the transducer, moving it across the fan as an off-axis probe
    position does. `jitter` scales every spread (1 = the full spread).
    """
    tilt = POSE_SPREAD["tilt_deg"]
    rot = np.deg2rad(float(np.clip(rng.normal(0.0, tilt / 2.0), -tilt, tilt)) * jitter)
    dx = rng.uniform(-POSE_SPREAD["lateral"], POSE_SPREAD["lateral"]) * jitter
    dy = rng.uniform(-POSE_SPREAD["axial"], POSE_SPREAD["axial"]) * jitter
    scale = float(np.exp(rng.uniform(-POSE_SPREAD["zoom"], POSE_SPREAD["zoom"]) * jitter))
    if view == "A4C":
        origin, phi = (0.0, 0.095), np.deg2rad(-6.0)
    elif view == "A2C":
        origin, phi = (0.0, 0.095), np.deg2rad(-3.0)
    elif view == "PLAX":
        origin, phi = (-0.46, 0.52), np.deg2rad(-97.0)
    else:
        origin, phi = (0.03, 0.5), 0.0
    sweep = np.deg2rad(rng.uniform(-POSE_SPREAD["sweep_deg"], POSE_SPREAD["sweep_deg"]) * jitter)
    ox, oy = origin[0] + dx, origin[1] + dy
    c, s = np.cos(sweep), np.sin(sweep)  # x across, y along the beam; the transducer is at (0, 0)
    return Pose((float(c * ox - s * oy), float(s * ox + c * oy)), float(phi + rot + sweep), scale)


def _lv_fits(p: EchoPatient, view: str, pose: Pose, sector: Sector, margin: float = 0.015) -> bool:
    """Whether the LV with its wall (ED) lies inside the sector of an apical view."""
    g = _lv_params(p, view)
    theta = np.linspace(-np.pi, np.pi, 360, endpoint=False)
    r0 = _lv_radius(theta, p, g["a"], g["b"], 0.0)
    w = _wall_of_theta(theta, p)
    u, v = (r0 + w) * np.cos(theta), g["b"] + (r0 + w) * np.sin(theta)
    keep = v < g["L"]
    x, y = from_local(u[keep], v[keep], pose.origin, pose.phi, pose.scale)
    dy = y - sector.apex_y
    depth = np.hypot(x, dy)
    ang = np.abs(np.arctan2(x, dy))
    return bool(np.all(dy > margin) and np.all(ang < sector.half_angle - 0.02) and np.all(depth < sector.radius - margin))


def random_sector(rng: np.random.Generator) -> Sector:
    return Sector(
        apex_y=float(rng.uniform(0.0, 0.03)),
        half_angle=float(np.deg2rad(rng.uniform(40, 46))),
        radius=float(rng.uniform(0.9, 0.97)),
    )


def beat_phases(n_frames: int, period: int, start: int, systole_frames: int) -> tuple[np.ndarray, float]:
    """Phases of frames sampled on an integer grid of `period` frames per beat."""
    k = (np.arange(n_frames) + start) % period
    return k / period, systole_frames / period


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="reflect")
    return f / (f.std() + 1e-8)


def _render(
    regions: dict[str, np.ndarray],
    sector: np.ndarray,
    depth: np.ndarray,
    rng: np.random.Generator,
    quality: str,
) -> np.ndarray:
    """Reflectivity map -> speckled, attenuated, compressed uint8 frames (T, H, W)."""
    T, H, W = regions["LV"].shape
    s = H / 112.0  # features scale with the image size
    q = {"Good": 0.0, "Medium": 1.0, "Poor": 2.0}[quality]
    bg = 0.28 + 0.1 * _smooth_field(rng, (H, W), 3.0 * s)
    myo_tex = 0.78 + 0.12 * _smooth_field(rng, (H, W), 1.5 * s)
    refl = np.broadcast_to(np.clip(bg, 0.08, 0.6), (T, H, W)).copy()
    wall = np.broadcast_to(np.clip(myo_tex * 0.85, 0.3, 1.2), (T, H, W))
    refl[regions["tissue"]] = wall[regions["tissue"]]
    myo = np.broadcast_to(np.clip(myo_tex, 0.3, 1.3), (T, H, W))
    refl[regions["MYO"]] = myo[regions["MYO"]]
    refl[regions["bright"]] = 1.4
    blood = 0.035 + 0.02 * q
    for name in ("LV", "LA", "RV"):
        if name in regions:
            refl[regions[name]] = blood
    refl[regions["blood"]] = blood
    # Near-field haze (clutter), stronger in poor images.
    refl += (0.15 + 0.12 * q) * np.exp(-depth / 0.08)[None]
    refl = ndimage.gaussian_filter(refl, (0, 0.6 * s, 1.0 * s))
    # Rayleigh speckle: |complex Gaussian|, spatially correlated, AR(1) over frames.
    noise = rng.standard_normal((2, T, H, W), dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, (0, 0, 0.55 * s, 0.9 * s))
    rho = 0.75
    for t in range(1, T):
        noise[:, t] = rho * noise[:, t - 1] + np.sqrt(1 - rho**2) * noise[:, t]
    amp = np.hypot(noise[0], noise[1])
    amp /= amp.mean()
    att = np.exp(-rng.uniform(0.4, 1.0) * depth)
    gain = rng.uniform(0.85, 1.15) * (1.0 - 0.1 * q)
    img = gain * (refl * amp * att[None]) ** 0.75
    img += rng.normal(0, 0.02 + 0.02 * q, img.shape).astype(np.float32)
    img *= sector[None]
    return np.clip(img * 200.0, 0, 255).astype(np.uint8)


def echo_sequence(
    view: str = "A4C",
    rng: np.random.Generator | int | None = 0,
    *,
    n_frames: int | None = 56,
    phases: np.ndarray | None = None,
    size: tuple[int, int] = (112, 112),
    fps: float = 50.0,
    patient: EchoPatient | None = None,
    pose: Pose | None = None,
    sector: Sector | None = None,
    quality: str = "Good",
    ef: float | None = None,
) -> EchoSequence:
    """Generate one echo sequence of `view` with masks, ED/ES and (apical views) tracings.

    Frames are sampled at `fps` on an integer number of frames per beat, so every beat holds
    an exact ED (contraction 0) and ES (contraction 1) frame; pass `phases` (cycle fractions,
    0 = ED, patient.systole = ES) to sample explicitly instead. ED is the first frame at
    contraction 0 and ES the frame at contraction 1 nearest to it (None when not sampled).
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    patient = EchoPatient.random(rng, ef=ef) if patient is None else patient
    sector = random_sector(rng) if sector is None else sector
    if pose is None:
        # Apical views keep the whole LV in the fan (its tracing must be complete).
        # Redraw the full spread first (rejection sampling keeps the pose statistics), then
        # narrow it, then push a large heart deeper and shrink it a little.
        for attempt in range(24):
            pose = random_pose(view, rng, 1.0 if attempt < 12 else max(0.0, 1.0 - (attempt - 11) / 6))
            if attempt >= 16:
                k = attempt - 15
                pose = replace(pose, origin=(pose.origin[0], pose.origin[1] + 0.008 * k), scale=pose.scale * 0.98**k)
            if view not in ("A4C", "A2C") or _lv_fits(patient, view, pose, sector):
                break
    H, W = size
    if phases is None:
        period = max(8, int(round(fps * 60.0 / patient.hr)))
        sys_frames = int(round(patient.systole * period))
        k = np.arange(int(n_frames))
        starts = [s for s in range(period) if {0, sys_frames} <= set(((k + s) % period).tolist())]
        start = int(rng.choice(starts)) if starts else int(rng.integers(0, period))
        phases, systole = beat_phases(int(n_frames), period, start, sys_frames)
        patient = replace(patient, systole=systole)
    phases = np.asarray(phases, dtype=np.float64)
    c = contraction(phases, patient.systole)
    # Pixel grid in depth units (x = 0 at the sector apex column), then the heart frame.
    px = float(H)
    cx = (W - 1) / 2.0
    x = (np.arange(W) - cx) / px
    y = np.arange(H) / px
    X, Y = np.meshgrid(x, y)
    u, v = to_local(X, Y, pose.origin, pose.phi, pose.scale)
    closed = (phases % 1.0 < patient.systole + 0.05) | (phases % 1.0 > 0.97)
    regions = _structures(view, patient, u, v, c, closed)
    dy = Y - sector.apex_y
    depth = np.hypot(X, dy)
    ang = np.arctan2(X, dy)
    edge = np.clip((sector.half_angle - np.abs(ang)) / 0.06, 0, 1) * np.clip((sector.radius - depth) / 0.01, 0, 1)
    fan = (edge * (dy > 0)).astype(np.float32)
    frames = _render(regions, fan, depth.astype(np.float32), rng, quality)
    labels = np.zeros(frames.shape, np.uint8)
    for name in VIEW_LABELS[view]:
        labels[regions[name]] = LABEL_CODES[name]
    labels[:, fan <= 0] = 0
    ed = es = None
    at_ed = np.flatnonzero(np.isclose(c, 0.0, atol=1e-9))
    at_es = np.flatnonzero(np.isclose(c, 1.0, atol=1e-9))
    if at_ed.size:
        ed = int(at_ed[0])
        if at_es.size:
            es = int(at_es[np.argmin(np.abs(at_es - ed))])
    spacing = patient.depth_mm / H
    seq = EchoSequence(
        view=view,
        frames=frames,
        labels=labels,
        contraction=c,
        phases=phases,
        ed=ed,
        es=es,
        fps=float(fps),
        spacing_mm=spacing,
        quality=quality,
        meta={"patient": patient, "pose": pose, "sector": sector},
    )
    if view in ("A4C", "A2C") and ed is not None and es is not None:
        vols = {}
        for name, idx, cc in (("ED", ed, 0.0), ("ES", es, 1.0)):
            chords, axis, vol, _ = _lv_disks(patient, view, cc, pose, px, cx)
            seq.tracings[idx] = np.vstack([axis[None], chords])
            vols[name] = vol * spacing**3 / 1000.0
        seq.edv, seq.esv = vols["ED"], vols["ES"]
        seq.ef = 100.0 * (seq.edv - seq.esv) / seq.edv
    return seq


def lv_disks(patient: EchoPatient, view: str, c: float, pose: Pose, size: tuple[int, int]):
    """Method-of-disks chords (20, 4), long axis (4,), volume (px^3) and length (px) in pixels."""
    H, W = size
    return _lv_disks(patient, view, c, pose, float(H), (W - 1) / 2.0)
