#!/usr/bin/env python3
"""A fleet of three gateways on one etcd, on this machine (release build, loopback only).

(f1) convergence: CHANGES connector changes (a PUT of Voltmart's connector, each on the next
     replica in turn, If-Match the revision it replaces); for each, the time from the PUT's
     2xx (the change accepted) until every replica serves the new version (polled on each
     replica's GET /admin/v1/connectors/voltmart, which answers from its serving set):
     p50, p99 and max, in milliseconds.
(f2) fleet-wide rate limit: Voltmart's connector with `rate_limit_rps: RPS`, with three, then
     two, then one replica (one stopped at a time) under the same load (LOAD_THREADS clients per replica, every
     search a new query, so every one wants a partner call); after WARM_SECONDS of load
     (each replica's bucket starts with its burst), the partner's observed rate of search
     calls over RATE_SECONDS (the simulator's counters) against its limit.

Every loop is bounded (CHANGES changes, RATE_SECONDS per phase) and every process is
stopped at the end. Figures are printed as one JSON object and a table.
"""
import json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading
import time, urllib.error, urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("BENCH_BIN", os.path.join(ROOT, "target", "release"))
CHANGES = int(os.environ.get("CHANGES", "100"))
RPS = float(os.environ.get("RPS", "20"))
RATE_SECONDS = float(os.environ.get("RATE_SECONDS", "10"))
LOAD_THREADS = int(os.environ.get("LOAD_THREADS", "8"))
WARM_SECONDS = float(os.environ.get("WARM_SECONDS", "4"))
TOKEN = "bench-operator-token"
procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, **kw):
    p = subprocess.Popen(args, stdout=kw.pop("stdout", subprocess.DEVNULL),
                         stderr=subprocess.DEVNULL, **kw)
    procs.append(p)
    return p


def request(method, url, body=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_until(check, timeout=60, what="ready"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"not {what} within {timeout} s")


def admin(replica, method, path, body=None, if_match=None):
    headers = {"authorization": f"Bearer {TOKEN}"}
    if if_match:
        headers["if-match"] = if_match
    return request(method, f"http://127.0.0.1:{replica['admin']}{path}", body, headers)


def serving(replica):
    status, _, body = admin(replica, "GET", "/admin/v1/connectors/voltmart")
    return json.loads(body)["version"] if status == 200 else None


def metric(replica, name):
    _, _, body = admin(replica, "GET", "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def main():
    tmp = tempfile.mkdtemp(prefix="mallgate-fleet-bench-")
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
    client, peer = free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{client}"
    start(["etcd", "--name", "b", "--data-dir", f"{tmp}/etcd",
           "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
           "--listen-peer-urls", f"http://127.0.0.1:{peer}",
           "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
           "--initial-cluster", f"b=http://127.0.0.1:{peer}", "--log-level", "error"])
    wait_until(lambda: b'"health":"true"' in request("GET", f"{etcd_url}/health")[2], what="etcd")

    sim = start([os.path.join(BIN, "partner-sim"), "--seed", "7", "--base-port", "18000"],
                stdout=subprocess.PIPE)
    line = json.loads(sim.stdout.readline())
    creds, control = line["credentials"], line["control"]
    env = dict(os.environ)
    env.update({
        "MG_TOKEN": TOKEN,
        "VOLTMART_API_KEY": creds["voltmart"]["apiKey"],
        "THREADLINE_TOKEN": creds["threadline"]["access_token"],
        "ACME_ID": creds["acme"]["client_id"], "ACME_SECRET": creds["acme"]["client_secret"],
        "NORTHWIND_PASSWORD": creds["northwind"]["password"],
        "PARCELPOST_USERID": creds["parcelpost"]["USERID"],
        "SWIFT_ID": creds["swiftship"]["client_id"], "SWIFT_SECRET": creds["swiftship"]["client_secret"],
    })
    # The example connectors, Voltmart's with a rate limit for (f2).
    connectors = os.path.join(tmp, "connectors")
    shutil.copytree(os.path.join(ROOT, "connectors", "partners"), connectors)
    voltmart_path = os.path.join(connectors, "voltmart.yaml")
    voltmart = open(voltmart_path).read().replace(
        "  timeout_ms: 600\n", f"  timeout_ms: 600\n  rate_limit_rps: {RPS}\n", 1)
    assert f"rate_limit_rps: {RPS}" in voltmart, "voltmart.yaml's policies moved"
    open(voltmart_path, "w").write(voltmart)

    replicas = []
    for i in range(3):
        r = {"id": f"r{i}", "public": free_port(), "admin": free_port()}
        conf = os.path.join(tmp, f"r{i}.yaml")
        os.makedirs(os.path.join(tmp, f"state-r{i}"))
        with open(conf, "w") as f:
            f.write(f"""listen: 127.0.0.1:{r['public']}
connectors_dir: {connectors}
state_dir: {tmp}/state-r{i}
allow_loopback_partners: true
deadline: {{default_ms: 5000}}
log: {{level: warn}}
admin:
  listen: 127.0.0.1:{r['admin']}
  tokens: [{{role: operator, token: "env:MG_TOKEN"}}]
  canary_promote_after: 1000000
store: {{kind: etcd, endpoints: ["{etcd_url}"], prefix: /bench/, replica_id: r{i}, lease_ttl_s: 3, timeout_ms: 1000}}
partner_secrets:
  voltmart: {{voltmart-api-key: env:VOLTMART_API_KEY}}
  threadline: {{threadline-access-token: env:THREADLINE_TOKEN}}
  acme: {{acme-client-id: env:ACME_ID, acme-client-secret: env:ACME_SECRET}}
  northwind: {{northwind-password: env:NORTHWIND_PASSWORD}}
  parcelpost: {{parcelpost-user-id: env:PARCELPOST_USERID}}
  swiftship: {{swiftship-client-id: env:SWIFT_ID, swiftship-client-secret: env:SWIFT_SECRET}}
""")
        r["conf"], r["env"] = conf, env
        replicas.append(r)

    def launch(r):
        r["proc"] = start([os.path.join(BIN, "mallgate"), "serve", "--config", r["conf"]],
                          env=r["env"])
        wait_until(lambda: request("GET", f"http://127.0.0.1:{r['public']}/readyz")[0] == 200,
                   what=f"{r['id']} ready")

    def counted(live, n):
        return all(metric(r, "mallgate_fleet_replicas") == n for r in live)

    # --- (f2) the partner's rate with one, two, three replicas ---------------------
    def searches():
        total = 0
        for n in (0, 1):
            _, _, body = request("GET", f"{control}/__sim/partners/voltmart/replicas/{n}/counters")
            total += json.loads(body).get("GET /v1/products", 0)
        return total

    def load(live, tag):
        # WARM_SECONDS of load first: each replica's bucket starts full (its burst), and
        # the measured window is the steady state that follows.
        stop = time.monotonic() + WARM_SECONDS + RATE_SECONDS
        sent = [0] * (len(live) * LOAD_THREADS)

        def worker(r, w, slot):
            n = 0
            while time.monotonic() < stop and n < 100_000:
                url = f"http://127.0.0.1:{r['public']}/v1/products?q=cable-{tag}-{w}-{n}"
                try:
                    request("GET", url, timeout=10)
                except OSError:
                    pass
                n += 1
                sent[slot] = n

        threads = [threading.Thread(target=worker, args=(r, w, i * LOAD_THREADS + w))
                   for i, r in enumerate(live) for w in range(LOAD_THREADS)]
        for t in threads:
            t.start()
        time.sleep(WARM_SECONDS)
        before, sent_before, t0 = searches(), sum(sent), time.monotonic()
        time.sleep(RATE_SECONDS)
        calls, secs = searches() - before, time.monotonic() - t0
        offered = sum(sent) - sent_before
        for t in threads:
            t.join()
        return {"replicas": len(live), "frontend_searches": offered, "partner_calls": calls,
                "seconds": round(secs, 2), "partner_rps": round(calls / secs, 2),
                "limit_rps": RPS, "ratio_to_limit": round(calls / secs / RPS, 3)}

    # Three first, then one stopped at a time (SIGTERM): every phase runs on warm
    # processes, and the survivors' shares grow as leases go.
    for r in replicas:
        launch(r)
    rates = []
    for n in (3, 2, 1):
        live = replicas[:n]
        for gone in replicas[n:]:
            if gone["proc"].poll() is None:
                gone["proc"].send_signal(signal.SIGTERM)
                gone["proc"].wait(timeout=60)
        wait_until(lambda: counted(live, n), what=f"{n} replicas counted")
        rates.append(load(live, f"n{n}"))
        print(f"(f2) {n} replica(s): {rates[-1]}", file=sys.stderr)
    rates.reverse()
    # The convergence runs on three again.
    for r in replicas[1:]:
        launch(r)
    wait_until(lambda: counted(replicas, 3), what="3 replicas counted")

    # --- (f1) convergence over CHANGES changes ---------------------------------------
    base = open(voltmart_path).read()
    version = serving(replicas[0])
    wait_until(lambda: all(serving(r) == version for r in replicas), what="one version")
    times = []
    for i in range(CHANGES):
        writer = replicas[i % 3]
        doc = f"{base}\n# change {i}\n".encode()
        status, headers, body = admin(writer, "PUT", "/admin/v1/connectors/voltmart", doc,
                                      f'"voltmart-v{version}"')
        accepted = time.monotonic()
        if status not in (200, 201):
            raise SystemExit(f"change {i} on {writer['id']}: {status} {body[:300]!r}")
        version = json.loads(body)["version"]
        pending = set(range(3))
        deadline = accepted + 30
        while pending and time.monotonic() < deadline:
            for k in list(pending):
                if serving(replicas[k]) == version:
                    pending.discard(k)
            if pending:
                time.sleep(0.002)
        if pending:
            raise SystemExit(f"change {i}: replicas {sorted(pending)} not at v{version} in 30 s")
        times.append((time.monotonic() - accepted) * 1000)
    times.sort()
    pct = lambda p: round(times[min(len(times) - 1, int(p / 100 * len(times)))], 1)
    convergence = {"changes": CHANGES, "p50_ms": pct(50), "p99_ms": pct(99),
                   "max_ms": round(times[-1], 1), "mean_ms": round(statistics.mean(times), 1)}

    print(json.dumps({"convergence": convergence, "rates": rates}, indent=2))
    print(f"\n(f1) convergence over {CHANGES} changes, 3 replicas: p50 {convergence['p50_ms']} ms, "
          f"p99 {convergence['p99_ms']} ms, max {convergence['max_ms']} ms")
    print("(f2) replicas  partner calls/s  limit  ratio")
    for r in rates:
        print(f"     {r['replicas']:>8}  {r['partner_rps']:>15}  {r['limit_rps']:>5}  {r['ratio_to_limit']:>5}")


if __name__ == "__main__":
    main()
