"""Hydra's config folder (found as ``pkg://s2v_gpu.conf``). Importing it, as Hydra does when it
composes a config from here, registers the structured schemas the YAML files build on."""

from hydra.core.config_store import ConfigStore

from ..config import RunConfig
from ..harvest.config import HarvestAppConfig
from ..report.app import ReportAppConfig
from ..split import SplitAppConfig

ConfigStore.instance().store(name="s2v_schema", node=RunConfig)
ConfigStore.instance().store(name="report_schema", node=ReportAppConfig)
ConfigStore.instance().store(name="split_schema", node=SplitAppConfig)
ConfigStore.instance().store(name="harvest_schema", node=HarvestAppConfig)
