"""The licences of a dataset's files, per sensor: one source for the LICENCE file, the card, STAC and v2.

The SEN2VENuS paper (sections 2.2 and 5) distributes each file under the licence of what it derives
from:

- the VENuS 5 m tensors (``{id}_05m_*.pt``) under **Creative Commons BY-NC 4.0**, the licence of the
  VENuS L2A products distributed by Theia: non-commercial use only;
- the Sentinel-2 tensors (``{id}_10m_*.pt``, ``{id}_20m_*.pt``) under the **Etalab Open Licence 2.0**,
  the licence of the Sentinel-2 L2A products distributed by Theia;
- every other file (tables, GeoPackages, report, STAC, card) under **Creative Commons BY 4.0**.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DATASET_SPDX", "LICENCES", "REST", "SENTINEL2", "VENUS", "Licence", "card_lines", "licence_of_file",
           "licence_text", "stac_links"]


@dataclass(frozen=True)
class Licence:
    """One licence: its SPDX identifier, name, text's address and the attribution it asks for."""

    spdx: str
    title: str
    url: str
    applies_to: str
    attribution: str


VENUS = Licence(
    "CC-BY-NC-4.0", "Creative Commons Attribution-NonCommercial 4.0 International",
    "https://creativecommons.org/licenses/by-nc/4.0/",
    "the VENuS 5 m tensors ({id}_05m_*.pt) and the v2 export's *_05m.tif files",
    "VENuS L2A surface reflectance, CNES / CESBIO / Theia (VENuS: CNES and the Israel Space Agency), "
    "processed with MAJA, modified (registered, radiometrically fitted, cut into patches). Non-commercial use only.")
SENTINEL2 = Licence(
    "etalab-2.0", "Etalab Open Licence 2.0 (Licence Ouverte 2.0)",
    "https://theia.cnes.fr/atdistrib/documents/Licence-Theia-CNES-Sentinel-ETALAB-v2.0-en.pdf",
    "the Sentinel-2 tensors ({id}_10m_*.pt, {id}_20m_*.pt) and the v2 export's *_10m.tif and *_20m.tif files",
    "Contains modified Copernicus Sentinel data, processed by CNES for Theia with MAJA (Sentinel-2 L2A), "
    "modified (resampled, cut into patches).")
REST = Licence(
    "CC-BY-4.0", "Creative Commons Attribution 4.0 International", "https://creativecommons.org/licenses/by/4.0/",
    "every other file (index and tables, GeoPackages, report, STAC catalogue, card)",
    "Michel, J.; Vinasco-Salinas, J.; Inglada, J.; Hagolle, O. SEN2VENuS, a Dataset for the Training of "
    "Sentinel-2 Super-Resolution Algorithms. Data 2022, 7, 96; made with s2v_gpu.")
LICENCES = (VENUS, SENTINEL2, REST)
#: the dataset as a whole, as an SPDX expression (STAC Collections, the aggregate's card)
DATASET_SPDX = " AND ".join(lic.spdx for lic in LICENCES)


def licence_of_file(name: str) -> Licence:
    """The licence of one file of the layout, from its name (``*_05m_*``: VENuS; ``*_10m_*``, ``*_20m_*``
    tensors and GeoTIFFs: Sentinel-2; anything else: the rest)."""
    if not name.endswith((".pt", ".tif")):
        return REST
    if "_05m_" in name or name.endswith("_05m.tif"):
        return VENUS
    if any(f"_{r}m_" in name or name.endswith(f"_{r}m.tif") for r in ("10", "20")):
        return SENTINEL2
    return REST


def licence_text() -> str:
    """The ``LICENCE`` file of a site folder or dataset: each licence, the files it covers, the attribution."""
    lines = ["This dataset holds files under three licences, each that of what the file derives from",
             "(SEN2VENuS, Michel et al., Data 2022, 7, 96, sections 2.2 and 5).", ""]
    for lic in LICENCES:
        lines += [f"{lic.title} ({lic.spdx}): {lic.applies_to}.", f"  Text: {lic.url}",
                  f"  Attribution: {lic.attribution}", ""]
    lines.append("The VENuS part is for non-commercial use only (CC BY-NC 4.0).")
    return "\n".join(lines) + "\n"


def card_lines() -> list[str]:
    """The card's licence section (Markdown)."""
    lines = ["**The VENµS 5 m tensors are for non-commercial use only** (CC BY-NC 4.0, the licence of the VENµS "
             "L2A products). The files of this dataset carry the licence of what they derive from "
             f"(SPDX: `{DATASET_SPDX}`):", "", "| files | licence | attribution |", "|---|---|---|"]
    lines += [f"| {lic.applies_to} | [{lic.title}]({lic.url}) (`{lic.spdx}`) | {lic.attribution} |" for lic in LICENCES]
    return lines


def stac_links() -> list[dict]:
    """One ``license`` link per licence (STAC 1.1: an SPDX expression names them, links give the texts)."""
    return [{"rel": "license", "href": lic.url, "type": "text/html", "title": f"{lic.title} ({lic.spdx}): "
             f"{lic.applies_to}"} for lic in LICENCES]
