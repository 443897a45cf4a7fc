"""The gateway's local REST API (customer login), with the bodies and statuses the real one sends.

A pw2 gateway serves every endpoint pypowerwall's local mode reads; a Powerwall 3 on the LAN
serves only the login, aggregates, soe and grid status (reference §2.4) and 404 for the rest.
`/api/devices/vitals` exists (protobuf) only before firmware 23.44.
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from powerwall_service.simulator import vitals
from powerwall_service.simulator.home import HomeState, git_hash, is_system_alert, iso_time
from powerwall_service.simulator.simulation import Simulation, current_a

LOGIN_ERROR = {"code": 401, "error": "bad credentials", "message": "Login Error"}
TOKEN_EXPIRED = {"code": 401, "message": "Token Expired"}
NOT_FOUND = {"code": 404, "error": "Not Found", "message": "Not Found"}
VITALS_REMOVED_FROM = (23, 44, 0)

PW3_LOCAL_PATHS = frozenset(
    {"/api/meters/aggregates", "/api/system_status/soe", "/api/system_status/grid_status"}
)

SIM_KEY: web.AppKey[Simulation] = web.AppKey("simulation", Simulation)


class Sessions:
    """Tokens handed out by the login; a password change (a firmware update) ends them all."""

    def __init__(self) -> None:
        self._tokens: set[str] = set()
        self._password_seen: str | None = None

    def issue(self, password: str) -> str:
        self._forget_if_changed(password)
        token = secrets.token_urlsafe(48)
        self._tokens.add(token)
        return token

    def valid(self, token: str | None, password: str) -> bool:
        self._forget_if_changed(password)
        return token is not None and token in self._tokens

    def end(self, token: str | None) -> None:
        self._tokens.discard(token or "")

    def _forget_if_changed(self, password: str) -> None:
        if password != self._password_seen:
            self._tokens.clear()
            self._password_seen = password


SESSIONS_KEY = web.AppKey("sessions", Sessions)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def firmware_tuple(firmware: str) -> tuple[int, ...]:
    return tuple(int(part) for part in firmware.split("."))


def serves_vitals(sim: Simulation) -> bool:
    return sim.config.flavour == "pw2" and firmware_tuple(sim.firmware) < VITALS_REMOVED_FROM


def _request_token(request: web.Request) -> str | None:
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        return authorization[len("Bearer ") :].strip()
    return request.cookies.get("AuthCookie")


async def login(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    fields = await _login_fields(request)
    if fields is None:
        return json_response({"code": 400, "error": "bad request body", "message": "Login Error"}, 400)
    username, password, email = fields
    expected = sim.secrets.gateway_password if username == "installer" else sim.secrets.customer_password
    if username not in ("customer", "installer") or password != expected:
        return json_response(LOGIN_ERROR, 401)
    token = request.app[SESSIONS_KEY].issue(sim.secrets.customer_password)
    state = sim.now()
    body = {
        "email": email,
        "firstname": "Tesla",
        "lastname": "Energy",
        "roles": ["Home_Owner" if username == "customer" else "Provider_Engineer"],
        "token": token,
        "provider": "Basic",
        "loginTime": iso_time(state.time, state.timezone),
    }
    response = json_response(body)
    record = base64.b64encode(json.dumps({"email": email, "roles": body["roles"]}).encode()).decode()
    response.set_cookie("AuthCookie", token, path="/")
    response.set_cookie("UserRecord", record, path="/")
    return response


async def _login_fields(request: web.Request) -> tuple[str, str, str] | None:
    """(username, password, email) from a form or JSON login body, or None if unreadable."""
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        values = {k: data.get(k) for k in ("username", "password", "email")}
    else:
        form = await request.post()
        values = {k: form.get(k) for k in ("username", "password", "email")}
    username, password, email = values["username"], values["password"], values["email"]
    if not isinstance(username, str) or not isinstance(password, str):
        return None
    return username, password, email if isinstance(email, str) else ""


async def logout(request: web.Request) -> web.Response:
    request.app[SESSIONS_KEY].end(_request_token(request))
    return json_response({})


def _section(state: HomeState, location: str, meters: int | None) -> dict[str, Any]:
    electrical = getattr(state, location)
    power: float = getattr(state, f"{location}_power_w")
    counters = state.counters
    energy = {
        "site": (counters.site_exported_wh, counters.site_imported_wh),
        "battery": (counters.battery_exported_wh, counters.battery_imported_wh),
        "load": (0.0, counters.load_imported_wh),
        "solar": (counters.solar_exported_wh, 0.0),
    }[location]
    current = current_a(power, electrical.voltage_v)
    section: dict[str, Any] = {
        "last_communication_time": iso_time(state.time, state.timezone),
        "instant_power": power,
        "instant_reactive_power": 0,
        "instant_apparent_power": abs(power),
        "frequency": electrical.frequency_hz,
        "energy_exported": energy[0],
        "energy_imported": energy[1],
        "instant_average_voltage": electrical.voltage_v,
        "instant_average_current": current,
        "i_a_current": 0,
        "i_b_current": 0,
        "i_c_current": 0,
        "last_phase_voltage_communication_time": "0001-01-01T00:00:00Z",
        "last_phase_power_communication_time": "0001-01-01T00:00:00Z",
        "last_phase_energy_communication_time": "0001-01-01T00:00:00Z",
        "timeout": 1500000000,
        "instant_total_current": current,
    }
    if meters is not None:
        section["num_meters_aggregated"] = meters
    return section


def aggregates(sim: Simulation, state: HomeState) -> dict[str, Any]:
    return {
        "site": _section(state, "site", 1),
        "battery": _section(state, "battery", len(sim.config.powerwalls)),
        "load": _section(state, "load", None),
        "solar": _section(state, "solar", 1),
    }


def status(sim: Simulation, state: HomeState) -> dict[str, Any]:
    uptime = sim.uptime_s()
    started = state.time - timedelta(seconds=uptime)
    hours, rest = divmod(uptime, 3600.0)
    minutes, seconds = divmod(rest, 60.0)
    return {
        "din": sim.din,
        "start_time": _gateway_time(started, state.timezone),
        "up_time_seconds": f"{int(hours)}h{int(minutes)}m{seconds:.9f}s",
        "is_new": False,
        "version": sim.version,
        "git_hash": git_hash(sim.firmware),
        "commission_count": 0,
        "device_type": "teg",
        "teg_type": "unknown",
        "sync_type": "v2.1",
        "cellular_disabled": False,
        "can_reboot": True,
    }


def _gateway_time(when: datetime, timezone: str) -> str:
    return when.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S %z")


def system_status(sim: Simulation, state: HomeState) -> dict[str, Any]:
    full_total = state.full_pack_wh
    counters = state.counters
    blocks = []
    for spec, (_, pw) in zip(sim.config.powerwalls, state.powerwalls, strict=True):
        share = pw.full_pack_wh / full_total
        blocks.append(
            {
                "Type": "",
                "PackagePartNumber": spec.part_number,
                "PackageSerialNumber": spec.serial,
                "disabled_reasons": [],
                "pinv_state": "PINV_GridFollowing" if not state.islanded else "PINV_GridForming",
                "pinv_grid_state": "Grid_Compliant" if not state.islanded else "Grid_Uncompliant",
                "nominal_energy_remaining": pw.energy_remaining_wh,
                "nominal_full_pack_energy": pw.full_pack_wh,
                "p_out": pw.power_w,
                "q_out": 0,
                "v_out": state.battery.voltage_v,
                "f_out": state.battery.frequency_hz,
                "i_out": current_a(pw.power_w, state.battery.voltage_v),
                "energy_charged": counters.battery_imported_wh * share,
                "energy_discharged": counters.battery_exported_wh * share,
                "off_grid": state.islanded,
                "vf_mode": False,
                "wobble_detected": False,
                "charge_power_clamped": False,
                "backup_ready": True,
                "OpSeqState": "Active",
                "version": git_hash(sim.firmware)[:14],
            }
        )
    max_charge = sum(pw.max_charge_w for pw in sim.config.powerwalls)
    max_discharge = sum(pw.max_discharge_w for pw in sim.config.powerwalls)
    return {
        "command_source": "Configuration",
        "battery_target_power": state.battery_power_w,
        "battery_target_reactive_power": 0,
        "nominal_full_pack_energy": full_total,
        "nominal_energy_remaining": state.energy_remaining_wh,
        "max_power_energy_remaining": 0,
        "max_power_energy_to_be_charged": 0,
        "max_charge_power": max_charge,
        "max_discharge_power": max_discharge,
        "max_apparent_power": max_discharge,
        "instantaneous_max_discharge_power": max_discharge * 2,
        "instantaneous_max_charge_power": max_charge,
        "instantaneous_max_apparent_power": max_discharge,
        "hardware_capability_charge_power": 0,
        "hardware_capability_discharge_power": 0,
        "grid_services_power": 0,
        "system_island_state": state.grid_status,
        "available_blocks": len(blocks),
        "available_charger_blocks": 0,
        "battery_blocks": blocks,
        "ffr_power_availability_high": max_discharge,
        "ffr_power_availability_low": max_discharge,
        "load_charge_constraint": 0,
        "max_sustained_ramp_rate": 2700000,
        "grid_faults": [],
        "can_reboot": "Yes",
        "smart_inv_delta_p": 0,
        "smart_inv_delta_q": 0,
        "last_toggle_timestamp": iso_time(state.time, state.timezone),
        "solar_real_power_limit": -1,
        "score": 10000,
        "blocks_controlled": len(blocks),
        "primary": True,
        "auxiliary_load": 0,
        "all_enable_lines_high": True,
        "inverter_nominal_usable_power": max_discharge,
        "expected_energy_remaining": 0,
    }


def solar_powerwall(sim: Simulation, state: HomeState) -> dict[str, Any]:
    strings = dict(state.strings)
    inverter = sim.config.inverters[0]
    return {
        "command_source": "Configuration",
        "pvac_status": {
            "state": "PVAC_Active" if state.solar_power_w > 0 else "PVAC_Standby",
            "disabled": False,
            "disabled_reasons": [],
            "grid_state": "Grid_Compliant" if not state.islanded else "Grid_Uncompliant",
            "inv_state": "INV_Grid_Connected" if not state.islanded else "INV_Grid_Forming",
            "v_out": state.solar.voltage_v,
            "f_out": state.solar.frequency_hz,
            "p_out": state.solar_power_w,
            "q_out": 0,
            "i_out": current_a(state.solar_power_w, state.solar.voltage_v),
            "string_vitals": [
                {
                    "string_id": index + 1,
                    "connected": strings[name].connected,
                    "measured_voltage": strings[name].voltage_v,
                    "current": strings[name].current_a,
                    "measured_power": strings[name].power_w,
                }
                for index, name in enumerate(sim.config.string_names)
            ],
        },
        "pvs_status": {
            "state": "PVS_Active",
            "disabled": False,
            "enable_output": True,
            "v_ll": state.solar.voltage_v,
            "self_test_state": "PVS_SelfTestOff",
        },
        "pv_power_limit": sum(2000.0 for _ in sim.config.string_names),
        "power_status_setpoint": "on",
        "pvac_alerts": {alert: True for alert in state.alerts if not is_system_alert(alert)},
        "pvs_alerts": {},
        "package_part_number": inverter.part_number,
        "package_serial_number": inverter.serial,
    }


async def get_endpoint(request: web.Request) -> web.Response:
    """Any authenticated GET: 404 for what this flavour and firmware lack, 401 without a session."""
    sim = request.app[SIM_KEY]
    path = request.path
    if sim.config.flavour == "pw3" and path not in PW3_LOCAL_PATHS:
        return json_response(NOT_FOUND, 404)
    if path == "/api/devices/vitals" and not serves_vitals(sim):
        return json_response(NOT_FOUND, 404)
    if not request.app[SESSIONS_KEY].valid(_request_token(request), sim.secrets.customer_password):
        return json_response(TOKEN_EXPIRED, 401)
    state = sim.now()
    if path == "/api/devices/vitals":
        return web.Response(
            body=vitals.devices_with_vitals(sim, state), content_type="application/octet-stream"
        )
    return json_response(_body(path, sim, state))


def _body(path: str, sim: Simulation, state: HomeState) -> Any:
    """The JSON body of a local API endpoint (routes exist only for the paths matched here)."""
    match path:
        case "/api/meters/aggregates":
            return aggregates(sim, state)
        case "/api/system_status/soe":
            return {"percentage": state.battery_percentage}
        case "/api/system_status/grid_status":
            return {
                "grid_status": state.grid_status,
                "grid_services_active": state.grid_services_active,
            }
        case "/api/status":
            return status(sim, state)
        case "/api/site_info/site_name":
            return {"site_name": state.site_name, "timezone": state.timezone}
        case "/api/site_info":
            return {
                "max_system_energy_kWh": state.full_pack_wh / 1000.0,
                "max_system_power_kW": sum(pw.max_discharge_w for pw in sim.config.powerwalls) / 1000.0,
                "site_name": state.site_name,
                "timezone": state.timezone,
                "nominal_system_energy_kWh": state.full_pack_wh / 1000.0,
                "nominal_system_power_kW": sum(pw.max_discharge_w for pw in sim.config.powerwalls) / 1000.0,
                "panel_max_current": 100,
                "grid_code": {
                    "grid_code": "60Hz_240V_s_UL1741SA:2019_California",
                    "grid_voltage_setting": 240,
                    "grid_freq_setting": 60,
                    "grid_phase_setting": "Split",
                    "country": "United States",
                    "state": "California",
                    "utility": "Simulated Power & Light",
                },
            }
        case "/api/system_status":
            return system_status(sim, state)
        case "/api/operation":
            return {
                "real_mode": state.real_mode,
                "backup_reserve_percent": state.backup_reserve_percent,
                "freq_shift_load_shed_soe": 65,
                "freq_shift_load_shed_delta_f": -0.32,
            }
        case "/api/powerwalls":
            return {
                "enumerating": False,
                "updating": False,
                "checking_if_offgrid": False,
                "running_phase_detection": False,
                "phase_detection_last_error": "no phase information",
                "bubble_shedding": False,
                "on_grid_check_error": "on grid check not run",
                "grid_qualifying": False,
                "grid_code_validating": False,
                "phase_detection_not_available": True,
                "powerwalls": [
                    {
                        "Type": "",
                        "PackagePartNumber": spec.part_number,
                        "PackageSerialNumber": spec.serial,
                        "type": "SolarPowerwall" if index < len(sim.config.inverters) else "ACPW",
                        "grid_state": "Grid_Compliant",
                        "grid_reconnection_time_seconds": 0,
                        "under_phase_detection": False,
                        "updating": False,
                        "commissioning_diagnostic": {"name": "Commissioning", "category": "InternalComms"},
                        "update_diagnostic": {"name": "Firmware Update", "category": "InternalComms"},
                        "bc_type": None,
                        "in_config": True,
                    }
                    for index, spec in enumerate(sim.config.powerwalls)
                ],
                "gateway_din": sim.din,
                "sync": {"updating": False, "commissioning_diagnostic": {}, "update_diagnostic": {}},
                "msa": None,
                "states": None,
            }
        case "/api/solar_powerwall":
            return solar_powerwall(sim, state)
        case "/api/system_status/grid_faults":
            return []
        case "/api/sitemaster":
            return {
                "status": "StatusUp",
                "running": True,
                "connected_to_tesla": True,
                "power_supply_mode": False,
                "can_reboot": "Yes",
            }
    raise KeyError(path)


PATHS = (
    "/api/meters/aggregates",
    "/api/system_status/soe",
    "/api/system_status/grid_status",
    "/api/status",
    "/api/site_info/site_name",
    "/api/site_info",
    "/api/system_status",
    "/api/operation",
    "/api/powerwalls",
    "/api/solar_powerwall",
    "/api/system_status/grid_faults",
    "/api/sitemaster",
    "/api/devices/vitals",
)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/login/Basic", login)
    app.router.add_get("/api/logout", logout)
    for path in PATHS:
        app.router.add_get(path, get_endpoint)
