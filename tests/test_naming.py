from datetime import UTC, datetime

import pytest

from s2v_gpu.errors import ProductNameError
from s2v_gpu.products import parse_product_name


@pytest.mark.parametrize(
    "name, sensor, platform, zone, letter, version",
    [
        ("SENTINEL2A_20180616-105450-664_L2A_T31TCJ_C_V2-2", "SENTINEL2", "SENTINEL2A", "31TCJ", "C", (2, 2)),
        ("SENTINEL2B_20200101-000000-000_L2A_T28PCB_C_V2-10", "SENTINEL2", "SENTINEL2B", "28PCB", "C", (2, 10)),
        ("SENTINEL2C_20250101-101010-001_L2A_T14SPE_C_V4-0", "SENTINEL2", "SENTINEL2C", "14SPE", "C", (4, 0)),
        ("SENTINEL2A_20170203-071245-541_L2A_T38KPD_D_V1-4", "SENTINEL2", "SENTINEL2A", "38KPD", "D", (1, 4)),
        ("VENUS-XS_20180616-105512-000_L2A_ATTO_C_V2-2", "VENUS", "VENUS", "ATTO", "C", (2, 2)),
        ("VENUS-XS_20190101-105148-000_L2A_ES-IC3XG_C_V1-0", "VENUS", "VENUS", "ES-IC3XG", "C", (1, 0)),
        ("VENUS-XS_20190101-105148-000_L2A_K34-AMAZ_D_V3-1", "VENUS", "VENUS", "K34-AMAZ", "D", (3, 1)),
    ],
)
def test_parse_names(name, sensor, platform, zone, letter, version):
    for path in (name, f"/data/theia/{name}", f"/data/theia/{name}.zip", f"{name}/"):
        p = parse_product_name(path)
        assert (p.name, p.sensor, p.platform, p.zone, p.letter, p.version) == (
            name, sensor, platform, zone, letter, version)


def test_acquisition_time_to_the_millisecond():
    p = parse_product_name("SENTINEL2A_20170203-071245-541_L2A_T38KPD_D_V1-4")
    assert p.acquired == datetime(2017, 2, 3, 7, 12, 45, 541000, tzinfo=UTC)
    assert p.tile == "T38KPD"
    assert p.version_str == "V1-4"


def test_venus_has_no_tile():
    with pytest.raises(AttributeError, match="site"):
        _ = parse_product_name("VENUS-XS_20180616-105512-000_L2A_ATTO_C_V2-2").tile


@pytest.mark.parametrize(
    "bad",
    [
        "LANDSAT8_OLITIRS_XS_20160330_N2A_France-MetropoleD0005H0002",
        "SENTINEL2A_20170203-071245-541_L1C_T38KPD_D_V1-4",
        "SENTINEL2A_20171303-071245-541_L2A_T38KPD_D_V1-4",  # month 13
        "VENUS-XS_20180616-105512-000_L2A__C_V2-2",
        "random_folder",
    ],
)
def test_bad_names_raise_naming_the_path(bad):
    with pytest.raises(ProductNameError, match=bad.split("/")[-1][:20]) as info:
        parse_product_name(f"/archive/{bad}")
    assert isinstance(info.value, ValueError)
