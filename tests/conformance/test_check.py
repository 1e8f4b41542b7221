"""``castway check`` against the fixture streams of ``streams/``: a clean LL-HLS ladder and
one stream per rule, each breaking that rule alone. The checker must report exactly the
known faults, each with the playlist lines behind it; the command's exit code and JSON are
what CI reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from castway.hls.watch import BroadcastWatch
from conformance.follow import check_stream
from tests.conformance.conftest import STREAMS
from tests.serve_process import clean_env

#: scenario -> the findings it must produce: (rule, severity, ((file, line number), ...)).
#: Lines from two reloads of one playlist carry the same file name.
EXPECTED: dict[str, list[tuple[str, str, tuple[tuple[str, int], ...]]]] = {
    "clean": [],
    "extinf-over-target": [("extinf-over-target", "violation",
                            (("index.m3u8", 3), ("index.m3u8", 15)))],
    "extinf-vs-media": [("extinf-vs-media", "violation", (("index.m3u8", 15),))],
    "timestamps-vs-extinf": [("timestamps-vs-extinf", "violation",
                              (("index.m3u8", 10), ("index.m3u8", 12)))],
    "segment-removed-early": [("segment-removed-early", "violation",
                               (("index.m3u8", 4), ("index.m3u8", 4), ("index.m3u8", 12)))],
    "target-duration-changed": [("target-duration-changed", "violation",
                                 (("index.m3u8", 3), ("index.m3u8", 3)))],
    "media-sequence": [("media-sequence", "violation", (("index.m3u8", 4), ("index.m3u8", 4)))],
    "discontinuity-sequence": [("discontinuity-sequence", "violation",
                                (("index.m3u8", 5), ("index.m3u8", 5)))],
    "program-date-time": [("program-date-time", "violation",
                           (("index.m3u8", 11), ("index.m3u8", 14)))],
    "server-control-changed": [("server-control-changed", "violation",
                                (("index.m3u8", 4), ("index.m3u8", 4)))],
    "segment-starts-without-keyframe": [("segment-starts-without-keyframe", "violation",
                                         (("index.m3u8", 6), ("index.m3u8", 12)))],
    "segment-undecodable": [("segment-undecodable", "violation", (("index.m3u8", 12),))],
    "part-over-target": [("part-over-target", "violation",
                          (("index.m3u8", 5), ("index.m3u8", 16))),
                         ("part-over-target", "violation",
                          (("index.m3u8", 5), ("index.m3u8", 21)))],
    "part-hold-back": [("part-hold-back", "warning", (("index.m3u8", 4), ("index.m3u8", 5)))],
    "can-block-reload": [("can-block-reload", "violation", (("index.m3u8", 4),))],
    "bandwidth-below-peak": [("bandwidth-below-peak", "violation",
                              (("master.m3u8", 3), ("v/index.m3u8", 9)))],
    "codecs-vs-media": [("codecs-vs-media", "violation",
                         (("master.m3u8", 3), ("v/index.m3u8", 9)))],
    "resolution-vs-media": [("resolution-vs-media", "violation",
                             (("master.m3u8", 3), ("v/index.m3u8", 9)))],
    "differs-across-renditions": [("differs-across-renditions", "violation",
                                   (("b/index.m3u8", 3), ("a/index.m3u8", 3)))],
    "variant-set-changed": [("variant-set-changed", "violation", (("master.m3u8", 5),))],
}


def _entry(scenario: str) -> str:
    return "master.m3u8" if (STREAMS / scenario / "master.m3u8").exists() else "index.m3u8"


def _check(streams: str, scenario: str) -> BroadcastWatch:
    checker, _ = check_stream(f"{streams}/{scenario}/{_entry(scenario)}", seconds=20)
    return checker


def test_every_fixture_folder_is_a_scenario() -> None:
    assert {p.name for p in STREAMS.iterdir() if p.is_dir()} == set(EXPECTED)


@pytest.mark.peer
@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_each_stream_breaks_exactly_its_rule_on_the_right_lines(streams: str,
                                                                scenario: str) -> None:
    prefix = f"{streams}/{scenario}/"
    found = [(f.rule.value, f.severity.value,
              tuple((ln.url.removeprefix(prefix), ln.number) for ln in f.lines))
             for f in _check(streams, scenario).findings]
    assert sorted(found) == sorted(EXPECTED[scenario])


@pytest.mark.peer
def test_a_finding_quotes_the_playlist_lines_themselves(streams: str) -> None:
    [finding] = _check(streams, "extinf-over-target").findings
    assert [ln.text for ln in finding.lines] == ["#EXT-X-TARGETDURATION:1", "#EXTINF:2.00000,"]
    assert finding.spec.startswith("rfc8216bis 4.4.3.1")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launch.cli", "check", *args],
                          capture_output=True, text=True, timeout=120, env=clean_env(),
                          check=False)


@pytest.mark.peer
def test_the_command_exits_zero_on_a_clean_stream_and_one_on_a_violation(streams: str) -> None:
    clean = _cli(f"{streams}/clean/master.m3u8", "--seconds", "10")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 violation(s), 0 warning(s): conforms" in clean.stdout
    broken = _cli(f"{streams}/extinf-vs-media/index.m3u8")
    assert broken.returncode == 1
    assert "VIOLATION extinf-vs-media" in broken.stdout
    assert "extinf-vs-media/index.m3u8:15  #EXTINF:0.70000," in broken.stdout


@pytest.mark.peer
def test_warnings_alone_do_not_fail_the_check(streams: str) -> None:
    result = _cli(f"{streams}/part-hold-back/index.m3u8", "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert (report["violations"], report["warnings"]) == (0, 1)


@pytest.mark.peer
def test_json_report_for_ci(streams: str) -> None:
    result = _cli(f"{streams}/bandwidth-below-peak/master.m3u8", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["master"] is True and report["live"] is False
    assert report["segments_checked"] == 4 and report["violations"] == 1
    [finding] = report["findings"]
    assert finding["rule"] == "bandwidth-below-peak" and finding["severity"] == "violation"
    assert [(ln["line"], ln["text"].split(":")[0]) for ln in finding["lines"]] == \
        [(3, "#EXT-X-STREAM-INF"), (9, "#EXTINF")]


def test_an_unreachable_stream_is_a_violation() -> None:
    from tests.support import free_port

    result = _cli(f"http://127.0.0.1:{free_port()}/nothing/master.m3u8", "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["findings"][0]["rule"] == "unreachable"
