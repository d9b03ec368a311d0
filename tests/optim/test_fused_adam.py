"""FusedAdam against torch.optim.Adam/AdamW (foreach=False): parameters and every state entry,
with PyTorch's own parity tolerances, on every backend that can run here."""

import subprocess
import sys
import warnings

import pytest
import torch

from adamtune.optim import FusedAdam, cpu

BACKENDS = ["reference", "cpu", "triton"]
TOLERANCE = {
    torch.float32: dict(rtol=1.3e-6, atol=1e-5),
    torch.float64: dict(rtol=1e-7, atol=1e-7),
    torch.bfloat16: dict(rtol=5e-3, atol=5e-3),
}
CONFIGS = {
    "defaults": dict(lr=1e-3),
    "high-lr-low-betas": dict(lr=3e-2, betas=(0.3, 0.8), eps=1e-6),
    "l2": dict(lr=1e-2, weight_decay=0.1),
    "decoupled": dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
    "amsgrad": dict(lr=1e-2, amsgrad=True, weight_decay=0.05, decoupled_weight_decay=True),
    "maximize": dict(lr=1e-2, maximize=True, weight_decay=0.01),
    "amsgrad-maximize-l2": dict(lr=5e-3, amsgrad=True, maximize=True, weight_decay=0.1),
    "tensor-lr": dict(lr=torch.tensor(1e-2), weight_decay=0.1, decoupled_weight_decay=True),
}


def make_params(dtype):
    """A weight, a bias, a transposed (non-contiguous) weight, a zero-size and a frozen one."""
    torch.manual_seed(0)
    return [
        torch.randn(8, 5, dtype=dtype),
        torch.randn(5, dtype=dtype),
        torch.randn(5, 8, dtype=dtype).t(),
        torch.randn(0, 3, dtype=dtype),
        torch.randn(3, dtype=dtype),
    ]


def torch_optimizer(params, config, **extra):
    kwargs = dict(config)
    decoupled = kwargs.pop("decoupled_weight_decay", False)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    if not decoupled:
        kwargs.setdefault("weight_decay", 0.0)
    return cls(params, **kwargs, **extra)


def set_grads(params, step, dtype):
    g = torch.Generator().manual_seed(100 + step)
    weight, bias, transposed, empty, _frozen = params
    weight.grad = torch.randn(8, 5, generator=g).to(dtype)
    bias.grad = None if step % 3 == 0 else torch.randn(5, generator=g).to(dtype)
    transposed.grad = torch.randn(5, 8, generator=g).to(dtype).t()
    empty.grad = torch.zeros(0, 3, dtype=dtype)


def run_pair(backend, config, dtype, steps=20, **torch_extra):
    if isinstance(config.get("lr"), torch.Tensor):  # torch computes in the lr tensor's dtype
        config = {
            **config,
            "lr": config["lr"].to(torch.float64 if dtype == torch.float64 else torch.float32),
        }
    ours = [p.clone() for p in make_params(dtype)]
    ours[2] = make_params(dtype)[2]  # keep the non-contiguous layout
    theirs = [p.clone() for p in make_params(dtype)]
    theirs[2] = make_params(dtype)[2]
    optimizer = FusedAdam(ours, backend=backend, **config)
    reference = torch_optimizer(theirs, config, **torch_extra)
    for step in range(steps):
        set_grads(ours, step, dtype)
        set_grads(theirs, step, dtype)
        optimizer.step()
        reference.step()
    return ours, theirs, optimizer, reference


def assert_same(ours, theirs, optimizer, reference, dtype):
    for mine, torchs in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, torchs, **TOLERANCE[dtype])
        assert set(optimizer.state[mine]) == set(reference.state[torchs])
        for key, value in reference.state[torchs].items():
            torch.testing.assert_close(
                optimizer.state[mine][key],
                value,
                **TOLERANCE[dtype],
                msg=lambda m, key=key: f"state {key}: {m}",
            )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_matches_torch_adam_for_loop(backend, name, dtype):
    ours, theirs, optimizer, reference = run_pair(backend, CONFIGS[name], dtype, foreach=False)
    assert_same(ours, theirs, optimizer, reference, dtype)
    assert optimizer.state[ours[1]]["step"].item() == 13  # its grad was None on 7 of 20 steps
    assert ours[4].grad is None and not optimizer.state[ours[4]]  # frozen: untouched


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["defaults", "decoupled", "amsgrad-maximize-l2"])
def test_bf16_matches_torch_fused(backend, name):
    # torch's for-loop Adam rounds every intermediate to bf16; its fused kernel (like ours)
    # computes in fp32 and rounds once, so that is the implementation to compare with.
    ours, theirs, optimizer, reference = run_pair(
        backend, CONFIGS[name], torch.bfloat16, fused=True
    )
    assert_same(ours, theirs, optimizer, reference, torch.bfloat16)


def random_config(seed):
    """A random configuration across the ranges a search visits: beta2 up to 1 - 1e-5."""
    g = torch.Generator().manual_seed(seed)
    u = lambda: torch.rand((), generator=g).item()  # noqa: E731
    return dict(
        lr=10 ** (-4 + 3 * u()),
        betas=(1 - 10 ** (-3 * u()) * 0.5, 1 - 10 ** (-5 + 4 * u())),
        eps=10 ** (-10 + 6 * u()),
        weight_decay=u() * 0.2,
        decoupled_weight_decay=u() > 0.5,
        amsgrad=u() > 0.7,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e-4, 1e-2, 1.0, 1e2])
@pytest.mark.parametrize("seed", range(4))
def test_random_configs_and_gradient_scales_match_torch(backend, scale, seed):
    """Every state entry of every backend against torch, over random configurations and
    gradients from 1e-4 to 1e2: a kernel that computes 1 - beta2 in float32 drifts here."""
    config = random_config(seed)
    torch.manual_seed(seed)
    ours = [torch.randn(64, 33), torch.randn(7)]
    theirs = [p.clone() for p in ours]
    optimizer = FusedAdam(ours, backend=backend, **config)
    reference = torch_optimizer(theirs, config, foreach=False)
    g = torch.Generator().manual_seed(1000 + seed)
    for _ in range(15):
        for mine, other in zip(ours, theirs, strict=True):
            mine.grad = torch.randn(mine.shape, generator=g) * scale
            other.grad = mine.grad.clone()
        optimizer.step()
        reference.step()
    assert_same(ours, theirs, optimizer, reference, torch.float32)


# How per-row hyperparameter tensors may arrive: the native coefficient table reads float32 and
# float64 in place; a strided view goes through Python floats.
HYPER_LAYOUTS = {
    "float32": lambda t: t,
    "float64": lambda t: t.double(),
    "strided": lambda t: t.repeat_interleave(2)[::2],
}


@pytest.mark.parametrize("layout", list(HYPER_LAYOUTS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_per_row_hyperparameters_equal_independent_optimizers(backend, layout):
    n = 6
    lr, beta1, beta2, eps, wd = map(
        HYPER_LAYOUTS[layout],
        (
            torch.logspace(-4, -1, n),
            torch.linspace(0.5, 0.95, n),
            torch.linspace(0.9, 0.999, n),
            torch.logspace(-10, -6, n),
            torch.linspace(0.0, 0.2, n),
        ),
    )
    torch.manual_seed(0)
    stacked = [torch.randn(n, 4, 3), torch.randn(n, 7)]
    ours = [p.clone() for p in stacked]
    optimizer = FusedAdam(
        ours,
        lr=lr,
        betas=(beta1, beta2),
        eps=eps,
        weight_decay=wd,
        decoupled_weight_decay=True,
        amsgrad=True,
        backend=backend,
    )
    rows = [[p[i].clone() for p in stacked] for i in range(n)]
    singles = [
        torch.optim.AdamW(
            rows[i],
            lr=lr[i].item(),
            betas=(beta1[i].item(), beta2[i].item()),
            eps=eps[i].item(),
            weight_decay=wd[i].item(),
            amsgrad=True,
            foreach=False,
        )
        for i in range(n)
    ]
    for step in range(20):
        g = torch.Generator().manual_seed(step)
        grads = [torch.randn(p.shape, generator=g) for p in stacked]
        for p, grad in zip(ours, grads, strict=True):
            p.grad = grad.clone()
        for i in range(n):
            for p, grad in zip(rows[i], grads, strict=True):
                p.grad = grad[i].clone()
            singles[i].step()
        optimizer.step()
    for i in range(n):
        for p, row in zip(ours, rows[i], strict=True):
            torch.testing.assert_close(p[i], row, **TOLERANCE[torch.float32])
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                torch.testing.assert_close(
                    optimizer.state[p][key][i],
                    singles[i].state[row][key],
                    **TOLERANCE[torch.float32],
                )


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_row_step_counts_give_a_row_that_joined_later_its_own_bias_correction(backend):
    """A stack row reset mid-run (a new trial in a freed slot) trains as a fresh optimizer."""
    n, joined = 3, 4
    lr = torch.tensor([1e-2, 3e-2, 1e-3], dtype=torch.float64)
    beta1 = torch.tensor([0.9, 0.5, 0.8], dtype=torch.float64)
    torch.manual_seed(0)
    start = [torch.randn(n, 5), torch.randn(n)]
    ours = [p.clone() for p in start]
    optimizer = FusedAdam(ours, lr=lr, betas=(beta1, 0.999), weight_decay=0.01, backend=backend)
    singles = []
    for i in range(n):
        rows = [p[i].clone() for p in start]
        singles.append(
            (
                rows,
                torch.optim.Adam(
                    rows,
                    lr=lr[i].item(),
                    betas=(beta1[i].item(), 0.999),
                    weight_decay=0.01,
                    foreach=False,
                ),
            )
        )

    def step(k, active):
        g = torch.Generator().manual_seed(k)
        grads = [torch.randn(p.shape, generator=g) for p in start]
        for p, grad in zip(ours, grads, strict=True):
            p.grad = grad.clone()
        optimizer.step()
        for i in active:
            rows, single = singles[i]
            for p, grad in zip(rows, grads, strict=True):
                p.grad = grad[i].clone()
            single.step()

    for k in range(joined):
        step(k, active=[0, 2])
    fresh = [torch.randn(p.shape[1:]) for p in start]  # row 1 restarts from new weights
    with torch.no_grad():
        for p, value in zip(ours, fresh, strict=True):
            p[1] = value
            state = optimizer.state[p]
            state["exp_avg"][1] = 0
            state["exp_avg_sq"][1] = 0
            state["step"] = torch.tensor([joined, 0, joined], dtype=torch.float32)
    rows = [value.clone() for value in fresh]
    singles[1] = (
        rows,
        torch.optim.Adam(rows, lr=3e-2, betas=(0.5, 0.999), weight_decay=0.01, foreach=False),
    )
    for k in range(joined, joined + 10):
        step(k, active=[0, 1, 2])
    for i in range(n):
        for p, row in zip(ours, singles[i][0], strict=True):
            torch.testing.assert_close(p[i], row, **TOLERANCE[torch.float32])
    assert optimizer.state[ours[0]]["step"].tolist() == [joined + 10, 10, joined + 10]


def test_a_per_row_step_count_of_the_wrong_length_is_refused():
    p = torch.zeros(3, 2, requires_grad=True)
    optimizer = FusedAdam([p], lr=torch.full((3,), 1e-3))
    p.grad = torch.ones(3, 2)
    optimizer.step()
    optimizer.state[p]["step"] = torch.zeros(2)
    p.grad = torch.ones(3, 2)
    with pytest.raises(ValueError, match="a per-row step count needs 3 rows, got 2"):
        optimizer.step()


HYPER_FORMS = {
    "floats": [1e-3, 0.9, 0.999, 1e-8, 0.01],
    "0-dim tensors": [torch.tensor(3e-2), 0.5, torch.tensor(0.99, dtype=torch.float64), 0.0, 0.1],
    "float32 rows": [torch.logspace(-4, -1, 5), 0.9, torch.linspace(0.9, 0.999, 5), 1e-8, 0.2],
    "float64 rows": [
        torch.logspace(-4, -1, 5, dtype=torch.float64),
        torch.linspace(0.0, 0.95, 5, dtype=torch.float64),
        0.999,
        torch.logspace(-10, -6, 5, dtype=torch.float64),
        torch.linspace(0.0, 0.3, 5, dtype=torch.float64),
    ],
}


@pytest.mark.parametrize("decoupled", [False, True], ids=["l2", "decoupled"])
@pytest.mark.parametrize("form", list(HYPER_FORMS))
def test_native_coefficient_table_equals_python_floats_bit_for_bit(form, decoupled):
    from adamtune.optim import fused_adam

    hypers = HYPER_FORMS[form]
    n_rows = 5 if "rows" in form else 1
    steps = [1.0, 2.0, 37.0, 10_000.0]
    assert all(map(cpu.reads_hyperparameter, hypers))
    native = cpu.coefficients(steps, hypers, n_rows, decoupled)
    python = fused_adam._python_coefficients(hypers, steps, n_rows, decoupled)
    assert native.shape == (len(steps) * n_rows, 7)
    assert torch.equal(native, python)


def test_coefficient_table_is_native_unless_a_hyperparameter_cannot_be_read_in_place(
    monkeypatch,
):
    calls = []
    original = cpu.coefficients
    monkeypatch.setattr(cpu, "coefficients", lambda *a: (calls.append(a[2]), original(*a))[1])
    for lr in (torch.full((3,), 1e-3), torch.full((6,), 1e-3)[::2], torch.full((3,), 1e-3).half()):
        param = torch.zeros(3, 2)
        param.grad = torch.ones(3, 2)
        FusedAdam([param], lr=lr, backend="cpu").step()
        torch.testing.assert_close(param, torch.full((3, 2), -1e-3))
    assert calls == [3]  # the strided view and the float16 tensor took the Python path


def test_per_row_needs_matching_leading_dimension():
    with pytest.raises(
        ValueError,
        match="need every parameter of the group to have leading "
        r"dimension 3, got shape \(4, 2\)",
    ):
        FusedAdam([torch.zeros(4, 2)], lr=torch.tensor([1e-3, 1e-2, 1e-1]))
    with pytest.raises(ValueError, match="must all have the same length"):
        FusedAdam([torch.zeros(3)], lr=torch.ones(3) * 1e-3, eps=torch.ones(2) * 1e-8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
        (dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
        (dict(betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5"),
        (dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
        (dict(betas=(0.9, torch.tensor([0.9, 1.5]))), "Invalid beta parameter at index 1: 1.5"),
        (dict(backend="cuda"), "Invalid backend: 'cuda'"),
    ],
)
def test_invalid_arguments_are_rejected_like_torch(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FusedAdam([torch.zeros(2, 2)], **kwargs)


def test_sparse_gradients_and_complex_parameters_are_refused():
    p = torch.zeros(4, 2)
    optimizer = FusedAdam([p])
    p.grad = torch.zeros(4, 2).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        optimizer.step()
    with pytest.raises(ValueError, match="does not support complex parameters"):
        FusedAdam([torch.zeros(2, dtype=torch.complex64)])


def test_triton_backend_without_cuda_or_interpreter_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    p = torch.zeros(3)
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="backend 'triton' needs triton and CUDA tensors"):
        FusedAdam([p], backend="triton").step()


def test_without_a_compiler_it_warns_once_and_falls_back(monkeypatch):
    cpu.library.cache_clear()
    cpu._warn_once.cache_clear()
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(cpu.shutil, "which", lambda name: None)
    p = torch.ones(3)
    optimizer = FusedAdam([p], lr=0.1)
    try:
        with pytest.warns(
            RuntimeWarning,
            match="native CPU Adam kernel unavailable .*no C compiler found.*falling back",
        ):
            for _ in range(2):
                p.grad = torch.ones(3)
                optimizer.step()
        assert torch.allclose(p, torch.full((3,), 0.8))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            p.grad = torch.ones(3)
            optimizer.step()  # no second warning
    finally:
        cpu.library.cache_clear()


def test_many_tensors_cost_one_kernel_call(monkeypatch):
    calls = []
    original = cpu.step
    monkeypatch.setattr(cpu, "step", lambda *a, **k: (calls.append(len(a[0])), original(*a, **k)))
    params = [torch.randn(7, 3) for _ in range(200)]
    optimizer = FusedAdam(params, backend="cpu")
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()
    assert calls == [200]


def test_many_step_counters_advance_in_one_native_call(monkeypatch):
    calls = []
    original = cpu.advance_steps
    monkeypatch.setattr(
        cpu, "advance_steps", lambda steps: (calls.append(len(steps)), original(steps))[1]
    )
    params = [torch.randn(3) for _ in range(200)]
    optimizer = FusedAdam(params, backend="cpu")
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer.step()
    assert calls == [200, 200, 200]
    assert {optimizer.state[p]["step"].item() for p in params} == {3.0}


def test_step_counters_of_another_dtype_still_count(monkeypatch):
    """A state loaded from torch.optim.Adam made under float64 default dtype holds float64
    counters; the native counter update must not write float32 into them."""
    torch.manual_seed(0)
    params = [torch.randn(5), torch.randn(5)]
    twin = [p.clone() for p in params]
    optimizer = FusedAdam(params, backend="cpu")
    expected = torch.optim.Adam(twin, foreach=False)
    for step in range(4):
        grads = [torch.randn(5), torch.randn(5)]
        for p, t, g in zip(params, twin, grads, strict=True):
            p.grad, t.grad = g, g.clone()
        optimizer.step()
        expected.step()
        if step == 0:
            optimizer.state[params[1]]["step"] = torch.tensor(1.0, dtype=torch.float64)
    assert optimizer.state[params[1]]["step"].dtype == torch.float64
    assert [optimizer.state[p]["step"].item() for p in params] == [4.0, 4.0]
    for p, t in zip(params, twin, strict=True):
        torch.testing.assert_close(p, t)


def test_state_dict_round_trips_with_torch_adamw():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(16, 4)

    def train(module, optimizer, steps):
        for _ in range(steps):
            optimizer.zero_grad()
            module(x).pow(2).mean().backward()
            optimizer.step()

    ours = FusedAdam(model.parameters(), lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
    theirs = torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    train(model, ours, 5)
    train(twin, theirs, 5)
    # swap: torch continues from our state, we continue from torch's
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    torch_from_ours = torch.optim.AdamW(model.parameters(), lr=1e-2, foreach=False)
    torch_from_ours.load_state_dict(ours_state)
    ours_from_torch = FusedAdam(twin.parameters(), lr=1e-2)
    ours_from_torch.load_state_dict(theirs_state)
    train(model, torch_from_ours, 5)
    train(twin, ours_from_torch, 5)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE[torch.float32])
    assert ours_from_torch.param_groups[0]["decoupled_weight_decay"] is True


def test_lr_scheduler_drives_the_learning_rate():
    p = torch.zeros(2)
    optimizer = FusedAdam([p], lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    moves = []
    for _ in range(3):
        before = p.clone()
        p.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
        moves.append((before - p)[0].item())
    assert moves == pytest.approx([1.0, 0.5, 0.25], rel=1e-4)


def test_grad_scaler_skips_the_step_on_inf_gradients():
    p = torch.ones(3, requires_grad=True)
    optimizer = FusedAdam([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)

    def step(weights):
        optimizer.zero_grad()
        scaler.scale((p * torch.tensor(weights)).sum()).backward()
        scaler.step(optimizer)
        scaler.update()

    step([1.0, float("inf"), 1.0])
    assert torch.equal(p.detach(), torch.ones(3)) and not optimizer.state[p]
    assert scaler.get_scale() == 2.0
    step([1.0, 1.0, 1.0])  # unscaled gradient 1: Adam's first step moves by lr
    torch.testing.assert_close(p.detach(), torch.full((3,), 0.9))


def test_importing_the_package_needs_only_torch():
    code = (
        "import sys, adamtune.optim; "
        "print(sorted(m for m in ('triton', 'optuna', 'mlflow', 'click') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_training_with_it_never_imports_torch_dynamo():
    """torch.optim.Optimizer's methods import torch._dynamo (1-2 s) on first call; FusedAdam
    skips that import while nothing else has made it, and uses torch's wrappers once it has."""
    code = (
        "import sys, torch\n"
        "from adamtune.optim import FusedAdam\n"
        "p = torch.zeros(3, requires_grad=True)\n"
        "opt = FusedAdam([p], lr=0.1)\n"
        "opt.add_param_group({'params': [torch.zeros(2, requires_grad=True)]})\n"
        "for _ in range(2):\n"
        "    opt.zero_grad()\n"
        "    (p * torch.arange(3.0)).sum().backward()\n"
        "    opt.step()\n"
        "opt.load_state_dict(opt.state_dict())\n"
        "print('torch._dynamo' in sys.modules, [round(x, 4) for x in p.tolist()])\n"
        "import torch._dynamo\n"
        "opt.zero_grad()\n"
        "opt.load_state_dict(opt.state_dict())\n"
        "print(p.grad, opt.zero_grad.__name__, FusedAdam.state_dict.__doc__ is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "False [0.0, -0.2, -0.2]",
        "None zero_grad True",
    ]
