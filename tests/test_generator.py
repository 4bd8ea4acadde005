import math

import pytest
import torch

from rls_core.generator import Generator, GeneratorConfig, upfirdn2d, upsample2d, _fir_kernel


@pytest.mark.parametrize("res,ch", [(32, 1), (64, 2), (128, 4)])
def test_shapes_and_dtypes(res, ch):
    G = Generator(GeneratorConfig.preset("tiny", res, ch)).eval()
    z = torch.randn(3, G.cfg.z_dim)
    w = G.mapping(z)
    assert w.shape == (3, G.cfg.w_dim) and w.dtype == torch.float32
    ws = w[:, None].repeat(1, G.num_ws, 1)
    assert G.num_ws == 2 * int(math.log2(res)) - 2
    img = G.synthesis(ws)
    assert img.shape == (3, ch, res, res) and img.dtype == torch.float32
    assert len(G.synthesis.noise_shapes()) == G.num_ws - 1


def test_presets_sizes():
    cpu = Generator(GeneratorConfig.preset("cpu", 128, 2))
    assert 0.3e6 < cpu.num_params() < 0.8e6  # the CPU-sized prior
    paper = GeneratorConfig.preset("paper", 128, 3)
    assert paper.w_dim == 512 and paper.channels[-1] == 256 and paper.mapping_layers == 8


def test_noise_modes_and_determinism():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig.preset("tiny", 32, 2)).eval()
    with torch.no_grad():
        for layer in G.synthesis.layers():
            layer.noise_strength.fill_(0.5)
        z = torch.randn(2, G.cfg.z_dim)
        a, b = G(z), G(z)
        assert torch.equal(a, b)  # 'const' noise is deterministic
        r1, r2 = G(z, noise_mode="random"), G(z, noise_mode="random")
        assert not torch.equal(r1, r2)
        n = G(z, noise_mode="none")
        assert not torch.equal(a, n)
        # explicit noise list overrides the mode
        ws = G.mapping(z)[:, None].repeat(1, G.num_ws, 1)
        zeros = [torch.zeros(1, 1, h, w) for h, w in G.synthesis.noise_shapes()]
        assert torch.allclose(G.synthesis(ws, noise=zeros), G.synthesis(ws, noise_mode="none"))


def test_noise_only_at_fine_layers():
    """With noise_min_res, coarse layers ignore any noise (their content is w's alone), fine
    layers still take it; the state-dict keys stay those of a noise-everywhere generator, so
    trained weights load across the two (a fine-tune that switches coarse noise off)."""
    torch.manual_seed(0)
    everywhere = Generator(GeneratorConfig.preset("tiny", 32, 2)).eval()
    G = Generator(GeneratorConfig.preset("tiny", 32, 2, noise_min_res=16)).eval()
    assert G.state_dict().keys() == everywhere.state_dict().keys()
    G.load_state_dict(everywhere.state_dict())
    layers = G.synthesis.layers()
    assert [l.use_noise for l in layers] == [l.resolution >= 16 for l in layers]
    assert sum(p.numel() for p in G.parameters()) == everywhere.num_params() - sum(not l.use_noise for l in layers)
    with torch.no_grad():
        for layer in layers:
            layer.noise_strength.fill_(0.5)
        ws = G.mapping(torch.randn(2, G.cfg.z_dim))[:, None].repeat(1, G.num_ws, 1)
        base = [torch.randn(2, 1, h, w) for h, w in G.synthesis.noise_shapes()]
        ref = G.synthesis(ws, noise=base)
        for i, layer in enumerate(layers):
            other = list(base)
            other[i] = torch.randn_like(base[i])
            changed = not torch.equal(G.synthesis(ws, noise=other), ref)
            assert changed == layer.use_noise, f"layer at {layer.resolution} px"
    with pytest.raises(ValueError, match="noise_min_res"):
        GeneratorConfig.preset("tiny", 32, 2, noise_min_res=2)


def test_truncation_pulls_to_w_avg():
    G = Generator(GeneratorConfig.preset("tiny", 32, 1)).eval()
    G.estimate_w_avg(2000)
    z = torch.randn(4, G.cfg.z_dim)
    w = G.mapping(z)
    w0 = G.mapping(z, truncation_psi=0.0)
    assert torch.allclose(w0, G.w_avg.expand_as(w0))
    wh = G.mapping(z, truncation_psi=0.5)
    assert torch.allclose(wh, 0.5 * (w + G.w_avg), atol=1e-6)


def test_fir_upsample_preserves_constant():
    f = _fir_kernel((1, 3, 3, 1))
    x = torch.full((1, 2, 8, 8), 3.0)
    up = upsample2d(x, f)
    assert up.shape == (1, 2, 16, 16)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 3.0))
    # upfirdn2d with a delta filter is the identity
    delta = torch.zeros(3, 3); delta[1, 1] = 1
    y = torch.randn(1, 1, 5, 5)
    assert torch.allclose(upfirdn2d(y, delta, pad=(1, 1, 1, 1)), y)


@pytest.mark.parametrize("taps", [(1.0, 3.0, 3.0, 1.0), (1.0, 2.0, 5.0, 0.5), (1.0, 1.0), (1.0, 2.0, 4.0, 4.0, 2.0, 3.0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fir_upsample_is_zero_insertion_then_filter(taps, channels_last):
    """upsample2d's one transposed convolution equals the reference path (zero insertion,
    pad, true convolution) for even filters, asymmetric ones included, in either layout."""
    k = torch.tensor(taps, dtype=torch.float64)
    f = torch.outer(k, k.flip(0) + 0.25)  # not symmetric, not separable by symmetry
    f = f / f.sum()
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fw = f.shape[-1]
    p0, p1 = (fw + 1) // 2, (fw - 2) // 2
    ref = upfirdn2d(x, f, up=2, pad=(p0, p1, p0, p1), gain=4.0)
    out = upsample2d(x, f)
    assert out.shape == ref.shape == (2, 3, 14, 14)
    assert torch.allclose(out, ref, atol=1e-12)
    if channels_last:  # the point of the transposed convolution: no contiguous copy
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_bad_configs():
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(resolution=100)
    with pytest.raises(ValueError, match="entries"):
        GeneratorConfig(resolution=64, channels=(8, 8))
    with pytest.raises(ValueError, match="img_channels"):
        GeneratorConfig(resolution=32, img_channels=5, channels=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="preset"):
        GeneratorConfig.preset("huge")
    G = Generator(GeneratorConfig.preset("tiny", 32, 1))
    with pytest.raises(ValueError, match="W\\+"):
        G.synthesis(torch.zeros(1, 3, G.cfg.w_dim))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(torch.zeros(1, G.num_ws, G.cfg.w_dim), noise_mode="loud")


def _frozen_generator(channels, noise_min_res=4, dtype=torch.float64):
    """A small generator with trained-looking noise strengths, frozen as a search loads it."""
    torch.manual_seed(1)
    cfg = GeneratorConfig(32, 2, 16, 16, 2, channels, noise_min_res=noise_min_res)
    G = Generator(cfg).eval().to(dtype)
    with torch.no_grad():
        for layer in G.synthesis.layers():
            layer.noise_strength.fill_(0.3)
            layer.bias.normal_()
    return G.requires_grad_(False)


def _graph_nodes(t: torch.Tensor) -> set:
    """Names of the autograd nodes behind `t`."""
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        f = todo.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        names.add(type(f).__name__)
        todo.extend(g for g, _ in f.next_functions)
    return names


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("noise", ["per-tile", "const", "coarse-free"])
@pytest.mark.parametrize("channels", [(40, 36, 8, 4), (8, 8, 4, 2)])
def test_frozen_backward_equals_autograd(noise, channels, dtype, rtol, monkeypatch):
    """The searches' hand-written layer backward (FrozenModConv) gives autograd's image and W+
    gradients: up and plain layers, noise per tile, shared or only at fine layers."""
    from rls_core import generator
    from rls_core.generator import reference_backward

    monkeypatch.setattr(generator, "FROZEN_MIN_ELEMENTS", 0)  # every layer, however small
    G = _frozen_generator(channels, noise_min_res=16 if noise == "coarse-free" else 4, dtype=dtype)
    syn = G.synthesis
    ws0 = torch.randn(3, G.num_ws, 16, dtype=dtype)
    maps = [torch.randn(3, 1, r, r, dtype=dtype) for r, _ in syn.noise_shapes()] if noise == "per-tile" else None
    target = torch.randn(3, 2, 32, 32, dtype=dtype)

    def run():
        ws = ws0.clone().requires_grad_(True)
        img = syn(ws, noise=maps)
        ((img - target).abs().sum() + img.square().mean()).backward()
        return img.detach(), ws.grad, _graph_nodes(img)

    img, grad, nodes = run()
    with reference_backward():
        img_ref, grad_ref, nodes_ref = run()
    assert "FrozenModConvBackward" in nodes and "FrozenModConvBackward" not in nodes_ref
    assert torch.equal(img, img_ref)  # the same forward arithmetic
    assert torch.allclose(grad, grad_ref, rtol=rtol, atol=rtol * grad_ref.abs().max().item())


def test_layers_keep_autocast_dtype_and_clamped_layers_backpropagate():
    """Under bf16 autocast a layer's noise, bias and output stay in the conv's dtype (as before
    the hand-written backward); a layer with conv_clamp (NVlabs imports) can be searched through."""
    G = _frozen_generator((8, 8, 4, 2), dtype=torch.float32)
    layer = G.synthesis.b16.conv0
    x = torch.randn(2, 8, 8, 8)
    w = torch.randn(2, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x, w).dtype == torch.bfloat16
        assert layer(x, w, noise_mode="random").dtype == torch.bfloat16
    layer.conv_clamp = 0.5
    y = layer(x, w)
    assert y.abs().max() <= 0.5
    y.sum().backward()  # a clamp in place would have changed leaky_relu_'s saved output
    assert w.grad is not None and torch.isfinite(w.grad).all()


def _grad_fn_name(layer, x, w, **kw):
    return type(layer(x, w, **kw).grad_fn).__name__


def test_frozen_backward_only_where_a_search_uses_it(monkeypatch):
    """FrozenModConv stands in only when nothing but the latent (and the layer input) wants a
    gradient and the layer is large enough; training, PULSE's trainable noise, autocast and
    no-grad runs keep autograd."""
    from rls_core import generator
    from rls_core.generator import reference_backward

    G = _frozen_generator((8, 8, 4, 2), dtype=torch.float32)
    layer = G.synthesis.b16.conv0  # 4 channels at 16 px
    x = torch.randn(2, 8, 8, 8)
    w = torch.randn(2, 16, requires_grad=True)
    monkeypatch.setattr(generator, "FROZEN_MIN_ELEMENTS", 2 * 4 * 16 * 16 + 1)
    assert _grad_fn_name(layer, x, w) != "FrozenModConvBackward"  # too small to pay
    monkeypatch.setattr(generator, "FROZEN_MIN_ELEMENTS", 2 * 4 * 16 * 16)
    assert _grad_fn_name(layer, x, w) == "FrozenModConvBackward"
    with reference_backward():
        assert _grad_fn_name(layer, x, w) != "FrozenModConvBackward"
    noise = torch.randn(2, 1, 16, 16, requires_grad=True)  # PULSE searches the noise maps too
    assert _grad_fn_name(layer, x, w, noise=noise) != "FrozenModConvBackward"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _grad_fn_name(layer, x, w) != "FrozenModConvBackward"
    with torch.no_grad():
        assert layer(x, w).grad_fn is None
    layer.weight.requires_grad_(True)  # training: the weights learn
    assert _grad_fn_name(layer, x, w) != "FrozenModConvBackward"
