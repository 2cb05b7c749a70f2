"""Messages for visitors carry no server paths: the app's data folder becomes relative, an upload its file name,
caches and temp folders what they are (tuning/guards/server_paths.py, ui/messages.py)."""

import tempfile
from pathlib import Path

from tuning.atomic import disk_full_error
from tuning.guards.server_paths import hide_server_paths
from tuning.models.loading import cache_dir
from ui.messages import for_visitor
from ui.state import APP_DATA


def test_every_kind_of_server_path_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = tmp_path / "home"
    upload = tmp_path / "gradio" / ("0123456789abcdef" * 4) / "kalevala.jsonl"
    text = (f"{upload}: row 3 bad; {app}/runs/20250101-x/train.log; {cache_dir()}/models/m; "
            f"{Path.home()}/secret; {tempfile.gettempdir()}/scratch")
    shown = hide_server_paths(text, app)
    assert shown.startswith("kalevala.jsonl: row 3 bad; runs/20250101-x/train.log; (model cache)/models/m")
    assert str(tmp_path) not in shown and str(Path.home()) not in shown and "/tmp" not in shown


def test_the_disk_full_message_names_the_run_not_the_disk_layout():
    message = for_visitor(disk_full_error(APP_DATA / "runs" / "20250101-000000-run-abcdef"))
    assert "runs/20250101-000000-run-abcdef" in message and str(APP_DATA) not in message
