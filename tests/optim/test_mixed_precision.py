"""FusedAdam's mixed precision: float32 state under bf16/fp16 weights, and stochastic rounding of
the bf16 weight update, on every backend against the reference and against torch."""

import copy

import pytest
import torch

from adamtune.optim import FusedAdam, reference

BACKENDS = ["reference", "cpu", "triton"]
BF16 = dict(rtol=5e-3, atol=5e-3)  # PyTorch's own fused-vs-for-loop tolerance for bf16
FP32 = dict(rtol=1.3e-6, atol=1e-5)
BF16_ULP_AT_1_5 = 2.0**-7  # the spacing of bfloat16 values in [1, 2)


def train(backend, steps=20, dtype=torch.bfloat16, **options):
    torch.manual_seed(0)
    params = [torch.randn(64, 33).to(dtype), torch.randn(7).to(dtype)]
    optimizer = FusedAdam(
        params, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, backend=backend, **options
    )
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(dtype)
        optimizer.step()
    return params, optimizer


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("stochastic", [False, True], ids=["nearest", "stochastic"])
def test_float32_state_under_half_weights_matches_the_reference(backend, dtype, stochastic):
    options = dict(state_dtype=torch.float32, stochastic_rounding=stochastic, amsgrad=True)
    ours, optimizer = train(backend, dtype=dtype, **options)
    spec, expected = train("reference", dtype=dtype, **options)
    for mine, theirs in zip(ours, spec, strict=True):
        assert mine.dtype == dtype
        torch.testing.assert_close(mine, theirs, **BF16)
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert optimizer.state[mine][key].dtype == torch.float32
            torch.testing.assert_close(
                optimizer.state[mine][key], expected.state[theirs][key], **FP32
            )


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_state_under_bf16_weights_matches_torch_fused_on_the_first_steps(backend):
    """While bf16 state still holds the moments exactly enough, a float32-state run and torch's
    fused bf16 AdamW agree to PyTorch's bf16 tolerance; the state itself is kept in float32."""
    ours, optimizer = train(backend, steps=5, state_dtype=torch.float32)
    torch.manual_seed(0)
    theirs = [torch.randn(64, 33).bfloat16(), torch.randn(7).bfloat16()]
    torch_adamw = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=0.1, fused=True)
    for step in range(5):
        g = torch.Generator().manual_seed(step)
        for p in theirs:
            p.grad = torch.randn(p.shape, generator=g).bfloat16()
        torch_adamw.step()
    for mine, other in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, other, **BF16)
        torch.testing.assert_close(
            optimizer.state[mine]["exp_avg"].bfloat16(), torch_adamw.state[other]["exp_avg"], **BF16
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("state_dtype", [None, torch.float32], ids=["bf16-state", "fp32-state"])
@pytest.mark.parametrize("stochastic", [False, True], ids=["nearest", "stochastic"])
def test_every_backend_rounds_an_update_to_the_same_bits(backend, state_dtype, stochastic):
    """betas 0 and eps 0 make the fp32 update exactly p - lr * sign(g) on every backend, so
    what is compared is the rounding alone: to nearest, or with the same random bits."""

    def one_step(name):
        torch.manual_seed(0)
        p = torch.randn(40_000).bfloat16()
        p.grad = torch.randn(40_000).bfloat16()
        FusedAdam(
            [p], lr=3e-3, betas=(0.0, 0.0), eps=0.0, backend=name, state_dtype=state_dtype,
            stochastic_rounding=stochastic, rounding_seed=11,
        ).step()  # fmt: skip
        return p

    ours, spec = one_step(backend), one_step("reference")
    assert torch.equal(ours, spec)
    if not stochastic:  # to nearest is torch's own conversion of the fp32 update
        torch.manual_seed(0)
        p, g = torch.randn(40_000).bfloat16().float(), torch.randn(40_000).bfloat16().float()
        assert torch.equal(ours, (p - 3e-3 * g.sign()).bfloat16())


def step_below_half_an_ulp(backend, n, fraction, seed=0, stochastic=True):
    """Weights at 1.5 (bf16), one Adam step of lr = ``fraction`` of a bf16 ulp downwards: round
    to nearest keeps 1.5; stochastic rounding goes down one ulp with probability ``fraction``."""
    p = torch.full((n,), 1.5, dtype=torch.bfloat16)
    optimizer = FusedAdam(
        [p],
        lr=fraction * BF16_ULP_AT_1_5,
        eps=0.0,
        backend=backend,
        state_dtype=torch.float32,
        stochastic_rounding=stochastic,
        rounding_seed=seed,
    )
    p.grad = torch.ones(n, dtype=torch.bfloat16)  # Adam's first step moves by exactly lr
    optimizer.step()
    return p


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.75])
def test_stochastic_rounding_is_unbiased(backend, fraction):
    n = 100_000
    nearest = step_below_half_an_ulp(backend, n, fraction, stochastic=False)
    rounded = 1.5 if fraction < 0.5 else 1.5 - BF16_ULP_AT_1_5
    assert torch.equal(nearest, torch.full((n,), rounded, dtype=torch.bfloat16))
    stochastic = step_below_half_an_ulp(backend, n, fraction)
    assert set(stochastic.float().unique().tolist()) == {1.5, 1.5 - BF16_ULP_AT_1_5}
    went_down = (stochastic < 1.5).double().mean().item()
    sigma = (fraction * (1 - fraction) / n) ** 0.5
    assert abs(went_down - fraction) < 5 * sigma  # the mean update is the fp32 update


@pytest.mark.parametrize("backend", BACKENDS)
def test_stochastic_rounding_is_seeded(backend):
    first = step_below_half_an_ulp(backend, 4096, 0.5, seed=1)
    again = step_below_half_an_ulp(backend, 4096, 0.5, seed=1)
    other = step_below_half_an_ulp(backend, 4096, 0.5, seed=2)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # elements of one tensor draw independently: not all one way, not alternating
    down = (first < 1.5).tolist()
    assert 0.4 < sum(down) / len(down) < 0.6
    assert sum(a != b for a, b in zip(down, down[1:], strict=False)) < 0.6 * len(down)


def test_each_step_and_each_tensor_draws_its_own_bits():
    salts = {reference.salt(0, g, k, s) for g in range(2) for k in range(10) for s in range(1, 50)}
    assert len(salts) == 2 * 10 * 49


def test_small_updates_move_bf16_weights_only_with_stochastic_rounding():
    """A thousand updates of a tenth of an ulp: to nearest the weights never move; stochastic
    rounding moves them by the fp32 total on average."""
    n, steps, fraction = 2048, 1000, 0.1
    lr = fraction * BF16_ULP_AT_1_5
    runs = {}
    for stochastic in (False, True):
        p = torch.full((n,), 1.5, dtype=torch.bfloat16)
        optimizer = FusedAdam(
            [p], lr=lr, eps=0.0, betas=(0.0, 0.0), state_dtype=torch.float32,
            stochastic_rounding=stochastic,
        )  # fmt: skip
        for _ in range(steps):
            p.grad = torch.ones(n, dtype=torch.bfloat16)
            optimizer.step()
        runs[stochastic] = p.float()
    assert torch.equal(runs[False], torch.full((n,), 1.5))
    moved = 1.5 - runs[True].mean().item()
    assert moved == pytest.approx(steps * lr, rel=0.05)


def test_stochastic_rounding_leaves_float32_weights_alone():
    plain, _ = train("cpu", dtype=torch.float32)
    rounded, _ = train("cpu", dtype=torch.float32, stochastic_rounding=True)
    for a, b in zip(plain, rounded, strict=True):
        assert torch.equal(a, b)


def test_state_dict_keeps_the_precision_settings():
    params, optimizer = train("cpu", steps=3, state_dtype=torch.float32, stochastic_rounding=True)
    saved = copy.deepcopy(optimizer.state_dict())  # as torch.save would: no shared tensors
    clones = [p.clone() for p in params]
    restored = FusedAdam(clones)
    restored.load_state_dict(saved)
    group = restored.param_groups[0]
    assert group["state_dtype"] == torch.float32 and group["stochastic_rounding"]
    for original, loaded in zip(params, clones, strict=True):
        assert restored.state[loaded]["exp_avg"].dtype == torch.float32
        g = torch.Generator().manual_seed(99)
        original.grad = torch.randn(original.shape, generator=g).bfloat16()
        loaded.grad = original.grad.clone()
    optimizer.step()
    restored.step()
    for original, loaded in zip(params, clones, strict=True):
        assert torch.equal(original, loaded)  # the same bits: the same salts after reloading


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(state_dtype=torch.float16), "Invalid state_dtype: torch.float16"),
        (dict(state_dtype="float32"), "Invalid state_dtype: float32"),
        (dict(rounding_seed=1.5), "Invalid rounding_seed: 1.5"),
    ],
)
def test_bad_precision_options_are_refused_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FusedAdam([torch.zeros(2, requires_grad=True)], **kwargs)
