def test_quick(simulator, tmp_path, monkeypatch):
    import pypowerwall
    sim = simulator(flavour="pw2", firmware="23.28.2")
    t = sim.state()
    pw = pypowerwall.Powerwall(host=sim.host, password=sim.customer_password, cachefile=str(tmp_path/"c"), failover=False, timezone="America/Los_Angeles")
    assert pw.power() == {"site": t["site_power_w"], "solar": t["solar_power_w"], "battery": t["battery_power_w"], "load": t["load_power_w"]}
    assert pw.level() == t["battery_percentage"]
    print(pw.strings(), pw.temps(), pw.alerts(), pw.battery_blocks(), pw.version(), pw.din())

def test_tedapi(simulator, tmp_path, monkeypatch):
    import pypowerwall
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    sim = simulator(flavour="pw3")
    t = sim.state()
    pw = pypowerwall.Powerwall(host=sim.host, password="", gw_pwd=sim.gateway_password, cachefile=str(tmp_path/"c"), failover=False)
    assert pw.level() == t["battery_percentage"]
    print(pw.power(), pw.strings(), sim.requests())
