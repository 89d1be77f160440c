"""Finding the official Step1X-3D geometry folders and loading their components strictly.

The released checkpoints are the on-disk format: a folder holding `model_index.json`, one
sub-folder per component with `config.json` + `diffusion_pytorch_model.safetensors`, and
`scheduler/scheduler_config.json`. diffusers' own `from_pretrained` only *warns* about missing,
unexpected or mis-shaped weights; a half-initialised 1.3 B model produces garbage meshes without a
word, so every component here refuses to load unless the file matches the model key for key.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from shared.errors import BackendError

MODEL_INDEX = "model_index.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("", "0", "false", "no", "off")


def resolve_folder(location: str | os.PathLike, subfolder: str = "") -> Path:
    """A local folder (`location/subfolder`), or a hub repo id fetched through the hub cache.

    Only `subfolder/*` is downloaded (the texture weights are not needed here). With
    HF_HUB_OFFLINE set nothing is downloaded: a cached snapshot is used or `weights_not_found`
    is raised.
    """
    local = Path(location).expanduser()
    if local.is_dir():
        folder = local / subfolder if subfolder else local
        if not (folder / MODEL_INDEX).is_file():
            raise BackendError("weights_not_found", f"no {MODEL_INDEX} in {folder}")
        return folder
    repo = str(location)
    if repo.count("/") != 1 or repo.startswith((".", "/", "~")):
        raise BackendError("weights_not_found", f"{repo!r} is neither a folder nor a hub repo id")
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(
            repo, allow_patterns=[f"{subfolder}/*"] if subfolder else None, local_files_only=offline()
        )
    except Exception as exc:  # offline miss, network, auth, disk: the user acts on all of them alike
        mode = " (HF_HUB_OFFLINE is set: only the local cache was searched)" if offline() else ""
        raise BackendError("weights_not_found", f"cannot get {repo}/{subfolder}{mode}: {exc}") from None
    folder = Path(snapshot) / subfolder if subfolder else Path(snapshot)
    if not (folder / MODEL_INDEX).is_file():
        raise BackendError("weights_not_found", f"{repo} has no {subfolder}/{MODEL_INDEX}")
    return folder


def read_model_index(folder: Path) -> dict[str, tuple[str | None, str | None]]:
    """Component name -> (library/module, class name) as written by the release."""
    path = folder / MODEL_INDEX
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackendError("weights_not_found", f"{path} is unreadable: {exc}") from None
    return {
        name: (value[0], value[1])
        for name, value in raw.items()
        if not name.startswith("_") and isinstance(value, list) and len(value) == 2
    }


class StrictLoadMixin:
    """`from_pretrained` that accepts a checkpoint only if it matches the model exactly, and the
    inverse, `save_release`, which writes a component folder the release's loader would read.

    Mixed into the diffusers `ModelMixin` classes of this package; safetensors only (no pickle).
    """

    def release_state_dict(self) -> dict:
        """The state dict under the release's key names (overridden where a library renamed them)."""
        return self.state_dict()

    def save_release(self, folder: str | os.PathLike) -> Path:
        """config.json (no `_class_name`, like the release) + diffusion_pytorch_model.safetensors."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in self.config.items() if not k.startswith("_")}
        tmp = folder / "config.json.tmp"
        tmp.write_text(json.dumps(config, indent=2))
        tmp.replace(folder / "config.json")
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.release_state_dict().items()}
        save_file(tensors, str(folder / (WEIGHTS_NAME + ".tmp")))
        (folder / (WEIGHTS_NAME + ".tmp")).replace(folder / WEIGHTS_NAME)
        return folder

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        where = Path(str(pretrained_model_name_or_path)) / (kwargs.get("subfolder") or "")
        kwargs.update(use_safetensors=True, output_loading_info=True)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except BackendError:
            raise
        except OSError as exc:
            if (where / WEIGHTS_NAME).is_file():  # there, but unreadable: truncated or not safetensors
                raise BackendError("weights_not_found", f"{cls.__name__}: {where / WEIGHTS_NAME} is damaged: {exc}") from None
            raise BackendError("weights_not_found", f"{cls.__name__}: cannot load {where}: {exc}") from None
        except Exception as exc:  # safetensors header/size errors, shape errors while assigning
            detail = str(exc).split(" If you want to instead")[0]  # drop diffusers' fine-tuning advice
            raise BackendError(
                "weights_not_found", f"{cls.__name__}: {where} is damaged or does not fit this model: {detail}"
            ) from None
        problems = []
        if info["missing_keys"]:
            problems.append(f"missing {len(info['missing_keys'])} keys, e.g. {sorted(info['missing_keys'])[:3]}")
        if info["unexpected_keys"]:
            problems.append(
                f"{len(info['unexpected_keys'])} unexpected keys, e.g. {sorted(info['unexpected_keys'])[:3]}"
            )
        if info["mismatched_keys"]:
            key, found, expected = info["mismatched_keys"][0]
            problems.append(f"{len(info['mismatched_keys'])} wrong shapes, e.g. {key}: {found} vs {expected}")
        if info["error_msgs"]:
            problems.append("; ".join(info["error_msgs"][:2]))
        if problems:
            raise BackendError("weights_not_found", f"{cls.__name__}: {where} does not match: {'; '.join(problems)}")
        return model
