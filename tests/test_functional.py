"""gpudl.nn.functional: conv, pooling, losses, batch norm, on every device.

Forward passes against slow, obviously-correct loop references written here;
backward passes against float64 central differences.
"""
import math

import numpy as np
import pytest

import gpudl
import gpudl.nn as nn
import gpudl.nn.functional as F
from gpudl.testing import gradcheck
from helpers import t, close

rng = np.random.default_rng(1)


def ref_conv2d(x, w, b, stride, padding, dilation, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    y = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * sh: i * sh + dh * (kh - 1) + 1: dh, j * sw: j * sw + dw * (kw - 1) + 1: dw]
            for g in range(groups):
                pg = patch[:, g * cg:(g + 1) * cg]
                wg = w[g * og:(g + 1) * og]
                y[:, g * og:(g + 1) * og, i, j] = np.einsum("nckl,ockl->no", pg, wg)
    if b is not None:
        y += b[None, :, None, None]
    return y


def ref_pool(x, kernel, stride, padding, mode, count_include_pad=True):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            hs, ws = slice(max(h0, 0), min(h0 + kh, h)), slice(max(w0, 0), min(w0 + kw, w))
            win = x[:, :, hs, ws]
            if mode == "max":
                y[:, :, i, j] = win.max((2, 3))
            else:
                count = kh * kw if count_include_pad else win.shape[2] * win.shape[3]
                if count_include_pad:   # the window clipped to the padded input
                    count = (min(h0 + kh, h + ph) - max(h0, -ph)) * (min(w0 + kw, w + pw) - max(w0, -pw))
                y[:, :, i, j] = win.sum((2, 3)) / count
    return y


CONV_CASES = [
    # (N, C, H, W), (O, kh, kw), stride, padding, dilation, groups
    ((2, 3, 7, 6), (4, 3, 3), 1, 1, 1, 1),
    ((1, 2, 5, 5), (3, 1, 1), 1, 0, 1, 1),
    ((2, 4, 9, 8), (6, 3, 2), (2, 1), (1, 0), 1, 2),
    ((1, 3, 11, 10), (2, 3, 3), 2, 2, 2, 1),
    ((2, 4, 6, 7), (4, 3, 3), 1, 1, 1, 4),       # depthwise
    ((1, 1, 5, 5), (1, 5, 5), 1, 0, 1, 1),       # kernel the size of the input
    ((3, 2, 4, 5), (5, 2, 3), 3, (1, 2), (1, 2), 1),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else v


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", CONV_CASES)
def test_conv2d_forward(device, xs, ws, stride, padding, dilation, groups):
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal((ws[0], xs[1] // groups, ws[1], ws[2])).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    y = F.conv2d(t(x, device), t(w, device), t(b, device), stride, padding, dilation, groups)
    ref = ref_conv2d(x.astype(np.float64), w, b, _pair(stride), _pair(padding), _pair(dilation), groups)
    assert y.dtype == np.float32 and y.shape == ref.shape
    close(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", [0, 2, 3, 4, 6])
def test_conv2d_gradcheck(device, case):
    xs, ws, stride, padding, dilation, groups = CONV_CASES[case]
    xs = (1,) + xs[1:]
    x = t(rng.standard_normal(xs), device, requires_grad=True)
    w = t(rng.standard_normal((ws[0], xs[1] // groups, ws[1], ws[2])), device, requires_grad=True)
    b = t(rng.standard_normal(ws[0]), device, requires_grad=True)
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups), [x, w, b])


def test_conv2d_without_bias_and_only_weight_grad(device):
    x = t(rng.standard_normal((2, 3, 5, 5)), device)
    w = t(rng.standard_normal((2, 3, 3, 3)), device, requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    y.sum().backward()
    assert x.grad is None and w.grad.shape == (2, 3, 3, 3)
    assert gradcheck(lambda w: F.conv2d(x, w, stride=2), [w])


POOL_CASES = [
    ((2, 3, 8, 8), 2, None, 0),
    ((1, 2, 7, 9), 3, 2, 1),
    ((2, 1, 5, 6), (2, 3), (1, 2), (1, 1)),
    ((1, 2, 6, 6), 3, 1, 0),       # overlapping windows
    ((1, 1, 4, 4), 4, None, 0),
]


@pytest.mark.parametrize("xs,k,s,p", POOL_CASES)
def test_max_pool2d(device, xs, k, s, p):
    x = rng.permutation(int(np.prod(xs))).reshape(xs).astype(np.float64) * 0.1 - 3
    y = F.max_pool2d(t(x, device, dtype=np.float32), k, s, p)
    kk = _pair(k)
    ref = ref_pool(x, kk, _pair(s) if s is not None else kk, _pair(p), "max")
    close(y, ref, rtol=1e-6)
    xt = t(x, device, requires_grad=True)
    assert gradcheck(lambda a: F.max_pool2d(a, k, s, p), [xt])


@pytest.mark.parametrize("xs,k,s,p", POOL_CASES)
@pytest.mark.parametrize("include", [True, False])
def test_avg_pool2d(device, xs, k, s, p, include):
    x = rng.standard_normal(xs)
    y = F.avg_pool2d(t(x, device, dtype=np.float32), k, s, p, count_include_pad=include)
    kk = _pair(k)
    ref = ref_pool(x, kk, _pair(s) if s is not None else kk, _pair(p), "avg", include)
    close(y, ref, rtol=1e-5, atol=1e-6)
    xt = t(x, device, requires_grad=True)
    assert gradcheck(lambda a: F.avg_pool2d(a, k, s, p, count_include_pad=include), [xt])


def test_max_pool_gradient_goes_to_the_first_maximum(device):
    x = t(np.ones((1, 1, 2, 4)), device, requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    assert x.grad.tolist() == [[[[1, 0, 1, 0], [0, 0, 0, 0]]]]


def test_adaptive_avg_pool2d(device):
    x = rng.standard_normal((2, 3, 4, 6))
    close(F.adaptive_avg_pool2d(t(x, device), 1), x.mean((2, 3), keepdims=True), rtol=1e-6)
    close(F.adaptive_avg_pool2d(t(x, device), (2, 3)), ref_pool(x, (2, 2), (2, 2), (0, 0), "avg"), rtol=1e-6)
    xt = t(x, device, requires_grad=True)
    assert gradcheck(lambda a: F.adaptive_avg_pool2d(a, 1), [xt])
    # sizes that do not divide: PyTorch's overlapping windows [floor(iL/n), ceil((i+1)L/n))
    for size, (oh, ow) in ((5, (5, 5)), ((3, 4), (3, 4)), ((None, 4), (4, 4)), ((3, None), (3, 6))):
        ref = np.empty((2, 3, oh, ow))
        for i in range(oh):
            for j in range(ow):
                a, b = i * 4 // oh, -(-(i + 1) * 4 // oh)
                c, d = j * 6 // ow, -(-(j + 1) * 6 // ow)
                ref[:, :, i, j] = x[:, :, a:b, c:d].mean((2, 3))
        close(F.adaptive_avg_pool2d(t(x, device), size), ref, rtol=1e-12)
        close(nn.AdaptiveAvgPool2d(size)(t(x, device)), ref, rtol=1e-12)
    assert gradcheck(lambda a: F.adaptive_avg_pool2d(a, (3, 4)), [xt])


def test_pooling_takes_pytorchs_positional_arguments(device):
    """avg_pool2d(input, kernel, stride, padding, ceil_mode, count_include_pad):
    the fifth is ceil_mode, as in PyTorch (it was count_include_pad: a silently
    different answer); options not implemented are refused by name."""
    x = t(np.arange(25.0).reshape(1, 1, 5, 5), device)
    close(F.avg_pool2d(x, 3, 2, 1, False), F.avg_pool2d(x, 3, 2, 1, count_include_pad=True), rtol=1e-12)
    close(F.max_pool2d(x, 2, 2, 0, (1, 1)), F.max_pool2d(x, 2), rtol=0)     # the default, spelled out
    assert nn.MaxPool2d(2, dilation=(1, 1))(x).shape == (1, 1, 2, 2)
    close(F.avg_pool2d(x, 3, 2, 1, False, False)[0, 0, 0], [3.0, 4.5, 6.0], rtol=1e-12)
    for call, name in ((lambda: F.avg_pool2d(x, 2, divisor_override=3), "divisor_override=3"),
                       (lambda: F.max_pool2d(x, 2, 2, 0, 2), r"dilation=\(2, 2\)"),
                       (lambda: F.max_pool2d(x, 2, return_indices=True), "return_indices=True")):
        with pytest.raises(ValueError, match=f"{name} is not supported"):
            call()


# ---- losses ----------------------------------------------------------------------

def test_cross_entropy_hand_computed(device):
    logits = t([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], device)
    target = gpudl.tensor([2, 0], device=device)
    l0 = -math.log(math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3)))
    l1 = math.log(3)
    close(F.cross_entropy(logits, target, reduction="none"), [l0, l1], rtol=1e-6)
    close(F.cross_entropy(logits, target), (l0 + l1) / 2, rtol=1e-6)
    close(F.cross_entropy(logits, target, reduction="sum"), l0 + l1, rtol=1e-6)
    # label smoothing: (1 - eps) * nll + eps * mean_j(-log p_j)
    lp = np.log(np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
    expected = 0.9 * -lp[2] + 0.1 * -lp.mean()
    close(F.cross_entropy(logits[:1], target[:1], label_smoothing=0.1), expected, rtol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradcheck(device, smoothing, reduction):
    x = t(rng.standard_normal((4, 5)) * 3, device, requires_grad=True)
    y = gpudl.tensor([0, 4, 2, 2], device=device)
    assert gradcheck(lambda a: F.cross_entropy(a, y, reduction=reduction, label_smoothing=smoothing), [x])


def test_cross_entropy_is_stable_for_huge_logits(device):
    x = t([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4]], device, requires_grad=True)
    y = gpudl.tensor([1, 0], device=device)
    loss = F.cross_entropy(x, y)
    close(loss, (1e4 + 2e4 + math.log(2)) / 2, rtol=1e-6)
    loss.backward()
    assert np.isfinite(x.grad.numpy()).all()
    close(x.grad, [[0.5, -0.5, 0.0], [-0.5, 0.25, 0.25]], atol=1e-6)


def test_cross_entropy_ignore_index_and_extra_dims(device):
    x = t(rng.standard_normal((3, 4)), device, requires_grad=True)
    y = gpudl.tensor([1, -100, 3], device=device)
    full = F.cross_entropy(x, gpudl.tensor([1, 0, 3], device=device), reduction="none").numpy()
    close(F.cross_entropy(x, y), (full[0] + full[2]) / 2, rtol=1e-6)
    assert gradcheck(lambda a: F.cross_entropy(a, y), [x])
    x4 = t(rng.standard_normal((2, 3, 2, 2)), device)
    y4 = gpudl.tensor(rng.integers(0, 3, (2, 2, 2)), device=device)
    flat = F.cross_entropy(x4.permute(0, 2, 3, 1).reshape(-1, 3), y4.reshape(-1))
    close(F.cross_entropy(x4, y4), flat.numpy(), rtol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_class_weights_by_hand_and_gradcheck(device, reduction, smoothing):
    """weight (C,): PyTorch's formula, ``(1 - e) * w_y * nll + e / C * sum_c w_c (-log p_c)``;
    "mean" divides by the kept rows' w_y; ignored rows count nothing."""
    x = rng.standard_normal((5, 4)) * 2
    y = np.array([0, 3, -100, 1, 3])
    w = np.array([0.5, 2.0, 1.0, 3.0])
    lp = x - np.log(np.exp(x).sum(1, keepdims=True))
    kept = y != -100
    yk = np.where(kept, y, 0)
    per = ((1 - smoothing) * -w[yk] * lp[np.arange(5), yk] + smoothing / 4 * -(lp * w).sum(1)) * kept
    want = {"none": per, "sum": per.sum(), "mean": per.sum() / w[yk][kept].sum()}[reduction]
    yt, wt = gpudl.tensor(y, device=device), t(w, device)
    close(F.cross_entropy(t(x, device), yt, wt, reduction=reduction, label_smoothing=smoothing), want,
          rtol=1e-12, atol=1e-14)
    xt = t(x, device, requires_grad=True)
    assert gradcheck(lambda a: F.cross_entropy(a, yt, wt, reduction=reduction, label_smoothing=smoothing), [xt])
    if smoothing == 0.0:
        nll = (-w[yk] * lp[np.arange(5), yk]) * kept
        want = {"none": nll, "sum": nll.sum(), "mean": nll.sum() / w[yk][kept].sum()}[reduction]
        close(F.nll_loss(t(lp, device), yt, wt, reduction=reduction), want, rtol=1e-12, atol=1e-14)
        close(nn.NLLLoss(wt, reduction=reduction)(t(lp, device), yt), want, rtol=1e-12, atol=1e-14)
    close(nn.CrossEntropyLoss(wt, reduction=reduction, label_smoothing=smoothing)(t(x, device), yt),
          F.cross_entropy(t(x, device), yt, wt, reduction=reduction, label_smoothing=smoothing).numpy(),
          rtol=1e-12)
    assert list(nn.CrossEntropyLoss(wt).state_dict()) == ["weight"]      # a buffer, as in PyTorch


def test_bce_weight_and_pos_weight_by_hand_and_gradcheck(device):
    x = rng.standard_normal((4, 3)) * 5
    z = (rng.random((4, 3)) > 0.5).astype(float)
    w = rng.random((1, 3)) + 0.5
    p = np.array([0.5, 1.0, 4.0])
    sig = 1 / (1 + np.exp(-x))
    per = -w * (p * z * np.log(sig) + (1 - z) * np.log(1 - sig))
    xt, zt, wt, pt = (t(a, device, True) for a in (x, z, w, p))
    close(F.binary_cross_entropy_with_logits(xt, zt, wt, reduction="none", pos_weight=pt), per, rtol=1e-9)
    close(nn.BCEWithLogitsLoss(wt, pos_weight=pt)(xt, zt), per.mean(), rtol=1e-9)
    assert gradcheck(lambda a, b, c: F.binary_cross_entropy_with_logits(a, b, wt, pos_weight=c), [xt, zt, pt])
    assert list(nn.BCEWithLogitsLoss(wt, pos_weight=pt).state_dict()) == ["weight", "pos_weight"]
    with pytest.raises(ValueError, match=r"pos_weight of shape \(2,\) does not broadcast"):
        F.binary_cross_entropy_with_logits(xt, zt, pos_weight=t(np.ones(2), device))


def test_losses_take_pytorchs_positional_arguments_and_legacy_reductions(device):
    """weight is the third argument (it was reduction); size_average / reduce
    still pick the reduction, with PyTorch's warning."""
    x, y = t(rng.standard_normal((3, 4)), device), gpudl.tensor([0, 1, 3], device=device)
    with pytest.raises(ValueError, match=r"expected weight of shape \(4,\) for 4 classes, got \(3,\)"):
        F.cross_entropy(x, y, t(np.ones(3), device))
    with pytest.raises(TypeError, match="expected weight to be a Tensor of 4 class weights, got str"):
        F.cross_entropy(x, y, "sum")
    a, b = t(rng.standard_normal((2, 3)), device), t(rng.standard_normal((2, 3)), device)
    for size_average, reduce, reduction in ((None, None, "mean"), (True, None, "mean"), (False, None, "sum"),
                                            (None, False, "none"), (False, True, "sum")):
        if size_average is None and reduce is None:
            got = F.mse_loss(a, b, size_average, reduce)
        else:
            with pytest.warns(UserWarning, match=f"use reduction='{reduction}' instead"):
                got = F.mse_loss(a, b, size_average, reduce)
        close(got, F.mse_loss(a, b, reduction=reduction).numpy(), rtol=1e-12)
    with pytest.warns(UserWarning):
        assert nn.CrossEntropyLoss(None, False).reduction == "sum"


def test_losses_agree_with_torch_on_weights_smoothing_and_ignored_rows():
    torch = pytest.importorskip("torch")
    import itertools
    x = rng.standard_normal((6, 4, 3))
    y = rng.integers(0, 4, (6, 3))
    y[1, 2] = 2
    w = rng.random(4) + 0.1
    for red, eps, weighted, ign in itertools.product(["mean", "sum", "none"], [0.0, 0.2], [False, True], [-100, 2]):
        tx, gx = torch.tensor(x, requires_grad=True), gpudl.tensor(x, requires_grad=True)
        a = torch.nn.functional.cross_entropy(tx, torch.tensor(y), torch.tensor(w) if weighted else None,
                                              ignore_index=ign, reduction=red, label_smoothing=eps)
        b = F.cross_entropy(gx, gpudl.tensor(y), gpudl.tensor(w) if weighted else None,
                            ignore_index=ign, reduction=red, label_smoothing=eps)
        a.sum().backward()
        b.sum().backward()
        close(b, a.detach().numpy(), rtol=1e-10)
        close(gx.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_with_probability_targets(device, reduction, smoothing):
    """Float targets of the input's shape: -sum_c w_c t_c log p_c, t smoothed
    towards uniform; "mean" over the elements (PyTorch's formula)."""
    x = rng.standard_normal((3, 4, 2))
    tp = rng.random((3, 4, 2))
    tp /= tp.sum(1, keepdims=True)
    w = np.array([0.5, 1.0, 2.0, 1.5])
    lp = x - np.log(np.exp(x).sum(1, keepdims=True))
    ts = tp * (1 - smoothing) + smoothing / 4
    per = -(lp * ts * w[None, :, None]).sum(1)
    want = {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]
    xt = t(x, device, requires_grad=True)
    got = F.cross_entropy(xt, t(tp, device), t(w, device), reduction=reduction, label_smoothing=smoothing)
    close(got, want, rtol=1e-12)
    assert gradcheck(lambda a: F.cross_entropy(a, t(tp, device), t(w, device), reduction=reduction,
                                               label_smoothing=smoothing), [xt])
    with pytest.raises(ValueError, match="ignore_index=0 needs class-index targets"):
        F.cross_entropy(xt, t(tp, device), ignore_index=0)


def test_unbatched_and_extra_dimension_losses(device):
    """(C,) logits with a 0-d target; NLL over (N, C, d1, d2) as cross-entropy does."""
    x = rng.standard_normal(5)
    lp = x - np.log(np.exp(x).sum())
    got = F.cross_entropy(t(x, device), gpudl.tensor(3, device=device), reduction="none")
    assert got.shape == () and abs(got.item() + lp[3]) < 1e-12
    assert abs(F.nll_loss(t(lp, device), gpudl.tensor(3, device=device)).item() + lp[3]) < 1e-12
    x4 = rng.standard_normal((2, 3, 2, 2))
    lp4 = x4 - np.log(np.exp(x4).sum(1, keepdims=True))
    y4 = rng.integers(0, 3, (2, 2, 2))
    per = -np.take_along_axis(lp4, y4[:, None], 1)[:, 0]
    close(F.nll_loss(t(lp4, device), gpudl.tensor(y4, device=device), reduction="none"), per, rtol=1e-12)
    close(F.nll_loss(t(lp4, device), gpudl.tensor(y4, device=device)), per.mean(), rtol=1e-12)


def test_unbatched_images_same_padding_and_softmax_dtype(device):
    """(C, H, W) input to conv and pooling as a batch of one; F.conv2d takes
    'same' / 'valid'; softmax's dtype= casts first -- as PyTorch's functions do."""
    x = rng.standard_normal((3, 7, 8))
    w = rng.standard_normal((4, 3, 3, 2))
    batched = F.conv2d(t(x[None], device), t(w, device), padding=(1, 0)).numpy()[0]
    close(F.conv2d(t(x, device), t(w, device), padding=(1, 0)), batched, rtol=1e-12)
    same = F.conv2d(t(x, device), t(w, device), padding="same")
    assert same.shape == (4, 7, 8)
    conv = nn.Conv2d(3, 4, (3, 2), padding="same", bias=False, dtype="float64").to(device)
    conv.load_state_dict({"weight": w})
    close(conv(t(x, device)), same.numpy(), rtol=1e-12)
    assert F.conv2d(t(x, device), t(w, device), padding="valid").shape == (4, 5, 7)
    for fn in (F.max_pool2d, F.avg_pool2d):
        close(fn(t(x, device), 2), fn(t(x[None], device), 2).numpy()[0], rtol=1e-12)
    close(F.adaptive_avg_pool2d(t(x, device), 3), F.adaptive_avg_pool2d(t(x[None], device), 3).numpy()[0],
          rtol=1e-12)
    s = F.softmax(t(x[0], device, dtype=np.float32), 1, dtype="float64")
    assert s.dtype == np.float64 and F.log_softmax(t(x[0], device, dtype=np.float32), dim=1).dtype == np.float32
    with pytest.raises(ValueError, match=r"expected input of shape \(N, C, H, W\) or \(C, H, W\)"):
        F.conv2d(t(x[0], device), t(w, device))


def test_multiclass_hinge_hand_computed(device):
    # CS231n's example: scores of three images over three classes
    s = t([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]], device)
    y = gpudl.tensor([0, 1, 2], device=device)
    per = F.multiclass_hinge_loss(s, y, reduction="none")
    close(per, [2.9, 0.0, 12.9], rtol=1e-5)
    close(F.multiclass_hinge_loss(s, y), 15.8 / 3, rtol=1e-5)
    xt = t(rng.standard_normal((4, 5)), device, requires_grad=True)
    yy = gpudl.tensor([0, 1, 4, 2], device=device)
    assert gradcheck(lambda a: F.multiclass_hinge_loss(a, yy, margin=0.5), [xt])


def test_multiclass_hinge_relates_to_torch_multi_margin_loss():
    torch = pytest.importorskip("torch")
    s = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, 6)
    ours = F.multiclass_hinge_loss(gpudl.tensor(s), gpudl.tensor(y)).item()
    theirs = torch.nn.functional.multi_margin_loss(torch.tensor(s), torch.tensor(y)).item()
    assert abs(ours / 4 - theirs) < 1e-9


def test_nll_mse_bce(device):
    lp = rng.standard_normal((3, 4))
    y = np.array([3, 0, 1])
    close(F.nll_loss(t(lp, device), gpudl.tensor(y, device=device)), -lp[np.arange(3), y].mean(), rtol=1e-9)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    close(F.mse_loss(t(a, device), t(b, device), reduction="sum"), ((a - b) ** 2).sum(), rtol=1e-9)
    x = np.array([[-1e4, 0.3, 50.0]])
    z = np.array([[0.0, 1.0, 1.0]])
    ref = np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))
    close(F.binary_cross_entropy_with_logits(t(x, device), t(z, device), reduction="none"), ref, rtol=1e-9)
    for fn, args in ((F.nll_loss, (t(lp, device, True), gpudl.tensor(y, device=device))),
                     (F.mse_loss, (t(a, device, True), t(b, device, True))),
                     (F.binary_cross_entropy_with_logits, (t(a, device, True), t(z * np.ones((2, 1)), device)))):
        assert gradcheck(fn, list(args))


def test_l2_penalty(device):
    ws = [t(rng.standard_normal((3, 2)), device, True), t(rng.standard_normal(4), device, True)]
    close(F.l2_penalty(ws), sum((w.numpy() ** 2).sum() for w in ws), rtol=1e-9)
    assert gradcheck(lambda a, b: F.l2_penalty([a, b]), ws)


def test_linear_one_hot_dropout(device):
    x, w, b = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    close(F.linear(t(x, device), t(w, device), t(b, device)), x @ w.T + b, rtol=1e-9)
    assert gradcheck(F.linear, [t(x, device, True), t(w, device, True), t(b, device, True)])
    assert F.one_hot(gpudl.tensor([0, 2, 1], device=device), 4).tolist() == \
        [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]]
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        F.one_hot(gpudl.tensor([3], device=device), 3)
    assert F.dropout(t(x, device), 0.5, training=False).shape == (5, 3)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 2, 4, 5)])
def test_batch_norm(device, shape):
    x = rng.standard_normal(shape) * 2 + 1
    c = shape[1]
    axes = (0,) + tuple(range(2, len(shape)))
    w, b = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = gpudl.zeros(c, dtype="float64", device=device), gpudl.ones(c, dtype="float64", device=device)
    y = F.batch_norm(t(x, device), rm, rv, t(w, device), t(b, device), training=True, momentum=0.1)
    bshape = [1] * len(shape)
    bshape[1] = c
    mu, var = x.mean(axes), x.var(axes)
    ref = (x - mu.reshape(bshape)) / np.sqrt(var.reshape(bshape) + 1e-5) * w.reshape(bshape) + b.reshape(bshape)
    close(y, ref, rtol=1e-9, atol=1e-9)
    m = x.size // c
    close(rm, 0.1 * mu, rtol=1e-9)
    close(rv, 0.9 + 0.1 * var * m / (m - 1), rtol=1e-9)
    y_eval = F.batch_norm(t(x, device), rm, rv, t(w, device), t(b, device), training=False)
    ref_eval = (x - rm.numpy().reshape(bshape)) / np.sqrt(rv.numpy().reshape(bshape) + 1e-5) \
        * w.reshape(bshape) + b.reshape(bshape)
    close(y_eval, ref_eval, rtol=1e-9)
    args = [t(x, device, True), t(w, device, True), t(b, device, True)]
    assert gradcheck(lambda a, ww, bb: F.batch_norm(a, None, None, ww, bb, training=True), args)
    assert gradcheck(lambda a, ww, bb: F.batch_norm(a, rm, rv, ww, bb, training=False), args)


# ---- bad input ---------------------------------------------------------------------

def test_bad_input_gets_clear_errors(device):
    x = gpudl.zeros(2, 3, 8, 8, device=device)
    w = gpudl.zeros(4, 3, 3, 3, device=device)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(C, H, W\).*\(8, 8\)"):
        F.conv2d(x[0, 0], w)
    with pytest.raises(ValueError, match="3 channels.*expects 6"):
        F.conv2d(x, gpudl.zeros(4, 6, 3, 3, device=device))
    with pytest.raises(ValueError, match="larger than the padded input"):
        F.conv2d(x, gpudl.zeros(4, 3, 11, 3, device=device), padding=1)
    with pytest.raises(ValueError, match="bias of shape \\(4,\\)"):
        F.conv2d(x, w, gpudl.zeros(3, device=device))
    with pytest.raises(ValueError, match="stride >= 1"):
        F.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="at most half"):
        F.max_pool2d(x, 2, padding=2)
    logits = gpudl.zeros(2, 3, device=device)
    with pytest.raises(ValueError, match=r"class 3, expected classes in \[0, 2\]"):
        F.cross_entropy(logits, gpudl.tensor([0, 3], device=device))
    with pytest.raises(ValueError, match="class -1"):
        F.multiclass_hinge_loss(logits, gpudl.tensor([0, -1], device=device))
    with pytest.raises(TypeError, match="integer class indices.*float32"):
        F.cross_entropy(logits, gpudl.tensor([0.0, 1.0], device=device))
    with pytest.raises(ValueError, match=r"target of shape \(2,\)"):
        F.cross_entropy(logits, gpudl.tensor([0, 1, 1], device=device))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(logits, gpudl.tensor([0, 1], device=device), reduction="avg")


def test_cross_entropy_none_keeps_the_target_shape(device):
    x = t(np.random.default_rng(7).standard_normal((2, 4, 3, 2)), device)
    y = t(np.random.default_rng(8).integers(0, 4, (2, 3, 2)), device)
    loss = F.cross_entropy(x, y, reduction="none")
    assert loss.shape == (2, 3, 2)
    close(loss.mean(), F.cross_entropy(x, y).item(), rtol=1e-6)


@pytest.mark.parametrize("which", ["cross_entropy", "nll_loss"])
def test_ignored_rows_with_infinite_input_change_nothing(device, which):
    a = np.random.default_rng(9).standard_normal((3, 4))
    a[1, 0] = -np.inf if which == "nll_loss" else np.inf
    x = t(a, device, requires_grad=True)
    y = t([2, -100, 1], device)
    loss = getattr(F, which)(x, y)
    keep = np.array([0, 2])
    ref = getattr(F, which)(t(a[keep], device), t([2, 1], device)).item()
    np.testing.assert_allclose(loss.item(), ref, rtol=1e-6)
    loss.backward()
    assert np.isfinite(x.grad.numpy()[keep]).all()
    np.testing.assert_array_equal(x.grad.numpy()[1], np.zeros(4))   # as PyTorch


@pytest.mark.parametrize("which", ["cross_entropy", "nll_loss"])
def test_every_row_ignored_mean_is_nan_with_a_zero_gradient(device, which):
    x = t(np.random.default_rng(10).standard_normal((2, 3)), device, requires_grad=True)
    loss = getattr(F, which)(x, t([-100, -100], device))
    assert np.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 3)))
    assert getattr(F, which)(x, t([-100, -100], device), reduction="sum").item() == 0.0


def test_batch_norm_evaluation_needs_running_statistics(device):
    x = t(np.random.default_rng(11).standard_normal((4, 3)), device)
    with pytest.raises(ValueError, match="running_mean and running_var"):
        F.batch_norm(x, None, None, training=False)


def test_pooling_an_empty_plane_is_refused_an_empty_batch_is_not(device):
    with pytest.raises(ValueError, match="non-zero height and width"):
        F.max_pool2d(t(np.zeros((1, 1, 0, 4)), device), 2, padding=1)
    assert F.avg_pool2d(t(np.zeros((0, 1, 4, 4)), device), 2).shape == (0, 1, 2, 2)


def test_loss_argument_edges(device):
    """Weights that would broadcast the loss beyond the input are refused; a
    class weight that requires grad gets its true gradient (the mean's
    denominator included); a module keeps its own weight tensor; 0-d input
    and wrongly shaped float targets say what was expected; a negative
    ignore_index is allowed with probability targets, as in PyTorch."""
    x = t(np.array([2.0, -1.0, 0.5, 3.0]), device)
    y = t(np.array([1.0, 0.0, 0.0, 1.0]), device)
    with pytest.raises(ValueError, match=r"weight of shape \(4, 1\) does not broadcast to the input's \(4,\)"):
        F.binary_cross_entropy_with_logits(x, y, t(np.ones((4, 1)), device))
    logits = t(rng.standard_normal((4, 3)), device)
    labels = gpudl.tensor([0, 1, 2, 1], device=device)
    w = t(np.array([1.0, 2.0, 3.0]), device, requires_grad=True)
    for eps in (0.0, 0.2):
        assert gradcheck(lambda a: F.cross_entropy(logits, labels, a, label_smoothing=eps), [w])
    assert gradcheck(lambda a: F.nll_loss(logits, labels, a), [w])
    mine = t(np.array([1.0, 2.0, 3.0]), device, dtype=np.float32)
    nn.CrossEntropyLoss(weight=mine).double()
    assert mine.dtype == np.float32
    with pytest.raises(ValueError, match=r"expected input of shape \(N, C\), \(N, C, d1, ...\) or \(C,\), got \(\)"):
        F.cross_entropy(t(1.0, device), gpudl.tensor(0, device=device))
    with pytest.raises(TypeError, match=r"or, for cross_entropy, class probabilities of the input's shape \(4, 3\)"):
        F.cross_entropy(logits, t(np.zeros((4, 5)), device))
    probs = t(np.full((4, 3), 1 / 3), device)
    close(F.cross_entropy(logits, probs, ignore_index=-1), F.cross_entropy(logits, probs).numpy(), rtol=1e-12)


def test_batch_norm_of_empty_batches_and_no_channels(device):
    for shape in ((0, 3, 2, 2), (2, 0, 2, 2), (2, 0)):
        c = shape[1]
        x = t(np.zeros(shape), device, requires_grad=True)
        w = t(np.ones(c), device, requires_grad=True)
        rm, rv = t(np.zeros(c), device), t(np.ones(c), device)
        out = F.batch_norm(x, rm, rv, w, t(np.zeros(c), device), training=True)
        assert out.shape == shape
        out.sum().backward()
        assert x.grad.shape == shape and w.grad.shape == (c,)
    bn = nn.BatchNorm2d(3).to(device)
    with pytest.raises(ValueError, match="more than one value per channel"):
        bn(t(np.zeros((1, 3, 1, 1)), device, dtype=np.float32))
    assert bn.num_batches_tracked.item() == 0          # refused before the count moved
    assert bn(t(np.zeros((0, 3, 2, 2)), device, dtype=np.float32)).shape == (0, 3, 2, 2)
    assert bn.num_batches_tracked.item() == 0


def test_ceil_mode_pooling(device):
    """ceil_mode keeps the last, partial window: 5x5 by 2x2 gives 3x3; its
    average is over the part inside the (padded) input, as in PyTorch."""
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    xt = t(x, device, requires_grad=True)
    close(F.max_pool2d(xt, 2, ceil_mode=True), [[[[6, 8, 9], [16, 18, 19], [21, 23, 24]]]], rtol=0)
    avg = F.avg_pool2d(xt, 2, ceil_mode=True)
    close(avg[0, 0, 2], [(20 + 21) / 2, (22 + 23) / 2, 24], rtol=1e-12)
    close(avg[0, 0, 0, 2], (4 + 9) / 2, rtol=1e-12)
    assert nn.MaxPool2d(2, ceil_mode=True)(xt).shape == nn.AvgPool2d(2, ceil_mode=True)(xt).shape == (1, 1, 3, 3)
    for cip in (True, False):
        assert gradcheck(lambda a: F.avg_pool2d(a, 3, 2, 1, True, cip), [xt])
    assert gradcheck(lambda a: F.max_pool2d(a, 3, 2, 1, ceil_mode=True), [xt])


def test_ceil_mode_agrees_with_torch():
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(5)
    for H, W in ((5, 5), (7, 6), (4, 9)):
        x = r.standard_normal((2, 3, H, W))
        for k, s, p in ((2, 2, 0), (3, 2, 1), (3, 3, 0), (2, 3, 1), (4, 3, 2)):
            for cip in (True, False):
                a = torch.nn.functional.avg_pool2d(torch.tensor(x), k, s, p, True, cip).numpy()
                close(F.avg_pool2d(gpudl.tensor(x), k, s, p, True, cip), a, rtol=1e-12)
            a = torch.nn.functional.max_pool2d(torch.tensor(x), k, s, p, ceil_mode=True).numpy()
            close(F.max_pool2d(gpudl.tensor(x), k, s, p, ceil_mode=True), a, rtol=0)
