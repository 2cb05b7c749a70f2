"""How much a Hub download would write to this machine's disk, asked of the Hub before the download starts.

A visitor of a shared app names the repo, and a 70B model is ~140 GB: it would fill the Space's disk and hold the
download for hours. The Hub lists every file's size (model_info with files_metadata); the files counted are the ones
the download's own allow_patterns pick. The download is then pinned to the commit that was measured, so files
pushed in between can't slip past. Only a cap in force (caps().model_gb / adapter_mb) makes the extra Hub call.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuning.guards.caps import CapError, check_cap

UNIT_BYTES = {"GB": 1e9, "MB": 1e6}


@dataclass(frozen=True)
class Pinned:
    """What the download may fetch: the measured commit, or nothing new when the Hub could not be asked."""

    revision: str | None  # a ResolvedRevision once measured; the revision as asked otherwise
    cache_only: bool = False  # the Hub didn't answer: only files already in the cache may serve
    why: BaseException | None = None  # why the Hub didn't answer (the cause a failed cache look-up reports)


def pin_under_cap(repo_id: str, revision: str | None, patterns: list[str], token: bool | str | None,
                  cap: float | None, unit: str, fix: str) -> Pinned:
    """The revision to download once the files `patterns` pick there are within cap (in unit: 'GB' or 'MB');
    CapError naming the size and the fix if not. No cap: no Hub call. The Hub's own 'not found' errors pass
    through, for the caller to explain as it does a failed download's."""
    import httpx2
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RevisionResolutionError

    if cap is None or constants.HF_HUB_OFFLINE:  # offline nothing is downloaded: the cache serves, or nothing does
        return Pinned(revision)
    api = HfApi()
    try:
        # resolve_revision also records branch -> commit in the cache, so the model is found there offline later.
        pinned = api.resolve_revision(repo_id, revision=revision, token=token)
        info = api.model_info(repo_id, revision=pinned.resolved, files_metadata=True, token=token)
    except (RevisionResolutionError, OfflineModeIsEnabled, httpx2.TransportError) as exc:
        return Pinned(revision, cache_only=True, why=exc.__cause__ or exc)  # resolve_revision wraps the real reason
    except HfHubHTTPError as exc:
        if exc.response is None or exc.response.status_code < 500:  # the Hub answered: not found, gated, ...
            raise
        return Pinned(revision, cache_only=True, why=exc)  # the Hub is down: as unreachable
    size = download_bytes(info.siblings or [], patterns)
    what = f"the download of '{repo_id}' ({unit})"
    if size is None:  # fail closed: what isn't measured isn't downloaded on a capped app
        raise CapError(f"{what}: the Hub did not say how large its files are, so this app can't check them "
                       f"against its limit of {cap:,.4g} -- {fix}")
    check_cap(size / UNIT_BYTES[unit], cap, what, fix)
    return Pinned(pinned)


def download_bytes(siblings, patterns: list[str]) -> int | None:
    """Bytes of the files snapshot_download(allow_patterns=patterns) would fetch; None when a size is missing."""
    from huggingface_hub.utils import filter_repo_objects

    picked = filter_repo_objects(siblings, allow_patterns=patterns, key=lambda sibling: sibling.rfilename)
    sizes = [sibling.lfs.size if sibling.lfs else sibling.size for sibling in picked]
    return None if None in sizes else sum(sizes)


def snapshot(repo_id: str, pinned: Pinned, **kwargs) -> str:
    """snapshot_download of the pinned revision (from the cache alone when the Hub couldn't be asked)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, revision=pinned.revision, local_files_only=pinned.cache_only, **kwargs)
    except LocalEntryNotFoundError as exc:
        if pinned.why is None or exc.__cause__ is not None:
            raise
        raise exc from pinned.why  # say why the Hub wasn't asked, as a download that found it unreachable does
