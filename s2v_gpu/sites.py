"""The 29 VENuS sites of SEN2VENuS (paper Table 2: country, province, longitude, latitude).

Any other VENuS site present among the products can be processed too (the paper invites extending the
dataset); this table only adds the descriptive metadata of the published ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    name: str
    country: str
    province: str
    lon: float
    lat: float


_TABLE2 = """
ALSACE|France|Alsace|7.46897|48.379
FR-LQ1|France|Auvergne|2.72879|45.6397
ESGISB-1|France|Aquitaine|-0.692399|45.1198
ESGISB-2|France|Aquitaine|-0.767621|44.869
ESGISB-3|France|Aquitaine|-0.865341|44.5389
FR-BIL|France|Aquitaine|-0.959032|44.49
SO2|France|Midi-Pyrenees|1.26464|43.6105
ES-LTERA|France|Midi-Pyrenees|1.23902|43.5
FR-LAM|France|Midi-Pyrenees|1.17814|43.44
SUDOUE-2|France|Midi-Pyrenees|1.09625|43.0986
SO1|France|Midi-Pyrenees|1.02816|42.97
SUDOUE-3|France|Midi-Pyrenees|1.01046|42.836
SUDOUE-4|Spain|Catalonia|0.924987|42.5734
SUDOUE-5|Spain|Catalonia|0.857221|42.3638
SUDOUE-6|Spain|Catalonia|0.742541|41.9899
ES-IC3XG|Spain|Galicia|-8.0173|41.9893
LERIDA-1|Spain|Catalonia|0.636121|41.6624
NARYN|Kyrgyzstan|Naryn|76.5615|41.6096
ARM|United States of America|Oklahoma|-97.4884|36.6097
ANJI|China|Zhejiang Sheng|119.839|30.58
BENGA|India|West Bengal|87.6132|23.609
KUDALIAR|India|Telangana|78.6974|17.9402
BAMBENW2|Senegal|Diourbel|-16.3837|14.6176
ESTUAMAR|French Guyana|Guyane|-54.038|5.58975
ATTO|Brazil|Amazonas|-59.0103|-2.15005
FGMANAUS|Brazil|Amazonas|-59.7905|-2.43994
K34-AMAZ|Brazil|Amazonas|-60.2103|-2.6098
MAD-AMBO|Madagascar|Vakinankaratra|47.1392|-19.6701
JAM2018|Brazil|Sao Paulo|-47.5153|-22.7496
"""

SEN2VENUS_SITES: dict[str, Site] = {}
for _line in _TABLE2.strip().splitlines():
    _n, _c, _p, _lon, _lat = _line.split("|")
    SEN2VENUS_SITES[_n] = Site(_n, _c, _p, float(_lon), float(_lat))


def site_info(name: str) -> Site | None:
    """Table 2 metadata of a SEN2VENuS site, None for another VENuS site."""
    return SEN2VENUS_SITES.get(name)

#: Mean VENuS viewing zenith per site (degrees): the ``zenith_angle`` of CESBIO's sensorsio site table
#: (theia_venus.gpkg), which the release writes as ``venus_zenith_angle`` in every row of a site, and
#: the published patch counts (the release's index files; they sum to 132,955).
PUBLISHED: dict[str, tuple[float, int]] = {
    "ALSACE": (26.877071, 2654),
    "ANJI": (19.310494, 2314),
    "ARM": (15.160683, 15859),
    "ATTO": (22.048651, 2258),
    "BAMBENW2": (17.766533, 9018),
    "BENGA": (32.587334, 5858),
    "ES-IC3XG": (18.807686, 8823),
    "ES-LTERA": (31.971764, 1701),
    "ESGISB-1": (24.561609, 2892),
    "ESGISB-2": (26.209776, 3067),
    "ESGISB-3": (23.683871, 6057),
    "ESTUAMAR": (28.871947, 912),
    "FGMANAUS": (7.232127, 129),
    "FR-BIL": (24.802892, 7105),
    "FR-LAM": (32.054056, 7299),
    "FR-LQ1": (1.795402, 4888),
    "JAM2018": (33.718953, 2564),
    "K34-AMAZ": (24.982675, 1385),
    "KUDALIAR": (29.180855, 7269),
    "LERIDA-1": (28.524780, 2281),
    "MAD-AMBO": (14.788115, 1443),
    "NARYN": (5.010906, 3814),
    "SO1": (30.255978, 12018),
    "SO2": (32.218481, 738),
    "SUDOUE-2": (31.295256, 9700),
    "SUDOUE-3": (29.998115, 5363),
    "SUDOUE-4": (29.516127, 935),
    "SUDOUE-5": (29.170244, 2176),
    "SUDOUE-6": (29.192055, 2435),
}


def published_zenith(name: str) -> float | None:
    """The release's per-site VENuS zenith angle, None for a site outside SEN2VENuS."""
    entry = PUBLISHED.get(name)
    return entry[0] if entry else None
