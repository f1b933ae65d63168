"""Shared fixtures: paths to the repo's tasks and test fixtures, and a CLI runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# See evalkit/cli/__init__.py: spinning OpenMP waits make torch crawl when pytest-xdist workers share cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# A suite started in the background of a script (`cmd &` without job control) inherits SIGINT ignored, and
# so would every evalkit process the tests start: the Ctrl-C tests would fail for the launcher's sake (seen:
# five of them, in a CI rehearsal started so). A handler here is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "tasks"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def run_cli():
    """Run `python -m evalkit ARGS` in a real subprocess; returns CompletedProcess (text)."""

    def run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
        return subprocess.run([sys.executable, "-m", "evalkit", *args], cwd=cwd or REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)

    return run


# -- a byte-level BPE tokenizer with a chat template (tests of chat rendering and of training data) --------
#: ChatML as SmolLM2/Qwen write it: the assistant's opening ends in a newline, each turn in <|im_end|>\n.
CHATML_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                   "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
BPE_CORPUS = ("What is 12+34?", "The answer is 46.", "system", "user", "assistant", "Sort: 3 1 2", "Be brief.",
              "Answer with the number only.", "bal: bb", "cat: cc", "hello world", " 1234567890 ", "A: 42")


def bpe_chat_tokenizer(template: str | None = CHATML_TEMPLATE, eos: str = "<|endoftext|>",
                       corpus: tuple[str, ...] = BPE_CORPUS, vocab_size: int = 320):
    """A byte-level BPE (GPT-2 style: any text, exact round trips) trained here: BOS <s> added to raw text,
    EOS `eos`, ChatML's <|im_start|> and <|im_end|> as special tokens, `template` as its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(list(corpus) * 5, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token=eos, pad_token="<pad>")
    tok.chat_template = template
    return tok


# -- the real model (slow tests) ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The SmolLM2-135M-Instruct folder `evalkit models get smollm2-135m-instruct` wrote (EVALKIT_HOME), or a
    loud skip — CI gets the model first with the README's command, so there the tests run."""
    from evalkit.models.store import is_complete, models_dir

    path = models_dir() / "smollm2-135m-instruct"
    if not is_complete(path):
        if os.environ.get("CI") == "true":  # .ci/run gets the model first: missing there is a fault, not a skip
            pytest.fail(f"SmolLM2-135M-Instruct is not cached at {path} though CI got it (.ci/run)")
        pytest.skip(f"SKIPPED LOUDLY: SmolLM2-135M-Instruct is not cached at {path}; get it with "
                    "`evalkit models get smollm2-135m-instruct` to run the real-model tests")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and busy cores make OpenMP threads crawl (a module's tests
    run on one torch thread: `pytestmark = pytest.mark.usefixtures("one_torch_thread")`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
