"""Reference train.py: a small GPT trained for a fixed wall-clock budget.

This is the one file the research agent edits: model, optimizer, training loop, hyperparameters.
The harness (autoresearch.trainer) owns data, the budget clock and the metric. It calls
``train(h)``; ``train`` must return the trained ``torch.nn.Module`` mapping token ids ``(B, T)`` to
logits ``(B, T, h.vocab_size)``. The harness saves that module with ``torch.save`` and measures
val_bpb on it in a fresh process, so return the plain module (not ``torch.compile``'s wrapper) and
keep lambdas, open handles and FlexAttention block masks out of its attributes. Nothing printed
here is parsed.

The harness handle ``h`` gives: ``h.device``, ``h.vocab_size``, ``h.max_seq_len``, ``h.time_budget``
(seconds), ``h.seed``, ``h.bos_id``, ``h.next_batch(B, T=None) -> (x, y)`` (BOS-aligned packed rows,
``(B, T)`` long tensors on ``h.device``), ``h.progress()`` (fraction of the budget used, 0..1+),
``h.should_stop()``, ``h.time_left()`` (seconds) and ``h.report(step, loss)`` (live progress; a
non-finite loss ends the run).

Model, optimizer and schedules follow karpathy/autoresearch ``train.py`` (itself from nanochat):
RoPE, QK-norm, ReLU² MLP, value embeddings on alternating layers, per-layer residual/x0 scalars,
logit softcap, sliding-window pattern; Muon (Polar Express orthogonalisation, NorMuon variance
reduction, cautious weight decay decaying to 0 over the budget) for the blocks' matrices, batched
over same-shape matrices, and AdamW for the rest. On CUDA the embeddings, and with them the residual
stream, are bf16 as upstream. Upstream calls FlashAttention-3; here attention goes through PyTorch's
own kernels so it runs on CPU and every CUDA GPU: SDPA (flash) for full-context layers, FlexAttention
with a block mask for sliding windows when compiled on CUDA, and SDPA with a boolean band mask
otherwise (CPU, evaluation). Windows have FA3's semantics: ``window_size=(W, 0)`` lets position ``i``
attend to keys ``i - W … i``, i.e. W + 1 keys.
"""

import gc
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
FLEX_ATTENTION = True  # CUDA: S windows through FlexAttention block masks (False: SDPA with a dense band mask)

# Batch
TOTAL_BATCH_SIZE = 2**19  # tokens per optimizer step (gradient accumulation fills it)
DEVICE_BATCH_SIZE = 128  # rows per forward/backward pass

# Optimization (AdamW LRs are scaled by (width / 768) ** -0.5, as tuned upstream at width 768)
EMBEDDING_LR = 0.6  # AdamW learning rate for token and value embeddings
UNEMBEDDING_LR = 0.004  # AdamW learning rate for lm_head
MATRIX_LR = 0.04  # Muon learning rate for the 2-D weights of the blocks
SCALAR_LR = 0.5  # AdamW learning rate for x0_lambdas
RESID_LR_FRAC = 0.01  # resid_lambdas learn at SCALAR_LR * RESID_LR_FRAC
ADAM_BETAS = (0.8, 0.95)  # AdamW betas (embeddings, lm_head, resid_lambdas)
X0_BETAS = (0.96, 0.95)  # AdamW betas for x0_lambdas
WEIGHT_DECAY = 0.2  # cautious weight decay of the Muon matrices at the start; decays linearly to 0 at the budget
MUON_MOMENTUM = 0.95  # Muon (Nesterov) momentum after its warm-up
MUON_MOMENTUM_START = 0.85  # Muon momentum at step 0
MUON_MOMENTUM_WARMUP_STEPS = 300  # optimizer steps over which Muon momentum ramps up
MUON_BETA2 = 0.95  # NorMuon: EMA factor of the per-row (or per-column) second moment
POLAR_EXPRESS_STEPS = 5  # orthogonalisation iterations (at most 5 coefficient sets)
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
    # x: (B, H, T, D); cos, sin: (T, D/2); rotate the two halves of the head dimension
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def band_mask(T, window, device):
    # (T, T) bool, True = attend: causal and at most `window` positions back (FA3 window_size=(window, 0))
    i = torch.arange(T, device=device)
    return (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] <= window)


def flex_band_mask(T, window, device):
    # the same band as a FlexAttention BlockMask: fully masked 128×128 blocks are skipped, not computed
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx <= window)

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=T, KV_LEN=T, device=device)


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

    def forward(self, x, ve, cos, sin, window, block_mask):
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
        if block_mask is not None:
            from torch.nn.attention.flex_attention import flex_attention

            y = flex_attention(q, k, v, block_mask=block_mask)
        elif window >= T - 1:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # the window covers every earlier key
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=band_mask(T, window, x.device))
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

    def forward(self, x, ve, cos, sin, window, block_mask):
        x = x + self.attn(norm(x), ve, cos, sin, window, block_mask)
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
        # left window per layer in FA3's sense (W + 1 keys); L = the whole context
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
        if self.wte.weight.is_cuda:
            # as upstream: bf16 embeddings, so the residual stream is bf16 (the fp32 lambdas are
            # 0-d and do not promote it), and bf16 rotary tables
            self.wte.to(dtype=torch.bfloat16)
            self.value_embeds.to(dtype=torch.bfloat16)
            self.cos, self.sin = self.cos.bfloat16(), self.sin.bfloat16()

    def flex_block_masks(self, T, device):
        """Per layer: a FlexAttention BlockMask for windows shorter than T - 1, else None.

        Built by the training loop and passed to ``forward``; never stored on the module, so the
        returned model pickles and evaluation (SDPA) needs none.
        """
        masks, by_window = [], {}
        for w in self.windows:
            if w >= T - 1:
                masks.append(None)
                continue
            if w not in by_window:
                by_window[w] = flex_band_mask(T, w, device)
            masks.append(by_window[w])
        return masks

    def estimate_flops(self):
        """Training FLOPs per token: 6 × matmul params + 12 × heads × head_dim × attended keys per
        layer (upstream's estimate: embeddings and the per-layer scalars excluded)."""
        n_emb = self.wte.weight.numel() + sum(ve.weight.numel() for ve in self.value_embeds.values())
        n_scalars = self.resid_lambdas.numel() + self.x0_lambdas.numel()
        n_matmul = sum(p.numel() for p in self.parameters()) - n_emb - n_scalars
        attn = sum(12 * self.config.n_embd * min(w, self.config.sequence_len) for w in self.windows)
        return 6 * n_matmul + attn

    def forward(self, idx, targets=None, block_masks=None):
        B, T = idx.shape
        cos, sin = self.cos[:T], self.sin[:T]
        x = norm(self.wte(idx))  # (B, T, C), bf16 on CUDA
        x0 = x
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, cos, sin, self.windows[i], None if block_masks is None else block_masks[i])
        x = norm(x)
        logits = self.lm_head(x).float()
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)  # (B, T, V)
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


# ---------------------------------------------------------------------------
# Optimizer: Muon for the blocks' matrices, AdamW for everything else
# ---------------------------------------------------------------------------

# Polar Express (Amsel et al. 2025, arXiv:2505.16932): per-iteration coefficients (a, b, c) of
# X ← aX + b(XXᵀ)X + c(XXᵀ)²X that drive every singular value of X towards 1 faster than Muon's fixed
# quintic; these are the five upstream uses (safety factor 1.02 in the normalisation below).
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def polar_express(G, steps, dtype):
    # G: (N, rows, cols) stacked updates → nearest semi-orthogonal matrices, computed in `dtype`
    X = G.to(dtype)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)  # spectral norm ≤ Frobenius norm < 1
    tall = G.size(-2) > G.size(-1)  # iterate on the smaller Gram matrix
    for a, b, c in POLAR_EXPRESS_COEFFS[:steps]:
        A = X.mT @ X if tall else X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + X @ B if tall else a * X + B @ X
    return X


def adamw_update(p, grad, exp_avg, exp_avg_sq, step_t, lr_t, beta1_t, beta2_t, eps_t, wd_t):
    # AdamW (Loshchilov & Hutter), in place; hyperparameters are 0-d tensors so a compiled version
    # is not recompiled when the schedule changes them
    p.mul_(1 - lr_t * wd_t)
    exp_avg.lerp_(grad, 1 - beta1_t)
    exp_avg_sq.lerp_(grad.square(), 1 - beta2_t)
    bias1 = 1 - beta1_t**step_t
    bias2 = 1 - beta2_t**step_t
    denom = (exp_avg_sq / bias2).sqrt() + eps_t
    p.add_(exp_avg / denom, alpha=-(lr_t / bias1))


def muon_update(grads, params, momentum_buffer, second_moment, momentum_t, lr_t, wd_t, beta2_t, steps, red_dim, ortho_dtype):
    """One Muon step on N same-shape matrices stacked as ``(N, rows, cols)``, in place on ``params``.

    1. Nesterov momentum (Keller Jordan's Muon, kellerjordan.github.io/posts/muon).
    2. Polar Express orthogonalisation (:func:`polar_express`).
    3. NorMuon (Li et al. 2025, arXiv:2510.05491): divide each row (tall or square matrices; each
       column for wide ones: ``red_dim``) by the root of an EMA of its mean squared update, then
       rescale so the update keeps the Frobenius norm it had after orthogonalisation.
    4. Cautious weight decay (Chen et al. 2025, arXiv:2510.12402): decay only the entries whose
       update has the same sign as the weight. The caller scales ``lr`` by sqrt(max(1, rows/cols)).
    Arithmetic and dtypes follow upstream's ``muon_step_fused``: ``grads`` is overwritten.
    """
    momentum = momentum_t.to(grads.dtype)
    momentum_buffer.lerp_(grads, 1 - momentum)
    g = grads.lerp_(momentum_buffer, momentum)  # (N, rows, cols)
    g = polar_express(g, steps, ortho_dtype)
    beta2 = beta2_t.to(g.dtype)
    v_mean = g.float().square().mean(dim=red_dim, keepdim=True)  # (N, rows, 1) or (N, 1, cols)
    n_red = g.size(red_dim)
    v_norm = (v_mean.sum(dim=(-2, -1), keepdim=True) * n_red).sqrt()  # (N, 1, 1) Frobenius norm of g
    second_moment.lerp_(v_mean.to(dtype=second_moment.dtype), 1 - beta2)
    step_size = second_moment.clamp_min(1e-10).rsqrt()
    v_norm_new = ((v_mean * n_red) * step_size.float().square()).sum(dim=(-2, -1), keepdim=True).sqrt()
    g = g * (step_size * (v_norm / v_norm_new.clamp_min(1e-10))).to(g.dtype)
    lr, wd = lr_t.to(g.dtype), wd_t.to(g.dtype)
    mask = (g * params) >= 0
    params.sub_(lr * g + lr * wd * params * mask)


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer over two kinds of groups: ``kind="adamw"`` (lr, betas, eps, weight_decay) and
    ``kind="muon"`` (same-shape matrices; lr, momentum, beta2, ns_steps, weight_decay).

    With ``compiled=True`` (CUDA) the two update functions run through ``torch.compile``
    (``fullgraph``, static shapes), as upstream. Orthogonalisation runs in ``ortho_dtype``
    (bf16 on CUDA as upstream; float32 on CPU, where bf16 matmuls are slow).
    """

    def __init__(self, param_groups, compiled=False, ortho_dtype=torch.bfloat16):
        super().__init__(param_groups, defaults={})
        self.ortho_dtype = ortho_dtype
        self._adamw = torch.compile(adamw_update, dynamic=False, fullgraph=True) if compiled else adamw_update
        self._muon = torch.compile(muon_update, dynamic=False, fullgraph=True) if compiled else muon_update
        # 0-d CPU tensors for the hyperparameters: a value change does not recompile
        self._t = {k: torch.tensor(0.0) for k in ("step", "lr", "beta1", "beta2", "eps", "wd", "momentum")}

    def _step_adamw(self, group):
        t = self._t
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"], state["exp_avg"], state["exp_avg_sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
            state["step"] += 1
            t["step"].fill_(state["step"])
            t["lr"].fill_(group["lr"])
            t["beta1"].fill_(group["betas"][0])
            t["beta2"].fill_(group["betas"][1])
            t["eps"].fill_(group["eps"])
            t["wd"].fill_(group["weight_decay"])
            self._adamw(p, p.grad, state["exp_avg"], state["exp_avg_sq"], t["step"], t["lr"], t["beta1"], t["beta2"], t["eps"], t["wd"])

    def _step_muon(self, group):
        params = group["params"]
        if not params or params[0].grad is None:
            return
        rows, cols = params[0].shape
        state = self.state[params[0]]  # the group's state lives on its first matrix
        if not state:
            state["momentum_buffer"] = torch.zeros(len(params), rows, cols, dtype=params[0].dtype, device=params[0].device)
            moment_shape = (len(params), rows, 1) if rows >= cols else (len(params), 1, cols)
            state["second_moment"] = torch.zeros(moment_shape, dtype=params[0].dtype, device=params[0].device)
        red_dim = -1 if rows >= cols else -2
        grads, stacked = torch.stack([p.grad for p in params]), torch.stack(params)  # (N, rows, cols)
        t = self._t
        t["momentum"].fill_(group["momentum"])
        t["beta2"].fill_(group["beta2"])
        t["lr"].fill_(group["lr"] * max(1.0, rows / cols) ** 0.5)
        t["wd"].fill_(group["weight_decay"])
        self._muon(grads, stacked, state["momentum_buffer"], state["second_moment"], t["momentum"], t["lr"], t["wd"], t["beta2"],
                   group["ns_steps"], red_dim, self.ortho_dtype)  # fmt: skip
        torch._foreach_copy_(params, list(stacked.unbind(0)))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            if group["kind"] == "adamw":
                self._step_adamw(group)
            else:
                self._step_muon(group)


def make_optimizer(model):
    width_scale = (model.config.n_embd / 768) ** -0.5  # AdamW LRs were tuned at width 768
    adam = dict(kind="adamw", betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0)
    groups = [
        dict(adam, params=[model.lm_head.weight], lr=UNEMBEDDING_LR * width_scale),
        dict(adam, params=[model.wte.weight], lr=EMBEDDING_LR * width_scale),
        dict(adam, params=[ve.weight for ve in model.value_embeds.values()], lr=EMBEDDING_LR * width_scale),
        dict(adam, params=[model.resid_lambdas], lr=SCALAR_LR * RESID_LR_FRAC),
        dict(adam, params=[model.x0_lambdas], lr=SCALAR_LR, betas=X0_BETAS),
    ]
    matrices = list(model.blocks.parameters())  # all 2-D
    for shape in sorted({p.shape for p in matrices}):
        groups.append(dict(kind="muon", params=[p for p in matrices if p.shape == shape], lr=MATRIX_LR,
                           momentum=MUON_MOMENTUM, beta2=MUON_BETA2, ns_steps=POLAR_EXPRESS_STEPS, weight_decay=WEIGHT_DECAY))  # fmt: skip
    cuda = model.wte.weight.is_cuda
    optimizer = MuonAdamW([g for g in groups if g["params"]], compiled=cuda, ortho_dtype=torch.bfloat16 if cuda else torch.float32)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


def lr_multiplier(progress):
    # progress: fraction of the time budget used (harness clock), clamped to 1
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return cooldown + (1 - cooldown) * FINAL_LR_FRAC


def muon_momentum(step):
    frac = min(step / MUON_MOMENTUM_WARMUP_STEPS, 1.0)
    return (1 - frac) * MUON_MOMENTUM_START + frac * MUON_MOMENTUM


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def train(h):
    torch.manual_seed(SEED + h.seed)
    device = h.device
    cuda = device.type == "cuda"
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32 for the few fp32 matmuls, as upstream
    n_embd = math.ceil(DEPTH * ASPECT_RATIO / HEAD_DIM) * HEAD_DIM
    config = GPTConfig(
        sequence_len=h.max_seq_len, vocab_size=h.vocab_size, n_layer=DEPTH,
        n_head=n_embd // HEAD_DIM, n_embd=n_embd, window_pattern=WINDOW_PATTERN,
    )  # fmt: skip
    model = GPT(config).to(device)
    model.init_weights()
    optimizer = make_optimizer(model)
    tokens_per_pass = DEVICE_BATCH_SIZE * h.max_seq_len
    assert TOTAL_BATCH_SIZE % tokens_per_pass == 0, "TOTAL_BATCH_SIZE must be a multiple of DEVICE_BATCH_SIZE * max_seq_len"
    grad_accum_steps = TOTAL_BATCH_SIZE // tokens_per_pass

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    fwd = torch.compile(model, dynamic=False) if cuda else model  # compilation falls in the harness's warm-up
    block_masks = model.flex_block_masks(h.max_seq_len, device) if cuda and FLEX_ATTENTION else None

    x, y = h.next_batch(DEVICE_BATCH_SIZE)  # (B, T) each
    step = 0
    while not h.should_stop():
        for _ in range(grad_accum_steps):
            with autocast:
                loss = fwd(x, y, block_masks)
            train_loss = loss.detach()
            (loss / grad_accum_steps).backward()
            x, y = h.next_batch(DEVICE_BATCH_SIZE)  # fetched while the GPU still works on this pass
        progress = min(h.progress(), 1.0)
        lrm = lr_multiplier(progress)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lrm
            if group["kind"] == "muon":
                group["momentum"] = muon_momentum(step)
                group["weight_decay"] = WEIGHT_DECAY * (1 - progress)
        optimizer.step()
        model.zero_grad(set_to_none=True)
        h.report(step, train_loss.item())  # loss of the last micro-batch, nats per token; syncs the GPU
        if step == 0:
            # Python's cyclic GC stalls steps for ~0.5 s on CUDA (upstream): collect once after the
            # first (compiling) step, freeze what survived and switch it off
            gc.collect()
            gc.freeze()
            gc.disable()
        elif (step + 1) % 5000 == 0:
            gc.collect()
        step += 1
    return model
