"""Messages for visitors without the server's own paths: a path under the app's data folder is shown
relative to it (runs/<id>/...), an upload by its file name, and caches and temp folders by what they are.
A stranger learns nothing of the machine's layout (/root/..., Gradio's temp folder) from an error."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

UPLOAD_FOLDER_ENV = "GRADIO_TEMP_DIR"
# Gradio keeps each upload in <upload folder>/<hash>/<file name>: the file name is what the visitor knows.
_HASH_FOLDER = r"[0-9a-f]{16,}/"


def _upload_folder() -> Path:
    """Where Gradio stores uploads (gradio.utils.get_upload_folder's rule, without importing gradio)."""
    return Path(os.environ.get(UPLOAD_FOLDER_ENV) or Path(tempfile.gettempdir()) / "gradio")


def _roots(app_data: Path) -> list[tuple[str, str]]:
    """(absolute prefix, what to show instead), most specific first."""
    from tuning.models.loading import cache_dir

    huggingface_cache = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    roots = [(str(app_data) + os.sep, ""), (str(cache_dir()), "(model cache)"),
             (str(huggingface_cache), "(Hugging Face cache)"), (tempfile.gettempdir(), "(temp)"),
             (str(Path.home()), "~"), (str(Path(__file__).resolve().parents[2]), "(app)")]
    return sorted(roots, key=lambda root: len(root[0]), reverse=True)


def hide_server_paths(text: str, app_data: str | os.PathLike) -> str:
    """text with every server path replaced by what a visitor may see (see the module's docstring)."""
    if not text:
        return text
    uploads = re.escape(str(_upload_folder())) + "/" + _HASH_FOLDER
    text = re.sub(uploads, "", text)  # an upload: its file name stays
    for prefix, shown in _roots(Path(app_data).resolve()):
        if prefix.rstrip(os.sep) in ("", os.sep):
            continue
        text = text.replace(prefix, shown)
    return text
