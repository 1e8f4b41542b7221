"""The `castway` command line: each subcommand's arguments, as a user types them."""

from __future__ import annotations

from pathlib import Path

import pytest

from launch.cli import BENCHES, main, parse_args


def test_serve_takes_the_readme_flags() -> None:
    args = parse_args(["serve", "--data-dir", "d", "--host", "0.0.0.0", "--rtmp-port", "1935",
                       "--http-port", "8080"])
    assert (args.data_dir, args.host, args.rtmp_port, args.http_port) == \
        (Path("d"), "0.0.0.0", 1935, 8080)


def test_worker_hands_unknown_options_to_celery() -> None:
    args = parse_args(["worker", "--beat", "--pool", "solo", "--concurrency", "2"])
    assert args.beat and not args.scheduler
    assert args.celery_args == ["--pool", "solo", "--concurrency", "2"]


def test_other_commands_refuse_unknown_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["channels", "list", "--pool", "solo"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --pool solo" in capsys.readouterr().err


def test_every_benchmark_is_a_module_with_main() -> None:
    import importlib

    for module in BENCHES.values():
        assert callable(importlib.import_module(module).main)


def test_delegated_subcommands_keep_their_own_help(capsys: pytest.CaptureFixture[str]
                                                   ) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["scheduler", "--help"])
    assert exc.value.code == 0
    assert "castway scheduler" in capsys.readouterr().out


def test_channels_create_prints_the_key_once_as_json(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    assert main(["channels", "create", "demo", "--json", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '"channel": "demo"' in out and '"stream_key": "cw_' in out
    assert main(["channels", "list", "--json", "--data-dir", str(tmp_path)]) == 0
    assert "cw_" not in capsys.readouterr().out  # only hashes are kept


def test_calibrate_measures_this_machine_into_the_data_dir(tmp_path: Path) -> None:
    from castway.cost import Calibration

    assert main(["calibrate", "--data-dir", str(tmp_path), "--seconds", "1",
                 "--cores", "2"]) == 0
    cal = Calibration.from_json((tmp_path / "calibration.json").read_text())
    assert cal.cores == 2.0 and cal.preset == "veryfast"
    assert cal.encode_mpx_s > 0 and cal.decode_mpx_s > 0 and cal.broadcast_s > 0
