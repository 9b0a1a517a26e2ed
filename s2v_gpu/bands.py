"""Band tables of Sentinel-2 and VENuS as used by SEN2VENuS.

Sources: the paper (Table 1), CESBIO's sensorsio 1.0.2 (MTF values, reflectance scales) and the MAJA
MUSCATE templates (band groups, mask bit numbers).
"""

from __future__ import annotations

#: Sentinel-2 bands per MUSCATE resolution group: R1 = 10 m, R2 = 20 m.
S2_GROUPS: dict[str, tuple[str, ...]] = {
    "R1": ("B2", "B3", "B4", "B8"),
    "R2": ("B5", "B6", "B7", "B8A", "B11", "B12"),
}
S2_RESOLUTION: dict[str, float] = {"R1": 10.0, "R2": 20.0}

#: VENuS has one group, XS, of 12 bands at 5 m.
VENUS_BANDS: tuple[str, ...] = tuple(f"B{i}" for i in range(1, 13))
VENUS_GROUPS: dict[str, tuple[str, ...]] = {"XS": VENUS_BANDS}
VENUS_RESOLUTION: dict[str, float] = {"XS": 5.0}

#: SEN2VENuS band groups (paper Table 1): Sentinel-2 band <- VENuS band.
#: VENuS B11 serves twice, for the wide (B8) and the narrow (B8A) near infrared.
GROUP_10M = {"s2": ("B2", "B3", "B4", "B8"), "venus": ("B3", "B4", "B7", "B11")}
GROUP_20M = {"s2": ("B5", "B6", "B7", "B8A"), "venus": ("B8", "B9", "B10", "B11")}
#: Sentinel-2's SWIR bands at 20 m (``swir_20m``: no VENuS counterpart)
SWIR_20M = ("B11", "B12")

#: Sentinel-2 MTF at Nyquist, per band (sensorsio 1.0.2).
S2_MTF: dict[str, float] = {
    "B2": 0.304, "B3": 0.276, "B4": 0.233, "B5": 0.343, "B6": 0.336, "B7": 0.338,
    "B8": 0.222, "B8A": 0.325, "B11": 0.21, "B12": 0.19,
}

#: Central wavelengths in nm (ESA / CNES sensor descriptions), used by the synthetic landscape.
S2_WAVELENGTH = {
    "B2": 490, "B3": 560, "B4": 665, "B5": 705, "B6": 740, "B7": 783, "B8": 842, "B8A": 865,
    "B11": 1610, "B12": 2190,
}
VENUS_WAVELENGTH = {
    "B1": 420, "B2": 443, "B3": 490, "B4": 555, "B5": 620, "B6": 620, "B7": 667, "B8": 702,
    "B9": 742, "B10": 782, "B11": 865, "B12": 910,
}

#: Reflectance quantification when MTD_ALL.xml has none (sensorsio's defaults).
DEFAULT_QUANTIFICATION = {"SENTINEL2": 10000.0, "VENUS": 1000.0}
DEFAULT_NODATA = -10000.0


def mtf_sigma_m(mtf: float, resolution_m: float) -> float:
    """Standard deviation in metres of the Gaussian PSF whose MTF at Nyquist is ``mtf``.

    sigma = res / pi * sqrt(-2 ln MTF), the formula of CESBIO's sensorsio.
    """
    import math

    if not 0.0 < mtf < 1.0:
        raise ValueError(f"MTF at Nyquist must lie in (0, 1), got {mtf}")
    return resolution_m / math.pi * math.sqrt(-2.0 * math.log(mtf))
