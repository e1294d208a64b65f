"""Continuous batching: one container serves many concurrent requests with one forward
pass per step for all of them.

    pip install '.[examples]' && shoal run examples/continuous_batching.py

A small decoder model (random weights, seeded, nothing downloaded) runs inside a
``Generator`` container. Each ``generate`` call is one concurrent input
(``max_inputs=64``); they all feed one :class:`Engine`, which at every step

1. admits waiting requests into the running batch (up to ``max_batch``),
2. runs one forward pass for the newest token of every running sequence at once,
   attending over each sequence's cached keys and values (padded to the longest),
   and one prefill pass for each newly admitted prompt,
3. appends each sequence's next token (greedy) and retires the finished ones.

A request that arrives while others are mid-generation joins at the next step
instead of waiting for the batch to drain, and gets exactly the tokens it would
have got alone. The engine uses CUDA when it is available, else the CPU.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

import shoal

app = shoal.App("continuous-batching")

#: Characters the toy tokenizer knows: printable ASCII, one token each.
VOCAB = 95
#: Longest prompt plus completion the model takes.
MAX_LEN = 128


def encode(text: str) -> list[int]:
    return [(ord(ch) - 32) % VOCAB for ch in text][: MAX_LEN // 2] or [0]


def decode(tokens: list[int]) -> str:
    return "".join(chr(t + 32) for t in tokens)


class Block(nn.Module):
    """Pre-norm causal self-attention and an MLP, attending over cached earlier positions."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor, past: Past) -> tuple[torch.Tensor, Past]:
        """``x``: (batch, new, width). ``past``: keys and values of earlier positions,
        (batch, heads, earlier, width/heads), and which of those are padding.
        Returns the output and the keys and values of the new positions."""
        batch, new, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(width, dim=-1)
        q, k, v = (t.view(batch, new, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        keys = torch.cat([past.keys, k], dim=2)
        values = torch.cat([past.values, v], dim=2)
        earlier = past.keys.shape[2]
        allowed = torch.ones(batch, 1, new, earlier + new, dtype=torch.bool, device=x.device)
        allowed[..., :earlier] = ~past.padding[:, None, None, :]
        allowed[..., earlier:] = torch.ones(new, new, dtype=torch.bool, device=x.device).tril()
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, new, width))
        x = x + self.mlp(self.norm2(x))
        return x, Past(k, v, torch.zeros(batch, new, dtype=torch.bool, device=x.device))


@dataclass
class Past:
    """Cached keys and values of one layer, (batch, heads, positions, head width), and a
    (batch, positions) mask that is True on padding."""

    keys: torch.Tensor
    values: torch.Tensor
    padding: torch.Tensor


class TinyDecoder(nn.Module):
    """Token and position embeddings, causal self-attention blocks, a language-model head."""

    def __init__(self, width: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.tokens = nn.Embedding(VOCAB, width)
        self.positions = nn.Embedding(MAX_LEN, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB)

    def empty(self, batch: int) -> list[Past]:
        """No earlier positions, for each layer."""
        p = next(self.parameters())
        width = self.tokens.embedding_dim // self.heads
        nothing = torch.zeros(batch, self.heads, 0, width, dtype=p.dtype, device=p.device)
        padding = torch.zeros(batch, 0, dtype=torch.bool, device=p.device)
        return [Past(nothing, nothing, padding) for _ in self.blocks]

    def forward(
        self, tokens: torch.Tensor, start: torch.Tensor, past: list[Past]
    ) -> tuple[torch.Tensor, list[Past]]:
        """Logits for (batch, new) tokens at positions ``start + 0, 1, ...``, given the
        cached ``past`` of every layer; also returns the new positions' keys and values."""
        offsets = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tokens(tokens) + self.positions(start[:, None] + offsets)
        fresh = []
        for block, cached in zip(self.blocks, past, strict=True):
            x, new = block(x, cached)
            fresh.append(new)
        return self.head(self.norm(x)), fresh


def build_model(name: str = "tiny", device: str | None = None) -> TinyDecoder:
    """The model, with the same weights everywhere (seeded by name)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(sum(map(ord, name)))
    # Double precision on the CPU: batched and lone runs then agree to the last bit that
    # matters for greedy decoding; on a GPU, float32 for speed.
    dtype = torch.float64 if device == "cpu" else torch.float32
    return TinyDecoder().to(device=device, dtype=dtype).eval()


@torch.no_grad()
def generate_alone(model: TinyDecoder, prompt: str, max_tokens: int) -> str:
    """The reference: one prompt by itself, recomputing the whole sequence at every step
    (no cache, no batch), so it shares no bookkeeping with the engine."""
    device = next(model.parameters()).device
    sequence = encode(prompt)
    out: list[int] = []
    for _ in range(max_tokens):
        if len(sequence) + len(out) >= MAX_LEN:
            break
        tokens = torch.tensor([sequence + out], device=device)
        logits, _ = model(tokens, torch.zeros(1, dtype=torch.long, device=device), model.empty(1))
        out.append(int(logits[0, -1].argmax()))
    return decode(out)


@dataclass
class _Request:
    tokens: list[int]
    max_tokens: int
    done: asyncio.Future[str]
    out: list[int] = field(default_factory=list)
    #: This sequence's row in the engine's key-value cache, while it runs.
    slot: int = -1

    @property
    def length(self) -> int:
        return len(self.tokens) + len(self.out)


class KVCache:
    """Keys and values of every running sequence, one row (slot) per sequence, per layer:
    (max_batch, heads, MAX_LEN, head width). Running sequences hold rows 0..n-1, so a
    decode step reads them as a view and writes them with one indexing operation per
    layer, however many sequences run; a finished sequence's row is filled by moving
    the later ones down."""

    def __init__(self, model: TinyDecoder, max_batch: int) -> None:
        p = next(model.parameters())
        shape = (max_batch, model.heads, MAX_LEN, model.tokens.embedding_dim // model.heads)
        self.keys = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in model.blocks]
        self.values = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in model.blocks]

    def move(self, source: int, target: int) -> None:
        """Copy a sequence's row down to ``target`` (when rows below it were freed)."""
        for keys, values in zip(self.keys, self.values, strict=True):
            keys[target] = keys[source]
            values[target] = values[source]


@torch.no_grad()
def prefill(model: TinyDecoder, cache: KVCache, request: _Request) -> int:
    """Run a new request's prompt through the model into its cache slot; its first token."""
    device = next(model.parameters()).device
    tokens = torch.tensor([request.tokens], device=device)
    start = torch.zeros(1, dtype=torch.long, device=device)
    logits, fresh = model(tokens, start, model.empty(1))
    length = len(request.tokens)
    for layer, new in enumerate(fresh):
        cache.keys[layer][request.slot, :, :length] = new.keys[0]
        cache.values[layer][request.slot, :, :length] = new.values[0]
    return int(logits[0, -1].argmax())


@torch.no_grad()
def decode_step(model: TinyDecoder, cache: KVCache, requests: list[_Request]) -> list[int]:
    """One forward pass for every request's newest token at once; their next tokens."""
    device = next(model.parameters()).device
    count = len(requests)  # they hold rows 0..count-1 of the cache
    tokens = torch.tensor([[r.out[-1]] for r in requests], device=device)
    cached = torch.tensor([r.length - 1 for r in requests], device=device)  # the new position
    longest = int(cached.max())
    padding = torch.arange(longest, device=device)[None, :] >= cached[:, None]
    past = [
        Past(keys[:count, :, :longest], values[:count, :, :longest], padding)
        for keys, values in zip(cache.keys, cache.values, strict=True)
    ]
    logits, fresh = model(tokens, cached, past)
    rows = torch.arange(count, device=device)
    for layer, new in enumerate(fresh):
        cache.keys[layer][rows, :, cached] = new.keys[:, :, 0]
        cache.values[layer][rows, :, cached] = new.values[:, :, 0]
    return logits[:, -1].argmax(-1).tolist()


@dataclass
class EngineStats:
    """What the engine has done so far."""

    steps: int = 0
    tokens: int = 0
    requests: int = 0
    largest_batch: int = 0
    #: Requests admitted while other sequences were mid-generation.
    admitted_mid_flight: int = 0
    active: int = 0


class Engine:
    """Continuous batching with a key-value cache, driven from the container's event loop."""

    def __init__(self, model: TinyDecoder, max_batch: int = 64) -> None:
        self.model = model
        self.max_batch = max_batch
        self._cache = KVCache(model, max_batch)
        self.stats = EngineStats()
        self._waiting: deque[_Request] = deque()
        self._active: list[_Request] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def generate(self, prompt: str, max_tokens: int) -> str:
        """Join the running batch; return the completion once it is finished."""
        request = _Request(encode(prompt), max_tokens, asyncio.get_running_loop().create_future())
        self._waiting.append(request)
        self._wake.set()
        return await request.done

    async def _run(self) -> None:
        while True:
            if not self._active and not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            admitted = self._admit()
            # Model work runs on a thread: new requests keep arriving meanwhile.
            await asyncio.to_thread(self._step, admitted)

    def _admit(self) -> list[_Request]:
        admitted = []
        while self._waiting and len(self._active) + len(admitted) < self.max_batch:
            request = self._waiting.popleft()
            if request.done.cancelled():
                continue
            if self._active:
                self.stats.admitted_mid_flight += 1
            admitted.append(request)
            self.stats.requests += 1
        return admitted

    def _step(self, admitted: list[_Request]) -> None:
        """Decode one token for every running sequence, prefill the admitted ones, retire
        the finished (on the worker thread; results go back through the loop)."""
        running = self._active
        chosen = decode_step(self.model, self._cache, running) if running else []
        for request, token in zip(running, chosen, strict=True):
            request.out.append(token)
        for request in admitted:
            request.slot = len(running) + admitted.index(request)
            request.out.append(prefill(self.model, self._cache, request))
        self._active = running + admitted
        self.stats.steps += 1
        self.stats.tokens += len(chosen) + len(admitted)
        self.stats.largest_batch = max(self.stats.largest_batch, len(self._active))
        still = []
        for request in self._active:
            if len(request.out) >= request.max_tokens or request.length >= MAX_LEN:
                self._loop.call_soon_threadsafe(_resolve, request.done, decode(request.out))
            else:
                if request.slot != len(still):  # keep running rows at 0..n-1
                    self._cache.move(request.slot, len(still))
                    request.slot = len(still)
                still.append(request)
        self._active = still
        self.stats.active = len(still)


def _resolve(done: asyncio.Future[str], text: str) -> None:
    if not done.done():
        done.set_result(text)


@app.cls(max_containers=1, scaledown_window=60)
@shoal.concurrent(max_inputs=64)
class Generator:
    model_name: str = shoal.parameter(default="tiny")

    @shoal.enter()
    async def load(self) -> None:
        self.engine = Engine(build_model(self.model_name), max_batch=64)
        self.engine.start()

    @shoal.method()
    async def generate(self, prompt: str, max_tokens: int = 32) -> str:
        return await self.engine.generate(prompt, max_tokens)

    @shoal.method()
    async def engine_stats(self) -> EngineStats:
        return self.engine.stats

    @shoal.exit()
    async def close(self) -> None:
        await self.engine.stop()


@app.local_entrypoint()
def main(prompts: int = 128, max_tokens: int = 32) -> None:
    generator = Generator()
    texts = [f"prompt number {i}: " for i in range(prompts)]
    started = time.perf_counter()
    outputs = list(generator.generate.map(texts, kwargs={"max_tokens": max_tokens}))
    elapsed = time.perf_counter() - started
    stats = generator.engine_stats.remote()
    print(
        f"{prompts} prompts x {max_tokens} tokens in {elapsed:.2f} s: "
        f"{prompts * max_tokens / elapsed:,.0f} tokens/s, {stats.steps} steps, "
        f"largest batch {stats.largest_batch}, {stats.admitted_mid_flight} admitted mid-flight"
    )
    print("first completion:", repr(outputs[0]))
