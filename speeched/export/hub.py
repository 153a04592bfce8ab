"""`--push-to-hub REPO`: upload an export directory with huggingface_hub (create the repo if needed)."""

from __future__ import annotations

from pathlib import Path

from speeched.export.common import ExportError


def check_repo_id(repo_id: str) -> None:
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ExportError(f"--push-to-hub {repo_id!r} is not OWNER/NAME (e.g. my-org/speeched-digits)")


def push_to_hub(folder: Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create `repo_id` (a model repo; kept if it exists) and upload `folder` as one commit; returns its URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError as err:  # a transformers dependency, so normally present
        raise ExportError("--push-to-hub needs huggingface_hub: pip install huggingface_hub") from err
    check_repo_id(repo_id)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message=f"speeched export ({folder.name})",
        )
    except OSError as err:  # requests' ConnectionError and huggingface_hub's HTTP errors are OSErrors
        raise ExportError(
            f"could not upload {folder} to {repo_id}: {err}. The export itself is complete; log in with "
            "`hf auth login` (or set HF_TOKEN) and rerun the upload, or upload the folder by hand"
        ) from err
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")
