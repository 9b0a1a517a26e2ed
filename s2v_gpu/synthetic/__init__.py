"""Realistic synthetic Theia L2A products (VENuS and Sentinel-2) with known ground truth."""

from .config import SyntheticConfig, SyntheticDate, preset
from .generate import TRUTH_FILE, SyntheticArchive, generate

__all__ = ["SyntheticArchive", "SyntheticConfig", "SyntheticDate", "TRUTH_FILE", "generate", "preset"]
