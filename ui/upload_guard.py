"""Gradio's own guards on uploads, which run before any handler sees a file: the most one file and one request
may carry, and how long Gradio keeps its copies of uploads, finished or cut off.

The numbers are the app's own (tuning.data.files, tuning.guards.caps), so Gradio refuses nothing the app would
take. Gradio stores every upload in its cache as it streams in, before the app's own checks run; without
these a visitor could fill the disk with files the app would refuse, or with many files it would take.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from gradio.utils import get_upload_folder
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

from tuning.data.files import MAX_UPLOAD_MB_ENV, MB, format_size, upload_limits
from tuning.guards.caps import CAP_ENV_PREFIX, caps

FORM_SLACK_BYTES = MB  # a request's form headers and boundaries come on top of its files' bytes
CACHE_CHECKS_PER_AGE = 6  # a copy outlives its age by a sixth of it at most


def max_file_bytes() -> int | None:
    """Gradio's max_file_size: the largest file any upload box of the app takes (data, adapter .zip, document)."""
    largest = upload_limits().max_bytes
    source_mb = caps().source_mb
    if largest is None or source_mb is None:
        return None
    return max(largest, int(source_mb * MB))


def max_request_bytes() -> int | None:
    """The most one upload request may carry on a shared app (None locally): the load limit, or one file's."""
    request = upload_limits().request_bytes
    largest = max_file_bytes()
    if request is None or largest is None:
        return None
    return max(request, largest) + FORM_SLACK_BYTES


def cache_cleaning() -> tuple[int, int] | None:
    """gr.Blocks(delete_cache=(every, age)): Gradio deletes its copies older than age seconds, looking every
    so many seconds; None (the local default) keeps them until the app stops."""
    minutes = caps().upload_cache_minutes
    if minutes is None:
        return None
    age = max(1, round(minutes * 60))
    return max(1, age // CACHE_CHECKS_PER_AGE), age


def launch_guards() -> dict:
    """demo.launch(**launch_guards()): the file size limit, and on a shared app the upload guard."""
    guards: dict = {"max_file_size": max_file_bytes()}
    request, cleaning = max_request_bytes(), cache_cleaning()
    if request is not None or cleaning is not None:
        every_s, stale_s = cleaning or (None, None)
        guards["app_kwargs"] = {"middleware": [Middleware(UploadGuard, max_bytes=request, stale_s=stale_s,
                                                          every_s=every_s)]}
    return guards


class UploadGuard:
    """ASGI middleware for uploads (multipart POSTs): refuses one whose declared size is over max_bytes, or
    that declares none, before a byte of it is read (Gradio's own limit is per file, and one request may carry
    a thousand files); and deletes the part-files of uploads cut off mid-way, which Gradio leaves in its
    upload folder where its cache cleaning never looks."""

    def __init__(self, app, max_bytes: int | None, stale_s: int | None, every_s: int | None):
        self.app, self.max_bytes, self.stale_s, self.every_s = app, max_bytes, stale_s, every_s
        self.swept_at = 0.0

    async def __call__(self, scope, receive, send):
        headers = dict(scope["headers"]) if scope["type"] == "http" and scope["method"] == "POST" else {}
        refusal = None
        if headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data"):
            self._sweep()
            refusal = self._refusal(headers)
        await (refusal or self.app)(scope, receive, send)

    def _sweep(self) -> None:
        """Delete part-files older than stale_s: uploads stream into files at the top of Gradio's upload folder
        and move into a subfolder when complete, so one still there that long ago was cut off."""
        now = time.time()
        if self.stale_s is None or now - self.swept_at < self.every_s:
            return
        self.swept_at = now
        try:
            entries = list(os.scandir(get_upload_folder()))
        except FileNotFoundError:
            return
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime > self.stale_s:
                    Path(entry.path).unlink()
            except FileNotFoundError:  # finished, or swept by another request, meanwhile
                continue

    def _refusal(self, headers: dict) -> PlainTextResponse | None:
        if self.max_bytes is None:
            return None
        declared = headers.get(b"content-length", b"")
        if not declared.isdigit():  # a streamed body of unknown length could be any size; browsers declare it
            return PlainTextResponse("An upload must declare its size (Content-Length) -- send it from the page",
                                     status_code=411)
        if int(declared) > self.max_bytes:
            return PlainTextResponse(
                f"This upload is {format_size(int(declared))}, over this app's limit of "
                f"{format_size(self.max_bytes)} per upload -- upload fewer or smaller files at a time, or ask "
                f"whoever runs the app to raise {CAP_ENV_PREFIX}REQUEST_MB or {MAX_UPLOAD_MB_ENV}",
                status_code=413)
        return None
