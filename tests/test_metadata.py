"""The MTD_ALL.xml parser on genuine Theia documents, MAJA templates and broken files."""

import gzip
import math
from datetime import UTC, datetime

import pytest

from s2v_gpu.errors import MetadataError
from s2v_gpu.products import read_metadata, read_metadata_bytes

# (file, tile, acquisition, mean viewing zenith over the 13 bands, CloudPercent), read off the documents
REAL_MTD = [
    ("SENTINEL2A_20170203-071245-541_L2A_T38KPD_C_V1-0_MTD_ALL.xml.gz", "T38KPD",
     datetime(2017, 2, 3, 7, 12, 45, 541000, tzinfo=UTC), 6.488, 24.0),
    ("SENTINEL2A_20170213-071209-461_L2A_T38KPE_C_V1-0_MTD_ALL.xml.gz", "T38KPE",
     datetime(2017, 2, 13, 7, 12, 9, 461000, tzinfo=UTC), 4.842, 79.0),
    ("SENTINEL2A_20170223-071209-459_L2A_T38KPD_C_V1-0_MTD_ALL.xml.gz", "T38KPD",
     datetime(2017, 2, 23, 7, 12, 9, 459000, tzinfo=UTC), 6.500, 30.0),
    ("SENTINEL2A_20170223-071209-459_L2A_T38KPE_C_V1-0_MTD_ALL.xml.gz", "T38KPE",
     datetime(2017, 2, 23, 7, 12, 9, 459000, tzinfo=UTC), 4.836, 31.0),
]


@pytest.mark.parametrize("fname, tile, acquired, zenith, cloud", REAL_MTD)
def test_real_theia_documents(real_data, fname, tile, acquired, zenith, cloud):
    m = read_metadata(real_data / "theia_mtd" / fname)
    assert m.sensor == "SENTINEL2" and m.platform == "SENTINEL2A"
    assert m.zone == tile and m.zone_type == "Tile"
    assert m.acquired == acquired
    assert m.version == "1.4"
    assert m.product_id.endswith("_D_V1-4")
    # DOMAIN.md and the data README say these documents carry no REFLECTANCE_QUANTIFICATION_VALUE;
    # they do (Radiometric_Informations, 10000): it is read from the document.
    assert m.quantification_from_document and m.quantification == 10000.0
    assert m.nodata == -10000.0
    assert m.mean_viewing_zenith == pytest.approx(zenith, abs=1e-3)
    assert m.cloud_percent == cloud
    assert m.epsg == 32738
    assert set(m.images["Flat_Reflectance"]) == {"B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"}
    sat_r1 = [e for e in m.masks if e.nature == "Saturation" and e.group == "R1"]
    assert [e.bit for e in sat_r1] == [1, 2, 3, 4]
    assert any(e.path.endswith("_CLM_R2.tif") for e in m.masks)


def test_venus_template_tree(real_data):
    m = read_metadata(real_data / "maja_templates" / "VENUS_MUSCATE_L2_MTD_ALL_template.xml")
    assert m.sensor == "VENUS" and m.zone_type == "Site"
    # placeholders count as absent: sensor defaults
    assert m.quantification == 1000.0 and not m.quantification_from_document
    assert math.isnan(m.mean_viewing_zenith) and math.isnan(m.cloud_percent)
    sat = [e for e in m.masks if e.nature == "Saturation"]
    assert [(e.band, e.bit) for e in sat] == [(f"B{i}", i) for i in range(1, 13)]
    assert all(e.path.endswith("_SAT_XS.tif") for e in sat)
    mg2 = {e.nature: e.bit for e in m.masks if e.path.endswith("_MG2_XS.tif")}
    assert mg2 == {"Cloud": 2, "Cloud_Shadow": 4, "Hidden_Surface": 6, "Sun_Too_Low": 7, "Tangent_Sun": 8,
                   "Topography_Shadow": 5, "Water": 1}


def test_sentinel2_template(real_data):
    m = read_metadata(real_data / "maja_templates" / "SENTINEL2_MUSCATE_L2_MTD_ALL_template.xml")
    assert m.sensor == "SENTINEL2" and m.quantification == 10000.0


def test_quantification_read_when_present():
    doc = b"""<Muscate_Metadata_Document><Product_Characteristics><PLATFORM>VENUS</PLATFORM>
    </Product_Characteristics><Radiometric_Informations>
    <REFLECTANCE_QUANTIFICATION_VALUE>500</REFLECTANCE_QUANTIFICATION_VALUE>
    </Radiometric_Informations></Muscate_Metadata_Document>"""
    m = read_metadata_bytes(doc, "inline")
    assert m.quantification == 500.0 and m.quantification_from_document


@pytest.mark.parametrize(
    "content, match",
    [
        (b"<Muscate_Metadata_Document><Product_Characteristics>", "not a valid XML"),
        (b"", "not a valid XML"),
        (b"<Other/>", "expected <Muscate_Metadata_Document>"),
        (b"<Muscate_Metadata_Document/>", "no <Product_Characteristics>"),
        (b"<Muscate_Metadata_Document><Product_Characteristics><PLATFORM>LANDSAT8</PLATFORM>"
         b"</Product_Characteristics></Muscate_Metadata_Document>", "unknown platform"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
    ],
)
def test_bad_documents_raise_naming_the_file(tmp_path, content, match):
    path = tmp_path / "X_MTD_ALL.xml"
    path.write_bytes(content)
    with pytest.raises(MetadataError, match=match) as info:
        read_metadata(path)
    assert str(path) in str(info.value)


def test_missing_document(tmp_path):
    with pytest.raises(MetadataError, match="cannot read"):
        read_metadata(tmp_path / "absent_MTD_ALL.xml")


def test_gzip_document_roundtrip(real_data, tmp_path):
    src = real_data / "theia_mtd" / REAL_MTD[0][0]
    plain = tmp_path / "doc.xml"
    plain.write_bytes(gzip.decompress(src.read_bytes()))
    assert read_metadata(plain).acquired == read_metadata(src).acquired
