"""The command line: help, version, exit codes, trailer hygiene."""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits

import autodriz
from autodriz import pipeline
from autodriz.cli import main
from autodriz.config import ENVIRONMENT_VARIABLES
from autodriz.exitcodes import ExitCode

from realdata import prepare_goodss

README = Path(__file__).resolve().parents[1] / "README.md"


def _sha(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.fits"))}


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"autodriz {autodriz.__version__}"


def test_python_dash_m_is_the_same_command():
    out = subprocess.run(
        [sys.executable, "-m", "autodriz", "--version"], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == f"autodriz {autodriz.__version__}"


def test_the_command_freezes_what_it_made_a_library_call_does_not(capsys):
    import gc

    # A library caller's process (this one) keeps its collector as it was: frozen objects are
    # never collected, and its garbage is its own.
    before = gc.get_freeze_count()
    assert main(["--print-settings"]) == 0
    assert gc.get_freeze_count() == before
    # The command's own process ends with its objects frozen (its exit skips the collector's
    # passes over them); registered first, the hook below runs after the command's own.
    script = ("import atexit, gc, sys\n"
              "atexit.register(lambda: print('frozen', gc.get_freeze_count()))\n"
              "sys.argv = ['autodriz', '--print-settings']\n"
              "from autodriz.cli import console\n"
              "console()\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout.splitlines()[-1].split()[1]) > 100_000
    # And before the run itself: what the pipeline's imports made is frozen once they are done,
    # so the collector's full passes during the run skip it (read here before any exit freeze).
    script = ("import gc\n"
              "from autodriz.cli import main\n"
              "assert main(['--print-settings'], own_process=True) == 0\n"
              "print('frozen', gc.get_freeze_count())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout.splitlines()[-1].split()[1]) > 100_000


def test_help_explains_flags_env_vars_and_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name, _ in ENVIRONMENT_VARIABLES:
        assert name in text
    for code in ExitCode:
        assert re.search(rf"\b{int(code)}\s+{code.name}\b", text)
    for flag in ("--allow-header-wcs", "--no-apriori", "--no-aposteriori", "--jref", "--output-dir", "demo", "simulate"):
        assert flag in text


def test_readme_exit_code_table_matches_the_enum():
    rows = re.findall(r"^\| (\d+) \| `([A-Z][A-Z0-9_]*)` \|", README.read_text(), flags=re.M)
    assert {(int(c), n) for c, n in rows} == {(int(c), c.name) for c in ExitCode}


def test_readme_lists_every_environment_variable():
    text = README.read_text()
    for name, _ in ENVIRONMENT_VARIABLES:
        assert f"`{name}`" in text, name


def _readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_every_setting_has_its_declared_flag_and_no_other_flag_sets_one():
    """One declaration (config._FIELD_SPECS): the parser's flags are checked against it."""
    from autodriz.cli import build_parser
    from autodriz.config import SETTING_FLAGS, SETTING_NAMES

    actions = {opt: a for a in build_parser()._actions for opt in a.option_strings}
    for name, flag in SETTING_FLAGS.items():
        assert flag in actions, f"setting {name}: flag {flag} missing from the parser"
        assert actions[flag].dest == name, f"{flag} sets {actions[flag].dest}, not the setting {name}"
    not_settings = {"help", "version", "input", "print_settings", "config", "profile", "quiet", "debug"}
    dests = {a.dest for a in build_parser()._actions}
    assert dests - not_settings == set(SETTING_NAMES), "a flag that is not a declared setting"


def test_readme_flag_table_names_only_flags_that_exist_and_every_setting_flag():
    from autodriz.cli import build_parser
    from autodriz.config import SETTING_FLAGS

    options = {opt for a in build_parser()._actions for opt in a.option_strings}
    table = [line.split(" | ")[0] for line in _readme_section("Flags").splitlines() if line.startswith("| `")]
    in_readme = set(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", " ".join(table)))
    assert in_readme <= options, sorted(in_readme - options)
    assert set(SETTING_FLAGS.values()) <= in_readme, sorted(set(SETTING_FLAGS.values()) - in_readme)


def test_readme_environment_table_is_exactly_what_the_loader_reads():
    section = _readme_section("Settings and environment variables")
    env_table = section[section.index("| variable | values | effect |"):]
    rows = [line.split(" | ")[0] for line in env_table.splitlines() if line.startswith("| `")]
    in_readme = set(re.findall(r"`([A-Za-z_]+)`", " ".join(rows)))
    assert in_readme == {name for name, _ in ENVIRONMENT_VARIABLES}


def test_bad_environment_value_is_a_usage_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ASTROMETRY_COMPUTE_APOSTERIORI", "perhaps")
    code = main([str(tmp_path / "x_asn.fits")])
    assert code == ExitCode.USAGE == 2
    err = capsys.readouterr().err
    assert "ASTROMETRY_COMPUTE_APOSTERIORI" in err and "perhaps" in err


def test_missing_input_is_an_input_error(tmp_path):
    code = main([str(tmp_path / "nothere_asn.fits")])
    assert code == ExitCode.INPUT_ERROR
    trailer = (tmp_path / "nothere.tra").read_text()
    assert "AUTODRIZ-VERDICT INPUT_ERROR exit=3" in trailer


def test_raw_without_calibrated_exposures_says_calibrate_first(tmp_path, capsys):
    raw = tmp_path / "ib6o99xxq_raw.fits"
    fits.PrimaryHDU(header=fits.Header({"INSTRUME": "WFC3", "DETECTOR": "IR"})).writeto(raw)
    code = main([str(raw)])
    assert code == ExitCode.INPUT_ERROR
    assert "calwf3" in capsys.readouterr().err


def test_drizcorr_omit_writes_no_product_and_touches_nothing(shared_data, tmp_path, monkeypatch):
    asn = prepare_goodss(shared_data, tmp_path, "IB6O23020")
    for flt in tmp_path.glob("*_flt.fits"):
        fits.setval(flt, "DRIZCORR", value="OMIT")
    before = _sha(tmp_path)
    code = main([str(asn), "--allow-header-wcs"])
    assert code == ExitCode.DRIZCORR_OMIT == 5
    assert _sha(tmp_path) == before
    assert not list(tmp_path.glob("*_dr?.fits"))
    assert "DRIZCORR=OMIT" in (tmp_path / "ib6o23020.tra").read_text()


def test_internal_error_exits_1_with_traceback_in_trailer(tmp_path, monkeypatch):
    def broken(path):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(pipeline, "resolve_input", broken)
    code = main([str(tmp_path / "x_asn.fits")])
    assert code == ExitCode.INTERNAL_ERROR == 1
    trailer = (tmp_path / "x.tra").read_text()
    assert "Traceback" in trailer and "simulated bug" in trailer
    assert "AUTODRIZ-VERDICT INTERNAL_ERROR exit=1" in trailer


def test_trailer_is_appended_and_handlers_do_not_leak(tmp_path):
    package_logger = logging.getLogger("autodriz")
    handlers_before = list(package_logger.handlers)
    for _ in range(3):
        assert main([str(tmp_path / "y_asn.fits")]) == ExitCode.INPUT_ERROR
    assert package_logger.handlers == handlers_before
    for name in ("stwcs", "drizzlepac"):
        assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger(name).handlers)
    text = (tmp_path / "y.tra").read_text()
    # Appended, not rewritten: three runs, each line written once per run.
    assert text.count("AUTODRIZ-START y") == 3
    assert text.count("AUTODRIZ-VERDICT") == 3


def test_trailer_records_where_each_setting_came_from(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTROMETRY_APPLY_APRIORI", "off")
    monkeypatch.setenv("ASTROMETRY_COMPUTE_APOSTERIORI", "OFF")
    main([str(tmp_path / "z_asn.fits"), "--apriori"])
    text = (tmp_path / "z.tra").read_text()
    assert re.search(r"setting apply_apriori\s+True \[cli\]", text)
    assert re.search(r"setting compute_aposteriori\s+False \[env:ASTROMETRY_COMPUTE_APOSTERIORI\]", text)
    for pkg in ("autodriz", "drizzlepac", "stwcs", "tweakwcs", "photutils", "astropy", "numpy"):
        assert re.search(rf"version {pkg}\s+\S+", text), pkg


def test_second_run_on_a_locked_dataset_is_refused(shared_data, tmp_path, capsys):
    import json

    from autodriz.locks import lock_path

    asn = prepare_goodss(shared_data, tmp_path, "IB6O23020")
    before = _sha(tmp_path)
    # A live process (this one's parent: pid 1 is always alive) holds the lock.
    lock = lock_path(tmp_path, "ib6o23020")
    lock.write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": 1}))
    code = main([str(asn), "--allow-header-wcs"])
    assert code == ExitCode.LOCKED == 10
    assert "being processed by another autodriz" in capsys.readouterr().err
    assert _sha(tmp_path) == before and lock.exists()

    # A lock left by a process that is gone is stale: taken over, and removed at the end.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dead = dead.pid
    lock.write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": dead}))
    code = main([str(asn), "--allow-header-wcs", "--no-aposteriori", "--no-apriori"])
    assert code == ExitCode.OK
    assert not lock.exists()
    assert "removing stale lock" in (tmp_path / "ib6o23020.tra").read_text()


def test_drizzle_parameters_without_an_mdriztab_keyword_fall_back_to_the_defaults(tmp_path):
    # A header with no MDRIZTAB keyword at all (not just an unset one) used to raise KeyError.
    from astropy.io import fits

    from autodriz.drizzle import choose_parameters

    path = tmp_path / "x_flt.fits"
    fits.PrimaryHDU().writeto(path)
    params, source = choose_parameters(path, {"jref": None, "iref": None}, {"final_scale": 0.05})
    assert params["final_scale"] == 0.05 and params["mdriztab"] is False
    assert "MDRIZTAB not set" in source


def test_console_at_info_shows_stage_outcomes_and_warnings_and_debug_shows_all(tmp_path):
    import io

    from autodriz.logs import CONSOLE, run_logging

    log = logging.getLogger("autodriz.pipeline")
    for level in ("INFO", "DEBUG"):
        stream, trailer = io.StringIO(), tmp_path / f"{level}.tra"
        with run_logging(trailer, console_level=level, stream=stream):
            log.info("detail behind a decision")
            log.info("stage outcome", extra=CONSOLE)
            log.warning("service unreachable")
        console, text = stream.getvalue(), trailer.read_text()
        assert ("detail behind a decision" in console) is (level == "DEBUG")
        assert "stage outcome" in console and "service unreachable" in console
        # The trailer keeps every decision at INFO, whatever the console shows.
        assert re.search(r" INFO +autodriz\.pipeline: detail behind a decision", text)


def test_candidates_failed_for_the_same_reason_share_one_summary_line():
    from autodriz.pipeline import summary_lines
    from autodriz.select import Verdict

    why = "no solution: catalog {} unavailable: {}VizieR x unreachable (DNS lookup failed: no network?)"
    verdicts = [
        Verdict("default", "IDC_x", "default", "chosen", "no alignment candidate was eligible"),
        Verdict("aposteriori-REL-GAIAeDR3", "", "", "pruned", why.format("GAIAeDR3", "")),
        *(Verdict(f"aposteriori-REL-{c}", "", "", "pruned", why.format(c, "catalog service not asked again: "))
          for c in ("GAIADR3", "2MASS")),
        Verdict("aposteriori-REL-SDSS", "", "", "pruned", "no solution: 3 matches"),
    ]
    lines = summary_lines(verdicts, limit=60)
    assert len(lines) == 3
    assert lines[1].startswith("pruned  aposteriori-REL-GAIAeDR3, -GAIADR3, -2MASS (-): no solution: catalog GAIAeDR3")
    assert lines[1].endswith("…") and len(lines[1].split("): ", 1)[1]) == 60
    assert lines[2] == "pruned  aposteriori-REL-SDSS (-): no solution: 3 matches"


def test_print_settings_shows_the_effective_settings_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ASTROMETRY_APPLY_APRIORI", "off")
    asn = tmp_path / "x_asn.fits"
    code = main([str(asn), "--print-settings", "--profile", "archive", "--service-timeout", "4"])
    out = capsys.readouterr().out
    assert code == ExitCode.OK
    assert list(tmp_path.iterdir()) == [], "nothing is written: no trailer, no lock"
    assert re.search(r"^  use_astrometry_db +true +profile archive$", out, flags=re.M)
    assert re.search(r"^  strict_services +true +profile archive$", out, flags=re.M)
    assert re.search(r"^  apply_apriori +false +environment ASTROMETRY_APPLY_APRIORI$", out, flags=re.M)
    assert re.search(r"^  service_timeout +4\.0 +flag$", out, flags=re.M)
    # No input is needed to ask; without --print-settings it still is.
    assert main(["--print-settings"]) == ExitCode.OK
    with pytest.raises(SystemExit) as stop:
        main([])
    assert stop.value.code == ExitCode.USAGE


def test_a_run_under_the_archive_profile_records_it_in_the_trailer(tmp_path):
    main([str(tmp_path / "p_asn.fits"), "--profile", "archive"])
    text = (tmp_path / "p.tra").read_text()
    assert re.search(r"setting use_astrometry_db\s+True \[profile:archive\]", text)
    assert re.search(r"setting strict_services\s+True \[profile:archive\]", text)


def test_a_script_without_a_main_guard_is_not_run_again_by_a_child(tmp_path):
    """A script that calls the CLI at import level: each child forked for AstroDrizzle imports it
    (multiprocessing does), and used to start a second run on the same files there (only the
    dataset lock stopped it). In a child ``main`` now runs nothing, says why and returns 2; the
    run itself succeeds, with one run in its trailer."""
    from autodriz.simulate import EXACT_WORLD, SimulationConfig, simulate_visit

    visit = simulate_visit(tmp_path / "v", SimulationConfig(**EXACT_WORLD, n_exposures=1, chip_shape=(64, 128),
                                                            n_stars=10, seed=3))
    marker = tmp_path / "ran.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from autodriz.cli import main\n"
        f"code = main([{str(visit.asn_path)!r}, '--jref', {str(visit.jref_dir)!r}, '--no-apriori', "
        "'--no-aposteriori', '--no-verify', '--offline', '--num-cores', '1'])\n"
        f"open({str(marker)!r}, 'a').write(f'exit {{code}}\\n')\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    lines = marker.read_text().splitlines()
    # The script's own process ran autodriz (exit 0); each child that imported it ran nothing.
    assert lines.count("exit 0") == 1 and set(lines) == {"exit 0", "exit 2"}, (lines, done.stderr[-2000:])
    assert "put the call under 'if __name__ == \"__main__\":'" in done.stderr, done.stderr[-2000:]
    trailer = (visit.directory / "jsim01010.tra").read_text()
    assert trailer.count("AUTODRIZ-VERDICT") == 1 and "AUTODRIZ-VERDICT OK exit=0" in trailer
