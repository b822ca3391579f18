"""Tests of scripts/bench_report.py against the fixture in scripts/testdata/criterion.

Run from the crate root with either of:

    python3 scripts/bench_report.py --self-test
    python3 -m unittest discover -s scripts -p 'test_bench_report.py'

The fixture is a trimmed criterion directory (each estimates.json keeps only the median):
`new` holds one loaded run's floor_*, verify_threads, authenticate and cold_miss medians as
recorded, plus hand-made layer_1000 and policies groups; `run1` and `run2` are two saved
baselines with round hand-set figures for --ratios. layer_1000000 is missing on purpose.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, str(HERE))

import bench_report  # noqa: E402

FIXTURE = HERE / "testdata" / "criterion"


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = bench_report.main(list(args))
    return code, out.getvalue(), err.getvalue()


class Load(unittest.TestCase):
    def test_ids_medians_and_throughput(self):
        b = bench_report.load(FIXTURE)
        self.assertAlmostEqual(b["floor_1000/keygate/valid"].median_ns, 2045.8)
        self.assertAlmostEqual(b["floor_1000/floor/valid"].median_ns, 269.6)
        t = b["verify_threads/memory/2"]
        self.assertEqual((t.function, t.parameter, t.elements), ("memory", "2", 512.0))
        self.assertNotIn("layer_1000000/valid", b)

    def test_saved_baseline(self):
        b = bench_report.load(FIXTURE, "run1")
        self.assertEqual(b["floor_1000/keygate/valid"].median_ns, 290)
        self.assertNotIn("authenticate/memory", b)  # only in `new`
        self.assertEqual(bench_report.baselines_in(FIXTURE, "run*"), ["run1", "run2"])


class Report(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.svg = Path(self.tmp.name) / "chart.svg"
        self.code, self.out, self.err = run("--criterion", str(FIXTURE), "--svg", str(self.svg))

    def tearDown(self):
        self.tmp.cleanup()

    def test_floor_table(self):
        self.assertEqual(self.code, 0)
        # keygate ÷ floor per outcome at 1 k and at 1 M (2045.8 / 269.6, 2649.3 / 1115.4).
        self.assertIn(
            "| valid token | +270 ns | +2,046 ns | 7.59× | +1,115 ns | +2,649 ns | 2.38× |",
            self.out,
        )
        self.assertIn("keygate ÷ floor for a valid token 7.59× (goal ≤ 1.2×: missed)", self.out)
        # Spread of keygate's four outcomes at 1 k: (2045.8 − 349.0) / 349.0.
        self.assertIn("486.2 % apart", self.out)
        self.assertIn("+164 ns at 1 k tokens, +105 ns at 1 M tokens", self.out)
        self.assertIn("`cargo bench --bench verify -- 'floor_1000/'`", self.out)

    def test_layer_policies_threads_authenticate(self):
        self.assertIn("| valid_all_policies | 700 ns | +500 ns | 2.92× |", self.out)
        self.assertIn(
            "Every policy on, over no_auth_baseline: +500 ns (goal ≤ +600 ns: met)", self.out
        )
        self.assertIn("| audit | 450 ns | +250 ns | +70 ns |", self.out)
        self.assertIn("Every policy on, over no_auth: +560 ns (goal ≤ +600 ns: met)", self.out)
        # 2 × 138340.8 / 244443.2 and 2 × 119414.9 / 257722.7.
        self.assertIn("| memory | 1.85 M/s | 2.09 M/s | 1.13× |", self.out)
        self.assertIn("| postgres+cache-hit | 2.14 M/s | 1.99 M/s | 0.93× |", self.out)
        self.assertIn("| postgres+cache-hit | 647 ns | 1.18× |", self.out)
        self.assertIn("postgres+cache-hit 1.18× (met)", self.out)

    def test_missing_groups_noted(self):
        self.assertIn("group layer_1000000 not found", self.err)
        self.assertNotIn("group layer_1000 not found", self.err)
        self.assertNotIn("### layer_1000000", self.out)

    def test_chart(self):
        svg = self.svg.read_text(encoding="utf-8")
        root = ET.fromstring(svg.encode("utf-8"))  # well-formed
        self.assertTrue(root.tag.endswith("svg"))
        text = " ".join("".join(t.itertext()) for t in root.iter() if t.tag.endswith("text"))
        for label in (
            "keygate: overhead per request over a plain tower service",
            "overhead per request over the raw service (nanoseconds)",
            "tower-http 0.7 bearer check",
            "hand-written floor, valid token",
            "keygate, wrong secret",
            "keygate, valid token, every policy on",
            "1 000 tokens in the store",
            "1 000 000 tokens in the store",
            "goal ≤ 1.2× floor = 324 ns",  # 1.2 × 269.6
            "goal ≤ +600 ns",
            "(7.59× floor)",
        ):
            self.assertIn(label, text)
        # One bar per series and size, and the every-policy bar only at 1 k (no layer_1000000).
        bars = [r for r in root.iter() if r.tag.endswith("rect") and r.find("{*}title") is not None]
        self.assertEqual(len(bars), 6 + 7)

    def test_no_machine_path_in_the_chart(self):
        # A criterion directory outside the current one (an absolute path, as bench_all.sh
        # passes): the chart names its last two parts, never the machine's own path.
        with tempfile.TemporaryDirectory() as far:
            copy = Path(far) / "report" / "criterion"
            shutil.copytree(FIXTURE, copy)
            svg = Path(far) / "chart.svg"
            code, out, _ = run("--criterion", str(copy), "--svg", str(svg))
            self.assertEqual(code, 0)
            chart = svg.read_text(encoding="utf-8")
            self.assertIn("source: report/criterion;", chart)
            self.assertNotIn(far, chart)
            self.assertNotIn(far, out)


class ColdMiss(unittest.TestCase):
    def test_percentiles_from_the_bench_output(self):
        log = HERE / "testdata" / "cold_miss.log"
        code, out, _ = run("--criterion", str(FIXTURE), "--no-svg", "--cold-miss-log", str(log))
        self.assertEqual(code, 0)
        # The last line of each backend wins (the first is criterion's warm-up).
        self.assertIn("| redis+cache | 1000 | 71.4 µs | 90.3 µs | 151 µs | 2.10 ms |", out)
        self.assertIn("| postgres+cache | 1000 | 950 µs | 1.30 ms | 2.50 ms | 11.0 ms |", out)

    def test_durations(self):
        d = bench_report.parse_duration
        self.assertEqual((d("95ns"), d("1.5µs"), d("2.0ms"), d("1.2s")), (95, 1500, 2e6, 1.2e9))
        self.assertIsNone(d("fast"))

    def test_natural_order_of_runs(self):
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("rep1-run10", "rep1-run2", "rep1-run1", "other"):
                d = Path(tmp) / "g" / "b" / name
                d.mkdir(parents=True)
                (d / "estimates.json").write_text('{"median": {"point_estimate": 1}}')
            self.assertEqual(
                bench_report.baselines_in(Path(tmp), "rep1-run*"),
                ["rep1-run1", "rep1-run2", "rep1-run10"],
            )


class Ratios(unittest.TestCase):
    def test_one_row_per_run_and_goal_counts(self):
        code, out, _ = run("--criterion", str(FIXTURE), "--ratios", "--runs", "run*")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertTrue(
            lines[0].startswith(
                "| run | keygate ÷ floor, valid, 1 k | keygate ÷ floor, valid, 1 M |"
            )
        )
        self.assertIn("| run1 | 1.16× | 1.17× | 6.9 % | 5.7 % | +500 ns | 1.85× | 1.95× |", lines)
        self.assertIn("| run2 | 1.28× | 1.13× | 21.9 % | 3.5 % | +650 ns | 1.75× | 1.90× |", lines)
        self.assertIn(
            "| runs meeting it | 1 of 2 | 2 of 2 | 1 of 2 | 2 of 2 | 1 of 2 | 1 of 2 "
            "| 1.90× to 1.95× |",
            lines,
        )
        self.assertNotIn("policies)", lines[0])  # no policies group in the saved runs

    def test_explicit_baselines(self):
        code, out, _ = run(
            "--criterion", str(FIXTURE), "--ratios", "--baseline", "run2", "--baseline", "new"
        )
        self.assertEqual(code, 0)
        rows = [l.split(" | ")[0] for l in out.splitlines()[2:]]
        self.assertEqual(rows, ["| run2", "| new", "| goal", "| runs meeting it"])
        self.assertIn("every policy over raw (policies)", out.splitlines()[0])

    def test_missing_directory(self):
        code, _, err = run("--criterion", "/nonexistent/criterion", "--ratios")
        self.assertEqual(code, 1)
        self.assertIn("is not a directory", err)


class Repeat(unittest.TestCase):
    """scripts/bench_repeat.sh with a stand-in for cargo that copies the fixture's `run1`
    into the baseline criterion was asked to save."""

    def test_repeat_with_fake_cargo(self):
        script = HERE / "bench_repeat.sh"
        with tempfile.TemporaryDirectory() as tmp:
            fake = Path(tmp) / "cargo"
            fake.write_text(
                "#!/usr/bin/env python3\n"
                "import shutil, sys, os\n"
                "from pathlib import Path\n"
                "args = sys.argv[1:]\n"
                "name = args[args.index('--save-baseline') + 1]\n"
                f"src = Path({str(FIXTURE)!r})\n"
                "dst = Path(os.environ['CARGO_TARGET_DIR']) / 'criterion'\n"
                "for d in src.rglob('run1'):\n"
                "    to = dst / d.parent.relative_to(src)\n"
                "    for sub in ('new', name):\n"
                "        shutil.copytree(d, to / sub, dirs_exist_ok=True)\n"
                "with open(Path(os.environ['CARGO_TARGET_DIR']) / 'calls', 'a') as f:\n"
                "    f.write(' '.join(args) + '\\n')\n"
            )
            fake.chmod(0o755)
            env = dict(os.environ, CARGO=str(fake), CARGO_TARGET_DIR=tmp)
            p = subprocess.run(
                ["bash", str(script), "2"], cwd=HERE.parent, env=env,
                capture_output=True, text=True, timeout=120,
            )
            self.assertEqual(p.returncode, 0, p.stderr)
            calls = (Path(tmp) / "calls").read_text().splitlines()
            self.assertTrue(all("--warm-up-time" in c and "--noplot" in c for c in calls))
            self.assertTrue(any(c.startswith("bench --bench verify") for c in calls))
            self.assertTrue(any(c.startswith("bench --bench stores") for c in calls))
            rows = [l for l in p.stdout.splitlines() if l.startswith("| rep")]
            self.assertEqual(len(rows), 2, p.stdout)
            self.assertIn("| 1.16× | 1.17× | 6.9 % | 5.7 % | +500 ns | 1.85× | 1.95× |", rows[0])


class All(unittest.TestCase):
    """scripts/bench_all.sh with a stand-in for cargo: `verify` copies the fixture's `new`
    results into CRITERION_HOME, `stores` prints the cold_miss lines, `memory` a table."""

    def test_all_with_fake_cargo(self):
        script = HERE / "bench_all.sh"
        with tempfile.TemporaryDirectory() as tmp:
            fake = Path(tmp) / "cargo"
            fake.write_text(
                "#!/usr/bin/env python3\n"
                "import shutil, sys, os\n"
                "from pathlib import Path\n"
                "args = sys.argv[1:]\n"
                "bench = args[args.index('--bench') + 1]\n"
                f"src = Path({str(FIXTURE)!r})\n"
                "with open(Path(os.environ['FAKE_CALLS']), 'a') as f:\n"
                "    f.write(' '.join(args) + '\\n')\n"
                "if bench == 'verify':\n"
                "    dst = Path(os.environ['CRITERION_HOME'])\n"
                "    for d in src.rglob('new'):\n"
                "        shutil.copytree(d, dst / d.relative_to(src), dirs_exist_ok=True)\n"
                "elif bench == 'stores':\n"
                f"    print(Path({str(HERE / 'testdata' / 'cold_miss.log')!r}).read_text())\n"
                "elif bench == 'memory':\n"
                "    print('| measure | bytes/token |')\n"
                "    print('| resident set (/proc/self/statm) | 250 |')\n"
            )
            fake.chmod(0o755)
            out, svg, calls = Path(tmp) / "out", Path(tmp) / "chart.svg", Path(tmp) / "calls"
            env = dict(
                os.environ, CARGO=str(fake), OUT=str(out), SVG=str(svg), FAKE_CALLS=str(calls)
            )
            env.pop("CRITERION_HOME", None)
            p = subprocess.run(
                ["bash", str(script)], cwd=HERE.parent, env=env,
                capture_output=True, text=True, timeout=120,
            )
            self.assertEqual(p.returncode, 0, p.stderr)
            report = (out / "report.md").read_text(encoding="utf-8")
            self.assertIn("before verify:", report)  # the load average, with the figures
            self.assertIn("| valid token | +270 ns | +2,046 ns | 7.59× |", report)
            self.assertIn(
                "| postgres+cache | 1000 | 950 µs | 1.30 ms | 2.50 ms | 11.0 ms |", report
            )
            self.assertIn("| resident set (/proc/self/statm) | 250 |", report)
            self.assertTrue(svg.read_text(encoding="utf-8").startswith("<?xml"))
            lines = calls.read_text().splitlines()
            self.assertTrue(lines[0].startswith("bench --bench verify -- --noplot"))
            self.assertEqual(lines[-1], "bench --bench memory")


if __name__ == "__main__":
    unittest.main()
