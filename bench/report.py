#!/usr/bin/env python3
"""Turns the raw results of scripts/bench into one Markdown table.

    report.py RESULTS_DIR FACTS_JSON            prints the table
    report.py --update BENCHMARKS.md TABLE_MD   puts the table between the
                                                 "bench:results" markers
    report.py --rounds RESULTS_DIR              the on/off pairs of each round
                                                 (scripts/bench --rounds)
"""
import json
import os
import sys

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"


def load(d, name):
    p = os.path.join(d, name)
    return json.load(open(p)) if os.path.exists(p) else None


def rate(r):
    return r["count"] / ((r["done_ms"] - r["t0_ms"]) / 1000)


def fmt(x, unit=""):
    if x is None:
        return "–"
    if isinstance(x, float):
        x = f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}" if abs(x) < 10 else f"{x:,.1f}"
    else:
        x = f"{x:,}"
    return f"{x}{unit}"


def verdict(ok):
    return "**met**" if ok else "**missed**"


def table(res, facts):
    f = facts
    clk = f["clk"]
    out = []
    out.append(f"### Run of {f['date']}")
    out.append("")
    out.append(f"Command: `{f['command']}` — N = {f['n']:,} messages of ~{f['size']:,} bytes, "
               f"{f['txn']} transactional messages, took {f['elapsed_s'] // 60} min {f['elapsed_s'] % 60} s "
               f"(including the builds).")
    out.append("")
    out.append(f"Machine: {f['nproc']} cores ({f['cpu']}), memory {f['mem']}, kernel {f['kernel']}. "
               f"{f['rustc']}; RabbitMQ {f['rabbitmq']}; Redis {f['redis']}; Postfix {f['postfix']}; "
               f"mailpipe at commit {f['commit']} (working tree as built). "
               f"Load average (1/5/15 min) before: {f.get('load_before', '?')}, after: {f.get('load_after', '?')} "
               f"— the machine is shared, so compare only numbers from the same run.")
    out.append("")
    out.append("| # | measure | value | target | verdict |")
    out.append("|---|---|---|---|---|")
    row = lambda *c: out.append("| " + " | ".join(str(x) for x in c) + " |")

    b400 = load(res, "broker-400.json")
    bsize = load(res, f"broker-{f['size']}.json")
    for b in (b400, bsize):
        if b:
            row("1", f"broker ceiling, {b['size']} B: publish with confirms (window {b['window']}) / consume with acks (one by one)",
                f"{fmt(b['publish_per_s'])} / {fmt(b['consume_per_s'])} msg/s", "", "")
    bm = load(res, "broker-multiack.json")
    bw = load(res, "broker-window32.json")
    if bm and bw:
        row("1", f"broker, {bm['size']} B: consume with `multiple` acks every 32 / publish with a window of 32",
            f"{fmt(bm['consume_per_s'])} / {fmt(bw['publish_per_s'])} msg/s", "", "")
    per = f.get("jobs_per_message", 50)
    if bsize:
        # A lane message of `per` jobs is a few KB, like the message-size
        # measurement; so is the one event message of its sent events.
        bound = per / (2 / bsize["publish_per_s"] + 1 / bsize["consume_per_s"])
        row("1", f"broker work per recipient ({per} to a lane message: 1 job publish + 1 consume + 1 events publish per {per}), as a bound",
            f"{fmt(bound)} msg/s", "", "")

    smtp = load(res, "smtp.json")
    pf = load(res, "postfix.json")
    e2e = load(res, "e2e.json")
    lat = load(res, "latency.json")
    exp = load(res, "expander.json")
    smtp_rate = rate(smtp) if smtp else None
    pf_rate = rate(pf) if pf else None
    e_rate = rate(e2e) if e2e else None
    if smtp:
        row("2", "SMTP ceiling: smtp-source → smtp-sink, 32 sessions, connections reused", f"{fmt(smtp_rate)} msg/s", "", "")
    if pf:
        inj = pf["count"] / ((pf["injected_ms"] - pf["t0_ms"]) / 1000)
        row("3", "Postfix: smtp-source → Postfix → smtp-sink, until the queue is empty",
            f"{fmt(pf_rate)} msg/s (accepting: {fmt(inj)} msg/s)", "", "" if pf["queue_empty"] else "queue not empty!")
    if e2e:
        row("4", "mailpipe end to end: publish → last message accepted by smtp-sink", f"{fmt(e_rate)} msg/s", "", "")
        if smtp_rate:
            r = e_rate / smtp_rate
            row("4", "mailpipe / SMTP ceiling", f"{r:.2f}", "≥ 0.8", verdict(r >= 0.8))
        if pf_rate:
            r = e_rate / pf_rate
            row("4", "mailpipe / Postfix", f"{r:.2f}", "≥ 8", verdict(r >= 8))
        p = e2e["procs"]
        per_k = lambda name: p[name]["cpu_s"] / e2e["count"] * 1000
        row("4", "CPU seconds per 1,000 messages: expander / sender / retrier",
            f"{per_k('expander'):.3f} / {per_k('sender'):.3f} / {per_k('retrier'):.3f}", "", "")
        row("4", "CPU seconds per 1,000 messages: RabbitMQ / Redis / smtp-sink",
            f"{per_k('rabbitmq'):.3f} / {per_k('redis'):.3f} / {per_k('smtp-sink'):.3f}", "", "")
        mach = lambda r: r["machine_ticks"] / clk / r["count"] * 1000
        mp_mach = p["machine"]["cpu_s"] / e2e["count"] * 1000
        row("4", "whole machine, CPU s per 1,000 messages: mailpipe / Postfix / SMTP ceiling",
            f"{mp_mach:.3f} / {fmt(mach(pf)) if pf else '–'} / {fmt(mach(smtp)) if smtp else '–'}", "", "")
        mib = lambda name: p[name]["hwm_kib"] / 1024
        row("4", "peak RSS: expander / retrier", f"{mib('expander'):.1f} / {mib('retrier'):.1f} MiB", "", "")
        row("4", "peak RSS: sender", f"{mib('sender'):.1f} MiB", "< 128 MiB", verdict(mib("sender") < 128))
    arch = load(res, "e2e-archive.json")
    if arch:
        a_rate = rate(arch)
        vs = f" ({a_rate / e_rate:.2f} × off)" if e2e else ""
        row("4b", "archive on (`sender.archive.enabled`): publish → last message accepted by smtp-sink",
            f"{fmt(a_rate)} msg/s{vs}", "", "")
        if e2e:
            k = lambda r, name: r["procs"][name]["cpu_s"] / r["count"] * 1000
            pair = lambda name: f"{k(e2e, name):.3f} → {k(arch, name):.3f}"
            row("4b", "CPU s per 1,000 messages, archive off → on: sender / RabbitMQ / whole machine",
                f"{pair('sender')} / {pair('rabbitmq')} / {pair('machine')}", "", "")
            mib = lambda r: r["procs"]["sender"]["hwm_kib"] / 1024
            row("4b", "peak RSS of the sender, archive off → on", f"{mib(e2e):.1f} → {mib(arch):.1f} MiB", "", "")
        st = arch["stream"]
        per = st["bytes"] / max(1, st["messages"])
        row("4b", "archive stream: messages / bytes per message / read back from its start (AMQP 0.9.1, prefetch 1000)",
            f"{st['messages']:,} / {fmt(per)} B / {fmt(st['read_per_s'])} msg/s", f"{arch['count']:,} messages",
            verdict(st["messages"] == arch["count"]))
    rc = load(res, "redis-calls.json")
    if rc:
        total = sum(rc.values())
        top = ", ".join(f"{k} {v}" for k, v in list(rc.items())[:6])
        row("4", "Redis commands per message (server-wide)", f"{total:.1f} ({top})", "", "")
    if lat:
        bl, tl = lat["bulk"], lat["txn"]
        row("4", f"bulk publish → accept latency p50 / p99 (of {bl['count']:,}; request published at 0, first accept at {bl['first_ms']:,} ms)",
            f"{fmt(bl['p50_ms'])} / {fmt(bl['p99_ms'])} ms", "", "")
        row("4", "mean rendered message size at the sink", f"{fmt(lat['mean_bytes'])} B", f"~{f['size']:,}", "")
        row("5", f"transactional publish → accept p50 / p99 / max ({tl['count']} during the drain)",
            f"{fmt(tl['p50_ms'])} / {fmt(tl['p99_ms'])} / {fmt(tl['max_ms'])} ms", "p99 < 250 ms",
            verdict(tl["p99_ms"] is not None and tl["p99_ms"] < 250))
    if exp:
        er = exp["count"] / ((exp["done_ms"] - exp["t0_ms"]) / 1000)
        row("6", f"expander: {exp['count']:,} recipients in parts ({exp['accepted']:,} jobs in {-(-exp['accepted'] // per):,} lane messages)",
            f"{fmt(er)} recipients/s", "≥ 20,000/s", verdict(er >= 20000))
        row("6", "expander peak RSS, CPU s per 1,000 recipients",
            f"{exp['hwm_kib'] / 1024:.1f} MiB, {exp['cpu_s'] / exp['count'] * 1000:.3f} s", "< 64 MiB",
            verdict(exp["hwm_kib"] / 1024 < 64))
    else:
        row("6", "expander scale (1,000,000 recipients)", "not run", "≥ 20,000/s, < 64 MiB", "–")
    off, on = load(res, "rules-off.json"), load(res, "rules-on.json")
    if off and on:
        r = rate(on) / rate(off)
        row("6b", f"expander with {on['rules']} exclusion rules and no_mail_host + likely_typo on / off ({on['count']:,} recipients over 1,000 domains)",
            f"{fmt(rate(on))} / {fmt(rate(off))} recipients/s ({r:.2f} × off)", "≥ 0.8 × off", verdict(r >= 0.8))
        k = lambda d, key: d[key] / d["count"] * 1000
        row("6b", "CPU s per 1,000 recipients, off → on: expander / Redis / RabbitMQ",
            f"{k(off, 'cpu_s'):.4f} → {k(on, 'cpu_s'):.4f} / {k(off, 'redis_cpu_s'):.4f} → {k(on, 'redis_cpu_s'):.4f}"
            f" / {k(off, 'rabbitmq_cpu_s'):.4f} → {k(on, 'rabbitmq_cpu_s'):.4f}", "", "")
        st = on["status"]
        excl = ", ".join(f"{k} {v:,}" for k, v in sorted(st.get("excluded", {}).items()))
        row("6b", "on: excluded by reason; flagged; DNS MX lookups",
            f"{excl or 'none'}; {', '.join(f'{k} {v:,}' for k, v in st.get('flagged', {}).items()) or 'none'}; {on['mx_lookups']:,}", "", "")
    free, held = load(res, "thr-unlimited.json"), load(res, "thr-limited.json")
    if free and held:
        r = held["commands_per_message"] / free["commands_per_message"]
        row("7", f"Redis commands per message, 4 senders, one domain ({held['count']:,} recipients): unlimited / limited to {held['limit']}",
            f"{free['commands_per_message']:.1f} / {held['commands_per_message']:.1f} ({r:.2f} ×)", "≤ 1.5 ×", verdict(r <= 1.5))
        k = lambda d, key: d[key] / d["count"] * 1000
        row("7", "msg/s; CPU s per 1,000 messages, unlimited → limited: senders / Redis / whole machine",
            f"{fmt(rate(free))} / {fmt(rate(held))} msg/s; {k(free, 'sender_cpu_s'):.3f} → {k(held, 'sender_cpu_s'):.3f}"
            f" / {k(free, 'redis_cpu_s'):.3f} → {k(held, 'redis_cpu_s'):.3f} / {k(free, 'machine_cpu_s'):.3f} → {k(held, 'machine_cpu_s'):.3f}", "", "")
        top = lambda d: ", ".join(f"{c} {v}" for c, v in d["top"].items())
        row("7", "Redis commands per message by command, unlimited; limited", f"{top(free)}; {top(held)}", "", "")
    return "\n".join(out) + "\n"


def rounds(res):
    """The on/off pairs of every round (scripts/bench --rounds), side by side."""
    dirs = sorted((d for d in os.listdir(res) if d.startswith("round")), key=lambda d: int(d[5:]))
    out = []
    arch = [(d, load(os.path.join(res, d), "e2e.json"), load(os.path.join(res, d), "e2e-archive.json")) for d in dirs]
    arch = [a for a in arch if a[1] and a[2]]
    if arch:
        out.append("| round | first | archive off msg/s | on msg/s | on / off | sender CPU-ms per message off → on | RabbitMQ | whole machine | stream read back msg/s | bytes per message |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for d, off, on in arch:
            k = lambda r, n: r["procs"][n]["cpu_s"] / r["count"] * 1000
            pair = lambda n: f"{k(off, n):.3f} → {k(on, n):.3f}"
            st = on["stream"]
            first = "off" if off["t0_ms"] < on["t0_ms"] else "on"
            out.append(f"| {d[5:]} | {first} | {fmt(rate(off))} | {fmt(rate(on))} | {rate(on) / rate(off):.2f} | {pair('sender')} | {pair('rabbitmq')} | {pair('machine')} | "
                       f"{fmt(st['read_per_s'])} ({st['messages']:,} of {on['count']:,}) | {fmt(st['bytes'] / max(1, st['messages']))} |")
        out.append("")
    rules = [(d, load(os.path.join(res, d), "rules-off.json"), load(os.path.join(res, d), "rules-on.json")) for d in dirs]
    rules = [r for r in rules if r[1] and r[2]]
    if rules:
        out.append("| round | first | rules and checks off, recipients/s | on | on / off | expander CPU-µs per recipient off → on | Redis | accepted off / on | MX lookups on |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for d, off, on in rules:
            k = lambda r, key: r[key] / r["count"] * 1e6
            first = "off" if off["t0_ms"] < on["t0_ms"] else "on"
            out.append(f"| {d[5:]} | {first} | {fmt(rate(off))} | {fmt(rate(on))} | {rate(on) / rate(off):.2f} | "
                       f"{k(off, 'cpu_s'):.2f} → {k(on, 'cpu_s'):.2f} | {k(off, 'redis_cpu_s'):.2f} → {k(on, 'redis_cpu_s'):.2f} | "
                       f"{off['status'].get('accepted', 0):,} / {on['status'].get('accepted', 0):,} | {on['mx_lookups']:,} |")
        out.append("")
    return "\n".join(out)


def update(path, table_path):
    new = open(table_path).read()
    text = open(path).read() if os.path.exists(path) else ""
    block = f"{START}\n{new}{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + block + "\n"
    open(path, "w").write(text)


if __name__ == "__main__":
    if sys.argv[1] == "--update":
        update(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "--rounds":
        sys.stdout.write(rounds(sys.argv[2]))
    else:
        facts = json.load(open(sys.argv[2]))
        sys.stdout.write(table(sys.argv[1], facts))
