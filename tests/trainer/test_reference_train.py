"""The reference train.py against upstream karpathy/autoresearch ``train.py`` on CPU.

The upstream side of each comparison is a transcription of upstream's code (HEAD of
karpathy/autoresearch, ``train.py``: ``adamw_step_fused``, ``muon_step_fused``, ``MuonAdamW``,
``GPT.setup_optimizer``, the schedules and ``estimate_flops``) kept here, in the test, without
``torch.compile`` and with upstream's module attribute names mapped to ours (``transformer.h`` →
``blocks``, ``transformer.wte`` → ``wte``).
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import io
import sys
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from autoresearch.trainer import data, tracks

rt: ModuleType
spec = importlib.util.find_spec("autoresearch.trainer.reference_train")
assert spec is not None and spec.loader is not None
rt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rt)  # the template: climbmix's constants, i.e. upstream's defaults


# --------------------------------------------------------------------------------------------------
# Transcription of upstream's optimizer (train.py, "Optimizer (MuonAdamW, single GPU only)")

UP_POLAR_EXPRESS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def up_adamw_step_fused(p, grad, exp_avg, exp_avg_sq, step_t, lr_t, beta1_t, beta2_t, eps_t, wd_t):  # type: ignore[no-untyped-def]
    p.mul_(1 - lr_t * wd_t)
    exp_avg.lerp_(grad, 1 - beta1_t)
    exp_avg_sq.lerp_(grad.square(), 1 - beta2_t)
    bias1 = 1 - beta1_t**step_t
    bias2 = 1 - beta2_t**step_t
    denom = (exp_avg_sq / bias2).sqrt() + eps_t
    step_size = lr_t / bias1
    p.add_(exp_avg / denom, alpha=-step_size)


def up_muon_step_fused(stacked_grads, stacked_params, momentum_buffer, second_momentum_buffer,  # type: ignore[no-untyped-def]
                       momentum_t, lr_t, wd_t, beta2_t, ns_steps, red_dim):  # fmt: skip
    momentum = momentum_t.to(stacked_grads.dtype)
    momentum_buffer.lerp_(stacked_grads, 1 - momentum)
    g = stacked_grads.lerp_(momentum_buffer, momentum)
    X = g.bfloat16()
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)
    if g.size(-2) > g.size(-1):
        for a, b, c in UP_POLAR_EXPRESS[:ns_steps]:
            A = X.mT @ X
            B = b * A + c * (A @ A)
            X = a * X + X @ B
    else:
        for a, b, c in UP_POLAR_EXPRESS[:ns_steps]:
            A = X @ X.mT
            B = b * A + c * (A @ A)
            X = a * X + B @ X
    g = X
    beta2 = beta2_t.to(g.dtype)
    v_mean = g.float().square().mean(dim=red_dim, keepdim=True)
    red_dim_size = g.size(red_dim)
    v_norm_sq = v_mean.sum(dim=(-2, -1), keepdim=True) * red_dim_size
    v_norm = v_norm_sq.sqrt()
    second_momentum_buffer.lerp_(v_mean.to(dtype=second_momentum_buffer.dtype), 1 - beta2)
    step_size = second_momentum_buffer.clamp_min(1e-10).rsqrt()
    scaled_sq_sum = (v_mean * red_dim_size) * step_size.float().square()
    v_norm_new = scaled_sq_sum.sum(dim=(-2, -1), keepdim=True).sqrt()
    final_scale = step_size * (v_norm / v_norm_new.clamp_min(1e-10))
    g = g * final_scale.to(g.dtype)
    lr = lr_t.to(g.dtype)
    wd = wd_t.to(g.dtype)
    mask = (g * stacked_params) >= 0
    stacked_params.sub_(lr * g + lr * wd * stacked_params * mask)


class UpMuonAdamW(torch.optim.Optimizer):
    def __init__(self, param_groups):  # type: ignore[no-untyped-def]
        super().__init__(param_groups, defaults={})
        self.t = {k: torch.tensor(0.0) for k in ("step", "lr", "b1", "b2", "eps", "wd", "mom", "mlr", "mwd", "mb2")}

    def _step_adamw(self, group):  # type: ignore[no-untyped-def]
        t = self.t
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t["step"].fill_(state["step"])
            t["lr"].fill_(group["lr"])
            t["b1"].fill_(group["betas"][0])
            t["b2"].fill_(group["betas"][1])
            t["eps"].fill_(group["eps"])
            t["wd"].fill_(group["weight_decay"])
            up_adamw_step_fused(p, p.grad, state["exp_avg"], state["exp_avg_sq"], t["step"], t["lr"], t["b1"], t["b2"], t["eps"], t["wd"])

    def _step_muon(self, group):  # type: ignore[no-untyped-def]
        params = group["params"]
        p = params[0]
        state = self.state[p]
        shape = p.shape
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros(len(params), *shape, dtype=p.dtype)
        if "second_momentum_buffer" not in state:
            state_shape = (len(params), shape[-2], 1) if shape[-2] >= shape[-1] else (len(params), 1, shape[-1])
            state["second_momentum_buffer"] = torch.zeros(state_shape, dtype=p.dtype)
        red_dim = -1 if shape[-2] >= shape[-1] else -2
        stacked_grads = torch.stack([q.grad for q in params])
        stacked_params = torch.stack(params)
        t = self.t
        t["mom"].fill_(group["momentum"])
        t["mb2"].fill_(group["beta2"] if group["beta2"] is not None else 0.0)
        t["mlr"].fill_(group["lr"] * max(1.0, shape[-2] / shape[-1]) ** 0.5)
        t["mwd"].fill_(group["weight_decay"])
        up_muon_step_fused(stacked_grads, stacked_params, state["momentum_buffer"], state["second_momentum_buffer"],
                           t["mom"], t["mlr"], t["mwd"], t["mb2"], group["ns_steps"], red_dim)  # fmt: skip
        torch._foreach_copy_(params, list(stacked_params.unbind(0)))

    @torch.no_grad()
    def step(self):  # type: ignore[no-untyped-def]
        for group in self.param_groups:
            if group["kind"] == "adamw":
                self._step_adamw(group)
            elif group["kind"] == "muon":
                self._step_muon(group)


def up_setup_optimizer(model, unembedding_lr=0.004, embedding_lr=0.6, matrix_lr=0.04, weight_decay=0.2,  # type: ignore[no-untyped-def]
                       adam_betas=(0.8, 0.95), scalar_lr=0.5):  # fmt: skip
    # upstream's GPT.setup_optimizer, called with upstream's hyperparameter block
    model_dim = model.config.n_embd
    matrix_params = list(model.blocks.parameters())
    dmodel_lr_scale = (model_dim / 768) ** -0.5
    param_groups = [
        dict(kind="adamw", params=list(model.lm_head.parameters()), lr=unembedding_lr * dmodel_lr_scale, betas=adam_betas, eps=1e-10, weight_decay=0.0),
        dict(kind="adamw", params=list(model.wte.parameters()), lr=embedding_lr * dmodel_lr_scale, betas=adam_betas, eps=1e-10, weight_decay=0.0),
        dict(kind="adamw", params=list(model.value_embeds.parameters()), lr=embedding_lr * dmodel_lr_scale, betas=adam_betas, eps=1e-10, weight_decay=0.0),
        dict(kind="adamw", params=[model.resid_lambdas], lr=scalar_lr * 0.01, betas=adam_betas, eps=1e-10, weight_decay=0.0),
        dict(kind="adamw", params=[model.x0_lambdas], lr=scalar_lr, betas=(0.96, 0.95), eps=1e-10, weight_decay=0.0),
    ]
    for shape in sorted({p.shape for p in matrix_params}):
        group_params = [p for p in matrix_params if p.shape == shape]
        param_groups.append(dict(kind="muon", params=group_params, lr=matrix_lr, momentum=0.95, ns_steps=5, beta2=0.95, weight_decay=weight_decay))
    optimizer = UpMuonAdamW(param_groups)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer


def up_lr_multiplier(progress, warmup=0.0, warmdown=0.5, final=0.0):  # type: ignore[no-untyped-def]
    if progress < warmup:
        return progress / warmup if warmup > 0 else 1.0
    elif progress < 1.0 - warmdown:
        return 1.0
    cooldown = (1.0 - progress) / warmdown
    return cooldown * 1.0 + (1 - cooldown) * final


def up_muon_momentum(step):  # type: ignore[no-untyped-def]
    frac = min(step / 300, 1)
    return (1 - frac) * 0.85 + frac * 0.95


def up_weight_decay(progress, weight_decay=0.2):  # type: ignore[no-untyped-def]
    return weight_decay * (1 - progress)


# --------------------------------------------------------------------------------------------------
# Helpers


def _model(pattern: str = "SL", seq_len: int = 32, n_layer: int = 2, embed_dtype: torch.dtype = torch.float32):  # type: ignore[no-untyped-def]
    config = rt.GPTConfig(sequence_len=seq_len, vocab_size=257, n_layer=n_layer, n_head=2, n_embd=64, window_pattern=pattern)
    torch.manual_seed(0)
    model = rt.GPT(config)
    model.init_weights()
    with torch.no_grad():  # move away from the init (zero projections would make most gradients 0)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.wte.to(embed_dtype)
    model.value_embeds.to(embed_dtype)
    return model


def _set_grads(model, seed: int) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)


def _schedule(opt, step: int, progress: float, ours: bool) -> None:  # type: ignore[no-untyped-def]
    lrm = rt.lr_multiplier(progress) if ours else up_lr_multiplier(progress)
    for group in opt.param_groups:
        group["lr"] = group["initial_lr"] * lrm
        if group["kind"] == "muon":
            group["momentum"] = rt.muon_momentum(step) if ours else up_muon_momentum(step)
            group["weight_decay"] = rt.WEIGHT_DECAY * (1 - progress) if ours else up_weight_decay(progress)


def _run_steps(model, opt, ours: bool, steps: int = 3) -> None:  # type: ignore[no-untyped-def]
    for step in range(steps):
        _set_grads(model, seed=100 + step)
        _schedule(opt, step, progress=0.3 * step, ours=ours)
        opt.step()


# --------------------------------------------------------------------------------------------------
# Optimizer


def test_hyperparameters_are_upstreams() -> None:
    assert (rt.EMBEDDING_LR, rt.UNEMBEDDING_LR, rt.MATRIX_LR, rt.SCALAR_LR, rt.WEIGHT_DECAY) == (0.6, 0.004, 0.04, 0.5, 0.2)
    assert (rt.ADAM_BETAS, rt.X0_BETAS, rt.RESID_LR_FRAC) == ((0.8, 0.95), (0.96, 0.95), 0.01)
    assert (rt.MUON_MOMENTUM, rt.MUON_MOMENTUM_START, rt.MUON_MOMENTUM_WARMUP_STEPS, rt.MUON_BETA2) == (0.95, 0.85, 300, 0.95)
    assert (rt.WARMUP_RATIO, rt.WARMDOWN_RATIO, rt.FINAL_LR_FRAC, rt.POLAR_EXPRESS_STEPS) == (0.0, 0.5, 0.0, 5)
    assert (rt.DEPTH, rt.ASPECT_RATIO, rt.HEAD_DIM, rt.WINDOW_PATTERN, rt.TOTAL_BATCH_SIZE, rt.DEVICE_BATCH_SIZE) == (8, 64, 128, "SSSL", 2**19, 128)
    assert [list(c) for c in rt.POLAR_EXPRESS_COEFFS] == [list(c) for c in UP_POLAR_EXPRESS]


@pytest.mark.parametrize("step", [0, 1, 150, 299, 300, 1000])
def test_schedules_are_upstreams(step: int) -> None:
    assert rt.muon_momentum(step) == up_muon_momentum(step)
    for progress in np.linspace(0, 1, 21):
        assert rt.lr_multiplier(float(progress)) == up_lr_multiplier(float(progress))


@pytest.mark.parametrize("embed_dtype", [torch.float32, torch.bfloat16], ids=["fp32-embeddings", "bf16-embeddings-as-on-cuda"])
def test_three_steps_equal_upstreams_update_exactly_with_bf16_orthogonalisation(embed_dtype: torch.dtype) -> None:
    ours, theirs = _model(embed_dtype=embed_dtype), None
    theirs = copy.deepcopy(ours)
    opt = rt.make_optimizer(ours)
    opt.ortho_dtype = torch.bfloat16  # what make_optimizer picks on CUDA (upstream's dtype)
    up = up_setup_optimizer(theirs)
    assert len(opt.param_groups) == len(up.param_groups)
    for a, b in zip(opt.param_groups, up.param_groups, strict=True):
        assert [id(p) for p in a["params"]] == [id(p) for p in ours.parameters() if any(p is q for q in a["params"])]
        assert a["kind"] == b["kind"] and a["lr"] == b["lr"] and a.get("betas") == b.get("betas")
    before = {n: p.detach().clone() for n, p in ours.named_parameters()}
    _run_steps(ours, opt, ours=True)
    _run_steps(theirs, up, ours=False)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert not torch.equal(p, before[name]), name  # every parameter moved
        assert torch.equal(p, q), (name, (p - q).abs().max().item())


def test_cpu_float32_orthogonalisation_matches_upstream_to_bf16_precision() -> None:
    ours = _model()
    theirs = copy.deepcopy(ours)
    opt, up = rt.make_optimizer(ours), up_setup_optimizer(theirs)
    assert opt.ortho_dtype == torch.float32  # CPU
    before = {n: p.detach().clone() for n, p in ours.named_parameters()}
    _run_steps(ours, opt, ours=True)
    _run_steps(theirs, up, ours=False)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        mine, upstream = (p - before[name]).flatten(), (q - before[name]).flatten()
        if not name.startswith("blocks."):
            assert torch.equal(p, q), name  # AdamW: no orthogonalisation, no difference
            continue
        # Muon: bf16 keeps 8 mantissa bits through 5 Polar Express iterations, whose last steps
        # amplify perturbations of the singular values; measured here: 3-7 % of the step's norm
        # (worst: the 2 × 32 ve_gate), cosine ≥ 0.9977
        assert (mine - upstream).norm() <= 0.1 * upstream.norm(), name
        assert torch.nn.functional.cosine_similarity(mine, upstream, dim=0) >= 0.995, name


def test_polar_express_orthogonalises() -> None:
    G = torch.randn(3, 96, 32)
    X = rt.polar_express(G, 5, torch.float32)  # tall
    s = torch.linalg.svdvals(X)
    assert X.shape == G.shape and ((s > 0.6) & (s < 1.25)).all()  # near-orthogonal, as Polar Express leaves it
    XT = rt.polar_express(G.mT, 5, torch.float32)  # wide: the same matrices transposed
    torch.testing.assert_close(XT, X.mT, atol=1e-4, rtol=1e-4)


def test_cautious_weight_decay_only_decays_where_the_update_agrees() -> None:
    torch.manual_seed(1)
    params = torch.randn(1, 16, 16)
    grads = torch.randn(1, 16, 16)
    mom, second = torch.zeros_like(params), torch.zeros(1, 16, 1)
    updated = {}
    for wd in (0.0, 0.5):  # momentum 0: the update is the orthogonalised gradient, rescaled by NorMuon (> 0)
        p = params.clone()
        rt.muon_update(grads.clone(), p, mom.clone(), second.clone(), torch.tensor(0.0), torch.tensor(0.01), torch.tensor(wd),
                       torch.tensor(0.95), 5, -1, torch.float32)  # fmt: skip
        updated[wd] = p
    decay = updated[0.5] - updated[0.0]  # the weight-decay part of the step
    g = rt.polar_express(grads, 5, torch.float32)
    agrees = (g * params) >= 0
    assert (decay[~agrees] == 0).all() and (decay[agrees] != 0).all()


def test_muon_runs_batched_one_call_per_shape() -> None:
    model = _model(n_layer=4, pattern="SSSL")
    opt = rt.make_optimizer(model)
    muon = [g for g in opt.param_groups if g["kind"] == "muon"]
    shapes = [tuple(g["params"][0].shape) for g in muon]
    assert len(shapes) == len(set(shapes)) and all(len({p.shape for p in g["params"]}) == 1 for g in muon)
    assert sum(len(g["params"]) for g in muon) == len(list(model.blocks.parameters()))
    calls: list[tuple[int, ...]] = []
    inner = opt._muon
    opt._muon = lambda grads, *rest: (calls.append(tuple(grads.shape)), inner(grads, *rest))
    _set_grads(model, 0)
    opt.step()
    assert sorted(calls) == sorted((len(g["params"]), *g["params"][0].shape) for g in muon)


# --------------------------------------------------------------------------------------------------
# Attention windows


@pytest.mark.parametrize("window", [0, 1, 5, 16])
def test_band_mask_has_fa3_window_semantics(window: int) -> None:
    mask = rt.band_mask(24, window, "cpu")
    for i in range(24):
        keys = torch.nonzero(mask[i]).flatten().tolist()
        assert keys == list(range(max(0, i - window), i + 1))  # FA3 window_size=(window, 0): window + 1 keys


def test_model_windows_follow_the_pattern_and_estimate_flops_as_upstream() -> None:
    model = _model(pattern="SSL", seq_len=32, n_layer=4)
    assert model.windows == [16, 16, 32, 32]  # S = half the context; the last layer is always L
    # upstream's estimate_flops, transcribed
    nparams = sum(p.numel() for p in model.parameters())
    exclude = model.wte.weight.numel() + sum(ve.weight.numel() for ve in model.value_embeds.values())
    exclude += model.resid_lambdas.numel() + model.x0_lambdas.numel()
    h, q, t = model.config.n_head, model.config.n_embd // model.config.n_head, model.config.sequence_len
    attn = sum(12 * h * q * min(w, t) for w in model.windows)
    assert model.estimate_flops() == 6 * (nparams - exclude) + attn


def test_flex_block_masks_give_the_same_logits_as_the_dense_band_mask() -> None:
    model = _model(pattern="SSL", seq_len=64, n_layer=3).eval()
    idx = torch.randint(0, 257, (2, 64))
    masks = model.flex_block_masks(64, "cpu")
    assert masks[0] is masks[1] and masks[0] is not None and masks[2] is None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile")
        flex = model(idx, block_masks=masks)
        dense = model(idx)
    torch.testing.assert_close(flex, dense, atol=1e-5, rtol=1e-5)
    # and the window is really short: changing a token more than 32 + 32 positions back (two S
    # layers, one L layer would reach it, so use S-only) leaves the last position alone
    s_only = _model(pattern="S", seq_len=64, n_layer=2).eval()
    s_only.windows = [16, 16]  # two S layers (the last is normally L)
    idx2 = idx.clone()
    idx2[:, 10] = (idx2[:, 10] + 1) % 257
    with torch.no_grad():
        a, b = s_only(idx), s_only(idx2)
    assert torch.equal(a[:, 63], b[:, 63]) and not torch.equal(a[:, 42], b[:, 42])  # 63 - 10 > 2 × 16 ≥ 42 - 10


# --------------------------------------------------------------------------------------------------
# The training loop, with an in-process handle


class _Handle:
    """The ``h`` API over the tiny track's data, stopping after ``steps`` optimizer steps."""

    def __init__(self, steps: int) -> None:
        track = tracks.get_track("tiny")
        corpus = data.load_corpus(track)
        self.device, self.vocab_size, self.max_seq_len = torch.device("cpu"), corpus.vocab_size, track.max_seq_len
        self.time_budget, self.seed, self.bos_id = track.time_budget, 0, corpus.bos_id
        self._packer = data.BestFitPacker(corpus.train_stream(0), track.max_seq_len + 1, corpus.bos_id)
        self.steps, self.reported, self.batches = steps, 0, 0

    def next_batch(self, B: int, T: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self.batches += 1
        rows = torch.from_numpy(np.stack([self._packer.next_row() for _ in range(B)]))
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()

    def should_stop(self) -> bool:
        return self.reported >= self.steps

    def progress(self) -> float:
        return self.reported / self.steps

    def time_left(self) -> float:
        return self.time_budget * (1 - self.progress())

    def report(self, step: int, loss: float) -> None:
        assert step == self.reported
        self.reported += 1


def _load_tiny(tmp_path: Path) -> ModuleType:
    path = tmp_path / "train.py"
    path.write_text(tracks.reference_source("tiny"))
    spec = importlib.util.spec_from_file_location("train", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    spec.loader.exec_module(module)
    return module


def test_tiny_reference_trains_prefetches_and_returns_a_picklable_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = _load_tiny(tmp_path)
    h = _Handle(steps=6)
    try:
        model = train.train(h)
    finally:
        gc.enable()  # the reference switches the cyclic GC off for the rest of its process
        gc.unfreeze()
        sys.modules.pop("train", None)
    accum = train.TOTAL_BATCH_SIZE // (train.DEVICE_BATCH_SIZE * h.max_seq_len)
    assert h.reported == 6 and h.batches == 6 * accum + 1  # the next batch is always fetched ahead
    assert type(model).__name__ == "GPT" and not hasattr(model, "_orig_mod")
    monkeypatch.setitem(sys.modules, "train", train)
    buf = io.BytesIO()
    torch.save(model, buf)  # what the training worker sends
    loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    idx = torch.randint(0, 257, (2, h.max_seq_len))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(idx), model.eval()(idx), atol=0, rtol=0)


@pytest.mark.slow  # about a minute of Dynamo tracing on a small CPU
def test_cuda_code_paths_capture_whole_graphs() -> None:
    """What ``torch.compile`` gets on CUDA — the model with FlexAttention block masks, the two
    optimizer updates — traces with ``fullgraph=True`` (no graph break), here with the eager backend
    on CPU (FlexAttention has no CPU backward, so the flex forward runs without gradients)."""
    model = _model(pattern="SL", seq_len=128)
    masks = model.flex_block_masks(128, "cpu")
    fwd = torch.compile(model, dynamic=False, fullgraph=True, backend="aot_eager")
    x, y = torch.randint(0, 257, (2, 128)), torch.randint(0, 257, (2, 128))
    with torch.no_grad():
        torch.testing.assert_close(fwd(x, None, masks), model(x), atol=1e-5, rtol=1e-5)
    fwd(x, y, None).backward()
    opt = rt.make_optimizer(model)
    opt._adamw = torch.compile(rt.adamw_update, dynamic=False, fullgraph=True, backend="aot_eager")
    opt._muon = torch.compile(rt.muon_update, dynamic=False, fullgraph=True, backend="aot_eager")
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
