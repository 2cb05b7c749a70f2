"""A Hub dataset split in a visitor's workspace (the Data tab): its raw rows kept, so a corrected column mapping needs
no second download, and the mapped rows among the uploads, like an upload."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tuning.data.files import (
    UploadLimits,
)
from tuning.data.hub_dataset import detect_columns, fetch_hub_rows, map_rows, unused_columns, write_rows
from tuning.data.hub_spec import HubDatasetSpec

HUB_DIR = "hub"  # a workspace's raw Hub rows, kept so a corrected mapping needs no second download


@dataclass
class HubLoad:
    """A Hub split in a workspace: where its raw rows are kept, its columns and commit, the mapping in force and
    the mapped file that joined the uploads (None until a mapping is known), and the columns it leaves out."""

    spec: HubDatasetSpec
    revision: str
    columns: list[str]
    raw_file: Path
    mapping: dict[str, str]
    kept_file: Path | None
    unused: list[str]
    first_row: dict

    @property
    def recipe_entry(self) -> str:
        """The same rows as a recipe's data.train entry: pinned to the commit, with the mapping."""
        pinned = HubDatasetSpec(self.spec.repo_id, self.spec.split, self.spec.config, self.revision,
                                dict(self.mapping), self.spec.rows)
        return str(pinned)


def hub_file_stem(spec: HubDatasetSpec, revision: str) -> str:
    """A file name for the split's rows that says where they came from: hub-OWNER--NAME[-CONFIG]-SPLIT-COMMIT."""
    parts = [spec.repo_id.replace("/", "--"), *([spec.config] if spec.config else []), spec.split, revision[:12]]
    return "hub-" + "-".join(parts)


def load_hub_into_workspace(workspace: Path, spec: HubDatasetSpec, token: str | bool | None,
                            limits: UploadLimits | None = None) -> HubLoad:
    """Fetch the split within the limits, keep its raw rows in the workspace and, when the columns' roles are
    detected (or named in the spec), their mapped copy among the uploads."""
    from tuning.data.files import upload_limits

    limits = limits or upload_limits()
    fetched = fetch_hub_rows(spec, token, limits)
    raw_file = Path(workspace) / HUB_DIR / f"{hub_file_stem(spec, fetched.revision)}.jsonl"
    _keep_file(Path(workspace), [(raw_file, fetched.rows)], limits)
    load = HubLoad(spec, fetched.revision, fetched.columns, raw_file, {}, None, [], fetched.rows[0][1])
    mapping = spec.columns or detect_columns(fetched.rows)
    return remap_hub_load(Path(workspace), load, mapping, limits, fetched.rows) if mapping else load


def remap_hub_load(workspace: Path, load: HubLoad, mapping: dict[str, str], limits: UploadLimits | None = None,
                   rows: list[tuple[int, dict]] | None = None) -> HubLoad:
    """The kept rows mapped as `mapping` says (roles -> columns), kept among the uploads like an upload."""
    from tuning.data.files import upload_limits
    from tuning.data.workspace import keep_uploads

    limits = limits or upload_limits()
    mapping = {role: column for role, column in mapping.items() if column}
    rows = rows if rows is not None else read_kept_rows(load.raw_file)
    mapped = map_rows(rows, mapping, load.spec.label)
    with tempfile.TemporaryDirectory(prefix="kantele-hub-") as scratch:
        staged = write_rows(mapped, Path(scratch) / f"{load.raw_file.stem}.jsonl")
        kept = keep_uploads(Path(workspace), [staged], limits)[0]
    return dataclasses.replace(load, mapping=mapping, kept_file=kept, unused=unused_columns(load.columns, mapping))


def _keep_file(workspace: Path, files: list[tuple[Path, list[tuple[int, dict]]]], limits: UploadLimits) -> None:
    """Write rows into the workspace, all or none, if the workspace stays within its byte limit."""
    from tuning.atomic import staged_file
    from tuning.data.workspace import check_workspace_size

    with tempfile.TemporaryDirectory(prefix="kantele-hub-") as scratch:
        staged = [write_rows(rows, Path(scratch) / f"{number}.jsonl") for number, (_, rows) in enumerate(files)]
        targets = [target for target, _ in files]
        check_workspace_size(workspace, staged, targets, limits)
        for source, target in zip(staged, targets, strict=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            with staged_file(target) as temp:
                shutil.copyfile(source, temp)


def read_kept_rows(raw_file: Path) -> list[tuple[int, dict]]:
    """The raw rows a HubLoad kept, numbered as they came."""
    rows = []
    with open(raw_file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                rows.append((number, json.loads(line)))
    return rows
