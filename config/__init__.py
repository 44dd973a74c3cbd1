"""The schema and loader of gateway.yaml: typed, validated, no I/O beyond reading the file."""

from config.loader import ConfigError, Loaded, interpolate, load_config, parse_config, parse_listen, sha256_hex
from config.schema import (
    BILLING_HEADERS,
    AdminKey,
    Channel,
    ClientKey,
    Config,
    GlobSet,
    Limits,
    Listen,
    LogConfig,
    ModelInfo,
    Price,
    Routing,
    Timeouts,
)

__all__ = [
    "BILLING_HEADERS",
    "AdminKey",
    "Channel",
    "ClientKey",
    "Config",
    "ConfigError",
    "GlobSet",
    "Limits",
    "Listen",
    "Loaded",
    "LogConfig",
    "ModelInfo",
    "Price",
    "Routing",
    "Timeouts",
    "interpolate",
    "load_config",
    "parse_config",
    "parse_listen",
    "sha256_hex",
]
