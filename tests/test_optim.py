"""ClippedSGD / ClippedSSTM against plain float64 re-implementations of Algorithms 3.2 and 3.3,
plus the optimizer contract: arguments, state, output(), AMP order, builder."""

import io
import math

import numpy as np
import pytest
import torch

from clipbench.optim import METHODS, ClippedSGD, ClippedSSTM, build_optimizer

from tests._clipops import clip_

IMPLS = ("reference", "loop", "foreach")
# "blocked": the loop path with cache blocks of 4 entries, so the 6-entry problems below are
# split across two blocks (the real block, 2^19 entries, is never reached by them).
PATHS = ("reference", "loop", "blocked", "foreach")


def _path(impl, monkeypatch):
    if impl == "blocked":
        monkeypatch.setattr("clipbench.optim.clipping.CACHE_BLOCK", 4)
        return "loop"
    return impl


# --- independent float64 references (numpy, written from the thesis' formulas) ------------


def np_clip(g, mode, lam):
    if mode == "coordinate":
        return np.clip(g, -lam, lam)
    if mode == "none":
        return g
    n = np.linalg.norm(g)
    return g * min(1.0, lam / n) if n > 0 else g


def quadratic(dim=6, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((dim, dim))
    A = q @ q.T / dim + np.eye(dim)
    b = rng.standard_normal(dim)
    noise = rng.standard_t(2, size=(400, dim))  # heavy tails: infinite variance
    return A, b, noise


def ref_clipped_sgd(x0, A, b, noise, steps, lr, mu, mode, lam, target):
    """One tensor, so ``layer`` is ``norm`` of whatever it clips; with target "momentum"
    ``norm`` scales the buffer by the raw gradient's norm, ``layer`` by the buffer's own."""
    x, buf = x0.copy(), None
    for k in range(steps):
        g = A @ x - b + noise[k]
        if target == "grad" or mu == 0:
            d = np_clip(g, "norm" if mode == "layer" else mode, lam)
            if mu:
                buf = d.copy() if buf is None else mu * buf + d
                d = buf
        else:
            buf = g.copy() if buf is None else mu * buf + g
            if mode == "norm":
                d = buf * min(1.0, lam / np.linalg.norm(g))
            elif mode == "layer":
                d = buf * min(1.0, lam / np.linalg.norm(buf))
            else:
                d = np_clip(buf, mode, lam)
        x = x - lr * d
    return x


def ref_clipped_sstm(x0, A_mat, b, noise, steps, a, L, B, nu, mode, ratio_bound=None, ratio_mode="cap"):
    """Algorithm 3.3 (the thesis' indexing); returns the next gradient point x, y and z."""
    A, y, z = 0.0, x0.copy(), x0.copy()
    for k in range(steps + 1):
        alpha = (k + 2) ** (2 * nu / (1 + nu)) / (2 * a * L)
        A_next = A + alpha
        if ratio_bound is None:
            w = A / A_next
        elif ratio_mode == "cap":
            w = min(A / A_next, ratio_bound)
        else:  # reset A_k when A_k/A_{k+1} would pass the bound
            if A > alpha / (1 - ratio_bound):
                A = alpha * ratio_bound / (1 - ratio_bound)
                A_next = alpha / (1 - ratio_bound)
            w = A / A_next
        x = w * y + (1 - w) * z
        if k == steps:
            return x, y, z
        g = A_mat @ x - b + noise[k]
        z = z - alpha * np_clip(g, mode, B / alpha)
        y = w * y + (1 - w) * z
        A = A_next


def ref_sstm_authors(x0, A_mat, b, noise, steps, a, L, B, nu, mode, ratio_bound=None, ratio_mode="reset"):
    """The authors' public clipped_SSTM.step, transcribed for one tensor in float64 (their
    ``a_k_ratio_upper_bound`` is the ``reset`` form; ``cap`` bounds the weight instead)."""
    k, alpha_k_1, lambda_k_1, A_k, A_k_1 = 0, 0.0, 0.0, 0.0, 0.0
    x, y, z = x0.copy(), x0.copy(), x0.copy()

    def weight():
        w = A_k / A_k_1
        return min(w, ratio_bound) if ratio_bound is not None and ratio_mode == "cap" else w

    for call in range(steps):
        g = A_mat @ x - b + noise[call]  # at the first call: computed, unused
        if k > 0:
            z = z - alpha_k_1 * np_clip(g, mode, lambda_k_1)
            y = weight() * y + (1 - weight()) * z
        alpha_k_1 = (k + 1) ** (2 * nu / (1 + nu)) / (2 * a * L)
        A_k = A_k_1
        A_k_1 = A_k + alpha_k_1
        if ratio_bound is not None and ratio_mode == "reset":
            factor = 1.0 / (1.0 - ratio_bound)
            if A_k > factor * alpha_k_1:
                A_k = (factor - 1.0) * alpha_k_1
                A_k_1 = factor * alpha_k_1
        lambda_k_1 = B / alpha_k_1
        x = weight() * y + (1 - weight()) * z
        k += 1
    return x, y, z


def run_torch(opt_factory, x0, A, b, noise, steps):
    x = torch.nn.Parameter(torch.tensor(x0))
    At, bt = torch.tensor(A), torch.tensor(b)
    opt = opt_factory([x])
    for k in range(steps):
        x.grad = At @ x.detach() - bt + torch.tensor(noise[k])
        opt.step()
    return x, opt


@pytest.mark.parametrize("impl", PATHS)
@pytest.mark.parametrize("mode", ["norm", "layer", "coordinate", "none"])
@pytest.mark.parametrize("mu,target", [(0.0, "grad"), (0.9, "grad"), (0.9, "momentum")])
def test_clipped_sgd_matches_algorithm_3_2(impl, mode, mu, target, monkeypatch):
    impl = _path(impl, monkeypatch)
    A, b, noise = quadratic()
    x0 = np.ones(6)
    lam = 0.3 if mode == "coordinate" else 1.5
    want = ref_clipped_sgd(x0, A, b, noise, 60, 0.05, mu, mode, lam, target)
    x, _ = run_torch(lambda p: ClippedSGD(p, lr=0.05, momentum=mu, clipping=mode, clip_level=lam,
                                          clip_target=target, impl=impl), x0, A, b, noise, 60)
    # Tolerance relative to the values' size: kernels differ between CPUs (AVX2, AVX-512).
    np.testing.assert_allclose(x.detach().numpy(), want, rtol=0, atol=1e-12 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("mode", ["norm", "layer"])
def test_float32_fast_paths_match_the_reference(mode):
    """float32 on the CPU takes a fused path the float64 tests above do not reach (the clip
    scale as the momentum kernel's dampening); held to float32's resolution against the
    readable reference (a 1 % error in the scale fails it)."""
    shapes = [(64, 32), (300,), (8, 4, 3, 3)]
    results = {}
    for impl in ("reference", "loop"):
        torch.manual_seed(3)
        params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        sgd = ClippedSGD(params, lr=0.05, momentum=0.9, clipping=mode, clip_level=0.5, impl=impl)
        for k in range(6):
            gen = torch.Generator().manual_seed(k)
            for p in params:
                p.grad = 3 * torch.randn(p.shape, generator=gen)
            sgd.step()
            assert sgd.last_clip_stats["clipped"]
        results[impl] = [p.detach().clone() for p in params]
    for want, got in zip(results["reference"], results["loop"]):
        torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6 * want.abs().max().item())


@pytest.mark.parametrize("impl", PATHS)
@pytest.mark.parametrize("mode", ["norm", "coordinate", "none"])
@pytest.mark.parametrize("nu,ratio_bound", [(1.0, None), (0.5, None), (1.0, 0.9)])
def test_clipped_sstm_matches_algorithm_3_3(impl, mode, nu, ratio_bound, monkeypatch):
    impl = _path(impl, monkeypatch)
    A, b, noise = quadratic(seed=1)
    x0 = np.full(6, 2.0)
    a, L, B = 2.0, 3.0, 0.05 if mode == "coordinate" else 0.2
    _, y_want, z_want = ref_clipped_sstm(x0, A, b, noise, 60, a, L, B, nu, mode, ratio_bound)
    x, opt = run_torch(lambda p: ClippedSSTM(p, a=a, L=L, B=B, clipping=mode, nu=nu, ratio_bound=ratio_bound,
                                             impl=impl), x0, A, b, noise, 60)
    # Tolerance relative to the values' size (here up to 2e4): kernels differ between CPUs.
    with opt.output():
        np.testing.assert_allclose(x.detach().numpy(), y_want, rtol=0, atol=1e-12 * max(1.0, np.abs(y_want).max()))
    st = opt.state[x]
    np.testing.assert_allclose(st["z"].numpy(), z_want, rtol=0, atol=1e-12 * max(1.0, np.abs(z_want).max()))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["norm", "coordinate", "none"])
@pytest.mark.parametrize("indexing", ["thesis", "authors"])
@pytest.mark.parametrize("ratio_bound,ratio_mode", [(None, "cap"), (0.9, "cap"), (0.9, "reset"), (0.6, "reset")])
def test_clipped_sstm_forms_match_their_transcriptions(impl, mode, indexing, ratio_bound, ratio_mode):
    A, b, noise = quadratic(seed=2)
    x0 = np.full(6, -1.0)
    a, L, nu, B = 2.0, 3.0, 0.5, 0.05 if mode == "coordinate" else 0.2
    ref = ref_clipped_sstm if indexing == "thesis" else ref_sstm_authors
    x_want, y_want, z_want = ref(x0, A, b, noise, 60, a, L, B, nu, mode, ratio_bound, ratio_mode)
    x, opt = run_torch(lambda p: ClippedSSTM(p, a=a, L=L, B=B, clipping=mode, nu=nu, ratio_bound=ratio_bound,
                                             ratio_bound_mode=ratio_mode, indexing=indexing, impl=impl),
                       x0, A, b, noise, 60)
    for got, want in ((x.detach(), x_want), (opt.state[x]["y"], y_want), (opt.state[x]["z"], z_want)):
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12 * max(1.0, np.abs(want).max()))


def test_sstm_forms_differ():
    """The transcriptions are not vacuous: each option changes the trajectory."""
    A, b, noise = quadratic(seed=2)
    x0 = np.full(6, -1.0)
    runs = [ref(x0, A, b, noise, 60, 2.0, 3.0, 0.2, 1.0, "norm", 0.9, rm)[1]
            for ref in (ref_clipped_sstm, ref_sstm_authors) for rm in ("cap", "reset")]
    assert all(np.abs(u - v).max() > 1e-6 for i, u in enumerate(runs) for v in runs[i + 1:])


def test_sstm_authors_first_step_only_initializes():
    params = make_params()
    x0 = [p.detach().clone() for p in params]
    opt = ClippedSSTM(params, a=1.0, L=2.0, B=0.5, indexing="authors")
    set_grads(params, 0)
    opt.step()
    assert all(torch.equal(p, x) for p, x in zip(params, x0))
    assert opt.param_groups[0]["step"] == 1 and opt.param_groups[0]["A"] == 0.0
    assert opt.last_clip_stats["clipped"] is None
    opt.step()  # the first update uses α_1 = 1/(2aL): y_1 = z_1 = x_0 - α_1 clip(g)
    assert opt.last_clip_stats["alpha"] == 1 / (2 * 1.0 * 2.0)


def test_clipping_actually_happens_in_reference_runs():
    A, b, noise = quadratic()
    x0 = np.ones(6)
    clipped = ref_clipped_sgd(x0, A, b, noise, 60, 0.05, 0.0, "norm", 1.5, "grad")
    plain = ref_clipped_sgd(x0, A, b, noise, 60, 0.05, 0.0, "none", 1.5, "grad")
    assert np.abs(clipped - plain).max() > 1e-3


# --- arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,msg", [
    (dict(lr=-1.0), "Invalid lr: -1.0"),
    (dict(lr=0.1, clip_level=-1.0), "Invalid clip_level: -1.0 (must be > 0)"),
    (dict(lr=0.1, clip_level=0.0), "Invalid clip_level"),
    (dict(lr=0.1, momentum=1.0), "Invalid momentum"),
    (dict(lr=0.1, weight_decay=-1e-4), "Invalid weight_decay"),
    (dict(lr=0.1, clipping="global"), "Invalid clipping: 'global'"),
    (dict(lr=0.1, clip_target="buf"), "Invalid clip_target: 'buf'"),
    (dict(lr=0.1, impl="fast"), "Invalid impl: 'fast'"),
    (dict(lr=0.1, stats_every=1.5), "Invalid stats_every: 1.5"),
])
def test_clipped_sgd_argument_checks(kwargs, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        ClippedSGD([torch.nn.Parameter(torch.zeros(2))], **kwargs)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(a=0.0, L=1.0), "Invalid a: 0.0"),
    (dict(a=1.0, L=-2.0), "Invalid L: -2.0"),
    (dict(a=1.0, L=1.0, B=0), "Invalid B: 0"),
    (dict(a=1.0, L=1.0, nu=0.0), "Invalid nu: 0.0"),
    (dict(a=1.0, L=1.0, nu=1.5), "Invalid nu: 1.5"),
    (dict(a=1.0, L=1.0, ratio_bound=1.0), "Invalid ratio_bound: 1.0"),
    (dict(a=1.0, L=1.0, clipping="x"), "Invalid clipping"),
    (dict(a=1.0, L=1.0, ratio_bound_mode="clip"), "Invalid ratio_bound_mode: 'clip'"),
    (dict(a=1.0, L=1.0, indexing="paper"), "Invalid indexing: 'paper'"),
    (dict(a=1.0, L=1.0, stats_every=0), "Invalid stats_every: 0"),
])
def test_clipped_sstm_argument_checks(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        ClippedSSTM([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_param_group_arguments_checked():
    opt = ClippedSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="Invalid clip_level"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "clip_level": -1.0})
    assert len(opt.param_groups) == 1


# --- edge cases --------------------------------------------------------------------------


def make_params(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in [(4, 3), (5,), (2, 2, 2)]]


def set_grads(params, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = scale * torch.randn(p.shape, generator=g, dtype=p.dtype)


def sgd_factory(**kw):
    base = dict(lr=0.1, momentum=0.9, clipping="norm", clip_level=1.0)
    base.update(kw)
    return lambda ps: ClippedSGD(ps, **base)


def sstm_factory(**kw):
    base = dict(a=1.0, L=2.0, B=0.5, clipping="norm")
    base.update(kw)
    return lambda ps: ClippedSSTM(ps, **base)


FACTORIES = {
    "sgd-norm-grad": sgd_factory(),
    "sgd-coord-mom": sgd_factory(clipping="coordinate", clip_level=0.2, clip_target="momentum"),
    "sgd-layer-mom": sgd_factory(clipping="layer", clip_target="momentum", weight_decay=0.01),
    "sstm-norm": sstm_factory(),
    "sstm-coord-rb": sstm_factory(clipping="coordinate", ratio_bound=0.6, nu=0.5),
    "sstm-authors-reset": sstm_factory(clipping="layer", ratio_bound=0.6, ratio_bound_mode="reset",
                                       indexing="authors"),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", FACTORIES)
def test_zero_gradient_no_nan(name, impl):
    params = make_params()
    opt = FACTORIES[name](params)
    opt.impl = impl
    for _ in range(3):
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
    assert all(torch.isfinite(p).all() for p in params)
    stats = opt.last_clip_stats
    if name != "sgd-layer-mom":  # weight decay makes d = g + wd*x nonzero
        assert stats["grad_norm"] in (None, 0.0)
        assert stats["scale"] in (None, 1.0)


@pytest.mark.parametrize("name", FACTORIES)
def test_grad_none_is_skipped(name):
    params = make_params()
    frozen = params[1].detach().clone()
    opt = FACTORIES[name](params)
    for k in range(3):
        set_grads(params, k)
        params[1].grad = None
        opt.step()
    assert torch.equal(params[1].detach(), frozen)
    assert not opt.state.get(params[1])


def test_grad_never_modified():
    for name, f in FACTORIES.items():
        for impl in IMPLS:
            params = make_params()
            opt = f(params)
            opt.impl = impl
            for k in range(2):
                set_grads(params, k)
                before = [p.grad.clone() for p in params]
                opt.step()
                assert all(torch.equal(p.grad, b) for p, b in zip(params, before)), (name, impl)


@pytest.mark.parametrize("name", FACTORIES)
def test_closure_returns_loss(name):
    params = make_params()
    opt = FACTORIES[name](params)

    def closure():
        opt.zero_grad()
        loss = sum((p ** 2).sum() for p in params)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.item() > 0


def test_momentum_zero_targets_agree():
    outs = []
    for target in ("grad", "momentum"):
        params = make_params()
        opt = ClippedSGD(params, lr=0.1, clipping="norm", clip_level=0.7, clip_target=target)
        for k in range(4):
            set_grads(params, k)
            opt.step()
        outs.append(params)
        assert not any(opt.state.values())  # no buffer kept without momentum
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_norm_clipping_is_global_across_groups():
    params = make_params()
    opt = ClippedSGD([{"params": params[:1]}, {"params": params[1:], "lr": 0.5}], lr=0.1, clipping="norm",
                     clip_level=1.0)
    x0 = [p.detach().clone() for p in params]
    set_grads(params, 0)
    grads = [p.grad.clone() for p in params]
    opt.step()
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    scale = min(1.0, 1.0 / total.item())
    assert scale < 1
    for p, x, g, lr in zip(params, x0, grads, [0.1, 0.5, 0.5]):
        torch.testing.assert_close(p.detach(), x - lr * scale * g, rtol=0, atol=1e-14)
    s = opt.last_clip_stats
    assert s["clipped"] is True and math.isclose(s["grad_norm"], total.item()) and math.isclose(s["scale"], scale)


def test_layer_clipping_is_per_tensor():
    params = make_params()
    opt = ClippedSGD(params, lr=1.0, clipping="layer", clip_level=1.0)
    x0 = [p.detach().clone() for p in params]
    set_grads(params, 1)
    grads = [p.grad.clone() for p in params]
    opt.step()
    for p, x, g in zip(params, x0, grads):
        torch.testing.assert_close(p.detach(), x - g * min(1.0, 1.0 / g.norm().item()), rtol=0, atol=1e-14)


def test_coordinate_stats_always_on_and_sampled():
    params = make_params()
    opt = ClippedSGD(params, lr=0.1, clipping="coordinate", clip_level=0.1, stats_every=3)
    for k in range(4):
        set_grads(params, k)
        grads = torch.cat([p.grad.flatten() for p in params])
        opt.step()
        s = opt.last_clip_stats
        if k % 3:
            assert s["clipped"] is None and s["entry_fraction"] is None
        else:
            assert s["clipped"] is True and s["scale"] is None
            assert s["entry_fraction"] == (grads.abs() > 0.1).double().mean().item()


def test_coordinate_stats_measure_the_clamped_buffer():
    """With clip_target="momentum" the buffer is clamped, so it is what the stats count."""
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = ClippedSGD([p], lr=0.1, momentum=0.9, clipping="coordinate", clip_level=1.0,
                     clip_target="momentum", stats_every=1)
    for g, want in (([0.9, 0.0, 0.5, -0.95], 0.0), ([0.9, 0.0, 0.0, -0.2], 0.5)):
        p.grad = torch.tensor(g, dtype=torch.float64)  # buffer: then [1.71, 0, 0.45, -1.055]
        opt.step()
        s = opt.last_clip_stats
        assert s["entry_fraction"] == want and s["clipped"] is (want > 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_layer_stats_measure_the_buffer(impl):
    """Layer clipping of the momentum: each tensor's scale and the stats use its buffer's norm."""
    params = [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)) for _ in range(2)]
    opt = ClippedSGD(params, lr=1.0, momentum=0.5, clipping="layer", clip_level=1.0, clip_target="momentum",
                     impl=impl)
    steps = [([0.6, 0.0], [0.0, 0.1]), ([0.6, 0.0], [0.0, 0.1])]  # gradient norms stay below λ
    moved = []
    for g1, g2 in steps:
        params[0].grad, params[1].grad = (torch.tensor(g, dtype=torch.float64) for g in (g1, g2))
        before = [p.detach().clone() for p in params]
        opt.step()
        moved.append([(b - p.detach()).norm().item() for p, b in zip(params, before)])
    s = opt.last_clip_stats
    # second step: buffers 0.9 and 0.15, below λ: nothing clipped yet
    assert s["clipped"] is False and s["scale"] == 1.0
    params[0].grad, params[1].grad = (torch.tensor(g, dtype=torch.float64) for g in steps[0])
    opt.step()  # buffers 1.05 (clipped to 1) and 0.175
    s = opt.last_clip_stats
    assert s["clipped"] is True and math.isclose(s["scale"], (1 / 1.05 + 1) / 2, rel_tol=1e-12)
    assert s["grad_norm"] is None  # the norms computed are the buffers', not the gradient's
    assert math.isclose(moved[1][0], 0.9, rel_tol=1e-12)


def test_norm_stats_mean_scale_and_clipped():
    params = make_params()
    opt = ClippedSGD(params, lr=0.1, clipping="layer", clip_level=1.0)
    set_grads(params, 1)
    norms = [p.grad.norm().item() for p in params]
    opt.step()
    s = opt.last_clip_stats
    assert s["clipped"] is any(n > 1.0 for n in norms)
    assert math.isclose(s["scale"], sum(min(1.0, 1.0 / n) for n in norms) / len(norms), rel_tol=1e-12)


def test_sstm_stats_and_first_step():
    params = make_params()
    x0 = [p.detach().clone() for p in params]
    opt = ClippedSSTM(params, a=1.0, L=2.0, B=100.0)
    with opt.output():  # before any step the output is x_0
        assert all(torch.equal(p, x) for p, x in zip(params, x0))
    set_grads(params, 0, scale=0.01)
    grads = [p.grad.clone() for p in params]
    opt.step()
    s = opt.last_clip_stats
    alpha1 = 2 ** 1 / (2 * 1.0 * 2.0)
    assert math.isclose(s["alpha"], alpha1) and math.isclose(s["lambda"], 100.0 / alpha1)
    assert s["clipped"] is False and s["scale"] == 1.0
    # y_1 = z_1 = x_0 - α_1 g; then x_2 = (A_1 y_1 + α_2 z_1)/A_2 = z_1.
    for p, x, g in zip(params, x0, grads):
        torch.testing.assert_close(p.detach(), x - alpha1 * g, rtol=0, atol=1e-15)


def test_clip_inplace_helper():
    ts = [torch.full((3,), 3.0), torch.full((4,), -4.0)]
    total = clip_(ts, "norm", 1.0)
    assert math.isclose(total.item(), math.sqrt(27 + 64), rel_tol=1e-6)
    assert math.isclose(torch.sqrt(sum((t ** 2).sum() for t in ts)).item(), 1.0, rel_tol=1e-6)
    ts = [torch.tensor([3.0, -0.05])]
    clip_(ts, "coordinate", 0.1)
    assert ts[0].tolist() == pytest.approx([0.1, -0.05])


# --- output() ----------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_output_holds_y_and_restores_exactly(impl):
    params = make_params()
    opt = ClippedSSTM(params, a=1.0, L=2.0, B=0.5, impl=impl)
    for k in range(3):
        set_grads(params, k)
        opt.step()
    x = [p.detach().clone() for p in params]
    with opt.output():
        assert all(torch.equal(p, opt.state[p]["y"]) for p in params)
    assert all(torch.equal(p, xi) for p, xi in zip(params, x))
    with pytest.raises(RuntimeError, match="boom"):
        with opt.output():
            raise RuntimeError("boom")
    assert all(torch.equal(p, xi) for p, xi in zip(params, x))


# --- state_dict -----------------------------------------------------------------------


def _roundtrip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", FACTORIES)
def test_resume_is_bit_for_bit(name, impl):
    factory = FACTORIES[name]

    def run(params, opt, ks):
        for k in ks:
            set_grads(params, k)
            opt.step()

    full = make_params(dtype=torch.float32)
    opt = factory(full)
    opt.impl = impl
    run(full, opt, range(7))

    first = make_params(dtype=torch.float32)
    opt1 = factory(first)
    opt1.impl = impl
    run(first, opt1, range(4))
    saved_opt = _roundtrip(opt1.state_dict())
    saved_params = _roundtrip([p.detach().clone() for p in first])

    second = make_params(seed=99, dtype=torch.float32)
    with torch.no_grad():
        for p, s in zip(second, saved_params):
            p.copy_(s)
    opt2 = factory(second)
    opt2.impl = impl
    opt2.load_state_dict(saved_opt)
    run(second, opt2, range(4, 7))
    assert all(torch.equal(a, b) for a, b in zip(full, second))
    if isinstance(opt, ClippedSSTM):
        with opt.output(), opt2.output():
            assert all(torch.equal(a, b) for a, b in zip(full, second))


def test_sstm_scalar_state_is_plain_python():
    params = make_params()
    opt = ClippedSSTM(params, a=1.0, L=1.0)
    set_grads(params, 0)
    opt.step()
    g = opt.state_dict()["param_groups"][0]
    assert g["step"] == 1 and isinstance(g["A"], float) and g["A"] == 1.0


# --- AMP / accumulation -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["sgd-norm-grad", "sgd-coord-mom", "sstm-norm"])
def test_grad_scaler_unscale_then_step(name):
    torch.manual_seed(0)
    data = [torch.randn(8, 4) for _ in range(2)]
    results = []
    for use_scaler in (False, True):
        model = torch.nn.Linear(4, 3)
        with torch.no_grad():
            model.weight.copy_(torch.arange(12.0).view(3, 4) / 10)
            model.bias.zero_()
        opt = FACTORIES[name](list(model.parameters()))
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10) if use_scaler else None
        for _ in range(3):
            opt.zero_grad()
            for x in data:  # gradient accumulation over two micro-batches
                loss = model(x).pow(2).mean()
                (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.unscale_(opt)
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# --- builder ------------------------------------------------------------------------------


def test_build_optimizer():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert METHODS == ("sgd", "adam", "clipped_sgd", "clipped_sstm", "sstm")
    assert isinstance(build_optimizer("sgd", p, {"lr": 0.1, "momentum": 0.9, "batch_multiplier": 2}), torch.optim.SGD)
    assert isinstance(build_optimizer("adam", p, {"lr": 1e-3, "betas": [0.9, 0.99], "schedule": None}),
                      torch.optim.Adam)
    o = build_optimizer("clipped_sgd", p, {"lr": 1e-3, "momentum": 0.99, "clipping": "coordinate",
                                           "clip_level": 0.1, "clip_target": "momentum"})
    assert isinstance(o, ClippedSGD) and o.clipping == "coordinate" and o.clip_target == "momentum"
    o = build_optimizer("clipped_sstm", p, {"a": 1e5, "L": 10, "ratio_bound": 0.99})
    assert isinstance(o, ClippedSSTM) and o.param_groups[0]["ratio_bound"] == 0.99
    with pytest.raises(ValueError, match=r"unknown option 'lrr' for method 'sgd' \(known: lr, momentum"):
        build_optimizer("sgd", p, {"lrr": 0.1})
    with pytest.raises(ValueError, match="known: sgd, adam, clipped_sgd, clipped_sstm"):
        build_optimizer("lamb", p, {})
    o = build_optimizer("clipped_sstm", p, {"a": 1e5, "L": 10, "ratio_bound": 0.99, "ratio_bound_mode": "reset",
                                            "indexing": "authors"})
    assert (o.ratio_bound_mode, o.indexing, o.clipping) == ("reset", "authors", "norm")
    o = build_optimizer("sstm", p, {"a": 1e5, "L": 10, "clipping": "none"})
    assert isinstance(o, ClippedSSTM) and o.clipping == "none"
    with pytest.raises(ValueError, match="method 'sstm' has clipping 'none', not 'norm'"):
        build_optimizer("sstm", p, {"a": 1e5, "L": 10, "clipping": "norm"})


@pytest.mark.parametrize("name", FACTORIES)
def test_deepcopy_keeps_settings(name):
    import copy

    params = make_params()
    opt = FACTORIES[name](params)
    set_grads(params, 0)
    opt.step()
    clone = copy.deepcopy(opt)
    assert clone.clipping == opt.clipping and clone.stats_every == opt.stats_every
    if isinstance(opt, ClippedSSTM):
        assert (clone.indexing, clone.ratio_bound_mode) == (opt.indexing, opt.ratio_bound_mode)
    assert clone.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


# --- the engine's per-epoch aggregate of the per-step records ----------------------------


def test_engine_clip_stats_aggregates_records():
    from clipbench.engine.telemetry import ClipStats

    agg = ClipStats()
    params = make_params()
    opt = ClippedSGD(params, lr=0.1, clipping="coordinate", clip_level=0.5, stats_every=2)
    fractions = []
    for k in range(4):
        set_grads(params, k)
        if k % 2 == 0:
            fractions.append(torch.cat([p.grad.flatten() for p in params]).abs().gt(0.5).double().mean().item())
        opt.step()
        agg.update(opt.last_clip_stats)
    out = agg.compute()
    assert out["clip_fraction"] == 1.0 and "clip_scale_mean" not in out
    assert math.isclose(out["clip_entry_fraction"], sum(fractions) / 2, rel_tol=1e-6)
    restored = ClipStats()
    restored.load_state_dict(_roundtrip(agg.state_dict()))
    assert restored.compute() == out
    old = ClipStats()  # a checkpoint written before clip_entry_fraction existed
    old.load_state_dict({"sums": {"clipped": 1.0, "scale": 0.5}, "counts": {"clipped": 2, "scale": 2}})
    assert old.compute() == {"clip_fraction": 0.5, "clip_scale_mean": 0.25}


def test_scratch_views_follow_the_buffer_as_it_grows():
    from clipbench.optim.clipping import Scratch

    scratch = Scratch()
    small = scratch.like(torch.zeros(2, 3))
    assert small.shape == (2, 3) and scratch.like(torch.ones(2, 3)) is small  # the same view, reused
    big = scratch.like(torch.zeros(50))
    again = scratch.like(torch.zeros(2, 3))
    assert again is not small and again.data_ptr() == big.data_ptr()  # a view of the new buffer
    assert scratch.like(torch.zeros(6, dtype=torch.float64)).dtype == torch.float64
    again.fill_(1.0)
    assert big[:6].eq(1.0).all()  # one workspace: views alias it
