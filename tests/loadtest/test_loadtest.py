"""`vybe loadtest` against a gateway started by the suite, with an in-process moderation worker."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING

import msgspec
import pytest

from loadtest import main
from loadtest.cli import build_parser, parse_args, run_async
from moderation.policy import Policy
from moderation.scorers import load_scorer
from workers.consumer import Worker

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


async def _worker(live) -> tuple[asyncio.Event, asyncio.Task[None]]:
    gw = live.gateway
    s = msgspec.structs.replace(gw.settings, worker_block_ms=20)
    w = Worker(s, gw.pool, gw.redis, load_scorer("light"), Policy.from_settings("flag", ""), "lt-worker")
    await w.ensure_group()
    stop = asyncio.Event()
    return stop, asyncio.create_task(w.run(stop))


async def test_short_run_reports_and_passes_correctness(start_gateway, tmp_path: Path) -> None:
    """A 5 s run with every role and reader churn: the report is complete and the correctness check passes.

    Half the writes are toxic: at 0.3, a run on a busy CI machine once made ~10 writes and none of them toxic
    (0.7^10 ~ 3 %), and the check that toxic posts reach moderators had nothing to check."""
    live = await start_gateway()
    stop, worker = await _worker(live)
    try:
        args = parse_args([
            "--url", live.url, "--jwt-secret", live.settings.jwt_secret, "--readers", "20", "--posters", "3",
            "--reactors", "5", "--moderators", "1", "--ramp-up", "1", "--duration", "5", "--churn", "2",
            "--toxic-share", "0.5", "--moderation-timeout", "15", "--sources", "2", "--slo-p99-ms", "5000",
            "--slo-error-rate", "0", "--out", str(tmp_path / "out"),
        ])
        report = await run_async(args)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)

    assert report["correctness"]["passed"] is True, report["correctness"]
    counters = report["correctness"]["counters"]
    assert counters["checked"] and counters["vybes_checked"] >= 5 and counters["mismatch_count"] == 0
    assert counters["reactions_expected"] + counters["comments_expected"] > 0
    mod = report["correctness"]["moderation"]
    assert mod["checked"] and mod["toxic_posts"] > 0 and mod["reached_moderators"] == mod["toxic_posts"]
    assert report["slo"]["passed"] is True
    c = report["connections"]
    assert c["target"] == 29 and c["failed"] == 0 and c["opened"] >= 30  # + the seeder, + churn reconnects
    assert c["reconnects"] > 0 and report["resume"]["recovered"] > 0
    assert report["deliveries"]["total"] > 0 and report["deliveries"]["per_s_steady"] > 0
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        assert report["latency_ms"][key] is not None
    assert {"auth", "subscribe", "post_vybe", "comment", "react", "claim", "resolve"} <= set(report["ack_latency_ms"])
    assert report["errors"]["total"] == 0, report["errors"]
    assert report["writes"]["vybes"] > 0 and report["writes"]["reactions_applied"] > 0
    assert report["moderation"]["resolves"] > 0
    assert report["generator"]["cpu_pct_mean"] >= 0 and report["generator"]["bottleneck"] is False
    assert report["timeline"] and report["latency_histogram"]["count"]
    out = tmp_path / "out"
    assert json.loads((out / "report.json").read_text())["run_id"] == report["run_id"]
    for png in ("latency_over_time.png", "latency_distribution.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_digest_feed_counts_every_vybe_and_measures_latency_per_item(start_gateway, tmp_path: Path) -> None:
    """On a digest feed, readers get `feed.digest` frames: the report counts the vybes they carry
    (not the frames), and the latency is each included vybe's, from its publication."""
    config = tmp_path / "ns.toml"
    config.write_text('[namespaces.feed]\ndelivery = "digest"\ndigest_interval_s = 0.5\ndigest_items = 50\n')
    live = await start_gateway(namespaces=str(config))
    args = parse_args([
        "--url", live.url, "--jwt-secret", live.settings.jwt_secret, "--readers", "10", "--posters", "2",
        "--reactors", "0", "--moderators", "0", "--ramp-up", "0.5", "--duration", "4", "--post-rate", "3",
        "--reader-vybes", "0", "--reader-looprooms", "0", "--sources", "0", "--skip-moderation-check",
        "--progress", "none",
    ])
    report = await run_async(args)
    d = report["deliveries"]
    posted = report["writes"]["vybes"]
    assert posted >= 8 and d["digests"] > 0, (posted, d)
    # Every reader receives every vybe posted while it listened (all 10 were subscribed before the posts).
    assert d["total"] >= 10 * posted * 0.9 and d["total"] > 2 * d["digests"], (posted, d)
    # An item waits for its digest: up to the 0.5 s interval, never more than a few of them.
    assert 0 < report["latency_ms"]["p50_ms"] < 2000 and report["latency_ms"]["max_ms"] < 5000, report["latency_ms"]


async def test_missed_slo_exits_non_zero(start_gateway) -> None:
    """An impossible p99 SLO makes the command exit 1 (so it can gate a deploy)."""
    live = await start_gateway()
    argv = ["--url", live.url, "--jwt-secret", live.settings.jwt_secret, "--readers", "5", "--posters", "1",
            "--reactors", "2", "--moderators", "0", "--ramp-up", "0.5", "--duration", "2", "--sources", "0",
            "--skip-moderation-check", "--slo-p99-ms", "0.0001", "--progress", "none"]
    # The real command, in its own process, while this event loop serves the gateway.
    missed = await _vybe_loadtest(argv)
    assert missed[0] == 1, missed[1]
    assert "p99_ms MISSED" in missed[1] and "=> FAIL" in missed[1]
    met = await _vybe_loadtest([*argv[:-4], "--slo-p99-ms", "60000", "--progress", "none"])
    assert met[0] == 0, met[1]


async def _vybe_loadtest(argv: list[str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli", "loadtest", *argv,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode()


def test_help_documents_every_option() -> None:
    """`vybe loadtest --help` has a help text for every option."""
    parser = build_parser()
    undocumented = [a.option_strings for a in parser._actions if a.option_strings and not a.help]
    assert undocumented == []
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
