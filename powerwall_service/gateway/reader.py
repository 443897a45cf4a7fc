"""The blocking half of the gateway client: one pypowerwall instance, read in its worker thread.

Everything here blocks and runs in the worker thread that owns the instance, never on the event
loop. A read fetches the core (power flows, state of charge, grid status: three requests in
local mode) and the slow "slots" the client asks for. It returns plain values named like the
Snapshot's fields, or raises a typed `PowerwallError` worked out from what was actually sent
(`transport.Recorder`), because pypowerwall itself answers most failures with `None`.

pypowerwall keeps state that would delay recovery: negative caches (404, 503, a 401/403 after a
re-login: about 600 s), a 300 s global cooldown after a 429 or 503, and response caches. The
client, not pypowerwall, decides when to ask the gateway again, so each read starts by clearing
them; the response cache is shorter than a poll, so nothing of value is lost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import pypowerwall
import requests
from pypowerwall.exceptions import PyPowerwallInvalidConfigurationParameter
from pypowerwall.local.exceptions import LoginError

from powerwall_service.config import Settings
from powerwall_service.gateway.errors import (
    PowerwallAuthError,
    PowerwallDataError,
    PowerwallError,
    PowerwallRateLimitedError,
    PowerwallTimeoutError,
    PowerwallUnavailableError,
)
from powerwall_service.gateway.transport import Exchange, Recorder
from powerwall_service.snapshot import Meter, PVString

Mode = Literal["local", "tedapi"]

AGGREGATES = "/api/meters/aggregates"
SOE = "/api/system_status/soe"
GRID_STATUS = "/api/system_status/grid_status"
VITALS = "/api/devices/vitals"
CACHEFILE_NAME = ".powerwall"
VITALS_REMOVED_FIRMWARE = 234400
"""Firmware 23.44.0 (pypowerwall's parse_version) removed /api/devices/vitals."""

GRID_MAP: Mapping[str, tuple[str, int]] = {
    "SystemGridConnected": ("UP", 1),
    "SystemIslandedActive": ("DOWN", 0),
    "SystemMicroGridFaulted": ("DOWN", 0),
    "SystemWaitForUser": ("DOWN", 0),
    "SystemTransitionToGrid": ("SYNCING", -1),
    "SystemTransitionToIsland": ("SYNCING", -1),
    "SystemIslandedReady": ("SYNCING", -1),
}
"""pypowerwall's grid_status() table, read here ourselves: grid_status() turns any error into a
TypeError (its `type` parameter shadows the built-in in its except block)."""

COUNTERS: Mapping[str, tuple[str, str]] = {
    "site_energy_imported_wh": ("site", "energy_imported"),
    "site_energy_exported_wh": ("site", "energy_exported"),
    "solar_energy_exported_wh": ("solar", "energy_exported"),
    "battery_energy_imported_wh": ("battery", "energy_imported"),
    "battery_energy_exported_wh": ("battery", "energy_exported"),
    "load_energy_imported_wh": ("load", "energy_imported"),
}


class Slot(StrEnum):
    """A slower read, done on one poll in turn rather than on every poll."""

    FIRMWARE = "firmware"
    SITE_NAME = "site_name"
    SYSTEM_STATUS = "system_status"
    OPERATION = "operation"
    DEVICES = "devices"


IDENTITY_SLOTS = frozenset({Slot.FIRMWARE, Slot.SITE_NAME})
ALL_SLOTS = tuple(Slot)


@dataclass(frozen=True, slots=True)
class ReadResult:
    """One successful read: core values, the slots that were read, and a 429 seen on the way."""

    core: dict[str, Any]
    slots: dict[Slot, dict[str, Any]]
    rate_limited: PowerwallRateLimitedError | None = None


@dataclass
class _Instance:
    pw: Any
    mode: Mode


def credentials_mode(settings: Settings) -> Mode:
    """Customer password: local (pypowerwall adds TEDAPI only for 192.168.91.1); else TEDAPI."""
    return "local" if settings.pw_customer_password else "tedapi"


def password_setting(mode: Mode) -> str:
    return "PW_CUSTOMER_PASSWORD" if mode == "local" else "PW_GATEWAY_PASSWORD"


class GatewayReader:
    """One pypowerwall instance; used only by the worker thread that created it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.mode: Mode = credentials_mode(settings)
        self._instance: _Instance | None = None

    def read(self, slots: tuple[Slot, ...], recorder: Recorder) -> ReadResult:
        """Connect if needed, then read the core and `slots`. Raises a PowerwallError."""
        try:
            instance = self._instance or self._connect(recorder)
            self._forget_pypowerwall_state(instance, slots)
            core = self._read_core(instance, recorder)
            results = {slot: self._read_slot(instance, slot, recorder) for slot in slots}
        except PowerwallError:
            raise
        except LoginError as exc:
            raise self._login_error(recorder, exc) from None
        except ConnectionError as exc:
            raise _unreachable(recorder, self._settings.pw_host, str(exc)) from None
        except PyPowerwallInvalidConfigurationParameter as exc:
            raise PowerwallError(
                f"pypowerwall refused the configuration: {exc} (check PW_HOST and DATA_DIR)"
            ) from None
        except Exception as exc:
            # pypowerwall raises from deep inside on answers it does not expect (e.g. level()
            # re-raises); a poll must still end in a PowerwallError, not stop the poll loop.
            raise PowerwallDataError(
                f"pypowerwall could not read the gateway's answer ({type(exc).__name__}: {exc})"
            ) from exc
        limited = _rate_limit(recorder.exchanges, self._settings)
        return ReadResult(core, results, limited)

    def close(self) -> None:
        """Close pypowerwall's sessions without logging out (the saved login stays valid)."""
        instance, self._instance = self._instance, None
        if instance is None or instance.pw.client is None:
            return
        for session in _sessions(instance.pw):
            session.close()

    def _connect(self, recorder: Recorder) -> _Instance:
        settings = self._settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        pw = pypowerwall.Powerwall(
            host=settings.pw_host,
            password=settings.pw_customer_password or "",
            email=settings.pw_customer_email or "nobody@nowhere.com",
            timezone=settings.pw_timezone,
            pwcacheexpire=_cache_seconds(settings),
            timeout=settings.pw_request_timeout,
            # TEDAPI: 0 means a session without urllib3's 5 retries with back-off, which made one
            # request to a dead gateway cost 30 s; keep-alive is restored below.
            poolmaxsize=2 if self.mode == "local" else 0,
            cachefile=str(Path(settings.data_dir) / CACHEFILE_NAME),
            gw_pwd=settings.pw_gateway_password or None,
            failover=False,
            retry_modes=False,
            auto_select=False,
        )
        if pw.client is None:
            raise _connect_error(recorder, settings, self.mode)
        if self.mode == "tedapi":
            pw.client.tedapi.session.headers.pop("Connection", None)
        self._instance = _Instance(pw, self.mode)
        return self._instance

    def _forget_pypowerwall_state(self, instance: _Instance, slots: tuple[Slot, ...]) -> None:
        client = instance.pw.client
        if instance.mode == "local":
            client.pwcache.clear()
            client.pwcachetime.clear()
            client.pwcooldown = 0
            return
        tedapi = client.tedapi
        keep = {"din"}
        if not {Slot.SITE_NAME, Slot.OPERATION} & set(slots):
            # config.json (site name, reserve, layout) is read again only with those slots.
            keep.add("config")
        for key in list(tedapi.pwcache):
            if key not in keep:
                tedapi.pwcache.pop(key, None)
                tedapi.pwcachetime.pop(key, None)
        tedapi.pwconfigexpire = math.inf
        tedapi.pwcooldown = 0

    def _read_core(self, instance: _Instance, recorder: Recorder) -> dict[str, Any]:
        pw = instance.pw
        aggregates = self._required(pw.poll(AGGREGATES), AGGREGATES, recorder)
        soe = self._required(pw.poll(SOE), SOE, recorder)
        grid = pw.poll(GRID_STATUS)
        core = core_values(aggregates, soe)
        core["timestamp"] = datetime.now(UTC)
        core["grid_status"], core["grid_status_code"] = grid_values(grid)
        return core

    def _required(self, payload: object, api: str, recorder: Recorder) -> dict[str, Any]:
        if isinstance(payload, dict) and "ERROR" not in payload:
            return payload
        if payload is None:
            raise _failed_request(recorder, self._settings, self.mode, api)
        raise PowerwallDataError(
            f"the gateway's answer to {api} is not JSON data ({_describe(payload)}); "
            "is PW_HOST really a Powerwall gateway?"
        )

    def _read_slot(self, instance: _Instance, slot: Slot, recorder: Recorder) -> dict[str, Any]:
        pw = instance.pw
        if slot is Slot.FIRMWARE:
            return self._read_identity(instance)
        if slot is Slot.SITE_NAME:
            return {"site_name": _text(pw.site_name())}
        if slot is Slot.SYSTEM_STATUS:
            return system_status_values(pw.poll("/api/system_status"), instance.mode)
        if slot is Slot.OPERATION:
            return operation_values(pw.poll("/api/operation"))
        values = device_values(pw.strings(), pw.temps(), pw.alerts())
        if instance.mode == "local" and any(e.path == VITALS and e.status == 404 for e in recorder.exchanges):
            # Without a firmware version (Powerwall 3: /api/status is 404 too) pypowerwall would
            # ask for vitals, and re-read /api/status, on every read of this slot.
            pw.client.vitals_api = False
        return values

    def _read_identity(self, instance: _Instance) -> dict[str, Any]:
        pw = instance.pw
        if instance.mode == "tedapi":
            tedapi = pw.client.tedapi
            return {"din": _text(tedapi.din), "firmware": firmware_text(tedapi.get_firmware_version())}
        status = pw.poll("/api/status")
        if not isinstance(status, dict):
            return {"din": None, "firmware": None}
        firmware = firmware_text(status.get("version"))
        version = pypowerwall.parse_version(status.get("version"))
        if version is not None and version >= VITALS_REMOVED_FIRMWARE:
            # pypowerwall learns this itself only after a 404 and another /api/status read.
            pw.client.vitals_api = False
        return {"din": _text(status.get("din")), "firmware": firmware}

    def _login_error(self, recorder: Recorder, exc: LoginError) -> PowerwallError:
        login = next((e for e in reversed(recorder.exchanges) if e.path == "/api/login/Basic"), None)
        status = login.status if login else None
        if status == 429:
            limited = _rate_limit(recorder.exchanges, self._settings)
            assert limited is not None
            return limited
        if status in (401, 403):
            return PowerwallAuthError(
                f"the gateway refused the login (HTTP {status}): check PW_CUSTOMER_PASSWORD "
                "(and PW_CUSTOMER_EMAIL)",
                "PW_CUSTOMER_PASSWORD",
                status,
            )
        return PowerwallUnavailableError(f"the gateway's login failed: {exc}", status)


def _sessions(pw: Any) -> list[requests.Session]:
    client = pw.client
    found = [getattr(client, "session", None)]
    tedapi = getattr(client, "tedapi", None)
    if tedapi:
        found += [getattr(tedapi, "session", None), getattr(tedapi, "api_session", None)]
    return [s for s in found if isinstance(s, requests.Session)]


def _cache_seconds(settings: Settings) -> float:
    """Shorter than a poll (each poll reads fresh data), long enough to cover one poll's calls."""
    return settings.gateway_cache_seconds or settings.pw_poll_interval / 2


def _describe(payload: object) -> str:
    if isinstance(payload, str):
        return f"{len(payload)} characters of text"
    return type(payload).__name__


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def firmware_text(version: object) -> str | None:
    """'23.44.0 9064fc6a' -> '23.44.0' (the git hash is not the version)."""
    text = _text(version)
    return text.split()[0] if text else None


def core_values(aggregates: Mapping[str, Any], soe: Mapping[str, Any]) -> dict[str, Any]:
    """Power flows, state of charge, lifetime counters and meters; raises without the core."""
    powers: dict[str, float] = {}
    for section in ("site", "solar", "battery", "load"):
        block = aggregates.get(section)
        value = _number(block.get("instant_power")) if isinstance(block, dict) else None
        if value is None:
            raise PowerwallDataError(f"the gateway's {AGGREGATES} has no {section} power")
        powers[f"{section}_power_w"] = value
    percentage = _number(soe.get("percentage"))
    if percentage is None:
        raise PowerwallDataError(f"the gateway's {SOE} has no state of charge")
    values: dict[str, Any] = {
        **powers,
        "battery_percentage": percentage,
        "battery_percentage_app": percentage / 0.95 - 5 / 0.95,
        "meters": {name: _meter(aggregates.get(name)) for name in ("site", "battery", "load", "solar")},
    }
    for name, (section, key) in COUNTERS.items():
        block = aggregates.get(section)
        values[name] = _number(block.get(key)) if isinstance(block, dict) else None
    return values


def _meter(block: object) -> Meter:
    """0 V or 0 Hz is pypowerwall's filler (TEDAPI stubs), never a live meter; current then too."""
    if not isinstance(block, dict):
        return Meter()
    voltage = _number(block.get("instant_average_voltage")) or None
    frequency = _number(block.get("frequency")) or None
    current = _number(block.get("instant_average_current")) if voltage is not None else None
    return Meter(voltage_v=voltage, current_a=current, frequency_hz=frequency)


def grid_values(payload: object) -> tuple[str | None, int | None]:
    if not isinstance(payload, dict):
        return None, None
    mapped = GRID_MAP.get(str(payload.get("grid_status")))
    return mapped if mapped else (None, None)


def system_status_values(payload: object, mode: Mode) -> dict[str, Any]:
    """Nominal energies and each Powerwall (keyed by serial) from /api/system_status.

    A block's `p_out` is in W from the gateway, but in kW when pypowerwall builds it from TEDAPI.
    """
    p_out_scale = 1000.0 if mode == "tedapi" else 1.0
    if not isinstance(payload, dict):
        return {
            "battery_nominal_energy_remaining_wh": None,
            "battery_nominal_full_energy_wh": None,
            "units": {},
        }
    units: dict[str, dict[str, Any]] = {}
    for block in payload.get("battery_blocks") or []:
        serial = _text(block.get("PackageSerialNumber")) if isinstance(block, dict) else None
        if serial is None:
            continue
        units[serial] = {
            "part_number": _text(block.get("PackagePartNumber")),
            "nominal_energy_remaining_wh": _number(block.get("nominal_energy_remaining")),
            "nominal_full_pack_energy_wh": _number(block.get("nominal_full_pack_energy")),
            "power_w": _scaled(_number(block.get("p_out")), p_out_scale),
            "state": _text(block.get("pinv_state")) or _text(block.get("OpSeqState")),
        }
    return {
        "battery_nominal_energy_remaining_wh": _number(payload.get("nominal_energy_remaining")),
        "battery_nominal_full_energy_wh": _number(payload.get("nominal_full_pack_energy")),
        "units": units,
    }


def operation_values(payload: object) -> dict[str, Any]:
    """Backup reserve on the Tesla app's scale (as pypowerwall's get_reserve()), and the mode."""
    if not isinstance(payload, dict):
        return {"backup_reserve_percent": None, "operation_mode": None}
    raw = _number(payload.get("backup_reserve_percent"))
    return {
        "backup_reserve_percent": None if raw is None else max(0.0, raw / 0.95 - 5 / 0.95),
        "operation_mode": _text(payload.get("real_mode")),
    }


def device_values(strings: object, temps: object, alerts: object) -> dict[str, Any]:
    """PV strings (named as pypowerwall names them), temperatures and alerts."""
    pv: dict[str, PVString] = {}
    if isinstance(strings, dict):
        for name, data in strings.items():
            if not isinstance(data, dict):
                continue
            connected = data.get("Connected")
            pv[str(name)] = PVString(
                voltage_v=_number(data.get("Voltage")),
                current_a=_number(data.get("Current")),
                power_w=_number(data.get("Power")),
                connected=connected if isinstance(connected, bool) else None,
                state=_text(data.get("State")),
            )
    temperatures: dict[str, float] = {}
    if isinstance(temps, dict):
        for sensor, celsius in temps.items():
            value = _number(celsius)
            if value is not None:
                temperatures[str(sensor)] = value
    alert_list = tuple(sorted(str(a) for a in alerts)) if isinstance(alerts, list) else None
    return {"strings": pv, "temperatures": temperatures, "alerts": alert_list}


def _rate_limit(exchanges: list[Exchange], settings: Settings) -> PowerwallRateLimitedError | None:
    hit = next((e for e in reversed(exchanges) if e.status == 429), None)
    if hit is None:
        return None
    wait = hit.retry_after_s if hit.retry_after_s is not None else settings.pw_rate_limit_cooldown
    retry_at = datetime.now(UTC) + timedelta(seconds=wait)
    source = "its Retry-After" if hit.retry_after_s is not None else "PW_RATE_LIMIT_COOLDOWN"
    return PowerwallRateLimitedError(
        f"the gateway is rate limiting (HTTP 429 on {hit.path}): no request before "
        f"{retry_at:%H:%M:%S} UTC ({wait:.0f} s, {source}); stop other clients polling it",
        retry_at,
    )


def _unreachable(recorder: Recorder, host: str, detail: str | None = None) -> PowerwallError:
    last = recorder.exchanges[-1] if recorder.exchanges else None
    if last is not None and last.error is not None and "Timeout" in last.error:
        return PowerwallTimeoutError(
            f"the gateway at {host} did not answer in time ({last.error}): check the network, or raise "
            "PW_REQUEST_TIMEOUT"
        )
    reason = last.error if last is not None and last.error else detail or "no answer"
    if reason == "SSLError":
        return PowerwallUnavailableError(
            f"the TLS handshake with the gateway at {host} failed (SSLError): is PW_HOST the gateway?"
        )
    return PowerwallUnavailableError(
        f"cannot reach the gateway at {host} ({reason}): check PW_HOST and the network"
    )


def _failed_request(recorder: Recorder, settings: Settings, mode: Mode, api: str) -> PowerwallError:
    """Why pypowerwall returned None for `api`, from what it really sent."""
    limited = _rate_limit(recorder.exchanges, settings)
    if limited is not None:
        return limited
    answered = [e for e in recorder.exchanges if e.status is not None]
    last = recorder.exchanges[-1] if recorder.exchanges else None
    if last is None or last.status is None:
        return _unreachable(recorder, settings.pw_host)
    status = last.status
    if status in (401, 403):
        logged_in = any(e.path == "/api/login/Basic" and e.status == 200 for e in answered)
        if logged_in or mode == "tedapi":
            return PowerwallAuthError(
                f"the gateway refuses {api} (HTTP {status} on {last.path}) "
                + ("even after a fresh login" if mode == "local" else "to the gateway password")
                + f": check {password_setting(mode)}",
                password_setting(mode),
                status,
                login_refused=False,
            )
    if status >= 400:
        return PowerwallUnavailableError(
            f"the gateway answered HTTP {status} for {last.path}: it may be busy or restarting", status
        )
    if last.content_type is not None and "json" not in last.content_type and "octet" not in last.content_type:
        return PowerwallDataError(
            f"the gateway answered {last.path} with {last.content_type}, not data; is PW_HOST a Powerwall?"
        )
    return PowerwallDataError(f"the gateway's answer to {api} could not be read (malformed or empty)")


def _connect_error(recorder: Recorder, settings: Settings, mode: Mode) -> PowerwallError:
    """TEDAPI connects in pypowerwall's constructor; it failed (client is None)."""
    limited = _rate_limit(recorder.exchanges, settings)
    if limited is not None:
        return limited
    refused = next((e for e in recorder.exchanges if e.status in (401, 403)), None)
    if refused is not None:
        return PowerwallAuthError(
            f"the gateway refused the gateway password (HTTP {refused.status} on {refused.path}): "
            f"check {password_setting(mode)}",
            password_setting(mode),
            refused.status,
        )
    last = recorder.exchanges[-1] if recorder.exchanges else None
    if last is None or last.status is None:
        return _unreachable(recorder, settings.pw_host)
    return PowerwallUnavailableError(
        f"cannot connect to the gateway's TEDAPI (HTTP {last.status} on {last.path})", last.status
    )
