"""Configuration: every `.env` key, its default, its validation and its redaction.

`Settings` is the single place a key is declared: its field metadata carries the section, the
documentation and the check, so parsing, `check-config`, `/config` and docs/configuration.md can
never disagree. Values come from a `.env` file and the environment (the environment wins); a bad
value is a `ConfigError` whose one-line message names the key and never echoes a secret.
"""

from __future__ import annotations

import ipaddress
import math
import os
import typing
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from dotenv import dotenv_values

ENV_FILE_VARIABLE: Final = "POWERWALL_ENV_FILE"
DEFAULT_ENV_FILE: Final = ".env"
REDACTED: Final = "***"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

Check = Callable[[Any], str | None]


class ConfigError(Exception):
    """A configuration problem, worded as one line that names the key."""


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be a port number from 1 to 65535"


def _qos(value: int) -> str | None:
    return None if value in (0, 1, 2) else "must be 0, 1 or 2"


def _log_level(value: str) -> str | None:
    return None if value in LOG_LEVELS else f"must be one of {', '.join(LOG_LEVELS)}"


def _influx_api(value: str) -> str | None:
    return None if value in ("v1", "v2") else "must be v1 or v2"


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username or parts.password:
        return "must not hold credentials; use INFLUX_TOKEN or INFLUX_USERNAME/INFLUX_PASSWORD"
    try:
        parts.port  # noqa: B018 - urlsplit validates the port only when it is read
    except ValueError:
        return "has an invalid port"
    return None


def _gateway_host(value: str) -> str | None:
    if "://" in value or "/" in value or any(ch.isspace() for ch in value):
        return "must be a host name or address, optionally with :port (no scheme, no path)"
    host, sep, port = value.rpartition(":")
    if sep and host and ":" not in host and not (port.isdigit() and 1 <= int(port) <= 65535):
        return "the port after ':' must be a number from 1 to 65535"
    return None


def _timezone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "is not a known time zone (for example UTC or Europe/Berlin)"
    return None


def _topic(value: str) -> str | None:
    if any(ch in value for ch in "+#\0") or value.startswith("/") or value.endswith("/"):
        return "must be an MQTT topic without wildcards (+, #) or a leading/trailing /"
    return None


def _metric_names(value: tuple[str, ...]) -> str | None:
    from powerwall_service.catalogue import UnknownMetricError, metric

    for name in value:
        try:
            metric(name)
        except UnknownMetricError:
            return f"names an unknown metric {name!r} (see docs/metrics.md)"
    return None


def _key(
    default: object,
    section: str,
    doc: str,
    *,
    check: Check | None = None,
    secret: bool = False,
    default_doc: str | None = None,
) -> Any:
    """Declare one `.env` key; `default_doc` describes a default derived from another key."""
    return field(
        default=default,
        metadata={
            "section": section,
            "doc": doc,
            "check": check,
            "secret": secret,
            "default_doc": default_doc,
        },
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """The effective configuration. Attribute = `.env` key in lower case.

    Build it with `load_settings` (or `parse_settings` from a mapping): they resolve the defaults
    that depend on other keys (STORE_PATH, the MQTT_HEALTH_* broker keys) and validate everything.
    Direct construction is for tests and takes the values as given.
    """

    # Powerwall gateway
    pw_host: str = _key(
        "192.168.91.1", "Powerwall", "Gateway address, optionally `host:port`.", check=_gateway_host
    )
    pw_timezone: str = _key("UTC", "Powerwall", "Time zone passed to pypowerwall.", check=_timezone)
    pw_poll_interval: float = _key(
        5.0, "Powerwall", "Seconds between polls (fractions allowed).", check=_positive
    )
    pw_cache_expire: float = _key(
        5.0,
        "Powerwall",
        "pypowerwall's response cache in seconds, capped at half the poll interval so every poll "
        "reads fresh data; also the least time between two live reads through the API.",
        check=_not_negative,
    )
    pw_request_timeout: float = _key(
        10.0, "Powerwall", "Timeout of one request to the gateway, in seconds.", check=_positive
    )
    pw_rate_limit_cooldown: float = _key(
        300.0,
        "Powerwall",
        "Seconds to leave the gateway alone after a 429 answer without Retry-After.",
        check=_positive,
    )
    pw_auth_backoff_max: float = _key(
        300.0, "Powerwall", "Longest wait, in seconds, between failed logins.", check=_positive
    )
    site_name: str | None = _key(
        None,
        "Powerwall",
        "Site tag written everywhere. Empty: the gateway's site name. Set it so that renaming the "
        "site in the Tesla app does not split your series.",
    )
    # Credentials
    pw_customer_email: str | None = _key(None, "Credentials", "Customer login e-mail (local mode).")
    pw_customer_password: str | None = _key(
        None,
        "Credentials",
        "Customer password: local mode (the gateway's web login; on a Powerwall 3 the last 5 "
        "characters of the gateway password).",
        secret=True,
    )
    pw_gateway_password: str | None = _key(
        None,
        "Credentials",
        "Gateway password from the label. Alone: full TEDAPI mode (over the gateway's Wi-Fi, "
        "192.168.91.1). With the customer password at 192.168.91.1: local mode plus TEDAPI for "
        "strings and temperatures. `poll` and `serve` need at least one of the two passwords.",
        secret=True,
    )
    # Wi-Fi
    pw_connect_wifi: bool = _key(
        False, "Wi-Fi", "Join the gateway's Wi-Fi access point with NetworkManager (nmcli)."
    )
    pw_wifi_ssid: str | None = _key(None, "Wi-Fi", "The gateway's access point SSID (TeslaPW_...).")
    pw_wifi_password: str | None = _key(None, "Wi-Fi", "The access point's password.", secret=True)
    pw_wifi_interface: str | None = _key(None, "Wi-Fi", "Wi-Fi interface; empty: NetworkManager chooses.")
    # InfluxDB
    influx_url: str | None = _key(
        None,
        "InfluxDB",
        "InfluxDB base URL. Empty: no InfluxDB; readings stay in the local store (and are sent "
        "later if a URL is configured).",
        check=_http_url,
    )
    influx_api: str = _key(
        "v2",
        "InfluxDB",
        "`v2` (/api/v2/write: InfluxDB 2.x, 3.x, 1.8+) or `v1` (/write: InfluxDB 1.x).",
        check=_influx_api,
    )
    influx_org: str | None = _key(None, "InfluxDB", "Organisation (v2).")
    influx_bucket: str | None = _key(None, "InfluxDB", "Bucket (v2); required with v2.")
    influx_token: str | None = _key(
        None, "InfluxDB", "API token (v2); required with v2 when INFLUX_URL is set.", secret=True
    )
    influx_database: str | None = _key(None, "InfluxDB", "Database (v1); required with v1.")
    influx_retention_policy: str | None = _key(
        None, "InfluxDB", "Retention policy (v1); empty: the database's default."
    )
    influx_username: str | None = _key(None, "InfluxDB", "User name (v1), if authentication is on.")
    influx_password: str | None = _key(None, "InfluxDB", "Password (v1).", secret=True)
    influx_measurement: str = _key("powerwall", "InfluxDB", "Measurement of the site's points.")
    influx_timeout: float = _key(10.0, "InfluxDB", "Timeout of one write, in seconds.", check=_positive)
    influx_verify_tls: bool = _key(
        True,
        "InfluxDB",
        "Verify the server's TLS certificate. Deliberately true (the spec's service defaulted to "
        "false): set false only for a self-signed certificate you trust.",
    )
    # MQTT
    mqtt_enabled: bool = _key(False, "MQTT", "Publish readings to MQTT with Home Assistant discovery.")
    mqtt_host: str | None = _key(None, "MQTT", "Broker host; required when MQTT_ENABLED is true.")
    mqtt_port: int = _key(1883, "MQTT", "Broker port.", check=_port)
    mqtt_username: str | None = _key(None, "MQTT", "Broker user name.")
    mqtt_password: str | None = _key(None, "MQTT", "Broker password.", secret=True)
    mqtt_topic_prefix: str = _key(
        "homeassistant/sensor/powerwall", "MQTT", "Base topic of the readings.", check=_topic
    )
    mqtt_qos: int = _key(1, "MQTT", "QoS of published messages (0, 1 or 2).", check=_qos)
    mqtt_retain: bool = _key(True, "MQTT", "Retain published state messages.")
    mqtt_metrics: tuple[str, ...] = _key(
        (),
        "MQTT",
        "Comma-separated metric names to publish (docs/metrics.md); empty: all.",
        check=_metric_names,
    )
    # MQTT health
    mqtt_health_enabled: bool = _key(
        True,
        "MQTT health",
        "Publish the service's own health to MQTT. With no broker configured there is nothing to "
        "publish to, which is not an error.",
    )
    mqtt_health_host: str | None = _key(None, "MQTT health", "Broker host.", default_doc="MQTT_HOST")
    mqtt_health_port: int = _key(1883, "MQTT health", "Broker port.", check=_port, default_doc="MQTT_PORT")
    mqtt_health_username: str | None = _key(
        None, "MQTT health", "Broker user name.", default_doc="MQTT_USERNAME"
    )
    mqtt_health_password: str | None = _key(
        None, "MQTT health", "Broker password.", secret=True, default_doc="MQTT_PASSWORD"
    )
    mqtt_health_topic_prefix: str = _key(
        "homeassistant/sensor/powerwall_health", "MQTT health", "Base topic of health.", check=_topic
    )
    mqtt_health_interval: float = _key(
        60.0, "MQTT health", "Seconds between health publications.", check=_positive
    )
    mqtt_health_qos: int = _key(1, "MQTT health", "QoS of health messages.", check=_qos)
    # HTTP API
    api_host: str = _key(
        "127.0.0.1",
        "HTTP API",
        "Listen address. Beyond loopback the service refuses to start without API_TOKEN.",
    )
    api_port: int = _key(8000, "HTTP API", "Listen port.", check=_port)
    api_token: str | None = _key(
        None,
        "HTTP API",
        "Bearer token required by endpoints that read the gateway or change anything.",
        secret=True,
    )
    # Local store
    data_dir: Path = _key(  # noqa: RUF009 - a Path default is immutable
        Path("data"),
        "Local store",
        "Directory of the local store and pypowerwall's cache file (relative to the working directory).",
    )
    store_path: Path = _key(  # noqa: RUF009 - a Path default is immutable
        Path("data/store.db"), "Local store", "The SQLite store.", default_doc="DATA_DIR/store.db"
    )
    store_retention_days: float = _key(
        7.0,
        "Local store",
        "Days of history kept; a reading InfluxDB has not acknowledged is never deleted by age.",
        check=_positive,
    )
    store_max_mb: float = _key(
        500.0,
        "Local store",
        "Size cap in MB; beyond it the oldest readings are deleted, sent or not (logged, counted).",
        check=_positive,
    )
    # Logging
    pw_log_level: str = _key("INFO", "Logging", "DEBUG, INFO, WARNING, ERROR or CRITICAL.", check=_log_level)

    @property
    def gateway_cache_seconds(self) -> float:
        """pypowerwall's cache lifetime: PW_CACHE_EXPIRE, but at most half a poll interval."""
        return min(self.pw_cache_expire, self.pw_poll_interval / 2)

    @property
    def influx_enabled(self) -> bool:
        return self.influx_url is not None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every configured secret value, for the log filter."""
        values = (getattr(self, spec.attr) for spec in key_specs() if spec.secret)
        return tuple(value for value in values if value)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One `.env` key as declared on `Settings`."""

    key: str
    attr: str
    kind: Any
    default: object
    section: str
    doc: str
    check: Check | None
    secret: bool
    default_doc: str | None


def key_specs() -> Iterator[KeySpec]:
    """Every key in declaration order (the order of docs and check-config)."""
    hints = typing.get_type_hints(Settings)
    for f in fields(Settings):
        yield KeySpec(
            key=f.name.upper(),
            attr=f.name,
            kind=hints[f.name],
            default=f.default,
            section=f.metadata["section"],
            doc=f.metadata["doc"],
            check=f.metadata["check"],
            secret=f.metadata["secret"],
            default_doc=f.metadata["default_doc"],
        )


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _convert(spec: KeySpec, raw: str) -> object:
    """Turn the text of one key into its type, or raise ConfigError naming the key."""
    shown = "" if spec.secret else f" (got {raw[:60]!r})"
    kind = spec.kind
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{spec.key} must be true or false{shown}")
    if kind is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ConfigError(f"{spec.key} must be a whole number{shown}") from None
    if kind is float:
        try:
            number = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{spec.key} must be a number{shown}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{spec.key} must be a finite number{shown}")
        return number
    if kind is Path:
        return Path(raw)
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if spec.key == "PW_LOG_LEVEL":
        return raw.strip().upper()
    if spec.key == "INFLUX_API":
        return raw.strip().lower()
    return raw


def parse_settings(values: Mapping[str, str | None]) -> Settings:
    """Build validated Settings from `.env`-style text values; empty or missing means the default."""
    parsed: dict[str, object] = {}
    given: set[str] = set()
    for spec in key_specs():
        raw = values.get(spec.key)
        if raw is None or raw.strip() == "":
            parsed[spec.attr] = spec.default
            continue
        given.add(spec.key)
        value = _convert(spec, raw)
        problem = spec.check(value) if spec.check is not None else None
        if problem is not None:
            shown = "" if spec.secret or spec.key == "INFLUX_URL" else f" (got {raw[:60]!r})"
            raise ConfigError(f"{spec.key} {problem}{shown}")
        parsed[spec.attr] = value
    if "STORE_PATH" not in given:
        parsed["store_path"] = Path(str(parsed["data_dir"])) / "store.db"
    for name in ("host", "port", "username", "password"):
        if f"MQTT_HEALTH_{name.upper()}" not in given:
            parsed[f"mqtt_health_{name}"] = parsed[f"mqtt_{name}"]
    settings = Settings(**parsed)  # type: ignore[arg-type]
    _check_together(settings)
    return settings


def _check_together(settings: Settings) -> None:
    """Rules that involve more than one key."""
    if settings.influx_url is not None:
        if settings.influx_api == "v2":
            if settings.influx_token is None:
                raise ConfigError("INFLUX_TOKEN must be set when INFLUX_URL is set and INFLUX_API=v2")
            if settings.influx_bucket is None:
                raise ConfigError("INFLUX_BUCKET must be set when INFLUX_URL is set and INFLUX_API=v2")
        elif settings.influx_database is None:
            raise ConfigError("INFLUX_DATABASE must be set when INFLUX_URL is set and INFLUX_API=v1")
    if settings.mqtt_enabled and settings.mqtt_host is None:
        raise ConfigError("MQTT_HOST must be set when MQTT_ENABLED is true")
    if settings.pw_connect_wifi and settings.pw_wifi_ssid is None:
        raise ConfigError("PW_WIFI_SSID must be set when PW_CONNECT_WIFI is true")


def load_settings(env_file: str | None) -> Settings:
    """Read `env_file`, else $POWERWALL_ENV_FILE, else ./.env (may be absent); the environment wins."""
    named = env_file or os.environ.get(ENV_FILE_VARIABLE) or None
    path = Path(named) if named else Path(DEFAULT_ENV_FILE)
    file_values: dict[str, str | None] = {}
    if path.is_file():
        try:
            file_values = dict(dotenv_values(path))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the env file {path}: {type(exc).__name__}") from None
    elif named:
        source = "--env-file" if env_file else ENV_FILE_VARIABLE
        raise ConfigError(f"{source}: the env file {path} does not exist or is not a file")
    merged = {**file_values, **os.environ}
    return parse_settings(merged)


def check_gateway_credentials(settings: Settings) -> None:
    """Refuse to read the gateway without credentials.

    Separate from loading, because `check-config` and the demo (which supplies the simulator's
    credentials itself) must work with none configured.
    """
    if settings.pw_customer_password is None and settings.pw_gateway_password is None:
        raise ConfigError(
            "PW_CUSTOMER_PASSWORD or PW_GATEWAY_PASSWORD must be set (no credentials for the gateway)"
        )


def check_api_exposure(settings: Settings, host: str | None = None) -> None:
    """Refuse an API reachable beyond this machine without a token (only `serve` calls this)."""
    listen = host if host is not None else settings.api_host
    if settings.api_token is None and not _is_loopback(listen):
        raise ConfigError(
            f"API_HOST {listen} is reachable from other machines: set API_TOKEN, or listen on 127.0.0.1"
        )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _shown(spec: KeySpec, value: object) -> object:
    if spec.secret:
        return REDACTED if value else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def redacted_settings(settings: Settings) -> dict[str, object]:
    """The effective configuration by key, secrets as `***` when set (JSON-ready, for /config)."""
    return {spec.key: _shown(spec, getattr(settings, spec.attr)) for spec in key_specs()}


def format_value(value: object) -> str:
    """A value as a `.env` line would write it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def format_settings(settings: Settings) -> str:
    """`KEY=value` per line, for `check-config`."""
    return "\n".join(f"{key}={format_value(value)}" for key, value in redacted_settings(settings).items())
