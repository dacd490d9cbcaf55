"""The model repository on disk: problems reported and skipped, versions, rescans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from common.errors import ModelNotFound
from common.model import repository as repository_module
from common.model.config import ModelFormat
from common.model.repository import ModelRepository, RepositoryProblem

TEST_MODELS = Path(__file__).resolve().parents[3] / "models"


def config(name: str, version: int, **overrides: Any) -> dict[str, Any]:
    return {"name": name, "version": version, "format": "python", "entrypoint": "model:create",
            "signature": {"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch"]}],
                          "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch"]}]},
            **overrides}


def put(root: Path, name: str, version: str | int, content: dict[str, Any] | str) -> Path:
    path = root / name / str(version) / "model.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def scanned(root: Path) -> ModelRepository:
    repository = ModelRepository(root)
    repository.scan()
    return repository


def test_the_test_models_load_and_broken_is_reported() -> None:
    repository = scanned(TEST_MODELS)
    assert {"sum", "slow", "failing", "badrows", "echo16"} <= set(repository.names())
    assert "broken" not in repository.names()
    [problem] = repository.problems
    assert problem.file == TEST_MODELS / "broken" / "1" / "model.yaml"
    assert problem.field == "signature.inputs.0.dtype"


def test_a_malformed_model_is_reported_with_file_and_field_and_the_others_load(
    tmp_path: Path,
) -> None:
    put(tmp_path, "good", 1, config("good", 1))
    bad = config("bad", 1)
    bad["signature"]["inputs"][0]["dtype"] = "float8"
    bad_path = put(tmp_path, "bad", 1, bad)

    repository = scanned(tmp_path)

    assert repository.names() == ["good"]
    [problem] = repository.problems
    assert problem.file == bad_path
    assert problem.field == "signature.inputs.0.dtype"
    assert str(problem).startswith(f"{bad_path} (field 'signature.inputs.0.dtype'): ")


def test_every_bad_field_is_reported(tmp_path: Path) -> None:
    put(tmp_path, "bad", 1, config("bad", 1, batching={"max_batch_size": 0}, device="tpu"))
    fields = {p.field for p in scanned(tmp_path).problems}
    assert fields == {"batching.max_batch_size", "device"}


@pytest.mark.parametrize("text", ["name: [unclosed", "{a: 1\n", ""])
def test_unreadable_or_empty_yaml_is_reported(tmp_path: Path, text: str) -> None:
    path = put(tmp_path, "bad", 1, text)
    put(tmp_path, "good", 1, config("good", 1))
    repository = scanned(tmp_path)
    assert repository.names() == ["good"]
    [problem] = repository.problems
    assert problem.file == path


def test_yaml_syntax_error_has_no_field(tmp_path: Path) -> None:
    path = put(tmp_path, "bad", 1, "name: [unclosed")
    [problem] = scanned(tmp_path).problems
    assert problem.field == ""
    assert "cannot read YAML" in problem.message
    assert str(problem).startswith(f"{path}: cannot read YAML")


def test_format_rules_are_reported(tmp_path: Path) -> None:
    put(tmp_path, "ts", 1, config("ts", 1, format="torchscript", entrypoint=None))
    put(tmp_path, "py", 1, config("py", 1, entrypoint=None))
    problems = {p.file.parent.parent.name: p.message for p in scanned(tmp_path).problems}
    assert "needs 'artifact'" in problems["ts"]
    assert "needs 'entrypoint'" in problems["py"]


def test_name_must_match_the_directory(tmp_path: Path) -> None:
    put(tmp_path, "here", 1, config("there", 1))
    [problem] = scanned(tmp_path).problems
    assert problem.field == "name"
    assert "says there/1 but lives in here/1" in problem.message


@pytest.mark.parametrize("directory", ["2", "01"])
def test_version_must_match_the_directory(tmp_path: Path, directory: str) -> None:
    put(tmp_path, "m", directory, config("m", 1))
    repository = scanned(tmp_path)
    [problem] = repository.problems
    assert problem.field == "version"
    assert repository.names() == []


def test_get_returns_the_newest_version_by_default(tmp_path: Path) -> None:
    for version in (1, 10, 2):
        put(tmp_path, "m", version, config("m", version))
    repository = scanned(tmp_path)
    assert repository.get("m").config.version == 10
    assert repository.get("m", 2).config.version == 2
    assert repository.get("m", 2).directory == tmp_path / "m" / "2"
    assert sorted(repository.versions("m")) == [1, 2, 10]


def test_entries_carry_the_parsed_config(tmp_path: Path) -> None:
    put(tmp_path, "ts", 1, config("ts", 1, format="torchscript", artifact="m.pt"))
    entry = scanned(tmp_path).get("ts")
    assert entry.config.format is ModelFormat.TORCHSCRIPT and entry.config.artifact == "m.pt"


def test_unknown_name(tmp_path: Path) -> None:
    repository = scanned(tmp_path)
    with pytest.raises(ModelNotFound, match="Model 'nope' not found in the repository"):
        repository.get("nope")
    with pytest.raises(ModelNotFound):
        repository.versions("nope")


def test_unknown_version_lists_the_versions(tmp_path: Path) -> None:
    for version in (2, 1):
        put(tmp_path, "m", version, config("m", version))
    with pytest.raises(ModelNotFound) as info:
        scanned(tmp_path).get("m", 3)
    assert info.value.message == "Model 'm' has no version 3 (versions: 1, 2)"
    assert info.value.status_code == 404


@pytest.fixture
def rescan_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No rate limit on rescans (as if a second had passed since the last scan)."""
    monkeypatch.setattr(repository_module, "RESCAN_INTERVAL_S", 0.0)


@pytest.mark.usefixtures("rescan_at_once")
def test_a_model_added_after_the_scan_is_found(tmp_path: Path) -> None:
    put(tmp_path, "first", 1, config("first", 1))
    repository = scanned(tmp_path)
    put(tmp_path, "late", 1, config("late", 1))
    assert repository.get("late").config.name == "late"
    assert "late" in repository.names()


@pytest.mark.usefixtures("rescan_at_once")
def test_a_version_added_after_the_scan_is_found(tmp_path: Path) -> None:
    put(tmp_path, "m", 1, config("m", 1))
    repository = scanned(tmp_path)
    put(tmp_path, "m", 2, config("m", 2))
    assert repository.get("m", 2).config.version == 2


def test_rescans_on_a_miss_are_rate_limited(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repository_module, "RESCAN_INTERVAL_S", 3600.0)
    repository = scanned(tmp_path)
    put(tmp_path, "late", 1, config("late", 1))
    with pytest.raises(ModelNotFound):  # scanned a moment ago: the miss does not read the disk
        repository.get("late")
    monkeypatch.setattr(repository_module, "RESCAN_INTERVAL_S", 0.0)
    assert repository.get("late").config.name == "late"


def test_a_rescan_forgets_fixed_problems(tmp_path: Path) -> None:
    path = put(tmp_path, "m", 1, "name: [unclosed")
    repository = scanned(tmp_path)
    assert repository.problems
    path.write_text(yaml.safe_dump(config("m", 1)))
    repository.scan()
    assert repository.problems == []
    assert repository.names() == ["m"]


def test_a_missing_root_is_an_empty_repository(tmp_path: Path) -> None:
    repository = scanned(tmp_path / "absent")
    assert repository.names() == [] and repository.problems == []


def test_problem_str_without_field() -> None:
    assert str(RepositoryProblem(Path("a/1/model.yaml"), "", "boom")) == "a/1/model.yaml: boom"
