"""Configuration: environment settings and the optional YAML file."""

from isthmus.config.loader import ConfigProblems, load_config, parse_config
from isthmus.config.schema import FileConfig
from isthmus.config.settings import Settings

__all__ = ["ConfigProblems", "FileConfig", "Settings", "load_config", "parse_config"]
