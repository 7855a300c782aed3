#!/usr/bin/env python3
"""The table of scripts/bench-sites, and its section of BENCHMARKS.md.

  report_sites.py RESULTS_DIR ROWS FACTS_JSON   -> markdown on stdout
  report_sites.py --update BENCHMARKS.md TABLE  -> replaces the section
"""
import json
import os
import sys

SECTION = "## Sites: a provider that pushes back"
NAMES = {
    "adaptive": "mailpipe, sites with the adaptive controller",
    "domains": "mailpipe, domain limits only (defaults)",
    "postfix": "Postfix by MX, default concurrency feedback",
}


def pct(x):
    return f"{100 * x:.2f} %" if x < 0.1 else f"{100 * x:.1f} %"


def row(res, name, facts):
    path = os.path.join(res, f"{name}.json")
    if not os.path.exists(path):
        return None
    run = json.load(open(path))
    if "skipped" in run:
        return f"| {NAMES[name]} | not in this build ({run['skipped']}) | | | | | |", []
    sim = json.load(open(os.path.join(res, f"{name}-providers.json")))
    n = facts["n"]
    t0 = run["t0_ms"]
    provs = sim["providers"]
    delivered = sim["delivered"]
    allowed = sum(p["rate"] for p in provs)
    drained = delivered >= n
    end = sim["done_ms"] if drained and sim["done_ms"] else sim["end_ms"]
    secs = max(0.001, (end - t0) / 1000)
    rate = delivered / secs
    tx = sum(p["transactions"] for p in provs)
    tx_thr = sum(p["transactions_throttled"] for p in provs)
    conns = sum(p["connections_accepted"] + p["connections_refused"] for p in provs)
    refused = sum(p["connections_refused"] for p in provs)
    dups = sum(p["duplicates"] for p in provs)
    cpu = run.get("machine_ticks", 0) / facts["clk"] / max(1, delivered) * 1000
    drain = f"{secs:.1f} s" if drained else f"not drained after {secs:.0f} s ({pct(delivered / n)} delivered)"
    line = (f"| {NAMES[name]} | {drain} | {rate:,.0f}/s = **{rate / allowed:.2f}** × | "
            f"{pct(tx_thr / tx if tx else 0)} of {tx:,} | {pct(refused / conns if conns else 0)} of {conns:,} | "
            f"{dups} | {cpu:.2f} s |")
    detail = []
    for p in provs:
        last = p["last_delivery_ms"]
        span = (last - t0) / 1000 if last else None
        prate = p["delivered"] / span if span else 0
        detail.append(
            f"{NAMES[name].split(',')[0]} [{name}] → {p['name']} ({p['max_connections']} conns, {p['rate']:.0f}/s): "
            f"{p['delivered']:,} delivered, {prate:,.0f}/s ({prate / p['rate']:.2f} × its rate) until its last; "
            f"{p['transactions_throttled']:,} of {p['transactions']:,} transactions throttled; "
            f"{p['connections_refused']:,} of {p['connections_accepted'] + p['connections_refused']:,} connections refused; "
            f"peak {p['peak_connections']} open")
    return line, detail


def table(res, rows, facts):
    out = [
        f"### Run of {facts['date']}",
        "",
        f"`{facts['command']}` at {facts['commit']} (mailpipe binaries: {facts.get('bin', 'release build')}), {facts['nproc']} cores; load average "
        f"{facts['load_before']} before, {facts['load_after']} after (the machine is shared). "
        f"{facts['n']:,} recipients over {facts['domains']:,} domains at providers a (3 connections, 1,500/s), "
        f"b (2, 800/s), c (1, 200/s): aggregate 2,500/s, recipients in proportion to the rates.",
        "",
        "| sender | time to drain | delivered rate, × the allowed 2,500/s | transactions throttled | connections refused | duplicates | machine CPU per 1,000 delivered |",
        "|---|---|---|---|---|---|---|",
    ]
    details = []
    for name in rows.split(","):
        r = row(res, name, facts)
        if r:
            out.append(r[0])
            details.extend(r[1])
    out.append("")
    out.extend(f"- {d}" for d in details)
    out.append("")
    return "\n".join(out)


def update(path, table_path):
    text = open(path).read()
    new = open(table_path).read().rstrip("\n") + "\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + SECTION + "\n\n" + "<!-- run -->\n" + new
    else:
        end = text.find("\n## ", start + len(SECTION))
        end = len(text) if end < 0 else end + 1
        body = text[start:end]
        mark = body.find("<!-- run -->")
        if mark < 0:
            body = body.rstrip("\n") + "\n\n<!-- run -->\n" + new
        else:
            body = body[: mark + len("<!-- run -->\n")] + new
        text = text[:start] + body + ("\n" if end < len(text) else "") + text[end:]
    open(path, "w").write(text)


if __name__ == "__main__":
    if sys.argv[1] == "--update":
        update(sys.argv[2], sys.argv[3])
    else:
        print(table(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
