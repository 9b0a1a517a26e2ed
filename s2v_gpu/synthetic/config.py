"""Configuration of the synthetic Theia archive (structured configs, also used by Hydra)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .distortion import DistortionConfig


@dataclass
class SyntheticDate:
    """One acquisition date of the synthetic site.

    Attributes:
        date: ``YYYY-MM-DD``.
        venus / s2: whether each sensor has a product that day.
        dt_minutes: Sentinel-2 acquisition time minus VENuS acquisition time.
        shift_m: Sentinel-2 geolocation error (dx east, dy north) in metres: a feature at ground
            position g appears in the Sentinel-2 product at g + shift.
        venus_cloud / s2_cloud: cloud cover fraction of each product (1.0 = fully cloudy).
        s2_nodata_corner: a no-data triangle in the Sentinel-2 window (swath or tile edge).
    """

    date: str
    venus: bool = True
    s2: bool = True
    dt_minutes: float = 5.0
    shift_m: list[float] = field(default_factory=lambda: [0.0, 0.0])
    venus_cloud: float = 0.05
    s2_cloud: float = 0.05
    s2_nodata_corner: bool = False


def _default_dates() -> list[SyntheticDate]:
    return [
        SyntheticDate("2018-06-02", dt_minutes=4.0, shift_m=[3.2, -2.1], venus_cloud=0.05, s2_cloud=0.08),
        SyntheticDate("2018-06-12", dt_minutes=-12.0, shift_m=[-7.5, 5.3], venus_cloud=0.12, s2_cloud=0.1,
                      s2_nodata_corner=True),
        SyntheticDate("2018-06-22", dt_minutes=21.0, shift_m=[1.1, 9.4], venus_cloud=0.0, s2_cloud=0.03),
        SyntheticDate("2018-07-02", s2=False),
        SyntheticDate("2018-07-07", venus=False),
        SyntheticDate("2018-07-12", dt_minutes=6.0, shift_m=[-2.0, -4.0], venus_cloud=1.0, s2_cloud=0.2),
    ]


@dataclass
class SyntheticConfig:
    """A synthetic VENuS site and the Sentinel-2 tile window around it.

    Sizes go from tiny (tests: a few hundred pixels) to real (``size_px=5560``: a whole 27.8 km
    VENuS site at 5 m).
    """

    site: str = "SYNTH-1"
    tile: str = "31TCJ"
    epsg: int = 32631
    #: EPSG of the Sentinel-2 tile; None = the VENuS CRS. A neighbouring UTM zone (e.g. 32630 next to
    #: 32631) makes the pipeline reproject.
    s2_epsg: int | None = None
    #: Upper-left corner of the VENuS grid (VENuS CRS, metres).
    origin: list[float] = field(default_factory=lambda: [360000.0, 4830000.0])
    #: VENuS site size in 5 m pixels (square).
    size_px: int = 512
    #: Sentinel-2 window margin around the site, metres.
    s2_margin_m: float = 400.0
    dates: list[SyntheticDate] = field(default_factory=_default_dates)
    seed: int = 0
    #: Amplitude of the within-field textures (1: realistic; 0: flat fields).
    texture: float = 1.0
    #: Gaussian noise (reflectance units) added to every band of both sensors.
    noise_std: float = 0.002
    #: Fraction of the built-up pixels (bright roofs) saturated in each band (SAT bit set).
    saturated_fraction: float = 0.01
    #: Range of the per-band gain and offset of Sentinel-2 with respect to VENuS.
    gain_range: list[float] = field(default_factory=lambda: [0.9, 1.1])
    offset_range: list[float] = field(default_factory=lambda: [-0.01, 0.01])
    #: VENuS MTF at its Nyquist frequency (5 m).
    venus_mtf: float = 0.3
    #: VENuS swath edge: a no-data corner covering about this fraction of the site.
    venus_edge_fraction: float = 0.05
    #: Fine step of the rendering grid (metres); 5, 10 and 20 must be multiples of it.
    render_step_m: float = 2.5
    #: Write Theia zips instead of folders.
    zip: bool = False
    #: Also write SRE reflectances (FRE with a small multiplicative difference).
    write_sre: bool = False
    #: Keep the written arrays in memory (tests compare reads against them).
    keep_arrays: bool = False
    #: Local distortions of VENuS (parallax of what the DEM misses): ``none`` by default
    distortion: DistortionConfig = field(default_factory=DistortionConfig)


def preset(name: str, **overrides) -> SyntheticConfig:
    """Named sizes: ``tiny`` (tests), ``demo`` (README demo), ``full`` (a real-size site)."""
    sizes = {"tiny": dict(size_px=320, s2_margin_m=200.0), "demo": dict(size_px=1024), "full": dict(size_px=5560)}
    if name not in sizes:
        raise ValueError(f"unknown synthetic preset {name!r}; choose from {sorted(sizes)}")
    return SyntheticConfig(**{**sizes[name], **overrides})
