"""The wrk report parser: the numbers come from wrk's own text, units converted to ms."""

from __future__ import annotations

import pytest

from loadtests.wrk import parse_output, run_wrk

REPORT = """Running 3s test @ http://127.0.0.1:18556/hello
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.47ms    1.10ms  20.01ms   90.12%
    Req/Sec     7.20k   350.11     7.61k    80.00%
  Latency Distribution
     50%  850.00us
     75%    4.70ms
     90%    5.42ms
     99%    1.20s
  21859 requests in 3.00s, 2.90MB read
  Non-2xx or 3xx responses: 12
Requests/sec:   7281.33
Transfer/sec:    990.12KB
"""


def test_parses_percentiles_in_any_unit_and_counts() -> None:
    nums = parse_output(REPORT)
    assert nums["p50_ms"] == pytest.approx(0.85)
    assert nums["p90_ms"] == pytest.approx(5.42)
    assert nums["p99_ms"] == pytest.approx(1200.0)
    assert nums["requests"] == 21859
    assert nums["rps"] == pytest.approx(7281.33)
    assert nums["non_2xx"] == 12
    assert nums["socket_errors"] == 0


def test_socket_errors_are_summed() -> None:
    text = REPORT + "  Socket errors: connect 1, read 2, write 3, timeout 4\n"
    assert parse_output(text)["socket_errors"] == 10


def test_missing_lines_are_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="99%"):
        parse_output(REPORT.replace("     99%    1.20s\n", ""))


def test_refuses_non_loopback_targets() -> None:
    with pytest.raises(ValueError, match="loopback"):
        run_wrk("http://example.com/", duration=1)
