#!/usr/bin/env python3
"""The report of scripts/bench-pulls.sh (issue 19): one table per link x transport measured,
each Berth pull beside the reference's and nginx's GETs of the same bytes taken in turns
with it, and issue 19's targets as checks, met or missed, with the figures.

    bench_pulls_report.py RESULTS_DIR REPORT.md MACHINE QUICK(0|1) BERTH_DESC REF_VERSION

RESULTS_DIR holds combinations.txt (LINK-TLS per line, in run order), notes.txt (one note a
line, e.g. the veth link's loopback fallback) and COMBO_SERVER.json: berth-bench's JSON of
each Berth server (berth, berth-nosendfile) and, over TLS, of the reference's pushes
(distribution). bench/tests/pulls_harness.rs runs it on results it writes itself.
"""
import json, os, re, sys, datetime

res, report, machine, quick, berth_desc, ref_version = sys.argv[1:7]


def lines(name):
    try:
        return [l.strip() for l in open(os.path.join(res, name)) if l.strip()]
    except OSError:
        return []


combos = list(dict.fromkeys(lines("combinations.txt")))
notes = lines("notes.txt")
runs = {}  # combo -> server -> {scenario: result}
for f in sorted(os.listdir(res)):
    m = re.fullmatch(r"(.+?)_(.+)\.json", f)
    if m:
        j = json.load(open(os.path.join(res, f)))
        runs.setdefault(m.group(1), {})[m.group(2)] = {r["scenario"]: r for r in j.get("results", [])}
        if m.group(1) not in combos:
            combos.append(m.group(1))

KIND = [  # (pattern, label), in table order
    (r"pull-\d+[MG]iB", "copying client (read into a 1 MiB buffer)"),
    (r"pull-\d+[MG]iB-cold", "cold: page cache evicted before every GET"),
    (r"pull-\d+[MG]iB-splice", "splice to /dev/null (informational)"),
    (r"ctr-fetch-\d+[MG]iB", "ctr content fetch, multi-layer image"),
    (r"push-mono-\d+[MG]iB", "monolithic push"),
]


def kind(s):
    return next((i for i, (p, _) in enumerate(KIND) if re.fullmatch(p, s)), None)


def beside(r, key):
    return (r or {}).get("beside", {}).get(key)


def cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


out = []
w = out.append
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
w(f"Run: {now}; machine: {machine}; mode: {'quick' if quick == '1' else 'full'}; "
  f"Berth: {berth_desc}; reference: distribution {ref_version} (Debian docker-registry).\n")
for n in notes:
    w(f"**Note:** {n}\n")
w("MB/s are 10^6 bytes/s. Each Berth GET (or ctr fetch) ran in turns with the reference's and "
  "nginx's of the same bytes; \"x reference\" and \"% nginx\" are the medians of its ratios to "
  "the GETs just before and after it (the figures in brackets: the reference's and nginx's mean "
  "MB/s over the run). berth = the default configuration (SQLite, filesystem, auth none); "
  "berth-nosendfile = the same with server.sendfile = false.\n")
checks = []


def chk(combo, server, what, val, ok):
    checks.append((combo, server, what, val, ok))


for combo in combos:
    link, _, tls = combo.rpartition("-")
    servers = runs.get(combo, {})
    w(f"### {link}, {'TLS' if tls == 'tls' else 'plain HTTP'}\n")
    w("| scenario | what | server | MB/s | x reference | % nginx |")
    w("|---|---|---|---|---|---|")
    rows = []
    for srv, rs in servers.items():
        for s, r in rs.items():
            k = kind(s)
            if k is not None:
                rows.append((k, s, srv, r))
    rows.sort(key=lambda x: (x[0], x[1], x[2] == "distribution", x[2]))
    for k, s, srv, r in rows:
        if not r["ok"]:
            w(f"| {s} | {KIND[k][1]} | {srv} | FAIL: {cell((r.get('error') or '?')[:200])} | - | - |")
            continue
        if r.get("skipped"):  # not a measurement; the reason is its note
            w(f"| {s} | {KIND[k][1]} | {srv} | skipped: {cell(r.get('note', '')[:200])} | - | - |")
            continue
        ref, ng = beside(r, "reference"), beside(r, "file")
        xr = f"{ref['ratio']:.2f}x ({ref['mb_s']:.0f})" if ref else "-"
        if s.startswith("push-") and srv != "distribution" and not ref:
            # Pushes: against the reference's own pushes over the same link and transport.
            a = servers.get("distribution", {}).get(s)
            if a and a["ok"] and a["mb_s"]:
                xr = f"{r['mb_s'] / a['mb_s']:.2f}x ({a['mb_s']:.0f}, its own run)"
        xn = f"{ng['ratio'] * 100:.0f}% ({ng['mb_s']:.0f})" if ng else "-"
        w(f"| {s} | {KIND[k][1]} | {srv} | {r['mb_s']:.0f} | {xr} | {xn} |")
    w("")
    # Issue 19's targets, copying client, per Berth configuration.
    for srv, rs in sorted(servers.items(), key=lambda x: (x[0] != "berth", x[0])):
        if srv == "distribution":
            continue
        for s, r in rs.items():
            k = kind(s)
            if k is None or KIND[k][1].endswith("(informational)") or s.startswith("push-"):
                continue
            if not r["ok"]:
                chk(combo, srv, f"{s} completes", "failed: " + (r.get("error") or "?")[:300], False)
                continue
            if r.get("skipped"):
                chk(combo, srv, f"{s} measured", "skipped: " + r.get("note", "")[:300], False)
                continue
            ref, ng = beside(r, "reference"), beside(r, "file")

            def vs_ref(bar, what):
                if ref is None:
                    chk(combo, srv, f"{s} >= {bar:g}x reference ({what})", "no reference GETs in turns", False)
                    return
                rs_ = ", ".join(f"{x:.2f}" for x in ref.get("ratios", [])) or "-"
                chk(combo, srv, f"{s} >= {bar:g}x reference ({what}; median of {len(ref.get('ratios', []))})",
                    f"{ref['ratio']:.2f}x (each {rs_}; {r['mb_s']:.0f} vs {ref['mb_s']:.0f} MB/s)", ref["ratio"] >= bar)

            if k == 0 and combo == "loopback-plain":
                vs_ref(1.2, "warm, loopback")
                if ng is None:
                    chk(combo, srv, f"{s} >= nginx (warm, loopback)", "no nginx GETs in turns", False)
                else:
                    chk(combo, srv, f"{s} >= nginx (warm, loopback; median of {len(ng.get('ratios', []))})",
                        f"{ng['ratio'] * 100:.0f}% ({r['mb_s']:.0f} vs {ng['mb_s']:.0f} MB/s)", ng["ratio"] >= 1.0)
            elif k == 0:
                vs_ref(1.0, "warm, " + ("over TLS" if tls == "tls" else "over the veth link"))
            elif k == 1:
                vs_ref(1.0, "cold")
            elif k == 3:
                vs_ref(1.0, "ctr content fetch")

if checks:
    w("| link-transport | server | check (issue 19) | measured | met |")
    w("|---|---|---|---|---|")
    for c, srv, what, val, ok in checks:
        w(f"| {c} | {srv} | {what} | {cell(val)} | {'met' if ok else '**missed**'} |")
    met = sum(1 for c in checks if c[4])
    w(f"\n{met} of {len(checks)} checks met.\n")
open(report, "w").write("\n".join(out) + "\n")
print("\n".join(out))
