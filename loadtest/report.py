"""The live progress display (rich), the final summary, the JSON report and the PNG plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from loadtest.stats import bucket_value_ms

if TYPE_CHECKING:
    from loadtest.runner import Run


class Display:
    """A rich live panel refreshed once a second by the run's sampler; plain lines when not a terminal."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.live: Any = None
        if mode == "rich":
            from rich.console import Console
            from rich.live import Live

            self.live = Live(console=Console(stderr=True), refresh_per_second=1, transient=False)

    def __enter__(self) -> Self:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, run: Run) -> None:
        tl = run.stats.timeline
        row = tl[-1] if tl else {}
        s = run.stats
        if self.mode == "plain":
            print(f"[loadtest {row.get('t', 0):6.0f}s] {run.phase}: open {row.get('open')} "
                  f"deliveries {row.get('delivered_per_s')}/s p99 {row.get('p99_ms')} ms "
                  f"errors {sum(s.errors.values())} gen cpu {row.get('generator_cpu_pct')}%",
                  file=sys.stderr, flush=True)
            return
        if self.live is None:
            return
        from rich.table import Table

        t = Table(title=f"vybe loadtest {run.run_id}: {run.phase}", show_header=False, expand=False)
        t.add_column(style="bold")
        t.add_column()
        lat = s.latency
        t.add_row("elapsed", f"{row.get('t', 0):.0f} s of {run.args.ramp_up + run.args.duration:.0f} s")
        t.add_row("sockets open", f"{row.get('open', 0)} / {len(run.users)}  (opened {s.conn_opened}, "
                                  f"failed {s.conn_failed}, reconnects {s.reconnects})")
        t.add_row("deliveries", f"{row.get('delivered_per_s', 0)}/s  (total {s.delivered})")
        t.add_row("latency (this s)", f"p50 {row.get('p50_ms')} ms  p99 {row.get('p99_ms')} ms")
        t.add_row("latency (run)", f"p50 {_f(lat.quantile_ms(0.5))}  p95 {_f(lat.quantile_ms(0.95))}  "
                                   f"p99 {_f(lat.quantile_ms(0.99))}  max {_f(lat.max * 1000 if lat.n else None)} ms")
        t.add_row("commands", f"{row.get('commands_per_s', 0)}/s  (total {sum(s.commands.values())})")
        t.add_row("errors", ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items())) or "none")
        led = run.ledger
        t.add_row("writes", f"vybes {led.vybes_posted} (toxic {led.toxic_vybes}), comments {led.comments_posted} "
                            f"(toxic {led.toxic_comments}), "
                            f"reactions +{led.reactions_applied}/-{led.unreactions_applied}")
        t.add_row("moderation", f"flagged {len(led.flagged)} of {len(led.toxic)} toxic, claims {led.claims}, "
                                f"resolved {led.resolves}")
        t.add_row("resumes", f"{s.resumes} (recovered {s.resumes_recovered}, not {s.resumes_not_recovered})")
        t.add_row("generator cpu", f"{row.get('generator_cpu_pct', 0)}% of one core")
        self.live.update(t)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def finish(report: dict[str, Any], run: Run, out: str | None) -> None:
    """Fill the histogram, write report.json and the plots under ``out``."""
    h = run.stats.latency
    nz = [(bucket_value_ms(i), c) for i, c in enumerate(h.counts) if c]
    report["latency_histogram"] = {"bucket_ms": [round(b, 3) for b, _ in nz], "count": [c for _, c in nz]}
    if not out:
        return
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    try:
        report["plots"] = plot(report, d)
    except ImportError as err:
        report["plots"] = []
        report["plots_error"] = f"matplotlib is not installed ({err}): pip install 'vybe-live[loadtest]'"
    (d / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def plot(report: dict[str, Any], d: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    per = [r for r in report["latency_per_second"] if r["count"]]
    fig, ax = plt.subplots(figsize=(10, 5))
    if per:
        t = [r["t"] for r in per]
        for key, style in (("p50_ms", "-"), ("p95_ms", "--"), ("p99_ms", "-"), ("max_ms", ":")):
            ax.plot(t, [r[key] for r in per], style, label=key.replace("_ms", ""))
        ax.set_yscale("log")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("publish-to-receipt latency (ms)")
    ax.set_title(f"vybe loadtest {report['run_id']}: latency over time")
    ax2 = ax.twinx()
    tl = report["timeline"]
    ax2.plot([r["t"] for r in tl], [r["delivered_per_s"] for r in tl], color="grey", alpha=0.4, label="deliveries/s")
    ax2.set_ylabel("deliveries per second")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    p = d / "latency_over_time.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    files.append(str(p))

    hist = report["latency_histogram"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5))
    if hist["count"]:
        a1.bar(range(len(hist["count"])), hist["count"], width=1.0)
        ticks = list(range(0, len(hist["bucket_ms"]), max(1, len(hist["bucket_ms"]) // 8)))
        a1.set_xticks(ticks, [f"{hist['bucket_ms'][i]:.3g}" for i in ticks], rotation=30)
        total = sum(hist["count"])
        acc, cdf = 0, []
        for c in hist["count"]:
            acc += c
            cdf.append(acc / total)
        a2.plot(hist["bucket_ms"], cdf)
        a2.set_xscale("log")
        for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
            v = report["latency_ms"][f"{name}_ms"]
            if v:
                a2.axvline(v, linestyle="--", alpha=0.5)
                a2.text(v, q, f" {name} {v:.1f} ms", fontsize=8)
    a1.set_xlabel("latency bucket (ms, log-spaced)")
    a1.set_ylabel("deliveries")
    a1.set_title("latency distribution")
    a2.set_xlabel("publish-to-receipt latency (ms)")
    a2.set_ylabel("fraction of deliveries")
    a2.set_title("cumulative")
    a2.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    p = d / "latency_distribution.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    files.append(str(p))
    return files


def summary_text(r: dict[str, Any]) -> str:
    """A short human summary (printed at the end)."""
    c, lat, e = r["connections"], r["latency_ms"], r["errors"]
    lines = [
        (f"vybe loadtest {r['run_id']}: {r['users']['total']} users against {', '.join(r['urls'])}, "
         f"{r['duration_s']} s"),
        (f"  connections   opened {c['opened']}, failed {c['failed']}, peak open {c['peak_open']}, "
         f"reconnects {c['reconnects']}, closes {c['closes_by_code'] or '{}'}"),
        (f"  deliveries    {r['deliveries']['total']} ({r['deliveries']['per_s_steady']}/s steady, "
         f"peak {r['deliveries']['per_s_peak']}/s)"),
        (f"  latency       p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms, p99 {lat['p99_ms']} ms, "
         f"max {lat['max_ms']} ms"),
        "  acks          " + ", ".join(f"{k} p99 {v['p99_ms']} ms" for k, v in r["ack_latency_ms"].items()),
        f"  errors        {e['total']} of {r['commands']['total']} commands ({e['rate']:.4%}) {e['by_code'] or ''}",
        (f"  resumes       {r['resume']['resubscribes_with_since']} (recovered {r['resume']['recovered']}, "
         f"not {r['resume']['not_recovered']}, replayed {r['resume']['replayed_events']} events)"),
        f"  writes        {r['writes']}",
        f"  moderation    {r['moderation']}",
        f"  correctness   {_check(r['correctness'])}",
        f"  generator     {r['generator']['note']}",
        "  SLO           " + ", ".join(f"{k} {'ok' if v['passed'] else 'MISSED'}"
                                       + (f" ({v.get('actual')} vs {v.get('limit')})" if "limit" in v else "")
                                       for k, v in r["slo"].items() if isinstance(v, dict))
        + f"  => {'PASS' if r['slo']['passed'] else 'FAIL'}",
    ]
    return "\n".join(lines)


def _check(c: dict[str, Any]) -> str:
    parts = []
    ct = c["counters"]
    if ct.get("checked"):
        parts.append(f"counters {'ok' if ct['passed'] else 'MISMATCH'} ({ct['vybes_checked']} vybes, "
                     f"{ct['mismatch_count']} mismatched, {ct['skipped_uncertain']} skipped as uncertain)")
    else:
        parts.append(f"counters not checked ({ct.get('why')})")
    m = c["moderation"]
    if m.get("checked"):
        parts.append(f"moderation {'ok' if m['passed'] else 'MISSED'} ({m['reached_moderators']} of "
                     f"{m['toxic_posts']} toxic posts reached mod:flagged)")
    else:
        parts.append(f"moderation not checked ({m.get('why')})")
    return "; ".join(parts)
