#!/usr/bin/env python3
"""Mallgate vs nginx on this machine, in one run. Core 0: wrk and the upstreams
(simulators, static files); core 1: the system under test (the gateway with one worker
thread, or nginx with one worker). CPU is read from /proc/<pid>/stat; every figure is the
median of ROUNDS rounds, and each gateway round is followed by the matching nginx round.

(a) cached search: GET /v1/products?q=headphones (a warm window) vs an nginx proxy_cache
    hit of a body of the same size: requests/s ratio.
(b) uncached fan-out: FANOUT connectors (four partners) with a pass-through mapping (`.`),
    every request a new query (a cache miss: one call to each partner, their answers merged
    by GTIN), vs nginx proxy_pass to the same static upstream: CPU microseconds per partner
    call (the gateway's CPU per request / FANOUT), ratio. Also reported: the same with one
    connector, where the whole request (listener, merge, window, answer) is charged to its
    single partner call.
    (b-jq) the same four connectors with a jq map (`. as $r | $r`, the same records) run
    in process on the gateway's mapping threads (operator-owned, trusted).
    (b-partner) the same jq map run out of process, as every partner-owned program runs:
    in sandbox worker processes (`sandbox.operator_in_process: false` takes the partner
    path for these operator files); the workers' CPU is counted with the gateway's. A
    partner-owned pass-through (`map: .`) is read by the gateway's own code and costs (b).
(b-tls) the pass-through fan-out with the upstream on HTTPS (nginx serving the same files
    with a certificate from a CA the simulator generates; HTTP/1.1 keep-alive, as nginx's
    upstream side speaks it), each connector trusting the CA through `tls.ca`, vs nginx
    proxy_pass to the same HTTPS upstream (verifying it, sessions reused, keep-alive).
(c) mapping cost per record: the mapping bench (jq in process, jq in a sandbox worker,
    hand-written), same run.
(d) p50/p99 latency of the gateway in (a) and (b), from wrk --latency.
Every server gets one unmeasured round of load before its measured rounds; WARM_SECONDS=N
(default 0) adds N seconds of load on the same server right before each measured round.

PERF_DIR=DIR also records a CPU profile of the gateway in (a) and in (b) (perf with DWARF
call graphs, one wrk round each after the warm-up): DIR/perf-a.data, DIR/perf-b.data, read
with `perf report -i DIR/perf-b.data --no-children`.
"""
import json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time, urllib.request

ROUNDS = int(os.environ.get("ROUNDS", "5"))
SECONDS = int(os.environ.get("SECONDS_PER_ROUND", "5"))
CONNS = int(os.environ.get("CONNECTIONS", "32"))
FANOUT_PARTNERS = ["voltmart", "threadline", "acme", "northwind"]
FANOUT = len(FANOUT_PARTNERS)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# BENCH_BIN and SKIP_MAPPING=1 are for a quick check of this script (a debug build, no (c)).
BIN = os.environ.get("BENCH_BIN", os.path.join(ROOT, "target", "release"))
TICK = os.sysconf("SC_CLK_TCK")
procs = []


def start(args, cpu, **kw):
    # The gateway's stdout is its log (JSON lines at the defaults: an access line per
    # request), written to /dev/null as to a file; other servers print what is read.
    out = subprocess.DEVNULL if os.path.basename(args[0]) == "mallgate" else subprocess.PIPE
    p = subprocess.Popen(["taskset", "-c", str(cpu)] + args, stdout=out,
                         stderr=subprocess.DEVNULL, **kw)
    procs.append(p)
    return p


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            # nginx's cache loader exits a minute after the start: it is done, not lost.
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def wait_ok(url, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return r.read()
        except Exception:
            time.sleep(0.2)
    sys.exit(f"{url} did not answer 200")


def wrk(url, script=None):
    args = ["taskset", "-c", "0", "wrk", "-t1", f"-c{CONNS}", f"-d{SECONDS}s", "--latency", url]
    if script:
        args[5:5] = ["-s", script]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
    return {"rps": rps, "requests": total, "p50": pct(50), "p99": pct(99),
            "errors": int(non2xx.group(1)) if non2xx else 0}


def profile(name, url, pid, script=None):
    """With PERF_DIR set: a perf profile of `pid` during one wrk round on `url`."""
    out = os.environ.get("PERF_DIR")
    if not out:
        return
    os.makedirs(out, exist_ok=True)
    perf = subprocess.Popen(["perf", "record", "-F", "1999", "-g", "--call-graph", "dwarf,16384",
                             "-p", str(pid), "-o", os.path.join(out, f"perf-{name}.data")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    wrk(url, script)
    perf.send_signal(signal.SIGINT)
    perf.wait(timeout=120)


def measure(url, pids, script=None):
    # Load just before the measured round, on the same server: a server measured right
    # after idling (while the others ran) pays for memory its allocator returned to the
    # system meanwhile and for cold caches, which a server under steady load does not.
    warm = int(os.environ.get("WARM_SECONDS", "0"))
    if warm > 0:
        subprocess.run(["taskset", "-c", "0", "wrk", "-t1", f"-c{CONNS}", f"-d{warm}s", url]
                       + (["-s", script] if script else []), capture_output=True, check=True)
    before = cpu_seconds(pids)
    r = wrk(url, script)
    r["cpu_us_per_req"] = (cpu_seconds(pids) - before) * 1e6 / max(r["requests"], 1)
    return r


def nginx(conf_text, cpu, tmp, name):
    conf = os.path.join(tmp, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    p = start(["nginx", "-c", conf, "-p", tmp, "-g", "daemon off;"], cpu)
    time.sleep(0.5)
    return p


def main():
    tmp = tempfile.mkdtemp(prefix="mallgate-bench-")
    os.chmod(tmp, 0o755)  # nginx workers run as an unprivileged user and read files here
    os.makedirs(os.path.join(tmp, "logs"), exist_ok=True)
    try:
        run(tmp)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp):
    common = f"""worker_processes 1; error_log {tmp}/logs/error.log; pid {tmp}/{{name}}.pid;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {tmp}/cb; proxy_temp_path {tmp}/pt;
fastcgi_temp_path {tmp}/ft; uwsgi_temp_path {tmp}/ut; scgi_temp_path {tmp}/st;
keepalive_requests 1000000;
"""
    # --- (a) cached search -------------------------------------------------------
    sim = start([os.path.join(BIN, "partner-sim"), "--seed", "7", "--base-port", "18000"], 0)
    creds = json.loads(sim.stdout.readline())["credentials"]
    env = dict(os.environ)
    env.update({
        "VOLTMART_API_KEY": creds["voltmart"]["apiKey"],
        "THREADLINE_TOKEN": creds["threadline"]["access_token"],
        "ACME_ID": creds["acme"]["client_id"], "ACME_SECRET": creds["acme"]["client_secret"],
        "NORTHWIND_PASSWORD": creds["northwind"]["password"],
        "PARCELPOST_USERID": creds["parcelpost"]["USERID"],
        "SWIFT_ID": creds["swiftship"]["client_id"], "SWIFT_SECRET": creds["swiftship"]["client_secret"],
    })
    gw_conf = os.path.join(tmp, "gateway.yaml")
    with open(gw_conf, "w") as f:
        f.write(f"""listen: 127.0.0.1:18080
threads: 1
mapping_threads: 1
connectors_dir: {ROOT}/connectors/partners
allow_loopback_partners: true
deadline: {{default_ms: 5000}}
partner_secrets:
  voltmart: {{voltmart-api-key: env:VOLTMART_API_KEY}}
  threadline: {{threadline-access-token: env:THREADLINE_TOKEN}}
  acme: {{acme-client-id: env:ACME_ID, acme-client-secret: env:ACME_SECRET}}
  northwind: {{northwind-password: env:NORTHWIND_PASSWORD}}
  parcelpost: {{parcelpost-user-id: env:PARCELPOST_USERID}}
  swiftship: {{swiftship-client-id: env:SWIFT_ID, swiftship-client-secret: env:SWIFT_SECRET}}
""")
    gw = start([os.path.join(BIN, "mallgate"), "serve", "--config", gw_conf], 1, env=env)
    wait_ok("http://127.0.0.1:18080/readyz")
    search = "http://127.0.0.1:18080/v1/products?q=headphones&limit=20"
    body = wait_ok(search)
    size = len(body)
    with open(os.path.join(tmp, "page.json"), "wb") as f:
        f.write(body)
    nginx(common.replace("{name}", "cache") + f"""
proxy_cache_path {tmp}/cache levels=1:2 keys_zone=c:10m max_size=100m inactive=60m;
server {{ listen 127.0.0.1:18091; location / {{ root {tmp}; default_type application/json; }} }}
server {{ listen 127.0.0.1:18090; location / {{ proxy_pass http://127.0.0.1:18091; proxy_cache c;
  proxy_cache_valid 200 60m; proxy_cache_key $request_uri; }} }} }}
""", 1, tmp, "cache")
    wait_ok("http://127.0.0.1:18090/page.json")
    wait_ok("http://127.0.0.1:18090/page.json")
    nginx_cache_pids = [int(open(f"{tmp}/cache.pid").read())]
    nginx_cache_pids += children(nginx_cache_pids[0])

    # One unmeasured round each first: a fresh process's first seconds under load cost up
    # to twice its steady CPU per request (allocator pools, caches, connection pools).
    wrk(search)
    wrk("http://127.0.0.1:18090/page.json")
    profile("a", search, gw.pid)
    a_gw, a_ng = [], []
    for _ in range(ROUNDS):
        wait_ok(search)  # keep the window fresh (TTL 60 s)
        a_gw.append(measure(search, [gw.pid]))
        a_ng.append(measure("http://127.0.0.1:18090/page.json", nginx_cache_pids))

    # --- (b) uncached fan-out, pass-through mapping --------------------------------
    # Each partner sells the same product (one GTIN) with its own offer: the gateway merges
    # the four answers into one product with four offers.
    product = json.loads(body)["data"][0]
    product["variants"] = product["variants"][:1]
    offer = product["variants"][0]["offers"][0]
    for partner in FANOUT_PARTNERS:
        offer.update({"offer_id": f"{partner}:{offer['provenance']['source_ref']}",
                      "seller": {"id": partner, "name": partner.title()}})
        offer["provenance"].update({"partner_id": partner, "connector_id": f"pt-{partner}",
                                    "connector_version": 1})
        product["variants"][0]["offers"] = [offer]
        product["provenance"].update(offer["provenance"])
        with open(os.path.join(tmp, f"passthrough-{partner}.json"), "w") as f:
            json.dump({"products": [product]}, f)
    passthrough = """id: pt-{partner}
partner: {partner}
kind: retailer
endpoints:
  - url: http://127.0.0.1:18092
capabilities:
  catalog.search:
    request:
      path: /passthrough-{partner}.json
      query:
        q: "{q}"
    records: .products[]
    supports: [q]
    map: .
"""
    jq_map = passthrough.replace("map: .\n", "map: '. as $r | $r'\n")
    # The HTTPS upstream's certificates, from the simulator's CA (a short-lived instance).
    tls_dir = os.path.join(tmp, "tls")
    pki = start([os.path.join(BIN, "partner-sim"), "--seed", "7", "--base-port", "19000",
                 "--tls", tls_dir], 0)
    pki.stdout.readline()
    pki.send_signal(signal.SIGTERM)
    pki.wait(timeout=10)
    os.chmod(tls_dir, 0o755)
    tls_map = passthrough.replace("http://127.0.0.1:18092", "https://127.0.0.1:18094").replace(
        "capabilities:\n", f"tls:\n  ca: file:{tls_dir}/ca.pem\ncapabilities:\n")
    for name, partners, template in (("pt-one", FANOUT_PARTNERS[:1], passthrough),
                                     ("pt-fanout", FANOUT_PARTNERS, passthrough),
                                     ("jq-fanout", FANOUT_PARTNERS, jq_map),
                                     ("tls-fanout", FANOUT_PARTNERS, tls_map)):
        os.makedirs(os.path.join(tmp, name), exist_ok=True)
        for partner in partners:
            with open(os.path.join(tmp, name, f"{partner}.yaml"), "w") as f:
                f.write(template.replace("{partner}", partner))
    nginx(common.replace("{name}", "static") + f"""
server {{ listen 127.0.0.1:18092; location / {{ root {tmp}; default_type application/json; }} }}
server {{ listen 127.0.0.1:18096; location /v1/traces {{ return 200; }} }}
server {{ listen 127.0.0.1:18094 ssl; ssl_certificate {tls_dir}/server.pem;
  ssl_certificate_key {tls_dir}/server-key.pem; keepalive_requests 1000000;
  location / {{ root {tmp}; default_type application/json; }} }} }}
""", 0, tmp, "static")
    nginx(common.replace("{name}", "proxy") + """
upstream u { server 127.0.0.1:18092; keepalive 64; }
server { listen 127.0.0.1:18093; location / { proxy_pass http://u; proxy_http_version 1.1;
  proxy_set_header Connection ""; } } }
""", 1, tmp, "proxy")
    nginx_proxy_pids = [int(open(f"{tmp}/proxy.pid").read())]
    nginx_proxy_pids += children(nginx_proxy_pids[0])
    nginx(common.replace("{name}", "tlsproxy") + f"""
upstream ut {{ server 127.0.0.1:18094; keepalive 64; }}
server {{ listen 127.0.0.1:18095; location / {{ proxy_pass https://ut; proxy_http_version 1.1;
  proxy_set_header Connection ""; proxy_ssl_trusted_certificate {tls_dir}/ca.pem;
  proxy_ssl_verify on; proxy_ssl_name localhost; proxy_ssl_server_name on;
  proxy_ssl_session_reuse on; }} }} }}
""", 1, tmp, "tlsproxy")
    nginx_tls_pids = [int(open(f"{tmp}/tlsproxy.pid").read())]
    nginx_tls_pids += children(nginx_tls_pids[0])
    def passthrough_gateway(port, connectors, isolated=False, extra=""):
        conf = os.path.join(tmp, f"{connectors}-{port}.yaml")
        with open(conf, "w") as f:
            f.write(f"""listen: 127.0.0.1:{port}
threads: 1
mapping_threads: 1
connectors_dir: {tmp}/{connectors}
allow_loopback_partners: true
deadline: {{default_ms: 5000}}
sandbox: {{workers: 2, operator_in_process: {str(not isolated).lower()}}}
{extra}""")
        gw = start([os.path.join(BIN, "mallgate"), "serve", "--config", conf], 1)
        wait_ok(f"http://127.0.0.1:{port}/readyz")
        return gw
    pt = passthrough_gateway(18081, "pt-fanout")
    one = passthrough_gateway(18082, "pt-one")
    jq = passthrough_gateway(18083, "jq-fanout")
    iso = passthrough_gateway(18084, "jq-fanout", isolated=True)
    tls = passthrough_gateway(18085, "tls-fanout")
    # (b) with every request traced, spans exported over OTLP/HTTP to nginx answering 200.
    traced = passthrough_gateway(18086, "pt-fanout",
                                 extra="traces: {endpoint: http://127.0.0.1:18096, sampling_ratio: 1.0}\n")
    wait_ok(f"http://127.0.0.1:18095/passthrough-{FANOUT_PARTNERS[0]}.json")
    for port in (18081, 18083, 18084, 18085, 18086):
        answer = json.loads(wait_ok(f"http://127.0.0.1:{port}/v1/products?q=check"))
        live = [s["outcome"] for s in answer["sources"]]
        offers = [o for v in answer["data"][0]["variants"] for o in v["offers"]] if answer["data"] else []
        if live != ["live"] * FANOUT or len(answer["data"]) != 1 or len(offers) != FANOUT:
            sys.exit(f"the fan-out gateway on {port} gave sources {live} and {len(offers)} offers, "
                     f"not {FANOUT} live partners merged into one product")
    # The sandbox workers started on the first call: their CPU counts as the gateway's.
    iso_pids = [iso.pid] + children(iso.pid)
    if len(iso_pids) < 2:
        sys.exit("the isolated gateway started no sandbox worker")
    script = os.path.join(tmp, "unique.lua")
    with open(script, "w") as f:
        f.write('counter = 0\nrequest = function()\n  counter = counter + 1\n'
                '  return wrk.format("GET", "/v1/products?q=u" .. counter .. "x" .. math.random(1, 1000000000))\nend\n')
    for url in ("http://127.0.0.1:18081", "http://127.0.0.1:18083", "http://127.0.0.1:18084",
                "http://127.0.0.1:18082", "http://127.0.0.1:18085", "http://127.0.0.1:18086"):
        wrk(url, script)
    wrk(f"http://127.0.0.1:18093/passthrough-{FANOUT_PARTNERS[0]}.json")
    wrk(f"http://127.0.0.1:18095/passthrough-{FANOUT_PARTNERS[0]}.json")
    profile("b", "http://127.0.0.1:18081", pt.pid, script)
    b_gw, b_one, b_ng, b_jq, b_iso, b_tls, b_ngtls, b_tr = [], [], [], [], [], [], [], []
    for _ in range(ROUNDS):
        b_gw.append(measure("http://127.0.0.1:18081", [pt.pid], script))
        b_gw[-1]["cpu_us_per_call"] = b_gw[-1]["cpu_us_per_req"] / FANOUT
        b_jq.append(measure("http://127.0.0.1:18083", [jq.pid], script))
        b_jq[-1]["cpu_us_per_call"] = b_jq[-1]["cpu_us_per_req"] / FANOUT
        b_iso.append(measure("http://127.0.0.1:18084", [iso.pid] + children(iso.pid), script))
        b_iso[-1]["cpu_us_per_call"] = b_iso[-1]["cpu_us_per_req"] / FANOUT
        b_one.append(measure("http://127.0.0.1:18082", [one.pid], script))
        b_ng.append(measure(f"http://127.0.0.1:18093/passthrough-{FANOUT_PARTNERS[0]}.json", nginx_proxy_pids))
        b_tls.append(measure("http://127.0.0.1:18085", [tls.pid], script))
        b_tls[-1]["cpu_us_per_call"] = b_tls[-1]["cpu_us_per_req"] / FANOUT
        b_ngtls.append(measure(f"http://127.0.0.1:18095/passthrough-{FANOUT_PARTNERS[0]}.json", nginx_tls_pids))
        b_tr.append(measure("http://127.0.0.1:18086", [traced.pid], script))

    # --- (c) mapping cost per record (the connectors crate's bench) ------------------
    mapping = "(skipped)" if os.environ.get("SKIP_MAPPING") == "1" else subprocess.run(
        ["taskset", "-c", "1", "cargo", "bench", "-q", "-p", "mallgate-connectors", "--bench", "mapping"],
        cwd=ROOT, capture_output=True, text=True).stdout

    med = lambda rs, k: statistics.median(r[k] for r in rs)
    rows = [
        ("(a) cached search, req/s", med(a_gw, "rps"), med(a_ng, "rps"),
         f"{med(a_gw, 'rps') / med(a_ng, 'rps'):.2f}x nginx (target >= 1.0x)"),
        ("(a) CPU us/request", med(a_gw, "cpu_us_per_req"), med(a_ng, "cpu_us_per_req"), ""),
        (f"(b) uncached fan-out to {FANOUT} partners, CPU us per partner call", med(b_gw, "cpu_us_per_call"),
         med(b_ng, "cpu_us_per_req"),
         f"{med(b_gw, 'cpu_us_per_call') / med(b_ng, 'cpu_us_per_req'):.2f}x nginx (target <= 2.0x)"),
        (f"(b) fan-out requests/s ({FANOUT} partner calls each)", med(b_gw, "rps"), med(b_ng, "rps"), ""),
        ("(b-jq) the fan-out with a jq map in process, CPU us per partner call", med(b_jq, "cpu_us_per_call"),
         med(b_ng, "cpu_us_per_req"), f"{med(b_jq, 'cpu_us_per_call') / med(b_ng, 'cpu_us_per_req'):.2f}x nginx"),
        ("(b-partner) the jq map in sandbox workers, CPU us per partner call (workers included)",
         med(b_iso, "cpu_us_per_call"), med(b_ng, "cpu_us_per_req"),
         f"{med(b_iso, 'cpu_us_per_call') / med(b_ng, 'cpu_us_per_req'):.2f}x nginx (target <= 2.5x)"),
        ("(b-partner) requests/s", med(b_iso, "rps"), med(b_ng, "rps"), ""),
        ("(b-tls) the fan-out to an HTTPS upstream, CPU us per partner call", med(b_tls, "cpu_us_per_call"),
         med(b_ngtls, "cpu_us_per_req"),
         f"{med(b_tls, 'cpu_us_per_call') / med(b_ngtls, 'cpu_us_per_req'):.2f}x nginx over HTTPS"),
        ("(b-tls) requests/s", med(b_tls, "rps"), med(b_ngtls, "rps"), ""),
        ("(b-traced) the fan-out, every request traced (OTLP), CPU us per request",
         med(b_tr, "cpu_us_per_req"), med(b_gw, "cpu_us_per_req"),
         f"+{med(b_tr, 'cpu_us_per_req') - med(b_gw, 'cpu_us_per_req'):.1f} us per traced request "
         f"(against (b) untraced, in the nginx column)"),
        ("(b) one connector, CPU us per request (= per partner call)", med(b_one, "cpu_us_per_req"),
         med(b_ng, "cpu_us_per_req"), f"{med(b_one, 'cpu_us_per_req') / med(b_ng, 'cpu_us_per_req'):.2f}x nginx"),
        ("(d) p50 ms, cached / uncached fan-out", f"{med(a_gw, 'p50'):.2f} / {med(b_gw, 'p50'):.2f}",
         f"{med(a_ng, 'p50'):.2f} / {med(b_ng, 'p50'):.2f}", ""),
        ("(d) p99 ms, cached / uncached fan-out", f"{med(a_gw, 'p99'):.2f} / {med(b_gw, 'p99'):.2f}",
         f"{med(a_ng, 'p99'):.2f} / {med(b_ng, 'p99'):.2f}", ""),
    ]
    errors = sum(r["errors"] for r in a_gw + b_gw + b_one + b_jq + b_iso + b_tls + b_tr)
    print(f"\nbody of (a): {size} bytes; {ROUNDS} rounds of {SECONDS} s, {CONNS} connections, "
          f"wrk on core 0, system under test on core 1; non-2xx answers from the gateway: {errors}\n")
    print("| measure | mallgate | nginx | ratio |")
    print("|---|---|---|---|")
    for name, g, n, ratio in rows:
        fmt = lambda v: f"{v:,.1f}" if isinstance(v, float) else str(v)
        print(f"| {name} | {fmt(g)} | {fmt(n)} | {ratio} |")
    print("\n(c) mapping cost per record:\n" + mapping)


if __name__ == "__main__":
    main()
