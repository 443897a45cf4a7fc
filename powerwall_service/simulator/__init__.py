"""The simulated Powerwall gateway: `powerwall-influx simulate` (see README, "The simulated gateway")."""
