"""Write a benchmark run as JSON and as the markdown table the README shows."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

SCENARIOS = {
    "hello": "GET /hello, bare FastAPI app (baseline)",
    "recommend_warm": "POST /v1/recommend, known users, warm cache",
    "recommend_warm_seen": "POST /v1/recommend, as above, each user with a 200-item seen set",
    "recommend_filters": "POST /v1/recommend, known users, filters + exclusions",
    "recommend_cold": "POST /v1/recommend, new user + 10-item history (cache miss)",
    "retrieve": "POST /v1/retrieve, by item or by history",
    "similar": "GET /v1/items/{id}/similar",
    "complementary": "GET /v1/items/{id}/complementary (IN.OUT, second index)",
    "events": "POST /v1/events, one event",
    "recommend_search": "POST /v1/recommend, warm users, one random exclusion (search every time)",
    "recommend_filter10": "POST /v1/recommend, as above + a genre held by ~10% of items",
    "recommend_filter1": "POST /v1/recommend, as above + a genre held by ~1% of items",
}


def load_average() -> list[float]:
    """1, 5 and 15 minute load: the bench shares the machine, so the table says how busy it was."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), cpu)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": load_average(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def markdown(result: dict[str, Any]) -> str:
    m, r = result["machine"], result["run"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores (1-min load average "
        f"{m['load_average_at_start'][0]} at start, {m.get('load_average_at_end', ['?'])[0]} "
        f"at end), {m['os']}, Python {m['python']}.",
        f"Run {r['started_at']}: one uvicorn worker, real Redis ({r['redis']}), bundle "
        f"`{r['bundle_version']}` ({r['num_items']} items, dim {r['embedding_dim']}); wrk "
        f"{r['wrk_threads']} thread, {r['connections']} connections, {r['duration_s']:g} s per "
        "scenario after a warm-up.",
        "",
        "| scenario | what | req/s | p50 ms | p99 ms | vs hello | failed | tower runs/req "
        "| cache hits/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    hello = result["scenarios"].get("hello", {}).get("rps") or 0.0
    for name, s in result["scenarios"].items():
        ratio = f"{s['rps'] / hello:.2f}" if hello else "-"
        svc = s.get("service") or {}
        encodes = f"{svc['encodes_per_request']:.2f}" if svc else "-"
        hits = f"{svc['cache_hits_per_request']:.2f}" if svc else "-"
        breaker = " (breaker open)" if svc.get("breaker_open_at_end") else ""
        lines.append(
            f"| {name} | {SCENARIOS.get(name, name)} | {s['rps']:,.0f} | {s['p50_ms']:.2f} "
            f"| {s['p99_ms']:.2f} | {ratio} | {s['failed']}{breaker} | {encodes} | {hits} |"
        )
    if result.get("paced"):
        lines += [
            "",
            f"At half of each one's max throughput ({r['paced_connections']} connections, "
            "exponential pauses):",
            "",
            "| scenario | target req/s | achieved req/s | p50 ms | p99 ms | failed |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, p in result["paced"].items():
            lines.append(
                f"| {name} | {p['target_rps']:,.0f} | {p['rps']:,.0f} | {p['p50_ms']:.2f} "
                f"| {p['p99_ms']:.2f} | {p['failed']} |"
            )
    if result.get("ratio") is not None:
        lines += ["", f"recommend (warm) / hello-world throughput: **{result['ratio']:.2f}**."]
    similar = result["scenarios"].get("similar", {}).get("rps")
    complementary = result["scenarios"].get("complementary", {}).get("rps")
    if similar and complementary:
        lines.append(f"complementary / similar throughput: **{complementary / similar:.2f}**.")
    if result.get("service_rss_mb"):
        lines.append(f"Service RSS after the run: {result['service_rss_mb']:.0f} MB.")
    return "\n".join(lines + _live_lines(result) + _scale_lines(result)) + "\n"


def _live_lines(result: dict[str, Any]) -> list[str]:
    live = result.get("live")
    if not live:
        return []
    lines = [
        "",
        f"With {live['count']:,} live items posted through `POST /admin/items` "
        f"({live['post_s']:.1f} s), the same service:",
        "",
        "| scenario | req/s | p99 ms | vs without | failed |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in live["scenarios"].items():
        lines.append(
            f"| {name} | {s['rps']:,.0f} | {s['p99_ms']:.2f} | {s['vs_without']:.2f} "
            f"| {s['failed']} |"
        )
    return lines


def _scale_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    if result.get("ready_s") is not None:
        lines.append(
            f"Time to ready (process start to /readyz 200, the benchmarked service): "
            f"{result['ready_s']:.1f} s."
        )
    filters = [
        f"{name}: `{f['genre']}`, {100 * f['selectivity']:.1f}% of items"
        for name, f in (result.get("filters") or {}).items()
        if name in result["scenarios"]
    ]
    if filters:
        lines.append("Filters: " + "; ".join(filters) + ".")
    memory = result.get("memory")
    if memory:
        one, two = memory["one_worker"], memory["two_workers"]
        lines += [
            "",
            "| workers | RSS MB (sum) | PSS MB (sum) | max worker RSS MB | ready s |",
            "|---:|---:|---:|---:|---:|",
            f"| 1 | {one['rss_mb']:,.0f} | {one['pss_mb']:,.0f} | {one['max_worker_rss_mb']:,.0f} "
            f"| {one['ready_s']:.1f} |",
            f"| 2 | {two['rss_mb']:,.0f} | {two['pss_mb']:,.0f} | {two['max_worker_rss_mb']:,.0f} "
            f"| {two['ready_s']:.1f} |",
            "",
            f"Two workers / one worker, PSS: **{two['pss_mb'] / one['pss_mb']:.2f}×**.",
        ]
    reload = result.get("reload_under_load")
    if reload:
        lines.append(
            f"Reload under load (recommend_search): reload answered {reload['status']} in "
            f"{reload['reload_s']:.1f} s; {reload['requests']:,} requests, "
            f"{reload['failed']} failed, p99 {reload['p99_ms']:.2f} ms."
        )
    return lines


def write(result: dict[str, Any], out_dir: Path, name: str = "latest") -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{name}.json", out_dir / f"{name}.md"
    js.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md.write_text(markdown(result), encoding="utf-8")
    return js, md


def update_readme(readme: Path, table: str, marker: str = "bench") -> bool:
    """Put `table` between the README's `marker` comments; False when they are missing."""
    text = readme.read_text(encoding="utf-8")
    head, start, rest = text.partition(f"<!-- {marker}:start -->")
    _, end, tail = rest.partition(f"<!-- {marker}:end -->")
    if not start or not end:
        return False
    readme.write_text(f"{head}{start}\n{table.strip()}\n{end}{tail}", encoding="utf-8")
    return True
