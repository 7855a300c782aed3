#!/usr/bin/env python3
"""Scripted SMTP server: a test peer for mailpipe's integration tests.

A real SMTP server (built on aiosmtpd) whose reply to each recipient is chosen
by the recipient's local part, so one test can give every recipient its own
fate. Started by `mailpipe-tests`' `ScriptedSmtp` (tests/src/scripted.rs).

Usage:
    python3 scripted_smtp.py --port PORT --dir DIR [--host 127.0.0.1]
                             [--slow-seconds 10] [--no-pipelining] [--no-smtputf8]
                             [--tls-cert CERT --tls-key KEY
                              [--tls-mode starttls|require-starttls|implicit]]
                             [--auth USER:PASSWORD] [--max-connections N]

It offers PIPELINING unless --no-pipelining is given, and SMTPUTF8 unless
--no-smtputf8 is given. With a certificate it
offers STARTTLS (`require-starttls`: refuses mail before it), or speaks TLS
from the first byte (`implicit`). With --auth it requires AUTH (PLAIN or
LOGIN) with that user and password, over TLS when TLS is configured.

Prints `READY` on stdout once listening. Exits cleanly on SIGTERM / SIGINT,
and, with --exit-on-stdin-eof, when its stdin closes (the test harness holds
the write end, so a crashed or interrupted test run leaves no server behind).

Recipient local part: `<behaviour>-<n>[-<anything>]@domain` (case-insensitive).
`n` is how many attempts fail before the recipient is accepted like any other
(0 = fail forever). Failures are counted per lowercase recipient address, in
memory, across connections (a restart starts from zero).

  behaviour  stage  reply while failing
  ---------  -----  -------------------------------------------------------
  ok         -      always 250 (n ignored)
  r421       RCPT   421 4.7.0 ..., then the server closes the connection
  r443       RCPT   451 4.4.3 Routing server failure
  r452       RCPT   452 4.2.2 Mailbox full
  r450       RCPT   450 4.2.1 The user you are trying to contact is receiving ...
  grey       RCPT   451 4.7.1 Greylisted, please try again later
  r550       RCPT   550 5.1.1 The email account that you tried to reach ...
  odd        RCPT   550 5.0.0 <rcpt>: not on the guest list of this party
                    (a text no shipped rule knows; it names the recipient)
  r554       DATA   554 5.7.1 Message rejected as spam by Content Filtering
  r552       DATA   552 5.3.4 Message size exceeds fixed limit
  slow       DATA   sleeps --slow-seconds, then 250 (the client should time
                    out first; if it waits, the message is accepted)
  drop       DATA   the whole message is read, then the connection is closed
                    without any reply

Any other local part is accepted with 250. With --commit-delay S, every
accepted message is written to mail/ first and its 250 sent S seconds later,
as a real MTA commits to its queue and then replies: a client that dies in
between leaves a delivered message whose outcome it never learned.

Connection limit: with `--max-connections N` (or `max_connections` in
DIR/control.json, read again whenever the file changes, so a test can switch
it at run time), a connection that would be the N+1-th open at once is
answered `421 4.7.0 Too many connections, try again later` at once, instead
of the greeting, and closed (N = 0 refuses every connection that way). Such
a connection is logged as `421` in connections.log; accepted ones as `1`.

DATA-stage behaviours only count
an attempt when the client gets as far as the end of DATA. With several
recipients in one transaction, RCPT decisions are per recipient; at the end of
DATA the first failing recipient's behaviour decides the one reply, and every
recipient still within its failure budget uses up one failure.

Output in DIR:
  mail/<unique>.eml   one file per accepted message (250 at end of DATA):
                      `X-Mail-Args: <sender>`, one `X-Rcpt-Args: <rcpt>` per
                      accepted recipient, `X-Session: tls=yes|no auth=<user>|-`,
                      then the message exactly as received.
                      Written under DIR/tmp/ and renamed, so never partial.
  connections.log     one line per TCP connection: `1` served, `421`
                      refused at connect (over the connection limit).
  attempts.jsonl      one JSON line per decision: every RCPT reply and, per
                      recipient, every end-of-DATA outcome:
                      {"rcpt", "stage": "rcpt"|"data", "code", "time", "action"}
                      code 0 = no reply was sent (drop, or the client gave up
                      while a `slow` reply was pending); action is one of
                      "reply", "close" (reply then disconnect), "drop",
                      "slow" (250 after the delay), "timeout".
"""

import argparse
import asyncio
import itertools
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import time
import weakref

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError:  # pragma: no cover - environment problem
    sys.stderr.write(
        "scripted_smtp.py: the Python package aiosmtpd is missing; "
        "install it with `python3 -m pip install aiosmtpd`\n"
    )
    sys.exit(2)

log = logging.getLogger("scripted_smtp")

# behaviour -> (stage, reply while failing); reply None = special handling.
BEHAVIOURS = {
    "r421": ("rcpt", "421 4.7.0 Service not available, closing transmission channel"),
    "r443": ("rcpt", "451 4.4.3 Routing server failure"),
    "r452": ("rcpt", "452 4.2.2 Mailbox full"),
    "r450": (
        "rcpt",
        "450 4.2.1 The user you are trying to contact is receiving mail at a rate "
        "that prevents additional messages from being delivered",
    ),
    "grey": ("rcpt", "451 4.7.1 Greylisted, please try again later"),
    "r550": ("rcpt", "550 5.1.1 The email account that you tried to reach does not exist"),
    "odd": ("rcpt", "550 5.0.0 <{rcpt}>: not on the guest list of this party"),
    "r554": ("data", "554 5.7.1 Message rejected as spam by Content Filtering"),
    "r552": ("data", "552 5.3.4 Message size exceeds fixed limit"),
    "slow": ("data", None),
    "drop": ("data", None),
}
LOCAL_PART = re.compile(r"^([a-z0-9]+)-(\d+)(?:-.*)?$")

RCPT_OK = "250 2.1.5 OK"
MAIL_OK = "250 2.1.0 OK"


def parse_behaviour(address):
    """(behaviour, n) for a recipient, or None when it is always accepted."""
    local = address.rsplit("@", 1)[0].lower()
    m = LOCAL_PART.match(local)
    if not m or m.group(1) not in BEHAVIOURS:
        return None
    return m.group(1), int(m.group(2))


class ScriptedSMTP(SMTP):
    """aiosmtpd's SMTP with one hook: the handler can ask, by setting
    `after_reply` on the connection, for the connection to be closed right
    after the next reply ("close") or instead of it ("drop")."""

    after_reply = None
    refused = False

    def connection_made(self, transport):
        # A STARTTLS upgrade calls this again on the same protocol: it is
        # not a new connection.
        if self.transport is None:
            self.refused = not self.event_handler.connected()
        super().connection_made(transport)

    def connection_lost(self, exc):
        if not self.refused:
            self.event_handler.disconnected()
        self.refused = True  # counted once
        super().connection_lost(exc)

    async def _handle_client(self):
        if self.refused:
            # Over the connection limit: 421 instead of the greeting.
            await super().push("421 4.7.0 Too many connections, try again later")
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    async def push(self, status):
        action, self.after_reply = self.after_reply, None
        if action == "drop":
            if self.transport is not None:
                self.transport.close()
            return
        await super().push(status)  # write + drain: the reply is flushed
        if action == "close" and self.transport is not None:
            self.transport.close()


class Handler:
    def __init__(
        self, directory, slow_seconds, pipelining=True, commit_delay=0.0, max_connections=None
    ):
        self.commit_delay = commit_delay
        self.pipelining = pipelining
        self.mail_dir = os.path.join(directory, "mail")
        self.tmp_dir = os.path.join(directory, "tmp")
        os.makedirs(self.mail_dir, exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)
        self.attempts = open(os.path.join(directory, "attempts.jsonl"), "a", encoding="utf-8")
        self.connections = open(os.path.join(directory, "connections.log"), "a", encoding="utf-8")
        self.slow_seconds = slow_seconds
        self.control_path = os.path.join(directory, "control.json")
        self.control_mtime = None
        self.max_connections = max_connections
        self.open = 0  # connections served now
        self.failures = {}  # lowercase address -> failures so far
        self.seq = itertools.count()

    # --- bookkeeping -------------------------------------------------------

    def record(self, rcpt, stage, code, action="reply"):
        if self.attempts.closed:  # shutting down
            return
        line = json.dumps(
            {"rcpt": rcpt, "stage": stage, "code": code, "time": time.time(), "action": action}
        )
        self.attempts.write(line + "\n")  # one write per line: readers see whole lines
        self.attempts.flush()

    def read_control(self):
        """Takes up DIR/control.json when it changed (run-time limits)."""
        try:
            mtime = os.stat(self.control_path).st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self.control_mtime:
            return
        self.control_mtime = mtime
        try:
            with open(self.control_path, encoding="utf-8") as f:
                control = json.load(f)
        except (OSError, ValueError):
            return  # being written: read again on the next connection
        self.max_connections = control.get("max_connections")

    def connected(self):
        """Whether a new connection is served (False: over the limit).
        One line per TCP connection in connections.log."""
        self.read_control()
        served = self.max_connections is None or self.open < self.max_connections
        if served:
            self.open += 1
        if not self.connections.closed:
            self.connections.write("1\n" if served else "421\n")
            self.connections.flush()
        return served

    def disconnected(self):
        self.open -= 1

    def fails_now(self, address, n):
        """Whether this attempt fails; uses up one failure if it does."""
        key = address.lower()
        done = self.failures.get(key, 0)
        if n == 0 or done < n:
            self.failures[key] = done + 1
            return True
        return False

    def save(self, server, session, envelope):
        name = "%d-%d-%06d.eml" % (time.time_ns(), os.getpid(), next(self.seq))
        head = "X-Mail-Args: <%s>\r\n" % (envelope.mail_from or "")
        head += "".join("X-Rcpt-Args: <%s>\r\n" % r for r in envelope.rcpt_tos)
        head += "X-Session: tls=%s auth=%s\r\n" % (
            # STARTTLS sets session.ssl; implicit TLS is on the transport.
            "yes" if session.ssl or server.transport.get_extra_info("sslcontext") else "no",
            (session.auth_data.login.decode() if session.authenticated else "-"),
        )
        tmp = os.path.join(self.tmp_dir, name)
        with open(tmp, "wb") as f:
            f.write(head.encode("utf-8"))
            f.write(envelope.original_content)
        os.replace(tmp, os.path.join(self.mail_dir, name))
        return name

    # --- aiosmtpd hooks ----------------------------------------------------

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        extra = ["250-ENHANCEDSTATUSCODES"]
        if self.pipelining:
            # aiosmtpd reads commands one by one from its stream, so it
            # serves pipelined commands in order (RFC 2920).
            extra.append("250-PIPELINING")
        return responses[:-1] + extra + [responses[-1]]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return MAIL_OK

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        b = parse_behaviour(address)
        if b is not None:
            behaviour, n = b
            stage, reply = BEHAVIOURS[behaviour]
            if stage == "rcpt" and self.fails_now(address, n):
                if behaviour == "r421":
                    server.after_reply = "close"
                    self.record(address, "rcpt", 421, "close")
                else:
                    self.record(address, "rcpt", int(reply[:3]))
                return reply.replace("{rcpt}", address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        self.record(address, "rcpt", 250)
        return RCPT_OK

    async def handle_DATA(self, server, session, envelope):
        rcpts = list(envelope.rcpt_tos)
        # Decide per recipient; the first failure decides the reply.
        decision = None  # (behaviour, reply)
        for address in rcpts:
            b = parse_behaviour(address)
            if b is None:
                continue
            behaviour, n = b
            stage, reply = BEHAVIOURS[behaviour]
            if stage == "data" and self.fails_now(address, n):
                if decision is None:
                    decision = (behaviour, reply)

        if decision is None:
            name = self.save(server, session, envelope)
            for r in rcpts:
                self.record(r, "data", 250)
            if self.commit_delay > 0:
                await asyncio.sleep(self.commit_delay)
            return "250 2.0.0 OK queued as %s" % name

        behaviour, reply = decision
        if behaviour == "drop":
            server.after_reply = "drop"
            for r in rcpts:
                self.record(r, "data", 0, "drop")
            return "451 (never sent: connection dropped)"
        if behaviour == "slow":
            try:
                await asyncio.sleep(self.slow_seconds)
            except asyncio.CancelledError:  # the client hung up while waiting
                for r in rcpts:
                    self.record(r, "data", 0, "timeout")
                raise
            if server.transport is None or server.transport.is_closing():
                for r in rcpts:
                    self.record(r, "data", 0, "timeout")
                return "250 2.0.0 OK (too late)"
            name = self.save(server, session, envelope)
            for r in rcpts:
                self.record(r, "data", 250, "slow")
            return "250 2.0.0 OK queued as %s (slowly)" % name
        for r in rcpts:
            self.record(r, "data", int(reply[:3]))
        return reply


async def serve(args):
    loop = asyncio.get_running_loop()
    handler = Handler(
        args.dir,
        args.slow_seconds,
        pipelining=not args.no_pipelining,
        commit_delay=args.commit_delay,
        max_connections=args.max_connections,
    )
    connections = weakref.WeakSet()
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    security = {}
    if tls is not None and args.tls_mode != "implicit":
        security["tls_context"] = tls
        security["require_starttls"] = args.tls_mode == "require-starttls"
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login == user.encode()
                and auth_data.password == password.encode()
            )
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        security["authenticator"] = authenticator
        security["auth_required"] = True
        security["auth_require_tls"] = tls is not None

    def factory():
        proto = ScriptedSMTP(
            handler,
            data_size_limit=256 * 1024 * 1024,
            enable_SMTPUTF8=not args.no_smtputf8,
            hostname="scripted-smtp.test",  # never socket.getfqdn() per connection
            ident="mailpipe scripted SMTP",
            timeout=300,
            loop=loop,
            **security,
        )
        connections.add(proto)
        return proto

    try:
        server = await loop.create_server(
            factory,
            host=args.host,
            port=args.port,
            backlog=1024,
            ssl=tls if args.tls_mode == "implicit" else None,
        )
    except OSError as e:
        sys.stderr.write("scripted_smtp.py: cannot listen on %s:%d: %s\n" % (args.host, args.port, e))
        return 1

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_on_stdin_eof:

        def watch_stdin():
            while sys.stdin.buffer.read(4096):
                pass
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_stdin, daemon=True).start()

    sys.stdout.write("READY\n")
    sys.stdout.flush()
    await stop.wait()

    server.close()
    for proto in list(connections):
        if proto.transport is not None:
            proto.transport.close()
    await server.wait_closed()
    await asyncio.sleep(0.05)  # let connection_lost() run for the closed ones
    handler.attempts.close()
    return 0


def main():
    p = argparse.ArgumentParser(description="Scripted SMTP test peer for mailpipe")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True, help="output directory (mail/, attempts.jsonl)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--slow-seconds", type=float, default=10.0)
    p.add_argument("--no-pipelining", action="store_true", help="do not offer PIPELINING")
    p.add_argument(
        "--no-smtputf8",
        action="store_true",
        help="do not offer SMTPUTF8 (non-ASCII addresses must not be sent)",
    )
    p.add_argument(
        "--commit-delay",
        type=float,
        default=0.0,
        help="seconds between writing an accepted message and replying 250",
    )
    p.add_argument("--tls-cert", help="PEM certificate chain: offer STARTTLS, or see --tls-mode")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument(
        "--tls-mode", choices=["starttls", "require-starttls", "implicit"], default="starttls"
    )
    p.add_argument("--auth", help="USER:PASSWORD: require AUTH with these credentials")
    p.add_argument(
        "--max-connections",
        type=int,
        help="answer 421 at connect past this many connections open at once",
    )
    p.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin reaches end of file (the parent went away)",
    )
    p.add_argument("--log-level", default=os.environ.get("SCRIPTED_SMTP_LOG", "WARNING"))
    args = p.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="scripted_smtp %(levelname)s %(name)s: %(message)s",
    )
    os.makedirs(args.dir, exist_ok=True)
    sys.exit(asyncio.run(serve(args)))


if __name__ == "__main__":
    main()
