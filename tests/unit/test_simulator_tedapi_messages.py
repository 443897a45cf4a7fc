"""TEDAPI messages, built from a simulated home and read back with pypowerwall's own code.

Requests are made the way pypowerwall makes them (its query captures and protobuf classes) and
answers are decoded with its protobuf classes, gzip sniffing and firmware model, so a message the
library could not read fails here before any network is involved.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pypowerwall.tedapi import decompress_response, tedapi_pb2
from pypowerwall.tedapi.queries import QueryRole, apply_query, get_query
from pypowerwall.tedapi.system_info import V2024_SYS_SCHEMA, SystemInfo

from powerwall_service.simulator import home
from powerwall_service.simulator.tedapi import (
    Gateway,
    TedapiRequestError,
    answer,
    authorized,
    firmware_tuple,
    gzips,
)

START = datetime(2026, 6, 21, 19, 0, tzinfo=UTC)


def gateway(flavour: str, powerwalls: int = 1, firmware: str = "25.10.1") -> Gateway:
    config = home.build_config(flavour, powerwalls, 7)
    state = home.initial_state(config, START, "Test Home", "America/Los_Angeles")
    return Gateway(config, state, firmware, "GATEWAYPASS", config.gateway_din)


def request(kind: str, recipient: str) -> bytes:
    pb = tedapi_pb2.Message()
    pb.message.deliveryChannel = 1
    pb.message.sender.local = 1
    pb.message.recipient.din = recipient
    pb.tail.value = 1
    if kind == "config":
        pb.message.config.send.num = 1
        pb.message.config.send.file = "config.json"
    elif kind == "firmware":
        pb.message.firmware.request = ""
    else:
        pb.message.payload.send.num = 2
        pb.message.payload.send.payload.value = 1
        apply_query(pb.message.payload.send, get_query(QueryRole(kind)))
    data: bytes = pb.SerializeToString()
    return data


def reply(body: bytes) -> Any:
    message = tedapi_pb2.Message()
    message.ParseFromString(decompress_response(body))
    return message


def query(gw: Gateway, role: str, recipient: str | None = None) -> Any:
    text = reply(answer(request(role, recipient or gw.config.gateway_din), gw)).message.payload.recv.text
    return json.loads(text)


def test_firmware_versions_parse_and_gzip_starts_at_25_42_2() -> None:
    assert firmware_tuple("25.42.2 0d91b012") == (25, 42, 2)
    assert firmware_tuple("24.12.6-PW3-AFCI") == (24, 12, 6)
    assert not gzips("25.42.1")
    assert gzips("25.42.2")
    assert gzips("26.1.0")


def test_basic_auth_needs_the_tedapi_user_and_the_gateway_password() -> None:
    def header(user_password: str) -> str:
        return "Basic " + base64.b64encode(user_password.encode()).decode()

    assert authorized(header("Tesla_Energy_Device:GATEWAYPASS"), "GATEWAYPASS")
    assert not authorized(header("Tesla_Energy_Device:WRONG"), "GATEWAYPASS")
    assert not authorized(header("customer:GATEWAYPASS"), "GATEWAYPASS")
    assert not authorized("Basic !!!", "GATEWAYPASS")
    assert not authorized(None, "GATEWAYPASS")


def test_config_names_the_gateway_and_each_powerwall() -> None:
    gw = gateway("pw3", powerwalls=2)
    message = reply(answer(request("config", gw.config.gateway_din), gw))
    config = json.loads(message.message.config.recv.file.text)
    assert message.message.config.recv.file.name == "config.json"
    assert config["vin"] == gw.config.gateway_din
    assert [b["vin"] for b in config["battery_blocks"]] == [pw.din for pw in gw.config.powerwalls]
    assert {b["type"] for b in config["battery_blocks"]} == {"Powerwall3"}
    assert config["site_info"]["site_name"] == "Test Home"
    assert config["default_real_mode"] == gw.state.real_mode


def test_firmware_reads_back_through_pypowerwalls_system_info() -> None:
    gw = gateway("pw2", firmware="24.44.1")
    info = SystemInfo.from_proto(
        reply(answer(request("firmware", gw.config.gateway_din), gw)).message, V2024_SYS_SCHEMA
    )
    assert info.version == home.full_version("24.44.1")
    assert info.githash == home.git_hash("24.44.1")
    assert info.din == gw.config.gateway_din


def test_basic_query_has_the_flows_and_energies_and_no_components() -> None:
    gw = gateway("pw2", powerwalls=2)
    status = query(gw, "device_controller_basic")
    flows = {m["location"]: m["realPowerW"] for m in status["control"]["meterAggregates"]}
    assert flows == {
        "SITE": gw.state.site_power_w,
        "BATTERY": gw.state.battery_power_w,
        "LOAD": gw.state.load_power_w,
        "SOLAR": gw.state.solar_power_w,
    }
    system = status["control"]["systemStatus"]
    assert system["nominalEnergyRemainingWh"] / system["nominalFullPackEnergyWh"] * 100 == pytest.approx(
        gw.state.battery_percentage
    )
    assert "components" not in status


def test_full_query_carries_every_key_pypowerwall_indexes_directly() -> None:
    gw = gateway("pw2", powerwalls=2)
    status = query(gw, "device_controller_full")
    for pvac in status["esCan"]["bus"]["PVAC"]:
        assert pvac["packageSerialNumber"]
        for name in ("PVCurrent", "PVMeasuredVoltage"):
            for letter in "ABCD":
                assert isinstance(pvac["PVAC_Logging"][f"PVAC_{name}_{letter}"], float)
    temps = {c["serialNumber"]: c["signals"][0]["value"] for c in status["components"]["msa"]}
    for serial, reading in gw.state.powerwalls:
        assert temps[serial] == reading.temperature_c


def test_components_query_answers_for_the_powerwall_3_it_is_addressed_to() -> None:
    gw = gateway("pw3", powerwalls=2, firmware="25.42.2")
    follower = gw.config.powerwalls[1]
    body = answer(request("components", follower.din), gw)
    assert body[:2] == b"\x1f\x8b"
    components = json.loads(reply(body).message.payload.recv.text)["components"]
    assert components["hvp"][0]["serialNumber"] == follower.serial
    signals = {s["name"]: s for s in components["pch"][0]["signals"]}
    assert {f"PCH_PvVoltage{letter}" for letter in "ABCDEF"} <= set(signals)
    for signal in signals.values():
        assert {"value", "textValue", "boolValue"} <= set(signal)
    energy = {s["name"]: s["value"] for s in components["bms"][0]["signals"]}
    assert energy["BMS_nominalFullPackEnergy"] == follower.full_pack_wh / 1000.0


def test_a_body_that_is_not_a_tedapi_message_is_refused_with_a_reason() -> None:
    gw = gateway("pw2")
    with pytest.raises(TedapiRequestError, match="not a TEDAPI protobuf Message"):
        answer(b"\xff\xff\xff", gw)
    with pytest.raises(TedapiRequestError, match="no config, firmware or query"):
        answer(tedapi_pb2.Message().SerializeToString(), gw)
