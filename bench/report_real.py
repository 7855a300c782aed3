#!/usr/bin/env python3
"""The table of scripts/bench-real (the realistic profile).

  report_real.py RESULTS_DIR FACTS_JSON            -> markdown on stdout
  report_real.py --update BENCHMARKS.md TABLE      -> replaces the latest run
                                                      of the section
"""
import json
import os
import sys

SECTION = "## Realistic profile: TLS, DKIM, a thousand domains and a server that says no"


def load(res, name):
    p = os.path.join(res, name)
    return json.load(open(p)) if os.path.exists(p) else None


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else None


def fmt(x, d=0):
    if x is None:
        return "—"
    return f"{x:,.{d}f}"


def row_numbers(r, n, first_retry_s):
    s = r["sink"]
    t0 = r["t0_ms"]
    done = s.get("done_ms")
    fp = s.get("first_pass_ms")
    out = {
        "complete": done is not None,
        "counted": s.get("counted"),
        "expect": s.get("expect"),
        "time_s": (done - t0) / 1000 if done else None,
        "first_pass_s": (fp - t0) / 1000 if fp else None,
        "cpu_per_1000": r["cpu_s"]["machine"] / n * 1000,
        "handshakes": s.get("tls_handshakes"),
        "handshakes_per_1000": s.get("tls_handshakes", 0) / n * 1000,
        "connections": s.get("connections"),
        "duplicates": s.get("duplicates"),
        "greylisted": s.get("greylisted"),
        "retried": len(s.get("retry_delays_ms") or []),
    }
    out["msg_s"] = s["expect"] / out["time_s"] if out["time_s"] else None
    out["first_pass_msg_s"] = n / out["first_pass_s"] if out["first_pass_s"] else None
    late = [d - first_retry_s * 1000 for d in s.get("retry_delays_ms") or []]
    out["retry_late_p50_s"] = pct(late, 50) / 1000 if late else None
    out["retry_late_p99_s"] = pct(late, 99) / 1000 if late else None
    out["retry_late_max_s"] = max(late) / 1000 if late else None
    out["retry_late_min_s"] = min(late) / 1000 if late else None
    return out


def table(res, facts):
    n = facts["n"]
    fr = facts["first_retry_s"]
    out = []
    out.append(f"### Run of {facts['date']}")
    out.append("")
    out.append(
        f"`{facts['command']}` at {facts['commit']} (mailpipe binaries: {facts['bin']}), "
        f"{facts['nproc']} cores; load average {facts['load_before']} before, "
        f"{facts['load_after']} after (the machine is shared: compare ratios within this run). "
        f"{n:,} recipients over {facts['domains']:,} domains (Zipf), ~{facts['size']:,}-byte "
        f"personalized multipart messages, STARTTLS required (private CA), 3 % greylisted once "
        f"(`451 4.7.1`), 1 % refused (`550 5.1.1`), first retry {fr} s. Took {facts['elapsed_s'] // 60} min "
        f"{facts['elapsed_s'] % 60} s."
    )
    out.append("")
    rows = [
        ("rsa", "mailpipe, DKIM RSA-2048"),
        ("postfix", "Postfix + OpenDKIM (RSA-2048)"),
        ("ed25519", "mailpipe, DKIM Ed25519"),
    ]
    nums = {}
    out.append(
        "| system | time until every deliverable recipient was accepted | msg/s | first pass (msg/s) "
        "| whole-machine CPU per 1,000 | TLS handshakes per 1,000 (total) "
        "| first retry beyond 10 s: p50 / p99 / max | duplicates | load before → after |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    for key, label in rows:
        r = load(res, f"{key}.json")
        if r is None:
            continue
        x = row_numbers(r, n, fr)
        nums[key] = x
        t = fmt(x["time_s"], 1) + " s" if x["complete"] else f"not reached: {x['counted']:,} of {x['expect']:,} accepted by the cap"
        out.append(
            f"| {label} | {t} | {fmt(x['msg_s'])} | {fmt(x['first_pass_s'], 1)} s ({fmt(x['first_pass_msg_s'])}) "
            f"| {fmt(x['cpu_per_1000'], 3)} s | {fmt(x['handshakes_per_1000'], 2)} ({fmt(x['handshakes'])}) "
            f"| {fmt(x['retry_late_p50_s'], 1)} / {fmt(x['retry_late_p99_s'], 1)} / {fmt(x['retry_late_max_s'], 1)} s "
            f"({x['retried']:,} of {x['greylisted']:,} retried) | {fmt(x['duplicates'])} "
            f"| {r['load_before']} → {r['load_after']} |"
        )
    out.append("")
    ossl = load(res, "openssl.json")
    sign = load(res, "sign.json")
    ceil = load(res, "ceiling.json")
    ceil_sink = load(res, "ceiling-sink.json")
    out.append("Limits measured in the same run:")
    out.append("")
    if ossl:
        out.append(
            f"- `openssl speed -multi 2` ({ossl['version']}): RSA-2048 **{fmt(ossl['rsa2048_per_s'])}** "
            f"signatures/s, Ed25519 **{fmt(ossl['ed25519_per_s'])}**/s on 2 cores (load {ossl['load']})."
        )
    if sign:
        cells = []
        for c in sign["results"]:
            t = c["threads"].get("2")
            if t:
                cells.append(f"{c['algorithm']} {c['library']} {fmt(t['per_s'])}")
        out.append(f"- `mailpipe-bench sign`, 2 threads, one 2-s round: " + ", ".join(cells) + " /s.")
    if ceil:
        hs = ceil_sink.get("tls_handshakes") if ceil_sink else None
        out.append(
            f"- TLS + pipelining client (`mailpipe-bench client`, {ceil['sessions']} STARTTLS sessions, "
            f"one pass, unsigned): **{fmt(ceil['per_s'])}** msg/s ({ceil['recipients']:,} in "
            f"{(ceil['done_ms'] - ceil['t0_ms']) / 1000:.1f} s, {fmt(ceil.get('mean_bytes'))} bytes a message, "
            f"{fmt(hs)} handshakes; whole-machine CPU {ceil['machine_ticks'] / facts['clk'] / n * 1000:.3f} s per 1,000; "
            f"load {ceil.get('load', '?')})."
        )
    out.append("")
    out.append("| target | measured | verdict |")
    out.append("|---|---|---|")

    def verdict(ok):
        return "met" if ok else "**not met**"

    rsa, pfx, ed = nums.get("rsa"), nums.get("postfix"), nums.get("ed25519")
    if rsa and ossl and rsa["msg_s"]:
        v = rsa["msg_s"] / ossl["rsa2048_per_s"]
        out.append(
            f"| mailpipe RSA-2048 ≥ 0.45 × OpenSSL's 2-core RSA-2048 sign rate "
            f"| {fmt(rsa['msg_s'])} / {fmt(ossl['rsa2048_per_s'])} = **{v:.2f} ×** | {verdict(v >= 0.45)} |"
        )
    if rsa and pfx and rsa["msg_s"]:
        if pfx["msg_s"]:
            v = rsa["msg_s"] / pfx["msg_s"]
            out.append(
                f"| mailpipe RSA-2048 ≥ 15 × Postfix + OpenDKIM | {fmt(rsa['msg_s'])} / {fmt(pfx['msg_s'])} "
                f"= **{v:.1f} ×** | {verdict(v >= 15)} |"
            )
        else:
            out.append(
                f"| mailpipe RSA-2048 ≥ 15 × Postfix + OpenDKIM | Postfix did not finish by the cap "
                f"({pfx['counted']:,} of {pfx['expect']:,}) | — |"
            )
    if ed and ceil:
        v = (ed["first_pass_msg_s"] or 0) / ceil["per_s"]
        w = (ed["msg_s"] or 0) / ceil["per_s"]
        out.append(
            f"| mailpipe Ed25519 ≥ 0.4 × the TLS + pipelining ceiling (first pass) "
            f"| {fmt(ed['first_pass_msg_s'])} / {fmt(ceil['per_s'])} = **{v:.2f} ×** "
            f"(until all accepted: {w:.2f} ×) | {verdict(v >= 0.4)} |"
        )
    for key, label in (("rsa", "RSA-2048"), ("ed25519", "Ed25519")):
        x = nums.get(key)
        if x and x["retry_late_p99_s"] is not None:
            v = x["retry_late_p99_s"] / fr
            out.append(
                f"| retries, mailpipe {label}: p99 of (actual − configured) first-retry delay ≤ 20 % "
                f"| {x['retry_late_p99_s']:.1f} s of {fr} s = **{v * 100:.0f} %** | {verdict(v <= 0.2)} |"
            )
    if pfx and pfx["handshakes_per_1000"]:
        for key, label in (("rsa", "RSA-2048"), ("ed25519", "Ed25519")):
            x = nums.get(key)
            if x:
                v = x["handshakes_per_1000"] / pfx["handshakes_per_1000"]
                out.append(
                    f"| TLS handshakes per 1,000, mailpipe {label} ≤ 1.2 × Postfix's "
                    f"| {x['handshakes_per_1000']:.2f} / {pfx['handshakes_per_1000']:.2f} = **{v:.2f} ×** "
                    f"| {verdict(v <= 1.2)} |"
                )
    out.append("")
    for key, label in rows:
        r = load(res, f"{key}.json")
        if r is None:
            continue
        cpu = ", ".join(f"{k} {v / n * 1000:.3f}" for k, v in r["cpu_s"].items())
        out.append(f"- {label}: CPU seconds per 1,000 recipients: {cpu}.")
    hung = os.path.join(res, "hung.txt")
    if os.path.exists(hung):
        names = ", ".join(open(hung).read().split())
        out.append(f"- Still running 60 s after SIGTERM, then killed: {names}.")
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
        print(table(sys.argv[1], json.loads(sys.argv[2])))
