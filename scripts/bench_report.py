#!/usr/bin/env python3
"""Turn keygate's criterion results into the tables and the chart of BENCHMARKS.md.

`bash scripts/bench_all.sh` runs every bench and then this script (report in
target/bench-report/); `bash scripts/bench_repeat.sh N` repeats the goals' benches N times and
prints their ratios. By hand, from the crate root:

    cargo bench --bench verify      # floor_*, layer_*, overhead_1000, stage, ...
    cargo bench --bench stores      # authenticate, verify_threads, cold_miss, ...
    cargo bench --bench policies    # policies (when the target exists)
    python3 scripts/bench_report.py > bench.md

It reads <group>/<bench>/new/estimates.json under the criterion directory (another saved
baseline with --baseline) and takes the median point estimate (ns per iteration) of each
benchmark, plus elements/s where the benchmark declared a throughput. To stdout it prints
markdown tables, each under the command that reproduces it:

- floor_1000, floor_1000000: the overhead over the plain service of the hand-written floor
  and of keygate per outcome (valid, wrong_secret, unknown, revoked; measured paired), the
  keygate ÷ floor ratio per outcome, the spread of keygate's four outcomes, and tower-http's
  static bearer check for scale;
- layer_1000, layer_1000000: the totals, each one's overhead over no_auth_baseline and its
  ratio to tower_http_bearer, and the all-policies overhead (valid_all_policies − baseline);
- policies (benches/policies.rs): each policy's overhead over no_auth and over the plain layer;
- verify_threads: the 2-thread ÷ 1-thread throughput ratio per case;
- authenticate: each store's median ÷ MemoryStore's;
- cold_miss: criterion's medians, and with --cold-miss-log the per-call p50/p90/p99/max
  lines the bench prints (save its output: `cargo bench --bench stores -- cold_miss/ | tee`);
- every other group as a table of medians.

It writes an SVG chart (docs/bench-overhead.svg by default) of the overhead per request over
the raw service at 1 k and at 1 M tokens: tower-http's bearer check, the floor, keygate's
four outcomes and keygate with every policy on, with the goal lines (1.2× the floor, +600 ns
for every policy).

With --ratios it prints instead one row per run of the ratios the goals use (keygate ÷ floor
for a valid token at 1 k and 1 M, the four-outcome spreads, the all-policies overhead, the
2-thread ratios), one run per saved criterion baseline (--baseline, repeatable, or --runs
'GLOB') and per --criterion directory; scripts/bench_repeat.sh N records and tabulates them.

Compare figures from the same run, not across runs. Missing groups are skipped with a note on
stderr. Standard library only. Its test: python3 scripts/bench_report.py --self-test.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

# --------------------------------------------------------------------------- the goals

FLOOR_GOAL = 1.2  # keygate's valid-token overhead ÷ the floor's, at 1 k and at 1 M tokens
SPREAD_GOAL = 0.10  # (max − min) / min of keygate's four outcomes
POLICIES_GOAL_NS = 600.0  # every policy on, over the raw service
THREADS_GOAL = 1.8  # 2-thread ÷ 1-thread throughput of whole verifications
CACHE_GOAL = 1.2  # a cache hit ÷ MemoryStore, authenticate

SIZES = ((1_000, "1 k"), (1_000_000, "1 M"))
OUTCOMES = ("valid", "wrong_secret", "unknown", "revoked")
OUTCOME_LABEL = {
    "valid": "valid token",
    "wrong_secret": "wrong secret",
    "unknown": "unknown token",
    "revoked": "revoked token",
}
REFERENCE = "tower_http_bearer"
BASELINE = "no_auth_baseline"
ALL_POLICIES = "valid_all_policies"
LAYER_GROUPS = ("layer_1000", "layer_1000000")
LAYER_ORDER = (BASELINE, REFERENCE, *OUTCOMES, ALL_POLICIES)
LAYER_SPREAD = OUTCOMES
POLICIES_GROUP = "policies"
POLICIES_BASE = "no_auth"
POLICIES_LAYER = "layer"
POLICIES_ORDER = (POLICIES_BASE, POLICIES_LAYER, "rate", "failure", "audit", "metrics", "all")
THREADS_GROUP = "verify_threads"
AUTH_GROUP = "authenticate"
AUTH_BASE = "memory"
LOOKUP_THREADS_GROUP = "memory_store_threads_1m"
STAGE_ORDER = ("header_parse", "token_parse_checksum", "sha256_and_ct_compare")

FLOOR_GROUPS = tuple(f"floor_{n}" for n, _ in SIZES)
# Groups the page needs; a missing one is noted on stderr.
EXPECTED = (*FLOOR_GROUPS, *LAYER_GROUPS, POLICIES_GROUP, THREADS_GROUP, AUTH_GROUP)
GROUP_ORDER = (
    *FLOOR_GROUPS,
    *LAYER_GROUPS,
    POLICIES_GROUP,
    THREADS_GROUP,
    AUTH_GROUP,
    "cold_miss",
    "overhead_1000",
    "layer_1000_typed_handler",
    "stage",
    "memory_store_lookup",
    LOOKUP_THREADS_GROUP,
    "find_by_hash",
    "basic_auth",
    "pepper",
)
# The one command that reproduces each group's figures.
REPRO = {
    "floor_1000": "cargo bench --bench verify -- 'floor_1000/'",
    "floor_1000000": "cargo bench --bench verify -- 'floor_1000000/'",
    "layer_1000": "cargo bench --bench verify -- 'layer_1000/'",
    "layer_1000000": "cargo bench --bench verify -- 'layer_1000000/'",
    "overhead_1000": "cargo bench --bench verify -- 'overhead_1000/'",
    "layer_1000_typed_handler": "cargo bench --bench verify -- 'layer_1000_typed_handler/'",
    "stage": "cargo bench --bench verify -- 'stage/'",
    "memory_store_lookup": "cargo bench --bench verify -- 'memory_store_lookup/'",
    LOOKUP_THREADS_GROUP: f"cargo bench --bench verify -- '{LOOKUP_THREADS_GROUP}/'",
    "basic_auth": "cargo bench --bench verify -- 'basic_auth/'",
    "pepper": "cargo bench --bench verify -- 'pepper/'",
    POLICIES_GROUP: "cargo bench --bench policies",
    THREADS_GROUP: "cargo bench --bench stores -- 'verify_threads/'",
    AUTH_GROUP: "cargo bench --bench stores -- 'authenticate/'",
    "find_by_hash": "cargo bench --bench stores -- 'find_by_hash/'",
    "cold_miss": "cargo bench --bench stores -- 'cold_miss/'",
}


def display_path(path: Path) -> str:
    """The criterion directory as the report and the chart name it: relative to the current
    directory when inside it, else its last two parts, so that no machine's own paths end up
    in a committed chart."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(Path(*path.resolve().parts[-2:]))


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


def load(criterion: Path, baseline: str = "new") -> dict[str, Bench]:
    """Every benchmark under `criterion` that has `<baseline>/estimates.json`, by id."""
    benches: dict[str, Bench] = {}
    for est in sorted(criterion.rglob(f"{baseline}/estimates.json")):
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


def baselines_in(criterion: Path, pattern: str) -> list[str]:
    """The saved baselines (directories holding estimates.json) whose name matches `pattern`,
    in natural order (run2 before run10)."""
    names = {
        est.parent.name
        for est in criterion.rglob("estimates.json")
        if fnmatch.fnmatchcase(est.parent.name, pattern)
    }
    names.discard("change")  # criterion's comparison with the previous run, not a run

    def natural(s: str) -> tuple:
        stem = s.rstrip("0123456789")
        tail = s[len(stem) :]
        return (stem, int(tail) if tail else -1, s)

    return sorted(names, key=natural)


# --------------------------------------------------------------------------- cold-miss log


COLD_MISS_LINE = re.compile(
    r"^cold_miss/(?P<backend>\S+): n=(?P<n>\d+) p50=(?P<p50>\S+) p90=(?P<p90>\S+) "
    r"p99=(?P<p99>\S+) max=(?P<max>\S+)\s*$"
)
DURATION_UNITS = {"ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}


def parse_duration(text: str) -> float | None:
    """Rust's `{:?}` of a `Duration` (`812.3µs`, `1.1ms`, `95ns`, `2.0s`) in ns."""
    m = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", text)
    return None if m is None else float(m.group(1)) * DURATION_UNITS[m.group(2)]


def cold_miss_log(path: Path) -> dict[str, dict[str, float]]:
    """The per-call percentiles benches/stores.rs prints for cold_miss (`cold_miss/<backend>:
    n=… p50=… p90=… p99=… max=…`), from a saved copy of its output; the last line of each
    backend wins (criterion runs the closure for warm-up and again for the measurement)."""
    out: dict[str, dict[str, float]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = COLD_MISS_LINE.match(line.strip())
        if m is None:
            continue
        figures = {k: parse_duration(m.group(k)) for k in ("p50", "p90", "p99", "max")}
        if any(v is None for v in figures.values()):
            note(f"{path}: cannot read the durations of {line.strip()!r}")
            continue
        out[m.group("backend")] = {"n": float(m.group("n")), **figures}  # type: ignore[dict-item]
    if not out:
        note(f"{path}: no cold_miss/<backend>: n=… p50=… line")
    return out


# --------------------------------------------------------------------------- the figures


def median(benches: dict[str, Bench], bid: str) -> float | None:
    b = benches.get(bid)
    return None if b is None else b.median_ns


def spread(values: list[float]) -> float | None:
    """(max − min) / min, or None with fewer than two values or a non-positive minimum."""
    if len(values) < 2 or min(values) <= 0:
        return None
    return (max(values) - min(values)) / min(values)


@dataclass
class Floor:
    """One floor_<n> group: paired overheads over the plain service, in ns."""

    n: int
    floor: dict[str, float]
    keygate: dict[str, float]
    tower_http: float | None

    def ratio(self, outcome: str) -> float | None:
        f, k = self.floor.get(outcome), self.keygate.get(outcome)
        if f is None or k is None or f <= 0:
            return None
        return k / f

    @property
    def spread(self) -> float | None:
        return spread([self.keygate[o] for o in OUTCOMES if o in self.keygate])


def floor_of(benches: dict[str, Bench], n: int) -> Floor | None:
    g = f"floor_{n}"
    floor = {o: v for o in OUTCOMES if (v := median(benches, f"{g}/floor/{o}")) is not None}
    keygate = {o: v for o in OUTCOMES if (v := median(benches, f"{g}/keygate/{o}")) is not None}
    tower = median(benches, f"{g}/{REFERENCE}")
    if not floor and not keygate and tower is None:
        return None
    return Floor(n, floor, keygate, tower)


def all_policies_over(benches: dict[str, Bench], n: int) -> tuple[float, str] | None:
    """Every policy on, over the raw service, in ns, with where the figure comes from:
    layer_<n> (valid_all_policies − no_auth_baseline), else, at 1 000 tokens, the policies
    group (all − no_auth)."""
    g = f"layer_{n}"
    base, all_on = median(benches, f"{g}/{BASELINE}"), median(benches, f"{g}/{ALL_POLICIES}")
    if base is not None and all_on is not None:
        return all_on - base, f"{g}: {ALL_POLICIES} − {BASELINE}"
    if n == 1_000:
        base = median(benches, f"{POLICIES_GROUP}/{POLICIES_BASE}")
        all_on = median(benches, f"{POLICIES_GROUP}/all")
        if base is not None and all_on is not None:
            return all_on - base, f"{POLICIES_GROUP}: all − {POLICIES_BASE}"
    return None


def policies_over(benches: dict[str, Bench]) -> float | None:
    base = median(benches, f"{POLICIES_GROUP}/{POLICIES_BASE}")
    all_on = median(benches, f"{POLICIES_GROUP}/all")
    return None if base is None or all_on is None else all_on - base


def layer_all_over(benches: dict[str, Bench], n: int) -> float | None:
    g = f"layer_{n}"
    base, all_on = median(benches, f"{g}/{BASELINE}"), median(benches, f"{g}/{ALL_POLICIES}")
    return None if base is None or all_on is None else all_on - base


def thread_ratios(
    benches: dict[str, Bench], quiet: bool = False
) -> dict[str, tuple[float, float, float]]:
    """verify_threads: per case, (1-thread /s, 2-thread /s, 2 ÷ 1); incomplete cases are
    noted on stderr unless `quiet`."""
    cases: dict[str, dict[str, Bench]] = {}
    for b in benches.values():
        if b.group == THREADS_GROUP and b.function is not None and b.parameter is not None:
            cases.setdefault(b.function, {})[b.parameter] = b
    out = {}
    for case, by_threads in cases.items():
        one, two = by_threads.get("1"), by_threads.get("2")
        if one is None or two is None:
            if not quiet:
                note(f"{THREADS_GROUP}/{case}: needs both /1 and /2 for a ratio")
            continue
        r1, r2 = one.elements_per_s, two.elements_per_s
        if r1 is None or r2 is None:
            if not quiet:
                note(f"{THREADS_GROUP}/{case}: no throughput recorded; no ratio")
            continue
        out[case] = (r1, r2, r2 / r1)
    return out


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


def fmt_ns(ns: float | None, signed: bool = False) -> str:
    if ns is None:
        return "–"
    s = f"{ns:+,.0f}" if signed else f"{ns:,.0f}"
    if abs(ns) < 10:
        s = f"{ns:+.1f}" if signed else f"{ns:.1f}"
    return f"{s} ns"


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}×"


def fmt_pct(r: float | None) -> str:
    return "–" if r is None else f"{r * 100:.1f} %"


def fmt_rate(per_s: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_s >= scale:
            return f"{fmt_num(per_s / scale)} {unit}/s"
    return f"{fmt_num(per_s)} /s"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else "met" if ok else "missed"


def md(text: str) -> str:
    return text.replace("|", "\\|")


# --------------------------------------------------------------------------- markdown


def group_key(group: str) -> tuple[int, str]:
    return (GROUP_ORDER.index(group), "") if group in GROUP_ORDER else (len(GROUP_ORDER), group)


def bench_key(b: Bench) -> tuple:
    order = {
        "stage": STAGE_ORDER,
        POLICIES_GROUP: POLICIES_ORDER,
    }.get(b.group, LAYER_ORDER if b.group in LAYER_GROUPS else ())
    if b.function in order:
        first = (0, order.index(b.function), "")
    else:
        first = (1, 0, b.function or "")
    p = b.parameter
    num = float(p) if p is not None and p.replace(".", "", 1).isdigit() else math.inf
    return (*first, num, p or "")


def heading(group: str, title: str | None = None) -> list[str]:
    out = ["", f"### {title or group}", ""]
    if group in REPRO:
        out += [f"`{REPRO[group]}`", ""]
    return out


def report(
    benches: dict[str, Bench], source: str, cold: dict[str, dict[str, float]] | None = None
) -> str:
    by_group: dict[str, list[Bench]] = {}
    for b in benches.values():
        by_group.setdefault(b.group, []).append(b)
    for name in EXPECTED:
        if name not in by_group:
            note(f"group {name} not found under {source}; skipped")
    out = [
        f"## Benchmark medians ({source})",
        "",
        "Median time per iteration from one criterion run; compare figures within one run.",
    ]
    floors = [f for n, _ in SIZES if (f := floor_of(benches, n)) is not None]
    if floors:
        out += floor_section(floors)
    done = set(FLOOR_GROUPS)
    for group in sorted(set(by_group) - done, key=group_key):
        rows = sorted(by_group[group], key=bench_key)
        out += heading(group)
        if group in LAYER_GROUPS:
            out += layer_table(group, rows)
            n = int(group.split("_")[1])
            over = layer_all_over(benches, n)
            if over is not None:
                out += [
                    "",
                    f"Every policy on, over {BASELINE}: {fmt_ns(over, signed=True)} "
                    f"(goal ≤ +{POLICIES_GOAL_NS:.0f} ns: {verdict(over <= POLICIES_GOAL_NS)}).",
                ]
        elif group == POLICIES_GROUP:
            out += policies_table(rows)
        elif group == THREADS_GROUP:
            out += threads_table(benches)
        elif group == AUTH_GROUP:
            out += authenticate_table(rows)
        else:
            out += plain_table(rows)
            if group == LOOKUP_THREADS_GROUP:
                out += ["", lookup_threads_line(rows)]
            if group == "cold_miss":
                out += cold_miss_lines(cold)
            if group == "basic_auth":
                line = basic_auth_line(rows)
                if line:
                    out += ["", line]
    if cold and "cold_miss" not in by_group:
        out += heading("cold_miss") + cold_miss_lines(cold)[2:]
    return "\n".join(out) + "\n"


def cold_miss_lines(cold: dict[str, dict[str, float]] | None) -> list[str]:
    if not cold:
        return [
            "",
            "Criterion's figure for `cold_miss` is a median of per-sample means; the bench "
            "prints each backend's p50, p90, p99 and maximum per call (give its output to "
            "--cold-miss-log for a table).",
        ]
    out = [
        "",
        "Each call timed alone (the bench's own output):",
        "",
        "| backend | calls | p50 | p90 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for backend in sorted(cold):
        c = cold[backend]
        times = " | ".join(fmt_time(c[k]) for k in ("p50", "p90", "p99", "max"))
        out.append(f"| {md(backend)} | {c['n']:.0f} | {times} |")
    return out


def floor_section(floors: list[Floor]) -> list[str]:
    """One table for both sizes: the floor's and keygate's paired overhead per outcome."""
    by_n = {f.n: f for f in floors}
    present = [(n, label) for n, label in SIZES if n in by_n]
    cmd = " and ".join(f"`{REPRO[f'floor_{n}']}`" for n, _ in present)
    out = [
        "",
        "### keygate against the hand-written floor ("
        + ", ".join(f"floor_{n}" for n, _ in present)
        + ")",
        "",
        cmd,
        "",
        "Overhead per request over the plain service, measured in alternating batches with it.",
        "",
    ]
    head = "| outcome |"
    rule = "|---|"
    for _, label in present:
        head += f" floor, {label} tokens | keygate, {label} tokens | keygate ÷ floor |"
        rule += "---:|---:|---:|"
    out += [head, rule]
    for o in OUTCOMES:
        line = f"| {OUTCOME_LABEL[o]} |"
        for n, _ in present:
            f = by_n[n]
            fl, kg = fmt_ns(f.floor.get(o), signed=True), fmt_ns(f.keygate.get(o), signed=True)
            line += f" {fl} | {kg} | {fmt_ratio(f.ratio(o))} |"
        out.append(line)
    out.append("")
    towers = [
        f"{fmt_ns(by_n[n].tower_http, signed=True)} at {label} tokens"
        for n, label in present
        if by_n[n].tower_http is not None
    ]
    if towers:
        out.append(
            "- For scale, tower-http 0.7's bearer check (one static token compared with `==`, "
            "same pairing): " + ", ".join(towers) + "."
        )
    for n, label in present:
        f = by_n[n]
        r = f.ratio("valid")
        ks = [f.keygate[o] for o in OUTCOMES if o in f.keygate]
        missing = [o for o in OUTCOMES if o not in f.keygate]
        if missing:
            note(f"floor_{n}: keygate/{', keygate/'.join(missing)} missing from the spread")
        sp = f.spread
        rng = f" ({fmt_ns(min(ks))} to {fmt_ns(max(ks))})" if sp is not None else ""
        out.append(
            f"- {label} tokens: keygate ÷ floor for a valid token {fmt_ratio(r)} "
            f"(goal ≤ {FLOOR_GOAL:.1f}×: {verdict(None if r is None else r <= FLOOR_GOAL)}); "
            f"keygate's outcomes {fmt_pct(sp)} apart{rng} "
            f"(goal ≤ {SPREAD_GOAL * 100:.0f} %: "
            f"{verdict(None if sp is None else sp <= SPREAD_GOAL)})."
        )
    return out


def plain_table(rows: list[Bench]) -> list[str]:
    has_tp = any(b.elements_per_s is not None for b in rows)
    out = ["| benchmark | median |" + (" throughput |" if has_tp else ""),
           "|---|---:|" + ("---:|" if has_tp else "")]
    for b in rows:
        line = f"| {md(b.name)} | {fmt_time(b.median_ns)} |"
        if has_tp:
            eps = b.elements_per_s
            line += f" {fmt_rate(eps) if eps is not None else '–'} |"
        out.append(line)
    return out


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
    present = [by_fn[c].median_ns for c in LAYER_SPREAD if c in by_fn]
    sp = spread(present)
    if sp is not None:
        which = ", ".join(c for c in LAYER_SPREAD if c in by_fn)
        out += [
            "",
            f"Spread of the {which} totals: {fmt_pct(sp)} ((max − min) / min; "
            f"{fmt_time(min(present))} to {fmt_time(max(present))}; not paired).",
        ]
    return out


def policies_table(rows: list[Bench]) -> list[str]:
    by_fn = {b.name: b for b in rows}
    base, plain = by_fn.get(POLICIES_BASE), by_fn.get(POLICIES_LAYER)
    if base is None:
        note(f"{POLICIES_GROUP}/{POLICIES_BASE} missing: no overhead column")
    out = [
        f"| benchmark | median | over {POLICIES_BASE} | over {POLICIES_LAYER} |",
        "|---|---:|---:|---:|",
    ]
    for b in rows:
        over = "—" if b is base else fmt_ns(b.median_ns - base.median_ns, True) if base else "–"
        over_layer = (
            "—" if b is base or b is plain
            else fmt_ns(b.median_ns - plain.median_ns, True) if plain else "–"
        )
        out.append(f"| {md(b.name)} | {fmt_time(b.median_ns)} | {over} | {over_layer} |")
    if base is not None and "all" in by_fn:
        over = by_fn["all"].median_ns - base.median_ns
        out += [
            "",
            f"Every policy on, over {POLICIES_BASE}: {fmt_ns(over, signed=True)} "
            f"(goal ≤ +{POLICIES_GOAL_NS:.0f} ns: {verdict(over <= POLICIES_GOAL_NS)}).",
        ]
    return out


def threads_table(benches: dict[str, Bench]) -> list[str]:
    ratios = thread_ratios(benches)
    out = [
        "| verifications over | 1 thread | 2 threads | 2 ÷ 1 |",
        "|---|---:|---:|---:|",
    ]
    for case in sorted(ratios, key=lambda c: (c != "ceiling-sha256", c)):
        r1, r2, r = ratios[case]
        out.append(f"| {md(case)} | {fmt_rate(r1)} | {fmt_rate(r2)} | {r:.2f}× |")
    if ratios:
        out += [
            "",
            f"Goal: ≥ {THREADS_GOAL:.1f}× for whole verifications (2.00× is perfect scaling; "
            "`ceiling-sha256` hashes only, nothing shared).",
        ]
    return out


def authenticate_table(rows: list[Bench]) -> list[str]:
    by_fn = {b.name: b for b in rows}
    base = by_fn.get(AUTH_BASE)
    if base is None:
        note(f"{AUTH_GROUP}/{AUTH_BASE} missing: no ratio column")
    out = ["| store | median | ÷ MemoryStore |", "|---|---:|---:|"]
    for b in sorted(rows, key=lambda b: (b is not base, b.name)):
        r = b.median_ns / base.median_ns if base and base.median_ns > 0 else None
        ratio = "—" if b is base else fmt_ratio(r)
        out.append(f"| {md(b.name)} | {fmt_time(b.median_ns)} | {ratio} |")
    hits = [b for b in rows if "cache-hit" in b.name]
    if base is not None and hits:
        parts = [
            f"{b.name} {b.median_ns / base.median_ns:.2f}× "
            f"({verdict(b.median_ns / base.median_ns <= CACHE_GOAL)})"
            for b in hits
        ]
        out += ["", f"Cache hit ÷ MemoryStore, goal ≤ {CACHE_GOAL:.1f}×: " + "; ".join(parts) + "."]
    return out


def lookup_threads_line(rows: list[Bench]) -> str:
    by_param = {b.parameter: b for b in rows}
    one, two = by_param.get("1"), by_param.get("2")
    if one is None or two is None or one.elements_per_s is None or two.elements_per_s is None:
        note(f"{LOOKUP_THREADS_GROUP}: needs /1 and /2 with a throughput for a ratio")
        return "2-thread / 1-thread throughput: –"
    r1, r2 = one.elements_per_s, two.elements_per_s
    return f"2-thread / 1-thread throughput: {r2 / r1:.2f}× ({fmt_rate(r2)} vs {fmt_rate(r1)})."


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


# --------------------------------------------------------------------------- ratios


@dataclass
class Column:
    title: str
    value: object  # Callable[[dict[str, Bench]], float | None]
    fmt: object  # Callable[[float | None], str]
    goal: str
    ok: object  # Callable[[float], bool] | None


def ratio_columns(runs: list[dict[str, Bench]]) -> list[Column]:
    def floor_ratio(n: int):
        return lambda b: (f.ratio("valid") if (f := floor_of(b, n)) else None)

    def floor_spread(n: int):
        return lambda b: (f.spread if (f := floor_of(b, n)) else None)

    def threads(case: str):
        return lambda b: (r[2] if (r := thread_ratios(b, quiet=True).get(case)) else None)

    cols = []
    for n, label in SIZES:
        cols.append(Column(
            f"keygate ÷ floor, valid, {label}", floor_ratio(n), fmt_ratio,
            f"≤ {FLOOR_GOAL:.2f}×", lambda r: r <= FLOOR_GOAL,
        ))
    for n, label in SIZES:
        cols.append(Column(
            f"keygate's outcomes apart, {label}", floor_spread(n), fmt_pct,
            f"≤ {SPREAD_GOAL * 100:.0f} %", lambda r: r <= SPREAD_GOAL,
        ))
    policies = Column(
        "every policy over raw (layer_1000)", lambda b: layer_all_over(b, 1_000),
        lambda v: fmt_ns(v, signed=True), f"≤ +{POLICIES_GOAL_NS:.0f} ns",
        lambda v: v <= POLICIES_GOAL_NS,
    )
    cols.append(policies)
    if any(policies_over(b) is not None for b in runs):
        cols.append(Column(
            "every policy over raw (policies)", policies_over,
            lambda v: fmt_ns(v, signed=True), f"≤ +{POLICIES_GOAL_NS:.0f} ns",
            lambda v: v <= POLICIES_GOAL_NS,
        ))
    cases = sorted(
        {c for b in runs for c in thread_ratios(b, quiet=True)},
        key=lambda c: (c == "ceiling-sha256", c != "memory", c),
    )
    for case in cases:
        ceiling = case == "ceiling-sha256"
        cols.append(Column(
            f"2 threads ÷ 1, {case}", threads(case), fmt_ratio,
            "(for scale)" if ceiling else f"≥ {THREADS_GOAL:.2f}×",
            None if ceiling else (lambda r: r >= THREADS_GOAL),
        ))
    return cols


def ratios_table(runs: list[tuple[str, dict[str, Bench]]]) -> str:
    """One row per run of the ratios the goals use; then the goal and how many runs met it."""
    cols = ratio_columns([b for _, b in runs])
    cols = [c for c in cols if any(c.value(b) is not None for _, b in runs)]
    if not cols:
        return ""
    out = [
        "| run | " + " | ".join(c.title for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for label, b in runs:
        out.append(f"| {md(label)} | " + " | ".join(c.fmt(c.value(b)) for c in cols) + " |")
    out.append("| goal | " + " | ".join(c.goal for c in cols) + " |")
    met = []
    for c in cols:
        vals = [v for _, b in runs if (v := c.value(b)) is not None]
        if c.ok is None:
            lo, hi = (min(vals), max(vals)) if vals else (None, None)
            met.append(f"{c.fmt(lo)} to {c.fmt(hi)}" if vals else "–")
        else:
            met.append(f"{sum(1 for v in vals if c.ok(v))} of {len(vals)}")
    out.append("| runs meeting it | " + " | ".join(met) + " |")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- chart

# Series of the chart: key, legend label, colour.
SERIES = (
    ("tower", "tower-http 0.7 bearer check (one static token, ==)", "#9d9d9d"),
    ("floor", "hand-written floor, valid token", "#4c78a8"),
    ("valid", "keygate, valid token", "#f58518"),
    ("wrong_secret", "keygate, wrong secret", "#e45756"),
    ("unknown", "keygate, unknown token", "#b279a2"),
    ("revoked", "keygate, revoked token", "#9c755f"),
    ("all", "keygate, valid token, every policy on *", "#54a24b"),
)
CHART_TITLE = "keygate: overhead per request over a plain tower service"
CHART_SUBTITLE = (
    "criterion medians from one run, ns per request added to the raw service; shorter is better"
)
CHART_NOTE = (
    "Measured in alternating batches with the plain service, except * (total − no-auth "
    "baseline, measured apart)."
)


@dataclass
class Section:
    title: str
    bars: list[tuple[str, float]]  # (series key, ns)
    floor_goal: float | None  # 1.2 × the floor's valid-token overhead
    all_label: str | None


def chart_sections(benches: dict[str, Bench]) -> list[Section]:
    sections = []
    for n, label in SIZES:
        f = floor_of(benches, n)
        bars: list[tuple[str, float]] = []
        if f is not None:
            if f.tower_http is not None:
                bars.append(("tower", f.tower_http))
            if "valid" in f.floor:
                bars.append(("floor", f.floor["valid"]))
            bars += [(o, f.keygate[o]) for o in OUTCOMES if o in f.keygate]
        else:
            note(f"chart: floor_{n} missing; no floor, tower-http nor outcome bars at {label}")
        over = all_policies_over(benches, n)
        if over is not None:
            bars.append(("all", over[0]))
        else:
            note(f"chart: layer_{n}/{ALL_POLICIES} or /{BASELINE} missing; no every-policy bar")
        if bars:
            goal = FLOOR_GOAL * f.floor["valid"] if f and "valid" in f.floor else None
            sections.append(Section(
                f"{n:,} tokens in the store".replace(",", " "), bars, goal,
                over[1] if over else None,
            ))
    return sections


def nice_step(span: float, target_ticks: int = 6) -> float:
    if span <= 0:
        return 1.0
    raw = span / target_ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def svg_chart(sections: list[Section], source: str) -> str:
    colours = {k: c for k, _, c in SERIES}
    labels = {k: l for k, l, _ in SERIES}
    used = [k for k, _, _ in SERIES if any(k == s for sec in sections for s, _ in sec.bars)]
    width = 860
    left = 24  # bars start after a short indent; each bar's series is in the legend and its label
    right = 40
    plot_w = width - left - right
    bar_h = 20
    gap = 6
    goal_row = 18  # room above the spanned bars for a goal line's label
    section_h = 30
    legend_cols = 2
    legend_row = 20
    # Two columns of series swatches, then the goal line's swatch on a row of its own.
    legend_h = legend_row * (math.ceil(len(used) / legend_cols) + 1) + 12
    top = 70 + legend_h + 14
    values = [v for s in sections for _, v in s.bars]
    goals = [s.floor_goal for s in sections if s.floor_goal is not None]
    if any(s == "all" for sec in sections for s, _ in sec.bars):
        goals.append(POLICIES_GOAL_NS)
    lo = min(0.0, min(values))
    hi = max([*values, *goals, 1.0]) * 1.12  # room for the value past the longest bar
    step = nice_step(hi - lo)
    lo = math.floor(lo / step) * step
    hi = math.ceil(hi / step) * step

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    # Lay the bars out first: (section title y, [(key, value, y)], goal spans).
    layout = []
    y = top
    for s in sections:
        title_y = y
        y += section_h
        rows = []
        keys = [k for k, _ in s.bars]
        for k, v in s.bars:
            if (k == "valid" and s.floor_goal is not None) or k == "all":
                y += goal_row
            rows.append((k, v, y))
            y += bar_h + gap
        layout.append((s, title_y, rows, keys))
    plot_bottom = y
    height = plot_bottom + 84
    font = 'font-family="DejaVu Sans, Arial, Helvetica, sans-serif"'
    halo = 'stroke="#ffffff" stroke-width="4" stroke-linejoin="round" paint-order="stroke"'
    e: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {font} font-size="13">',
        f"<title>{escape(CHART_TITLE)}</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{width / 2}" y="28" text-anchor="middle" font-size="18" '
        f'font-weight="bold" fill="#222">{escape(CHART_TITLE)}</text>',
        f'<text x="{width / 2}" y="50" text-anchor="middle" font-size="12" fill="#555">'
        f"{escape(CHART_SUBTITLE)}</text>",
    ]
    # Legend: one swatch per series, then the goal line's swatch.
    ly = 70
    col_w = (width - 2 * left) / legend_cols
    items = [(labels[k], colours[k], False) for k in used] + [("goal", "#d62728", True)]
    items = items if goals else items[:-1]
    for i, (text, colour, dashed) in enumerate(items):
        lx = left + (i % legend_cols) * col_w
        iy = ly + (i // legend_cols) * legend_row
        if dashed:
            lx, iy = left, ly + math.ceil(len(used) / legend_cols) * legend_row
        if dashed:
            e.append(
                f'<line x1="{lx}" y1="{iy + 7}" x2="{lx + 14}" y2="{iy + 7}" stroke="{colour}" '
                'stroke-width="2" stroke-dasharray="4,3"/>'
            )
            text = (
                f"goal: keygate, valid token ≤ {FLOOR_GOAL:g}× the floor; "
                f"every policy on ≤ +{POLICIES_GOAL_NS:.0f} ns"
            )
        else:
            e.append(f'<rect x="{lx}" y="{iy}" width="14" height="14" fill="{colour}"/>')
        e.append(
            f'<text x="{lx + 20}" y="{iy + 11.5}" font-size="12" fill="#222">{escape(text)}</text>'
        )
    # Grid and x axis.
    ticks = []
    t = lo
    while t <= hi + step / 2:
        ticks.append(t)
        t += step
    for t in ticks:
        tx = x(t)
        e.append(
            f'<line x1="{tx:.1f}" y1="{top}" x2="{tx:.1f}" y2="{plot_bottom}" '
            f'stroke="{"#888" if t == 0 else "#e3e3e3"}" stroke-width="1"/>'
        )
        e.append(
            f'<text x="{tx:.1f}" y="{plot_bottom + 16}" text-anchor="middle" '
            f'font-size="11" fill="#555">{t:,.0f}</text>'
        )
    e.append(
        f'<text x="{left + plot_w / 2}" y="{plot_bottom + 36}" text-anchor="middle" '
        'font-size="13" fill="#222">overhead per request over the raw service (nanoseconds)</text>'
    )
    for s, title_y, rows, keys in layout:
        e.append(
            f'<text x="{left}" y="{title_y + 20}" font-size="14" font-weight="bold" fill="#222">'
            f"{escape(s.title)}</text>"
        )
        # Goal lines under the bars: the floor's over keygate's four outcomes, +600 ns over
        # the every-policy bar.
        spans = []
        valid_rows = [r for r in rows if r[0] == "valid"]
        if s.floor_goal is not None and valid_rows:
            spans.append((s.floor_goal, valid_rows[0][2], valid_rows[0][2] + bar_h,
                          f"goal ≤ {FLOOR_GOAL:g}× floor = {fmt_ns(s.floor_goal)}"))
        all_rows = [r for r in rows if r[0] == "all"]
        if all_rows:
            spans.append((POLICIES_GOAL_NS, all_rows[0][2], all_rows[0][2] + bar_h,
                          f"goal ≤ +{POLICIES_GOAL_NS:.0f} ns"))
        for gv, y0, y1, text in spans:
            gx = x(gv)
            e.append(
                f'<line x1="{gx:.1f}" y1="{y0 - goal_row + 2}" x2="{gx:.1f}" y2="{y1 + 2}" '
                'stroke="#d62728" stroke-width="2" stroke-dasharray="6,4"/>'
            )
            e.append(
                f'<text x="{gx + 5:.1f}" y="{y0 - 5}" font-size="11" fill="#d62728" {halo}>'
                f"{escape(text)}</text>"
            )
        valid = next((v for k, v, _ in rows if k == "valid"), None)
        for k, v, by in rows:
            x0, x1 = sorted((x(0), x(v)))
            name = labels[k]
            e.append(
                f'<rect x="{x0:.1f}" y="{by}" width="{max(x1 - x0, 1):.1f}" height="{bar_h}" '
                f'fill="{colours[k]}"><title>{escape(name)}: {v:.1f} ns</title></rect>'
            )
            text = f"{name.split(' (')[0].rstrip(' *')}: {fmt_ns(v, signed=True)}"
            if k == "valid" and s.floor_goal is not None:
                text += f" ({v / (s.floor_goal / FLOOR_GOAL):.2f}× floor)"
            elif k in OUTCOMES and valid is not None and valid > 0:
                text += f" ({(v - valid) / valid * 100:+.0f} % from valid)".replace("-", "−")
            tx, anchor = (x1 + 6, "start") if v >= 0 else (x0 - 6, "end")
            if x1 + 6 + 6.6 * len(text) > width - 4 and v >= 0:
                tx, anchor = x1 - 6, "end"  # no room past the bar: inside its end
                e.append(
                    f'<text x="{tx:.1f}" y="{by + bar_h / 2 + 4.5:.1f}" text-anchor="{anchor}" '
                    f'font-size="12" fill="#ffffff" font-weight="bold">{escape(text)}</text>'
                )
            else:
                e.append(
                    f'<text x="{tx:.1f}" y="{by + bar_h / 2 + 4.5:.1f}" text-anchor="{anchor}" '
                    f'font-size="12" fill="#222" {halo}>{escape(text)}</text>'
                )
    note_text = CHART_NOTE if "all" in used else CHART_NOTE.split(", except")[0] + "."
    e.append(
        f'<text x="{left}" y="{height - 26}" font-size="11" fill="#555">{escape(note_text)}</text>'
    )
    e.append(
        f'<text x="{left}" y="{height - 10}" font-size="10" fill="#777">'
        f"source: {escape(source)}; python3 scripts/bench_report.py</text>"
    )
    e.append("</svg>")
    return "\n".join(e) + "\n"


# --------------------------------------------------------------------------- main


def self_test() -> int:
    import unittest

    here = Path(__file__).resolve().parent
    suite = unittest.defaultTestLoader.discover(str(here), pattern="test_bench_report.py")
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    return 0 if result.wasSuccessful() else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench_report.py",
        description=(
            "Turn keygate's criterion results into markdown tables (stdout) and an SVG chart "
            "of the overhead per request over the raw service. Run after `cargo bench "
            "--bench verify` (and `--bench stores`, `--bench policies`). Missing groups are "
            "skipped with a note on stderr."
        ),
        epilog=(
            "Examples: python3 scripts/bench_report.py > bench.md; "
            "python3 scripts/bench_report.py --ratios --runs 'run*'; "
            "python3 scripts/bench_report.py --self-test"
        ),
    )
    p.add_argument(
        "--criterion",
        metavar="DIR",
        type=Path,
        action="append",
        help="criterion output directory to read (default: target/criterion); with --ratios "
        "it may be given more than once, one run (or more, with --runs) per directory",
    )
    p.add_argument(
        "--baseline",
        metavar="NAME",
        action="append",
        help="criterion baseline to read: `new` (the latest run, default) or a name given to "
        "--save-baseline; repeatable with --ratios",
    )
    p.add_argument(
        "--runs",
        metavar="GLOB",
        help="with --ratios: every saved baseline whose name matches GLOB (e.g. 'run*')",
    )
    p.add_argument(
        "--ratios",
        action="store_true",
        help="print one row per run of the ratios the goals use, and how many runs met each",
    )
    p.add_argument(
        "--svg",
        metavar="PATH",
        type=Path,
        default=Path("docs/bench-overhead.svg"),
        help="where to write the chart (default: %(default)s)",
    )
    p.add_argument("--no-svg", action="store_true", help="print the tables only")
    p.add_argument(
        "--cold-miss-log",
        metavar="FILE",
        type=Path,
        help="saved output of `cargo bench --bench stores -- cold_miss/` (its per-call "
        "p50/p90/p99/max lines) for the cold_miss table",
    )
    p.add_argument("--self-test", action="store_true", help="run the script's tests and exit")
    args = p.parse_args(argv)

    if args.self_test:
        return self_test()
    dirs = args.criterion or [Path("target/criterion")]
    for d in dirs:
        if not d.is_dir():
            note(f"{d} is not a directory; run `cargo bench --bench verify` first")
            return 1

    if args.ratios:
        runs: list[tuple[str, dict[str, Bench]]] = []
        for d in dirs:
            names = list(args.baseline or [])
            if args.runs:
                names += [n for n in baselines_in(d, args.runs) if n not in names]
            if not names:
                names = ["new"]
            for name in names:
                benches = load(d, name)
                label = name if len(dirs) == 1 else f"{d}:{name}"
                if not benches:
                    note(f"no {name}/estimates.json under {d}; run left out")
                    continue
                runs.append((label, benches))
        table = ratios_table(runs) if runs else ""
        if not table:
            note("no ratio could be computed (floor_*, layer_1000, policies, verify_threads)")
            return 1
        sys.stdout.write(table)
        return 0

    if args.runs or (args.baseline and len(args.baseline) > 1) or len(dirs) > 1:
        note("several runs are for --ratios; reading the first only")
    baseline = (args.baseline or ["new"])[0]
    benches = load(dirs[0], baseline)
    if not benches:
        note(f"no {baseline}/estimates.json under {dirs[0]}")
        return 1
    shown = display_path(dirs[0])
    source = shown if baseline == "new" else f"{shown}, baseline {baseline}"
    cold = cold_miss_log(args.cold_miss_log) if args.cold_miss_log else None
    sys.stdout.write(report(benches, source, cold))

    if args.no_svg:
        return 0
    sections = chart_sections(benches)
    if not sections:
        note("nothing to chart (no floor_* nor layer_* groups); SVG not written")
        return 0
    args.svg.parent.mkdir(parents=True, exist_ok=True)
    args.svg.write_text(svg_chart(sections, source), encoding="utf-8")
    note(f"wrote {args.svg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
