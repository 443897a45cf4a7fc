"""TEDAPI, the gateway's protobuf API (reference §3), answered from the simulated home.

Since firmware 25.10 many owners, and every Powerwall 3 owner, reach the gateway only through
this API: HTTP Basic with the gateway password, protobuf `Message`s on /tedapi/v1 whose payloads
are JSON texts. The messages are built with pypowerwall's own protobuf classes, so the wire
format cannot drift from what the client parses, and the JSON carries every key pypowerwall
indexes directly (reference §3.8), so the unmodified library never trips on a missing one.

Everything here is a pure function of the home's hardware and its state; `routes` at the end
puts them behind aiohttp handlers.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from pypowerwall.tedapi import tedapi_pb2

from powerwall_service.simulator.home import (
    GRID_CONNECTED,
    STRING_CAPACITY_W,
    HomeConfig,
    HomeState,
    InverterSpec,
    PowerwallReading,
    PowerwallSpec,
    StringReading,
    full_version,
    git_hash,
    iso_time,
)

TEDAPI_USER = "Tesla_Energy_Device"
GZIP_FROM_FIRMWARE = (25, 42, 2)
PROTOBUF = "application/octet-stream"

# pypowerwall reads PW3 string states by substring ("Pv_Active" in state); a PW3 names them so.
_PW3_PV_STATES = {"PV_Active": "Pv_Active", "PV_Disabled": "Pv_Standby"}
_APP_GIT_HASH = list(bytes.fromhex("8f0c3e5d2a71b9c4e6f0a1b2c3d4e5f60718293a"))

Json = dict[str, Any]


class TedapiRequestError(ValueError):
    """A request body that is not a TEDAPI message this gateway answers."""


@dataclass(frozen=True)
class Gateway:
    """What TEDAPI needs to know at the moment of a request."""

    config: HomeConfig
    state: HomeState
    firmware: str
    gateway_password: str
    din: str


def firmware_tuple(firmware: str) -> tuple[int, ...]:
    """'25.42.2' -> (25, 42, 2); a suffix such as '-PW3' or ' abcdef' is ignored."""
    numbers = firmware.split()[0].split("-")[0].split(".")
    return tuple(int(n) for n in numbers if n.isdigit())


def gzips(firmware: str) -> bool:
    """Firmware 25.42.2 and later gzip every TEDAPI body (pypowerwall PR #251)."""
    return firmware_tuple(firmware) >= GZIP_FROM_FIRMWARE


def _body(data: bytes, firmware: str) -> bytes:
    return gzip.compress(data, mtime=0) if gzips(firmware) else data


def authorized(header: str | None, gateway_password: str) -> bool:
    """True for HTTP Basic `Tesla_Energy_Device:<gateway password>`."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    user, _, password = decoded.partition(":")
    return user == TEDAPI_USER and hmac.compare_digest(password.encode(), gateway_password.encode())


def _signal(name: str, value: float | None = None, text: str | None = None, flag: bool | None = None) -> Json:
    """One component signal as the gateway sends it: numbers in value, enums in textValue,
    booleans in boolValue, the other two explicitly null (pypowerwall indexes them directly)."""
    return {"name": name, "value": value, "textValue": text, "boolValue": flag, "timestamp": None}


def _inverter_strings(state: HomeState, inverter: InverterSpec) -> list[tuple[str, StringReading]]:
    readings = dict(state.strings)
    return [(spec.name, readings[spec.name]) for spec in inverter.strings if spec.name in readings]


def _powerwall_readings(config: HomeConfig, state: HomeState) -> list[tuple[PowerwallSpec, PowerwallReading]]:
    readings = dict(state.powerwalls)
    return [(spec, readings[spec.serial]) for spec in config.powerwalls]


# --- config.json ------------------------------------------------------------------------------


def config_json(config: HomeConfig, state: HomeState, din: str) -> Json:
    """The gateway's config.json: identities, site info, operation mode (reference §3.5)."""
    block_type = "Powerwall3" if config.flavour == "pw3" else "Powerwall2"
    solars = [] if config.flavour == "pw3" else config.inverters
    return {
        "vin": din,
        "battery_blocks": [
            {"vin": pw.din, "type": block_type, "battery_expansions": []} for pw in config.powerwalls
        ],
        "site_info": {
            "site_name": state.site_name,
            "timezone": state.timezone,
            "backup_reserve_percent": state.backup_reserve_percent,
            "nominal_system_energy_ac": state.full_pack_wh / 1000.0,
            "nominal_system_power_ac": sum(pw.max_discharge_w for pw in config.powerwalls) / 1000.0,
            "max_site_meter_power_ac": 1000000000,
            "min_site_meter_power_ac": -1000000000,
            "grid_code": "60Hz_240V_s_UL1741SA:2019_California",
            "country": "United States",
            "state": "California",
            "utility": "Pacific Gas & Electric Company",
            "panel_max_current": 200,
        },
        "default_real_mode": state.real_mode,
        "meters": [],
        "solars": [
            {
                "brand": "Tesla",
                "power_rating_watts": round(sum(STRING_CAPACITY_W * s.weight for s in inv.strings)),
            }
            for inv in solars
        ],
        "customer": {},
        "installer": {},
    }


# --- DeviceControllerQuery --------------------------------------------------------------------


def _pvac(state: HomeState, inverter: InverterSpec) -> tuple[Json, Json]:
    """One Powerwall+ PV inverter and its string switch (PVAC, PVS) with strings A..D."""
    strings = _inverter_strings(state, inverter)
    logging: Json = {"isMIA": False}
    connected: Json = {}
    for (_, reading), letter in zip(strings, "ABCD", strict=False):
        logging[f"PVAC_PVCurrent_{letter}"] = reading.current_a
        logging[f"PVAC_PVMeasuredVoltage_{letter}"] = reading.voltage_v
        connected[f"PVS_String{letter}_Connected"] = reading.connected
    logging["PVAC_VL1Ground"] = state.solar.voltage_v / 2.0
    logging["PVAC_VL2Ground"] = state.solar.voltage_v / 2.0
    pvac = {
        "packagePartNumber": inverter.part_number,
        "packageSerialNumber": inverter.serial,
        "PVAC_Status": {
            "isMIA": False,
            "PVAC_Pout": sum(reading.power_w for _, reading in strings),
            "PVAC_State": "PVAC_Active",
            "PVAC_Vout": state.solar.voltage_v,
            "PVAC_Fout": state.solar.frequency_hz,
        },
        "PVAC_InfoMsg": {"PVAC_appGitHash": _APP_GIT_HASH},
        "PVAC_Logging": logging,
        "alerts": {"isComplete": True, "isMIA": False, "active": []},
    }
    pvs = {
        "PVS_Status": {
            "isMIA": False,
            "PVS_State": "PVS_Active",
            "PVS_vLL": state.solar.voltage_v,
            "PVS_SelfTestState": "PVS_SelfTestOff",
            **connected,
        },
        "alerts": {"isComplete": True, "isMIA": False, "active": []},
    }
    return pvac, pvs


def _empty_pvac() -> tuple[Json, Json]:
    """An unused inverter slot, as a PW3's device controller lists several."""
    return (
        {"packagePartNumber": "", "packageSerialNumber": "", "PVAC_Status": {"isMIA": True}},
        {"PVS_Status": {"isMIA": True}, "alerts": {"active": []}},
    )


def _powerwall_bus(state: HomeState, spec: PowerwallSpec, pw: PowerwallReading) -> tuple[Json, Json, Json]:
    """The CAN devices of one Powerwall 2: thermal controller, pod (battery) and inverter."""
    islanded = state.grid_status != GRID_CONNECTED
    thc = {
        "packagePartNumber": spec.part_number,
        "packageSerialNumber": spec.serial,
        "THC_InfoMsg": {"isMIA": False, "THC_appGitHash": _APP_GIT_HASH},
        "THC_Logging": {"THC_LOG_PW_2_0_EnableLineState": "ENABLE_LINE_HIGH"},
        "alerts": {"isComplete": True, "isMIA": False, "active": []},
    }
    pod = {
        "POD_EnergyStatus": {
            "isMIA": False,
            "POD_nom_energy_remaining": pw.energy_remaining_wh,
            "POD_nom_full_pack_energy": pw.full_pack_wh,
        },
        "POD_InfoMsg": {"POD_appGitHash": _APP_GIT_HASH},
    }
    pinv = {
        "PINV_Status": {
            "isMIA": False,
            "PINV_Fout": state.battery.frequency_hz,
            "PINV_Pout": pw.power_w / 1000.0,
            "PINV_Vout": state.battery.voltage_v,
            "PINV_State": "PINV_GridForming" if islanded else "PINV_GridFollowing",
            "PINV_GridState": "Grid_Uncompliant" if islanded else "Grid_Compliant",
        },
        "PINV_AcMeasurements": {
            "isMIA": False,
            "PINV_VSplit1": state.battery.voltage_v / 2.0,
            "PINV_VSplit2": state.battery.voltage_v / 2.0,
        },
        "PINV_PowerCapability": {"isComplete": True, "isMIA": False, "PINV_Pnom": spec.max_discharge_w},
        "alerts": {"isComplete": True, "isMIA": False, "active": []},
    }
    return thc, pod, pinv


def _meter(prefix: str, power_w: float, voltage_v: float) -> Json:
    """A split-phase CT meter (two legs of half the power each) of the sync board."""
    leg_power = power_w / 2.0
    leg_voltage = voltage_v / 2.0
    leg_current = abs(leg_power) / leg_voltage if leg_voltage else 0.0
    return {
        "isMIA": False,
        f"{prefix}_CTA_InstRealPower": leg_power,
        f"{prefix}_CTB_InstRealPower": leg_power,
        f"{prefix}_CTC_InstRealPower": 0.0,
        f"{prefix}_CTA_InstReactivePower": 0.0,
        f"{prefix}_CTB_InstReactivePower": 0.0,
        f"{prefix}_CTC_InstReactivePower": 0.0,
        f"{prefix}_CTA_I": leg_current,
        f"{prefix}_CTB_I": leg_current,
        f"{prefix}_CTC_I": 0.0,
        f"{prefix}_VL1N": leg_voltage,
        f"{prefix}_VL2N": leg_voltage,
        f"{prefix}_VL3N": 0.0,
    }


def _islander(state: HomeState) -> Json:
    connected = state.grid_status == GRID_CONNECTED
    return {
        "ISLAND_GridConnection": {
            "isComplete": True,
            "ISLAND_GridConnected": (
                "ISLAND_GridConnected_Connected" if connected else "ISLAND_GridConnected_Disconnected"
            ),
        },
        "ISLAND_AcMeasurements": {
            "isMIA": False,
            "ISLAND_VL1N_Main": state.site.voltage_v / 2.0,
            "ISLAND_VL2N_Main": state.site.voltage_v / 2.0,
            "ISLAND_VL3N_Main": 0.0,
            "ISLAND_FreqL1_Main": state.site.frequency_hz,
            "ISLAND_FreqL2_Main": state.site.frequency_hz,
            "ISLAND_FreqL3_Main": 0.0,
            "ISLAND_VL1N_Load": state.load.voltage_v / 2.0,
            "ISLAND_VL2N_Load": state.load.voltage_v / 2.0,
            "ISLAND_VL3N_Load": 0.0,
            "ISLAND_FreqL1_Load": state.load.frequency_hz,
            "ISLAND_FreqL2_Load": state.load.frequency_hz,
            "ISLAND_FreqL3_Load": 0.0,
            "ISLAND_GridState": (
                "ISLAND_GridState_Grid_Compliant" if connected else "ISLAND_GridState_Grid_Uncompliant"
            ),
        },
    }


def _msa_components(config: HomeConfig, state: HomeState) -> list[Json]:
    """The full query's `components.msa`: per-Powerwall 2 temperature and state, the sync board."""
    components = [
        {
            "partNumber": spec.part_number,
            "serialNumber": spec.serial,
            "signals": [_signal("THC_AmbientTemp", pw.temperature_c), _signal("THC_State", text=pw.state)],
            "activeAlerts": [],
        }
        for spec, pw in _powerwall_readings(config, state)
        if config.flavour == "pw2"
    ]
    components.append(
        {
            "partNumber": config.gateway_part_number,
            "serialNumber": config.gateway_serial,
            "signals": [
                _signal("SYNC_ExternallyPowered", flag=False),
                _signal("SYNC_SiteSwitchEnabled", flag=True),
            ],
            "activeAlerts": [],
        }
    )
    return components


def controller_json(config: HomeConfig, state: HomeState, full: bool) -> Json:
    """DeviceControllerQuery's answer (reference §3.6); `full` adds components and meters."""
    connected = state.grid_status == GRID_CONNECTED
    if config.flavour == "pw2":
        pv = [_pvac(state, inverter) for inverter in config.inverters]
        devices = [_powerwall_bus(state, spec, pw) for spec, pw in _powerwall_readings(config, state)]
    else:
        pv = [_empty_pvac() for _ in range(4)]
        devices = []
    bus: Json = {
        "PVAC": [pvac for pvac, _ in pv],
        "PVS": [pvs for _, pvs in pv],
        "THC": [thc for thc, _, _ in devices],
        "POD": [pod for _, pod, _ in devices],
        "PINV": [pinv for _, _, pinv in devices],
        "SYNC": {
            "packagePartNumber": config.gateway_part_number,
            "packageSerialNumber": config.gateway_serial,
            "METER_X_AcMeasurements": _meter("METER_X", state.site_power_w, state.site.voltage_v),
            "METER_Y_AcMeasurements": _meter("METER_Y", state.solar_power_w, state.solar.voltage_v),
            "alerts": {"isComplete": True, "isMIA": False, "active": []},
        },
        "ISLANDER": _islander(state),
    }
    answer: Json = {
        "control": {
            "systemStatus": {
                "nominalFullPackEnergyWh": state.full_pack_wh,
                "nominalEnergyRemainingWh": state.energy_remaining_wh,
            },
            "islanding": {
                "customerIslandMode": "Online",
                "contactorClosed": connected,
                "microGridOK": True,
                "gridOK": connected,
            },
            "meterAggregates": [
                {"location": "SITE", "realPowerW": state.site_power_w},
                {"location": "BATTERY", "realPowerW": state.battery_power_w},
                {"location": "LOAD", "realPowerW": state.load_power_w},
                {"location": "SOLAR", "realPowerW": state.solar_power_w},
            ],
            "alerts": {"active": list(state.alerts)},
            "siteShutdown": {"isShutDown": False, "reasons": []},
            "batteryBlocks": [{"din": pw.din, "disableReasons": []} for pw in config.powerwalls],
            "pvInverters": [{"din": inv.din, "disableReasons": []} for inv in config.inverters],
        },
        "system": {
            "time": iso_time(state.time, state.timezone),
            "sitemanagerStatus": {"isRunning": True},
            "updateUrgencyCheck": None,
        },
        "neurio": {"isDetectingWiredMeters": False, "readings": [], "pairings": []},
        "pw3Can": {"firmwareUpdate": {"isUpdating": False, "progress": None}},
        "esCan": {
            "bus": bus,
            "enumeration": None,
            "firmwareUpdate": {"isUpdating": False, "powerwalls": None, "msa": None, "sync": None},
            "phaseDetection": None,
            "inverterSelfTests": None,
        },
    }
    if full:
        answer["components"] = {"msa": _msa_components(config, state)}
        answer["teslaRemoteMeter"] = {"meters": []}
        answer["ieee20305"] = {"longFormDeviceID": "", "polledResources": None}
    return answer


# --- ComponentsQuery (Powerwall 3) ------------------------------------------------------------


def components_json(config: HomeConfig, state: HomeState, unit: PowerwallSpec) -> Json:
    """ComponentsQuery's answer for one Powerwall 3 (reference §3.7): its inverter (PCH) with
    strings A..F, battery energies in kWh (BMS) and pack temperature (HVP)."""
    pw = dict(state.powerwalls)[unit.serial]
    inverter = next((inv for inv in config.inverters if inv.serial == unit.serial), None)
    strings = _inverter_strings(state, inverter) if inverter is not None else []
    pv_signals: list[Json] = []
    for (_, reading), letter in zip(strings, "ABCDEF", strict=False):
        pv_signals += [
            _signal(f"PCH_PvState_{letter}", text=_PW3_PV_STATES.get(reading.state, reading.state)),
            _signal(f"PCH_PvVoltage{letter}", reading.voltage_v),
            _signal(f"PCH_PvCurrent{letter}", reading.current_a),
        ]
    islanded = state.grid_status != GRID_CONNECTED
    pch = [
        _signal("PCH_State", text="PCH_State_Active"),
        *pv_signals,
        _signal("PCH_AcFrequency", state.battery.frequency_hz),
        _signal("PCH_AcVoltageAB", state.battery.voltage_v),
        _signal("PCH_AcVoltageAN", state.battery.voltage_v / 2.0),
        _signal("PCH_AcVoltageBN", state.battery.voltage_v / 2.0),
        _signal("PCH_BatteryPower", pw.power_w),
        _signal("PCH_AcMode", text="AC_Mode_GridForming" if islanded else "AC_Mode_GridFollowing"),
        _signal("PCH_AmbientTemp", pw.temperature_c),
    ]
    return {
        "pw3Can": {"firmwareUpdate": {"isUpdating": False, "progress": None}},
        "components": {
            "pws": [
                {
                    "partNumber": unit.part_number,
                    "serialNumber": unit.serial,
                    "signals": [_signal("PWS_State", text="PWS_State_Active")],
                    "activeAlerts": [],
                }
            ],
            "pch": [
                {
                    "partNumber": unit.part_number,
                    "serialNumber": unit.serial,
                    "signals": pch,
                    "activeAlerts": [],
                }
            ],
            "bms": [
                {
                    "partNumber": unit.part_number,
                    "serialNumber": unit.serial,
                    "signals": [
                        _signal("BMS_nominalEnergyRemaining", pw.energy_remaining_wh / 1000.0),
                        _signal("BMS_nominalFullPackEnergy", pw.full_pack_wh / 1000.0),
                    ],
                    "activeAlerts": [],
                }
            ],
            "hvp": [
                {
                    "partNumber": unit.part_number,
                    "serialNumber": unit.serial,
                    "signals": [
                        _signal("HVP_State", text="HVP_State_Active"),
                        _signal("HVP_PackTempMax", pw.temperature_c),
                    ],
                    "activeAlerts": [],
                }
            ],
            "baggr": [{"signals": [_signal("BAGGR_State", text="BAGGR_State_Active")], "activeAlerts": []}],
        },
    }


# --- firmware ---------------------------------------------------------------------------------


def _firmware_payload(config: HomeConfig, firmware: str, din: str, envelope: Any) -> None:
    system = envelope.firmware.system
    system.gateway.partNumber = config.gateway_part_number
    system.gateway.serialNumber = config.gateway_serial
    system.din = din
    system.version.text = full_version(firmware)
    system.version.githash = bytes.fromhex(git_hash(firmware))
    system.systemUpdate.updateStatus = 1
    system.deviceType = 4
    radio = system.wireless.device.add()
    radio.company.value = "Quectel"
    radio.model.value = "EG25-G"


# --- the message dispatcher -------------------------------------------------------------------


def _operation(text: str) -> str:
    for name in ("DeviceControllerQuery", "ComponentsQuery"):
        if name in text:
            return name
    raise TedapiRequestError("unsupported query: only DeviceControllerQuery and ComponentsQuery")


def _unit(config: HomeConfig, din: str) -> PowerwallSpec:
    """The Powerwall 3 a ComponentsQuery is for; the gateway itself answers for the leader."""
    for unit in config.powerwalls:
        if unit.din == din:
            return unit
    return config.powerwalls[0]


def _query_answer(gateway: Gateway, send: Any, recipient: str) -> Json:
    config, state = gateway.config, gateway.state
    if _operation(send.payload.text) == "ComponentsQuery":
        if config.flavour != "pw3":
            return {"components": {"pws": [], "pch": [], "bms": [], "hvp": [], "baggr": []}}
        return components_json(config, state, _unit(config, recipient))
    full = "msaComp" in send.b.value or "components{msa" in send.payload.text
    return controller_json(config, state, full)


def answer(body: bytes, gateway: Gateway) -> bytes:
    """The response body for one POST to /tedapi/v1 or /tedapi/device/<DIN>/v1.

    Signatures (`code`) are accepted unchecked: only Tesla holds the key that verifies them.
    Raises TedapiRequestError for a body that is not a config, firmware or query request.
    """
    request = tedapi_pb2.Message()
    try:
        request.ParseFromString(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)
    except (DecodeError, OSError) as exc:
        raise TedapiRequestError(f"body is not a TEDAPI protobuf Message: {exc}") from exc
    envelope = request.message
    reply = tedapi_pb2.Message()
    reply.message.deliveryChannel = 1
    reply.message.sender.din = envelope.recipient.din or gateway.din
    reply.message.recipient.local = 1
    reply.tail.value = request.tail.value or 1
    if envelope.HasField("config"):
        if envelope.config.send.file != "config.json":
            raise TedapiRequestError(f"unknown config file {envelope.config.send.file!r}")
        reply.message.config.recv.file.name = "config.json"
        reply.message.config.recv.file.text = json.dumps(
            config_json(gateway.config, gateway.state, gateway.din)
        )
    elif envelope.HasField("firmware") and envelope.firmware.HasField("request"):
        _firmware_payload(gateway.config, gateway.firmware, gateway.din, reply.message)
    elif envelope.HasField("payload") and envelope.payload.HasField("send"):
        text = json.dumps(_query_answer(gateway, envelope.payload.send, envelope.recipient.din))
        reply.message.payload.recv.value = 1
        reply.message.payload.recv.text = text
    else:
        raise TedapiRequestError("message carries no config, firmware or query request")
    return _body(reply.SerializeToString(), gateway.firmware)


# --- HTTP -------------------------------------------------------------------------------------


def _forbidden() -> web.Response:
    return web.json_response({"code": 403, "error": "Forbidden", "message": "Access Denied"}, status=403)


def routes(current: Callable[[], Gateway]) -> list[web.RouteDef]:
    """The TEDAPI routes; `current()` gives the gateway as it is at the moment of each request."""

    async def portal(_request: web.Request) -> web.Response:
        if current().config.flavour == "pw3":
            return web.json_response({"code": 404, "error": "Not Found", "message": "Not Found"}, status=404)
        return web.Response(
            text="<!doctype html><title>Tesla Energy Gateway</title>", content_type="text/html"
        )

    async def din(request: web.Request) -> web.Response:
        gateway = current()
        if not authorized(request.headers.get("Authorization"), gateway.gateway_password):
            return _forbidden()
        return web.Response(body=_body(gateway.din.encode(), gateway.firmware), content_type="text/plain")

    async def message(request: web.Request) -> web.Response:
        gateway = current()
        if not authorized(request.headers.get("Authorization"), gateway.gateway_password):
            return _forbidden()
        device = request.match_info.get("din")
        if device is not None and device not in {pw.din for pw in gateway.config.powerwalls}:
            return web.json_response(
                {"code": 404, "error": "Not Found", "message": f"no device {device}"}, status=404
            )
        try:
            body = answer(await request.read(), gateway)
        except TedapiRequestError as exc:
            return web.json_response({"code": 400, "error": "Bad Request", "message": str(exc)}, status=400)
        return web.Response(body=body, content_type=PROTOBUF)

    return [
        web.get("/", portal),
        web.get("/tedapi/din", din),
        web.post("/tedapi/v1", message),
        web.post("/tedapi/device/{din}/v1", message),
    ]
