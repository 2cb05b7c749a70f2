"""Pushing a run to the Hub, against a local fake Hub: the exact files and card, token checks, clear errors,
no token leaks, and a run folder a push never changes."""

import hashlib
import os
import subprocess
import sys
import traceback
from pathlib import Path

import huggingface_hub.constants
import pytest
from fake_hub import CANARY, FINE_TOKEN, ORG, READ_TOKEN
from helpers import REPO, free_port
from huggingface_hub import DatasetCard, ModelCard

from tuning.cli import main
from tuning.hub.auth import HubError, check_write_access
from tuning.hub.push import PushPlan, plan_adapter_push, plan_dataset_push, push_plans, validate_card

REPO_ID = "alice/kalevala-adapter"
DATASET_ID = "alice/kalevala-data"
CARD = "---\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\nlibrary_name: peft\npipeline_tag: text-generation\n" \
       "license: apache-2.0\n---\n# x\n"


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder, by relative path."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def no_canary(*texts: str) -> None:
    """Fail if the canary token is in any of texts."""
    for text in texts:
        assert CANARY not in text


def files_with_canary(folder: Path) -> list[str]:
    """Files under folder whose bytes contain the canary token (bytes: decoding big binaries is slow)."""
    return [p.name for p in folder.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]


def run_cli(endpoint: str, token: str | None, *args: str, hf_home: Path) -> subprocess.CompletedProcess:
    """`python -m tuning push ...` in a fresh process aimed at endpoint; checks no token leaked into its output."""
    dropped = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    # HF_HOME in tmp: no saved login or cache of the developer's machine takes part.
    env.update(HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="0", HF_HOME=str(hf_home), OMP_NUM_THREADS="1")
    if token:
        env["HF_TOKEN"] = token
    result = subprocess.run([sys.executable, "-m", "tuning", "push", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    no_canary(result.stdout, result.stderr)
    return result


def push_main(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI's main() in-process (fast): exit code, stdout, stderr; checks no token leaked."""
    code = main(["push", *args])
    out, err = capsys.readouterr()
    no_canary(out, err)
    return code, out, err


def expected_bytes(plan: PushPlan) -> dict[str, bytes]:
    """What each file of a plan should be on the Hub."""
    return {name: source.read_bytes() if isinstance(source, Path) else source.encode("utf-8")
            for name, source in plan.files.items()}


def small_plan(repo_id: str, repo_type: str = "model") -> PushPlan:
    """A two-file plan with a valid card (fast pushes for the token and error tests)."""
    return PushPlan(repo_id, repo_type, "test commit", {"README.md": CARD, "notes.txt": "hello\n"})


# -- the CLI end to end (real processes) -----------------------------------------------------------------------


def test_dry_run_prints_plan_and_card_and_sends_nothing(hub, trained_run, tmp_path):
    """--dry-run lists every planned file and prints the card; the Hub sees no request at all."""
    result = run_cli(hub.url, CANARY, "--run", str(trained_run), "--repo", REPO_ID, "--dry-run", hf_home=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = plan_adapter_push(trained_run, REPO_ID)
    for name, size in plan.describe():
        assert f"  {name}  ({size})" in result.stdout
    assert plan.files["README.md"] in result.stdout
    assert "loss.png" in plan.files and "adapter_model.safetensors" in plan.files
    assert hub.requests == []


def test_push_delivers_exactly_the_plan(hub, trained_run, tmp_path):
    """A real push: the planned files byte for byte, a valid card, a private repo, a commit named after the run."""
    before = tree_digest(trained_run)
    result = run_cli(hub.url, CANARY, "--run", str(trained_run), "--repo", REPO_ID, "--private", hf_home=tmp_path)
    assert result.returncode == 0, result.stderr
    repo = hub.repo(REPO_ID)
    plan = plan_adapter_push(trained_run, REPO_ID)
    assert repo.files == expected_bytes(plan)
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
            "loss.png", "README.md"} <= set(repo.files)
    assert not any(name.startswith("checkpoints") for name in repo.files)
    card = ModelCard(repo.files["README.md"].decode()).data
    assert card.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (card.library_name, card.pipeline_tag, card.license) == ("peft", "text-generation", "apache-2.0")
    assert {"lora", "kantele"} <= set(card.tags)
    [commit] = repo.commits
    assert trained_run.name in commit.summary
    assert repo.private
    assert f"pushed: {hub.url}/{REPO_ID}/commit/{commit.oid}" in result.stdout
    # The token went to the Hub, as a Bearer header, on every call that needs it -- and nowhere else.
    for path in ("/api/whoami-v2", "/api/repos/create", "/preupload/", "/commit/"):
        assert {r.authorization for r in hub.calls(path)} == {f"Bearer {CANARY}"}
    assert hub.unknown == []
    assert tree_digest(trained_run) == before
    assert files_with_canary(tmp_path) == []  # HF_HOME: no token saved or cached


def test_bad_token_is_a_clear_error(hub, trained_run, tmp_path):
    """An unknown token: exit 2, one line naming the fix, no traceback, nothing created."""
    result = run_cli(hub.url, "hf_NotAKnownToken000000000000000", "--run", str(trained_run), "--repo", REPO_ID,
                     hf_home=tmp_path)
    assert result.returncode == 2
    assert "refused the token (401)" in result.stderr and "settings/tokens" in result.stderr
    assert "Traceback" not in result.stderr and "hf_NotAKnownToken" not in result.stderr
    assert hub.repos == {}


def test_network_down_says_so_and_that_retrying_is_safe(trained_run, tmp_path):
    """No Hub listening: exit 2 at once (the token check doesn't retry), 'can't reach', 'pushing again is safe'."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = run_cli(endpoint, CANARY, "--run", str(trained_run), "--repo", REPO_ID, hf_home=tmp_path)
    assert result.returncode == 2
    assert f"can't reach the Hub at {endpoint}" in result.stderr and "pushing again is safe" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_token_at_all(trained_run, tmp_path):
    """No HF_TOKEN and no saved login: told how to get one before any network call."""
    result = run_cli(f"http://127.0.0.1:{free_port()}", None, "--run", str(trained_run), "--repo", REPO_ID,
                     hf_home=tmp_path)
    assert result.returncode == 2 and "no Hugging Face token" in result.stderr


# -- the CLI in-process: dataset, token kinds, Hub errors ----------------------------------------------------------


def test_dataset_push_creates_dataset_repo_linked_from_model_card(online, trained_run, capsys):
    """--dataset: a dataset repo with both splits and a card; the model card lists the dataset; dataset first."""
    code, out, _ = push_main(capsys, "--run", str(trained_run), "--repo", REPO_ID, "--dataset", DATASET_ID)
    assert code == 0
    data = online.repo(DATASET_ID, "dataset")
    assert data.files == expected_bytes(plan_dataset_push(trained_run, DATASET_ID))
    assert set(data.files) == {"data/train.jsonl", "data/validation.jsonl", "README.md"}
    assert data.files["data/train.jsonl"] == (trained_run / "data" / "train.jsonl").read_bytes()
    assert DatasetCard(data.files["README.md"].decode()).data.license == "apache-2.0"
    model_card = ModelCard(online.repo(REPO_ID).files["README.md"].decode())
    assert model_card.data.datasets == [DATASET_ID]
    # The dataset lands before the model whose card links to it.
    commits = [r.path for r in online.calls("/commit/")]
    assert commits == [f"/api/datasets/{DATASET_ID}/commit/main", f"/api/models/{REPO_ID}/commit/main"]
    assert out.count("pushed: ") == 2
    assert len(online.calls("/api/whoami-v2")) == 1  # the Hub rate-limits whoami: one call per push


def test_merged_push_uploads_a_full_model_with_its_own_card(online, trained_run, capsys):
    """--merged: USER/NAME-merged gets the merged weights, config, tokenizer and a transformers card; the
    merge happens in a scratch folder, never in the run folder."""
    before = tree_digest(trained_run)
    code, out, _ = push_main(capsys, "--run", str(trained_run), "--repo", REPO_ID, "--merged")
    assert code == 0, out
    merged = online.repo(REPO_ID + "-merged")
    assert {"config.json", "tokenizer.json", "README.md"} <= set(merged.files)
    assert [name for name in merged.files if name.startswith("model") and name.endswith(".safetensors")]
    card = ModelCard(merged.files["README.md"].decode())
    assert card.data.library_name == "transformers" and card.data.base_model_relation == "finetune"
    assert "PeftModel" not in card.text and f'from_pretrained("{REPO_ID}-merged")' in card.text
    assert "adapter_config.json" not in merged.files
    assert set(online.repo(REPO_ID).files) == set(plan_adapter_push(trained_run, REPO_ID).files)
    assert tree_digest(trained_run) == before


@pytest.mark.parametrize("token, repo_id, expected", [
    (READ_TOKEN, REPO_ID, ["read-only token", "'write' role", "settings/tokens"]),
    (FINE_TOKEN, REPO_ID, ["can't write to 'alice'", "'repo.write' on 'alice'"]),
    (CANARY, "bob/his-adapter", ["can't write to 'bob'", "your own namespace"]),
], ids=["read-only", "fine-grained-without-write", "someone-elses-namespace"])
def test_token_without_write_access_is_refused_before_upload(online, trained_run, capsys, monkeypatch, token,
                                                             repo_id, expected):
    """Tokens that may not write there: exit 2 with the fix, after only the whoami call."""
    monkeypatch.setenv("HF_TOKEN", token)
    code, _, err = push_main(capsys, "--run", str(trained_run), "--repo", repo_id)
    assert code == 2
    for fragment in expected:
        assert fragment in err
    assert {r.path for r in online.requests} <= {"/api/whoami-v2", "/api/agent-harnesses"}


def whoami_answer(role: str, scoped: list[dict] = (), orgs: list[dict] = ()) -> dict:
    """A /api/whoami-v2 body for Alice (capitalised, as an account name may be)."""
    return {"name": "Alice", "orgs": list(orgs),
            "auth": {"accessToken": {"role": role, "fineGrained": {"global": [], "scoped": list(scoped)}}}}


def test_write_access_rules():
    """Case-insensitive namespaces, repo-scoped fine-grained tokens, read-only org members."""
    def scope(kind, name, *permissions):
        return {"entity": {"type": kind, "name": name}, "permissions": list(permissions)}

    check_write_access("alice/x", "t", who=whoami_answer("fineGrained", [scope("user", "alice", "repo.write")]))
    check_write_access("Alice/x", "t", who=whoami_answer("write"))
    repo_scoped = whoami_answer("fineGrained", [scope("model", "Alice/x", "repo.write")])
    check_write_access("Alice/x", "t", who=repo_scoped)
    for repo_id, repo_type in (("Alice/y", "model"), ("Alice/x", "dataset")):
        with pytest.raises(HubError, match="can't write to 'Alice'"):
            check_write_access(repo_id, "t", repo_type, who=repo_scoped)
    orgs = [{"name": "readers", "roleInOrg": "read"}, {"name": "writers", "roleInOrg": "write"}]
    check_write_access("writers/x", "t", who=whoami_answer("write", orgs=orgs))
    with pytest.raises(HubError, match="can't write to 'readers'"):
        check_write_access("readers/x", "t", who=whoami_answer("write", orgs=orgs))


def test_fine_grained_token_writes_where_it_has_repo_write(online):
    """The same fine-grained token may push to the org it has 'repo.write' on."""
    [url] = push_plans([small_plan(f"{ORG}/adapter")], token=FINE_TOKEN)
    assert online.repo(f"{ORG}/adapter").files["notes.txt"] == b"hello\n"
    assert url.endswith(online.repo(f"{ORG}/adapter").commits[-1].oid)


@pytest.mark.parametrize("path, status, code, expected", [
    ("/commit/", 403, None, ["(403)", "The Hub said: injected failure"]),
    ("/preupload/", 404, "RepoNotFound", ["not found (404)", "check the repository id"]),
    ("/api/whoami-v2", 429, None, ["rate-limited (429)"]),
    ("/api/repos/create", 401, None, ["refused the token (401)"]),
    ("/api/validate-yaml", 400, None, ["ValueError: Invalid metadata in README.md"]),
], ids=["403-on-commit", "404-on-upload", "429-on-whoami", "401-on-create", "400-on-card"])
def test_hub_errors_are_clear_and_change_nothing(online, trained_run, capsys, path, status, code, expected):
    """An HTTP error at any step: exit 2, a message with the fix, no traceback, no commit, run folder untouched."""
    before = tree_digest(trained_run)
    online.fail_next(path, status, code=code)
    exit_code, _, err = push_main(capsys, "--run", str(trained_run), "--repo", REPO_ID)
    assert exit_code == 2
    for fragment in expected:
        assert fragment in err
    assert "Traceback" not in err and "can't reach" not in err  # only a network failure says that
    assert all(not repo.commits for repo in online.repos.values())
    assert tree_digest(trained_run) == before


@pytest.mark.parametrize("repo_id", ["not-a-repo", "alice/bad name", "a/b/c", "alice/x--y", "/name"])
def test_malformed_repo_id_is_refused_without_a_hub_call(online, trained_run, capsys, repo_id):
    """A malformed id fails in planning, dry run included, before any request."""
    for extra in ((), ("--dry-run",)):
        code, _, err = push_main(capsys, "--run", str(trained_run), "--repo", repo_id, *extra)
        assert code == 2 and "is not a repository id" in err
    code, _, err = push_main(capsys, "--run", str(trained_run), "--repo", REPO_ID, "--dataset", repo_id)
    assert code == 2 and "is not a repository id" in err
    assert online.requests == []


def test_offline_mode_is_named(online, trained_run, capsys, monkeypatch):
    """HF_HUB_OFFLINE=1 (set for the app's offline use): the message says to unset it."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, _, err = push_main(capsys, "--run", str(trained_run), "--repo", REPO_ID)
    assert code == 2 and "HF_HUB_OFFLINE is set" in err


# -- retrying, idempotence, privacy ----------------------------------------------------------------------------


def test_failed_push_changes_nothing_and_retry_succeeds(online, trained_run, capsys):
    """403 on the commit, then a retry: the run folder never changes; the second try delivers the plan."""
    before = tree_digest(trained_run)
    online.fail_next("/commit/", 403)
    assert push_main(capsys, "--run", str(trained_run), "--repo", REPO_ID)[0] == 2
    assert tree_digest(trained_run) == before and online.repo(REPO_ID).files == {}
    assert push_main(capsys, "--run", str(trained_run), "--repo", REPO_ID)[0] == 0
    assert online.repo(REPO_ID).files == expected_bytes(plan_adapter_push(trained_run, REPO_ID))
    assert tree_digest(trained_run) == before


def test_pushing_twice_is_idempotent(online, trained_run, capsys):
    """Same run twice: no empty second commit; a changed card re-commits only the card."""
    args = ("--run", str(trained_run), "--repo", REPO_ID)
    assert push_main(capsys, *args)[0] == 0
    first = dict(online.repo(REPO_ID).files)
    assert push_main(capsys, *args)[0] == 0
    repo = online.repo(REPO_ID)
    assert repo.files == first and len(repo.commits) == 1  # huggingface_hub skips files whose oid matches
    assert push_main(capsys, *args, "--dataset", DATASET_ID)[0] == 0  # the card now links the dataset
    assert len(repo.commits) == 2 and set(repo.commits[-1].added) == {"README.md"}
    assert repo.files["README.md"].decode() == plan_adapter_push(trained_run, REPO_ID, DATASET_ID).files["README.md"]


def test_private_push_into_existing_public_repo_is_refused(online):
    """--private can't make an existing public repo private: refuse before uploading anything."""
    online.add_repo(REPO_ID, private=False)
    with pytest.raises(HubError, match="already exists and is public"):
        push_plans([small_plan(REPO_ID)], private=True)
    assert online.repo(REPO_ID).commits == []


def test_push_without_private_leaves_visibility_to_the_hub(online):
    """Not asking for private sends no visibility, so the account's default applies to a new repo."""
    push_plans([small_plan(REPO_ID)])
    [create] = online.calls("/api/repos/create")
    assert b"visibility" not in create.body and not online.repo(REPO_ID).private


# -- secrets -------------------------------------------------------------------------------------------------


def test_token_never_leaks_into_errors_even_when_the_hub_echoes_it(online, trained_run):
    """A Hub error message that quotes the token: the HubError and its whole traceback are scrubbed."""
    before = tree_digest(trained_run)
    online.fail_next("/commit/", 403, message=f"token {CANARY} may not write here")
    with pytest.raises(HubError) as caught:
        push_plans([plan_adapter_push(trained_run, REPO_ID)], token=CANARY)
    assert "***" in str(caught.value)
    no_canary(str(caught.value), "".join(traceback.format_exception(caught.value)))
    assert tree_digest(trained_run) == before
    assert files_with_canary(trained_run) == []


def test_pushed_cards_hold_no_token(online, trained_run):
    """The cards that reach the Hub don't contain the token (nor does any pushed file)."""
    push_plans([plan_adapter_push(trained_run, REPO_ID, DATASET_ID), plan_dataset_push(trained_run, DATASET_ID)])
    for repo in online.repos.values():
        for content in repo.files.values():
            assert CANARY.encode() not in content


# -- card validation -------------------------------------------------------------------------------------------


def test_validate_card_accepts_the_rendered_cards(trained_run):
    """The cards Kantele renders pass its own checks."""
    validate_card(plan_adapter_push(trained_run, REPO_ID).files["README.md"])
    validate_card(plan_dataset_push(trained_run, DATASET_ID).files["README.md"], "dataset")


@pytest.mark.parametrize("card, message", [
    ("---\nbase_model: [unclosed\nlicense: mit\n---\n# x\n", "not valid YAML"),
    ("---\n- just\n- a list\n---\n# x\n", "not valid YAML"),
    (CARD.replace("base_model: HuggingFaceTB/SmolLM2-135M-Instruct\n", ""), "lacks base_model"),
    ("# no metadata at all\n", "lacks base_model, library_name, pipeline_tag, license"),
], ids=["broken-yaml", "yaml-not-a-mapping", "no-base-model", "no-front-matter"])
def test_validate_card_rejects_bad_metadata(card, message):
    """Broken or incomplete metadata is a HubError before anything is sent."""
    with pytest.raises(HubError, match=message):
        validate_card(card)
