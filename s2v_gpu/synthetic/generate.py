"""Generating a synthetic Theia archive: one VENuS site, a Sentinel-2 tile window, several dates.

Everything injected is recorded in ``ground_truth.json`` beside the products: the Sentinel-2
geolocation error of each date, the linear radiometric transform VENuS -> Sentinel-2 of each band,
cloud fractions, acquisition times.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import torch
from affine import Affine
from rasterio.warp import transform as warp_transform
from tqdm.auto import tqdm

from ..bands import GROUP_10M, GROUP_20M, S2_GROUPS, S2_MTF, S2_RESOLUTION, VENUS_BANDS, mtf_sigma_m
from .config import SyntheticConfig, SyntheticDate
from .distortion import DISPLACEMENT_FILE, DisplacementField, band_offsets, shift_band
from .landscape import S2_SPECTRA, VENUS_SPECTRA, Landscape
from .sensor import CloudField, Rendered, render
from .writer import GroupRasters, ProductSpec, write_product

log = logging.getLogger(__name__)

TRUTH_FILE = "ground_truth.json"
VENUS_QUANT = 1000.0
S2_QUANT = 10000.0
#: Sentinel-2 band -> the VENuS band whose radiometry it is derived from (paper Table 1).
S2_FROM_VENUS = dict(zip(GROUP_10M["s2"] + GROUP_20M["s2"], GROUP_10M["venus"] + GROUP_20M["venus"]))


@dataclass
class ProductArrays:
    """What was written for one group of one product, plus the injected invalid flags."""

    transform: Affine
    epsg: int
    bands: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    flags: dict[str, np.ndarray]
    saturated: dict[str, np.ndarray]


@dataclass
class SyntheticArchive:
    """A generated archive: where it is, its ground truth, and (optionally) the written arrays."""

    root: Path
    truth: dict
    products: list[Path]
    arrays: dict[str, dict[str, ProductArrays]] = field(default_factory=dict)
    #: seconds spent rendering (the landscape through each sensor, on the device), adding the noise,
    #: saturation and masks (host) and writing the GeoTIFFs (host threads), over all products
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("render", "finish", "write"), 0.0))

    @contextmanager
    def timed(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] += time.perf_counter() - start


def _corner(shape: tuple[int, int], fraction: float, where: str) -> np.ndarray:
    """A triangle covering about ``fraction`` of the image, at the bottom-right or top-left corner."""
    if fraction <= 0:
        return np.zeros(shape, bool)
    h, w = shape
    a = math.sqrt(2 * fraction)
    rows = (np.arange(h)[:, None] + 0.5) / h
    cols = (np.arange(w)[None, :] + 0.5) / w
    if where == "bottom_right":
        return (1 - rows) + (1 - cols) < a
    return rows + cols < a


def _quantise(refl: np.ndarray, quant: float, nodata: np.ndarray) -> np.ndarray:
    """Reflectance ``(C, H, W)`` -> int16 DN, band by band (a full site's bands are gigabytes: no
    full-size temporaries)."""
    dn = np.empty(refl.shape, np.int16)
    for i, band in enumerate(refl):
        dn[i] = np.clip(np.rint(band * quant), -9999, 32767)
        dn[i, nodata] = -10000
    return dn


def _finish(
    rendered: Rendered, bands: tuple[str, ...], quant: float, nodata: np.ndarray, rng: np.random.Generator,
    cfg: SyntheticConfig, transform: Affine, epsg: int, sat_dtype,
) -> ProductArrays:
    """Noise, saturation, masks and quantisation of a rendered group."""
    refl = rendered.refl  # noised in place, band after band: the stream of one (C, H, W) draw
    shape = refl.shape[1:]
    for band in refl:
        band += rng.normal(0.0, cfg.noise_std, shape).astype(np.float32)
    sat = np.zeros(shape, sat_dtype)
    saturated = {}
    for i, b in enumerate(bands):
        s = (rng.random(shape) < cfg.saturated_fraction) & rendered.built & ~nodata
        refl[i, s] = 1.25
        sat |= (s.astype(sat_dtype) << i)
        saturated[b] = s
    valid_area = ~nodata
    cloud, shadow, water = rendered.cloud & valid_area, rendered.shadow & valid_area, rendered.water & valid_area
    clm = (cloud * 0b011 | shadow * 0b100).astype(np.uint8)
    mg2 = (water * 0b1 | cloud * 0b10 | shadow * 0b1000).astype(np.uint8)
    masks = {"EDG": nodata.astype(np.uint8), "CLM": clm, "SAT": sat, "MG2": mg2}
    dn = _quantise(refl, quant, nodata)
    return ProductArrays(
        transform, epsg, dict(zip(bands, dn)), masks,
        {"edge": nodata, "cloud": cloud, "shadow": shadow, "water": water}, saturated,
    )


def _s2_window(cfg: SyntheticConfig) -> tuple[int, float, float, int, int]:
    """Sentinel-2 window: (epsg, ulx, uly, width_m, height_m), snapped to the 20 m tile grid."""
    x0, y0 = cfg.origin
    size = cfg.size_px * 5.0
    epsg = cfg.s2_epsg or cfg.epsg
    xs = [x0, x0 + size, x0, x0 + size]
    ys = [y0, y0, y0 - size, y0 - size]
    if epsg != cfg.epsg:
        xs, ys = warp_transform(f"EPSG:{cfg.epsg}", f"EPSG:{epsg}", xs, ys)
    m = cfg.s2_margin_m
    left = math.floor((min(xs) - m) / 20.0) * 20.0
    right = math.ceil((max(xs) + m) / 20.0) * 20.0
    bottom = math.floor((min(ys) - m) / 20.0) * 20.0
    top = math.ceil((max(ys) + m) / 20.0) * 20.0
    return epsg, left, top, int(right - left), int(top - bottom)


def _to_ground(s2_epsg: int, epsg: int):
    """Sentinel-2 CRS coordinates -> the site's CRS (None when they are the same)."""
    if s2_epsg == epsg:
        return None

    def to_ground(x, y, _src=f"EPSG:{s2_epsg}", _dst=f"EPSG:{epsg}"):  # PROJ runs on the host
        gx, gy = warp_transform(_src, _dst, x.cpu().numpy().ravel(), y.cpu().numpy().ravel())
        return tuple(torch.from_numpy(np.asarray(g, np.float64).reshape(x.shape)).to(x.device) for g in (gx, gy))

    return to_ground


def _radiometric_w(group: dict, gains: dict, offsets: dict) -> list[list[float]]:
    w = np.zeros((5, 4))
    for j, b in enumerate(group["s2"]):
        w[0, j] = offsets[b]
        w[1 + j, j] = gains[b]
    return w.tolist()


def _truth(cfg, site_bounds, venus_zenith, gains, offsets, s2_window) -> dict:
    s2_epsg, s2_ulx, s2_uly, s2_w_m, s2_h_m = s2_window
    return {
        "site": cfg.site, "epsg": cfg.epsg, "bounds": list(site_bounds), "venus_zenith": venus_zenith,
        "tile": cfg.tile, "s2_epsg": s2_epsg,
        "s2_window": [s2_ulx, s2_uly - s2_h_m, s2_ulx + s2_w_m, s2_uly],
        "shift_convention": "a feature at ground position g appears in Sentinel-2 at g + shift_m (x east, y north)",
        "radiometry": {
            "gains": gains, "offsets": offsets,
            "W_10m": _radiometric_w(GROUP_10M, gains, offsets), "W_20m": _radiometric_w(GROUP_20M, gains, offsets),
            "model": "S2 band = gain * VENuS band + offset; W rows: [bias, VENuS bands], columns: S2 bands",
        },
        "config": asdict(cfg),
        "dates": [],
    }


def generate(cfg: SyntheticConfig, out_dir: str | Path, device: torch.device | str = "cpu") -> SyntheticArchive:
    """Write the synthetic archive described by ``cfg`` into ``out_dir``.

    The landscape is sampled, blurred and integrated on ``device`` (a GPU writes a full 27.8 km site
    in seconds of rendering); the random draws (noise, saturation, sizes of the structures) stay on the
    host's numpy generator, so every device writes the same products with the same ground truth.

    Returns:
        The archive, with its ground truth (also written to ``out_dir/ground_truth.json``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    size_m = cfg.size_px * 5.0
    x0, y0 = cfg.origin
    landscape = Landscape(cfg.seed, (x0 + size_m / 2, y0 - size_m / 2), size_m, texture=cfg.texture)
    site_bounds = (x0, y0 - size_m, x0 + size_m, y0)

    gains = {b: float(rng.uniform(*cfg.gain_range)) for b in S2_FROM_VENUS}
    offsets = {b: float(rng.uniform(*cfg.offset_range)) for b in S2_FROM_VENUS}
    venus_zenith = float(rng.uniform(5.0, 32.0))
    s2_epsg, s2_ulx, s2_uly, s2_w_m, s2_h_m = _s2_window(cfg)
    to_ground = _to_ground(s2_epsg, cfg.epsg)
    truth = _truth(cfg, site_bounds, venus_zenith, gains, offsets, (s2_epsg, s2_ulx, s2_uly, s2_w_m, s2_h_m))
    displacement = _distortion(cfg, landscape, site_bounds, venus_zenith, out_dir, truth, device)
    archive = SyntheticArchive(out_dir, truth, [])
    dates = tqdm(cfg.dates, desc=f"synthetic {cfg.site}", unit="date", disable=not sys.stderr.isatty())
    for k, d in enumerate(dates):
        day = datetime.strptime(d.date, "%Y-%m-%d").replace(tzinfo=UTC)
        venus_time = day + timedelta(hours=10, minutes=48, seconds=12)
        s2_time = venus_time + timedelta(minutes=d.dt_minutes, milliseconds=461)
        factor = float(rng.uniform(0.95, 1.05))  # the season changes the landscape for both sensors
        entry = {"date": d.date, "shift_m": list(d.shift_m), "dt_minutes": (s2_time - venus_time).total_seconds() / 60,
                 "brightness": factor}
        if d.venus:
            name = f"VENUS-XS_{venus_time:%Y%m%d-%H%M%S}-000_L2A_{cfg.site}_C_V2-2"
            archive.products.append(_venus_product(cfg, d, k, name, venus_time, landscape, factor, venus_zenith,
                                                   site_bounds, rng, out_dir, archive, displacement, device))
            entry["venus"] = name
            entry["venus_cloud_fraction"] = float(archive.arrays[name]["XS"].flags["cloud"].mean())
        if d.s2:
            name = f"SENTINEL2A_{s2_time:%Y%m%d-%H%M%S}-{s2_time.microsecond // 1000:03d}_L2A_T{cfg.tile}_C_V2-2"
            archive.products.append(_s2_product(cfg, d, k, name, s2_time, landscape, factor, gains, offsets,
                                                (s2_epsg, s2_ulx, s2_uly, s2_w_m, s2_h_m), to_ground,
                                                site_bounds, rng, out_dir, archive, device))
            entry["s2"] = name
            entry["s2_cloud_fraction"] = float(archive.arrays[name]["R1"].flags["cloud"].mean())
        truth["dates"].append(entry)
        log.info("synthetic date %s written", d.date)
    (out_dir / TRUTH_FILE).write_text(json.dumps(truth, indent=2))
    if not cfg.keep_arrays:
        archive.arrays = {}
    return archive


#: every Sentinel-2 band, R1 then R2 (the order in which band offsets are drawn)
S2_BANDS_ALL = tuple(b for group in ("R1", "R2") for b in S2_GROUPS[group])


def _distortion(cfg, landscape, site_bounds, venus_zenith, out_dir: Path, truth: dict, device="cpu"):
    """The VENuS displacement field of ``cfg.distortion`` (None for ``none``), written with the truth."""
    moves = band_offsets(cfg.distortion, list(S2_BANDS_ALL), cfg.seed)
    if moves:
        truth["s2_band_offsets_px"] = {b: list(o) for b, o in moves.items()}
    if cfg.distortion.preset == "none":
        return None
    field = DisplacementField(cfg.distortion, landscape, site_bounds, venus_zenith, cfg.seed, device)
    field.write(out_dir / DISPLACEMENT_FILE, f"EPSG:{cfg.epsg}")
    magnitude = np.hypot(field.dx, field.dy)
    truth["distortion"] = {
        "file": DISPLACEMENT_FILE, "preset": cfg.distortion.preset,
        "convention": "VENuS pixel p shows the ground at p - D(p): a feature at g appears at g + D(g) "
                      "(bands: D east, D north, metres, 20 m cells)",
        "median_m": float(np.median(magnitude)), "p95_m": float(np.quantile(magnitude, 0.95)),
    }
    return field


def _venus_product(cfg, d: SyntheticDate, k, name, when, landscape, factor, zenith, site_bounds, rng,
                   out_dir, archive, field=None, device="cpu") -> Path:
    clouds = CloudField.for_area(cfg.seed * 1000 + 10 * k + 1, d.venus_cloud, site_bounds)

    def values(gx, gy):
        refl, cls = landscape.reflectance(gx, gy, [VENUS_SPECTRA[b] for b in VENUS_BANDS], range(len(VENUS_BANDS)))
        return refl * factor, cls

    sigma = mtf_sigma_m(cfg.venus_mtf, 5.0)
    shape = (cfg.size_px, cfg.size_px)
    with archive.timed("render"):
        rendered = render(landscape, values, [sigma] * len(VENUS_BANDS), tuple(cfg.origin), 5.0, shape,
                          cfg.render_step_m, clouds=clouds, displacement=field, device=device)
    nodata = _corner(shape, cfg.venus_edge_fraction, "bottom_right")
    transform = Affine(5.0, 0, cfg.origin[0], 0, -5.0, cfg.origin[1])
    with archive.timed("finish"):
        arrays = _finish(rendered, VENUS_BANDS, VENUS_QUANT, nodata, rng, cfg, transform, cfg.epsg, np.uint16)
    archive.arrays[name] = {"XS": arrays}
    spec = ProductSpec(name, "VENUS", "VENUS", when, cfg.site, cfg.epsg, VENUS_QUANT, zenith,
                       100.0 * float(arrays.flags["cloud"].mean()),
                       {"XS": GroupRasters(transform, arrays.bands, arrays.masks)},
                       sre_factor=0.98 if cfg.write_sre else None)
    with archive.timed("write"):
        return write_product(spec, out_dir, cfg.zip)


def _s2_product(cfg, d: SyntheticDate, k, name, when, landscape, factor, gains, offsets, window, to_ground,
                site_bounds, rng, out_dir, archive, device="cpu") -> Path:
    epsg, ulx, uly, w_m, h_m = window
    clouds = CloudField.for_area(cfg.seed * 1000 + 10 * k + 2, d.s2_cloud, site_bounds)
    groups = {}
    archive.arrays[name] = {}
    for group in ("R1", "R2"):
        bands = S2_GROUPS[group]
        res = S2_RESOLUTION[group]

        # one landscape evaluation for all bands: matched bands from the VENuS spectra, the others
        # (B11, B12) from the Sentinel-2 ones
        spectra = [VENUS_SPECTRA[S2_FROM_VENUS[b]] if b in S2_FROM_VENUS else S2_SPECTRA[b] for b in bands]
        jitter_ids = [VENUS_BANDS.index(S2_FROM_VENUS[b]) if b in S2_FROM_VENUS else 100 + i
                      for i, b in enumerate(bands)]
        gain = torch.tensor([gains.get(b, 1.0) for b in bands], dtype=torch.float64, device=device)[:, None, None]
        offset = torch.tensor([offsets.get(b, 0.0) for b in bands], dtype=torch.float64, device=device)[:, None, None]

        def values(gx, gy, spectra=spectra, jitter_ids=jitter_ids, gain=gain, offset=offset):
            refl, cls = landscape.reflectance(gx, gy, spectra, jitter_ids)
            return (gain * refl + offset) * factor, cls

        shape = (int(h_m / res), int(w_m / res))
        # Sentinel-2 PSF: chosen so that its total blur (PSF then pixel integration) has the second
        # moment of the VENuS total blur followed by the pipeline's MTF Gaussian; i.e. the synthetic
        # truth satisfies the paper's MTF-matching assumption (its effective MTF at Nyquist is then a
        # few % below the nominal value).
        venus_var = mtf_sigma_m(cfg.venus_mtf, 5.0) ** 2 + 5.0**2 / 12
        sigmas = [math.sqrt(max(mtf_sigma_m(S2_MTF[b], res) ** 2 + venus_var - res**2 / 12, (0.25 * res) ** 2))
                  for b in bands]
        with archive.timed("render"):
            rendered = render(landscape, values, sigmas, (ulx, uly), res, shape, max(cfg.render_step_m, res / 4),
                              shift_m=tuple(d.shift_m), clouds=clouds, to_ground=to_ground, device=device)
        moves = band_offsets(cfg.distortion, list(S2_BANDS_ALL), cfg.seed)
        for i, b in enumerate(bands):
            if b in moves:  # the band-to-band registration error of Sentinel-2 (ground truth)
                rendered.refl[i] = shift_band(rendered.refl[i], moves[b])
        nodata = _corner(shape, 0.1 if d.s2_nodata_corner else 0.0, "top_left")
        transform = Affine(res, 0, ulx, 0, -res, uly)
        with archive.timed("finish"):
            arrays = _finish(rendered, bands, S2_QUANT, nodata, rng, cfg, transform, epsg, np.uint8)
        archive.arrays[name][group] = arrays
        groups[group] = GroupRasters(transform, arrays.bands, arrays.masks)
    spec = ProductSpec(name, "SENTINEL2", "SENTINEL2A", when, f"T{cfg.tile}", epsg, S2_QUANT,
                       float(rng.uniform(2.0, 10.0)),
                       100.0 * float(archive.arrays[name]["R1"].flags["cloud"].mean()), groups,
                       sre_factor=0.98 if cfg.write_sre else None)
    with archive.timed("write"):
        return write_product(spec, out_dir, cfg.zip)
