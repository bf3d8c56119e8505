"""scripts/faults.sh's and scripts/bench.sh fleet's arithmetic: summaries of fault-driver output and
the checks against etcd and the kernel's tables. Reads files, prints JSON; no I/O beyond that.

  faults.py calls FILE                       counts per result code, latency percentiles, ids
  faults.py etcd ETCD_JSON NET               duplicates and orphans among the network's keys
  faults.py peers ETCD_JSON NET NODE FDB NEIGH
                                             a host's FDB and neighbour entries on its VXLAN
                                             devices against those the records call for
  faults.py gaps PING_LOG INTERVAL           lost pings and the longest time without a reply
  faults.py order CALLS PLAN N               latency (p50, mean) and CPU time (mean) of the first
                                             N and the last N calls in the plan's order, last/first
  faults.py convergence CHURN EVENTS HOSTS   per successful churn call (fault-driver churn), the
                                             time from its return until its FDB and neighbour
                                             entries were there (ADD) or gone (DEL) on every
                                             other host (fault-driver watch's events); rates
"""

import base64
import bisect
import json
import statistics
import sys


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    index = max(0, min(len(values) - 1, int(-(-len(values) * p // 1)) - 1))
    return values[index]


def calls(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    by_code = {}
    for r in rows:
        key = "killed" if r.get("killed") else str(r.get("code"))
        by_code[key] = by_code.get(key, 0) + 1
    ms = [r["ms"] for r in rows]
    addresses = [ip.split("/")[0] for r in rows if r.get("code") == 0 for ip in r.get("ips", [])]
    other = [f'{r["id"]}: code {r.get("code")}: {r.get("msg")}' for r in rows
             if r.get("code") not in (0, 11) and not r.get("killed")]
    print(json.dumps({
        "count": len(rows),
        "by_code": by_code,
        "ok": [r["id"] for r in rows if r.get("code") == 0],
        "failed": [r["id"] for r in rows if r.get("code") != 0],
        "killed": [r["id"] for r in rows if r.get("killed")],
        "p50_ms": percentile(ms, 0.5),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms) if ms else 0.0,
        "result_dup_addresses": len(addresses) - len(set(addresses)),
        "other_failures": other[:10],
        "messages_11": sorted({r.get("msg", "")[:160] for r in rows if r.get("code") == 11})[:5],
        "ips": {r["id"]: r.get("ips", []) for r in rows if r.get("code") == 0},
    }))


def etcd_kvs(path):
    """key -> (value, create_revision) from `etcdctl get --prefix -w json`."""
    data = json.load(open(path))
    out = {}
    for kv in data.get("kvs", []) or []:
        key = base64.b64decode(kv["key"]).decode()
        value = base64.b64decode(kv.get("value", "")).decode(errors="replace")
        out[key] = (value, kv.get("create_revision", 0))
    return out


def etcd(path, net):
    kvs = etcd_kvs(path)
    base = "/cni-overlay/"
    owners = {k: json.loads(v) for k, (v, _) in kvs.items()
              if k.startswith(f"{base}ipam/{net}/owners/")}
    endpoints = {k: json.loads(v) for k, (v, _) in kvs.items()
                 if k.startswith(f"{base}endpoints/{net}/")}
    address_keys = [k for k in kvs if k.startswith(f"{base}ipam/{net}/ips/")]
    name_keys = [k for k in kvs if k.startswith(f"{base}ipam/{net}/names/")]
    owner_ips = [ip["address"].split("/")[0] for o in owners.values() for ip in o.get("ips", [])]
    owner_names = [o["name"].lower() for o in owners.values() if o.get("name")]
    endpoint_ips = [ip.split("/")[0] for e in endpoints.values() for ip in e.get("ips", [])]
    owned = {(o["containerId"], o["ifname"]) for o in owners.values()}
    print(json.dumps({
        "owners": len(owners),
        "endpoints": len(endpoints),
        "address_keys": len(address_keys),
        "name_keys": len(name_keys),
        "dup_addresses": len(owner_ips) - len(set(owner_ips)),
        "dup_names": len(owner_names) - len(set(owner_names)),
        "dup_endpoint_addresses": len(endpoint_ips) - len(set(endpoint_ips)),
        # Every address and name key belongs to an owner record, and every endpoint has one.
        "orphan_address_keys": len(address_keys) - len(owner_ips),
        "orphan_name_keys": len(name_keys) - len(owner_names),
        "endpoints_without_allocation": sorted(
            e["containerId"] for e in endpoints.values()
            if (e["containerId"], e["ifname"]) not in owned)[:10],
        "allocations_without_endpoint": sorted(
            o["containerId"] for o in owners.values()
            if (o["containerId"], o["ifname"]) not in
            {(e["containerId"], e["ifname"]) for e in endpoints.values()})[:10],
        "owner_ids": sorted(o["containerId"] for o in owners.values()),
        "endpoint_ids": sorted(e["containerId"] for e in endpoints.values()),
    }))


def peers(path, net, node, fdb_path, neigh_path):
    kvs = etcd_kvs(path)
    want_fdb, want_neigh = set(), set()
    for k, (v, _) in kvs.items():
        if not k.startswith(f"/cni-overlay/endpoints/{net}/"):
            continue
        e = json.loads(v)
        if e["node"] == node:
            continue
        dev = f'ovx{e["vni"]}'
        want_fdb.add((dev, e["mac"].lower(), e["vtep"]))
        for ip in e["ips"]:
            want_neigh.add((dev, ip.split("/")[0], e["mac"].lower()))
    # `bridge -o fdb show` lines: MAC dev DEV dst IP self permanent (only those with a destination
    # and a unicast MAC are ours); `ip -o neigh show` lines: IP dev DEV lladdr MAC PERMANENT.
    have_fdb, have_neigh = set(), set()
    for line in open(fdb_path):
        f = line.split()
        if len(f) > 4 and f[1] == "dev" and f[2].startswith("ovx") and "dst" in f:
            mac = f[0].lower()
            if mac != "00:00:00:00:00:00":
                have_fdb.add((f[2], mac, f[f.index("dst") + 1]))
    for line in open(neigh_path):
        f = line.split()
        if len(f) > 4 and f[1] == "dev" and f[2].startswith("ovx") and "PERMANENT" in f:
            have_neigh.add((f[2], f[0], f[f.index("lladdr") + 1].lower()))
    print(json.dumps({
        "desired_fdb": len(want_fdb), "desired_neigh": len(want_neigh),
        "missing_fdb": sorted(" ".join(x) for x in want_fdb - have_fdb)[:5],
        "extra_fdb": sorted(" ".join(x) for x in have_fdb - want_fdb)[:5],
        "missing_neigh": sorted(" ".join(x) for x in want_neigh - have_neigh)[:5],
        "extra_neigh": sorted(" ".join(x) for x in have_neigh - want_neigh)[:5],
        "n_missing": len(want_fdb - have_fdb) + len(want_neigh - have_neigh),
        "n_extra": len(have_fdb - want_fdb) + len(have_neigh - want_neigh),
    }))


def gaps(path, interval):
    """`ping -D -i INTERVAL` output: replies' timestamps and sequence numbers."""
    stamps, seqs = [], []
    sent = 0
    for line in open(path):
        if "bytes from" in line and line.startswith("["):
            stamps.append(float(line[1:line.index("]")]))
            seqs.append(int(line.split("icmp_seq=")[1].split()[0]))
        if "packets transmitted" in line:
            sent = int(line.split()[0])
    sent = sent or (max(seqs) if seqs else 0)
    longest = max((b - a for a, b in zip(stamps, stamps[1:])), default=float("inf"))
    print(json.dumps({"sent": sent, "received": len(stamps), "lost": sent - len(stamps),
                      "longest_gap_s": round(longest, 3),
                      "span_s": round(stamps[-1] - stamps[0], 1) if stamps else 0}))


def order(calls_path, plan_path, n):
    ids = [line.split("\t")[0] for line in open(plan_path) if line.strip()]
    rows = {r["id"]: r for r in (json.loads(line) for line in open(calls_path) if line.strip())}

    def part(chosen):
        ok = [rows[i] for i in chosen if rows.get(i, {}).get("code") == 0]
        ms = [r["ms"] for r in ok]
        cpu = [r["cpu_ms"] for r in ok if "cpu_ms" in r]
        return {"ok": len(ms), "p50_ms": percentile(ms, 0.5),
                "mean_ms": round(statistics.mean(ms), 1) if ms else 0.0,
                "cpu_mean_ms": round(statistics.mean(cpu), 1) if cpu else 0.0}
    first, last = part(ids[:n]), part(ids[-n:])
    ratio = lambda k: round(last[k] / first[k], 2) if first[k] else None
    print(json.dumps({"first": first, "last": last, "ratio_mean": ratio("mean_ms"),
                      "ratio_p50": ratio("p50_ms"), "ratio_cpu": ratio("cpu_mean_ms")}))


def convergence(churn_path, events_path, hosts):
    """An entry counts from the first notification of it after its call started (overlayd may
    program it before the plugin returns: then the change was there on return, 0 ms)."""
    times = {}  # (host, fdb, added, key) -> sorted notification times; key: MAC or IP
    for line in open(events_path):
        e = json.loads(line)
        if "t" not in e:
            continue
        key = e["mac"] if e["fdb"] else e["ip"]
        times.setdefault((e["host"], e["fdb"], e["added"], key), []).append(e["t"])
    for v in times.values():
        v.sort()

    def first_after(host, fdb, added, key, start):
        v = times.get((host, fdb, added, key), [])
        i = bisect.bisect_left(v, start)
        return v[i] if i < len(v) else None

    calls = [json.loads(line) for line in open(churn_path) if line.strip()]
    result, every_conv = {}, []
    for op in ("ADD", "DEL"):
        mine = [c for c in calls if c.get("op") == op]
        ok = [c for c in mine if c.get("code") == 0]
        conv, never, on_return = [], [], 0
        for c in ok:
            added = op == "ADD"
            ips = [ip.split("/")[0] for ip in c.get("ips", [])]
            worst = 0.0
            for h in range(hosts):
                if h == c["host"]:
                    continue
                seen = [first_after(h, True, added, c["mac"], c["start"])]
                seen += [first_after(h, False, added, ip, c["start"]) for ip in ips]
                if None in seen:
                    worst = None
                    break
                worst = max(worst, max(seen) - c["end"])
            if worst is None:
                never.append(c["id"])
            else:
                on_return += worst <= 0
                conv.append(max(0.0, worst) * 1000)
        every_conv += conv
        by_code = {}
        for c in mine:
            by_code[str(c.get("code"))] = by_code.get(str(c.get("code")), 0) + 1
        result[op] = {
            "calls": len(mine), "ok": len(ok), "by_code": by_code,
            "failures": sorted({f'{c.get("code")}: {c.get("msg", "")[:120]}' for c in mine
                                if c.get("code") != 0})[:5],
            "cpu_s": round(sum(c.get("cpu_ms", 0.0) for c in mine) / 1000, 2),
            "call_p50_ms": percentile([c["ms"] for c in ok], 0.5),
            "call_p99_ms": percentile([c["ms"] for c in ok], 0.99),
            "late_p50_ms": round(percentile([c["late_ms"] for c in mine], 0.5), 1),
            "late_max_ms": round(max((c["late_ms"] for c in mine), default=0.0), 1),
            "conv_p50_ms": round(percentile(conv, 0.5), 1),
            "conv_p99_ms": round(percentile(conv, 0.99), 1),
            "conv_max_ms": round(max(conv, default=0.0), 1),
            "converged_on_return": on_return,
            "never": len(never), "never_ids": never[:5],
        }
    result["conv_p50_ms"] = round(percentile(every_conv, 0.5), 1)
    result["conv_p99_ms"] = round(percentile(every_conv, 0.99), 1)
    result["conv_max_ms"] = round(max(every_conv, default=0.0), 1)
    every = [c for c in calls if c.get("code") == 0]
    if every:
        span = max(c["end"] for c in every) - min(c["start"] for c in every)
        result["span_s"] = round(span, 1)
        for op in ("ADD", "DEL"):
            result[op]["rate_per_s"] = round(result[op]["ok"] / span, 1) if span else 0.0
    print(json.dumps(result))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"calls": calls, "etcd": etcd, "peers": peers,
     "gaps": lambda p, i: gaps(p, float(i)),
     "order": lambda c, p, n: order(c, p, int(n)),
     "convergence": lambda c, e, h: convergence(c, e, int(h))}[command](*args)
