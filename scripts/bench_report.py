#!/usr/bin/env python3
"""The comparison report of scripts/bench.sh (issue 4): reads the berth-bench JSON of every
target in a results directory and writes a markdown report: one table of every scenario with
Berth/reference ratios, the servers' memory, the machine's baselines, and each of the issue's
targets as a check, met or not.

    bench_report.py RESULTS_DIR REPORT.md REFERENCE MACHINE QUICK(0|1) BERTH_DESC REF_VERSION

RESULTS_DIR holds NAME.json per target (NAME@1.json, NAME@2.json, ... for a target measured
in turns: the better pass per scenario counts), machine.json / machine-after.json,
nginx.json / nginx-after.json, extra.json / extra-after.json (openssl and dd figures) and
wrk.txt / wrk-after.txt. tests/bench_harness.rs runs it on results it writes itself.
"""
import json, math, os, re, sys, datetime
res, report, ref, machine, quick, berth_desc, ref_version = sys.argv[1:8]
def passes(name):
    # NAME.json, or NAME@1.json, NAME@2.json, ... for a target measured in turns.
    return sorted(f for f in os.listdir(res) if f == name + ".json" or re.fullmatch(re.escape(name) + r"@\d+\.json", f))
def load(name):
    ps = [json.load(open(os.path.join(res, f))) for f in passes(name)]
    if len(ps) > 1:
        # The better of the passes per scenario, as for the machine baselines.
        merged = dict(ps[0])
        merged["results"] = list(best(*ps).values())
        merged["passes"] = len(ps)
        return merged
    return ps[0] if ps else None
targets = []
for f in sorted(os.listdir(res)):
    t = f[:-5].split("@")[0]
    if f.endswith(".json") and not re.match(r"(machine|nginx|extra)(-after)?$", t) and t not in targets:
        targets.append(t)
# reference first, then Berth targets in run order
def run_order(t):
    # When berth-bench started on the target (recorded in its JSON, so copies of a results
    # directory keep the order), then the file's time.
    ps = [os.path.join(res, f) for f in passes(t)]
    return min((json.load(open(p)).get("started", ""), os.path.getmtime(p)) for p in ps)
def by_name(j):
    return {r["scenario"]: r for r in j["results"]} if j else {}
def best(*js):
    # Per scenario, the better of the runs before and after the targets.
    out = {}
    for j in js:
        for k, r in by_name(j).items():
            if not r["ok"]:
                continue
            o = out.get(k)
            key = "req_s" if r["unit"] == "req/s" else "mb_s"
            if o is None or r[key] > o[key]:
                r = dict(r)
                r["runs"] = (o or {}).get("runs", []) + [r[key]]
                out[k] = r
            else:
                o["runs"].append(r[key])
    return out
order = [ref] + sorted([t for t in targets if t != ref], key=run_order)
data = {t: load(t) for t in order if load(t)}
R = {t: by_name(j) for t, j in data.items()}
M, N = best(load("machine"), load("machine-after")), best(load("nginx"), load("nginx-after"))
extra = {}
for e in (load("extra"), load("extra-after")):
    for k, v in (e or {}).items():
        if isinstance(v, (int, float)) and (extra.get(k) is None or v > extra[k]):
            extra[k] = v
berths = [t for t in data if t != ref]
scen = []
for t in data:
    for r in data[t]["results"]:
        if r["scenario"] not in scen:
            scen.append(r["scenario"])

def primary(r):
    if not r or not r["ok"]:
        return None
    if r.get("skipped"):  # not a measurement (the reason is in its note; shown by cell())
        return None
    return {"MB/s": r["mb_s"], "req/s": r["req_s"], "ms": r.get("listing_ms") or r["p50_ms"],
            "tokens/pull": r.get("count"), "s": r["seconds"]}.get(r["unit"], r["req_s"])
def fmt(v, unit=""):
    if v is None: return "FAIL"
    if v == "-": return "-"
    if unit in ("ms", "s") or v < 10: return f"{v:.2f}"
    if v < 1000: return f"{v:.1f}"
    return f"{v:,.0f}"
def cell(r, unit):
    if not r: return "-"
    if r.get("skipped"): return "skipped"
    return fmt(primary(r), unit)
def ratio(b, a, unit):
    pb, pa = primary(b), primary(a)
    if pb is None or pa is None or pa == 0 or pb == 0: return "-"
    return f"{(pa / pb if unit in ('ms', 's') else pb / pa):.2f}x"

out = []
w = out.append
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
w(f"Run: {now}; machine: {machine}; mode: {'quick' if quick == '1' else 'full'}; "
  f"Berth: {berth_desc}; reference: distribution {ref_version} (Debian docker-registry).\n")
w("Primary number per scenario: MB/s (10^6 bytes/s) for transfers, requests/s for request loads, "
  "and for listings the time (ms) to page through the whole listing. Ratios are Berth / reference "
  "(for listings: reference time / Berth time), so above 1x means Berth is better. p99 is per "
  "operation (push, pull, request; per page for listings), in ms; RSS = the server's peak during "
  "the scenario.\n")
hdr = ["scenario", "unit", ref] + sum([[b, f"{b}/ref"] for b in berths], []) + \
      ["p99 " + "/".join([ref] + berths), "RSS MiB " + "/".join([ref] + berths)]
w("| " + " | ".join(hdr) + " |")
w("|" + "---|" * len(hdr))
for s in scen:
    rs = [R[t].get(s) for t in data]
    unit = next((r["unit"] for r in rs if r and r["unit"]), "")
    a = R.get(ref, {}).get(s)
    label = s + " (splice receiver, informational)" if re.fullmatch(r"pull-\d+[MG]iB-splice", s) else s
    row = [label, unit, cell(a, unit)]
    for b in berths:
        rb = R[b].get(s)
        row += [cell(rb, unit), ratio(rb, a, unit)]
    row.append(" / ".join(fmt(r["p99_ms"], "ms") if r and r["ok"] and r["ops"] else "-" for r in rs))
    row.append(" / ".join(f"{r['rss_peak_mib']:.0f}" if r and r.get("rss_peak_mib") else "-" for r in rs))
    w("| " + " | ".join(row) + " |")
w("")
w("| server RSS (MiB) | " + " | ".join(data) + " |")
w("|---|" + "---|" * len(data))
for k, label in [("idle_rss_mib", "idle, at start"), ("final_rss_mib", "after the run"), ("hwm_rss_mib", "peak (VmHWM)")]:
    w(f"| {label} | " + " | ".join(f"{data[t].get(k) or 0:.1f}" for t in data) + " |")
w("| load average before / after | " + " | ".join(f"{data[t].get('loadavg_start', '?')} / {data[t].get('loadavg_end', '?')}" for t in data) + " |")
w("| bench time (s) | " + " | ".join(f"{data[t].get('seconds', 0):.0f}" for t in data) + " |")
w("")

# Machine baselines.
def first(d, prefix):
    for k, v in d.items():
        if k.startswith(prefix) and v["ok"]: return v
    return None
sha = first(M, "machine-sha256"); disk = first(M, "machine-disk")
fget = first(N, "file-get"); fsmall = first(N, "file-small")
wrk = None
for f in ("wrk.txt", "wrk-after.txt"):
    try:
        m = re.search(r"Requests/sec:\s+([\d.]+)", open(os.path.join(res, f)).read())
        if m and (wrk is None or float(m.group(1)) > wrk):
            wrk = float(m.group(1))
    except OSError:
        pass
def runs(r):
    return " (runs: " + ", ".join(f"{x:,.0f}" for x in r.get("runs", [])) + ")" if len(r.get("runs", [])) > 1 else ""
if M or N:
    w("| machine baseline (better of the runs before and after the targets) | value |")
    w("|---|---|")
    if sha: w(f"| SHA-256, one core (berth-bench, sha2 crate) | {sha['mb_s']:.0f} MB/s{runs(sha)} |")
    if extra.get("openssl_sha256_mb_s"): w(f"| SHA-256, one core (openssl speed -evp sha256, 16 KiB) | {extra['openssl_sha256_mb_s']:.0f} MB/s |")
    if disk: w(f"| sequential write + fsync, same bytes, same disk (berth-bench) | {disk['mb_s']:.0f} MB/s{runs(disk)} |")
    if extra.get("dd_fsync_mb_s"): w(f"| dd if=/dev/zero bs=1M conv=fsync | {extra['dd_fsync_mb_s']:.0f} MB/s |")
    if fget: w(f"| nginx sendfile, same file, warm (berth-bench) | {fget['mb_s']:.0f} MB/s{runs(fget)} |")
    if fsmall: w(f"| nginx small file, 64 clients (berth-bench) | {fsmall['req_s']:,.0f} req/s, p99 {fsmall['p99_ms']:.2f} ms{runs(fsmall)} |")
    if wrk: w(f"| nginx small file, 64 connections (wrk -t2) | {wrk:,.0f} req/s |")
    w("")

# Targets of issue 4. The disk's write+fsync rate and the loopback's speed swing by 2x
# within a minute here, so each push is held to the mean of two write+fsyncs of its size
# measured just before and after it, and each big pull's GET to the mean of two GETs of
# the same bytes from nginx, and of two from the reference, just before and after it (the
# median over the scenario's pushes or GETs); without those figures, to the machine
# baselines (the better of berth-bench's and dd's write+fsync; nginx's file-get) and the
# reference's own run.
disk_mb = max([x for x in (disk and disk["mb_s"], extra.get("dd_fsync_mb_s")) if x], default=None)
w("Each push of 100 MiB and up is compared with a write+fsync of the same size to the same disk just before and after it, "
  "and each GET of the big pull with nginx (sendfile) and with the reference serving the same bytes just before and after it; "
  "the check takes the median of these ratios"
  + (f". The machine baselines of the whole run measured {disk_mb:.0f} MB/s write+fsync at best." if disk_mb else ".") + "\n")
def cell(text):
    # A table cell: one line, and a | in an error message must not split it.
    return " ".join(str(text).split()).replace("|", "\\|")
checks = []
def chk(target, what, val, ok):
    checks.append((target, what, val, ok))
def beside_check(target, s, r, key, base, ops, label, at_least=0.8):
    """The check of scenario s against the baseline measured beside each of its operations
    (berth-bench's beside[key]: the median of its per-operation ratios); whether r has one."""
    b = (r or {}).get("beside", {}).get(key)
    if b is None:
        return False
    rs = b.get("ratios") or [b["ratio"]]
    if at_least < 1:  # as a share of the baseline
        bar, val, vals = f"{at_least*100:.0f}% of", f"{b['ratio']*100:.0f}%", ", ".join(f"{x*100:.0f}" for x in rs) + "%"
    else:  # as a multiple of it
        bar, val, vals = f"{at_least:g}x", f"{b['ratio']:.2f}x", ", ".join(f"{x:.2f}" for x in rs) + "x"
    chk(target, f"{s} >= {bar} {base} beside it (median of {len(rs)} {ops})",
        f"{val} ({ops} {vals}; {label} {b['mb_s']:.0f} MB/s)", b["ratio"] >= at_least)
    return True
for b in berths:
    pg = "postgres" in b
    for s in scen:
        a, r = R.get(ref, {}).get(s), R[b].get(s)
        if r is not None and not r["ok"]:
            # A scenario Berth failed meets none of its checks, rather than dropping out
            # of the count.
            chk(b, f"{s} completes", "failed: " + (r.get("error") or "?")[:300], False)
            continue
        big = re.search(r"-(\d+)(MiB|GiB)$", s)
        big = big and int(big.group(1)) * (1024 if big.group(2) == "GiB" else 1) >= 100
        if s.startswith("push-") and "x64" not in s and big:
            if primary(a) and primary(r):
                chk(b, f"{s} >= 2x reference", f"{primary(r)/primary(a):.2f}x", primary(r) >= 2 * primary(a))
            # Each push against the write+fsyncs just before and after it.
            held = beside_check(b, s, r, "disk", "write+fsync", "pushes", "disk")
            if not held and disk_mb and primary(r):
                chk(b, f"{s} >= 80% of write+fsync",
                    f"{primary(r)/disk_mb*100:.0f}% of {disk_mb:.0f} MB/s", primary(r) >= 0.8 * disk_mb)
        # The big pull's checks hold on the copying client (pull-<big>: reads into a user-space
        # buffer, as containerd does; issue 19); pull-<big>-splice (a receiver no real client
        # is) is informational, and pull-<big>-cold is held to the reference.
        if re.fullmatch(r"pull-\d+[MG]iB-cold", s):
            beside_check(b, s, r, "reference", "reference", "GETs", "reference", 1.0)
        if re.fullmatch(r"pull-\d+[MG]iB", s):
            # Each GET against the reference's GETs of the same bytes just before and after
            # it, or else the reference's own run minutes before.
            held = beside_check(b, s, r, "reference", "reference", "GETs", "reference", 1.5)
            if not held and primary(a) and primary(r):
                chk(b, f"{s} >= 1.5x reference", f"{primary(r)/primary(a):.2f}x", primary(r) >= 1.5 * primary(a))
            # Each GET against nginx's GETs of the same bytes just before and after it.
            held = beside_check(b, s, r, "file", "nginx sendfile", "GETs", "nginx")
            if not held and fget and primary(r):
                chk(b, f"{s} >= 80% of nginx sendfile", f"{primary(r)/fget['mb_s']*100:.0f}%", primary(r) >= 0.8 * fget["mb_s"])
        if s.startswith("manifest-") and primary(a) and primary(r):
            if s.endswith("-c64"):
                k = 5 if pg else 10
                chk(b, f"{s} req/s >= {k}x reference", f"{primary(r)/primary(a):.1f}x", primary(r) >= k * primary(a))
            chk(b, f"{s} p99 <= 1/5 of reference", f"{r['p99_ms']:.2f} vs {a['p99_ms']:.2f} ms", r["p99_ms"] * 5 <= a["p99_ms"])
        if ("x64" in s) and r and r.get("rss_peak_mib"):
            chk(b, f"{s} peak RSS < 100 MiB", f"{r['rss_peak_mib']:.0f} MiB", r["rss_peak_mib"] < 100)
        # The built-in token service (issue 17).
        if s == "token-issue-c16" and r and r["ok"]:
            chk(b, f"{s} tokens/s >= 5,000", f"{r['req_s']:,.0f}/s", r["req_s"] >= 5000)
        if s.startswith("token-pull-") and r and r["ok"]:
            chk(b, f"{s}: one token request per pull (skopeo)", f"{r.get('count', 0):g}", r.get("count") == 1)
        if s.startswith("token-basic-") and r and r["ok"] and r.get("first_wave"):
            fw = r["first_wave"]
            chk(b, f"{s}: the first {fw['clients']} requests with one password, at once, within 3x one argon2 check (argon2 runs once)",
                f"max {fw['max_ms']:.1f} ms vs one check {fw['password_check_ms']:.1f} ms",
                fw["max_ms"] <= 3 * fw["password_check_ms"])
        if s.startswith("ui-") and r and r["ok"]:
            chk(b, f"{s}: the first page in < 50 ms (client-side p99, loopback)", f"p99 {r['p99_ms']:.1f} ms", r["p99_ms"] < 50)
        # Garbage collection (issue 20): the collector beside the server, on a registry it
        # filled, a tenth of it garbage.
        if s.startswith("gc-") and r and r["ok"] and r.get("gc"):
            g = r["gc"]
            chk(b, f"{s}: gc of {g['blobs']:,} blobs, {g['garbage']:,} ({g['garbage']*100/max(g['blobs'],1):.0f}%) garbage, < 60 s",
                f"{g['seconds']:.1f} s, {g['freed']:,} freed ({g['blobs_per_s']:,.0f} blobs/s); dry run {g['dry_run_seconds']:.1f} s; "
                f"fill {g['fill_seconds']:.0f} s (untimed)" + (f"; collector peak RSS {g['peak_rss_mib']:.0f} MiB" if g.get("peak_rss_mib") else ""),
                g["seconds"] < 60)
        if (s.startswith("tags-list") or s.startswith("catalog")) and r and r["ok"]:
            chk(b, f"{s} every page < 5 ms (client-side p99)", f"p99 {r['p99_ms']:.2f} ms", r["p99_ms"] < 5)
    # Against the same server without auth measured in turns with it (NAME-notoken),
    # or else the target without the suffix.
    plain = b + "-notoken" if b + "-notoken" in R else b[: -len("-token")]
    if b.endswith("-token") and plain in R:
        # One check over every manifest scenario (geometric mean of the per-scenario
        # ratios): a single 3-second load moves by +-10% from run to run on this machine,
        # as much as the cost being measured.
        rs = [primary(R[b][s]) / primary(R[plain][s]) for s in scen
              if s.startswith("manifest-") and primary(R[b].get(s)) and primary(R[plain].get(s))]
        if rs:
            g = math.exp(sum(math.log(x) for x in rs) / len(rs))
            chk(b, f"manifest req/s with token auth >= 90% of {plain} (geometric mean of {len(rs)} scenarios; range {min(rs)*100:.0f}-{max(rs)*100:.0f}%)", f"{g*100:.0f}%", g >= 0.9)
    # (-service and -pull run on a server that served a run already.)
    if data[b].get("idle_rss_mib") and not re.search(r"-(service|pull)$", b):
        chk(b, "idle RSS < 20 MiB", f"{data[b]['idle_rss_mib']:.1f} MiB", data[b]["idle_rss_mib"] < 20)
if checks:
    w("| target | check (issue 4) | measured | met |")
    w("|---|---|---|---|")
    for t, what, val, ok in checks:
        w(f"| {t} | {what} | {cell(val)} | {'yes' if ok else '**no**'} |")
    met = sum(1 for c in checks if c[3])
    w(f"\n{met} of {len(checks)} checks met.\n")
open(report, "w").write("\n".join(out) + "\n")
print("\n".join(out))
