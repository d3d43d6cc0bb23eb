"""``tfinpaint convert`` for the official GLCIC Torch7 release: ``.t7`` files written by a small serializer of the
Torch7 binary format (below), read back through ``torchfile``."""
import os
import struct
import sys

import numpy as np
import pytest

import tfinpaint
from tfinpaint import checkpoints
from tfinpaint.convert import ConvertError

# --------------------------------------------------------------------------------------------------------------
# A Torch7 serializer (torch.File binary format, little endian, 8-byte longs): nil, numbers, strings, booleans,
# tables, torch classes (a versioned class name followed by the object's field table), Float tensors.


class Torch:
    def __init__(self, cls, **fields):
        self.cls = cls
        self.fields = fields


class _Writer:
    def __init__(self, handle):
        self.handle = handle
        self.index = 0

    def _pack(self, fmt, *values):
        self.handle.write(struct.pack("<" + fmt, *values))

    def _string(self, text):
        data = text.encode("utf-8")
        self._pack("i", len(data))
        self.handle.write(data)

    def _reference(self):
        self.index += 1
        self._pack("i", self.index)

    def _class(self, cls):
        self._pack("i", 4)
        self._reference()
        self._string("V 1")
        self._string(cls)

    def write(self, value):
        if value is None:
            self._pack("i", 0)
        elif isinstance(value, bool):
            self._pack("ii", 5, int(value))
        elif isinstance(value, (int, float)):
            self._pack("id", 1, float(value))
        elif isinstance(value, str):
            self._pack("i", 2)
            self._string(value)
        elif isinstance(value, (dict, list)):
            items = value.items() if isinstance(value, dict) else enumerate(value, start=1)
            items = list(items)
            self._pack("i", 3)
            self._reference()
            self._pack("i", len(items))
            for key, item in items:
                self.write(key)
                self.write(item)
        elif isinstance(value, Torch):
            self._class(value.cls)
            self.write(value.fields)
        elif isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value, dtype=np.float32)
            self._class("torch.FloatTensor")
            self._pack("i", array.ndim)
            self._pack(f"{array.ndim}q", *array.shape)
            self._pack(f"{array.ndim}q", *(stride // 4 for stride in array.strides))
            self._pack("q", 1)  # storage offset, 1-based
            self._class("torch.FloatStorage")
            self._pack("q", array.size)
            self.handle.write(array.tobytes())
        else:
            raise TypeError(type(value))


def write_t7(path, value):
    with open(path, "wb") as handle:
        _Writer(handle).write(value)


# --------------------------------------------------------------------------------------------------------------
# The completion network of the paper (Table 1), as the official file lays it out: conv, BN, ReLU per layer.
# (name in tfinpaint, Torch class, kernel, stride, dilation, output planes)
LAYERS = [("conv1", "nn.SpatialConvolution", 5, 1, 1, 64),
          ("conv2", "nn.SpatialConvolution", 3, 2, 1, 128),
          ("conv3", "nn.SpatialConvolution", 3, 1, 1, 128),
          ("conv4", "nn.SpatialConvolution", 3, 2, 1, 256),
          ("conv5", "nn.SpatialConvolutionMM", 3, 1, 1, 256),  # MM: weight stored 2-D
          ("conv6", "nn.SpatialConvolution", 3, 1, 1, 256),
          ("conv7_dilated", "nn.SpatialDilatedConvolution", 3, 1, 2, 256),
          ("conv8_dilated", "nn.SpatialDilatedConvolution", 3, 1, 4, 256),
          ("conv9_dilated", "nn.SpatialDilatedConvolution", 3, 1, 8, 256),
          ("conv10_dilated", "nn.SpatialDilatedConvolution", 3, 1, 16, 256),
          ("conv11", "nn.SpatialConvolution", 3, 1, 1, 256),
          ("conv12", "nn.SpatialConvolution", 3, 1, 1, 256),
          ("deconv13", "nn.SpatialFullConvolution", 4, 2, 1, 128),
          ("conv14", "nn.SpatialConvolution", 3, 1, 1, 128),
          ("deconv15", "nn.SpatialFullConvolution", 4, 2, 1, 64),
          ("conv16", "nn.SpatialConvolution", 3, 1, 1, 32),
          ("conv17_output", "nn.SpatialConvolution", 3, 1, 1, 3)]
MEAN = [0.43, 0.41, 0.38]


def official_modules(seed=0, relu_before_bn=False, first_planes=4):
    """The leaf modules in forward order and the expected Keras values ``{(layer, weight): array}``."""
    rng = np.random.default_rng(seed)
    modules, expected = [], {}
    planes = first_planes
    for index, (name, cls, k, stride, dilation, out) in enumerate(LAYERS):
        bias = rng.standard_normal(out).astype(np.float32)
        if cls == "nn.SpatialFullConvolution":
            weight = rng.standard_normal((planes, out, k, k)).astype(np.float32) * 0.05
            fields = {"nInputPlane": planes, "nOutputPlane": out, "kW": k, "kH": k, "dW": stride, "dH": stride,
                      "padW": 1, "padH": 1, "adjW": 0, "adjH": 0, "weight": weight, "bias": bias}
            kernel = weight.transpose(2, 3, 1, 0)  # [I, O, kH, kW] -> Keras [kH, kW, O, I]
        else:
            weight = rng.standard_normal((out, planes, k, k)).astype(np.float32) * 0.05
            pad = (k - 1) // 2 * dilation
            fields = {"nInputPlane": planes, "nOutputPlane": out, "kW": k, "kH": k, "dW": stride, "dH": stride,
                      "padW": pad, "padH": pad, "bias": bias,
                      "weight": weight.reshape(out, -1) if cls.endswith("MM") else weight}
            if dilation > 1:
                fields.update(dilationW=dilation, dilationH=dilation)
            kernel = weight.transpose(2, 3, 1, 0)  # [O, I, kH, kW] -> Keras [kH, kW, I, O]
        modules.append(Torch(cls, **fields))
        expected[(name, "kernel")] = kernel
        expected[(name, "bias")] = bias
        planes = out
        if name == "conv17_output":
            modules.append(Torch("nn.Sigmoid"))
            break
        gamma = rng.uniform(0.5, 1.5, out).astype(np.float32)
        beta = rng.standard_normal(out).astype(np.float32)
        mean = rng.standard_normal(out).astype(np.float32)
        variance = rng.uniform(0.5, 2.0, out).astype(np.float32)
        bn = {"weight": gamma, "bias": beta, "running_mean": mean, "eps": 1e-5, "momentum": 0.1, "affine": True}
        expected_variance = variance
        if index == 2:  # an older file: running_std holds the running 1 / sqrt(var + eps)
            bn["running_std"] = (1.0 / np.sqrt(variance.astype(np.float64) + 1e-5)).astype(np.float32)
            expected_variance = 1.0 / bn["running_std"].astype(np.float64) ** 2 - 1e-5
        else:
            bn["running_var"] = variance
        if index == 5:  # another epsilon: folded into the variance so that var + eps is unchanged
            bn["eps"] = 1e-3
            expected_variance = variance + 1e-3 - 1e-5
        layers = [Torch("nn.SpatialBatchNormalization", **bn), Torch("nn.ReLU", inplace=True)]
        modules += layers[::-1] if relu_before_bn and index == 3 else layers
        expected[(f"{name}_bn", "gamma")] = gamma
        expected[(f"{name}_bn", "beta")] = beta
        expected[(f"{name}_bn", "moving_mean")] = mean
        expected[(f"{name}_bn", "moving_variance")] = expected_variance
    return modules, expected


def sequential(modules):
    return Torch("nn.Sequential", modules=modules, output=np.zeros(0, np.float32), train=False)


def gmodule(modules):
    """An nngraph gModule seen through its forward nodes only (input node without a module first)."""
    nodes = [{"data": {"annotations": {}}}] + [{"data": {"module": module}} for module in modules]
    return Torch("nn.gModule", forwardnodes=nodes)


def _variable(model, layer, leaf):
    found = [v for v in model.weights if v.path.split("/")[-2:] == [layer, leaf]]
    assert len(found) == 1, (layer, leaf)
    return found[0]


@pytest.mark.parametrize("container", ["sequential", "gmodule"])
def test_glcic_t7_converts_every_tensor(container, tmp_path):
    modules, expected = official_modules()
    model = sequential(modules) if container == "sequential" else gmodule(modules)
    src = str(tmp_path / "completionnet_places2.t7")
    write_t7(src, {"model": model, "mean": np.asarray(MEAN, np.float32)})
    out = tmp_path / "glcic"
    report = tfinpaint.convert(src, out)  # model detected from the .t7 extension
    assert report["model"] == "glcic" and report["parameters"] == sum(v.size for v in expected.values())
    config = checkpoints.read_model_config(out)
    np.testing.assert_allclose(config["options"]["mean"], MEAN, rtol=1e-6)

    inpainter = tfinpaint.load(out)
    generator = inpainter.generator
    np.testing.assert_allclose(generator.mean.numpy(), MEAN, rtol=1e-6)
    for (layer, leaf), value in expected.items():
        np.testing.assert_allclose(_variable(generator, layer, leaf).numpy(), value, rtol=1e-6, err_msg=layer)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
    hole = np.zeros((37, 45), np.float32)
    hole[10:25, 8:30] = 1
    result = inpainter(image, hole)
    assert result.shape == image.shape
    np.testing.assert_array_equal(result[hole == 0], image[hole == 0])


@pytest.mark.parametrize("change, message", [
    ("dropout", r"module 34 is not .*|unexpected module nn.Dropout"),
    ("relu_first", r"module 11 is nn.ReLU, expected batch norm \(ReLU before batch norm"),
    ("three_planes", r"module 1: 3 input planes, expected 4"),
    ("padding", r"module 4: padding 0x0, expected symmetric 1"),
    ("adj", r"module 37: adjW/adjH = \(1, 1\), expected 0"),
    ("no_mean", r"no 'mean' entry"),
    ("truncated", r"cannot read the Torch7 file"),
])
def test_bad_t7_files_one_line_error_nothing_written(change, message, tmp_path):
    modules, _ = official_modules(relu_before_bn=change == "relu_first",
                                  first_planes=3 if change == "three_planes" else 4)
    if change == "dropout":
        modules.insert(33, Torch("nn.Dropout", p=0.5))
    if change == "padding":
        modules[3].fields.update(padW=0, padH=0)
    if change == "adj":
        modules[36].fields.update(adjW=1, adjH=1)
    root = {"model": sequential(modules)}
    if change != "no_mean":
        root["mean"] = np.asarray(MEAN, np.float32)
    src = str(tmp_path / "bad.t7")
    write_t7(src, root)
    if change == "truncated":
        with open(src, "r+b") as handle:
            handle.truncate(os.path.getsize(src) // 3)
    with pytest.raises(ConvertError, match=message) as caught:
        tfinpaint.convert(src, tmp_path / "out", model="glcic")
    assert "\n" not in str(caught.value) and str(caught.value).startswith(src)
    assert sorted(os.listdir(tmp_path)) == ["bad.t7"]


def test_missing_torchfile_is_a_one_line_message(tmp_path, monkeypatch):
    src = str(tmp_path / "model.t7")
    write_t7(src, {"mean": [0.5, 0.5, 0.5]})
    monkeypatch.setitem(sys.modules, "torchfile", None)  # import torchfile -> ImportError
    with pytest.raises(ConvertError, match=r"needs the torchfile package: pip install torchfile"):
        tfinpaint.convert(src, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


def test_a_deepfill_model_flag_on_a_t7_file_names_glcic(tmp_path):
    src = str(tmp_path / "model.t7")
    write_t7(src, {"mean": [0.5, 0.5, 0.5]})
    with pytest.raises(ConvertError, match=r"this is a GLCIC Torch7 file; use model glcic"):
        tfinpaint.convert(src, tmp_path / "out", model="deepfill_v2")


def test_the_glcic_release_has_no_discriminator_to_convert(tmp_path):
    src = str(tmp_path / "model.t7")
    write_t7(src, {"mean": [0.5, 0.5, 0.5]})
    with pytest.raises(ConvertError, match=r"model.t7: the GLCIC release holds only the completion network"):
        tfinpaint.convert(src, tmp_path / "out", discriminator=True)
    assert sorted(os.listdir(tmp_path)) == ["model.t7"]
