"""A Hugging Face Hub dataset by id: `hub:OWNER/NAME[@REVISION][:CONFIG]:SPLIT[?ROLE=COLUMN&...&rows=N]`.

The rows come through `datasets` (load_dataset_builder, then as_streaming_dataset: load_dataset(streaming=True)
in its two halves, so the split's files are sized before any row is read) at the commit the Hub names first, and
that commit is what a run records. Which columns hold the question and the answer is detected the way an upload's
shape is (tuning.data.shapes) and may be corrected: `prompt=`, `input=`, `response=`, `system=` or `messages=`
name the columns, `rows=N` takes the first N rows.

A visitor of a shared app is a stranger, so: the id is an OWNER/NAME Hub id and nothing else (never a path or a
URL: datasets would read a local folder of that name, hence the hf://datasets/ form); the token is the visitor's
or none, never the owner's HF_TOKEN; the files are sized before they are read and the rows counted as they come,
against the upload limits (tuning.data.files); no code runs (datasets 4+ refuses loading scripts; the file
formats are data-only ones).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tuning.data.files import (
    MAX_ROWS_ENV,
    MAX_UPLOAD_MB_ENV,
    SHAPE_KEYS,
    DataError,
    UploadLimits,
    format_size,
    one_line,
)
from tuning.data.hub_spec import (
    ROWS_OPTION,
    HubDatasetError,
    HubDatasetNotFoundError,
    HubDatasetSpec,
    HubOfflineError,
    check_roles,
    parse_hub_spec,
)
from tuning.data.shapes import ALPACA_INPUT_FIELD, PASSTHROUGH_FIELDS, SYSTEM_FIELD, is_blank
from tuning.errors import first_line

# The packaged builders that only read data; anything else (images, audio, video, PDFs, webdataset) is refused.
TEXT_FORMATS = ("json", "csv", "parquet", "arrow")
DETECT_ROWS = 50  # rows the shape detection looks at
# When no known shape fits: column names that usually hold the question / the answer.
PROMPT_GUESSES = ("query", "user", "human", "input", "context", "text")
RESPONSE_GUESSES = ("reply", "assistant", "gpt", "output", "target", "solution")
DATASETS_PAGE = "https://huggingface.co/datasets"
TOKENS_PAGE = "https://huggingface.co/settings/tokens"


@dataclass
class HubRows:
    """The raw rows of one split, numbered from 1, the commit they came from and the columns they have."""

    spec: HubDatasetSpec
    revision: str
    rows: list[tuple[int, dict]]
    columns: list[str]


def dataset_token(visitor_token: str | None = None) -> str | bool | None:
    """The token a dataset load uses: the visitor's, if they gave one; else on a shared app none at all (False:
    huggingface_hub would otherwise fall back to HF_TOKEN, the owner's secret, opening the owner's private and
    gated sets to every visitor); else None, huggingface_hub's own choice (HF_TOKEN or the saved login)."""
    from tuning.guards.caps import is_shared

    token = (visitor_token or "").strip()
    if token:
        return token
    return False if is_shared() else None


def fetch_hub_rows(spec: HubDatasetSpec, token: str | bool | None = None,
                   limits: UploadLimits | None = None) -> HubRows:
    """The split's raw rows at one commit, within the limits (bytes checked before reading, rows as they come).
    `token`: what dataset_token chose; never guessed here."""
    limits = limits or UploadLimits()
    _check_online(spec)
    info = _dataset_info(spec, token)
    sizes = {sibling.rfilename: sibling.size for sibling in info.siblings or []}
    with tempfile.TemporaryDirectory(prefix="kantele-hub-") as cache:  # nothing of one visitor's load stays behind
        builder = _builder(spec, info.sha, token, cache)
        files = _split_files(builder, spec, info.sha)
        _check_bytes(spec, [(name, sizes.get(name)) for name in files], limits)
        _check_reported_rows(builder, spec, limits)
        rows = _read_rows(builder, spec, limits)
    columns = list(dict.fromkeys(key for _, row in rows for key in row))
    return HubRows(spec, info.sha, rows, columns)


def _check_online(spec: HubDatasetSpec) -> None:
    from huggingface_hub import constants

    from datasets import config as datasets_config

    if constants.HF_HUB_OFFLINE or datasets_config.HF_HUB_OFFLINE:
        raise HubOfflineError(f"{spec.label}: the Hub is switched off here (HF_HUB_OFFLINE is set) — unset "
                              "HF_HUB_OFFLINE to load it, or download it as a file and load that")


def _dataset_info(spec: HubDatasetSpec, token):
    """The dataset's commit and file sizes, in one call that also checks it exists and the token may read it."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return HfApi().dataset_info(spec.repo_id, revision=spec.revision, token=token, files_metadata=True)
    except GatedRepoError:
        raise HubDatasetNotFoundError(f"{spec.label}: a gated dataset — accept its terms at {DATASETS_PAGE}/"
                                      f"{spec.repo_id}, then give a token of that account") from None
    except RepositoryNotFoundError:
        raise _not_found(spec, token) from None
    except RevisionNotFoundError:
        raise HubDatasetNotFoundError(f"{spec.label}: no revision '{spec.revision}' — name a branch, tag or "
                                      "commit the dataset has, or leave the revision out") from None
    except OfflineModeIsEnabled:
        raise HubOfflineError(f"{spec.label}: the Hub is switched off here (HF_HUB_OFFLINE is set) — unset it to "
                              "load the dataset") from None
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", "?")
        raise HubDatasetError(f"{spec.label}: the Hub answered HTTP {status} — try again later") from None
    except OSError as error:  # httpx's transport errors are OSErrors too; so is a refused connection
        raise _unreachable(spec, error) from None
    except Exception as error:  # noqa: BLE001 -- httpx2's TransportError is no OSError: say it is the network
        if type(error).__module__.startswith(("httpx", "httpcore")):
            raise _unreachable(spec, error) from None
        raise


def _not_found(spec: HubDatasetSpec, token) -> HubDatasetNotFoundError:
    if token:
        fix = "check the id, and that the token you gave may read it"
    else:
        fix = f"check the id; a private or gated set needs your own read token ({TOKENS_PAGE})"
    return HubDatasetNotFoundError(f"{spec.label}: no such dataset on the Hub, or it is private — {fix}")


def _unreachable(spec: HubDatasetSpec, error: BaseException) -> HubOfflineError:
    from huggingface_hub import constants

    return HubOfflineError(f"{spec.label}: can't reach the Hub at {constants.ENDPOINT} ({type(error).__name__}) — "
                           "check the network and try again")


def _builder(spec: HubDatasetSpec, revision: str, token, cache: str):
    """datasets' builder of the split, pinned to the commit; its errors as messages that name the fix."""
    from datasets.exceptions import DataFilesNotFoundError, DatasetNotFoundError

    from datasets import load_dataset_builder

    try:
        builder = load_dataset_builder(f"hf://datasets/{spec.repo_id}", name=spec.config, revision=revision,
                                                token=token, cache_dir=cache)
    except DatasetNotFoundError:
        raise _not_found(spec, token) from None
    except (DataFilesNotFoundError, FileNotFoundError):  # EmptyDatasetError is a FileNotFoundError
        raise HubDatasetError(f"{spec.label}: the dataset holds no data files datasets can read — pick a dataset "
                              f"of {', '.join(TEXT_FORMATS)} files") from None
    except ConnectionError as error:
        raise _unreachable(spec, error) from None
    except RuntimeError as error:
        if "scripts" in str(error):
            raise HubDatasetError(f"{spec.label}: the dataset is a loading script, which would run its code — "
                                  "Kantele loads data files only; pick a dataset of data files") from None
        raise
    except ValueError as error:
        if "BuilderConfig" in str(error) or "Config name is missing" in str(error):
            raise HubDatasetNotFoundError(f"{spec.label}: {_config_problem(spec)} — name one of its configs: "
                                          f"{_names(getattr(error, 'args', [''])[0])}") from None
        raise
    module = type(builder).__module__.split(".")
    if not (len(module) >= 3 and module[:2] == ["datasets", "packaged_modules"] and module[2] in TEXT_FORMATS):
        raise HubDatasetError(f"{spec.label}: its files are not text data ({module[-1]}) — Kantele loads "
                              f"{', '.join(TEXT_FORMATS)} files of questions and answers")
    return builder


def _config_problem(spec: HubDatasetSpec) -> str:
    return f"no config '{spec.config}'" if spec.config else "it has several configs"


def _names(message: str) -> str:
    """The quoted names in a datasets message ("Available: ['a', 'b']"), shown plainly."""
    found = re.findall(r"'([^'\n]{1,100})'", message.partition("vailable")[2])
    return ", ".join(one_line(name) for name in found[:20]) or "(none listed)"


def _split_files(builder, spec: HubDatasetSpec, revision: str) -> list[str]:
    """The repository paths of the split's data files."""
    data_files = builder.config.data_files or {}
    by_name = {str(name): files for name, files in data_files.items()}
    if spec.split not in by_name:
        splits = ", ".join(one_line(name) for name in by_name) or "(none)"
        raise HubDatasetNotFoundError(f"{spec.label}: no split '{spec.split}' — name one of its splits: {splits}")
    marker = f"@{revision}/"
    return [str(url).partition(marker)[2] or str(url) for url in by_name[spec.split]]


def _check_bytes(spec: HubDatasetSpec, files: list[tuple[str, int | None]], limits: UploadLimits) -> None:
    """HubDatasetError when a file of the split, or the split's files together, are over the byte limits, as the
    Hub reports their sizes (before any of them is read)."""
    for name, size in files:
        if limits.max_bytes is not None and size is not None and size > limits.max_bytes:
            raise HubDatasetError(f"{spec.label}: its file {one_line(name)} is {format_size(size)}, over the limit "
                                  f"of {format_size(limits.max_bytes)} per file — take another split or config, or "
                                  f"ask whoever runs the app to raise {MAX_UPLOAD_MB_ENV}")
    total = sum(size or 0 for _, size in files)
    if limits.request_bytes is not None and total > limits.request_bytes:
        raise HubDatasetError(f"{spec.label}: {format_size(total)} of files, over the limit of "
                              f"{format_size(limits.request_bytes)} per load — take another split or config")


def _row_cap(spec: HubDatasetSpec, limits: UploadLimits) -> int | None:
    caps = [cap for cap in (limits.max_rows, limits.request_rows) if cap is not None]
    return min(caps) if caps else None


def _check_reported_rows(builder, spec: HubDatasetSpec, limits: UploadLimits) -> None:
    """Over the row limit by the dataset card's own count, and no rows=N to take fewer: refused before reading."""
    cap = _row_cap(spec, limits)
    splits = getattr(builder.info, "splits", None) or {}
    reported = getattr(splits.get(spec.split), "num_examples", None) if spec.split in splits else None
    if cap is not None and reported and reported > cap and not (spec.rows and spec.rows <= cap):
        raise _too_many_rows(spec, f"{reported:,}", cap)


def _too_many_rows(spec: HubDatasetSpec, count: str, cap: int) -> HubDatasetError:
    return HubDatasetError(f"{spec.label}: {count} rows, over the limit of {cap:,} rows per load — take the first "
                           f"rows only ({ROWS_OPTION}={cap} after '?', or the Rows box), or ask whoever runs the app "
                           f"to raise {MAX_ROWS_ENV}")


def _read_rows(builder, spec: HubDatasetSpec, limits: UploadLimits) -> list[tuple[int, dict]]:
    """Stream the split's rows, stopping at rows=N; over the row or byte limit: HubDatasetError."""
    cap = _row_cap(spec, limits)
    rows, size = [], 0
    try:
        for number, row in enumerate(builder.as_streaming_dataset(split=spec.split), start=1):
            if spec.rows is not None and number > spec.rows:
                break
            if cap is not None and number > cap:
                raise _too_many_rows(spec, f"over {cap:,}", cap)
            size += len(json.dumps(row, ensure_ascii=False, default=str))
            if limits.request_bytes is not None and size > limits.request_bytes:
                raise HubDatasetError(f"{spec.label}: over {format_size(limits.request_bytes)} of rows, the limit "
                                      f"per load — take fewer rows ({ROWS_OPTION}=N)")
            rows.append((number, dict(row)))
    except HubDatasetError:
        raise
    except ConnectionError as error:
        raise _unreachable(spec, error) from None
    except Exception as error:  # noqa: BLE001 -- someone else's files failing to parse: a data error, said so
        if type(error).__module__.startswith(("httpx", "httpcore")):
            raise _unreachable(spec, error) from None
        raise HubDatasetError(f"{spec.label}: datasets can't read its rows ({type(error).__name__}: "
                              f"{one_line(first_line(error))[:200]}) — pick another split or dataset") from None
    if not rows:
        raise HubDatasetError(f"{spec.label}: the split has no rows — pick another split")
    return rows


# --- which column is which ------------------------------------------------------------------------


def detect_columns(rows: list[tuple[int, dict]]) -> dict[str, str]:
    """The roles of the columns, as the upload shapes see the first rows (a column name as the dataset spells it);
    {} when no shape fits and no column name suggests one."""
    from tuning.data.shapes import normalize_row_with_shape

    shapes = Counter()
    for number, row in rows[:DETECT_ROWS]:
        try:
            shapes[normalize_row_with_shape(row, number)[1]] += 1
        except DataError:
            continue
    names = {str(key).strip().lower(): key for _, row in rows[:DETECT_ROWS] for key in row}
    if shapes:
        shape = shapes.most_common(1)[0][0]
        keys = SHAPE_KEYS[shape]
        if len(keys) == 1:
            columns = {"messages": names[keys[0]]}
        else:
            columns = {"prompt": names[keys[0]], "response": names[keys[1]]}
            if shape == "alpaca" and ALPACA_INPUT_FIELD in names:
                columns["input"] = names[ALPACA_INPUT_FIELD]
    else:
        columns = _guess_columns(rows[:DETECT_ROWS], names)
    if columns and SYSTEM_FIELD in names and "system" not in columns.values():
        columns["system"] = names[SYSTEM_FIELD]
    return columns


def _guess_columns(rows: list[tuple[int, dict]], names: dict[str, str]) -> dict[str, str]:
    for key in names.values():  # a conversation column under another name: a list of turns
        values = [row.get(key) for _, row in rows if not is_blank(row.get(key))]
        if values and all(isinstance(v, list) and v and isinstance(v[0], dict) for v in values):
            return {"messages": key}
    prompt = next((names[n] for n in PROMPT_GUESSES if n in names), None)
    response = next((names[n] for n in RESPONSE_GUESSES if n in names and names[n] != prompt), None)
    return {"prompt": prompt, "response": response} if prompt and response else {}


def map_rows(rows: list[tuple[int, dict]], columns: dict[str, str], label: str) -> list[tuple[int, dict]]:
    """The rows in the shape the roles name (prompt/response, Alpaca when there is an input, or messages), with
    the fields every example keeps (key facts, source, id); other columns are left out (unused_columns says which).
    HubDatasetError when a named column isn't in the rows."""
    check_roles(columns, label)
    known = {key for _, row in rows for key in row}
    missing = [column for column in columns.values() if column not in known]
    if missing:
        raise HubDatasetError(f"{label}: no column {', '.join(repr(one_line(c)[:60]) for c in missing)} — use one "
                              f"of {', '.join(one_line(str(c))[:60] for c in sorted(known, key=str)[:30])}")
    used = set(columns.values())
    mapped = []
    for number, row in rows:
        out = {}
        if "messages" in columns:
            out["messages"] = row.get(columns["messages"])
        elif "input" in columns:
            out.update(instruction=row.get(columns["prompt"]), input=row.get(columns["input"]),
                       output=row.get(columns["response"]))
        else:
            out.update(prompt=row.get(columns["prompt"]), response=row.get(columns["response"]))
        if "system" in columns:
            out["system"] = row.get(columns["system"])
        for key, value in row.items():
            if key not in used and str(key).strip().lower() in PASSTHROUGH_FIELDS:
                out[str(key).strip().lower()] = value
        mapped.append((number, out))
    return mapped


def unused_columns(columns: list[str], mapping: dict[str, str]) -> list[str]:
    """The dataset's columns the mapping leaves out (so none is dropped without saying so)."""
    used = set(mapping.values())
    return [c for c in columns if c not in used and str(c).strip().lower() not in PASSTHROUGH_FIELDS]


def mapping_hint(spec: HubDatasetSpec, columns: list[str]) -> str:
    """What to write when no mapping was found: the spec with ROLE=COLUMN options, and the columns there are."""
    shown = ", ".join(one_line(str(c))[:60] for c in columns[:30])
    return (f"{spec.label}: can't tell which columns hold the question and the answer (columns: {shown}) — name "
            f"them, e.g. {spec.label}?prompt=COLUMN&response=COLUMN, or pick them in the Data tab")


def hub_examples_rows(entry: str, limits: UploadLimits | None = None,
                      token: str | bool | None = None) -> tuple[list[tuple[int, dict]], str]:
    """A recipe's hub: entry as rows for load_examples (columns mapped as named, else as detected) and the commit
    they came from. The token is dataset_token()'s choice unless one is given."""
    spec = parse_hub_spec(entry)
    fetched = fetch_hub_rows(spec, dataset_token() if token is None else token, limits)
    columns = spec.columns or detect_columns(fetched.rows)
    if not columns:
        raise HubDatasetError(mapping_hint(spec, fetched.columns))
    return map_rows(fetched.rows, columns, spec.label), fetched.revision


def write_rows(rows: list[tuple[int, dict]], path: Path) -> Path:
    """Rows as JSON lines (values JSON can't hold, like dates, as text)."""
    from tuning.atomic import staged_file

    with staged_file(path) as temp, open(temp, "w", encoding="utf-8", newline="\n") as handle:
        for _, row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return path
