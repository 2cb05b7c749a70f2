"""A shared app survives hostile uploads: Gradio refuses a file or a request over the app's limits before storing
it, forgets its copies after a while, and one Data-tab load may bring only so many bytes and rows (all its files
together) into a workspace of bounded size -- refused before the costly part of a load, with the fix named."""

import json
import os
import time
import uuid

import pytest
from helpers import TINY_TRAIN, write_jsonl

from tuning.data.files import MB, UploadLimits, count_rows, read_file_rows, upload_limits
from tuning.data.workspace import UPLOADS_DIR, keep_uploads, new_workspace, prepare_dataset
from tuning.guards.caps import CAP_ENV_PREFIX, SHARED_CAPS, SHARED_ENV

UPLOAD_ROUTE = "gradio_api/upload"
APP_LIMITS = {"KANTELE_MAX_UPLOAD_MB": "1", f"{CAP_ENV_PREFIX}SOURCE_MB": "1",  # Gradio takes no file over 1 MB
              f"{CAP_ENV_PREFIX}REQUEST_MB": "1.5", f"{CAP_ENV_PREFIX}REQUEST_ROWS": "10",
              f"{CAP_ENV_PREFIX}UPLOAD_CACHE_MINUTES": "0.25"}  # Gradio's copies go after 15 s, looked for every 2 s
CACHE_AGE_S, CACHE_EVERY_S = 15, 2


@pytest.fixture(autouse=True)
def local_limits(monkeypatch):
    """Each test starts on a local app with the default limits, whatever the machine's environment says."""
    for name in [SHARED_ENV, "SYSTEM", "SPACE_ID", "KANTELE_MAX_UPLOAD_MB", "KANTELE_MAX_ROWS"]:
        monkeypatch.delenv(name, raising=False)
    for name in [name for name in os.environ if name.startswith(CAP_ENV_PREFIX)]:
        monkeypatch.delenv(name)


def padded_jsonl(path, size: int):
    """A JSONL file of about size bytes (one long row), for limits on bytes."""
    row = {"prompt": "q", "response": "a" * max(1, size - 32)}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    return path


# --- the engine: limits per load and per workspace ---------------------------------------------------------------


def test_the_load_and_workspace_limits_are_on_only_when_shared(monkeypatch):
    assert upload_limits() == UploadLimits(50 * MB, 100_000)  # locally: per file only, as before
    monkeypatch.setenv(SHARED_ENV, "1")
    assert upload_limits() == UploadLimits(50 * MB, 100_000, int(SHARED_CAPS.request_mb * MB),
                                           SHARED_CAPS.request_rows, int(SHARED_CAPS.workspace_mb * MB))
    monkeypatch.setenv(f"{CAP_ENV_PREFIX}REQUEST_ROWS", "none")  # the owner may lift a cap
    assert upload_limits().request_rows is None


def test_files_under_the_file_limit_but_over_the_load_limit_together_are_refused_unread(tmp_path):
    files = []
    for name in ("a.jsonl", "b.csv"):
        with (tmp_path / name).open("wb") as handle:
            handle.truncate(3 * 1024 * MB)  # 3 GB, sparse: reading either would take seconds and all the memory
        files.append(tmp_path / name)
    workspace = new_workspace(tmp_path / "ws")
    started = time.perf_counter()
    with pytest.raises(Exception) as caught:
        keep_uploads(workspace, files, UploadLimits(max_bytes=4 * 1024 * MB, request_bytes=5 * 1024 * MB))
    assert time.perf_counter() - started < 1
    assert str(caught.value) == ("a.jsonl, b.csv: 6,144.0 MB in this load, over the limit of 5,120.0 MB per load — "
                                 "load fewer or smaller files at a time, or ask whoever runs the app to raise "
                                 f"{CAP_ENV_PREFIX}REQUEST_MB")
    assert not any((workspace / UPLOADS_DIR).iterdir()), "nothing is copied when the load is over the limit"


def test_rows_over_the_load_limit_are_refused_before_any_row_is_checked(tmp_path, monkeypatch):
    import tuning.data.workspace

    files = [write_jsonl(tmp_path / f"part{i}.jsonl", TINY_TRAIN) for i in (1, 2)]  # 8 rows each
    monkeypatch.setattr(tuning.data.workspace, "load_examples", lambda *a, **k: pytest.fail("rows were read"))
    with pytest.raises(Exception) as caught:
        prepare_dataset(new_workspace(tmp_path / "ws"), files, 0.25, seed=1,
                        limits=UploadLimits(max_rows=8, request_rows=15))
    assert str(caught.value) == ("part1.jsonl, part2.jsonl: 16 rows in this load, over the limit of 15 rows per "
                                 "load — load fewer or smaller files at a time, or ask whoever runs the app to raise "
                                 f"{CAP_ENV_PREFIX}REQUEST_ROWS")


def test_validation_files_count_toward_the_load(tmp_path):
    train, validation = (write_jsonl(tmp_path / f"{name}.jsonl", TINY_TRAIN) for name in ("train", "validation"))
    workspace = new_workspace(tmp_path / "ws")
    with pytest.raises(Exception, match="train.jsonl, validation.jsonl: 16 rows in this load, over the limit of 10"):
        prepare_dataset(workspace, [train], 0.25, seed=1, validation_files=[validation],
                        limits=UploadLimits(request_rows=10))
    assert prepare_dataset(workspace, [train], 0.25, seed=1, validation_files=[validation],
                           limits=UploadLimits(request_rows=16)).train_count == len(TINY_TRAIN)


@pytest.mark.parametrize("name,text", [
    ("rows.jsonl", '{"prompt": "a", "response": "b"}\n\nnot json\n[1]\n  \n{"q": 1}'),
    ("table.csv", 'prompt,response\n"a, with\na line break",b\n\n"c",d,e\n,\n'),
    ("array.json", '[{"prompt": "a", "response": "b"}, 3, {}]'),
    ("wrapped.json", '{"data": [{"prompt": "a", "response": "b"}, {"prompt": "c"}]}'),
])
def test_rows_are_counted_as_the_reader_counts_them(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    rows, errors = read_file_rows(path)
    assert count_rows(path) == len({number for number, _ in rows} | {e.row for e in errors})


def test_a_file_the_reader_refuses_counts_nothing_and_keeps_its_own_message(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{", encoding="utf-8")
    assert count_rows(bad) == 0
    with pytest.raises(Exception, match="bad.json: not valid JSON"):
        prepare_dataset(new_workspace(tmp_path / "ws"), [bad], 0.25, seed=1, limits=UploadLimits(request_rows=10))


def test_the_workspace_may_not_grow_past_its_limit(tmp_path):
    workspace = new_workspace(tmp_path / "ws")
    first = padded_jsonl(tmp_path / "first.jsonl", 600)
    limits = UploadLimits(workspace_bytes=1000)
    keep_uploads(workspace, [first], limits)
    keep_uploads(workspace, [first], limits)  # the same file again replaces its copy: still 600 bytes
    second = padded_jsonl(tmp_path / "second.jsonl", 500)
    with pytest.raises(Exception) as caught:
        keep_uploads(workspace, [first, second], limits)
    assert str(caught.value) == ("first.jsonl, second.jsonl: your workspace would hold 1,100 bytes with these files, "
                                 "over the limit of 1,000 bytes per workspace — load fewer or smaller files, reload "
                                 "the page to start a fresh workspace, or ask whoever runs the app to raise "
                                 f"{CAP_ENV_PREFIX}WORKSPACE_MB")
    assert sorted(p.name for p in (workspace / UPLOADS_DIR).iterdir()) == ["01-first.jsonl"]


def test_an_upload_that_is_gone_says_upload_it_again(tmp_path):
    with pytest.raises(Exception, match=r"^gone\.jsonl: file not found — upload it again$"):
        keep_uploads(new_workspace(tmp_path / "ws"), [tmp_path / "gone.jsonl"])


def test_gradio_takes_the_apps_own_limits(monkeypatch):
    from ui.upload_guard import cache_cleaning, launch_guards, max_file_bytes

    assert max_file_bytes() == upload_limits().max_bytes == 50 * MB  # one number: KANTELE_MAX_UPLOAD_MB
    monkeypatch.setenv("KANTELE_MAX_UPLOAD_MB", "80")
    assert max_file_bytes() == 80 * MB
    assert launch_guards() == {"max_file_size": 80 * MB} and cache_cleaning() is None  # locally: as before
    monkeypatch.setenv(SHARED_ENV, "1")
    assert cache_cleaning() == (600, 3600) and "app_kwargs" in launch_guards()


def test_the_data_tab_counts_tokens_once_per_conversation_and_not_for_a_refused_load(tmp_path, monkeypatch):
    from ui import data_tab

    made, counted = [], []

    def count_tokens_with():  # stands in for loading the tokenizer
        made.append(1)
        return lambda messages: counted.append(messages) or 1

    monkeypatch.setattr(data_tab, "WORKSPACES_DIR", tmp_path / "ws")
    monkeypatch.setattr(data_tab, "count_tokens_with", count_tokens_with)
    files = [str(write_jsonl(tmp_path / f"part{i}.jsonl", TINY_TRAIN)) for i in (1, 2)]
    state, _, message, *_ = data_tab.load_uploads(files[:1], 0.25, data_tab.empty_dataset_state())
    assert message == "" and (len(made), len(counted)) == (1, len(TINY_TRAIN))  # the histogram reuses the counts
    monkeypatch.setenv(SHARED_ENV, "1")
    monkeypatch.setenv(f"{CAP_ENV_PREFIX}REQUEST_ROWS", "10")
    _, _, message, *_ = data_tab.load_uploads(files, 0.25, state)
    assert "16 rows in this load, over the limit of 10 rows per load" in message
    assert (len(made), len(counted)) == (1, len(TINY_TRAIN)), "a refused load loads no tokenizer, counts nothing"


# --- the running app: Gradio's upload route and the Data tab, through HTTP ---------------------------------------


@pytest.fixture(scope="module")
def small_app(tmp_path_factory):
    """`python app.py` shared, with small upload limits (APP_LIMITS) so limits are cheap to cross; yields
    (url, Gradio's upload folder)."""
    from helpers import start_app_server, stop_process

    home = tmp_path_factory.mktemp("small-app")
    cache = home / "gradio-cache"
    server, url = start_app_server(home, {SHARED_ENV: "1", "KANTELE_EXAMPLE": "off", "GRADIO_TEMP_DIR": str(cache),
                                          **APP_LIMITS})
    try:
        yield url, cache
    finally:
        stop_process(server)


def stored_files(cache) -> set:
    """Every file under Gradio's upload folder."""
    return {path for path in cache.rglob("*") if path.is_file()} if cache.exists() else set()


def post_files(url: str, sizes: list[int], **extra):
    """POST files of these sizes (fresh random content) to Gradio's upload route; returns the response."""
    import httpx

    files = [("files", (f"{uuid.uuid4().hex}.jsonl", os.urandom(size))) for size in sizes]
    return httpx.post(url + UPLOAD_ROUTE, files=files, timeout=60, **extra)


def test_a_file_over_the_limit_is_refused_and_nothing_stored(small_app):
    import httpx

    url, cache = small_app
    before = stored_files(cache)
    try:
        response = post_files(url, [2 * MB])  # bounded: 2 MB, and the server may stop reading at 1 MB
        assert response.status_code == 413 and "maximum allowed size" in response.text
    except httpx.TransportError:  # the server answered and closed before the body was all sent: refused too
        pass
    assert stored_files(cache) == before
    small = post_files(url, [1000])
    assert small.status_code == 200 and all(os.path.getsize(path) == 1000 for path in small.json())


def test_many_files_each_under_the_limit_are_refused_together_unread(small_app):
    import httpx

    url, cache = small_app
    before = stored_files(cache)
    response = post_files(url, [900_000] * 3)  # 2.7 MB in one request: each file fits, together they don't
    assert response.status_code == 413 and f"raise {CAP_ENV_PREFIX}REQUEST_MB" in response.text
    body = (b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jsonl\"\r\n\r\n{}\r\n--x--\r\n")
    unknown = httpx.post(url + UPLOAD_ROUTE, content=iter([body]), timeout=60,  # an iterator: sent chunked
                         headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert unknown.status_code == 411
    assert stored_files(cache) == before


def cut_off_upload(url: str, sent: int) -> None:
    """Start an upload of a 900 KB file, send `sent` bytes of it and hang up."""
    import socket
    from urllib.parse import urlsplit

    head = b'--x\r\nContent-Disposition: form-data; name="files"; filename="cut.jsonl"\r\n\r\n'
    length = len(head) + 900_000 + len(b"\r\n--x--\r\n")
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(b"POST /%s HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                           b"Content-Length: %d\r\n\r\n" % (UPLOAD_ROUTE.encode(), length) + head + os.urandom(sent))
        time.sleep(1)  # the server writes what came before it sees the connection close


def test_gradio_forgets_its_copies_after_the_age_finished_or_cut_off(small_app):
    url, cache = small_app
    started = time.monotonic()
    [path] = post_files(url, [1000]).json()
    before = stored_files(cache)
    cut_off_upload(url, 500_000)
    [part_file] = stored_files(cache) - before  # Gradio's part-file, which its own cleaning never looks at
    assert os.path.exists(path) and part_file.parent == cache
    while os.path.exists(path) and time.monotonic() - started < CACHE_AGE_S + 4 * CACHE_EVERY_S + 30:
        time.sleep(0.5)
    gone_after = time.monotonic() - started
    assert not os.path.exists(path) and gone_after >= CACHE_AGE_S, gone_after
    post_files(url, [1000])  # the next upload sweeps away part-files older than the age
    assert not part_file.exists()


def test_the_data_tab_refuses_a_load_over_the_limits(small_app, tmp_path):
    from gradio_client import Client, handle_file

    url, _ = small_app
    client = Client(url, verbose=False)
    client.predict(None, api_name="/identify")
    rows = [write_jsonl(tmp_path / f"part{i}.jsonl", TINY_TRAIN) for i in (1, 2)]  # 8 rows each, 16 together
    # the rows are counted in the workspace's copies (numbered), the bytes before anything is copied
    started = time.perf_counter()
    message = client.predict([handle_file(str(p)) for p in rows], 0.25, api_name="/load_uploads")[1]
    assert time.perf_counter() - started < 30
    assert ("01-part1.jsonl, 02-part2.jsonl: 16 rows in this load, over the limit of 10 rows per load — load fewer "
            f"or smaller files at a time, or ask whoever runs the app to raise {CAP_ENV_PREFIX}REQUEST_ROWS") in message
    big = [padded_jsonl(tmp_path / f"big{i}.jsonl", 900_000) for i in (1, 2)]  # 0.9 MB each: under the file limit
    message = client.predict([handle_file(str(p)) for p in big], 0.25, api_name="/load_uploads")[1]
    assert "big1.jsonl, big2.jsonl: 1.7 MB in this load, over the limit of 1.5 MB per load — " in message
