"""What a running app must not give away: files that are not its own to serve, and secrets anywhere.

Plain module (shared by tests/e2e and bench/reliability_isolation.py): it plants private files in an
app's home, asks the server for them through every file route with crafted paths, and greps files and
captured responses for a secret in the forms it could take.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

REPO = Path(__file__).resolve().parents[1]
SERVER_TOKEN_CANARY = "hf_ServerEnvCanary0123456789abcdXYZ"  # the app server's own HF_TOKEN in tests
MARKER = "PRIVATE-MARKER-7f3c1e"  # in every planted file: a response holding it served a private file
PASSWD_LINE = "root:x:0:0"
REFUSED = (400, 403, 404, 405)
FILE_ROUTES = ("/gradio_api/file=", "/file=", "/gradio_api/file/")
RUN_ID = "20250101-000000-planted-abcdef"
WORKSPACE = "0123456789abcdef0123456789abcdef"


@dataclass
class Probe:
    """One crafted request and what the server did with it."""

    label: str
    path: str
    status: int
    leaked: bool  # the body held a planted file's marker or /etc/passwd

    @property
    def refused(self) -> bool:
        """Refused with an error status and nothing private in the body."""
        return self.status in REFUSED and not self.leaked


def plant_private_files(home: Path, gradio_tmp: Path) -> dict[str, Path]:
    """Files a visitor must never fetch: a run's adapter, another visitor's upload, a saved HF token, symlinks."""
    files = {
        "run adapter": home / "runs" / RUN_ID / "adapter" / "adapter_model.safetensors",
        "run owner hash": home / "runs" / RUN_ID / "owner.sha256",
        "run train log": home / "runs" / RUN_ID / "train.log",
        "workspace upload": home / "workspaces" / WORKSPACE / "uploads" / "01-private.jsonl",
        "HF token file": home / "hf-home" / "token",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{MARKER}\n", encoding="utf-8")
    links = gradio_tmp / "planted-links"
    links.mkdir(parents=True, exist_ok=True)
    targets = {"upload-link.jsonl": files["workspace upload"], "passwd-link.txt": Path("/etc/passwd")}
    for name, target in targets.items():
        (links / name).unlink(missing_ok=True)
        (links / name).symlink_to(target)
    files["symlink to an upload (in gradio's folder)"] = links / "upload-link.jsonl"
    files["symlink to /etc/passwd (in gradio's folder)"] = links / "passwd-link.txt"
    return files


def crafted_paths(home: Path, gradio_tmp: Path, planted: dict[str, Path], loopback_url: str) -> list[tuple[str, str]]:
    """(label, raw request path) pairs: absolute, relative, encoded, traversing, symlinked and remote targets."""
    depth = "../" * len(REPO.parts)
    targets = {
        "/etc/passwd": "/etc/passwd",
        "app.py (relative to the server's folder)": "app.py",
        "app.py (absolute)": str(REPO / "app.py"),
        "the user's saved HF token": str(Path.home() / ".cache" / "huggingface" / "token"),
        "traversal to /etc/passwd": f"{depth}etc/passwd",
        "traversal out of gradio's folder": f"{gradio_tmp}/../workspaces/{WORKSPACE}/uploads/01-private.jsonl",
        "file:// URL": "file:///etc/passwd",
        "loopback URL (SSRF)": f"{loopback_url.rstrip('/')}/config",
        **{name: str(path) for name, path in planted.items()},
    }
    paths = []
    for route in FILE_ROUTES:
        for label, target in targets.items():
            paths.append((f"{route} {label}", route + target.lstrip("/") if route.endswith("/") else route + target))
    encoded = quote(f"{depth}etc/passwd", safe="")
    paths += [
        ("url-encoded traversal", f"/gradio_api/file={encoded}"),
        ("double-encoded traversal", f"/gradio_api/file={quote(encoded, safe='')}"),
        ("url-encoded absolute", f"/gradio_api/file={quote('/etc/passwd', safe='')}"),
        ("encoded upload path", f"/gradio_api/file={quote(str(planted['workspace upload']), safe='')}"),
        ("assets traversal", "/assets/..%2F..%2F..%2F..%2Fapp.py"),
        ("static traversal", "/static/..%2F..%2F..%2F..%2Fapp.py"),
        ("gradio_api static traversal", "/gradio_api/static/..%2F..%2F..%2F..%2Fapp.py"),
        ("favicon traversal", "/favicon.ico/..%2F..%2Fapp.py"),
    ]
    return paths


def request(base_url: str, raw_path: str, method: str = "GET", body: bytes | None = None,
            headers: dict | None = None, timeout: float = 30) -> tuple[int, bytes]:
    """One request with the path sent exactly as given (no client-side normalizing or re-encoding)."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, raw_path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def probe(base_url: str, paths: list[tuple[str, str]]) -> list[Probe]:
    """Ask for every crafted path; record the status and whether anything private came back."""
    results = []
    for label, raw in paths:
        status, body = request(base_url, raw)
        text = body.decode("utf-8", errors="replace")
        results.append(Probe(label, raw, status, MARKER in text or PASSWD_LINE in text))
    return results


def own_files_load(base_url: str) -> dict[str, int]:
    """Status of what the app itself needs: the page, its script assets, its config, and a file it was given."""
    checks = {}
    status, page = request(base_url, "/")
    checks["page"] = status
    assets = re.findall(r'(?:src|href)="\.?/?(assets/[^"]+\.(?:js|css))"', page.decode("utf-8", errors="replace"))
    for asset in assets[:3]:
        checks[asset] = request(base_url, "/" + asset)[0]
    checks["config"] = request(base_url, "/config")[0]
    checks["an uploaded file, fetched back"] = upload_and_fetch(base_url)
    return checks


def upload_and_fetch(base_url: str) -> int:
    """Upload a file through gradio's upload route and fetch it back from the path gradio returns."""
    boundary = "kantele-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"mine.jsonl\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n{{\"prompt\": \"q?\", \"response\": \"a.\"}}\n\r\n"
            f"--{boundary}--\r\n").encode()
    status, reply = request(base_url, "/gradio_api/upload", "POST", body,
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    if status != 200:
        return status
    stored = json.loads(reply)[0]
    fetched, content = request(base_url, "/gradio_api/file=" + quote(stored))
    return fetched if b"q?" in content else 0


def secret_forms(secret: str) -> list[bytes]:
    """The secret as bytes, and how it would look base64'd (at each alignment inside a longer blob) or in hex."""
    raw = secret.encode()
    forms = {raw, raw.hex().encode(), quote(secret, safe="").encode()}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        forms.add(encoded[4 if offset else 0:-4])  # drop the characters the padding or neighbours decide
        forms.add(base64.urlsafe_b64encode(b"\0" * offset + raw)[4 if offset else 0:-4])
    return sorted(forms)


def files_under(*roots: Path) -> list[Path]:
    """Every regular file below the roots (symlinks not followed)."""
    found = []
    for root in roots:
        for folder, _, names in os.walk(root):
            found += [Path(folder) / name for name in names if (Path(folder) / name).is_file()
                      and not (Path(folder) / name).is_symlink()]
    return found


def find_secrets(secrets: list[str], files: list[Path], texts: dict[str, str] | None = None) -> list[str]:
    """'where: which form' for every place a secret shows up (an empty list is the pass)."""
    forms = [(secret, form) for secret in secrets for form in secret_forms(secret)]
    hits = []
    for path in files:
        data = path.read_bytes()
        hits += [f"{path}: {form[:12]!r}…" for _, form in forms if form in data]
    for where, text in (texts or {}).items():
        data = text.encode("utf-8", errors="replace")
        hits += [f"{where}: {form[:12]!r}…" for _, form in forms if form in data]
    return hits
