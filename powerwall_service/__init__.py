"""powerwall-influx: reads a Tesla Powerwall gateway and keeps every reading."""

__version__ = "0.1.0"
