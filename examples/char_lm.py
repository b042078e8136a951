"""A character-level language model as a study plug-in: the model, the dataset and the task in one
file to copy. Run it (from the repository root):

    python -m study --task examples/char_lm.py:NextToken --model examples/char_lm.py:build \
        --dataset examples/char_lm.py:corpus --stack workers=2,amp=bf16,compile,fused_optim,ddp=2 \
        --steps 20 --warmup 3

- ``build(num_classes, **kw)`` — a small GPT: token + position embeddings, BLOCKS pre-norm
  transformer blocks with causal self-attention, a linear head over the vocabulary;
- ``corpus(cfg=None)`` — (train, val, classes): windows of CONTEXT characters of the Python
  standard library's own source (read from disk, nothing downloaded) and the same windows shifted by
  one, the next character at every position; classes are the vocabulary;
- ``NextToken`` — the task: next-token cross-entropy; its metric is perplexity and token accuracy;
  a sample is a token, so the ladder's samples/s read tokens/s.

Every stage process imports this file again by its path, so everything here is at module level.
"""
from __future__ import annotations

import math
import sysconfig
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from study.train.tasks import Metric, Task

CONTEXT = 64  # characters a model sees
WIDTH = 64  # d_model
HEADS = 4
BLOCKS = 2
CORPUS_BYTES = 400_000  # of the standard library's source: about 6,000 windows
VAL_SHARE = 0.1
# Printable ASCII plus newline; anything else reads as "?".
VOCAB = ["\n"] + [chr(c) for c in range(32, 127)]


# --- the model -------------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(c, dim=2)
        q, k, v = (z.view(n, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(n, t, c))
        return x + self.mlp(self.norm2(x))


class CharGPT(nn.Module):
    def __init__(self, vocab: int, context: int = CONTEXT, width: int = WIDTH, heads: int = HEADS,
                 blocks: int = BLOCKS) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(blocks)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(N, T) token ids → (N, T, vocab) logits of the next token at every position."""
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.token(idx) + self.position(pos)
        return self.head(self.norm(self.blocks(x)))


def build(num_classes: int, **kw: Any) -> nn.Module:
    """The model for a vocabulary of `num_classes` tokens (study passes task and image_size too: unused)."""
    return CharGPT(num_classes)


# --- the dataset -----------------------------------------------------------------------------------
def read_text(limit: int = CORPUS_BYTES) -> str:
    """The first `limit` characters of the standard library's top-level .py files, in name order:
    the same text on every call and in every process of one Python installation."""
    folder = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for path in sorted(folder.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size >= limit:
            break
    return "".join(parts)[:limit]


def encode(text: str) -> torch.Tensor:
    index = {ch: i for i, ch in enumerate(VOCAB)}
    unknown = index["?"]
    return torch.tensor([index.get(ch, unknown) for ch in text], dtype=torch.long)


class Windows(Dataset):
    """Item i: (CONTEXT tokens from i * CONTEXT, the CONTEXT tokens one further) — input and targets."""

    def __init__(self, tokens: torch.Tensor, context: int = CONTEXT) -> None:
        self.tokens, self.context = tokens, context
        self.num_classes = len(VOCAB)

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.context

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.context
        chunk = self.tokens[start:start + self.context + 1]
        return chunk[:-1], chunk[1:]


def corpus(cfg: Any = None) -> tuple[Windows, Windows, list[str]]:
    """(train, val, classes): the text's first 90 % and its last 10 %, and the vocabulary."""
    tokens = encode(read_text())
    cut = int(len(tokens) * (1 - VAL_SHARE))
    return Windows(tokens[:cut]), Windows(tokens[cut:]), list(VOCAB)


# --- the task --------------------------------------------------------------------------------------
class Perplexity(Metric):
    name = "perplexity"

    def __init__(self) -> None:
        self.stats = torch.zeros(3, dtype=torch.float64)  # summed NLL, correct tokens, tokens

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.detach().float().flatten(0, 1)
        target = target.detach().flatten()
        nll = F.cross_entropy(logits, target, reduction="sum")
        correct = (logits.argmax(dim=1) == target).sum()
        self.stats += torch.tensor([nll.item(), correct.item(), target.numel()], dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        n = max(self.stats[2].item(), 1.0)
        return {"perplexity": math.exp(min(self.stats[0].item() / n, 50.0)), "token_acc": self.stats[1].item() / n}

    def state(self) -> torch.Tensor:
        return self.stats.clone()

    def load_state(self, t: torch.Tensor) -> None:
        self.stats = t.clone().to(torch.float64)


class NextToken(Task):
    """Predict every next token: logits (N, T, V), targets (N, T) token ids."""

    name = "next-token"
    metric_name = "perplexity"

    def loss(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.float().flatten(0, 1), target.flatten())

    def metric(self) -> Metric:
        return Perplexity()

    def samples(self, target: torch.Tensor) -> int:
        return int(target.numel())  # tokens: the ladder's samples/s are tokens/s
