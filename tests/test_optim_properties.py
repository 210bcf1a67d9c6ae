"""Property tests: every fast path equals the reference path, over random shapes and settings."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipbench.optim import ClippedSGD, ClippedSSTM, global_norm

from tests._clipops import clipped

shapes = st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple), min_size=1, max_size=4)
modes = st.sampled_from(["norm", "layer", "coordinate", "none"])
common = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _params(shape_list, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shape_list]


def _run(make_opt, shape_list, seed, steps, dtype, grad_scale, none_at=None):
    params = _params(shape_list, seed, dtype)
    opt = make_opt(params)
    gen = torch.Generator().manual_seed(seed + 1)
    for k in range(steps):
        for i, p in enumerate(params):
            # heavy-tailed gradients so that clipping is active at some steps and not others
            t = torch.randn(p.shape, generator=gen, dtype=dtype) / torch.rand(p.shape, generator=gen, dtype=dtype)
            p.grad = None if (none_at == (k, i)) else grad_scale * t
        opt.step()
    return params, opt


def _assert_same(a, b, dtype):
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), **tol)


@common
@given(shape_list=shapes, seed=st.integers(0, 1000), steps=st.integers(1, 5), mode=modes,
       target=st.sampled_from(["grad", "momentum"]), mu=st.sampled_from([0.0, 0.5, 0.99]),
       level=st.floats(0.01, 10.0), wd=st.sampled_from([0.0, 1e-2]), grad_scale=st.sampled_from([0.01, 1.0, 100.0]),
       dtype=st.sampled_from([torch.float64, torch.float32]), two_groups=st.booleans())
def test_clipped_sgd_fast_paths_equal_reference(shape_list, seed, steps, mode, target, mu, level, wd, grad_scale,
                                                dtype, two_groups):
    def make(impl):
        def f(params):
            groups = [{"params": params[:1]}, {"params": params[1:], "lr": 0.02, "clip_level": level * 2}] \
                if two_groups and len(params) > 1 else params
            return ClippedSGD(groups, lr=0.1, momentum=mu, clipping=mode, clip_level=level, clip_target=target,
                              weight_decay=wd, impl=impl)
        return f

    ref, ref_opt = _run(make("reference"), shape_list, seed, steps, dtype, grad_scale)
    for impl in ("loop", "foreach"):
        got, opt = _run(make(impl), shape_list, seed, steps, dtype, grad_scale)
        _assert_same(ref, got, dtype)
        for p, q in zip(ref, got):
            if mu:
                _assert_same([ref_opt.state[p]["momentum_buffer"]], [opt.state[q]["momentum_buffer"]], dtype)
        a, b = ref_opt.last_clip_stats, opt.last_clip_stats
        assert a["clipped"] == b["clipped"] or a["scale"] is None or abs(a["scale"] - 1) < 1e-6


@common
@given(shape_list=shapes, seed=st.integers(0, 1000), steps=st.integers(1, 6), mode=modes,
       nu=st.sampled_from([1.0, 0.5, 0.1]), B=st.floats(0.01, 10.0), rb=st.sampled_from([None, 0.5, 0.99]),
       grad_scale=st.sampled_from([0.01, 1.0, 100.0]), dtype=st.sampled_from([torch.float64, torch.float32]),
       none_at=st.sampled_from([None, (0, 0), (2, 0)]))
def test_clipped_sstm_fast_paths_equal_reference(shape_list, seed, steps, mode, nu, B, rb, grad_scale, dtype,
                                                 none_at):
    def make(impl):
        return lambda params: ClippedSSTM(params, a=1.0, L=3.0, B=B, clipping=mode, nu=nu, ratio_bound=rb, impl=impl)

    ref, ref_opt = _run(make("reference"), shape_list, seed, steps, dtype, grad_scale, none_at)
    for impl in ("loop", "foreach"):
        got, opt = _run(make(impl), shape_list, seed, steps, dtype, grad_scale, none_at)
        _assert_same(ref, got, dtype)
        with ref_opt.output(), opt.output():
            _assert_same(ref, got, dtype)
        assert ref_opt.param_groups[0]["A"] == opt.param_groups[0]["A"]


@common
@given(shape_list=shapes, seed=st.integers(0, 1000), mode=modes, level=st.floats(0.01, 10.0),
       grad_scale=st.sampled_from([0.0, 0.01, 1.0, 100.0]))
def test_clipped_output_respects_level(shape_list, seed, mode, level, grad_scale):
    ts = [grad_scale * p.detach() for p in _params(shape_list, seed, torch.float64)]
    out = clipped(ts, mode, level)
    assert all(torch.isfinite(t).all() for t in out)
    if mode == "norm":
        assert global_norm(out).item() <= level * (1 + 1e-12)
        if global_norm(ts).item() <= level:
            assert all(torch.equal(a, b) for a, b in zip(ts, out))
    elif mode == "layer":
        assert all(t.norm().item() <= level * (1 + 1e-12) for t in out)
    elif mode == "coordinate":
        assert all(t.abs().max().item() <= level for t in out if t.numel())
    else:
        assert all(torch.equal(a, b) for a, b in zip(ts, out))
