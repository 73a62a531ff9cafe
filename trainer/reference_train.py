"""Reference train.py: a small GPT trained for a fixed wall-clock budget.

This is the one file the research agent edits: model, optimizer, training loop, hyperparameters.
The harness (autoresearch.trainer) owns data, the budget clock and the metric. It imports this file
and calls ``train(h)``; ``train`` must return the trained ``torch.nn.Module`` mapping token ids
``(B, T)`` to logits ``(B, T, h.vocab_size)``. The harness then measures val_bpb on that module
itself; nothing printed here is parsed.

The harness handle ``h`` gives: ``h.device``, ``h.vocab_size``, ``h.max_seq_len``, ``h.time_budget``
(seconds), ``h.seed``, ``h.next_batch(B, T=None) -> (x, y)`` (BOS-aligned packed rows, ``(B, T)`` long tensors
on ``h.device``), ``h.progress()`` (fraction of the budget used, 0..1+), ``h.should_stop()``,
``h.time_left()`` (seconds) and ``h.report(step, loss)`` (live progress; non-finite loss ends the run).

Architecture follows karpathy/autoresearch (nanochat's GPT): RoPE, QK-norm, ReLU² MLP, value
embeddings on alternating layers, per-layer residual/x0 scalars, logit softcap, sliding-window
attention pattern; Muon for matrices, AdamW for the rest. Attention goes through
F.scaled_dot_product_attention so it runs on CPU and every CUDA GPU.
"""

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# Hyperparameters (edit these directly)
# ---------------------------------------------------------------------------

# Model size: one complexity dial (DEPTH) derives the width
DEPTH = 8  # number of transformer blocks
ASPECT_RATIO = 64  # model width = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM
HEAD_DIM = 128  # channels per attention head
WINDOW_PATTERN = "SSSL"  # per-layer attention window, cycled: S = half context, L = full; last layer is L
SOFTCAP = 15.0  # logits are squashed to (-SOFTCAP, SOFTCAP) with tanh

# Batch
TOTAL_BATCH_SIZE = 2**19  # tokens per optimizer step (gradient accumulation fills it)
DEVICE_BATCH_SIZE = 128  # rows per forward/backward pass

# Optimization
MATRIX_LR = 0.04  # Muon learning rate for the 2-D weights of the blocks
EMBEDDING_LR = 0.6  # AdamW learning rate for token and value embeddings
UNEMBEDDING_LR = 0.004  # AdamW learning rate for lm_head
SCALAR_LR = 0.5  # AdamW learning rate for the per-layer residual scalars
WEIGHT_DECAY = 0.2  # decoupled weight decay on the Muon matrices
ADAM_BETAS = (0.8, 0.95)  # AdamW betas
MUON_MOMENTUM = 0.95  # Muon momentum after its warm-up from 0.85
MUON_MOMENTUM_WARMUP_STEPS = 300  # optimizer steps over which Muon momentum ramps up
WARMUP_RATIO = 0.0  # fraction of the time budget with linear LR warm-up
WARMDOWN_RATIO = 0.5  # fraction of the time budget with linear LR decay at the end
FINAL_LR_FRAC = 0.0  # LR multiplier at the end of the budget
SEED = 42  # added to the harness's run seed


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


@dataclass
class GPTConfig:
    sequence_len: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    window_pattern: str


def norm(x):
    # RMSNorm without learnable weights
    return F.rms_norm(x, (x.size(-1),))


def has_ve(layer_idx, n_layer):
    # value embeddings on alternating layers, the last layer always has one
    return layer_idx % 2 == (n_layer - 1) % 2


def apply_rotary_emb(x, cos, sin):
    # x: (B, H, T, D); rotate the two halves of the head dimension
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.ve_gate_channels = min(32, config.n_embd)
        self.ve_gate = nn.Linear(self.ve_gate_channels, self.n_head, bias=False) if has_ve(layer_idx, config.n_layer) else None

    def forward(self, x, ve, cos, sin, mask):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if ve is not None:
            # value embedding mixed in through an input-dependent gate in (0, 2)
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., : self.ve_gate_channels]))  # (B, T, H)
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_head, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        q, k = norm(apply_rotary_emb(q, cos, sin)), norm(apply_rotary_emb(k, cos, sin))  # QK-norm
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU²


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x, ve, cos, sin, mask):
        x = x + self.attn(norm(x), ve, cos, sin, mask)
        x = x + self.mlp(norm(x))
        return x


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        kv_dim = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.value_embeds = nn.ModuleDict(
            {str(i): nn.Embedding(config.vocab_size, kv_dim) for i in range(config.n_layer) if has_ve(i, config.n_layer)}
        )
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
        self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))
        # rotary tables, (T, D/2), not parameters
        head_dim = config.n_embd // config.n_head
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(config.sequence_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", freqs.cos(), persistent=False)
        self.register_buffer("sin", freqs.sin(), persistent=False)
        long_window, short_window = config.sequence_len, config.sequence_len // 2
        pattern = config.window_pattern.upper()
        assert pattern and set(pattern) <= {"S", "L"}, f"bad WINDOW_PATTERN {config.window_pattern!r}"
        self.windows = [short_window if pattern[i % len(pattern)] == "S" else long_window for i in range(config.n_layer)]
        self.windows[-1] = long_window

    @torch.no_grad()
    def init_weights(self):
        s = 3**0.5 * self.config.n_embd**-0.5  # uniform bound with the std of a 1/sqrt(fan_in) init
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -s, s)
            nn.init.zeros_(block.attn.c_proj.weight)  # blocks start as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -s, s)
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)

    def _mask(self, T, window, device):
        if window >= T:
            return None  # plain causal
        i = torch.arange(T, device=device)
        return (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window)  # (T, T), True = attend

    def estimate_flops(self):
        """Training FLOPs per token: 6 × matmul params + attention (as nanochat's estimate)."""
        n_emb = self.wte.weight.numel() + sum(ve.weight.numel() for ve in self.value_embeds.values())
        n_matmul = sum(p.numel() for p in self.parameters()) - n_emb
        attn = sum(12 * self.config.n_embd * min(w, self.config.sequence_len) for w in self.windows)
        return 6 * n_matmul + attn

    def forward(self, idx, targets=None):
        B, T = idx.shape
        cos, sin = self.cos[:T].to(idx.device), self.sin[:T].to(idx.device)
        x = norm(self.wte(idx))  # (B, T, C)
        x0 = x
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, cos, sin, self._mask(T, self.windows[i], idx.device))
        x = norm(x)
        logits = self.lm_head(x).float()
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)  # (B, T, V)
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


# ---------------------------------------------------------------------------
# Optimizer: Muon for the blocks' matrices, AdamW for everything else
# ---------------------------------------------------------------------------


def zeropower_via_newtonschulz5(G, steps=5):
    # Orthogonalise G with a quintic Newton-Schulz iteration (Keller Jordan's Muon, coefficients from there).
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16() if G.is_cuda else G.float()
    transposed = X.size(0) > X.size(1)
    if transposed:
        X = X.T
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    if transposed:
        X = X.T
    return X.to(G.dtype)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose 2-D update is orthogonalised (https://kellerjordan.github.io/posts/muon/)."""

    def __init__(self, params, lr, momentum, weight_decay):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - group["momentum"])
                g = p.grad.lerp(buf, group["momentum"])  # Nesterov
                update = zeropower_via_newtonschulz5(g) * max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"])


def make_optimizers(model):
    width_scale = (model.config.n_embd / 768) ** -0.5  # AdamW LRs were tuned at width 768
    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    adam_groups = [
        dict(params=[model.wte.weight, *[ve.weight for ve in model.value_embeds.values()]], lr=EMBEDDING_LR * width_scale),
        dict(params=[model.lm_head.weight], lr=UNEMBEDDING_LR * width_scale),
        dict(params=[model.resid_lambdas, model.x0_lambdas], lr=SCALAR_LR),
    ]
    adamw = torch.optim.AdamW(adam_groups, betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0)
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM, weight_decay=WEIGHT_DECAY)
    optimizers = [adamw, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers


def lr_multiplier(progress):
    # progress: fraction of the time budget used (harness clock)
    if progress < WARMUP_RATIO:
        return (progress + 1e-3) / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = max(0.0, 1.0 - progress) / WARMDOWN_RATIO
    return cooldown + (1 - cooldown) * FINAL_LR_FRAC


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def train(h):
    torch.manual_seed(SEED + h.seed)
    device = h.device
    n_embd = math.ceil(DEPTH * ASPECT_RATIO / HEAD_DIM) * HEAD_DIM
    config = GPTConfig(
        sequence_len=h.max_seq_len, vocab_size=h.vocab_size, n_layer=DEPTH,
        n_head=n_embd // HEAD_DIM, n_embd=n_embd, window_pattern=WINDOW_PATTERN,
    )
    model = GPT(config).to(device)
    model.init_weights()
    optimizers = make_optimizers(model)
    tokens_per_pass = DEVICE_BATCH_SIZE * h.max_seq_len
    assert TOTAL_BATCH_SIZE % tokens_per_pass == 0, "TOTAL_BATCH_SIZE must be a multiple of DEVICE_BATCH_SIZE * max_seq_len"
    grad_accum_steps = TOTAL_BATCH_SIZE // tokens_per_pass

    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    fwd = torch.compile(model) if cuda else model  # compilation time falls in the harness's warm-up

    step = 0
    while not h.should_stop():
        for _ in range(grad_accum_steps):
            x, y = h.next_batch(DEVICE_BATCH_SIZE)  # (B, T) each
            with autocast:
                loss = fwd(x, y)
            (loss / grad_accum_steps).backward()
        lrm = lr_multiplier(h.progress())
        momentum = min(step / MUON_MOMENTUM_WARMUP_STEPS, 1.0) * (MUON_MOMENTUM - 0.85) + 0.85
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lrm
                if isinstance(opt, Muon):
                    group["momentum"] = momentum
            opt.step()
        model.zero_grad(set_to_none=True)
        h.report(step, loss.item())  # loss of the last micro-batch, nats per token
        step += 1
    return model
