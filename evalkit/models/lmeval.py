"""lm-eval's registered models as an evalkit backend: `lmeval:MODEL,ARGS`.

    evalkit run --model lmeval:hf,pretrained=/models/tiny,device=cpu --task addition
    evalkit run --model "lmeval:local-completions,base_url=http://127.0.0.1:8000/v1/completions,model=m"
    evalkit run --model lmeval:vllm,pretrained=/models/x,gpu_memory_utilization=0.8

MODEL is a name lm-eval registers (what `lm-eval run --model MODEL` takes) and ARGS its
`--model_args` string, unchanged (`key=value` pairs separated by commas, parsed by lm-eval).
`--batch-size` and `--device` are passed as lm-eval's CLI passes them, unless ARGS sets them;
Hugging Face models (`hf`, `hf-auto`, `huggingface` and subclasses) default to device=cpu, as
evalkit's own `hf:` does (lm-eval's default there is cuda).

Each prompt becomes an `lm_eval.api.instance.Instance("generate_until", args=(prompt,
{"until": stop, "max_gen_toks": N, "do_sample": T > 0, "temperature": T}))` and the model's
`generate_until` answers them all in one call (the model batches and sorts them itself). Outputs
are cut at the stop strings here too: not every backend honours `until` exactly. Whitespace-only stop
strings ("\n") are applied only here, never sent as `until`: lm-eval would cut an answer that opens
with a newline to nothing, where evalkit's rule is that leading whitespace never ends an answer.

Chat mode (a prompt that is a list of messages): the model's own `apply_chat_template` (lm-eval's
chat template support, as `lm-eval run --apply_chat_template` uses it) renders the prompt; a model
without one (e.g. `local-completions`) is refused with a `ConfigError`.

Identity: `lmeval:MODEL,ARGS`, plus `#hf:<digest>` over the loaded weights, config and tokenizer
when the model is a local Hugging Face folder of at most 1 GiB of weights (hashing is ~1.8 GB/s),
else `#files:<digest>` over the folder's file names, sizes and modification times. Greedy outputs
equal evalkit's `hf:` backend on the same folder; sampled ones depend on lm-eval's batching (the
whole call is seeded, not each row), unlike `hf:`.

Offline: `ensure_offline()` runs before lm-eval is imported.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.core.chat import as_messages
from evalkit.core.extract import cut_at_stop
from evalkit.errors import ConfigError
from evalkit.models.base import GenerationStats, check_generate_args

if TYPE_CHECKING:
    from evalkit.core.chat import Message, Prompt
    from evalkit.core.task import GenerationConfig

#: In-memory weights up to this size are hashed for the identity; larger folders use file stats.
HASH_WEIGHTS_LIMIT = 1 << 30


def parse_lmeval_spec(rest: str) -> tuple[str, str]:
    """`MODEL,ARGS` (what follows `lmeval:`) -> (MODEL, ARGS)."""
    model, _, args = rest.partition(",")
    model = model.strip()
    if not model or "=" in model:
        raise ConfigError(f"expected lmeval:MODEL,ARGS (e.g. lmeval:hf,pretrained=/path,device=cpu), got "
                          f"'lmeval:{rest}'", field="--model")
    return model, args.strip()


def _is_hf(cls: type) -> bool:
    return any(c.__name__ == "HFLM" for c in inspect.getmro(cls))


def _files_digest(folder: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


class LMEvalBackend:
    """An lm-eval LM (any registered model) as a `ModelBackend`.

    Args:
        model: the registered model name (`hf`, `vllm`, `local-completions`, ...).
        model_args: lm-eval's `--model_args` string.
        batch_size: passed as lm-eval's CLI does (unless `model_args` sets it).
        device, dtype: likewise, when given.
        lm: an already built lm-eval LM to wrap instead of building one (then `model` and
            `model_args` only name it).
    """

    def __init__(self, model: str, model_args: str = "", *, batch_size: int | str | None = 64,
                 device: str | None = None, dtype: str | None = None, lm: Any = None):
        from evalkit.lmeval import ensure_offline

        ensure_offline()
        self.model_name, self.model_args = model, model_args
        self._stats = GenerationStats()
        self._identity: str | None = None
        from lm_eval.utils import simple_parse_args_string

        self.args = simple_parse_args_string(model_args)
        if lm is None:
            from lm_eval.api.registry import get_model

            try:
                cls = get_model(model)
            except ValueError as exc:
                raise ConfigError(f"lm-eval has no model {model!r}: {exc}", field="--model") from None
            extra: dict[str, Any] = {}
            if "batch_size" not in self.args and batch_size is not None:
                extra["batch_size"] = batch_size
            if "device" not in self.args and (device or _is_hf(cls)):
                extra["device"] = device or "cpu"
            if "dtype" not in self.args and dtype:
                extra["dtype"] = dtype
            lm = cls.create_from_arg_string(model_args, extra)
        self.lm = lm
        self._takes_disable_tqdm = "disable_tqdm" in inspect.signature(lm.generate_until).parameters

    # -- identity ---------------------------------------------------------------------
    @property
    def identity(self) -> str:
        """`lmeval:MODEL,ARGS[#fingerprint]`; computed once (the loaded weights do not change)."""
        if self._identity is None:
            base = f"lmeval:{self.model_name},{self.model_args}"
            fp = self._fingerprint()
            self._identity = f"{base}#{fp}" if fp else base
        return self._identity

    def _fingerprint(self) -> str | None:
        pretrained = self.args.get("pretrained")
        folder = Path(str(pretrained)).expanduser() if isinstance(pretrained, str) else None
        if folder is None or not folder.is_dir():
            return None
        model = getattr(self.lm, "model", None)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(model, torch.nn.Module):
            size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            if size <= HASH_WEIGHTS_LIMIT:
                from evalkit.models.hf import config_digest, tokenizer_digest, weights_digest

                h = hashlib.blake2b(digest_size=16)
                parts = [weights_digest(model), config_digest(model)]
                tokenizer = getattr(self.lm, "tokenizer", None)
                if tokenizer is not None:
                    parts.append(tokenizer_digest(tokenizer))
                for part in parts:
                    h.update(part.encode())
                return f"hf:{h.hexdigest()}"
        return f"files:{_files_digest(folder)}"

    @property
    def last_stats(self) -> GenerationStats:
        return self._stats

    @property
    def device(self) -> Any:
        return getattr(self.lm, "device", None)

    @property
    def chat_template_id(self) -> str:
        """A fingerprint of the model tokenizer's chat template, when it has a tokenizer (`ChatTemplated`)."""
        from evalkit.models.hf_chat import chat_template_id

        return chat_template_id(getattr(self.lm, "tokenizer", None))

    def render(self, messages: Sequence[Message]) -> str:
        """A chat prompt as the model's `apply_chat_template` writes it (with the assistant's opening).

        Raises:
            ConfigError: the lm-eval model has no chat template support.
        """
        checked = [dict(m) for m in as_messages(messages)]
        try:
            return str(self.lm.apply_chat_template(checked, add_generation_prompt=True))
        except NotImplementedError:
            raise ConfigError(f"lm-eval model {self.model_name!r} has no chat template support: run without "
                              "--chat", field="--chat") from None

    # -- generation -------------------------------------------------------------------
    def requests(self, prompts: Sequence[Prompt], config: GenerationConfig, num_samples: int = 1) -> list[Any]:
        """The lm-eval Instances for `prompts` (each repeated `num_samples` times when sampling); chat
        messages are rendered first (`render`)."""
        from lm_eval.api.instance import Instance

        contexts = [p if isinstance(p, str) else self.render(p) for p in prompts]
        sampling = config.temperature > 0
        until = [s for s in config.stop if s.strip()]  # whitespace-only stops are applied here (module doc)
        kwargs: dict[str, Any] = {"until": until, "max_gen_toks": config.max_new_tokens,
                                  "do_sample": sampling, "temperature": float(config.temperature)}
        if sampling and config.top_p < 1.0:
            kwargs["top_p"] = config.top_p
        reps = num_samples if sampling else 1
        return [Instance(request_type="generate_until", doc={}, arguments=(p, dict(kwargs)), idx=0,
                         metadata=("evalkit", i, reps))
                for i, p in enumerate(contexts) for _ in range(reps)]

    def generate(self, prompts: Sequence[Prompt], config: GenerationConfig, *, seed: int = 0,
                 num_samples: int = 1) -> list[list[str]]:
        """See `ModelBackend.generate`. Raises ValueError when `config.max_new_tokens` is None."""
        check_generate_args(config, num_samples)
        start = time.perf_counter()
        prompts = list(prompts)
        sampling = config.temperature > 0
        instances = self.requests(prompts, config, num_samples)
        kw = {"disable_tqdm": True} if self._takes_disable_tqdm else {}
        torch = sys.modules.get("torch")
        if instances and sampling and torch is not None:
            with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG alone
                torch.manual_seed(seed)
                texts = self.lm.generate_until(instances, **kw)
        else:
            texts = self.lm.generate_until(instances, **kw) if instances else []
        texts = [cut_at_stop(t, config.stop) for t in texts]
        reps = num_samples if sampling else 1
        out = [texts[i * reps:(i + 1) * reps] for i in range(len(prompts))]
        if not sampling:
            out = [row * num_samples for row in out]
        self._stats = GenerationStats(prompts=len(prompts), samples=len(prompts) * num_samples,
                                      seconds=time.perf_counter() - start, batches=1 if instances else 0)
        return out


__all__ = ["LMEvalBackend", "parse_lmeval_spec"]
