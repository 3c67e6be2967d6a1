"""Settings layering, environment parsing and AstroDrizzle defaults (autodriz.config)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tomllib
from collections.abc import Iterator, Mapping
import importlib.util
from pathlib import Path

import pytest

from autodriz import config
from autodriz.config import (
    ENVIRONMENT_VARIABLES,
    README_TABLE_END,
    README_TABLE_START,
    SETTING_NAMES,
    SETTING_TYPES,
    Settings,
    astrodrizzle_defaults,
    astrodrizzle_instrument_keys,
    default_config_dir,
    load_settings,
    settings_table_markdown,
)
from autodriz.errors import ConfigError

SWITCH_VARS = (
    "ASTROMETRY_COMPUTE_APOSTERIORI",
    "ASTROMETRY_APPLY_APRIORI",
    "ASTROMETRY_STEP_CONTROL",
)
TRUE_SPELLINGS = ("on", "ON", "On", "yes", "YES", "Yes", "true", "TRUE", "True", " on ", "\tyes\n", "1")
FALSE_SPELLINGS = ("off", "OFF", "Off", "no", "NO", "No", "false", "FALSE", "False", " off ", "\tno\n", "0")
INSTRUMENTS = ("ACS/WFC", "ACS/HRC", "ACS/SBC", "WFC3/UVIS", "WFC3/IR", "WFPC2")


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers every name the loader looked up."""

    def __init__(self, data: dict[str, str] | None = None) -> None:
        self._data = dict(data or {})
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return key in self._data

    def get(self, key, default=None):  # type: ignore[override]
        self.asked.add(key)
        return self._data.get(key, default)

    def __iter__(self) -> Iterator[str]:
        # Iterating would hide which names are read; the loader must look names up.
        raise AssertionError("load_settings must not iterate over the environment")

    def __len__(self) -> int:
        return len(self._data)


# ------------------------------------------------------------------------------------------
# Defaults
# ------------------------------------------------------------------------------------------


def test_default_config_dir_holds_both_files():
    folder = default_config_dir()
    assert (folder / "autodriz.toml").is_file()
    assert (folder / "astrodrizzle.toml").is_file()


def test_defaults_come_from_packaged_file_and_match_dataclass():
    settings = load_settings(env={})
    with open(default_config_dir() / "autodriz.toml", "rb") as fh:
        packaged = tomllib.load(fh)
    assert packaged, "packaged defaults file is empty"
    for key, value in packaged.items():
        assert getattr(settings, key) == value, key
    # The file and the dataclass must not disagree, or direct construction would differ.
    assert settings == Settings()
    assert set(settings.provenance.values()) == {"default"}
    assert set(settings.provenance) == set(SETTING_NAMES)


def test_env_none_reads_os_environ(monkeypatch):
    monkeypatch.setenv("AUTODRIZ_NUM_CORES", "3")
    assert load_settings().num_cores == 3
    assert load_settings(env={}).num_cores == 1


# ------------------------------------------------------------------------------------------
# Precedence and provenance
# ------------------------------------------------------------------------------------------


def test_each_layer_overrides_the_one_before(tmp_path):
    cfg = write_toml(tmp_path / "user.toml", "num_cores = 2\noffline = true\nservice_timeout = 5\n")

    from_file = load_settings(env={}, config_file=cfg)
    assert (from_file.num_cores, from_file.offline, from_file.service_timeout) == (2, True, 5.0)
    assert from_file.provenance["num_cores"] == f"config:{cfg}"
    assert from_file.provenance["log_level"] == "default"

    env = {"AUTODRIZ_NUM_CORES": "3", "AUTODRIZ_OFFLINE": "no"}
    from_env = load_settings(env=env, config_file=cfg)
    assert (from_env.num_cores, from_env.offline, from_env.service_timeout) == (3, False, 5.0)
    assert from_env.provenance["num_cores"] == "env:AUTODRIZ_NUM_CORES"
    assert from_env.provenance["offline"] == "env:AUTODRIZ_OFFLINE"
    assert from_env.provenance["service_timeout"] == f"config:{cfg}"

    from_cli = load_settings(cli={"num_cores": 4, "offline": None}, env=env, config_file=cfg)
    assert from_cli.num_cores == 4
    assert from_cli.provenance["num_cores"] == "cli"
    # None means "flag not given": the environment value stays.
    assert from_cli.offline is False
    assert from_cli.provenance["offline"] == "env:AUTODRIZ_OFFLINE"


def test_archive_profile_runs_as_archive_operations_do_and_later_layers_still_win(tmp_path):
    assert config.profile_names() == ("archive", "laptop")
    laptop = load_settings(env={})
    assert laptop == Settings(), "the laptop profile is the packaged defaults as they are"
    archive = load_settings(cli={"profile": "archive"}, env={})
    assert archive.use_astrometry_db and archive.strict_services and archive.apply_apriori and archive.verify
    assert archive.provenance["use_astrometry_db"] == "profile:archive"
    assert archive.provenance["num_cores"] == "default"
    # AUTODRIZ_PROFILE names it too; --profile wins over it.
    assert load_settings(env={"AUTODRIZ_PROFILE": "archive"}).use_astrometry_db
    assert not load_settings(cli={"profile": "laptop"}, env={"AUTODRIZ_PROFILE": "archive"}).use_astrometry_db
    # A config file, the environment and a flag each win over the profile.
    cfg = write_toml(tmp_path / "user.toml", "strict_services = false\n")
    layered = load_settings(cli={"profile": "archive", "apply_apriori": False},
                            env={"AUTODRIZ_ASTROMETRY_DB": "off"}, config_file=cfg)
    assert (layered.strict_services, layered.use_astrometry_db, layered.apply_apriori) == (False, False, False)
    assert layered.provenance["strict_services"] == f"config:{cfg}"
    assert layered.provenance["use_astrometry_db"] == "env:AUTODRIZ_ASTROMETRY_DB"
    with pytest.raises(ConfigError, match=r"AUTODRIZ_PROFILE names the profile 'nope'; known profiles: archive, laptop"):
        load_settings(env={"AUTODRIZ_PROFILE": "nope"})


def test_describe_settings_says_where_each_value_came_from(tmp_path):
    cfg = write_toml(tmp_path / "user.toml", "num_cores = 2\n")
    settings = load_settings(cli={"profile": "archive", "offline": True}, env={"AUTODRIZ_SERVICE_TIMEOUT": "3"},
                             config_file=cfg)
    lines = config.describe_settings(settings)
    assert lines[0].startswith("autodriz settings (profile archive;")
    rows = {line.split()[0]: line.split(None, 1)[1] for line in lines[1:]}
    assert set(rows) == set(SETTING_NAMES)
    assert re.fullmatch(r"true +profile archive", rows["use_astrometry_db"])
    assert re.fullmatch(rf"2 +config file {re.escape(str(cfg))}", rows["num_cores"])
    assert re.fullmatch(r"3\.0 +environment AUTODRIZ_SERVICE_TIMEOUT", rows["service_timeout"])
    assert re.fullmatch(r"true +flag", rows["offline"])
    assert re.fullmatch(r"\(not set\) +default", rows["catalog"])


def test_config_file_from_env_and_cli_file_wins(tmp_path):
    env_file = write_toml(tmp_path / "env.toml", "num_cores = 5\n")
    cli_file = write_toml(tmp_path / "cli.toml", "num_cores = 6\n")
    assert load_settings(env={"AUTODRIZ_CONFIG": str(env_file)}).num_cores == 5
    assert load_settings(env={"AUTODRIZ_CONFIG": str(env_file)}, config_file=cli_file).num_cores == 6


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={}, config_file=tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="AUTODRIZ_CONFIG"):
        load_settings(env={"AUTODRIZ_CONFIG": ""})


def test_relative_paths_in_file_are_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    cfg = write_toml(tmp_path / "sub" / "user.toml", 'catalog = "cats/gaia.ecsv"\n')
    settings = load_settings(env={}, config_file=cfg)
    assert settings.catalog == tmp_path / "sub" / "cats" / "gaia.ecsv"
    assert settings.as_dict()["catalog"] == str(tmp_path / "sub" / "cats" / "gaia.ecsv")


def test_paths_from_env_and_cli(tmp_path):
    settings = load_settings(
        cli={"output_dir": tmp_path / "out"},
        env={"AUTODRIZ_CACHE_DIR": str(tmp_path / "cache"), "jref": str(tmp_path) + "/"},
    )
    assert settings.output_dir == tmp_path / "out"
    assert settings.cache_dir == tmp_path / "cache"
    assert settings.jref == tmp_path
    assert settings.provenance["jref"] == "env:jref"
    for var in ("AUTODRIZ_OUTPUT_DIR", "jref"):
        with pytest.raises(ConfigError, match=var):
            load_settings(env={var: ""})


def test_autodriz_jref_beats_hst_jref(tmp_path):
    settings = load_settings(
        env={"jref": str(tmp_path / "a"), "AUTODRIZ_JREF": str(tmp_path / "b"), "iref": str(tmp_path)}
    )
    assert settings.jref == tmp_path / "b"
    assert settings.provenance["jref"] == "env:AUTODRIZ_JREF"
    assert settings.iref == tmp_path


def test_loader_does_not_mutate_its_inputs(tmp_path):
    env = {"AUTODRIZ_NUM_CORES": "2"}
    cli = {"offline": True}
    load_settings(cli=cli, env=env)
    assert env == {"AUTODRIZ_NUM_CORES": "2"}
    assert cli == {"offline": True}


# ------------------------------------------------------------------------------------------
# On/off switches
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("var", SWITCH_VARS)
@pytest.mark.parametrize(
    "text,expected", [(t, True) for t in TRUE_SPELLINGS] + [(t, False) for t in FALSE_SPELLINGS]
)
def test_astrometry_switch_spellings(var, text, expected):
    settings = load_settings(env={var: text})
    if var == "ASTROMETRY_COMPUTE_APOSTERIORI":
        assert settings.compute_aposteriori is expected
    elif var == "ASTROMETRY_APPLY_APRIORI":
        assert settings.apply_apriori is expected
    else:
        assert settings.compute_aposteriori is expected
        assert settings.apply_apriori is expected


@pytest.mark.parametrize("var", SWITCH_VARS + ("AUTODRIZ_OFFLINE", "AUTODRIZ_KEEP_WORKDIRS"))
@pytest.mark.parametrize("bad", ["maybe", "", "   ", "2", "enabled", "y"])
def test_bad_switch_value_names_variable_and_accepted_values(var, bad):
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env={var: bad})
    message = str(excinfo.value)
    assert var in message
    assert repr(bad) in message
    for word in ("on", "yes", "true", "off", "no", "false"):
        assert word in message


def test_step_control_warns_and_acts_as_both(caplog):
    calls: list[str] = []
    with caplog.at_level(logging.WARNING, logger="autodriz.config"):
        settings = load_settings(env={"ASTROMETRY_STEP_CONTROL": "off"}, warn=calls.append)
    assert settings.apply_apriori is False
    assert settings.compute_aposteriori is False
    assert settings.provenance["apply_apriori"] == "env:ASTROMETRY_STEP_CONTROL"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "ASTROMETRY_STEP_CONTROL" in text and "deprecated" in text
    assert "ASTROMETRY_APPLY_APRIORI" in text and "ASTROMETRY_COMPUTE_APOSTERIORI" in text
    assert calls == [text]


def test_explicit_variables_override_step_control(caplog):
    env = {
        "ASTROMETRY_STEP_CONTROL": "off",
        "ASTROMETRY_APPLY_APRIORI": "on",
    }
    with caplog.at_level(logging.WARNING, logger="autodriz.config"):
        settings = load_settings(env=env)
    assert settings.apply_apriori is True
    assert settings.provenance["apply_apriori"] == "env:ASTROMETRY_APPLY_APRIORI"
    assert settings.compute_aposteriori is False
    assert settings.provenance["compute_aposteriori"] == "env:ASTROMETRY_STEP_CONTROL"
    assert any("deprecated" in r.getMessage() for r in caplog.records)

    env["ASTROMETRY_COMPUTE_APOSTERIORI"] = "yes"
    settings = load_settings(env=env)
    assert settings.compute_aposteriori is True
    # And the CLI still beats every variable.
    assert load_settings(cli={"apply_apriori": False}, env=env).apply_apriori is False


def test_no_warning_without_step_control(caplog):
    with caplog.at_level(logging.WARNING, logger="autodriz.config"):
        load_settings(env={"ASTROMETRY_APPLY_APRIORI": "off"})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_non_default_settings_logged_at_info(caplog, tmp_path):
    with caplog.at_level(logging.INFO, logger="autodriz.config"):
        load_settings(cli={"num_cores": 2}, env={"AUTODRIZ_OFFLINE": "yes"})
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    assert "num_cores" in text and "cli" in text
    assert "offline" in text and "env:AUTODRIZ_OFFLINE" in text
    assert "log_level" not in text  # defaults are not listed


# ------------------------------------------------------------------------------------------
# Numbers and other values
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "var,bad",
    [
        ("AUTODRIZ_NUM_CORES", "0"),
        ("AUTODRIZ_NUM_CORES", "-2"),
        ("AUTODRIZ_NUM_CORES", "2.5"),
        ("AUTODRIZ_NUM_CORES", "many"),
        ("AUTODRIZ_NUM_CORES", ""),
        ("AUTODRIZ_SERVICE_TIMEOUT", "0"),
        ("AUTODRIZ_SERVICE_TIMEOUT", "-1"),
        ("AUTODRIZ_SERVICE_TIMEOUT", "nan"),
        ("AUTODRIZ_SERVICE_TIMEOUT", "inf"),
        ("AUTODRIZ_SERVICE_TIMEOUT", "soon"),
        ("AUTODRIZ_DRIZZLE_TIMEOUT", "0"),
        ("AUTODRIZ_LOG_LEVEL", "verbose"),
        ("AUTODRIZ_LOG_LEVEL", ""),
    ],
)
def test_bad_numbers_and_levels_from_env(var, bad):
    with pytest.raises(ConfigError, match=var):
        load_settings(env={var: bad})


def test_good_numbers_and_levels_from_env():
    settings = load_settings(
        env={
            "AUTODRIZ_NUM_CORES": " 8 ",
            "AUTODRIZ_SERVICE_TIMEOUT": "2.5",
            "AUTODRIZ_DRIZZLE_TIMEOUT": "60",
            "AUTODRIZ_LOG_LEVEL": "debug",
        }
    )
    assert settings.num_cores == 8
    assert settings.service_timeout == 2.5
    assert settings.drizzle_timeout == 60.0 and isinstance(settings.drizzle_timeout, float)
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    "key,bad",
    [("num_cores", 0), ("num_cores", True), ("num_cores", 1.5), ("service_timeout", -3.0),
     ("drizzle_timeout", False), ("offline", "sometimes"), ("log_level", "LOUD"), ("catalog", 3)],
)
def test_bad_cli_values_name_the_flag(key, bad):
    with pytest.raises(ConfigError, match=key):
        load_settings(cli={key: bad}, env={})


def test_cli_strings_are_parsed_like_env():
    settings = load_settings(cli={"num_cores": "3", "offline": "yes", "service_timeout": "1"}, env={})
    assert (settings.num_cores, settings.offline, settings.service_timeout) == (3, True, 1.0)


def test_unknown_cli_key_is_an_error():
    with pytest.raises(ConfigError, match="cores"):
        load_settings(cli={"cores": 2}, env={})


# ------------------------------------------------------------------------------------------
# TOML files
# ------------------------------------------------------------------------------------------


def test_unknown_toml_keys_are_named_with_the_file(tmp_path):
    cfg = write_toml(tmp_path / "user.toml", "num_cores = 2\nnum_core = 3\nfoo = 1\n")
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env={}, config_file=cfg)
    message = str(excinfo.value)
    assert "num_core" in message and "foo" in message and str(cfg) in message


def test_tables_are_unknown_keys(tmp_path):
    cfg = write_toml(tmp_path / "user.toml", "[astrometry]\napply_apriori = false\n")
    with pytest.raises(ConfigError, match="astrometry"):
        load_settings(env={}, config_file=cfg)


@pytest.mark.parametrize(
    "text",
    [
        'num_cores = "2"',
        "num_cores = 2.0",
        "num_cores = 0",
        "offline = 1",
        'offline = "yes"',
        "service_timeout = true",
        "service_timeout = -1",
        "log_level = 10",
        "output_dir = 5",
        'output_dir = ""',
    ],
)
def test_wrong_types_in_toml(tmp_path, text):
    cfg = write_toml(tmp_path / "user.toml", text + "\n")
    key = text.split("=")[0].strip()
    with pytest.raises(ConfigError, match=key) as excinfo:
        load_settings(env={}, config_file=cfg)
    assert str(cfg) in str(excinfo.value)


def test_invalid_toml_syntax(tmp_path):
    cfg = write_toml(tmp_path / "user.toml", "num_cores = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={}, config_file=cfg)


# ------------------------------------------------------------------------------------------
# The Settings object
# ------------------------------------------------------------------------------------------


def test_settings_is_frozen_and_provenance_read_only():
    settings = load_settings(env={"AUTODRIZ_OFFLINE": "on"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.offline = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.provenance["offline"] = "cli"  # type: ignore[index]
    hash(settings)  # usable as a key / in sets


def test_direct_construction_is_validated():
    with pytest.raises(ConfigError, match="num_cores"):
        Settings(num_cores=0)
    with pytest.raises(ConfigError, match="service_timeout"):
        dataclasses.replace(Settings(), service_timeout=0.0)
    settings = Settings(offline=True)
    assert settings.provenance["offline"] == "default"  # filled for every field


def test_as_dict_is_json_friendly(tmp_path):
    settings = load_settings(cli={"output_dir": tmp_path}, env={})
    data = settings.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["output_dir"] == str(tmp_path)
    assert data["iref"] is None
    assert data["provenance"]["output_dir"] == "cli"
    assert set(data) == set(SETTING_NAMES) | {"provenance"}


def test_setting_names_match_dataclass_fields():
    fields = [f.name for f in dataclasses.fields(Settings) if f.name != "provenance"]
    assert list(SETTING_NAMES) == fields


def test_dataclass_field_types_match_the_declared_kinds():
    types = {f.name: f.type for f in dataclasses.fields(Settings) if f.name != "provenance"}
    assert types == dict(SETTING_TYPES)


def test_readme_settings_table_is_the_one_made_from_the_declaration():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index(README_TABLE_START) + len(README_TABLE_START)
    table = readme[start:readme.index(README_TABLE_END)].strip()
    assert table == settings_table_markdown(), (
        "README.md's settings table is stale: paste the output of "
        "python -c 'from autodriz.config import settings_table_markdown as t; print(t())'"
    )
    # And it says what the packaged defaults say.
    assert f"| `max_fit_rms_mas` | `--max-fit-rms` | `AUTODRIZ_MAX_FIT_RMS_MAS` | `{Settings().max_fit_rms_mas}` |" in table


# ------------------------------------------------------------------------------------------
# ENVIRONMENT_VARIABLES stays in sync with the loader
# ------------------------------------------------------------------------------------------


def test_environment_variables_is_an_immutable_table():
    assert isinstance(ENVIRONMENT_VARIABLES, tuple)
    names = [name for name, _ in ENVIRONMENT_VARIABLES]
    assert len(names) == len(set(names))
    for row in ENVIRONMENT_VARIABLES:
        assert isinstance(row, tuple) and len(row) == 2
        assert row[1] and "\n" not in row[1]


def test_environment_variables_lists_exactly_what_the_loader_reads():
    env = RecordingEnv()
    load_settings(env=env)
    listed = {name for name, _ in ENVIRONMENT_VARIABLES}
    assert env.asked == listed


def test_every_variable_named_in_the_source_is_listed():
    source = Path(config.__file__).read_text(encoding="utf-8")
    in_source = set(re.findall(r"\b(?:AUTODRIZ|ASTROMETRY)_[A-Z_]+\b", source))
    listed = {name for name, _ in ENVIRONMENT_VARIABLES}
    assert in_source <= listed, sorted(in_source - listed)
    assert {"jref", "iref"} <= listed


# ------------------------------------------------------------------------------------------
# AstroDrizzle defaults
# ------------------------------------------------------------------------------------------


def _astrodrizzle_parameter_names() -> set[str]:
    """Parameter names AstroDrizzle knows, from drizzlepac's own configuration spec."""
    # find_spec, not import: importing drizzlepac takes seconds; we only need its spec file.
    spec = importlib.util.find_spec("drizzlepac")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("drizzlepac not installed")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    text = (package_dir / "pars" / "astrodrizzle.cfgspc").read_text()
    names = set(re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", text, flags=re.M))
    # Accepted by AstroDrizzle() as a keyword but not part of the spec file.
    return names | {"mdriztab"}


def test_instrument_keys():
    assert set(astrodrizzle_instrument_keys()) == set(INSTRUMENTS)


@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_astrodrizzle_defaults_each_instrument(instrument):
    params = astrodrizzle_defaults(instrument, 4)
    assert params["resetbits"] == 4096
    assert params["crbit"] == 4096
    assert params["build"] is True
    assert params["mdriztab"] is False
    known = _astrodrizzle_parameter_names()
    assert set(params) <= known, sorted(set(params) - known)
    for key in ("combine_nsigma", "driz_cr_snr", "driz_cr_scale"):
        assert isinstance(params[key], str)  # AstroDrizzle wants "a b" strings here
    for key in ("final_bits", "driz_sep_bits", "sky_bits"):
        assert isinstance(params[key], int) and params[key] >= 0


def test_astrodrizzle_defaults_mirror_pipeline_rows():
    wfc = astrodrizzle_defaults("ACS/WFC", 2)
    assert (wfc["driz_sep_bits"], wfc["final_bits"], wfc["combine_type"]) == (336, 336, "minmed")
    assert wfc["driz_cr_scale"] == "1.5 1.2"
    wfc6 = astrodrizzle_defaults("acs/wfc", 6)  # case-insensitive
    assert (wfc6["combine_type"], wfc6["final_pixfrac"], wfc6["driz_cr_scale"]) == ("median", 0.8, "1.2 0.7")
    ir = astrodrizzle_defaults("WFC3/IR", 4)
    assert (ir["driz_cr_snr"], ir["final_bits"], ir["combine_type"]) == ("5.0 4.0", 528, "median")
    assert astrodrizzle_defaults("WFC3/IR", 3)["combine_type"] == "minmed"
    sbc = astrodrizzle_defaults("ACS/SBC", 5)
    assert sbc["driz_cr"] is False and sbc["median"] is False and sbc["final_scale"] == 0.025
    assert astrodrizzle_defaults("WFPC2/PC", 2)["skymethod"] == "localmin"
    assert astrodrizzle_defaults("WFPC2", 3)["final_bits"] == 1024


@pytest.mark.parametrize("instrument", INSTRUMENTS)
def test_single_exposure_turns_off_multi_exposure_steps(instrument):
    params = astrodrizzle_defaults(instrument, 1)
    for step in ("driz_separate", "median", "blot", "driz_cr"):
        assert params[step] is False, step
    assert params["driz_combine"] is True
    assert params["resetbits"] == 4096


def test_single_exposure_rows():
    assert astrodrizzle_defaults("ACS/WFC", 1)["final_bits"] == 65535
    assert astrodrizzle_defaults("ACS/WFC", 1)["skysub"] is False
    assert astrodrizzle_defaults("WFC3/UVIS", 1)["static"] is True


def test_exposure_time_ratio_switches_to_median():
    params = astrodrizzle_defaults("ACS/WFC", 2, exptime_ratio=3.0)
    assert (params["combine_type"], params["combine_nhigh"]) == ("median", 0)
    assert astrodrizzle_defaults("ACS/WFC", 2, exptime_ratio=1.5)["combine_type"] == "minmed"


def test_astrodrizzle_defaults_returns_fresh_dicts():
    first = astrodrizzle_defaults("ACS/WFC", 2)
    first["final_bits"] = 0
    assert astrodrizzle_defaults("ACS/WFC", 2)["final_bits"] == 336


@pytest.mark.parametrize("key", ["NICMOS/NIC1", "ACS", "STIS/CCD", "", "WFC3/XYZ"])
def test_unknown_instrument_key(key):
    with pytest.raises(ConfigError) as excinfo:
        astrodrizzle_defaults(key, 2)
    assert repr(key) in str(excinfo.value)
    assert "ACS/WFC" in str(excinfo.value)


def test_bad_exposure_count():
    with pytest.raises(ValueError):
        astrodrizzle_defaults("ACS/WFC", 0)


def test_malformed_row_name(tmp_path):
    table = write_toml(
        tmp_path / "ad.toml", '[default]\nbuild = true\n["ACS/WFC"]\n["ACS/WFC".many]\nmedian = true\n'
    )
    with pytest.raises(ConfigError, match="many"):
        astrodrizzle_defaults("ACS/WFC", 2, table_file=table)
