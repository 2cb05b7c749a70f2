"""A local stand-in for the Hugging Face Hub HTTP API: just what huggingface_hub calls to push a repo.

Stdlib only (http.server). Start it with `with FakeHub() as hub:` and point huggingface_hub at `hub.url`
(HF_ENDPOINT for a subprocess, `huggingface_hub.constants.ENDPOINT` or `HfApi(endpoint=...)` in-process).

What it implements, as huggingface_hub 2.x calls it:
  GET  /api/whoami-v2                                   identity of the Bearer token (401 when unknown)
  POST /api/repos/create                                create a repo (409 when it exists)
  POST /api/validate-yaml                               always valid (the engine validates cards locally)
  GET  /api/{models,datasets,spaces}/NS/NAME[/revision/REV]   repo info (404 + X-Error-Code: RepoNotFound); with
                                                        ?blobs=true (files_metadata) each sibling has its size,
                                                        blobId and, for an LFS file, "lfs"
  GET  /api/{type}s/NS/NAME/tree/REV[/PATH]             the file listing snapshot_download reads (one page); with
                                                        recursive=false one level, folders as "directory" entries
                                                        (HfFileSystem, as datasets searches a repo for data files)
  HEAD|GET /[datasets/|spaces/]NS/NAME/resolve/REV/FILE   a file's metadata headers / its bytes, as hf_hub_download
                                                        reads them (404 + X-Error-Code: EntryNotFound)
  POST /api/{type}s/NS/NAME/preupload/REV               upload modes -- ALWAYS "regular", so the client
                                                        sends every file base64-inline in the commit and
                                                        never starts an LFS / Xet upload
  POST /api/{type}s/NS/NAME/commit/REV                  the NDJSON commit: files stored per repo in memory
  POST /api/spaces/NS/NAME/secrets|variables|hardware   Space secrets, variables and hardware request
  POST /api/spaces/NS/NAME/sleeptime                    {"seconds": N}: the sleep time; answers the Space's runtime
  GET  /api/spaces/NS/NAME/runtime                      stage, hardware, sleep time (gcTimeout) and mounted volumes
  PUT  /api/spaces/NS/NAME/volumes                      {"volumes": [...]}: replaces the Space's mounted volumes
  POST /api/buckets/NS/NAME                             create a storage bucket (409 when it exists)
Anything else is logged in `hub.unknown` and answered 404 with an X-Error-Message saying so; an LFS batch
request (`/info/lfs/objects/batch`) is refused with 501 because "regular" mode should make it unreachable.
GET /api/agent-harnesses (huggingface_hub's best-effort user-agent registry, fetched while it builds the
headers of the first authenticated call) gets a plain 404, which the client ignores.

`hub.add_dataset(id, files)` holds a dataset repo as one commit (a real sha, which `datasets` pins).
A repo's files are held whole in memory; `repo.claimed_sizes` makes the Hub report a size it doesn't hold (a 140 GB
model), for tests that must be refused before any byte of it is fetched.

Every request is recorded (method, path, query, Authorization header, body) in `hub.requests`. `hub.fail_next(...)`
makes the next matching request(s) answer an HTTP error -- use 4xx: huggingface_hub retries 5xx (and 429
on the preupload call) with backoff, which makes tests slow.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# /api/{type}s/{ns}/{name}[/{action}/{rev}] -- the repo id is always two segments on the Hub.
# Tokens the tests' fake Hub knows (see the `hub` fixture in conftest.py).
CANARY = "hf_CanaryWriteToken0123456789abcdefXYZ"  # alice's write token; must never show up anywhere
READ_TOKEN = "hf_ReadOnlyToken0123456789abcdef"
FINE_TOKEN = "hf_FineGrainedToken0123456789abcd"
BOB_TOKEN = "hf_BobWriteToken0123456789abcdefg"
ORG = "kalevala-org"

REPO_PATH = re.compile(r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)"
                       r"(?:/(preupload|commit|revision|secrets|variables|hardware|sleeptime|runtime|volumes|tree)"
                       r"(?:/(.+))?)?$")
# A storage bucket (what a Space mounts as a volume): /api/buckets/NS/NAME.
BUCKET_PATH = re.compile(r"^/api/buckets/([^/]+)/([^/]+)$")
# Space settings, by the method huggingface_hub sends them with.
SPACE_ACTIONS = {"secrets": "POST", "variables": "POST", "hardware": "POST", "sleeptime": "POST", "runtime": "GET",
                 "volumes": "PUT"}
# A file download: /NS/NAME/resolve/REV/FILE for a model, under /datasets/ or /spaces/ for the others.
RESOLVE_PATH = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")  # what the Hub's .gitattributes stores in LFS
LFS_POINTER_SIZE = 134  # bytes of the git pointer file that stands in for an LFS file


@dataclass
class Token:
    """Who a token belongs to and what it may do."""

    user: str
    role: str = "write"  # "read", "write" or "fineGrained"
    orgs: tuple[str, ...] = ()
    scopes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # fine-grained: entity name -> permissions

    def whoami(self) -> dict:
        """The /api/whoami-v2 body for this token, shaped like the real Hub's."""
        access = {"displayName": "t", "role": self.role}
        if self.role == "fineGrained":
            access["fineGrained"] = {"global": [], "scoped": [
                {"entity": {"type": "org" if name in self.orgs else "user", "name": name}, "permissions": list(perms)}
                for name, perms in self.scopes.items()]}
        return {"type": "user", "id": f"id-{self.user}", "name": self.user, "fullname": self.user,
                "orgs": [{"type": "org", "name": org, "roleInOrg": "write"} for org in self.orgs],
                "auth": {"type": "access_token", "accessToken": access}}

    def may_write(self, namespace: str) -> bool:
        """Write access to a namespace, as the Hub decides it."""
        if self.role == "write":
            return namespace in (self.user, *self.orgs)
        if self.role == "fineGrained":
            return "repo.write" in self.scopes.get(namespace, ())
        return False


@dataclass
class Commit:
    """One commit as it arrived: message and the files it added or deleted."""

    oid: str
    summary: str
    description: str
    added: dict[str, bytes]
    deleted: list[str]


@dataclass
class Repo:
    """A repository held in memory."""

    repo_type: str
    repo_id: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    hardware: str | None = None  # the Space hardware last requested
    sleep_time: int | None = None  # a Space's sleep time in seconds, as last set (-1: never)
    volumes: list[dict] = field(default_factory=list)  # a Space's mounted volumes, as the Hub's JSON spells them
    sdk: str | None = None  # a Space's sdk, as created
    claimed_sizes: dict[str, int] = field(default_factory=dict)  # path -> the size the Hub reports, not the held one

    def size(self, path: str) -> int:
        """The size the Hub reports for a file."""
        return self.claimed_sizes.get(path, len(self.files[path]))

    def is_lfs(self, path: str) -> bool:
        """True for a file the Hub stores in LFS (weights, and anything claimed to be big)."""
        return path in self.claimed_sizes or path.endswith(LFS_SUFFIXES)

    def file_metadata(self, path: str) -> dict:
        """size / blob id / lfs of a file, in the keys the Hub's siblings (blobs=true) use."""
        entry = {"rfilename": path, "blobId": _git_oid(self.files[path]), "size": self.size(path)}
        if self.is_lfs(path):
            entry["lfs"] = {"sha256": _sha256(self.files[path]), "size": self.size(path),
                            "pointerSize": LFS_POINTER_SIZE}
        return entry

    @property
    def sha(self) -> str:
        return self.commits[-1].oid if self.commits else "0" * 40


@dataclass
class Bucket:
    """A storage bucket: only that it exists and who may see it (the fake holds no files in it)."""

    bucket_id: str
    private: bool


@dataclass
class Request:
    """One request as the fake hub saw it."""

    method: str
    path: str
    authorization: str | None
    body: bytes
    query: str = ""  # the URL's query string, e.g. "blobs=True" when files_metadata was asked for


@dataclass
class _Fault:
    path_part: str
    status: int
    message: str
    method: str | None
    times: int
    code: str | None


class FakeHub:
    """The fake Hub server; a context manager that runs it on a free 127.0.0.1 port in a thread."""

    def __init__(self) -> None:
        self.tokens: dict[str, Token] = {}
        self.repos: dict[tuple[str, str], Repo] = {}
        self.buckets: dict[str, Bucket] = {}
        self.requests: list[Request] = []
        self.unknown: list[str] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- setup ------------------------------------------------------------------------------------

    def add_token(self, token: str, user: str, role: str = "write", orgs: tuple[str, ...] = (),
                  scopes: dict[str, tuple[str, ...]] | None = None) -> str:
        """Make a token known; returns it."""
        self.tokens[token] = Token(user, role, tuple(orgs), dict(scopes or {}))
        return token

    def add_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> Repo:
        """A repo that exists before the test pushes."""
        repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private)
        return repo

    def add_dataset(self, repo_id: str, files: dict[str, bytes], private: bool = False) -> Repo:
        """A dataset repo holding files, as one commit (so it has a real sha, as datasets pins it)."""
        repo = self.add_repo(repo_id, "dataset", private)
        oid = hashlib.sha1(f"{repo_id}{sorted(files)}".encode()).hexdigest()
        repo.commits.append(Commit(oid, "Upload dataset", "", dict(files), []))
        repo.files.update(files)
        return repo

    def fail_next(self, path_part: str, status: int, message: str = "injected failure", method: str | None = None,
                  times: int = 1, code: str | None = None) -> None:
        """Answer the next `times` requests whose path contains path_part with this HTTP error.

        `message` goes in X-Error-Message, `code` in X-Error-Code (e.g. "RepoNotFound"), as the Hub sends them.
        """
        with self._lock:
            self._faults.append(_Fault(path_part, status, message, method, times, code))

    # -- what tests read --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        """The stored repo (KeyError when it was never created)."""
        return self.repos[(repo_type, repo_id)]

    def calls(self, path_part: str = "", method: str | None = None) -> list[Request]:
        """The recorded requests whose path contains path_part (and with that method, if given)."""
        return [r for r in self.requests if path_part in r.path and (method is None or r.method == method)]

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FakeHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- request handling (called from the server threads) ----------------------------------------

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path_part in path and fault.method in (None, method):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def handle(self, method: str, path: str, authorization: str | None, body: bytes,
               query: str = "") -> tuple[int, dict | bytes, dict]:
        """(status, JSON body -- or a file's bytes --, extra headers) for one request."""
        with self._lock:
            self.requests.append(Request(method, path, authorization, body, query))
        fault = self._take_fault(method, path)
        if fault:
            return _error(fault.status, fault.message, code=fault.code)
        token = self.tokens.get((authorization or "").removeprefix("Bearer ").strip())
        if path == "/api/whoami-v2" and method == "GET":
            if token is None:
                # The real Hub's wording; huggingface_hub keys its "invalid token" handling on it.
                return _error(401, "Invalid credentials in Authorization header")
            return 200, token.whoami(), {}
        if path == "/api/validate-yaml" and method == "POST":
            return 200, {"errors": [], "warnings": []}, {}
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(token, json.loads(body or b"{}"))
        if path == "/api/agent-harnesses":
            return _error(404, "the fake hub has no agent registry")
        if "/info/lfs/objects/batch" in path:
            return _error(501, "the fake hub answers preupload with 'regular': LFS uploads are not implemented")
        match = BUCKET_PATH.match(path)
        if match and method == "POST":
            return self._create_bucket(token, f"{match[1]}/{match[2]}", json.loads(body or b"{}"))
        match = REPO_PATH.match(path)
        if match:
            kind, namespace, name, action, revision = match.groups()
            return self._repo_call(method, token, REPO_TYPES[kind], f"{namespace}/{name}", action, revision, body,
                                   query)
        match = RESOLVE_PATH.match(path)
        if match and method in ("GET", "HEAD"):
            kind, namespace, name, _revision, filename = match.groups()
            return self._resolve(token, REPO_TYPES.get(kind, "model"), f"{namespace}/{name}", filename)
        with self._lock:
            self.unknown.append(f"{method} {path}")
        return _error(404, f"fake hub: {method} {path} is not implemented")

    def _create_repo(self, token: Token | None, payload: dict) -> tuple[int, dict, dict]:
        if token is None:
            return _error(401, "Invalid credentials in Authorization header")
        namespace = payload.get("organization") or token.user
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{payload['name']}"
        if not token.may_write(namespace):
            return _error(403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"')
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                return _error(409, "You already created this model repo", {"url": self._repo_url(repo_type, repo_id)})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private)
            repo.sdk, repo.hardware = payload.get("sdk"), payload.get("hardware")
        return 200, {"url": self._repo_url(repo_type, repo_id), "name": repo_id}, {}

    def _create_bucket(self, token: Token | None, bucket_id: str, payload: dict) -> tuple[int, dict, dict]:
        if token is None:
            return _error(401, "Invalid credentials in Authorization header")
        namespace = bucket_id.split("/")[0]
        if not token.may_write(namespace):
            return _error(403, f'You don\'t have the rights to create a bucket under the namespace "{namespace}"')
        with self._lock:
            if bucket_id in self.buckets:  # the Hub's 409 carries the url too: create_bucket(exist_ok=True) reads it
                return _error(409, "You already created this bucket", {"url": f"{self.url}/buckets/{bucket_id}"})
            self.buckets[bucket_id] = Bucket(bucket_id, payload.get("visibility") == "private")
        return 200, {"url": f"{self.url}/buckets/{bucket_id}", "name": bucket_id}, {}

    def _visible(self, token: Token | None, repo_type: str, repo_id: str) -> Repo | None:
        """The repo, unless it is missing or private to someone else (the Hub hides both behind one 404)."""
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not (token and token.may_write(repo_id.split("/")[0]))):
            return None
        return repo

    def _repo_call(self, method: str, token: Token | None, repo_type: str, repo_id: str, action: str | None,
                   revision: str | None, body: bytes, query: str = "") -> tuple[int, dict, dict]:
        repo = self._visible(token, repo_type, repo_id)
        namespace = repo_id.split("/")[0]
        if repo is None:
            return _error(404, "Repository not found", code="RepoNotFound")
        if method == "GET" and action in (None, "revision"):
            return 200, self._repo_info(repo, files_metadata="blobs=true" in query.lower()), {}
        if method == "GET" and action == "tree":
            # HfFileSystem (datasets' data-file search) lists one level at a time: recursive=false
            return 200, self._tree(repo, (revision or "").partition("/")[2],
                                   recursive="recursive=false" not in query.lower()), {}
        allowed = SPACE_ACTIONS.get(action) if repo_type == "space" else None
        if method != (allowed or "POST") or action not in ("preupload", "commit", *([action] if allowed else [])):
            with self._lock:
                self.unknown.append(f"{method} {action} {repo_id}")
            return _error(404, f"fake hub: {method} {action} on a repo is not implemented")
        if token is None or not token.may_write(namespace):
            return _error(403, f"You don't have the rights to write to {repo_id}")
        if action == "preupload":
            return 200, self._preupload(repo, json.loads(body)), {}
        if action == "commit":
            return self._commit(repo, body)
        return self._space_call(repo, action, json.loads(body) if body else {})

    def _space_call(self, repo: Repo, action: str, payload: dict) -> tuple[int, dict, dict]:
        """A Space's settings: secrets and variables answer {}, the rest the Space's runtime, as the Hub does."""
        with self._lock:
            if action in ("secrets", "variables"):
                getattr(repo, action)[payload["key"]] = payload["value"]
                return 200, {}, {}
            if action == "hardware":
                repo.hardware = payload["flavor"]
            elif action == "sleeptime":
                repo.sleep_time = payload["seconds"]
            elif action == "volumes":
                repo.volumes = list(payload["volumes"])
            return 200, self._runtime(repo), {}

    def _runtime(self, repo: Repo) -> dict:
        """A Space's runtime, in the keys huggingface_hub's SpaceRuntime reads."""
        return {"stage": "BUILDING", "hardware": {"current": None, "requested": repo.hardware},
                "gcTimeout": repo.sleep_time, "storage": None, "volumes": list(repo.volumes) or None}

    def _preupload(self, repo: Repo, payload: dict) -> dict:
        # "regular" for every file keeps the whole upload inside the commit call (no LFS / Xet server needed);
        # the oid of the stored copy lets huggingface_hub skip files that didn't change, as on the real Hub.
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                           "oid": _git_oid(repo.files[f["path"]]) if f["path"] in repo.files else None}
                          for f in payload["files"]]}

    def _commit(self, repo: Repo, body: bytes) -> tuple[int, dict, dict]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), None)
        if header is None or not header.get("summary"):
            return _error(400, "commit without a header/summary")
        added, deleted = {}, []
        for line in lines:
            if line["key"] == "file":
                value = line["value"]
                if value.get("encoding") != "base64":
                    return _error(400, f"unsupported encoding {value.get('encoding')!r}")
                added[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "deletedFile":
                deleted.append(line["value"]["path"])
            elif line["key"] != "header":
                return _error(400, f"fake hub: commit operation {line['key']!r} is not implemented")
        with self._lock:
            oid = hashlib.sha1(f"{repo.sha}{body!r}{len(repo.commits)}".encode()).hexdigest()
            repo.commits.append(Commit(oid, header["summary"], header.get("description", ""), added, deleted))
            for path in deleted:
                repo.files.pop(path, None)
            repo.files.update(added)
        url = f"{self.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{oid}"
        return 200, {"commitOid": oid, "commitUrl": url, "pullRequestUrl": None, "success": True}, {}

    def _repo_info(self, repo: Repo, files_metadata: bool = False) -> dict:
        siblings = [repo.file_metadata(name) if files_metadata else {"rfilename": name} for name in sorted(repo.files)]
        return {"id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": repo.sha, "private": repo.private,
                "siblings": siblings}

    def _tree(self, repo: Repo, folder: str, recursive: bool = True) -> list[dict]:
        """Every file under folder (recursive), as /tree lists them; one page, so no Link header. Not recursive:
        the files right in folder and its subfolders as "directory" entries, as the Hub answers recursive=false."""
        entries, prefix = [], folder.strip("/") + "/" if folder.strip("/") else ""
        if not recursive:
            folders = sorted({prefix + name[len(prefix):].split("/")[0] for name in repo.files
                              if name.startswith(prefix) and "/" in name[len(prefix):]})
            entries += [{"type": "directory", "oid": _git_oid(path.encode()), "path": path} for path in folders]
        for name in sorted(repo.files):
            if not name.startswith(prefix) or (not recursive and "/" in name[len(prefix):]):
                continue
            meta = repo.file_metadata(name)
            entry = {"type": "file", "oid": meta["blobId"], "size": meta["size"], "path": name}
            if "lfs" in meta:
                entry["lfs"] = {"oid": meta["lfs"]["sha256"], "size": meta["size"], "pointerSize": LFS_POINTER_SIZE}
            entries.append(entry)
        return entries

    def _resolve(self, token: Token | None, repo_type: str, repo_id: str, filename: str) -> tuple[int, bytes, dict]:
        """A file's bytes with the headers hf_hub_download reads (the handler drops the body of a HEAD)."""
        repo = self._visible(token, repo_type, repo_id)
        if repo is None:
            return _error(404, "Repository not found", code="RepoNotFound")
        if filename not in repo.files:
            return _error(404, "Entry not found", code="EntryNotFound")
        content = repo.files[filename]
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{_git_oid(content)}"'}
        if repo.is_lfs(filename):
            headers.update({"X-Linked-Etag": f'"{_sha256(content)}"', "X-Linked-Size": str(len(content))})
        return 200, content, headers

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{URL_PREFIX[repo_type]}{repo_id}"


def _sha256(content: bytes) -> str:
    """The sha256 the Hub reports (and sends as the ETag) for an LFS file."""
    return hashlib.sha256(content).hexdigest()


def _git_oid(content: bytes) -> str:
    """git's blob id -- what the Hub reports as the oid of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _error(status: int, message: str, body: dict | None = None, code: str | None = None) -> tuple[int, dict, dict]:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return status, {"error": message, **(body or {})}, headers


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects from the Hub

        def _serve(self) -> None:
            body = self._read_body()
            url = urlsplit(self.path)
            status, payload, headers = hub.handle(self.command, unquote(url.path), self.headers.get("Authorization"),
                                                  body, url.query)
            raw = isinstance(payload, bytes)  # a file's content
            data = payload if raw else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":  # a HEAD answer has the headers of the GET and no body
                self.wfile.write(data)

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

        def log_message(self, *args) -> None:  # requests are in hub.requests; keep test output clean
            pass

    return Handler
