from __future__ import annotations

import copy
from pathlib import Path

import pytest

from nightshift.config.pipeline import ConfigError, load_pipeline, load_pipelines, parse_pipeline
from tests.conftest import EXAMPLE, small_pipeline_dict, write_pipeline


def test_shipped_pipelines_parse() -> None:
    pipelines, errors = load_pipelines()
    assert errors == []
    assert {p.name for p in pipelines} == {"retail_conversion", "basket_spend"}
    example = load_pipeline(EXAMPLE)
    assert example.schema_.label == "converted"
    assert example.training.window_days == 7
    assert example.dag_id == "nightshift_retail_conversion"


def _broken(mutate) -> dict:
    data = copy.deepcopy(small_pipeline_dict())
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "key", "fragment"),
    [
        (lambda d: d.update(colour="blue"), "colour", "unknown key"),
        (lambda d: d["training"].update(windw_days=3), "training.windw_days", "unknown key"),
        (lambda d: d["schema"].pop("label"), "schema.label", "required key is missing"),
        (lambda d: d["schedule"].update(cron="every night"), "schedule.cron", "not a valid cron"),
        (
            lambda d: d["schedule"].update(timezone="Mars/Olympus"),
            "schedule.timezone",
            "not an IANA timezone",
        ),
        (lambda d: d["schema"].update(label="nope"), "schema", "label 'nope' is not one"),
        (
            lambda d: d["features"]["numeric"].append("height"),
            "features.numeric",
            "'height' is not a schema column",
        ),
        (lambda d: d["training"].update(batch_size=0), "training.batch_size", "greater than 0"),
        (lambda d: d["models"][0].update(kind="catboost"), "models[0]", "catboost"),
        (
            lambda d: d["source"].update(kind="files", path="in/{date}.csv", format="csv"),
            "source.rows_per_day",
            "unknown key",
        ),
    ],
)
def test_wrong_yaml_names_file_and_key(tmp_path: Path, mutate, key: str, fragment: str) -> None:
    path = write_pipeline(tmp_path, _broken(mutate))
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    message = str(caught.value)
    assert str(path) in message
    assert caught.value.key.startswith(key), message
    assert fragment in message


def test_file_source_needs_a_date_in_its_path() -> None:
    data = small_pipeline_dict()
    data["source"] = {"kind": "files", "path": "landing/sessions.csv", "format": "csv"}
    with pytest.raises(ConfigError, match=r"key 'source.*must contain the date"):
        parse_pipeline(data, "x.yaml")


def test_invalid_yaml_syntax_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nschema: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: key 'line \d+': not valid YAML"):
        load_pipeline(path)


def test_name_must_match_file(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, small_pipeline_dict(), name="other")
    path.rename(tmp_path / "renamed.yaml")
    with pytest.raises(ConfigError, match="key 'name': must match the file name 'renamed'"):
        load_pipeline(tmp_path / "renamed.yaml")


def test_one_bad_file_does_not_hide_the_others(tmp_path: Path) -> None:
    write_pipeline(tmp_path, small_pipeline_dict(), name="good")
    write_pipeline(tmp_path, _broken(lambda d: d.update(extra=1)), name="bad")
    pipelines, errors = load_pipelines(tmp_path)
    assert [p.name for p in pipelines] == ["good"]
    assert len(errors) == 1 and errors[0].key == "extra"


def test_every_problem_of_a_file_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nightshift.cli import main

    data = small_pipeline_dict()
    data["schema"]["columns"].append({"name": "hour", "type": "int"})  # a data column "hour"
    data["features"]["numeric"].append("no_such_column")
    data["evaluation"]["segment"] = "device_type"
    with pytest.raises(ConfigError) as caught:
        parse_pipeline(data, "clash.yaml")
    lines = str(caught.value).splitlines()
    assert lines == [
        "clash.yaml: key 'features.numeric': 'no_such_column' is not a schema column",
        "clash.yaml: key 'features.time': 'hour' is also a column of the data (schema.columns); "
        "the derived time feature would clash with it: rename the column, or leave 'hour' out "
        "of features.time (and list the column as a feature instead)",
        "clash.yaml: key 'evaluation.segment': 'device_type' must be one of the categorical "
        "features ['channel', 'country', 'device']",
    ]
    # `nightshift check` prints each of them.
    write_pipeline(tmp_path, {**data, "name": "clash"})
    monkeypatch.setenv("NIGHTSHIFT_PIPELINES_DIR", str(tmp_path))
    assert main(["check"]) == 1
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error")]
    assert len(printed) == 3 and all("clash.yaml" in line for line in printed)


def test_the_shipped_file_based_example_parses() -> None:
    from tests.conftest import REPO

    example = load_pipeline(REPO / "include" / "pipelines" / "examples" / "flight_delays.yaml")
    assert example.drop == ["arr_delay"] and example.filters == ["arr_delay is not None"]
    assert example.data_schema.column("delayed").type == "bool"
    assert example.alerts.on == ["failed", "quarantined", "regressed", "drifted"]


def test_yaml_on_and_no_are_words_not_booleans(tmp_path: Path) -> None:
    """YAML 1.1 reads the key `on:` as True; a pipeline YAML reads it as the word."""
    path = tmp_path / "retail_conversion.yaml"
    text = EXAMPLE.read_text().replace(
        "    - {name: channel, type: string}", "    - {name: channel, type: string, nullable: no}"
    )
    path.write_text(text + "alerts:\n  on: [failed]\n")
    pipeline = load_pipeline(path)
    assert pipeline.alerts.on == ["failed"]
    assert pipeline.schema_.column("channel").nullable is False


def test_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    """A pasted second `schedule:` would silently replace the first one's keys."""
    path = tmp_path / "retail_conversion.yaml"
    path.write_text(EXAMPLE.read_text() + "schedule:\n  timezone: UTC\n")
    with pytest.raises(ConfigError, match="key 'schedule' appears twice") as caught:
        load_pipeline(path)
    assert f"line {len(EXAMPLE.read_text().splitlines()) + 1}" in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("timezone", "Europe", "'Europe' is not an IANA timezone"),
        ("timezone", "Europe/" + "x" * 300, "is not an IANA timezone"),
        ("derive", " + ".join(["page_views"] * 500), "too long or too deeply nested"),
        ("derive", "abs(" * 150 + "page_views" + ")" * 150, "too long or too deeply nested"),
    ],
    ids=["tz-folder", "tz-300-chars", "derive-500-terms", "derive-150-deep"],
)
def test_one_bad_yaml_never_hides_the_good_ones(
    tmp_path: Path, key: str, value: str, fragment: str
) -> None:
    """A value that makes a library raise something else than ValueError is still a config
    error of that file: the other pipelines load (README: one bad YAML takes down no other)."""
    write_pipeline(tmp_path, small_pipeline_dict(), name="good")
    bad = small_pipeline_dict()
    if key == "timezone":
        bad["schedule"]["timezone"] = value
    else:
        bad["derive"] = {"busy": value}
    write_pipeline(tmp_path, bad, name="bad")
    pipelines, errors = load_pipelines(tmp_path)
    assert [p.name for p in pipelines] == ["good"]
    assert len(errors) == 1 and fragment in str(errors[0]), errors
    assert str(errors[0]).startswith(str(tmp_path / "bad.yaml"))


def test_any_other_failure_of_one_file_is_that_file_s_error(tmp_path: Path, monkeypatch) -> None:
    from nightshift.config import pipeline as config

    write_pipeline(tmp_path, small_pipeline_dict(), name="good")
    write_pipeline(tmp_path, small_pipeline_dict(), name="bad")
    real = config.parse_pipeline

    def crashes_on_bad(data, source_file):
        if data["name"] == "bad":
            raise KeyError("an unforeseen failure")
        return real(data, source_file)

    monkeypatch.setattr(config, "parse_pipeline", crashes_on_bad)
    pipelines, errors = load_pipelines(tmp_path)
    assert [p.name for p in pipelines] == ["good"]
    assert "KeyError" in str(errors[0]) and "an unforeseen failure" in str(errors[0])


@pytest.mark.timeout(120)  # expanded, it would not end
def test_yaml_aliases_that_expand_without_bound_are_refused(tmp_path: Path) -> None:
    """Ten nested aliases would make 10**10 values for pydantic to validate."""
    laughs = ['a0: &a0 ["x"]'] + [
        f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 10)
    ]
    text = EXAMPLE.read_text()
    block = "\n".join(f"    {line}" for line in laughs)
    text = text.replace("source:\n", f"source:\n  storage_options:\n{block}\n", 1)
    path = tmp_path / "retail_conversion.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="expands to more than 100,000 values"):
        load_pipeline(path)


def test_hooks_only_from_the_allowed_packages(monkeypatch) -> None:
    """NIGHTSHIFT_HOOK_PACKAGES: unset, any hook; a list, only those packages; empty, none
    (compose's default), refused when the YAML is read, naming the setting."""
    data = small_pipeline_dict()
    data["hook"] = "subprocess:call"
    monkeypatch.delenv("NIGHTSHIFT_HOOK_PACKAGES", raising=False)
    assert parse_pipeline(data, "p.yaml").hook == "subprocess:call"
    monkeypatch.setenv("NIGHTSHIFT_HOOK_PACKAGES", "acme_prep, other")
    with pytest.raises(ConfigError, match="package 'subprocess' is not allowed to run here"):
        parse_pipeline(data, "p.yaml")
    assert parse_pipeline({**data, "hook": "acme_prep.clean:fix"}, "p.yaml").hook
    monkeypatch.setenv("NIGHTSHIFT_HOOK_PACKAGES", "")
    with pytest.raises(ConfigError, match=r"NIGHTSHIFT_HOOK_PACKAGES: none"):
        parse_pipeline({**data, "hook": "acme_prep.clean:fix"}, "p.yaml")


def test_compose_allows_no_hook_unless_told() -> None:
    import sys

    from tests.conftest import REPO

    sys.path.insert(0, str(REPO / "compose"))
    try:
        import make_env
    finally:
        sys.path.pop(0)
    text = (REPO / "docker-compose.yaml").read_text()
    assert "NIGHTSHIFT_HOOK_PACKAGES: ${NIGHTSHIFT_HOOK_PACKAGES?" in text
    env = make_env.filled((REPO / ".env.example").read_text(), False, {})
    assert "\nNIGHTSHIFT_HOOK_PACKAGES=\n" in env


@pytest.mark.parametrize("rule", ["page_views + 1", "channel", "lower(channel)"])
def test_a_filter_must_be_true_or_false_per_row(rule: str) -> None:
    data = small_pipeline_dict()
    data["filter"] = ["page_views is not None", rule]
    with pytest.raises(ConfigError, match=r"key 'filter\[1\]': .* must be true or false per row"):
        parse_pipeline(data, "x.yaml")
