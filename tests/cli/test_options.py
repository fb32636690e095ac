"""Settings precedence for server/agent: flag > KUBLING_* env > config file > default."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from kubling.cli import options


def server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubling server")
    parser.add_argument("--https-port", type=int, default=6443)
    parser.add_argument("--data-dir", type=Path, default=Path("/var/lib/kubling"))
    parser.add_argument("--node-name")
    parser.add_argument("--disable-agent", action="store_true")
    parser.add_argument("--tls-san", action="append", default=[])
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    parser.add_argument("--flannel", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("-v", dest="verbosity", action="count", default=0)
    parser.add_argument("--server", "--url")
    return parser


def parse(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    config: str | None = None,
    tmp_path: Path | None = None,
) -> argparse.Namespace:
    default_config = "/nonexistent/kubling/config.yaml"
    if config is not None:
        assert tmp_path is not None
        default_config = str(tmp_path / "config.yaml")
        Path(default_config).write_text(config)
    return options.parse_args(server_parser(), argv, env=env or {}, default_config=default_config)


def test_defaults_when_nothing_given() -> None:
    ns = parse([])
    assert ns.https_port == 6443
    assert ns.data_dir == Path("/var/lib/kubling")
    assert ns.disable_agent is False and ns.tls_san == [] and ns.verbosity == 0
    assert ns.config is None


def test_file_over_default(tmp_path: Path) -> None:
    ns = parse([], config="https-port: 7443\ndata-dir: /x\n", tmp_path=tmp_path)
    assert ns.https_port == 7443 and ns.data_dir == Path("/x")
    assert ns.config == str(tmp_path / "config.yaml")


def test_env_over_file(tmp_path: Path) -> None:
    ns = parse([], env={"KUBLING_HTTPS_PORT": "8443"}, config="https-port: 7443", tmp_path=tmp_path)
    assert ns.https_port == 8443


def test_flag_over_env_and_file(tmp_path: Path) -> None:
    ns = parse(
        ["--https-port=9443"],
        env={"KUBLING_HTTPS_PORT": "8443"},
        config="https-port: 7443",
        tmp_path=tmp_path,
    )
    assert ns.https_port == 9443


def test_flag_equal_to_default_still_wins(tmp_path: Path) -> None:
    ns = parse(["--https-port", "6443"], config="https-port: 7443", tmp_path=tmp_path)
    assert ns.https_port == 6443


def test_abbreviated_flag_counts_as_given() -> None:
    ns = parse(["--https-p", "1"], env={"KUBLING_HTTPS_PORT": "2"})
    assert ns.https_port == 1


def test_overridden_bad_env_value_is_ignored() -> None:
    assert parse(["--https-port", "1"], env={"KUBLING_HTTPS_PORT": "abc"}).https_port == 1


@pytest.mark.parametrize(
    ("env_value", "file_value", "expected"),
    [
        ("true", None, True),
        ("False", None, False),
        ("1", None, True),
        (None, "true", True),
        (None, "false", False),
        (None, "yes", True),
    ],
)
def test_store_true(
    tmp_path: Path, env_value: str | None, file_value: str | None, expected: bool
) -> None:
    env = {"KUBLING_DISABLE_AGENT": env_value} if env_value is not None else {}
    config = f"disable-agent: {file_value}" if file_value is not None else ""
    assert parse([], env=env, config=config, tmp_path=tmp_path).disable_agent is expected


def test_boolean_optional_both_spellings(tmp_path: Path) -> None:
    assert parse([], config="flannel: false", tmp_path=tmp_path).flannel is False
    assert parse([], config="no-flannel: true", tmp_path=tmp_path).flannel is False
    assert parse(["--flannel"], config="flannel: false", tmp_path=tmp_path).flannel is True


def test_append_from_yaml_list_and_comma_env(tmp_path: Path) -> None:
    config = "tls-san:\n  - a.example\n  - 10.0.0.1\n"
    assert parse([], config=config, tmp_path=tmp_path).tls_san == ["a.example", "10.0.0.1"]
    assert parse([], config="tls-san: one", tmp_path=tmp_path).tls_san == ["one"]
    ns = parse([], env={"KUBLING_TLS_SAN": "x, y,,"}, config=config, tmp_path=tmp_path)
    assert ns.tls_san == ["x", "y"]
    ns = parse(["--tls-san", "z"], env={"KUBLING_TLS_SAN": "x"})
    assert ns.tls_san == ["z"]


def test_count_and_short_only_option(tmp_path: Path) -> None:
    assert parse([], env={"KUBLING_VERBOSITY": "3"}).verbosity == 3
    assert parse([], config="verbosity: 2", tmp_path=tmp_path).verbosity == 2
    assert parse(["-vv"], env={"KUBLING_VERBOSITY": "5"}).verbosity == 2


def test_alias_long_names(tmp_path: Path) -> None:
    assert parse([], env={"KUBLING_URL": "https://a:6443"}).server == "https://a:6443"
    assert parse([], config="server: https://b:6443", tmp_path=tmp_path).server == "https://b:6443"


def test_env_aliases_parameter() -> None:
    parser = argparse.ArgumentParser(prog="kubling agent")
    parser.add_argument("--token")
    ns = options.parse_args(
        parser,
        [],
        env={"KUBLING_AGENT_TOKEN": "t0k"},
        default_config="/nonexistent",
        env_aliases={"token": ["KUBLING_AGENT_TOKEN"]},
    )
    assert ns.token == "t0k"


def test_explicit_config_flag_and_env(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("https-port: 1234")
    assert parse(["--config", str(other)]).https_port == 1234
    assert parse([], env={"KUBLING_CONFIG": str(other)}).https_port == 1234


def test_missing_default_config_is_fine_missing_named_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse([]).https_port == 6443
    with pytest.raises(SystemExit) as exit_info:
        parse(["--config", str(tmp_path / "nope.yaml")])
    assert exit_info.value.code == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err


def test_config_flag_is_added_to_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(["--help"])
    assert exit_info.value.code == 0
    assert "--config FILE" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "env", "config", "message"),
    [
        ([], {"KUBLING_HTTPS_PORT": "abc"}, "", "KUBLING_HTTPS_PORT: invalid int value: 'abc'"),
        ([], {}, "https-port: abc", "config.yaml: https-port: invalid int value: 'abc'"),
        ([], {}, "https_port: 1", "unknown key 'https_port' in"),
        ([], {}, "https_port: 1", "did you mean 'https-port'?"),
        ([], {}, "bogus: 1", "unknown key 'bogus'"),
        (["--https-port", "1"], {}, "bogus: 1", "unknown key 'bogus'"),
        ([], {}, "config: /x", "unknown key 'config'"),
        ([], {}, "log-format: xml", "log-format: invalid choice: 'xml'"),
        ([], {"KUBLING_DISABLE_AGENT": "maybe"}, "", "invalid boolean value: 'maybe'"),
        ([], {}, "https-port: [1, 2]", "expected a single value"),
        ([], {}, "- not a mapping", "must be a mapping"),
        ([], {}, "key: [unclosed", "is not valid YAML"),
    ],
)
def test_usage_errors_name_their_source(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    config: str,
    message: str,
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(argv, env=env, config=config, tmp_path=tmp_path)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.startswith("usage: kubling server")


def test_empty_config_file_is_no_settings(tmp_path: Path) -> None:
    assert parse([], config="", tmp_path=tmp_path).https_port == 6443


def test_unrelated_env_is_ignored() -> None:
    assert parse([], env={"KUBLING_SOMETHING_ELSE": "x", "HTTPS_PORT": "1"}).https_port == 6443


def test_env_name() -> None:
    assert options.env_name("https-port") == "KUBLING_HTTPS_PORT"


def test_env_under_one_alias_beats_file_under_another(tmp_path: Path) -> None:
    ns = parse(
        [], env={"KUBLING_SERVER": "https://env"}, config="url: https://file", tmp_path=tmp_path
    )
    assert ns.server == "https://env"
    ns = parse(
        [], env={"KUBLING_URL": "https://env"}, config="server: https://file", tmp_path=tmp_path
    )
    assert ns.server == "https://env"
