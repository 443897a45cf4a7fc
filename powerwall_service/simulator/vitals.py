"""`/api/devices/vitals` for firmware before 23.44: a `teslapower.DevicesWithVitals` protobuf.

Built with pypowerwall's own `tesla_pb2`, device names and signal names as a real pw2 gateway
sends them, so pypowerwall's `vitals()`, `strings()`, `temps()`, `alerts()` and the
temperatures in `battery_blocks()` read the simulated home.
"""

from __future__ import annotations

from typing import Any

import pypowerwall.local.tesla_pb2 as tesla_pb2

from powerwall_service.simulator.home import HomeState, is_system_alert
from powerwall_service.simulator.simulation import Simulation

_ECU_PVAC = 296
_ECU_PVS = 297
_ECU_THC = 224
_ECU_POD = 226
_ECU_PINV = 253


def _device(
    devices: Any,
    din: str,
    part: str | None,
    serial: str | None,
    signals: dict[str, float | int | str | bool],
    alerts: tuple[str, ...] = (),
    ecu_type: int | None = None,
    parent: str | None = None,
    firmware: str | None = None,
) -> None:
    entry = devices.add()
    device = entry.device.device
    device.din.value = din
    if part is not None:
        device.partNumber.value = part
    if serial is not None:
        device.serialNumber.value = serial
    device.manufacturer.value = "TESLA"
    if parent is not None:
        device.componentParentDin.value = parent
    if firmware is not None:
        device.firmwareVersion.value = firmware
    if ecu_type is not None:
        device.deviceAttributes.teslaEnergyEcuAttributes.ecuType = ecu_type
    for name, value in signals.items():
        vital = entry.vitals.add()
        vital.name = name
        if isinstance(value, bool):
            vital.boolValue = value
        elif isinstance(value, int):
            vital.intValue = value
        elif isinstance(value, float):
            vital.floatValue = value
        else:
            vital.stringValue = value
    entry.alerts.extend(alerts)


def devices_with_vitals(sim: Simulation, state: HomeState) -> bytes:
    config = sim.config
    message: Any = tesla_pb2.DevicesWithVitals()
    devices = message.devices
    gateway = f"STSTSM--{config.gateway_part_number}--{config.gateway_serial}"
    _device(
        devices,
        gateway,
        config.gateway_part_number,
        config.gateway_serial,
        {"STSTSM-Location": "Gateway", "STSTSM-ScaledFrequency": state.site.frequency_hz},
        alerts=state.alerts,
        firmware=sim.version,
    )
    readings = dict(state.powerwalls)
    for spec in config.powerwalls:
        pw = readings[spec.serial]
        _device(
            devices,
            f"TETHC--{spec.part_number}--{spec.serial}",
            spec.part_number,
            spec.serial,
            {"THC_State": pw.state, "THC_AmbientTemp": pw.temperature_c},
            ecu_type=_ECU_THC,
            parent=gateway,
        )
        _device(
            devices,
            f"TEPOD--{spec.part_number}--{spec.serial}",
            spec.part_number,
            spec.serial,
            {
                "POD_nom_energy_remaining": pw.energy_remaining_wh,
                "POD_nom_full_pack_energy": pw.full_pack_wh,
                "POD_nom_energy_to_be_charged": pw.full_pack_wh - pw.energy_remaining_wh,
                "POD_ActiveHeating": False,
                "POD_state": "POD_ACTIVE",
            },
            ecu_type=_ECU_POD,
            parent=f"TETHC--{spec.part_number}--{spec.serial}",
        )
        _device(
            devices,
            f"TEPINV--{spec.part_number}--{spec.serial}",
            spec.part_number,
            spec.serial,
            {
                "PINV_Pout": pw.power_w / 1000.0,
                "PINV_Vout": state.battery.voltage_v,
                "PINV_Fout": state.battery.frequency_hz,
                "PINV_State": "PINV_GridFollowing" if not state.islanded else "PINV_GridForming",
            },
            ecu_type=_ECU_PINV,
            parent=f"TETHC--{spec.part_number}--{spec.serial}",
        )
    strings = dict(state.strings)
    solar_alerts = tuple(a for a in state.alerts if not is_system_alert(a))
    for inverter in config.inverters:
        pvac: dict[str, float | int | str | bool] = {
            "PVAC_State": "PVAC_Active" if state.solar_power_w > 0 else "PVAC_Standby",
            "PVAC_Pout": sum(strings[s.name].power_w for s in inverter.strings),
            "PVAC_Vout": state.solar.voltage_v,
            "PVAC_Fout": state.solar.frequency_hz,
        }
        pvs: dict[str, float | int | str | bool] = {
            "PVS_State": "PVS_Active",
            "PVS_vLL": state.solar.voltage_v,
        }
        for spec_string in inverter.strings:
            reading = strings[spec_string.name]
            letter = spec_string.name[0]
            pvac[f"PVAC_PVCurrent_{letter}"] = reading.current_a
            pvac[f"PVAC_PVMeasuredVoltage_{letter}"] = reading.voltage_v
            pvac[f"PVAC_PVMeasuredPower_{letter}"] = reading.power_w
            pvac[f"PVAC_PvState_{letter}"] = reading.state
            pvs[f"PVS_String{letter}_Connected"] = reading.connected
        name = f"{inverter.part_number}--{inverter.serial}"
        _device(
            devices, f"PVAC--{name}", inverter.part_number, inverter.serial, pvac, solar_alerts, _ECU_PVAC
        )
        _device(devices, f"PVS--{name}", inverter.part_number, inverter.serial, pvs, (), _ECU_PVS)
    _device(
        devices,
        f"TESYNC--{config.gateway_part_number}--{config.gateway_serial}",
        config.gateway_part_number,
        config.gateway_serial,
        {
            "ISLAND_FreqL1_Main": state.site.frequency_hz,
            "ISLAND_VL1N_Main": state.site.voltage_v / 2.0,
            "ISLAND_FreqL1_Load": state.load.frequency_hz,
            "ISLAND_VL1N_Load": state.load.voltage_v / 2.0,
            "ISLAND_GridConnected": not state.islanded,
            "METER_X_CTA_InstRealPower": state.site_power_w,
        },
    )
    return bytes(message.SerializeToString())
