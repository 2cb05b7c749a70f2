"""One base for every error meant for a person: each user-facing error class derives from KanteleError, and the
CLI catches that base once and prints its message as one line (exit 2), not a traceback."""

import importlib
import inspect
import pkgutil

import pytest

import tuning
import tuning.cli as cli
import tuning.cli_publish as cli_publish
from tuning.errors import KanteleError, UsageError
from tuning.runs.owner import RunAccessError

# Raised inside an HTTP stream and always reported through the BackendError that wraps it.
TRANSPORT_ONLY = {"tuning.guards.safe_url.ReplyTooLarge"}


def engine_exception_classes() -> dict[str, type]:
    found = {}
    for info in pkgutil.walk_packages(tuning.__path__, "tuning."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_engine_error_is_a_kantele_error():
    classes = engine_exception_classes()
    assert len(classes) > 15  # the walk reached the packages
    assert [name for name, cls in classes.items()
            if not issubclass(cls, KanteleError) and name not in TRANSPORT_ONLY] == []
    assert issubclass(UsageError, ValueError)  # callers that caught ValueError before still do


@pytest.mark.parametrize("error", [RunAccessError("run 2025-x is not yours -- pick one of your runs"),
                                   UsageError("no adapter loaded: pick a finished run or a Hub adapter first")])
def test_the_cli_prints_any_kantele_error_as_one_line(error, monkeypatch, capsys):
    def fails(args):
        raise error

    monkeypatch.setattr(cli_publish, "command_import_adapter", fails)
    assert cli.main(["import-adapter", "--source", "anything.zip"]) == 2
    out = capsys.readouterr()
    assert out.err == f"error: {error}\n" and "Traceback" not in out.err and out.out == ""


def test_a_real_refusal_reaches_the_person_as_one_line(tmp_path, capsys):
    assert cli.main(["import-adapter", "--source", str(tmp_path / "missing.zip"), "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing.zip" in err
