#!/usr/bin/env python3
"""Summarise keygate's criterion results as a markdown table and an SVG bar chart.

Run it after the benchmarks, from the crate root:

    cargo bench --bench verify      # writes target/criterion/...
    cargo bench --bench stores      # optional: find_by_hash, authenticate
    python3 scripts/bench_report.py > bench.md

It reads every <group>/<bench>/new/estimates.json under the criterion directory and takes
the median point estimate (ns per iteration) of each benchmark, plus elements/s where the
benchmark declared a throughput. To stdout it prints, per group, a markdown table of the
medians; for the layer groups (layer_1000, layer_1000000) also each total's overhead over
`no_auth_baseline` and its ratio to `tower_http_bearer`, and the spread of the `valid`,
`wrong_secret` and `unknown` medians; for memory_store_threads_1m the 2-thread / 1-thread
throughput ratio. It writes an SVG chart (docs/bench-overhead.svg by default) of the cost
per request of each verification stage and of each layer_1000 case over the baseline,
against the 250 ns goal.

Every figure comes from one run on one machine: compare figures from the same run, not
across runs. Missing benchmarks are skipped with a note on stderr. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

GOAL_NS = 250.0
LAYER_GROUPS = ("layer_1000", "layer_1000000")
BASELINE = "no_auth_baseline"
REFERENCE = "tower_http_bearer"
SPREAD_CASES = ("valid", "wrong_secret", "unknown")
THREADS_GROUP = "memory_store_threads_1m"
# Groups in the order the benches run them; any other group follows, sorted by name.
VERIFY_GROUPS = ("stage", "memory_store_lookup", THREADS_GROUP, *LAYER_GROUPS, "basic_auth")
STORES_GROUPS = ("find_by_hash", "authenticate")  # benches/stores.rs: optional, not noted
GROUP_ORDER = VERIFY_GROUPS + STORES_GROUPS
STAGE_ORDER = ("header_parse", "token_parse_checksum", "sha256_and_ct_compare")
LAYER_ORDER = (
    BASELINE,
    REFERENCE,
    "valid",
    "wrong_secret",
    "unknown",
    "revoked",
    "valid_all_policies",
)
CHART_STAGES = (
    "stage/header_parse",
    "stage/token_parse_checksum",
    "stage/sha256_and_ct_compare",
)
# A lookup of the same token every iteration; older runs call it `hit`.
LOOKUP_FUNCTIONS = ("same_token", "same-token", "hit")
LOOKUP_SIZES = (("1000", "1k"), ("1000000", "1M"))
CHART_LAYER_GROUP = "layer_1000"
CHART_LAYER_CASES = (
    REFERENCE,
    "valid",
    "wrong_secret",
    "unknown",
    "revoked",
    "valid_all_policies",
)
# The overhead measured in alternating pairs with the plain service (benches/verify.rs).
PAIRED_GROUP = "overhead_1000"
PAIRED_CASES = (REFERENCE, "valid", "wrong_secret", "unknown", "revoked")
CHART_TITLE = "keygate: cost per request by stage (one run)"


def note(msg: str) -> None:
    print(f"bench_report: {msg}", file=sys.stderr)


@dataclass
class Bench:
    group: str
    function: str | None  # None for BenchmarkId::from_parameter
    parameter: str | None
    median_ns: float
    elements: float | None  # elements per iteration, when the bench declared them

    @property
    def id(self) -> str:
        parts = (self.group, self.function, self.parameter)
        return "/".join(p for p in parts if p is not None)

    @property
    def name(self) -> str:
        """The id within its group."""
        return self.id[len(self.group) + 1 :]

    @property
    def elements_per_s(self) -> float | None:
        if self.elements is None or self.median_ns <= 0:
            return None
        return self.elements / (self.median_ns * 1e-9)


# --------------------------------------------------------------------------- reading


def load(criterion: Path) -> dict[str, Bench]:
    benches: dict[str, Bench] = {}
    for est in sorted(criterion.rglob("new/estimates.json")):
        bench_dir = est.parent
        try:
            median = float(json.loads(est.read_text())["median"]["point_estimate"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            note(f"skipping {est}: cannot read the median ({e})")
            continue
        meta = {}
        meta_path = bench_dir / "benchmark.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            note(f"{meta_path} missing or unreadable; naming the bench from its path")
        rel = bench_dir.parent.relative_to(criterion).parts
        if meta.get("group_id"):
            group = meta["group_id"]
            function = meta.get("function_id")
            parameter = meta.get("value_str")
        else:
            group = rel[0] if rel else "?"
            function = "/".join(rel[1:]) or "?"
            parameter = None
        elements = None
        tp = meta.get("throughput")
        if isinstance(tp, dict):
            # {"Elements": n} or {"ElementsAndBytes": {"elements": n, ...}}; bytes ignored.
            if "Elements" in tp:
                elements = float(tp["Elements"])
            elif isinstance(tp.get("ElementsAndBytes"), dict):
                elements = float(tp["ElementsAndBytes"].get("elements", 0)) or None
        b = Bench(
            str(group),
            None if function is None else str(function),
            None if parameter is None else str(parameter),
            median,
            elements,
        )
        benches[b.id] = b
    return benches


def group_key(group: str) -> tuple[int, str]:
    return (GROUP_ORDER.index(group), "") if group in GROUP_ORDER else (len(GROUP_ORDER), group)


def bench_key(b: Bench) -> tuple:
    order = LAYER_ORDER if b.group in LAYER_GROUPS else STAGE_ORDER if b.group == "stage" else ()
    if b.function in order:
        first = (0, order.index(b.function), "")
    else:
        first = (1, 0, b.function or "")
    p = b.parameter
    num = float(p) if p is not None and p.replace(".", "", 1).isdigit() else math.inf
    return (*first, num, p or "")


# --------------------------------------------------------------------------- formatting


def fmt_time(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= scale:
            return f"{fmt_num(ns / scale)} {unit}"
    return f"{fmt_num(ns)} ns"


def fmt_num(x: float) -> str:
    """Three significant figures or so, without exponent notation."""
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_ns(ns: float, signed: bool = False) -> str:
    s = f"{ns:+,.0f}" if signed else f"{ns:,.0f}"
    if abs(ns) < 10:
        s = f"{ns:+.1f}" if signed else f"{ns:.1f}"
    return f"{s} ns"


def fmt_rate(per_s: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_s >= scale:
            return f"{fmt_num(per_s / scale)} {unit}elem/s"
    return f"{fmt_num(per_s)} elem/s"


def md(text: str) -> str:
    return text.replace("|", "\\|")


# --------------------------------------------------------------------------- markdown


def report(benches: dict[str, Bench], criterion: Path) -> str:
    by_group: dict[str, list[Bench]] = {}
    for b in benches.values():
        by_group.setdefault(b.group, []).append(b)
    out = [
        f"## Benchmark medians ({criterion})",
        "",
        "Median time per iteration from one criterion run; compare figures within one run.",
    ]
    for name in VERIFY_GROUPS:
        if name not in by_group:
            note(f"group {name} not found under {criterion}; skipped")
    for group in sorted(set(by_group), key=group_key):
        rows = sorted(by_group[group], key=bench_key)
        out += ["", f"### {group}", ""]
        if group in LAYER_GROUPS:
            out += layer_table(group, rows)
        else:
            has_tp = any(b.elements_per_s is not None for b in rows)
            out.append("| benchmark | median |" + (" throughput |" if has_tp else ""))
            out.append("|---|---:|" + ("---:|" if has_tp else ""))
            for b in rows:
                line = f"| {md(b.name)} | {fmt_time(b.median_ns)} |"
                if has_tp:
                    eps = b.elements_per_s
                    line += f" {fmt_rate(eps) if eps is not None else '–'} |"
                out.append(line)
        if group == THREADS_GROUP:
            out += ["", threads_line(by_group[group])]
        if group == "basic_auth":
            line = basic_auth_line(by_group[group])
            if line:
                out += ["", line]
    return "\n".join(out) + "\n"


def layer_table(group: str, rows: list[Bench]) -> list[str]:
    by_fn = {b.name: b for b in rows}
    base = by_fn.get(BASELINE)
    ref = by_fn.get(REFERENCE)
    if base is None:
        note(f"{group}/{BASELINE} missing: no overhead column")
    if ref is None:
        note(f"{group}/{REFERENCE} missing: no ratio column")
    out = [
        f"| benchmark | median | over {BASELINE} | × {REFERENCE} |",
        "|---|---:|---:|---:|",
    ]
    for b in rows:
        over = fmt_ns(b.median_ns - base.median_ns, signed=True) if base else "–"
        ratio = f"{b.median_ns / ref.median_ns:.2f}×" if ref and ref.median_ns > 0 else "–"
        if b is base:
            over = "—"
        out.append(f"| {md(b.name)} | {fmt_time(b.median_ns)} | {over} | {ratio} |")
    present = [by_fn[c].median_ns for c in SPREAD_CASES if c in by_fn]
    missing = [c for c in SPREAD_CASES if c not in by_fn]
    if missing:
        note(f"{group}: {', '.join(missing)} missing from the spread")
    if len(present) >= 2:
        lo, hi = min(present), max(present)
        which = ", ".join(c for c in SPREAD_CASES if c in by_fn)
        out += [
            "",
            f"Spread of {which} medians: {(hi - lo) / lo * 100:.1f}% "
            f"((max − min) / min; {fmt_time(lo)} to {fmt_time(hi)}).",
        ]
    return out


def threads_line(rows: list[Bench]) -> str:
    by_param = {b.parameter: b for b in rows}
    one, two = by_param.get("1"), by_param.get("2")
    if one is None or two is None:
        note(f"{THREADS_GROUP}/1 or /2 missing: no scaling ratio")
        return f"2-thread / 1-thread throughput: – (needs both {THREADS_GROUP}/1 and /2)"
    r1, r2 = one.elements_per_s, two.elements_per_s
    if r1 is None or r2 is None:
        # No throughput recorded: each iteration is 64 lookups per thread.
        r1, r2 = 64 / one.median_ns, 128 / two.median_ns
        note(f"{THREADS_GROUP}: no throughput in benchmark.json; assumed 64 lookups per thread")
    return (
        f"2-thread / 1-thread throughput: {r2 / r1:.2f}× "
        f"({fmt_rate(r2)} vs {fmt_rate(r1)}; 2.00× would be perfect scaling)."
    )


def basic_auth_line(rows: list[Bench]) -> str | None:
    by_fn = {b.name: b for b in rows}
    a, b = by_fn.get("wrong_password"), by_fn.get("unknown_email")
    if a is None or b is None:
        return None
    lo = min(a.median_ns, b.median_ns)
    return (
        f"unknown_email vs wrong_password: {abs(a.median_ns - b.median_ns) / lo * 100:.1f}% "
        "apart ((max − min) / min)."
    )


# --------------------------------------------------------------------------- chart


def case_bars(
    benches: dict[str, Bench], group: str, cases, colour: str, minus: float = 0.0
) -> list[tuple[str, float, str]]:
    """One bar per case of `group` (its median less `minus`), tower-http's in grey; missing
    cases noted and left out."""
    bars: list[tuple[str, float, str]] = []
    for case in cases:
        b = benches.get(f"{group}/{case}")
        if b is None:
            note(f"chart: {group}/{case} missing; bar left out")
            continue
        bars.append((case, b.median_ns - minus, "#9d9d9d" if case == REFERENCE else colour))
    return bars


def chart_bars(benches: dict[str, Bench]) -> list[tuple[str, list[tuple[str, float, str]]]]:
    """Sections of (label, ns, colour) bars; missing benchmarks noted and left out."""
    stages: list[tuple[str, float, str]] = []
    for bid in CHART_STAGES:
        b = benches.get(bid)
        if b is None:
            note(f"chart: {bid} missing; bar left out")
            continue
        stages.append((bid, b.median_ns, "#4c78a8"))
    for size, short in LOOKUP_SIZES:
        for fn in LOOKUP_FUNCTIONS:
            b = benches.get(f"memory_store_lookup/{fn}/{size}")
            if b is not None:
                stages.append((f"memory_store_lookup {fn} ({short})", b.median_ns, "#72b7b2"))
                break
        else:
            note(
                f"chart: memory_store_lookup/{{{','.join(LOOKUP_FUNCTIONS)}}}/{size} "
                "missing; bar left out"
            )
    g = CHART_LAYER_GROUP
    base = benches.get(f"{g}/{BASELINE}")
    if base is None:
        note(f"chart: {g}/{BASELINE} missing; no overhead bars")
        layer = []
    else:
        layer = case_bars(benches, g, CHART_LAYER_CASES, "#f58518", minus=base.median_ns)
    paired = case_bars(benches, PAIRED_GROUP, PAIRED_CASES, "#e45756")
    sections = []
    if stages:
        sections.append(("Stages (median per call)", stages))
    if paired:
        sections.append((f"{PAIRED_GROUP}: overhead measured in pairs with the plain service", paired))
    if layer:
        sections.append(
            (f"{g}: total minus {BASELINE} ({fmt_time(base.median_ns)})", layer)  # type: ignore[union-attr]
        )
    return sections


def nice_step(span: float, target_ticks: int = 6) -> float:
    raw = span / target_ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def svg_chart(sections: list[tuple[str, list[tuple[str, float, str]]]], source: str) -> str:
    width = 800
    left = 250  # label column
    right = 80  # room for value labels past the longest bar
    plot_w = width - left - right
    top = 78
    bar_h = 22
    gap = 8
    section_h = 30
    values = [v for _, bars in sections for _, v, _ in bars]
    lo = min(0.0, min(values))
    hi = max(GOAL_NS, max(values))
    step = nice_step(hi - lo)
    lo = math.floor(lo / step) * step
    hi = math.ceil(hi / step) * step

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    rows_h = sum(section_h + len(bars) * (bar_h + gap) for _, bars in sections)
    plot_bottom = top + rows_h
    height = plot_bottom + 64
    font = 'font-family="DejaVu Sans, Arial, Helvetica, sans-serif"'
    e: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {font} font-size="13">',
        f"<title>{escape(CHART_TITLE)}</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{width / 2}" y="28" text-anchor="middle" font-size="18" '
        f'font-weight="bold" fill="#222">{escape(CHART_TITLE)}</text>',
        f'<text x="{width / 2}" y="50" text-anchor="middle" font-size="12" fill="#555">'
        "criterion medians, ns per request; shorter is better</text>",
    ]
    # Grid and axis labels.
    ticks = []
    t = lo
    while t <= hi + step / 2:
        ticks.append(t)
        t += step
    for t in ticks:
        tx = x(t)
        e.append(
            f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{plot_bottom}" '
            f'stroke="{"#888" if t == 0 else "#e3e3e3"}" stroke-width="1"/>'
        )
        e.append(
            f'<text x="{tx:.1f}" y="{plot_bottom + 16}" text-anchor="middle" '
            f'font-size="11" fill="#555">{t:,.0f}</text>'
        )
    e.append(
        f'<text x="{left + plot_w / 2}" y="{plot_bottom + 34}" text-anchor="middle" '
        f'font-size="12" fill="#333">ns per request</text>'
    )
    # The goal line goes under the bars and labels, which carry a white halo to stay legible.
    gx = x(GOAL_NS)
    e.append(
        f'<line x1="{gx:.1f}" y1="{top - 10}" x2="{gx:.1f}" y2="{plot_bottom}" '
        'stroke="#d62728" stroke-width="2" stroke-dasharray="6,4"/>'
    )
    e.append(
        f'<text x="{gx + 5:.1f}" y="{top - 12}" font-size="12" fill="#d62728">'
        f"goal {GOAL_NS:.0f} ns</text>"
    )
    halo = 'stroke="#ffffff" stroke-width="4" stroke-linejoin="round" paint-order="stroke"'
    # Bars.
    y = top
    for title, bars in sections:
        e.append(
            f'<text x="12" y="{y + 19}" font-size="13" font-weight="bold" fill="#333" {halo}>'
            f"{escape(title)}</text>"
        )
        y += section_h
        for label, v, colour in bars:
            x0, x1 = sorted((x(0), x(v)))
            e.append(
                f'<text x="{left - 10}" y="{y + bar_h / 2 + 4.5:.1f}" text-anchor="end" '
                f'fill="#222">{escape(label)}</text>'
            )
            e.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" height="{bar_h}" '
                f'fill="{colour}"><title>{escape(label)}: {v:.1f} ns</title></rect>'
            )
            text = fmt_ns(v)
            # Inside the bar's end when it fits, else just past it.
            if x1 - x0 > 8 * len(text) + 12 and v >= 0:
                e.append(
                    f'<text x="{x1 - 6:.1f}" y="{y + bar_h / 2 + 4.5:.1f}" text-anchor="end" '
                    f'fill="#ffffff" font-weight="bold">{text}</text>'
                )
            else:
                tx, anchor = (x1 + 5, "start") if v >= 0 else (x0 - 5, "end")
                e.append(
                    f'<text x="{tx:.1f}" y="{y + bar_h / 2 + 4.5:.1f}" text-anchor="{anchor}" '
                    f'fill="#222" {halo}>{text}</text>'
                )
            y += bar_h + gap
    e.append(
        f'<text x="12" y="{height - 10}" font-size="10" fill="#777">'
        f"source: {escape(source)} (median point estimates from one run)</text>"
    )
    e.append("</svg>")
    return "\n".join(e) + "\n"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench_report.py",
        description=(
            "Summarise keygate's criterion results. Run after `cargo bench --bench verify` "
            "(and optionally `--bench stores`). Prints a markdown table of the median time "
            "per benchmark to stdout: for layer_1000 and layer_1000000 also the overhead "
            "over no_auth_baseline in ns, the ratio to tower_http_bearer and the spread of "
            "valid/wrong_secret/unknown; for memory_store_threads_1m the 2-thread/1-thread "
            "throughput ratio. Writes an SVG bar chart of the cost per request of each "
            "stage and of each layer_1000 case over the baseline, with the 250 ns goal. "
            "Missing benchmarks are skipped with a note on stderr."
        ),
        epilog="Example: python3 scripts/bench_report.py > bench.md",
    )
    p.add_argument(
        "--criterion",
        metavar="DIR",
        type=Path,
        default=Path("target/criterion"),
        help="criterion output directory to read (default: %(default)s)",
    )
    p.add_argument(
        "--svg",
        metavar="PATH",
        type=Path,
        default=Path("docs/bench-overhead.svg"),
        help="where to write the chart (default: %(default)s)",
    )
    p.add_argument("--no-svg", action="store_true", help="print the table only")
    args = p.parse_args(argv)

    if not args.criterion.is_dir():
        note(f"{args.criterion} is not a directory; run `cargo bench --bench verify` first")
        return 1
    benches = load(args.criterion)
    if not benches:
        note(f"no new/estimates.json under {args.criterion}")
        return 1
    sys.stdout.write(report(benches, args.criterion))

    if args.no_svg:
        return 0
    sections = chart_bars(benches)
    if not sections:
        note("nothing to chart; SVG not written")
        return 0
    args.svg.parent.mkdir(parents=True, exist_ok=True)
    args.svg.write_text(svg_chart(sections, str(args.criterion)), encoding="utf-8")
    note(f"wrote {args.svg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
