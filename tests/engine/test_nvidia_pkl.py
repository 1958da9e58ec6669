"""engine.nvidia_pkl: NVIDIA network pickles read without running code, converted to the rosinality layout.

The pickles are written here with the structure NVIDIA's `torch_utils.persistence` writes: every network module
reduces to `torch_utils.persistence._reconstruct_persistent_obj(meta)` with meta = {type, version, module_src,
class_name, state=<the nn.Module __dict__>}. The `module_src` we write would create a marker file if it were ever
executed. A small independent implementation of NVIDIA's StyleGAN2 maths (networks_stylegan2.py: FC gains,
modulated conv with demodulation, transposed up-conv + [1,3,3,1] filter, ToRGB style gain, skip upsampling) is
the reference the converted generator must reproduce.
"""
from __future__ import annotations

import contextlib
import math
import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine import nvidia_pkl
from engine.checkpoints import CheckpointError

MARKER_ENV = "MM_TEST_MARKER"


def _module_src(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('module_src was executed')\nraise SystemExit('executed')\n"


# ---------------------------------------------------------------------------------------------- writing side


@contextlib.contextmanager
def nvidia_modules():
    """Temporarily provide `torch_utils.persistence` and `dnnlib.util` so pickle can reference their globals."""
    names = ["torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"]
    saved = {n: sys.modules.get(n) for n in names}
    tu, pers, dn, du = (types.ModuleType(n) for n in names)
    exec("def _reconstruct_persistent_obj(meta):\n    raise RuntimeError('writer-side stub')\n", pers.__dict__)
    exec("class EasyDict(dict):\n    pass\n", du.__dict__)
    tu.persistence, dn.util, dn.EasyDict = pers, du, du.EasyDict
    sys.modules.update(dict(zip(names, (tu, pers, dn, du))))
    try:
        yield pers, du
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


class NVModule(torch.nn.Module):
    """Pickles like a `@persistence.persistent_class` instance (see torch_utils/persistence.py Decorator)."""

    nv_class = "Module"
    module_src = "raise SystemExit('executed')\n"

    def __reduce__(self):
        fields = list(super().__reduce__())
        fields += [None] * max(3 - len(fields), 0)
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.nv_class, state=fields[2])
        fields[0] = sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj
        fields[1] = (meta,)
        fields[2] = None
        return tuple(fields)


def nv(class_name: str, src: str, **attrs) -> NVModule:
    cls = type(class_name, (NVModule,), {"nv_class": class_name, "module_src": src})
    m = cls()
    for k, v in attrs.items():
        setattr(m, k, v)
    return m


def _fc(src, in_f, out_f, lr=1.0, bias_init=0.0, activation="linear", g=None):
    m = nv("FullyConnectedLayer", src, in_features=in_f, out_features=out_f, activation=activation,
           weight_gain=lr / np.sqrt(in_f), bias_gain=lr)
    m.weight = torch.nn.Parameter(torch.randn([out_f, in_f], generator=g) / lr)
    m.bias = torch.nn.Parameter(bias_init + 0.3 * torch.randn([out_f], generator=g))
    return m


def _setup_filter() -> torch.Tensor:
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(f, f)
    return f / f.sum()


def _layer(src, cin, cout, w_dim, res, up, g, use_noise=True, conv_clamp=None):
    m = nv("SynthesisLayer", src, in_channels=cin, out_channels=cout, w_dim=w_dim, resolution=res, up=up,
           use_noise=use_noise, activation="lrelu", conv_clamp=conv_clamp, padding=1, act_gain=math.sqrt(2))
    m.register_buffer("resample_filter", _setup_filter())
    m.affine = _fc(src, w_dim, cin, bias_init=1.0, g=g)
    m.weight = torch.nn.Parameter(torch.randn([cout, cin, 3, 3], generator=g))
    if use_noise:
        m.register_buffer("noise_const", torch.randn([res, res], generator=g))
        m.noise_strength = torch.nn.Parameter(0.5 * torch.randn([], generator=g))
    m.bias = torch.nn.Parameter(0.2 * torch.randn([cout], generator=g))
    return m


def _torgb(src, cin, w_dim, g):
    m = nv("ToRGBLayer", src, in_channels=cin, out_channels=3, w_dim=w_dim, conv_clamp=None,
           weight_gain=1 / np.sqrt(cin))
    m.affine = _fc(src, w_dim, cin, bias_init=1.0, g=g)
    m.weight = torch.nn.Parameter(torch.randn([3, cin, 1, 1], generator=g))
    m.bias = torch.nn.Parameter(0.1 * torch.randn([3], generator=g))
    return m


def make_nv_generator(src: str, resolution=32, z_dim=8, w_dim=8, n_mapping=2, channel_base=512, channel_max=16,
                      lr_mlp=0.01, seed=0, architecture="skip", use_noise=True) -> NVModule:
    """A tiny StyleGAN2 G with NVIDIA's module tree, attribute names and parameter shapes."""
    g = torch.Generator().manual_seed(seed)
    log2 = int(math.log2(resolution))
    resolutions = [2 ** i for i in range(2, log2 + 1)]
    ch = {r: min(channel_base // r, channel_max) for r in resolutions}
    mapping = nv("MappingNetwork", src, z_dim=z_dim, c_dim=0, w_dim=w_dim, num_ws=2 * log2 - 2,
                 num_layers=n_mapping, w_avg_beta=0.995)
    for i in range(n_mapping):
        setattr(mapping, f"fc{i}", _fc(src, z_dim if i == 0 else w_dim, w_dim, lr=lr_mlp, activation="lrelu", g=g))
    mapping.register_buffer("w_avg", torch.randn([w_dim], generator=g))
    synthesis = nv("SynthesisNetwork", src, w_dim=w_dim, img_resolution=resolution, img_resolution_log2=log2,
                   img_channels=3, num_fp16_res=0, block_resolutions=resolutions, num_ws=2 * log2 - 2,
                   _init_kwargs={"w_dim": w_dim, "img_resolution": resolution, "img_channels": 3,
                                 "channel_base": channel_base, "channel_max": channel_max})
    for r in resolutions:
        cin = ch[r // 2] if r > 4 else 0
        b = nv("SynthesisBlock", src, in_channels=cin, w_dim=w_dim, resolution=r, img_channels=3,
               is_last=r == resolution, architecture=architecture, use_fp16=False, channels_last=False,
               num_conv=1 if r == 4 else 2, num_torgb=1)
        b.register_buffer("resample_filter", _setup_filter())
        if r == 4:
            b.const = torch.nn.Parameter(torch.randn([ch[r], 4, 4], generator=g))
        else:
            b.conv0 = _layer(src, cin, ch[r], w_dim, r, 2, g, use_noise)
        b.conv1 = _layer(src, ch[r], ch[r], w_dim, r, 1, g, use_noise)
        b.torgb = _torgb(src, ch[r], w_dim, g)
        setattr(synthesis, f"b{r}", b)
    G = nv("Generator", src, z_dim=z_dim, c_dim=0, w_dim=w_dim, img_resolution=resolution, img_channels=3,
           num_ws=2 * log2 - 2)
    G.synthesis, G.mapping = synthesis, mapping
    return G


def write_pkl(path: Path, G, extra=None) -> Path:
    with nvidia_modules() as (_, du):
        data = {"G": G, "D": None, "G_ema": G, "augment_pipe": None,
                "training_set_kwargs": du.EasyDict(path="ffhq.zip", resolution=G.img_resolution)}
        data.update(extra or {})
        with open(path, "wb") as f:
            pickle.dump(data, f)
    return path


# ---------------------------------------------------------------------------------------------- NVIDIA maths


def _fc_forward(fc, x):
    w = fc.weight * float(fc.weight_gain)
    b = fc.bias * float(fc.bias_gain)
    if fc.activation == "lrelu":
        return F.leaky_relu(x @ w.t() + b, 0.2) * math.sqrt(2)
    return x @ w.t() + b


def _upfirdn_up2(x, f):
    """NVIDIA upsample2d: zero-insertion x2, pad (2, 1), FIR with f * 4."""
    n, c, h, w = x.shape
    y = torch.zeros(n, c, h * 2, w * 2, dtype=x.dtype)
    y[:, :, ::2, ::2] = x
    y = F.pad(y, [2, 1, 2, 1])
    k = (f * 4).flip([0, 1])[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(y, k, groups=c)


def _layer_forward(layer, x, w, f):
    styles = _fc_forward(layer.affine, w)                                    # [N, I]
    wmod = layer.weight[None] * styles[:, None, :, None, None]               # [N, O, I, k, k]
    dcoefs = (wmod.square().sum([2, 3, 4]) + 1e-8).rsqrt()                   # [N, O]
    x = x * styles[:, :, None, None]
    if layer.up == 2:
        x = F.conv_transpose2d(x, layer.weight.transpose(0, 1), stride=2)  # no flip (flip_weight=False)
        c = x.shape[1]
        x = F.pad(x, [1, 1, 1, 1])
        x = F.conv2d(x, (f * 4).flip([0, 1])[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        x = F.conv2d(x, layer.weight, padding=1)
    x = x * dcoefs[:, :, None, None]
    if layer.use_noise:
        x = x + layer.noise_const * layer.noise_strength
    return F.leaky_relu(x + layer.bias[None, :, None, None], 0.2) * math.sqrt(2)


def _torgb_forward(t, x, w):
    styles = _fc_forward(t.affine, w) * float(t.weight_gain)
    return F.conv2d(x * styles[:, :, None, None], t.weight) + t.bias[None, :, None, None]


@torch.no_grad()
def nv_synthesis(G, ws):
    """NVIDIA SynthesisNetwork.forward (noise_mode='const', fp32) for ws [N, num_ws, w_dim]."""
    S = G.synthesis
    x = img = None
    w_idx = 0
    for r in S.block_resolutions:
        b = getattr(S, f"b{r}")
        cur = ws[:, w_idx: w_idx + b.num_conv + b.num_torgb]
        w_idx += b.num_conv
        if r == 4:
            x = b.const[None].repeat(ws.shape[0], 1, 1, 1)
            x = _layer_forward(b.conv1, x, cur[:, 0], b.resample_filter)
            k = 1
        else:
            x = _layer_forward(b.conv0, x, cur[:, 0], b.resample_filter)
            x = _layer_forward(b.conv1, x, cur[:, 1], b.resample_filter)
            k = 2
        y = _torgb_forward(b.torgb, x, cur[:, k])
        img = y if img is None else _upfirdn_up2(img, b.resample_filter) + y
    return img


@torch.no_grad()
def nv_mapping(G, z):
    x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for i in range(G.mapping.num_layers):
        x = _fc_forward(getattr(G.mapping, f"fc{i}"), x)
    return x


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "EXECUTED"
    yield m
    assert not m.exists(), "code from the pickle was executed"


@pytest.fixture
def tiny(tmp_path, marker):
    G = make_nv_generator(_module_src(marker))
    return G, write_pkl(tmp_path / "tiny.pkl", G)


# ---------------------------------------------------------------------------------------------- tests


def test_reads_persistent_structure_without_running_module_src(tiny, marker):
    G, path = tiny
    top = nvidia_pkl.read_network_pickle(path)
    assert set(top) == {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}
    assert isinstance(top["training_set_kwargs"], nvidia_pkl.EasyDict)
    assert top["training_set_kwargs"].resolution == 32
    g = top["G_ema"]
    assert isinstance(g, nvidia_pkl.PersistentObject) and g.class_name == "Generator"
    assert g.module_src_chars == len(_module_src(marker))
    assert g.child("synthesis").child("b8").child("conv0").class_name == "SynthesisLayer"
    assert top["G"] is g  # pickle memo keeps shared objects shared
    tensors = g.tensors()
    ref = {k: v for k, v in G.state_dict().items()}
    assert set(tensors) == set(ref)
    for k, v in ref.items():
        assert torch.equal(tensors[k], v), k
    fc0 = g.child("mapping").child("fc0")
    assert isinstance(fc0.attr("weight_gain"), np.floating)  # numpy scalars come back as values
    assert not marker.exists()


def test_conversion_layout_and_values(tiny):
    G, path = tiny
    config, sd, latent_avg = nvidia_pkl.load_nvidia_generator(path)
    assert config == dict(resolution=32, w_dim=8, z_dim=8, n_mapping=2, channel_multiplier=0.03125,
                          channel_max=16, lr_mlp=0.01, blur_kernel=(1.0, 3.0, 3.0, 1.0))
    assert torch.equal(latent_avg, G.mapping.w_avg)
    s = G.synthesis
    assert torch.equal(sd["style.1.weight"], G.mapping.fc0.weight)
    assert torch.equal(sd["style.2.bias"], G.mapping.fc1.bias)
    assert torch.equal(sd["input.input"], s.b4.const[None])
    assert torch.equal(sd["conv1.conv.weight"], s.b4.conv1.weight[None])
    assert torch.equal(sd["conv1.noise.weight"], s.b4.conv1.noise_strength.reshape(1))
    assert torch.equal(sd["noises.noise_0"], s.b4.conv1.noise_const[None, None])
    assert torch.equal(sd["convs.0.conv.weight"], s.b8.conv0.weight[None])  # up-conv: not flipped
    assert torch.equal(sd["convs.3.activate.bias"], s.b16.conv1.bias)
    assert torch.equal(sd["noises.noise_3"], s.b16.conv0.noise_const[None, None])
    assert torch.equal(sd["to_rgbs.1.conv.modulation.weight"], s.b16.torgb.affine.weight)
    assert torch.equal(sd["to_rgbs.2.bias"], s.b32.torgb.bias.reshape(1, 3, 1, 1))
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    assert torch.allclose(sd["convs.2.conv.blur.kernel"], torch.outer(k, k) / 16)
    assert torch.allclose(sd["to_rgbs.0.upsample.kernel"], torch.outer(k, k) / 16)


def test_load_generator_reproduces_nvidia_maths(tiny):
    import engine

    G, path = tiny
    Gr = engine.load_generator(path)
    assert (Gr.resolution, Gr.num_ws, Gr.w_dim, Gr.z_dim) == (32, 8, 8, 8)
    sd = Gr.state_dict()
    _, conv_sd, _ = nvidia_pkl.load_nvidia_generator(path)
    assert set(sd) == set(conv_sd)  # exactly the rosinality keys, nothing missing or extra
    assert torch.equal(Gr.latent_avg, G.mapping.w_avg)
    ws = torch.randn(2, Gr.num_ws, Gr.w_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = Gr(ws)
    ref = nv_synthesis(G, ws)
    assert out.shape == ref.shape == (2, 3, 32, 32)
    assert ref.abs().max() > 0.5  # a non-degenerate image
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        w = Gr.mapping(z)
    ref_w = nv_mapping(G, z)
    torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)
    assert (ref_w[0] - ref_w[1]).abs().max() > 1e-3  # z matters


def test_generator_without_noise_inputs(tmp_path, marker):
    G = make_nv_generator(_module_src(marker), resolution=16, use_noise=False, seed=2)
    config, sd, _ = nvidia_pkl.load_nvidia_generator(write_pkl(tmp_path / "nn.pkl", G))
    assert torch.count_nonzero(sd["noises.noise_2"]) == 0 and sd["convs.1.noise.weight"].item() == 0


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("func,label", [(os.system, "posix.system"), (eval, "builtins.eval"),
                                        (exec, "builtins.exec")])
def test_malicious_reduce_is_refused_and_not_run(tmp_path, func, label):
    marker = tmp_path / "PWNED"
    arg = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w').close()"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(func, arg)}))
    with pytest.raises(CheckpointError) as info:
        nvidia_pkl.load_nvidia_generator(path)
    msg = str(info.value)
    assert label.split(".")[-1] in msg and "refused" in msg and "\n" not in msg and "nothing from the file was run" in msg
    assert not marker.exists()


def test_malicious_object_hidden_in_a_network_state_is_refused(tmp_path, marker):
    G = make_nv_generator(_module_src(marker), resolution=8)
    G.synthesis.b8.payload = _Evil(os.system, f"touch {marker}")
    with pytest.raises(CheckpointError, match="system"):
        nvidia_pkl.read_network_pickle(write_pkl(tmp_path / "hidden.pkl", G))


def test_getattr_gadget_is_refused(tmp_path, marker):
    class Gadget:
        def __reduce__(self):
            return (getattr, (OrderedDict, "fromkeys"))  # a classic first step of gadget chains

    path = tmp_path / "gadget.pkl"
    path.write_bytes(pickle.dumps(Gadget()))
    with pytest.raises(CheckpointError, match="builtins.getattr"):
        nvidia_pkl.read_network_pickle(path)


def test_tensorflow_era_pickle_gets_a_conversion_hint(tmp_path):
    # the global a TF StyleGAN2 pickle starts with; written by hand (protocol 2 GLOBAL opcode)
    path = tmp_path / "tf.pkl"
    path.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01.")
    with pytest.raises(CheckpointError, match="TensorFlow-era.*legacy.py"):
        nvidia_pkl.read_network_pickle(path)


def test_truncated_and_garbage_files(tiny, tmp_path):
    _, path = tiny
    data = path.read_bytes()
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        nvidia_pkl.load_nvidia_generator(cut)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"this is not a pickle at all")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        nvidia_pkl.load_nvidia_generator(junk)


def test_stylegan3_is_refused_with_a_clear_message(tmp_path, marker):
    src = _module_src(marker)
    G = make_nv_generator(src, resolution=8)
    S = nv("SynthesisNetwork", src, w_dim=8, img_resolution=8, img_channels=3)
    S.input = nv("SynthesisInput", src, w_dim=8, channels=16, size=[36, 36])
    S.input.register_buffer("freqs", torch.randn(16, 2))
    S.L0_36_512 = nv("SynthesisLayer", src, is_torgb=False)
    G.synthesis = S
    with pytest.raises(CheckpointError, match="StyleGAN3 generators are not supported; use a StyleGAN2 pkl"):
        nvidia_pkl.load_nvidia_generator(write_pkl(tmp_path / "sg3.pkl", G))


def test_missing_and_misshaped_tensors_are_named(tmp_path, marker):
    src = _module_src(marker)
    G = make_nv_generator(src, resolution=16)
    del G.synthesis.b8.conv0.noise_const
    with pytest.raises(CheckpointError, match=r"missing tensor 'synthesis\.b8\.conv0\.noise_const'"):
        nvidia_pkl.load_nvidia_generator(write_pkl(tmp_path / "miss.pkl", G))
    G = make_nv_generator(src, resolution=16)
    G.synthesis.b16.torgb.bias = torch.nn.Parameter(torch.zeros(4))
    with pytest.raises(CheckpointError, match=r"'synthesis\.b16\.torgb\.bias' has shape \[4\], expected \[3\]"):
        nvidia_pkl.load_nvidia_generator(write_pkl(tmp_path / "shape.pkl", G))


def test_unsupported_architectures(tmp_path, marker):
    src = _module_src(marker)
    G = make_nv_generator(src, resolution=16, architecture="resnet")
    with pytest.raises(CheckpointError, match="architecture 'resnet' is not supported"):
        nvidia_pkl.load_nvidia_generator(write_pkl(tmp_path / "resnet.pkl", G))
    G = make_nv_generator(src, resolution=16)
    G.c_dim = 10
    with pytest.raises(CheckpointError, match="conditional generators"):
        nvidia_pkl.load_nvidia_generator(write_pkl(tmp_path / "cond.pkl", G))
    with pytest.raises(CheckpointError, match="no 'G_ema' network"):
        path = tmp_path / "nog.pkl"
        path.write_bytes(pickle.dumps({"D": 1}))
        nvidia_pkl.load_nvidia_generator(path)


def test_pkl_writer_left_no_fake_modules_behind(tiny):
    assert "torch_utils.persistence" not in sys.modules or not hasattr(
        sys.modules["torch_utils.persistence"], "_reconstruct_persistent_obj")
