"""Whether runs outlive a restart here: on a Hugging Face Space only what lies on its persistent storage (mounted at
/data) survives a restart or a sleep, so Train and Publish say so plainly when the app's data lies elsewhere."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import gradio as gr

from tuning.hub.space import SPACE_DATA_DIR
from ui.state import APP_DATA

SPACE_ID_ENV = "SPACE_ID"  # set by Hugging Face on every Space
PERSISTENT_DIR = Path(SPACE_DATA_DIR)  # where a Space's persistent storage is mounted, when it has some


def on_persistent_storage(app_data: Path, data_dir: Path = PERSISTENT_DIR,
                          is_mount: Callable[[Path], bool] = os.path.ismount) -> bool:
    """True when app_data lies under data_dir and data_dir is a mounted, writable folder (a /data the Space's image
    merely created is no persistent storage)."""
    data_dir = Path(data_dir).resolve()
    return (Path(app_data).resolve().is_relative_to(data_dir) and data_dir.is_dir() and is_mount(data_dir)
            and os.access(data_dir, os.W_OK))


def storage_warning(environ: Mapping[str, str], app_data: Path, data_dir: Path = PERSISTENT_DIR,
                    is_mount: Callable[[Path], bool] = os.path.ismount) -> str | None:
    """What a visitor should know when this app runs on a Space whose runs won't survive a restart; None off a
    Space and on one whose app data is on its persistent storage."""
    if not environ.get(SPACE_ID_ENV) or on_persistent_storage(app_data, data_dir, is_mount):
        return None
    warning = ("This Space has no persistent storage, so your runs are lost when it restarts or goes to sleep. "
               "To keep an adapter, publish it to the Hub (Publish tab) or download its export.")
    if Path(data_dir).is_dir() and is_mount(Path(data_dir)):  # the storage is there, the app just doesn't use it
        warning += (f" (Space owner: persistent storage is mounted at {data_dir}, but the app keeps its runs "
                    f"elsewhere -- set the Space variable KANTELE_HOME to {data_dir} or a folder under it.)")
    return warning


def storage_note(elem_id: str) -> gr.Markdown:
    """The note, shown in the tab being built only when runs here won't survive a restart."""
    warning = storage_warning(os.environ, APP_DATA)
    return gr.Markdown(f"**Not kept:** {warning}" if warning else "", visible=bool(warning), elem_id=elem_id)
