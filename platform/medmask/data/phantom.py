"""Procedural frontal (PA) chest X-ray phantoms: medmask's embedded default dataset.

Four variants (``generate(..., variant=...)``, ``data.variant`` in Hydra):

- ``"benchmark"`` (the default): a benchmark for masked image modeling. The lungs
  cover a realistic share of the image (valid fraction, the share of patches overlapping the
  lungs, ~0.63 at 224 px / 16-px patches and ~0.57 at 64 px / 4-px patches). Every image, of
  every class, carries the same extra density at 1-3 sites drawn from one distribution over
  the lungs (radius ``PhantomSpec.lesion_radius``: a class lesion covers about a fifth of
  the 4-px tokens of a 64-px image); the class decides only its texture and shape (Normal: a
  smooth, featureless summation shadow, not a lesion; COVID: patchy ground-glass mottling;
  Lung_Opacity: compact homogeneous opacities with sharp margins; Viral Pneumonia: a
  reticular net), so neither where nor how much density there is gives the class away (a
  logistic regression on the patch means is near chance). Outside the lungs,
  class-irrelevant high-entropy clutter: background texture (a noise field and an oriented
  weave), collimation edges, a lead marker and a digit stamp, ECG electrodes and leads, a
  nasogastric tube. The five findings keep the classic signatures below, each with
  probability 0.3, independent of the class.
- ``"classic"``: the original phantom, described in the rest of this docstring (class lesions
  that differ in location and amount of density: a linear shortcut; findings 0.15 each).
- ``"confounded"``: the benchmark phantom whose findings mimic the classes (Edema drawn as the
  viral reticulation around the hila, Consolidation as an upper-zone compact opacity,
  Effusion and Atelectasis as basal ground-glass mottling); images without those findings are
  identical to the benchmark's.
- ``"shortcut_marker"``: a control for the grounding protocol (``medmask.eval``): the classic
  phantom whose class lesions are drawn for a class drawn independently of the label (so the
  lungs say nothing about it) and whose label is written by a marker outside the anatomy: a
  bright square (15% of the image side, in a random corner, never on the organ map) whose
  pattern is the class (Normal filled, COVID a ring, Lung_Opacity horizontal bars, Viral
  Pneumonia vertical bars). Unlike the benchmark's clutter (class-irrelevant), it is a
  shortcut: a classifier trained on it reads the label outside the anatomy. Images with the
  same label and lesion class as a classic phantom's differ from it only by the marker.

Each phantom is drawn from simple shapes on normalized coordinates (x, y in [-1, 1], x to the
image right, y down), so it exists at any resolution (32 to 1024 px) and is a pure function of
``(seed, index, size)``; the anatomy and the labels do not even depend on ``size``.

Image (brightness = attenuation, as on a radiograph): dark background; the body (a rounded
torso, brighter where it is thicker); two dark lungs with hilar vessel markings; a bright heart,
mediastinum and spine; curved posterior ribs and two clavicles; exposure (gamma, contrast,
brightness, heel-effect gradient) variation and quantum noise.

Organ map (:mod:`medmask.columns` codes): 1 the patient's right lung, on the image's LEFT
half as on a PA view (x < 0); 2 the left lung (x > 0); 3 the heart, painted over the lungs
where they overlap (the heart lies centre / image-right); 0 everything else.

Classes, in ``COVID_CLASSES`` order, shaped like the COVID-19 Radiography Database:

- 0 Normal: no lesion (empty lesion mask);
- 1 COVID: bilateral, peripheral, lower-zone patchy ground-glass haze;
- 2 Lung_Opacity: one (sometimes two) focal dense round consolidation(s);
- 3 Viral Pneumonia: diffuse bilateral perihilar interstitial (reticular) pattern.

The ``lesion`` mask marks the class lesion (the pixels where it adds visible density, inside
the lungs); it is empty for Normal. The five multi-label findings (``PHANTOM_FINDINGS``:
Atelectasis as a basal plate-like band, Cardiomegaly as a heart 1.3-1.45x wider, Consolidation
as a dense upper-lobe opacity with a sharp fissure border, Edema as bilateral perihilar haze,
Pleural Effusion as a dense basal meniscus) are drawn independently of the class, each with
probability ``finding_prob``; they are not part of the lesion mask.

Class balance: by default the labels of images ``4k .. 4k+3`` are a seeded permutation of the
four classes (exactly balanced over every aligned block of 4, still a function of
``(seed, index)`` only); with ``class_probs`` given, each label is an independent seeded draw.

Gaze: an EYEGAZE-like heatmap, the sum of isotropic Gaussians (sigma 6% of the image side, as
the EYEGAZE script's 150 px filter on ~2500 px images) at simulated fixations on both lungs, the
heart and the lesion and finding sites, with random dwell weights, float32, maximum 1.

Pixel work is vectorized over a chunk of images (separable [B, H, 1] x [B, 1, W] terms wherever
possible); the only per-image Python code draws each image's random numbers from its own
generator keyed by ``(seed, index)``, which makes a chunk generated on one Ray worker identical
to the same images generated anywhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Any

import numpy as np

from medmask import columns as C
from medmask.keyed import keyed_uniform

MIN_SIZE, MAX_SIZE = 32, 1024
NUM_CLASSES = len(C.COVID_CLASSES)
NORMAL, COVID, LUNG_OPACITY, VIRAL_PNEUMONIA = range(NUM_CLASSES)
ATELECTASIS, CARDIOMEGALY, CONSOLIDATION, EDEMA, EFFUSION = range(len(C.PHANTOM_FINDINGS))
SOURCE_NAME = "phantom"
BENCHMARK, CLASSIC, CONFOUNDED = "benchmark", "classic", "confounded"
SHORTCUT_MARKER = "shortcut_marker"
VARIANTS = (BENCHMARK, CLASSIC, CONFOUNDED, SHORTCUT_MARKER)
_CLASSIC_BASED = (CLASSIC, SHORTCUT_MARKER)
DEFAULT_VARIANT = BENCHMARK
_PIXELS_PER_CHUNK = 1 << 21  # bounds memory: ~8 MB per float32 [chunk, H, W] array
_TEXTURE_SIDES = (12, 20, 48)  # low-res noise fields: patches, vessels, reticulation
_RIBS = 9
_GAZE_SIGMA = 0.12  # normalized units (the side is 2): 6% of the image side
_EPS = np.float32(1e-6)

# Named per-image uniform parameters, mapped to [lo, hi]; drawn in this order from the image's
# own generator (append new names at the end to keep existing phantoms unchanged).
_PARAMS: dict[str, tuple[float, float]] = {
    "class_u": (0, 1), "finding_u0": (0, 1), "finding_u1": (0, 1), "finding_u2": (0, 1),
    "finding_u3": (0, 1), "finding_u4": (0, 1),
    "body_w": (0.80, 0.93), "body_cy": (0.12, 0.28), "tissue": (0.46, 0.56),
    "lung_cx": (0.40, 0.46), "lung_rx": (0.25, 0.30), "lung_top": (-0.80, -0.68),
    "lung_base": (0.42, 0.58), "dome": (0.08, 0.16), "right_raise": (0.02, 0.07),
    "air": (0.35, 0.43), "heart_cx": (0.12, 0.17), "heart_drop": (0.27, 0.33),
    "heart_rx": (0.29, 0.34), "heart_ry": (0.24, 0.28), "heart_big": (1.30, 1.45),
    "rib_shift": (0.0, 1.0), "rib_curve": (0.42, 0.58), "clavicle_y": (-0.66, -0.56),
    "gamma": (0.85, 1.18), "contrast": (0.85, 1.15), "brightness": (-0.05, 0.05),
    "heel": (-0.04, 0.04), "noise": (0.7, 1.3),
    "covid_y": (0.25, 0.75), "covid_strength": (0.8, 1.2),
    "opacity_side": (0, 1), "opacity_y": (0.15, 0.55), "opacity_x": (0.00, 0.50),
    "opacity_r": (0.10, 0.15), "opacity_two": (0, 1), "opacity2_y": (0.30, 0.80),
    "viral_strength": (0.8, 1.2),
    "atel_side": (0, 1), "atel_y": (0.68, 0.85), "atel_slope": (-0.25, 0.25),
    "cons_side": (0, 1), "cons_fissure": (0.30, 0.45),
    "effusion_side": (0, 1), "effusion_level": (0.14, 0.26),
    "edema_strength": (0.8, 1.2),
    "dwell_lung": (0.5, 1.0), "dwell_heart": (0.3, 0.7), "dwell_lesion": (1.2, 2.0),
    **{f"jitter{k}": (-0.08, 0.08) for k in range(14)},
}


@dataclass(frozen=True)
class _Table:
    """A variant's named per-image parameters: index, lower bound and span of each."""

    index: dict[str, int]
    lo: np.ndarray
    span: np.ndarray

    @classmethod
    def of(cls, params: dict[str, tuple[float, float]]) -> _Table:
        return cls({name: k for k, name in enumerate(params)},
                   np.array([lo for lo, _ in params.values()], np.float32),
                   np.array([hi - lo for lo, hi in params.values()], np.float32))


_CLASSIC = _Table.of(_PARAMS)
_CLASSIC_KEY = 0x9C7A  # the per-image generator's stream key


@dataclass(frozen=True)
class PhantomSpec:
    """Knobs of the generator (the defaults give balanced classes and visible lesions).

    Attributes:
        class_probs: probabilities of the four classes in ``COVID_CLASSES`` order, each label an
            independent seeded draw; ``None`` (default): exactly balanced seeded permutations
            of the four classes over every aligned block of 4 indices.
        variant: ``"benchmark"`` (default), ``"classic"``, ``"confounded"`` or
            ``"shortcut_marker"`` (module doc).
        finding_prob: probability of each of the five multi-label findings (independent);
            ``None``: the variant's default, 0.15 for ``classic`` and ``shortcut_marker``,
            0.3 otherwise.
        noise: standard deviation of the quantum noise (before per-image variation x0.7-1.3).
        lesion_strength: multiplier of every class lesion's and finding's density.
        lesion_radius: (low, high) range of the benchmark's class-lesion site radius, in the
            normalized coordinates (the image is 2 wide, a lung about 0.8); each site's radius
            is drawn uniformly in it. The default (0.30, 0.42) puts 8-9 % of a lesioned image
            under the lesion mask; at the first draft's (0.14, 0.20), 2.5 %, the tiny ViT of
            the quick study learned nothing (``benchmarks/vit_lesion_scale.py``).
        chunk: the most images drawn per vectorized step (fewer at large sizes, memory-bound).
    """

    variant: str = DEFAULT_VARIANT
    class_probs: tuple[float, float, float, float] | None = None
    finding_prob: float | None = None
    noise: float = 0.02
    lesion_strength: float = 1.0
    lesion_radius: tuple[float, float] = (0.30, 0.42)
    chunk: int = 32

    @property
    def finding_probability(self) -> float:
        """``finding_prob``, or the variant's default (classic-based 0.15, the others 0.3)."""
        if self.finding_prob is not None:
            return float(self.finding_prob)
        return 0.15 if self.variant in _CLASSIC_BASED else 0.3

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown phantom variant {self.variant!r}; valid variants: "
                             f"{', '.join(VARIANTS)}")
        if self.class_probs is not None:
            probs = np.asarray(self.class_probs, dtype=float)
            if (probs.shape != (NUM_CLASSES,) or (probs < 0).any()
                    or not np.isclose(probs.sum(), 1.0)):
                raise ValueError(f"class_probs must be {NUM_CLASSES} non-negative numbers "
                                 f"summing to 1, got {self.class_probs!r}")
        if self.finding_prob is not None and not 0.0 <= self.finding_prob <= 1.0:
            raise ValueError(f"finding_prob must be in [0, 1], got {self.finding_prob!r}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise!r}")
        if self.lesion_strength < 0:
            raise ValueError(f"lesion_strength must be >= 0, got {self.lesion_strength!r}")
        low, high = (float(v) for v in self.lesion_radius)
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"lesion_radius must be (low, high) with 0 < low <= high <= 1, "
                             f"got {self.lesion_radius!r}")
        if int(self.chunk) != self.chunk or self.chunk < 1:
            raise ValueError(f"chunk must be an integer >= 1, got {self.chunk!r}")


def phantom_ids(indices: np.ndarray, seed: int) -> np.ndarray:
    """The ids of phantoms ``indices`` of a seed: ``phantom-s{seed}-{index:06d}``."""
    return np.array([f"phantom-s{seed}-{i:06d}" for i in np.asarray(indices)], dtype=object)


def generate(
    n: int,
    size: int,
    seed: int,
    *,
    start: int = 0,
    spec: PhantomSpec | None = None,
    **options: Any,
) -> dict[str, np.ndarray]:
    """Generate phantoms ``start .. start + n - 1`` of ``seed`` at ``size`` x ``size`` pixels.

    Args:
        n: number of images (>= 0).
        size: image side in pixels, 32 to 1024.
        seed: dataset seed (any integer); image i depends only on (seed, i, size).
        start: index of the first image: ``generate(50, s, seed)`` and
            ``generate(50, s, seed, start=50)`` concatenated equal ``generate(100, s, seed)``.
        spec: generator knobs (:class:`PhantomSpec`).
        **options: :class:`PhantomSpec` fields overriding ``spec`` (e.g. ``variant="classic"``,
            ``finding_prob=0.5``); the default variant is the benchmark phantom.

    Returns:
        Columns keyed by :mod:`medmask.columns`: ``id`` and ``patient_id`` (str, one
        patient per image), ``image`` float32 [n, H, W] in [0, 1], ``organs`` uint8 [n, H, W],
        ``lesion`` uint8 [n, H, W] in {0, 1}, ``gaze`` float32 [n, H, W] (max 1), ``label``
        int64 [n] (index into ``COVID_CLASSES``), ``label_name`` (str), ``labels`` float32
        [n, 5] (multi-hot over ``PHANTOM_FINDINGS``), ``source`` (``"phantom"``).

    Raises:
        ValueError: ``n`` < 0, ``size`` outside [32, 1024], ``start`` < 0, non-integers, or a
            bad option.
    """
    spec = spec or PhantomSpec()
    unknown = sorted(set(options) - {f.name for f in fields(PhantomSpec)})
    if unknown:
        raise ValueError(f"unknown phantom option(s) {unknown}; valid: "
                         f"{[f.name for f in fields(PhantomSpec)]}")
    spec = replace(spec, **options) if options else spec
    n, seed, start = _check_int("n", n, 0), _check_int("seed", seed), _check_int("start", start, 0)
    size = _check_int("size", size, MIN_SIZE, MAX_SIZE)
    chunk = max(1, min(int(spec.chunk), _PIXELS_PER_CHUNK // (size * size)))
    make = _generate_chunk if spec.variant in _CLASSIC_BASED else _generate_benchmark_chunk
    parts = [make(idx, size, seed, spec) for idx in _chunks(start, max(n, 1), chunk)]
    out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return out if n else {key: value[:0] for key, value in out.items()}


def _check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    integral = isinstance(value, int | np.integer) or (
        isinstance(value, float | np.floating) and float(value).is_integer())
    if isinstance(value, bool) or not integral:
        raise ValueError(f"phantom {name} must be an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"phantom {name} must be {bounds}, got {value!r}")
    return int(value)


def _chunks(start: int, n: int, chunk: int) -> Iterator[np.ndarray]:
    for lo in range(start, start + n, chunk):
        yield np.arange(lo, min(lo + chunk, start + n))


# --------------------------------------------------------------------------------------------
# random numbers, per image


@dataclass
class _Draws:
    """Every random number of a chunk; ``p(name)`` is parameter ``name`` in its range, [B]."""

    u: np.ndarray  # [B, number of parameters] uniforms
    textures: list[np.ndarray]  # per side t of the variant's fields: [B, t, t] standard normal
    noise: np.ndarray | None  # [B, H, W], zero mean, unit variance
    table: _Table = _CLASSIC

    def p(self, name: str) -> np.ndarray:
        k = self.table.index[name]
        return self.table.lo[k] + self.table.span[k] * self.u[:, k]

    def take(self, rows: np.ndarray) -> _Draws:
        """The draws of a subset of the chunk's images (without the pixel noise)."""
        return _Draws(self.u[rows], [t[rows] for t in self.textures], None, self.table)


_BYTE_NOISE_STD = np.float32(np.sqrt(2 * (256**2 - 1) / 12))


def _draws(indices: np.ndarray, size: int, seed: int, table: _Table = _CLASSIC,
           sides: tuple[int, ...] = _TEXTURE_SIDES, key: int = _CLASSIC_KEY) -> _Draws:
    b, count = len(indices), len(table.index)
    u = np.empty((b, count), np.float32)
    textures = [np.empty((b, t, t), np.float32) for t in sides]
    noise = np.empty((b, size, size), np.float32)
    for row, index in enumerate(indices):  # random draws only; the pixel work is batched
        rng = np.random.default_rng([seed % 2**64, int(index), key])
        u[row] = rng.random(count, dtype=np.float32)  # size-independent draws first
        for field in textures:
            field[row] = rng.standard_normal(field.shape[1:], dtype=np.float32)
        # Quantum noise: the sum of two uniform bytes (triangular, near-Gaussian), centred and
        # scaled to unit variance; ~10x cheaper than standard_normal at full resolution.
        pair = np.frombuffer(rng.bytes(2 * size * size), np.uint8).reshape(2, size, size)
        np.add(pair[0], pair[1], out=noise[row], dtype=np.float32)
    noise -= np.float32(255.0)
    noise /= _BYTE_NOISE_STD
    return _Draws(u, textures, noise, table)


def _class_labels(indices: np.ndarray, seed: int, draws: _Draws,
                  spec: PhantomSpec) -> np.ndarray:
    """Labels [B]: seeded permutations of the 4 classes per block of 4, or seeded draws."""
    if spec.class_probs is not None:
        cumulative = np.cumsum(spec.class_probs)
        label = np.searchsorted(cumulative, draws.p("class_u"), side="right")
        return np.minimum(label, NUM_CLASSES - 1).astype(np.int64)
    blocks = indices // NUM_CLASSES
    keys = (np.int64(seed % 2**31) * np.int64(1_000_003) + blocks).astype(np.int64)
    permutations = np.argsort(keyed_uniform(keys ^ np.int64(0x51A7E), NUM_CLASSES),
                              axis=1, kind="stable")
    return permutations[np.arange(len(indices)), indices % NUM_CLASSES].astype(np.int64)


# --------------------------------------------------------------------------------------------
# separable shape helpers: parameters are [B]; Y is [1, H, 1] and X is [1, 1, W]


def _col(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32)[:, None, None]


def _gauss(axis: np.ndarray, center: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    """exp(-(axis - center)^2 / 2 sigma^2), broadcast [B, ...]."""
    scale = np.float32(sigma) if np.isscalar(sigma) else _col(sigma)
    return np.exp(np.float32(-0.5) * np.square((axis - _col(center)) / scale))


def _blob(Y: np.ndarray, X: np.ndarray, cy: np.ndarray, cx: np.ndarray,
          sigma: np.ndarray | float) -> np.ndarray:
    """Isotropic Gaussian [B, H, W] with peak 1 at (cy, cx), from a [B,H,1] x [B,1,W] product."""
    return _gauss(Y, cy, sigma) * _gauss(X, cx, sigma)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (np.float32(3.0) - np.float32(2.0) * x)


def _ramp(x: np.ndarray) -> np.ndarray:
    """clip(x, 0, 1): a cheaper soft edge than the smoothstep, for full-size arrays."""
    return np.clip(x, 0.0, 1.0)


def _field(texture: np.ndarray, size: int) -> np.ndarray:
    """Low-res noise [B, t, t] -> smooth field [B, H, W]: separable bicubic upsampling as two
    matrix products R @ T @ R^T (Keys' cubic, a = -0.75, half-pixel centres, clamped borders:
    the same as OpenCV's INTER_CUBIC and torch's bicubic). Each image's product has the same
    shapes whatever the chunk, so a field never depends on which images share its chunk."""
    weights = _bicubic_matrix(texture.shape[-1], size)
    return np.matmul(np.matmul(weights, texture), weights.T)


@lru_cache(maxsize=32)
def _bicubic_matrix(source: int, size: int) -> np.ndarray:
    """[size, source] bicubic interpolation weights (Keys 1981, a = -0.75)."""
    position = (np.arange(size) + 0.5) * source / size - 0.5
    first = np.floor(position).astype(int) - 1
    frac = position - np.floor(position)
    matrix = np.zeros((size, source))
    for tap in range(4):
        distance = np.abs(frac - (tap - 1))
        weight = np.where(distance <= 1, (1.25 * distance - 2.25) * distance**2 + 1,
                          ((-0.75 * distance + 3.75) * distance - 6) * distance + 3)
        np.add.at(matrix, (np.arange(size), np.clip(first + tap, 0, source - 1)), weight)
    return matrix.astype(np.float32)


# --------------------------------------------------------------------------------------------
# one chunk


@dataclass
class _Lung:
    """One lung's geometry: inside mask, soft air fraction and lateral coordinate [B, H, W]."""

    inside: np.ndarray  # bool
    air: np.ndarray  # float32 in [0, 1], soft edges
    lateral: np.ndarray  # [B, 1, W] (side * x - cx) / rx: -1 medial edge, +1 lateral edge
    cx: np.ndarray  # [B] signed centre x
    base: np.ndarray  # [B] lowest y (costophrenic angle)

    def take(self, rows: np.ndarray) -> _Lung:
        return _Lung(self.inside[rows], self.air[rows], self.lateral[rows], self.cx[rows],
                     self.base[rows])


def _lung(Y: np.ndarray, X: np.ndarray, d: _Draws, side: float, base: np.ndarray) -> _Lung:
    """A lung: asymmetric superellipse (flat medial border, pointed apex) over a domed base."""
    cx, rx, top = d.p("lung_cx"), d.p("lung_rx"), d.p("lung_top")
    lateral = (np.float32(side) * X - _col(cx)) / _col(rx)
    dx = np.where(lateral > 0, np.abs(lateral) ** 2.2, np.abs(lateral) ** 4.0)
    half = (base - top) / 2
    vertical = (Y - _col(top + half)) / _col(half)
    dy = np.where(vertical < 0, np.abs(vertical) ** 1.7, np.abs(vertical) ** 6.0)
    radius = dx + dy  # < 1 inside the outline
    dome = _col(base) - _col(d.p("dome")) * np.clip(1.0 - np.square(lateral), 0.0, 1.0)
    below = dome - Y
    inside = (radius < 1.0) & (below > 0)
    air = _ramp((1.0 - radius) * 4.0) * _ramp(below * 14.0)
    return _Lung(inside, air, lateral, np.float32(side) * cx, base)


@dataclass
class _Anatomy:
    """A chunk's anatomy: the organ map, the radiograph before lesions, and the shapes the
    lesions, findings and gaze are placed on."""

    organs: np.ndarray  # uint8 [B, H, W]
    lungs: np.ndarray  # bool [B, H, W]: organ map 1 or 2 (the heart painted over them)
    image: np.ndarray  # float32 [B, H, W] attenuation before lesions, exposure and noise
    right: _Lung
    left: _Lung
    vessels: np.ndarray  # [B, H, W] smooth field whose zero set draws the vessel markings
    heart_cy: np.ndarray  # [B]
    heart_cx: np.ndarray  # [B]
    atelectasis_side: np.ndarray  # [B] -1 (right lung) or +1 (left lung)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalized pixel-centre coordinates: Y [1, H, 1] and X [1, 1, W] in (-1, 1)."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    return axis[None, :, None], axis[None, None, :]


def _anatomy(Y: np.ndarray, X: np.ndarray, d: _Draws, findings: np.ndarray) -> _Anatomy:
    """Lungs (1 image-left, 2 image-right), heart, body, bones and vessel markings."""
    b, size = len(findings), Y.shape[1]
    left_base = d.p("lung_base")
    right_base = left_base - d.p("right_raise")  # the liver lifts the right hemidiaphragm
    atelectasis_side = np.where(d.p("atel_side") < 0.5, -1.0, 1.0).astype(np.float32)
    volume_loss = findings[:, ATELECTASIS] * np.float32(0.05)
    right = _lung(Y, X, d, -1.0, right_base - volume_loss * (atelectasis_side < 0))
    left = _lung(Y, X, d, 1.0, left_base - volume_loss * (atelectasis_side > 0))
    scale = np.where(findings[:, CARDIOMEGALY], d.p("heart_big"), 1.0).astype(np.float32)
    heart_cy = left_base - d.p("heart_drop") - 0.05 * (scale - 1.0)
    heart_cx = d.p("heart_cx") + 0.06 * (scale - 1.0)
    heart_rx, heart_ry = d.p("heart_rx") * scale, d.p("heart_ry") * (0.5 + 0.5 * scale)
    heart_r = (np.square((X - _col(heart_cx)) / _col(heart_rx))
               + np.square((Y - _col(heart_cy)) / _col(heart_ry)))
    heart = heart_r < 1.0
    body_r = (np.abs(X / _col(d.p("body_w"))) ** 3.0
              + np.abs((Y - _col(d.p("body_cy"))) / np.float32(1.25)) ** 3.0)
    body = body_r < 1.0
    organs = np.zeros((b, size, size), np.uint8)
    organs[right.inside & body] = C.ORGAN_RIGHT_LUNG
    organs[left.inside & body] = C.ORGAN_LEFT_LUNG
    organs[heart & body] = C.ORGAN_HEART
    lungs = (organs == C.ORGAN_RIGHT_LUNG) | (organs == C.ORGAN_LEFT_LUNG)
    air = np.maximum(right.air, left.air)
    air[heart] = 0.0

    # --- intensities (attenuation) -----------------------------------------------------------
    thickness = np.sqrt(_ramp(1.0 - body_r))
    image = np.float32(0.03) + body * _col(d.p("tissue")) * (0.78 + 0.22 * thickness)
    mediastinum = _smoothstep((0.16 - np.abs(X - 0.02)) * 20.0) * (_col(d.p("lung_top")) < Y)
    image += np.float32(0.10) * np.maximum(mediastinum, _ramp((1.0 - heart_r) * 5.0))
    vertebrae = 0.75 + 0.25 * np.cos(Y * np.float32(np.pi * 11.0))
    image += np.float32(0.06) * _smoothstep((0.07 - np.abs(X)) * 40.0) * vertebrae
    hila = np.maximum(_blob(Y, X, heart_cy - 0.35, right.cx + 0.12, 0.18),
                      _blob(Y, X, heart_cy - 0.35, left.cx - 0.12, 0.18))
    vessels = _field(d.textures[1], size)
    markings = np.exp(-np.square(vessels * 3.0)) * (0.25 + 0.75 * hila)
    image -= air * (_col(d.p("air")) - np.float32(0.10) * markings)
    bone = np.float32(0.08) * _ribs(Y, X, d) * (0.4 + 0.6 * air) + 0.12 * _clavicles(Y, X, d)
    image += body * bone
    return _Anatomy(organs, lungs, image, right, left, vessels, heart_cy, heart_cx,
                    atelectasis_side)


def _expose(image: np.ndarray, X: np.ndarray, d: _Draws, spec: PhantomSpec) -> np.ndarray:
    """Exposure (gamma, contrast, brightness, heel effect) and quantum noise, clipped to [0, 1]."""
    image = _ramp(image) ** _col(d.p("gamma"))
    image = (image - 0.4) * _col(d.p("contrast")) + (0.4 + _col(d.p("brightness")))
    image += _col(d.p("heel")) * X + (np.float32(spec.noise) * _col(d.p("noise"))) * d.noise
    return _ramp(image).astype(np.float32, copy=False)


def _columns(indices: np.ndarray, seed: int, image: np.ndarray, organs: np.ndarray,
             lesion: np.ndarray, gaze: np.ndarray, label: np.ndarray,
             findings: np.ndarray) -> dict[str, np.ndarray]:
    ids = phantom_ids(indices, seed)
    return {
        C.ID: ids,
        C.PATIENT: np.array([i.replace("phantom-", "patient-") for i in ids], dtype=object),
        C.IMAGE: image,
        C.ORGANS: organs,
        C.LESION: lesion,
        C.GAZE: gaze,
        C.LABEL: label,
        C.LABEL_NAME: np.array([C.COVID_CLASSES[k] for k in label], dtype=object),
        C.LABELS: findings.astype(np.float32),
        C.SOURCE: np.array([SOURCE_NAME] * len(indices), dtype=object),
    }


def _generate_chunk(indices: np.ndarray, size: int, seed: int,
                    spec: PhantomSpec) -> dict[str, np.ndarray]:
    """The classic phantom (``variant="classic"``) and its ``shortcut_marker`` control."""
    d = _draws(indices, size, seed)
    label = _class_labels(indices, seed, d, spec)
    shortcut = spec.variant == SHORTCUT_MARKER
    marker_u = _marker_draws(indices, seed) if shortcut else None
    lesion_class = _independent_classes(marker_u) if marker_u is not None else label
    findings = np.stack([d.p(f"finding_u{k}") < spec.finding_probability for k in range(5)],
                        axis=1)
    Y, X = _grid(size)
    body = _anatomy(Y, X, d, findings)
    right, left = body.right, body.left

    # --- class lesions (lesion mask) and findings (drawn only) -------------------------------
    class_density = _class_lesions(Y, X, d, lesion_class, right, left, size) * body.lungs
    finding_density = _findings(Y, X, d, findings, right, left, body.vessels,
                                body.atelectasis_side)
    finding_density *= right.inside | left.inside
    image = body.image + np.float32(spec.lesion_strength) * (class_density + finding_density)
    lesion = (class_density > 0.04).astype(np.uint8)
    if marker_u is not None:
        image += _MARKER_LEVEL * _class_marker(Y, X, marker_u, label) * (body.organs == 0)
    image = _expose(image, X, d, spec)

    sites = _class_sites(d, lesion_class, right, left) + _finding_sites(
        d, findings, right, left, body.atelectasis_side)
    gaze = _gaze(Y, X, d, right, left, body.heart_cy, body.heart_cx, sites)
    return _columns(indices, seed, image, body.organs, lesion, gaze, label, findings)


_MARKER_KEY = 0x5407C  # keyed draws of the shortcut marker (the classic draws stay as they are)
_MARKER_SIDE = np.float32(0.30)  # normalized units: 15% of the image side
_MARKER_LEVEL = np.float32(0.5)


def _marker_draws(indices: np.ndarray, seed: int) -> np.ndarray:
    """[B, 4] uniforms (lesion class, corner, y and x jitter), keyed by (seed, index) apart from
    the image's own generator, so the classic draws are unchanged."""
    keys = (np.int64(seed % 2**31) * np.int64(1_000_003) + indices.astype(np.int64))
    return keyed_uniform(keys ^ np.int64(_MARKER_KEY), 4)


def _independent_classes(marker_u: np.ndarray) -> np.ndarray:
    """The class the lungs show in the shortcut variant: uniform, independent of the label."""
    return np.minimum((marker_u[:, 0] * NUM_CLASSES).astype(np.int64), NUM_CLASSES - 1)


def _class_marker(Y: np.ndarray, X: np.ndarray, marker_u: np.ndarray,
                  label: np.ndarray) -> np.ndarray:
    """[B, H, W] in {0, 1}: the label's pattern in a square of side ``_MARKER_SIDE`` centred
    near a random corner (0.78-0.84 from the centre on each axis): Normal filled, COVID a
    ring, Lung_Opacity horizontal bars, Viral Pneumonia vertical bars (4 bands each)."""
    corner_y = np.where(marker_u[:, 1] < 0.5, -1.0, 1.0)
    corner_x = np.where((marker_u[:, 1] * 4).astype(int) % 2 == 0, -1.0, 1.0)
    cy = corner_y * (0.78 + 0.06 * marker_u[:, 2])
    cx = corner_x * (0.78 + 0.06 * marker_u[:, 3])
    v = (Y - _col(cy)) / _MARKER_SIDE + 0.5  # [B, H, 1] in [0, 1) inside the square
    u = (X - _col(cx)) / _MARKER_SIDE + 0.5  # [B, 1, W]
    inside = (v >= 0) & (v < 1) & (u >= 0) & (u < 1)
    ring = (np.minimum(v, 1 - v) < 0.25) | (np.minimum(u, 1 - u) < 0.25)
    rows = (np.floor(v * 4).astype(int) % 2 == 0) & np.ones_like(u, bool)
    cols = (np.floor(u * 4).astype(int) % 2 == 0) & np.ones_like(v, bool)
    filled = np.ones_like(ring)
    kind = label[:, None, None]
    pattern = np.where(kind == NORMAL, filled, np.where(
        kind == COVID, ring, np.where(kind == LUNG_OPACITY, rows, cols)))
    return (inside & pattern).astype(np.float32)


def _ribs(Y: np.ndarray, X: np.ndarray, d: _Draws) -> np.ndarray:
    """Posterior ribs: equally spaced arcs descending laterally, all drawn by one periodic op."""
    top, base = d.p("lung_top"), d.p("lung_base")
    spacing = (base - top) / (_RIBS - 1.5)
    ax = np.abs(X)
    arc = _col(d.p("rib_curve")) * np.square(ax) - np.float32(0.06) * ax  # [B, 1, W]
    phase = (Y - _col(top - 0.2 + d.p("rib_shift") * 0.1) - arc) / _col(spacing)
    offset = (phase - np.round(phase)) * _col(spacing)  # distance to the nearest rib centre
    band = _ramp(1.0 - np.square(offset / np.float32(0.032)))
    extent = (phase > 0.5) & (phase < _RIBS - 0.5) & (ax > 0.07) & (ax < 0.88)
    return np.sqrt(band) * extent


def _clavicles(Y: np.ndarray, X: np.ndarray, d: _Draws) -> np.ndarray:
    """Two clavicles from the sternal notch rising laterally towards the shoulders."""
    ax = np.abs(X)
    course = _col(d.p("clavicle_y")) - 0.22 * (ax - 0.08) + 0.05 * np.sin((ax - 0.08) * 5.5)
    band = _ramp(1.0 - np.square((Y - course) / np.float32(0.03)))
    return np.sqrt(band) * ((ax > 0.06) & (ax < 0.68))


def _zone(d: _Draws, t: np.ndarray | float) -> np.ndarray:
    """The y at fraction ``t`` of the way from the lung apex to the base, [B]."""
    top = d.p("lung_top")
    return top + np.asarray(t, np.float32) * (d.p("lung_base") - top)


def _rows_where(present: np.ndarray) -> np.ndarray:
    return np.flatnonzero(present)


def _class_lesions(Y: np.ndarray, X: np.ndarray, d: _Draws, label: np.ndarray, right: _Lung,
                   left: _Lung, size: int) -> np.ndarray:
    """Density [B, H, W] of each image's class lesion, computed only on the images that have it.
    """
    density = np.zeros((len(label), size, size), np.float32)
    rows = _rows_where(label == COVID)  # bilateral, peripheral, lower-zone patchy ground glass
    if len(rows):
        s, r, lt = d.take(rows), right.take(rows), left.take(rows)
        patchy = _smoothstep(0.5 + 0.9 * _field(s.textures[0], size))
        lower = _gauss(Y, _zone(s, s.p("covid_y")) + 0.1, 0.22)
        peripheral = (_ramp((r.lateral + 0.1) * 1.6) * r.air
                      + _ramp((lt.lateral + 0.1) * 1.6) * lt.air)
        density[rows] = _col(0.24 * s.p("covid_strength")) * lower * peripheral * patchy

    rows = _rows_where(label == LUNG_OPACITY)  # one (30%: two) dense round focal consolidation
    if len(rows):
        s, r, lt = d.take(rows), right.take(rows), left.take(rows)
        patchy = _field(s.textures[0], size)
        for cy, cx, present in _opacity_centres(s, r, lt):
            shaped = _blob(Y, X, cy, cx, s.p("opacity_r")) * (1.0 + 0.25 * patchy)
            density[rows] += _col(0.38 * present) * _smoothstep((shaped - 0.35) * 3.0)

    rows = _rows_where(label == VIRAL_PNEUMONIA)  # diffuse bilateral perihilar interstitial
    if len(rows):
        s, r, lt = d.take(rows), right.take(rows), left.take(rows)
        y = _zone(s, 0.55)
        perihilar = np.maximum(_blob(Y, X, y, r.cx, 0.26), _blob(Y, X, y, lt.cx, 0.26))
        net = np.exp(-np.square(_field(s.textures[2], size) * 4.0))  # lines on the zero set
        envelope = _ramp((perihilar - 0.25) * 2.0)
        density[rows] = _col(s.p("viral_strength")) * envelope * (0.05 + 0.16 * net)
    return density


def _opacity_centres(d: _Draws, right: _Lung, left: _Lung) -> list[tuple[Any, ...]]:
    """(cy, cx, present) of the focal opacities: one in a lung (upper half, lateral
    half, so a large heart never hides it), a second in the other lung in 30% of images."""
    on_right = d.p("opacity_side") < 0.5
    first = np.where(on_right, right.cx, left.cx)
    second = np.where(on_right, left.cx, right.cx)
    lateral_shift = np.sign(first) * d.p("opacity_x") * d.p("lung_rx")  # away from the heart
    return [(_zone(d, d.p("opacity_y")), first + lateral_shift,
             np.ones(len(first), bool)),
            (_zone(d, d.p("opacity2_y")), second, d.p("opacity_two") < 0.3)]


def _class_sites(d: _Draws, label: np.ndarray, right: _Lung,
                 left: _Lung) -> list[tuple[Any, ...]]:
    """Gaze sites (cy, cx, present [B]) of the class lesions."""
    sites: list[tuple[Any, ...]] = []
    for lung in (right, left):
        lateral_x = lung.cx + 0.6 * np.sign(lung.cx) * d.p("lung_rx")
        sites.append((_zone(d, d.p("covid_y")), lateral_x, label == COVID))
        sites.append((_zone(d, 0.5), lung.cx, label == VIRAL_PNEUMONIA))
    for cy, cx, present in _opacity_centres(d, right, left):
        sites.append((cy, cx, present & (label == LUNG_OPACITY)))
    return sites


def _findings(Y: np.ndarray, X: np.ndarray, d: _Draws, findings: np.ndarray, right: _Lung,
              left: _Lung, vessels: np.ndarray, atelectasis_side: np.ndarray) -> np.ndarray:
    """Density [B, H, W] of the multi-label findings (Cardiomegaly is the heart's size)."""
    size = Y.shape[1]
    density = np.zeros((len(findings), size, size), np.float32)
    rows = _rows_where(findings[:, ATELECTASIS])  # plate-like band in a lower zone
    if len(rows):
        s, r, lt, side = d.take(rows), right.take(rows), left.take(rows), atelectasis_side[rows]
        cx = np.where(side < 0, r.cx, lt.cx)
        line = _col(_zone(s, s.p("atel_y"))) + _col(s.p("atel_slope")) * (X - _col(cx))
        band = _ramp(1.0 - np.square((Y - line) / np.float32(0.03)))
        density[rows] += 0.20 * band * _ramp((0.3 - np.abs(X - _col(cx))) * 6.0)

    rows = _rows_where(findings[:, CONSOLIDATION])  # dense upper lobe above a sharp fissure
    if len(rows):
        s, r, lt = d.take(rows), right.take(rows), left.take(rows)
        on_right = _col(s.p("cons_side") < 0.5)
        fissure = _col(_zone(s, s.p("cons_fissure")))
        lobe = np.where(on_right, r.air, lt.air) * _ramp((fissure - Y) * 30.0)
        bronchograms = 1.0 - 0.3 * np.exp(-np.square(vessels[rows] * 3.0))
        density[rows] += 0.26 * lobe * bronchograms

    rows = _rows_where(findings[:, EDEMA])  # bilateral perihilar "bat wing" haze
    if len(rows):
        s, r, lt = d.take(rows), right.take(rows), left.take(rows)
        y = _zone(s, 0.55)
        wings = np.maximum(_blob(Y, X, y, r.cx + 0.1, 0.22), _blob(Y, X, y, lt.cx - 0.1, 0.22))
        density[rows] += _col(0.11 * s.p("edema_strength")) * wings

    rows = _rows_where(findings[:, EFFUSION])  # dense basal meniscus, higher laterally
    if len(rows):
        s, r, lt = d.take(rows), right.take(rows), left.take(rows)
        on_right = s.p("effusion_side") < 0.5
        lung_air = np.where(_col(on_right), r.air, lt.air)
        lateral = np.where(_col(on_right), r.lateral, lt.lateral)
        base = np.where(on_right, r.base, lt.base)
        meniscus = _col(base - s.p("effusion_level")) - 0.08 * np.clip(lateral, 0.0, None)
        fluid = _smoothstep((Y - meniscus) * 25.0)
        density[rows] += 0.38 * fluid * np.maximum(lung_air, 0.5)
    return density


def _finding_sites(d: _Draws, findings: np.ndarray, right: _Lung, left: _Lung,
                   atelectasis_side: np.ndarray) -> list[tuple[Any, ...]]:
    """Gaze sites (cy, cx, present [B]) of the findings drawn in the lungs."""
    top = d.p("lung_top")
    on_right_cons = d.p("cons_side") < 0.5
    on_right_effusion = d.p("effusion_side") < 0.5
    return [
        (_zone(d, d.p("atel_y")), np.where(atelectasis_side < 0, right.cx, left.cx),
         findings[:, ATELECTASIS]),
        ((top + _zone(d, d.p("cons_fissure"))) / 2, np.where(on_right_cons, right.cx, left.cx),
         findings[:, CONSOLIDATION]),
        (_zone(d, 0.55), right.cx + 0.1, findings[:, EDEMA]),
        (_zone(d, 0.55), left.cx - 0.1, findings[:, EDEMA]),
        (np.where(on_right_effusion, right.base, left.base) - 0.08,
         np.where(on_right_effusion, right.cx, left.cx), findings[:, EFFUSION]),
    ]


def _gaze(Y: np.ndarray, X: np.ndarray, d: _Draws, right: _Lung, left: _Lung,
          heart_cy: np.ndarray, heart_cx: np.ndarray,
          sites: list[tuple[Any, ...]]) -> np.ndarray:
    """EYEGAZE-like heatmap: Gaussians at simulated fixations, weighted by dwell, max 1.

    As in the EYEGAZE dataset's heatmap script (1 per fixation, then a Gaussian filter with
    sigma 150 px at the original ~2500 px resolution, i.e. 6% of the side). Each fixation is a
    separable product of a [B, H, 1] and a [B, 1, W] Gaussian.
    """
    jitter = [d.p(f"jitter{k}") for k in range(14)]
    dwell_lung = d.p("dwell_lung")
    fixations: list[tuple[Any, ...]] = []
    for k, lung in enumerate((right, left)):  # a scan of each lung: upper, middle, lower zone
        for z, t in enumerate((0.3, 0.55, 0.78)):
            j = 6 * k + 2 * z
            fixations.append((_zone(d, t) + jitter[j], lung.cx + jitter[j + 1], dwell_lung))
    fixations.append((heart_cy + jitter[12], heart_cx + jitter[13], d.p("dwell_heart")))
    for cy, cx, present in sites:  # dwell on every lesion and finding site
        fixations.append((cy, cx, d.p("dwell_lesion") * present))
    gaze = np.zeros((len(dwell_lung), Y.shape[1], X.shape[2]), np.float32)
    for cy, cx, weight in fixations:
        active = np.flatnonzero(weight > 0)
        if len(active) == len(weight):
            gaze += _col(weight) * _gauss(Y, cy, _GAZE_SIGMA) * _gauss(X, cx, _GAZE_SIGMA)
        elif len(active):
            gaze[active] += (_col(weight[active]) * _gauss(Y, cy[active], _GAZE_SIGMA)
                             * _gauss(X, cx[active], _GAZE_SIGMA))
    gaze /= np.maximum(gaze.max(axis=(1, 2), keepdims=True), _EPS)
    return gaze


# --------------------------------------------------------------------------------------------
# the benchmark phantom (variants "benchmark" and "confounded")

_BENCH_SITES = 3  # class-lesion sites per image: the first always, the others half the time
_BENCH_SIDES = (12, 20, 32, 28, 40)  # fields: spare, vessels, mottle, reticulation, clutter
_MOTTLE, _NET, _CLUTTER = 2, 3, 4  # indices into the benchmark's textures
_BENCH_KEY = 0xBE4C
_BENCH_PARAMS: dict[str, tuple[float, float]] = {
    "class_u": (0, 1), **{f"finding_u{k}": (0, 1) for k in range(5)},
    # anatomy: the classic shapes with larger lungs (valid fraction ~0.6)
    "body_w": (0.93, 0.99), "body_cy": (0.04, 0.14), "tissue": (0.46, 0.56),
    "lung_cx": (0.46, 0.51), "lung_rx": (0.38, 0.43), "lung_top": (-0.90, -0.80),
    "lung_base": (0.62, 0.76), "dome": (0.08, 0.14), "right_raise": (0.02, 0.06),
    "air": (0.35, 0.43), "heart_cx": (0.10, 0.15), "heart_drop": (0.30, 0.36),
    "heart_rx": (0.30, 0.35), "heart_ry": (0.25, 0.29), "heart_big": (1.25, 1.40),
    "rib_shift": (0.0, 1.0), "rib_curve": (0.42, 0.58), "clavicle_y": (-0.80, -0.70),
    "gamma": (0.85, 1.18), "contrast": (0.85, 1.15), "brightness": (-0.05, 0.05),
    "heel": (-0.04, 0.04), "noise": (0.7, 1.3),
    # findings (the classic signatures)
    "atel_side": (0, 1), "atel_y": (0.68, 0.85), "atel_slope": (-0.25, 0.25),
    "cons_side": (0, 1), "cons_fissure": (0.30, 0.45),
    "effusion_side": (0, 1), "effusion_level": (0.14, 0.26),
    "edema_strength": (0.8, 1.2),
    "dwell_lung": (0.5, 1.0), "dwell_heart": (0.3, 0.7), "dwell_lesion": (1.2, 2.0),
    **{f"jitter{k}": (-0.08, 0.08) for k in range(14)},
    # class-lesion sites: lung, lateral / vertical lung coordinate, radius, presence
    **{f"site{k}_{name}": bounds for k in range(_BENCH_SITES) for name, bounds in (
        ("side", (0, 1)), ("lateral", (-0.25, 0.70)), ("vertical", (-0.70, 0.60)),
        ("radius", (0, 1)), ("on", (0, 1)))},  # radius: PhantomSpec.lesion_radius
    "lesion_amp": (0.85, 1.15),
    # clutter outside the lungs
    "coll_left": (0.0, 0.08), "coll_right": (0.0, 0.08), "coll_top": (0.0, 0.06),
    "coll_bottom": (0.0, 0.10), "coll_angle": (-0.04, 0.04), "coll_level": (0.25, 0.45),
    "bg_amp": (0.04, 0.09), "weave_f": (5.0, 9.0), "weave_theta": (0.0, np.pi),
    "weave_phase": (0.0, 2 * np.pi), "weave_amp": (0.01, 0.04),
    "marker_corner": (0, 1), "marker_char": (0, 1), "marker_size": (0.10, 0.14),
    "marker_x": (0.02, 0.08), "stamp_corner": (0, 1), "stamp_size": (0.06, 0.08),
    **{f"stamp_d{k}": (0, 1) for k in range(6)},
    **{f"lead{k}_{name}": bounds for k in range(3) for name, bounds in (
        ("x", (-0.85, 0.85)), ("top", (0, 1)), ("y", (0, 1)), ("wave", (0, 2 * np.pi)))},
    "tube_on": (0, 1), "tube_x": (-0.03, 0.06), "tube_end": (0.30, 0.80),
    "tube_phase": (0, 2 * np.pi),
}
_BENCH = _Table.of(_BENCH_PARAMS)
_LESION_AMPLITUDE = np.float32(0.2)  # peak density of the Normal pattern at one site
_MASS_CAP = np.float32(4.0)  # the most a pattern is scaled up to match the reference mass

# 3 x 5 bitmap font of the markers: digits 0-9, then L and R (rows top to bottom)
_FONT_ROWS = ("111 101 101 101 111", "010 110 010 010 111", "111 001 111 100 111",
              "111 001 111 001 111", "101 101 111 001 001", "111 100 111 001 111",
              "111 100 111 101 111", "111 001 010 010 010", "111 101 111 101 111",
              "111 101 111 001 111", "100 100 100 100 111", "110 101 110 101 101")
_FONT = np.array([[[c == "1" for c in row] for row in glyph.split()] for glyph in _FONT_ROWS])
_GLYPH_L, _GLYPH_R = 10, 11


def _generate_benchmark_chunk(indices: np.ndarray, size: int, seed: int,
                              spec: PhantomSpec) -> dict[str, np.ndarray]:
    """The benchmark phantom (``variant="benchmark"`` or ``"confounded"``)."""
    d = _draws(indices, size, seed, _BENCH, _BENCH_SIDES, _BENCH_KEY)
    label = _class_labels(indices, seed, d, spec)
    findings = np.stack([d.p(f"finding_u{k}") < spec.finding_probability for k in range(5)],
                        axis=1)
    Y, X = _grid(size)
    body = _anatomy(Y, X, d, findings)
    right, left, lungs = body.right, body.left, body.lungs
    sites = _lesion_sites(d, right, left, spec.lesion_radius)
    class_density = np.zeros_like(body.image)
    for kind in range(NUM_CLASSES):
        rows = _rows_where(label == kind)
        if len(rows):
            class_density[rows] = _site_pattern(kind, Y, X, d.take(rows), lungs[rows],
                                                *(s[rows] for s in sites))
    if spec.variant == CONFOUNDED:
        finding_density = _mimicking_findings(Y, X, d, findings, body)
    else:
        finding_density = _findings(Y, X, d, findings, right, left, body.vessels,
                                    body.atelectasis_side)
    finding_density *= right.inside | left.inside
    image = body.image + np.float32(spec.lesion_strength) * (class_density + finding_density)
    image += _clutter(Y, X, d) * ~lungs
    lesion = ((class_density > 0.04) & (label != NORMAL)[:, None, None]).astype(np.uint8)
    image = _expose(image, X, d, spec)

    cy, cx, _, on = sites
    gaze_sites = [(cy[:, k], cx[:, k], on[:, k]) for k in range(_BENCH_SITES)]
    gaze_sites += _finding_sites(d, findings, right, left, body.atelectasis_side)
    gaze = _gaze(Y, X, d, right, left, body.heart_cy, body.heart_cx, gaze_sites)
    return _columns(indices, seed, image, body.organs, lesion, gaze, label, findings)


def _lesion_sites(d: _Draws, right: _Lung, left: _Lung,
                  radius_range: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """(cy, cx, radius, present), each [B, sites]: the class-lesion sites, one distribution for
    every class (uniform lung and coordinates within the lung, away from the heart)."""
    cy, cx, radius, on = [], [], [], []
    low, span = np.float32(radius_range[0]), np.float32(radius_range[1] - radius_range[0])
    for k in range(_BENCH_SITES):
        on_right = d.p(f"site{k}_side") < 0.5
        base = np.where(on_right, right.base, left.base)
        top = d.p("lung_top")
        half = (base - top) / 2
        side = np.where(on_right, -1.0, 1.0).astype(np.float32)
        centre = np.where(on_right, right.cx, left.cx)
        cy.append(top + half * (1.0 + d.p(f"site{k}_vertical")))
        cx.append(centre + side * d.p(f"site{k}_lateral") * d.p("lung_rx"))
        radius.append(low + span * d.p(f"site{k}_radius"))
        on.append(d.p(f"site{k}_on") < 0.5 if k else np.ones(len(on_right), bool))
    return tuple(np.stack(v, axis=1).astype(dtype) for v, dtype in (
        (cy, np.float32), (cx, np.float32), (radius, np.float32), (on, bool)))


def _site_pattern(kind: int, Y: np.ndarray, X: np.ndarray, d: _Draws, lungs: np.ndarray,
                  cy: np.ndarray, cx: np.ndarray, radius: np.ndarray,
                  on: np.ndarray) -> np.ndarray:
    """Density [b, H, W] of a class pattern at the sites [b, S], inside ``lungs``.

    Every pattern is scaled to the lung-masked mass of the Normal pattern at the same sites
    (capped at x4), so the classes differ in texture and shape, not in how much density they
    add or where: Normal a smooth, featureless summation shadow (no lesion); COVID patchy
    ground-glass mottling; Lung_Opacity a compact, homogeneous consolidation with a sharp
    margin; Viral Pneumonia a reticular (net-like) interstitial pattern.
    """
    size = Y.shape[1]
    smooth = np.zeros((len(cy), size, size), np.float32)
    compact = np.zeros_like(smooth) if kind == LUNG_OPACITY else None
    for k in range(cy.shape[1]):
        dist2 = ((np.square(Y - _col(cy[:, k])) + np.square(X - _col(cx[:, k])))
                 / _col(np.square(radius[:, k])))
        weight = _col(on[:, k].astype(np.float32))
        smooth += weight * np.exp(np.float32(-1.6) * dist2)
        if compact is not None:
            compact += weight * _ramp((np.float32(0.45) - dist2) * np.float32(8.0))
    smooth *= lungs
    if kind == NORMAL:
        pattern = smooth
    elif kind == COVID:
        pattern = smooth * _smoothstep(0.5 + 1.0 * _field(d.textures[_MOTTLE], size))
    elif kind == LUNG_OPACITY:
        pattern = np.minimum(compact, 1.0) * lungs
    else:
        pattern = smooth * np.exp(-np.square(_field(d.textures[_NET], size) * 3.0))
    reference = smooth.sum(axis=(1, 2))
    mass = np.maximum(pattern.sum(axis=(1, 2)), _EPS)
    scale = np.minimum(reference / mass, _MASS_CAP) * _LESION_AMPLITUDE * d.p("lesion_amp")
    return pattern * _col(scale)


def _mimicking_findings(Y: np.ndarray, X: np.ndarray, d: _Draws, findings: np.ndarray,
                        body: _Anatomy) -> np.ndarray:
    """The ``confounded`` variant's findings: drawn with the class patterns (Edema as the
    viral reticulation around the hila, Consolidation as an upper-zone opacity, Effusion and
    Atelectasis as basal COVID-like mottling); Cardiomegaly stays the heart's size."""
    right, left = body.right, body.left
    size = Y.shape[1]
    density = np.zeros((len(findings), size, size), np.float32)
    on_right_cons = d.p("cons_side") < 0.5
    on_right_effusion = d.p("effusion_side") < 0.5
    atel_right = body.atelectasis_side < 0
    mimics = [  # finding, class pattern, [(cy [B], cx [B], radius)]
        (EDEMA, VIRAL_PNEUMONIA, [(_zone(d, 0.55), right.cx + 0.1, 0.26),
                                  (_zone(d, 0.55), left.cx - 0.1, 0.26)]),
        (CONSOLIDATION, LUNG_OPACITY,
         [(_zone(d, 0.25), np.where(on_right_cons, right.cx, left.cx), 0.24)]),
        (EFFUSION, COVID, [(np.where(on_right_effusion, right.base, left.base) - 0.12,
                            np.where(on_right_effusion, right.cx, left.cx), 0.24)]),
        (ATELECTASIS, COVID, [(_zone(d, d.p("atel_y")),
                               np.where(atel_right, right.cx, left.cx), 0.20)]),
    ]
    for finding, kind, places in mimics:
        rows = _rows_where(findings[:, finding])
        if not len(rows):
            continue
        cy = np.stack([np.asarray(cy, np.float32)[rows] for cy, _, _ in places], axis=1)
        cx = np.stack([np.asarray(cx, np.float32)[rows] for _, cx, _ in places], axis=1)
        radius = np.stack([np.full(len(rows), r, np.float32) for _, _, r in places], axis=1)
        density[rows] += _site_pattern(kind, Y, X, d.take(rows), body.lungs[rows], cy, cx,
                                       radius, np.ones(cy.shape, bool))
    return density


def _clutter(Y: np.ndarray, X: np.ndarray, d: _Draws) -> np.ndarray:
    """Class-irrelevant, high-entropy content [B, H, W] (the caller keeps it off the lungs):
    background texture (a noise field and an oriented weave), collimation edges, a lead
    marker (L or R) and a digit stamp, ECG electrodes with their leads, a nasogastric tube."""
    size = Y.shape[1]
    pixel = np.float32(2.0 / size)  # one pixel in normalized units
    theta = d.p("weave_theta")
    along = X * _col(np.cos(theta)) + Y * _col(np.sin(theta))
    out = _col(d.p("bg_amp")) * _field(d.textures[_CLUTTER], size)
    out += _col(d.p("weave_amp")) * np.sin(along * _col(2 * np.pi * d.p("weave_f"))
                                           + _col(d.p("weave_phase")))
    # collimation: outside a slightly rotated exposure field the film is under-exposed (bright)
    angle = d.p("coll_angle")
    u = X * _col(np.cos(angle)) + Y * _col(np.sin(angle))
    v = Y * _col(np.cos(angle)) - X * _col(np.sin(angle))
    exposed = ((u > _col(d.p("coll_left") - 1.0)) & (u < _col(1.0 - d.p("coll_right")))
               & (v > _col(d.p("coll_top") - 1.0)) & (v < _col(1.0 - d.p("coll_bottom"))))
    out += _col(d.p("coll_level")) * ~exposed
    # text: a lead marker in a top corner, a 6-digit stamp in a bottom corner
    right_corner = d.p("marker_corner") < 0.5
    marker_cell = d.p("marker_size") / 5
    marker_x = np.where(right_corner, 1.0 - d.p("marker_x") - 3 * marker_cell,
                        d.p("marker_x") - 1.0)
    glyph = np.where(d.p("marker_char") < 0.5, _GLYPH_L, _GLYPH_R)[:, None]
    out += 0.45 * _text(Y, X, np.full_like(marker_x, -0.97), marker_x, marker_cell, glyph)
    stamp_cell = d.p("stamp_size") / 5
    digits = np.stack([np.minimum((d.p(f"stamp_d{k}") * 10).astype(int), 9)
                       for k in range(6)], axis=1)
    stamp_x = np.where(d.p("stamp_corner") < 0.5, 0.96 - 23 * stamp_cell, -0.96)
    out += 0.35 * _text(Y, X, 0.96 - 5 * stamp_cell, stamp_x, stamp_cell, digits)
    # ECG electrodes (rings) with leads running to the nearest top or bottom edge
    for k in range(3):
        top = d.p(f"lead{k}_top") < 0.5
        cy = np.where(top, -0.95 + 0.06 * d.p(f"lead{k}_y"), 0.82 + 0.12 * d.p(f"lead{k}_y"))
        cx = d.p(f"lead{k}_x")
        dist = np.sqrt(np.square(Y - _col(cy)) + np.square(X - _col(cx)))
        out += 0.4 * _ramp(1.0 - np.abs(dist - 0.04) / np.maximum(0.012, pixel))
        course = _col(cx) + 0.05 * np.sin(Y * 4.0 + _col(d.p(f"lead{k}_wave")))
        beyond = np.where(top[:, None, None], _col(cy) - 0.04 > Y, _col(cy) + 0.04 < Y)
        out += 0.3 * beyond * _ramp(1.0 - np.abs(X - course) / np.maximum(0.008, pixel))
    # a nasogastric tube down the mediastinum
    course = _col(d.p("tube_x")) + 0.02 * np.sin(Y * 3.0 + _col(d.p("tube_phase")))
    present = (d.p("tube_on") < 0.7)[:, None, None] & (_col(d.p("tube_end")) > Y)
    out += 0.3 * present * _ramp(1.0 - np.abs(X - course) / np.maximum(0.012, pixel))
    return out.astype(np.float32, copy=False)


def _text(Y: np.ndarray, X: np.ndarray, y0: np.ndarray, x0: np.ndarray, cell: np.ndarray,
          glyphs: np.ndarray) -> np.ndarray:
    """[B, H, W] in {0, 1}: the strings ``glyphs`` [B, n] (indices into the 3 x 5 font) with
    their top-left corners at (y0, x0) [B] and square cells of side ``cell`` [B]."""
    row = np.floor((Y - _col(y0)) / _col(cell)).astype(np.int64)  # [B, H, 1]
    col = np.floor((X - _col(x0)) / _col(cell)).astype(np.int64)  # [B, 1, W]
    slot, within = col // 4, col % 4  # 3 columns per glyph, 1 blank between glyphs
    inside = ((row >= 0) & (row < 5)) & ((col >= 0) & (slot < glyphs.shape[1]) & (within < 3))
    chars = np.take_along_axis(glyphs, np.clip(slot[:, 0, :], 0, glyphs.shape[1] - 1), axis=1)
    lit = _FONT[chars[:, None, :], np.clip(row, 0, 4), np.clip(within, 0, 2)]
    return (lit & inside).astype(np.float32)
