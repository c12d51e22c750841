"""The policy: a small Llama-style HF model and a tokenizer over exactly the task vocabulary, built from scratch.

``save_policy`` writes a directory that transformers and vLLM both load with no network: safetensors weights,
``config.json``, ``generation_config.json`` (``<eoe>`` eos, ``<pad>`` pad), the tokenizer files and ``task.json``
(p and operators, so every consumer rebuilds the same :class:`Vocab`).

No filesystem is shared between the driver, learner workers and rollout actors on a cluster: a policy directory
crosses hosts as ``pack_policy_dir`` bytes (through the object store) and ``materialize_policy`` writes it back to
a local directory on the receiving side.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlvr_ray.config import ModelConfig
from rlvr_ray.task.vocab import Vocab

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

TASK_FILE = "task.json"


def build_tokenizer(vocab: Vocab) -> PreTrainedTokenizerFast:
    """Whitespace word-level tokenizer whose ids are exactly the vocab ids; encode adds no special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab=dict(vocab.token_to_id), unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<boe>",
        eos_token="<eoe>",
        pad_token="<pad>",
        unk_token="<pad>",
        add_bos_token=False,
        add_eos_token=False,
    )
    tokenizer.padding_side = "left"
    return tokenizer


def build_model(cfg: ModelConfig, vocab: Vocab, seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised Llama decoder sized by ``cfg`` (fp32, untied embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab.size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=vocab.boe,
        eos_token_id=vocab.eoe,
        pad_token_id=vocab.pad,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = vocab.eoe
    model.generation_config.pad_token_id = vocab.pad
    model.generation_config.bos_token_id = vocab.boe
    return model


def save_policy(model: LlamaForCausalLM, vocab: Vocab, out_dir: str | Path) -> Path:
    """Save weights (safetensors), configs, tokenizer and task.json to ``out_dir``; returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = vocab.eoe
    model.generation_config.pad_token_id = vocab.pad
    model.save_pretrained(out, safe_serialization=True)
    build_tokenizer(vocab).save_pretrained(out)
    (out / TASK_FILE).write_text(json.dumps({"p": vocab.p, "operators": list(vocab.operators)}))
    return out


def load_vocab(model_dir: str | Path) -> Vocab:
    """The task vocabulary a saved policy was built for."""
    path = Path(model_dir) / TASK_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: {model_dir} is not a policy directory written by rlvr_ray")
    meta = json.loads(path.read_text())
    return Vocab(int(meta["p"]), tuple(meta["operators"]))


def load_policy(model_dir: str | Path) -> LlamaForCausalLM:
    """Load a saved policy in fp32 on CPU, in eval mode."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    return model


def count_parameters(model: LlamaForCausalLM) -> int:
    return sum(p.numel() for p in model.parameters())


_MATERIALIZED: dict[str, str] = {}  # content hash -> local directory, one copy per process


def pack_policy_dir(path: str | Path) -> dict[str, bytes]:
    """A saved policy directory as ``{relative path: bytes}``: what crosses hosts through the object store."""
    root = Path(path)
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"{root} is not a policy directory (no config.json)")
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def packed_digest(packed: Mapping[str, bytes]) -> str:
    """sha256 over the names and contents of a packed directory (order-independent)."""
    digest = hashlib.sha256()
    for name in sorted(packed):
        digest.update(name.encode() + b"\0" + hashlib.sha256(packed[name]).digest())
    return digest.hexdigest()


def write_packed(packed: Mapping[str, bytes], out_dir: str | Path) -> Path:
    """Write a packed directory to ``out_dir`` (created; existing files of the same names are replaced)."""
    out = Path(out_dir)
    for name, data in packed.items():
        target = out / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise ValueError(f"packed policy entry {name!r} escapes its directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return out


PolicySource = str | Path | Mapping[str, bytes] | Any
"""Where a process gets a policy from: a local directory, a packed policy (``pack_policy_dir``) or an ObjectRef to
one (Any: Ray's ObjectRef is untyped)."""


def materialize_policy(source: PolicySource) -> str:
    """A local policy directory for ``source``: a path is returned as is; a packed dict (or an object ref to one) is
    written once per process into a temporary directory, keyed by its content, and that path is returned."""
    if isinstance(source, (str, Path)):
        return str(source)
    if not isinstance(source, Mapping):
        import ray

        source = ray.get(source)
        assert isinstance(source, Mapping), f"policy object ref holds {type(source).__name__}, not a packed dict"
    key = packed_digest(source)
    if key not in _MATERIALIZED or not Path(_MATERIALIZED[key], "config.json").is_file():
        _MATERIALIZED[key] = str(write_packed(source, tempfile.mkdtemp(prefix=f"rlvr_policy_{key[:12]}_")))
    return _MATERIALIZED[key]
