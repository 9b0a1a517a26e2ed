"""Theia (MAJA, MUSCATE format) L2A product readers: names, MTD_ALL.xml, bands and masks."""

from .discovery import find_products
from .metadata import MaskEntry, ProductMetadata, read_metadata, read_metadata_bytes
from .naming import ProductName, parse_product_name
from .product import BandStack, Grid, MaskConfig, TheiaProduct

__all__ = [
    "BandStack", "Grid", "MaskConfig", "MaskEntry", "ProductMetadata", "ProductName", "TheiaProduct",
    "find_products", "parse_product_name", "read_metadata", "read_metadata_bytes",
]
