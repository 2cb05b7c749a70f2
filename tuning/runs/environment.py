"""What a run records about where it ran: its log handlers and the library versions."""

from __future__ import annotations

import logging
import platform
import sys
from pathlib import Path

from tuning.quiet import quiet_library_noise
from tuning.runs.files import LOG_FILE

LIBRARIES = ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "huggingface_hub",
             "trackio", "tensorboard")  # the trackers: their logs' format is theirs (training.report_to)


def setup_logging(run_dir: Path, to_file: bool = True) -> None:
    """Log to RUN_DIR/train.log and stderr (transformers' own messages included).

    to_file=False (the other processes of a distributed run): warnings and errors to stderr only,
    so the run folder has one log and the job's output isn't every line N times."""
    import transformers

    run_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if to_file:
        handlers.append(logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = handlers
    root.setLevel(logging.INFO if to_file else logging.WARNING)
    transformers.logging.disable_default_handler()
    transformers.logging.enable_propagation()
    quiet_library_noise()


def library_versions() -> dict:
    """Versions of the libraries a run depends on, plus Python and the platform (the device: tuning.hardware.device)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": versions,
    }
