"""Unit tests of the soak test's verdict (tests/soak/analyze.py) on
synthetic series: python3 -m unittest discover -s tests/soak (scripts/test
runs them)."""

import contextlib
import io
import os
import random
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import analyze  # noqa: E402


def series(module, metric, values, interval=2.0, pid="100", start=0.0):
    return [(start + i * interval, module, pid, metric, float(v)) for i, v in enumerate(values)]


def noisy(base, n, amplitude, seed=1):
    rnd = random.Random(seed)
    return [base + rnd.uniform(-amplitude, amplitude) for _ in range(n)]


class Slope(unittest.TestCase):
    def test_least_squares_slope_per_minute(self):
        self.assertAlmostEqual(analyze.slope_per_min([(0, 0), (60, 10), (120, 20)]), 10.0)
        self.assertAlmostEqual(analyze.slope_per_min([(0, 5), (30, 5), (60, 5)]), 0.0)
        self.assertIsNone(analyze.slope_per_min([(0, 1)]))
        self.assertIsNone(analyze.slope_per_min([(3, 1), (3, 2)]))

    def test_default_warmup_is_a_quarter_within_30s_and_10min(self):
        self.assertEqual(analyze.default_warmup(120), 30)
        self.assertEqual(analyze.default_warmup(900), 225)
        self.assertEqual(analyze.default_warmup(72 * 3600), 600)


class Verdict(unittest.TestCase):
    # A 2-minute run sampled every 2 s, as scripts/test's soak.
    N = 61

    def test_a_flat_series_with_noise_passes(self):
        rows = series("gw-a", "dirty_kib", noisy(1500, self.N, 200))
        rows += series("gw-a", "fds", [12 + (i % 3 == 0) for i in range(self.N)])
        rows += series("gw-a", "threads", [3] * self.N)
        report = analyze.analyze(rows)
        self.assertTrue(report.ok, report.failures)
        judged = [v for v in report.verdicts if v.judged]
        self.assertEqual({v.metric for v in judged}, {"dirty_kib", "fds", "threads"})

    def test_a_linear_growth_fails_naming_module_metric_slope_and_threshold(self):
        # 1 MiB a minute: 2 MiB over the run.
        values = [1500 + 1024 * i * 2 / 60 + v for i, v in enumerate(noisy(0, self.N, 100))]
        report = analyze.analyze(series("gw-leaky", "dirty_kib", values))
        self.assertFalse(report.ok)
        self.assertEqual(len(report.failures), 1)
        message = report.failures[0]
        self.assertIn("gw-leaky", message)
        self.assertIn("dirty_kib", message)
        self.assertRegex(message, r"grows \+10[0-9]{2}\.\d KiB/min")
        self.assertRegex(message, r"threshold \d+\.\d KiB/min")

    def test_a_slow_leak_passes_a_short_run_but_fails_a_long_one(self):
        # 64 KiB a minute is under a 2-minute run's noise floor (1 MiB over
        # 1.5 min) but not a 2-hour run's rate threshold (16 KiB/min).
        short = [1500 + 64 * i * 2 / 60 for i in range(self.N)]
        self.assertTrue(analyze.analyze(series("gw-a", "dirty_kib", short)).ok)
        long = [1500 + 64 * i * 5 / 60 for i in range(1441)]
        report = analyze.analyze(series("gw-a", "dirty_kib", long, interval=5))
        self.assertFalse(report.ok)

    def test_a_step_during_the_warmup_passes(self):
        # A Go worker's linear memory grows to its plateau in the first
        # 30 s, then stays.
        values = [2000 + 5000 * min(1.0, i * 2 / 28) for i in range(self.N)]
        values = [v + n for v, n in zip(values, noisy(0, self.N, 50))]
        report = analyze.analyze(series("gw-go", "dirty_kib", values))
        self.assertTrue(report.ok, report.failures)

    def test_a_step_in_the_first_half_of_the_window_passes_the_same_step_late_fails(self):
        # A one-time step of 1.5 MiB 20 s after the warm-up: the second half
        # is flat, so no leak. A steady rise keeps growing in both halves.
        early = [1000 + (1536 if i * 2 >= 50 else 0) for i in range(self.N)]
        self.assertTrue(analyze.analyze(series("gw-a", "dirty_kib", early)).ok)
        rising = [1000 + 1536 * max(0, i * 2 - 30) / 90 for i in range(self.N)]
        self.assertFalse(analyze.analyze(series("gw-a", "dirty_kib", rising)).ok)

    def test_a_shrink_passes(self):
        values = [8000 - 40 * i for i in range(self.N)]
        self.assertTrue(analyze.analyze(series("gw-a", "dirty_kib", values)).ok)

    def test_growing_fds_and_threads_fail(self):
        fds = [10 + i // 10 for i in range(self.N)]  # one more every 20 s
        report = analyze.analyze(series("gw-a", "fds", fds))
        self.assertFalse(report.ok)
        self.assertIn("fds grows", report.failures[0])
        threads = [2 + i // 15 for i in range(self.N)]
        self.assertFalse(analyze.analyze(series("gw-a", "threads", threads)).ok)

    def test_a_transient_fd_or_thread_is_noise(self):
        fds = [10] * self.N
        fds[-1] = 12  # a control connection open at the last sample
        fds[40] = 11
        self.assertTrue(analyze.analyze(series("[supervisor]", "fds", fds)).ok)

    def test_a_backlog_building_in_a_ring_fails(self):
        depth = [i * 5 for i in range(self.N)]
        report = analyze.analyze(series("ring:temp-raw:gw-temp-sensor>gw-temp-filter", "depth", depth, pid=""))
        self.assertFalse(report.ok)
        self.assertIn("ring:temp-raw", report.failures[0])

    def test_uss_and_pss_are_recorded_not_judged(self):
        # The supervisor's USS flips between 3 and 6 MiB as other edgeward
        # processes on the host map the same binary's pages and go (seen on
        # the dev VM while the test suite ran); its private dirty memory,
        # what a leak grows, stays.
        uss = [3080 if i < 45 else 6192 for i in range(self.N)]
        rows = series("[supervisor]", "uss_kib", uss)
        rows += series("[supervisor]", "pss_kib", [1000 + 100 * i for i in range(self.N)])
        rows += series("[supervisor]", "dirty_kib", noisy(2100, self.N, 30))
        report = analyze.analyze(rows)
        self.assertTrue(report.ok, report.failures)
        uss_verdict = next(v for v in report.verdicts if v.metric == "uss_kib")
        self.assertTrue(uss_verdict.judged and not uss_verdict.checked)
        # Over the threshold in both halves: judged, it would fail.
        self.assertGreater(min(uss_verdict.slope, uss_verdict.half_slope), 1024 / 1.5)

    def test_too_short_a_run_judges_nothing_and_says_so(self):
        report = analyze.analyze(series("gw-a", "dirty_kib", [1000] * 20))
        self.assertFalse(report.ok)
        self.assertIn("nothing could be judged", report.failures[0])


class GoHeap(unittest.TestCase):
    def go_worker(self, values, interval=5.0):
        rows = series("gw-historian", "dirty_kib", values, interval=interval)
        return rows + [(0.0, "gw-historian", "100", "language", "go")]

    def test_a_go_heap_rising_to_its_first_collection_is_a_note(self):
        # 20 minutes of gw-historian: 110 KiB/min of snapshot buffers, which
        # its collector frees only once the heap reaches 4 MiB.
        values = [860 + 110 * i * 5 / 60 for i in range(241)]
        report = analyze.analyze(self.go_worker(values))
        self.assertTrue(report.ok, report.failures)
        self.assertEqual(len(report.notes), 1)
        self.assertIn("a Go heap before its first collection", report.notes[0])
        self.assertIn("NOTE module gw-historian", analyze.summary(report))
        # The same series from a C or Rust worker is a leak.
        self.assertFalse(analyze.analyze(series("gw-historian", "dirty_kib", values, interval=5)).ok)

    def test_a_go_leak_fails_once_above_the_ceiling(self):
        values = [860 + 1024 * i * 5 / 60 for i in range(241)]  # 1 MiB/min for 20 min
        report = analyze.analyze(self.go_worker(values))
        self.assertFalse(report.ok)
        self.assertIn("gw-historian", report.failures[0])


class Restarts(unittest.TestCase):
    def rows_with_a_restart(self):
        # A 4-minute run: pid 100 grows to 6 MiB in 20 s and is replaced at
        # 100 s by pid 200, which starts small again and warms up the same
        # way. The warm-up is 60 s of each worker's life.
        rows = []
        for i in range(50):
            t = i * 2.0
            rows.append((t, "gw-go", "100", "dirty_kib", 1000 + 5000 * min(1, t / 20)))
            rows.append((t, "gw-go", "100", "restarts", 0))
        rows.append((100.0, "gw-go", "", "restarts", 1))  # between workers
        for i in range(51, 121):
            t = i * 2.0
            rows.append((t, "gw-go", "200", "dirty_kib", 1000 + 5000 * min(1, (t - 102) / 20)))
            rows.append((t, "gw-go", "200", "restarts", 1))
        rows += series("gw-b", "dirty_kib", [1200] * 121)
        return rows

    def test_a_restart_is_reported_and_fails_not_taken_for_a_leak_or_a_shrink(self):
        report = analyze.analyze(self.rows_with_a_restart())
        self.assertEqual(report.warmup_s, 60)
        self.assertEqual(report.restarts, {"gw-go": ["at 102 s: pid 100 -> 200"]})
        self.assertEqual(len(report.failures), 1, report.failures)
        self.assertIn("module gw-go restarted during the soak: at 102 s: pid 100 -> 200", report.failures[0])
        # Each worker is its own series, judged after its own warm-up.
        go = [v for v in report.verdicts if v.module == "gw-go"]
        self.assertEqual([(v.pid, v.judged, v.grows) for v in go], [("100", True, False), ("200", True, False)])

    def test_allow_restarts_makes_it_a_warning(self):
        report = analyze.analyze(self.rows_with_a_restart(), allow_restarts=True)
        self.assertTrue(report.ok, report.failures)
        self.assertEqual(len(report.warnings), 1)
        self.assertIn("WARN module gw-go restarted", analyze.summary(report))

    def test_a_restart_seen_only_in_the_count_is_reported(self):
        rows = series("gw-a", "dirty_kib", [1000] * 61)
        rows += [(i * 2.0, "gw-a", "100", "restarts", 0 if i < 50 else 2) for i in range(61)]
        report = analyze.analyze(rows)
        self.assertEqual(report.restarts, {"gw-a": ["2 more by its restart count (0 -> 2)"]})
        self.assertFalse(report.ok)


class Cli(unittest.TestCase):
    def test_csv_round_trip_and_exit_codes(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "samples.csv")
            with open(path, "w", encoding="utf-8") as f:
                f.write("time_s,module,pid,metric,value\n")
                for i in range(61):
                    f.write(f"{i * 2},gw-a,100,dirty_kib,{1000 + (i * 40)}\n")  # 1.2 MiB/min
                    f.write(f"{i * 2},gw-a,100,cgroup_kib,\n")  # no cgroup: skipped
                    f.write(f"{i * 2},gw-b,101,dirty_kib,900\n")
            quiet = io.StringIO()
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                self.assertEqual(analyze.main([path, "--summary", os.path.join(d, "s.txt")]), 1)
                self.assertEqual(analyze.main([path, "--warmup", "200"]), 1)  # nothing judged
                self.assertEqual(analyze.main([os.path.join(d, "missing.csv")]), 2)
            with open(os.path.join(d, "s.txt"), encoding="utf-8") as f:
                text = f.read()
            self.assertIn("FAIL module gw-a (pid 100): dirty_kib grows +1200.0 KiB/min", text)
            self.assertIn("soak: FAIL (1 problem(s))", text)


if __name__ == "__main__":
    unittest.main()
