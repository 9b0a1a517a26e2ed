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
