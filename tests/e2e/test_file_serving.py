"""Gradio serves only the app's own files: crafted paths through every file route are refused -- runs,
other visitors' uploads, tokens, the app's source, symlinks, /etc/passwd -- while the page still loads."""

import json

from leak_checks import MARKER, PASSWD_LINE, crafted_paths, own_files_load, plant_private_files, probe, request


def test_crafted_paths_are_refused_and_the_apps_own_files_still_load(app_server):
    url, home = app_server
    gradio_tmp = home / "gradio"
    planted = plant_private_files(home, gradio_tmp)
    results = probe(url, crafted_paths(home, gradio_tmp, planted, url))
    served = [f"{p.status} {p.label}: {p.path}" for p in results if not p.refused]
    assert served == [], "served what it shouldn't:\n" + "\n".join(served)
    assert len(results) >= 40

    own = own_files_load(url)
    assert set(own.values()) == {200}, own
    assert len(own) >= 4, "the page names its script assets"


def test_an_api_call_cannot_pass_a_server_path_as_an_uploaded_file(app_server):
    """A client may name any path in a file input's payload; gradio accepts only files uploaded to it."""
    url, home = app_server
    planted = plant_private_files(home, home / "gradio")
    for target in ("/etc/passwd", str(planted["workspace upload"])):
        payload = {"data": [[{"path": target, "meta": {"_type": "gradio.FileData"}}], 0.1]}
        status, reply = request(url, "/gradio_api/call/load_uploads", "POST", json.dumps(payload).encode(),
                                {"Content-Type": "application/json"})
        if status == 200:  # the call was queued: its result stream must be an error holding nothing private
            event_id = json.loads(reply)["event_id"]
            status, reply = request(url, f"/gradio_api/call/load_uploads/{event_id}")
            assert b"event: error" in reply, reply[:500]
        text = reply.decode("utf-8", errors="replace")
        assert MARKER not in text and PASSWD_LINE not in text
