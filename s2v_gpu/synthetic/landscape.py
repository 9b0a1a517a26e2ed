"""A continuous synthetic landscape with per-class spectral signatures.

The landscape is a function of ground coordinates (metres, in the VENuS CRS), so any sensor grid,
shifted by any sub-pixel amount, samples it exactly: the injected shifts are ground truth with no
interpolation error. It has the structures SIFT locks onto and that the paper's sites show: fields
(jittered Voronoi cells with crop rows), roads, forest with crown texture, a lake and a river, and
built-up blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..bands import S2_WAVELENGTH, VENUS_WAVELENGTH

#: Land-cover classes of the synthetic landscape.
CLASSES = ("water", "forest", "crop_green", "crop_dry", "bare_soil", "grass", "built_up", "road")
WATER = CLASSES.index("water")
#: Columns of ground points sampled at a time (see :meth:`Landscape.sample`).
SAMPLE_BLOCK = 512
#: Slack (metres) of the bounding-box culling of the structures, far above rounding.
_CULL_SLACK_M = 1e-3
BUILT_UP = CLASSES.index("built_up")

_ANCHORS_NM = np.array([420, 443, 490, 560, 620, 665, 705, 740, 783, 842, 865, 910, 1610, 2190], float)
#: Surface reflectance of each class at the anchor wavelengths (typical library spectra, rounded).
_SPECTRA = np.array([
    [0.045, 0.042, 0.038, 0.032, 0.024, 0.020, 0.015, 0.011, 0.009, 0.007, 0.006, 0.005, 0.002, 0.001],
    [0.020, 0.021, 0.025, 0.050, 0.030, 0.024, 0.060, 0.200, 0.290, 0.320, 0.330, 0.330, 0.160, 0.070],
    [0.028, 0.030, 0.040, 0.085, 0.050, 0.040, 0.110, 0.300, 0.420, 0.450, 0.460, 0.460, 0.220, 0.100],
    [0.055, 0.060, 0.080, 0.120, 0.135, 0.140, 0.170, 0.200, 0.230, 0.250, 0.260, 0.270, 0.320, 0.250],
    [0.065, 0.070, 0.090, 0.130, 0.160, 0.170, 0.190, 0.210, 0.220, 0.240, 0.250, 0.260, 0.330, 0.280],
    [0.030, 0.032, 0.040, 0.070, 0.060, 0.050, 0.090, 0.220, 0.300, 0.320, 0.330, 0.330, 0.200, 0.100],
    [0.085, 0.090, 0.100, 0.120, 0.128, 0.130, 0.140, 0.150, 0.160, 0.170, 0.170, 0.180, 0.200, 0.180],
    [0.075, 0.080, 0.090, 0.100, 0.108, 0.110, 0.120, 0.130, 0.140, 0.150, 0.150, 0.150, 0.170, 0.160],
])


#: the hash's multipliers of the two cell coordinates
HASH_I, HASH_J = 73856093, 19349663


def hash_cells(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """A stateless hash of integer cell coordinates, so that random fields are defined everywhere:
    this salt-free part (int64, wrapping: the same on every device) is shared by the draws of a cell."""
    return (i.to(torch.int64) * HASH_I) ^ (j.to(torch.int64) * HASH_J)


def hash_draw(cells: torch.Tensor, salt: int) -> torch.Tensor:
    """One uniform draw in [0, 1) (float64) per cell of :func:`hash_cells`, a different one per salt."""
    h = cells ^ salt
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).to(torch.float64) / float(0x1000000)


def class_spectra(wavelengths_nm: dict[str, float]) -> dict[str, np.ndarray]:
    """Reflectance of every class in each band, interpolated at the band's central wavelength.

    Returns:
        band -> array of shape ``(len(CLASSES),)``.
    """
    return {b: np.array([np.interp(w, _ANCHORS_NM, s) for s in _SPECTRA]) for b, w in wavelengths_nm.items()}


VENUS_SPECTRA = class_spectra(VENUS_WAVELENGTH)
S2_SPECTRA = class_spectra(S2_WAVELENGTH)


@dataclass
class Landscape:
    """Ground truth of one synthetic site, defined over the whole plane.

    Args:
        seed: seeds every random element.
        origin: (x, y) ground coordinates near which the structures are laid out (site centre).
        extent_m: size of the area populated with lakes, rivers and roads.
        field_size_m: mean size of a field (spacing of the Voronoi seeds).
    """

    seed: int
    origin: tuple[float, float]
    extent_m: float
    field_size_m: float = 120.0
    #: Amplitude scale of the within-field textures (crop rows, tree crowns, building blocks); 0 gives
    #: flat fields, whose only high frequencies are the field edges.
    texture: float = 1.0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self._rng_seed = int(rng.integers(2**31))
        ox, oy = self.origin
        e = self.extent_m
        area_km2 = (e / 1000.0) ** 2
        # structures have absolute sizes (metres), their number grows with the area: a larger site
        # is not a zoomed small one. Lakes: ellipses of 80-250 m; a meandering river 12-25 m wide;
        # roads 6-10 m wide; towns of 150-300 m radius.
        self.lakes = [
            (ox + rng.uniform(-0.45, 0.45) * e, oy + rng.uniform(-0.45, 0.45) * e,
             rng.uniform(80, 250), rng.uniform(60, 180), rng.uniform(0, np.pi))
            for _ in range(max(1, int(round(area_km2 / 10))))
        ]
        self.river = (oy + rng.uniform(-0.3, 0.3) * e, rng.uniform(100, 250), rng.uniform(1500, 3000),
                      rng.uniform(12, 25))
        self.roads = [
            (ox + rng.uniform(-0.4, 0.4) * e, oy + rng.uniform(-0.4, 0.4) * e, rng.uniform(0, np.pi),
             rng.uniform(6, 10))
            for _ in range(max(3, int(round(area_km2 / 2))))
        ]
        self.towns = [
            (ox + rng.uniform(-0.4, 0.4) * e, oy + rng.uniform(-0.4, 0.4) * e, rng.uniform(150, 300))
            for _ in range(max(1, int(round(area_km2 / 25))))
        ]

    def _salt(self, k: int) -> int:
        return self._rng_seed + 83492791 * k

    def fields(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Nearest jittered seed: (cell id i, cell id j, distance to the cell border proxy)."""
        s = self.field_size_m
        ci, cj = torch.floor(x / s), torch.floor(y / s)
        best = torch.full_like(x, math.inf)
        bi, bj = torch.zeros_like(x), torch.zeros_like(x)
        second = torch.full_like(x, math.inf)
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                ii, jj = ci + di, cj + dj
                cells = hash_cells(ii, jj)
                sx = (ii + 0.15 + 0.7 * hash_draw(cells, self._salt(1))) * s
                sy = (jj + 0.15 + 0.7 * hash_draw(cells, self._salt(2))) * s
                d = torch.hypot(x - sx, y - sy)
                closer = d < best
                second = torch.where(closer, best, torch.minimum(second, d))
                best = torch.where(closer, d, best)
                bi = torch.where(closer, ii, bi)
                bj = torch.where(closer, jj, bj)
        return bi, bj, second - best

    def sample(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class, per-field spectral jitter key and brightness texture at ground points.

        Computed by blocks of columns; each block only visits the roads, towns and lakes that can
        reach its bounding box (their number grows with the site's area, so a full site would
        otherwise cost the square of its area). Every point gets exactly the values of a direct
        evaluation. Runs on the device of ``x`` (float64 everywhere: the same landscape on every device).

        Args:
            x, y: ground coordinates (metres), any shape (float64 tensors).

        Returns:
            ``(cls, field_key, texture)``: int64 class index, float key in [0, 1) per field (for the
            per-field spectral jitter), multiplicative brightness texture (about 1).
        """
        x, y = x.to(torch.float64), y.to(torch.float64)
        if x.ndim == 0 or x.shape[-1] <= SAMPLE_BLOCK:
            return self._sample_block(x, y)
        parts = [self._sample_block(x[..., c:c + SAMPLE_BLOCK], y[..., c:c + SAMPLE_BLOCK])
                 for c in range(0, x.shape[-1], SAMPLE_BLOCK)]
        return tuple(torch.cat([p[k] for p in parts], dim=-1) for k in range(3))

    def _structures_near(self, x: torch.Tensor, y: torch.Tensor):
        """The towns, roads and lakes that can touch the bounding box of the points (a conservative
        test: a road is a band of half-width w/2 around a line, whose signed distance is linear, so
        its extremes over the box are at the corners)."""
        if x.numel() == 0:
            return [], [], []
        x0, x1, y0, y1 = torch.stack([x.min(), x.max(), y.min(), y.max()]).tolist()  # one device sync

        def box_distance(cx, cy):
            return math.hypot(max(x0 - cx, 0.0, cx - x1), max(y0 - cy, 0.0, cy - y1))

        slack = _CULL_SLACK_M
        towns = [t for t in self.towns if box_distance(t[0], t[1]) < t[2] + slack]
        lakes = [lk for lk in self.lakes if box_distance(lk[0], lk[1]) < max(lk[2], lk[3]) + slack]
        roads = []
        for rx, ry, theta, width in self.roads:
            d = [(cx - rx) * math.sin(theta) - (cy - ry) * math.cos(theta) for cx in (x0, x1) for cy in (y0, y1)]
            if min(d) < width / 2 + slack and max(d) > -width / 2 - slack:
                roads.append((rx, ry, theta, width))
        return towns, roads, lakes

    def _field_classes(self, x: torch.Tensor, y: torch.Tensor):
        """The agricultural background: (cls, key, texture) of the fields, crop rows, crowns, hedges."""
        bi, bj, border = self.fields(x, y)
        cells = hash_cells(bi, bj)
        u = hash_draw(cells, self._salt(3))
        # field classes: crops dominate, then grass, forest, bare soil
        cls = torch.full_like(bi, CLASSES.index("bare_soil"), dtype=torch.int64)
        for bound, name in ((0.80, "forest"), (0.63, "grass"), (0.48, "crop_dry"), (0.30, "crop_green")):
            cls = torch.where(u < bound, CLASSES.index(name), cls)
        key = hash_draw(cells, self._salt(4))
        # crop rows: a field-specific orientation and period
        theta = hash_draw(cells, self._salt(5)) * math.pi
        period = 18.0 + 20.0 * hash_draw(cells, self._salt(6))
        rows = 1.0 + 0.12 * self.texture * torch.sin(
            2 * math.pi * (x * torch.cos(theta) + y * torch.sin(theta)) / period)
        crop = (cls == CLASSES.index("crop_green")) | (cls == CLASSES.index("crop_dry"))
        texture = torch.where(crop, rows, 1.0)
        # forest crowns: high-frequency, isotropic-ish texture
        crowns = 1.0 + 0.18 * self.texture * torch.sin(2 * math.pi * x / 9.7 + 3 * key) * torch.sin(
            2 * math.pi * y / 11.3 + 5 * key)
        texture = torch.where(cls == CLASSES.index("forest"), crowns, texture)
        # hedges between fields: darker vegetated borders
        cls = torch.where((border < 4.0) & (u < 0.5), CLASSES.index("forest"), cls)
        return cls, key, texture

    def _sample_block(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        towns, roads, lakes = self._structures_near(x, y)
        cls, key, texture = self._field_classes(x, y)
        in_town = torch.zeros_like(x, dtype=torch.bool)
        for tx, ty, tr in towns:
            in_town |= torch.hypot(x - tx, y - ty) < tr
        block = (torch.floor(x / 14.0) + torch.floor(y / 17.0)) % 3
        cls = torch.where(in_town, CLASSES.index("built_up"), cls)
        texture = torch.where(in_town, 1.0 + self.texture * (0.35 * block - 0.3), texture)

        for rx, ry, theta, width in roads:
            road = torch.abs((x - rx) * math.sin(theta) - (y - ry) * math.cos(theta)) < width / 2
            cls = torch.where(road, CLASSES.index("road"), cls)
            texture = torch.where(road, 1.0, texture)

        water = torch.zeros_like(x, dtype=torch.bool)
        for lx, ly, a, b, ang in lakes:
            dx, dy = x - lx, y - ly
            u1 = dx * math.cos(ang) + dy * math.sin(ang)
            v1 = -dx * math.sin(ang) + dy * math.cos(ang)
            water |= (u1 / a) ** 2 + (v1 / b) ** 2 < 1.0
        ry0, amp, wavelength, width = self.river
        water |= torch.abs(y - (ry0 + amp * torch.sin(2 * math.pi * (x - self.origin[0]) / wavelength))) < width / 2
        cls = torch.where(water, WATER, cls)
        texture = torch.where(water, 1.0, texture)
        return cls, key, texture

    def reflectance(self, x, y, spectra, jitter_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """Surface reflectance of some bands at ground points.

        Args:
            x, y: ground coordinates (metres), any shape (float64 tensors, on any device).
            spectra: per band, the reflectance of each class (arrays of shape ``(len(CLASSES),)``).
            jitter_ids: per band, the key of its per-field jitter: two bands with the same key and
                spectrum have exactly the same reflectance (how a Sentinel-2 band derived from a VENuS
                band stays an exact linear function of it).

        Returns:
            ``(refl, cls)``: refl of shape ``(len(spectra), *x.shape)``, cls the class index.
        """
        cls, key, texture = self.sample(x, y)
        out = torch.empty((len(spectra),) + tuple(x.shape), dtype=torch.float64, device=x.device)
        cells = hash_cells(torch.floor(key * 1e6), torch.zeros_like(key))
        for i, (spectrum, jid) in enumerate(zip(spectra, jitter_ids)):
            # per-field, per-band jitter (+-8 %) keeps the bands from being collinear; the band's key is
            # the second cell coordinate, a constant: its hash term folds into the salt
            jitter = 1.0 + 0.16 * (hash_draw(cells, (jid * HASH_J) ^ self._salt(7)) - 0.5)
            out[i] = torch.as_tensor(spectrum, dtype=torch.float64, device=x.device)[cls] * jitter * texture
        return out, cls
