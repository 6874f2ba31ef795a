"""``vybe loadtest``: options, then one run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
from typing import Any

DESCRIPTION = """\
Drive running gateways with simulated users and report what they experienced.

Readers subscribe to the feed, some hot vybes and some looprooms; posters post
vybes and comments (a share of them toxic, from a list that every bundled
scorer flags); reactors react and unreact, most of it on a few hot vybes;
moderators watch mod:flagged, claim and resolve. Every user reconnects with
backoff when dropped and resubscribes with `since` = its last offset; an
unanswered write is resent with the same id (applied once).

Measured: connections opened/failed, deliveries per second, publish-to-receipt
latency (from each event's server `ts`; the clocks of this machine and the
gateway's must agree), ack latency per command, errors by code, reconnects and
resumes, and the generator's own CPU. At the end it checks that the counters
the gateway reports (GET /api/vybes/{id}: reaction_count, comment_count) equal
what the users did, and that every toxic post arrived on mod:flagged (needs a
running `vybe worker`; --skip-moderation-check without one).

Exit status: 0 every SLO met; 1 an SLO or the correctness check missed;
2 bad options or no gateway reachable.
"""

EPILOG = """\
examples:
  vybe loadtest --url ws://127.0.0.1:8000/ws --jwt-secret "$VYBE_JWT_SECRET" --duration 30
  vybe loadtest --url ws://10.0.0.5:8000/ws,ws://10.0.0.6:8000/ws --readers 10000 --ramp-up 30 \\
      --duration 120 --slo-p99-ms 250 --slo-error-rate 0.001 --out loadtest-out --cpu 1
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vybe loadtest", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("target")
    g.add_argument("--url", action="append", default=[], metavar="URL",
                   help="gateway WebSocket URL, e.g. ws://127.0.0.1:8000/ws; repeat or comma-separate for several "
                        "nodes (users are spread round-robin; a reconnecting user tries the next one). REST checks "
                        "use the first node's http://host:port")
    g.add_argument("--jwt-secret", default=None,
                   help="HS256 secret to mint the users' tokens (MEMBER; MODERATOR for moderators); default: "
                        "env VYBE_JWT_SECRET")
    g = p.add_argument_group("users")
    g.add_argument("--readers", type=int, default=100, help="readers: subscribe and read (default 100)")
    g.add_argument("--posters", type=int, default=5, help="posters: vybes and comments (default 5)")
    g.add_argument("--reactors", type=int, default=10, help="reactors: react/unreact with hot-spot skew (default 10)")
    g.add_argument("--moderators", type=int, default=1, help="moderators on mod:flagged (default 1)")
    g.add_argument("--reader-vybes", type=int, default=2,
                   help="hot vybe channels each reader subscribes to (default 2)")
    g.add_argument("--reader-looprooms", type=int, default=1,
                   help="looproom channels each reader subscribes to (default 1)")
    g.add_argument("--looprooms", type=int, default=5, help="distinct looproom channels in the run (default 5)")
    g = p.add_argument_group("rates and timing")
    g.add_argument("--post-rate", type=float, default=0.5, help="vybes per second per poster (default 0.5)")
    g.add_argument("--comment-rate", type=float, default=1.0, help="comments per second per poster (default 1)")
    g.add_argument("--toxic-share", type=float, default=0.1,
                   help="share of posts and comments that are toxic (default 0.1)")
    g.add_argument("--react-rate", type=float, default=2.0, help="react/unreact per second per reactor (default 2)")
    g.add_argument("--hot-vybes", type=int, default=5,
                   help="hot-spot vybes created at start; readers watch them, most reactions and comments land "
                        "on them (default 5)")
    g.add_argument("--hot-share", type=float, default=0.8,
                   help="share of reactions and comments that go to the hot vybes; the rest spread over every "
                        "vybe posted in the run (default 0.8)")
    g.add_argument("--mod-rate", type=float, default=5.0, help="cases each moderator handles per second (default 5)")
    g.add_argument("--mod-action", default="hide", choices=["hide", "remove", "dismiss"],
                   help="what moderators do with a toxic post's case (a false positive is dismissed) (default hide)")
    g.add_argument("--churn", type=float, default=0,
                   help="reader sockets dropped per second during the run; each reconnects and resumes with "
                        "`since` (default 0)")
    g.add_argument("--ramp-up", type=float, default=5.0, help="seconds over which users connect (default 5)")
    g.add_argument("--duration", type=float, default=30.0,
                   help="seconds of load after the ramp-up (default 30)")
    g.add_argument("--drain-timeout", type=float, default=15.0,
                   help="seconds to wait for the answers to the last writes (default 15)")
    g.add_argument("--moderation-timeout", type=float, default=30.0,
                   help="seconds, after the load stops, for every toxic post to reach mod:flagged (default 30)")
    g = p.add_argument_group("checks and SLOs (exit status 1 when one is missed)")
    g.add_argument("--slo-p99-ms", type=float, default=None, help="p99 publish-to-receipt latency limit (ms)")
    g.add_argument("--slo-error-rate", type=float, default=None,
                   help="limit on errors / commands sent, e.g. 0.001")
    g.add_argument("--slo-connect-failures", type=int, default=None, help="limit on failed connection attempts")
    g.add_argument("--skip-moderation-check", action="store_true",
                   help="do not require every toxic post to reach mod:flagged (when no worker runs)")
    g.add_argument("--skip-counter-check", action="store_true",
                   help="do not compare the gateway's reaction/comment counters with what the users did")
    g.add_argument("--check-max", type=int, default=5000, help="most vybes whose counters are checked (default 5000)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="write DIR/report.json, DIR/latency_over_time.png and DIR/latency_distribution.png")
    g.add_argument("--json", action="store_true", help="print the JSON report on stdout (instead of the summary)")
    g.add_argument("--progress", default="auto", choices=["auto", "rich", "plain", "none"],
                   help="live display on stderr: rich panel, one line a second, or none (default: rich on a "
                        "terminal, none otherwise)")
    g = p.add_argument_group("generator")
    g.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU core (sched_setaffinity)")
    g.add_argument("--sources", type=int, default=8,
                   help="local source addresses 127.0.0.2.. for loopback targets, so the ephemeral port range "
                        "(and TIME_WAIT) is per address (default 8; 0: let the kernel pick)")
    g.add_argument("--connect-concurrency", type=int, default=200, help="handshakes in flight (default 200)")
    g.add_argument("--connect-timeout", type=float, default=30.0,
                   help="seconds for a handshake + auth ack (default 30)")
    g.add_argument("--run-id", default=None, help="prefix of the simulated user ids (default: time and pid)")
    return p


def _validate(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    for name in ("readers", "posters", "reactors", "moderators", "reader_vybes", "reader_looprooms", "looprooms",
                 "hot_vybes", "sources"):
        if getattr(a, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("post_rate", "comment_rate", "react_rate", "mod_rate", "ramp_up", "churn"):
        if getattr(a, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if a.duration <= 0:
        p.error("--duration must be > 0")
    for name in ("toxic_share", "hot_share"):
        if not 0 <= getattr(a, name) <= 1:
            p.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    if not a.url:
        p.error("--url is required")
    if (a.reactors or a.posters) and not a.hot_vybes:
        p.error("--hot-vybes must be >= 1 when there are posters or reactors")


async def run_async(args: argparse.Namespace, display_mode: str = "none") -> dict[str, Any]:
    """One run (in the caller's event loop); returns the report. Raises RunError."""
    from loadtest.report import Display, finish
    from loadtest.runner import Run

    run = Run(args)
    with Display(display_mode) as display:
        report = await run.execute(display if display_mode != "none" else None)
    finish(report, run, args.out)
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    _validate(p, args)
    return args


def main(argv: list[str] | None = None) -> int:
    from loadtest.report import summary_text
    from loadtest.runner import RunError

    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = args.readers + args.posters + args.reactors + args.moderators + 256
    if need > max(soft, hard):
        print(f"vybe loadtest: warning: open-file limit {hard} < {need} sockets (raise ulimit -n)", file=sys.stderr)
    if args.cpu is not None:
        try:
            os.sched_setaffinity(0, {args.cpu})
        except (OSError, AttributeError) as err:
            print(f"vybe loadtest: --cpu {args.cpu}: {err}", file=sys.stderr)
            return 2
    mode = args.progress
    if mode == "auto":
        mode = "rich" if sys.stderr.isatty() else "none"
    try:
        try:
            import uvloop

            report = uvloop.run(run_async(args, mode))
        except ImportError:
            report = asyncio.run(run_async(args, mode))
    except RunError as err:
        print(f"vybe loadtest: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(summary_text(report))
        if args.out:
            print(f"  report        {args.out}/report.json {' '.join(report.get('plots', []))}")
    return 0 if report["slo"]["passed"] else 1
