"""The engines bench_models.py compares, one class each: prepare an artifact (parent), import, load and run it (child).

The parent calls `prepare(files, model)` once per model with torch at hand; each child process
then imports only its engine's modules (`import_modules`, timed), loads the artifact (`load`, timed)
and calls `run` on float32 NCHW batches. Nothing here is imported at module level beyond the standard
library and numpy, so a child's import time and peak RSS belong to its engine alone.
"""
import copy
import importlib.util
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ONNX_OPSET = 17
TESTS = Path(__file__).resolve().parents[1] / "tests"
# torchvision's architectures that bench_models.py times, built by tests/tv_models.py from torchvision's wheel
# (its C extension does not load with our CPU torch); every other model comes from qruntime.zoo.
TORCHVISION_MODELS = ("mobilenet_v3_large", "efficientnet_b0", "shufflenet_v2_x1_0")
TORCHVISION_INPUT_CHW = (3, 224, 224)  # ImageNet classifiers at their reference resolution
# Kernel-name fragments of ISAs above AVX2, as oneDNN and OpenVINO name their kernels (jit_avx512_I8,
# brgconv_avx512_core_vnni_I8, brgemm_avx512_amx...); avx2_vnni is AVX-VNNI, which an AVX2-only host lacks too.
ABOVE_AVX2 = ("avx512", "vnni", "amx")
# OpenVINO layer types that carry a model's MACs: a cap that misses one of these misses the point.
OPENVINO_HEAVY_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")


@dataclass(frozen=True)
class ModelFiles:
    """Where one model's prepared inputs and artifacts live (all under `root`, recreated by every run)."""

    root: Path
    name: str

    @property
    def state_dict(self):
        return self.root / "fp32_state_dict.pt"

    @property
    def calibration(self):
        # (batches, batch, C, H, W) float32: the one calibration set every int8 engine is given.
        return self.root / "calibration.npy"

    @property
    def inputs(self):
        # (N, C, H, W) float32: the timed batches are its first `batch` rows.
        return self.root / "inputs.npy"

    @property
    def labelled(self):
        # npz with x, y: the held-out digits for top-1 accuracy (digits models only).
        return self.root / "labelled.npz"

    @property
    def onnx_fp32(self):
        return self.root / "fp32.onnx"

    def calibration_batches(self):
        return list(np.load(self.calibration))

    def input_chw(self):
        return np.load(self.inputs, mmap_mode="r").shape[1:]


def load_zoo():
    """qruntime.zoo loaded from its file without importing the qruntime package (the torch children need
    the model classes only, and must not pay for qruntime's import or extension in their time and RSS)."""
    spec = importlib.util.find_spec("qruntime")
    if spec is None or spec.origin is None:
        raise ImportError("qruntime is not installed: its zoo.py holds the model classes")
    zoo_spec = importlib.util.spec_from_file_location("qruntime_zoo", Path(spec.origin).with_name("zoo.py"))
    zoo = importlib.util.module_from_spec(zoo_spec)
    zoo_spec.loader.exec_module(zoo)
    return zoo


def load_tests_module(name):
    """tests/<name>.py imported by path, as module `name` (so tv_models' own `import photos` finds its sibling)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def build_model(name, seed=0):
    """The float model `name` with seed's random weights, in eval mode: a torchvision architecture (its BatchNorm
    statistics left at their defaults: the caller measures them or loads a state_dict) or a qruntime.zoo model."""
    if name in TORCHVISION_MODELS:
        return load_tests_module("tv_models").build(name, bn_batches=(), seed=seed)
    return load_zoo().build(name, seed)


def above_cap(kernel, cap):
    """Whether a kernel or ISA name denotes instructions beyond the ISA cap (only "avx2" is known)."""
    if cap != "avx2":
        raise ValueError(f"unknown ISA cap {cap!r}")
    return any(fragment in kernel.lower() for fragment in ABOVE_AVX2)


def cpu_isa():
    """The best int8 ISA tier in /proc/cpuinfo's flags (what a CPUID dispatcher picks), named as qruntime's paths."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return "unknown"
    for isa, needs in (("amx", {"amx_tile", "amx_int8"}), ("avx512_vnni", {"avx512bw", "avx512_vnni"}),
                       ("avx512", {"avx512bw"}), ("avx_vnni", {"avx_vnni"}), ("avx2", {"avx2"})):
        if needs <= flags:
            return isa
    return "sse"


def export_onnx_fp32(files, model):
    """The fp32 ONNX file (dynamic batch, input "x", output "y"), exported once and shared by the ONNX-based engines."""
    if files.onnx_fp32.exists():
        return files.onnx_fp32
    import torch

    example = torch.from_numpy(files.calibration_batches()[0])
    with warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False) is deprecated but needs no onnxscript, which is not installed.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(files.onnx_fp32), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                          opset_version=ONNX_OPSET)
    return files.onnx_fp32


def ort_session(ort, artifact, threads):
    """An ONNX Runtime CPU session on `threads` intra-op threads, one inter-op, sequential (the module `ort`
    passed in: each engine imports it in its own timed step)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])


def save_state_dict(files, model):
    """The fp32 state_dict (torch.save), shared by both torch engines; the size reference of the targets."""
    if not files.state_dict.exists():
        import torch

        torch.save(model.state_dict(), files.state_dict)
    return files.state_dict


class Engine:
    """One engine: `name` is its key on the command line and in the results."""

    name = ""
    # What --cap-isa can do to this engine, for the report's notes.
    cap_note = "no known control: runs the best ISA the CPU has"

    def cap_env(self, isa):
        """Environment variables that restrict the engine's kernels to `isa`, set before the child imports it."""
        return {}

    def isa_report(self, cap):
        """What this process can observe of the ISA the engine ran, for the cell's record: isa_used (names), and
        under a cap isa_above_cap (what ran beyond it) and isa_status: "capped" (verified), "mostly capped" (the
        MAC-carrying kernels verified, the exceptions in isa_above_cap), "partly capped" (told, not verifiable) or
        "not capped"."""
        isa = cpu_isa()
        report = {"isa_used": [f"{isa} (CPUID)"]}
        if cap:
            above = above_cap(isa, cap)
            report.update(isa_above_cap=[isa] if above else [], isa_status="not capped" if above else "capped")
        return report

    def prepare(self, files, model):
        """Writes this engine's artifact for `model` (a float torch module in eval mode); returns its path."""
        raise NotImplementedError

    def import_modules(self):
        """Imports what the engine needs at run time (timed by the child)."""
        raise NotImplementedError

    def load(self, artifact, files, batch, threads):
        """Loads the artifact for batches of `batch` images on `threads` threads; returns extra timings in ms."""
        raise NotImplementedError

    def run(self, x):
        """float32 NCHW batch -> float32 logits (N, classes)."""
        raise NotImplementedError


class TorchFP32(Engine):
    """PyTorch eager fp32."""

    name = "torch-fp32"
    cap_note = ("ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, FBGEMM_ENABLE_INSTRUCTIONS and MKL_ENABLE_INSTRUCTIONS are "
                "set, but only ATen's capability can be read back: the oneDNN and MKL kernels stay unverified")

    def cap_env(self, isa):
        upper = isa.upper()
        return {"ATEN_CPU_CAPABILITY": isa, "ONEDNN_MAX_CPU_ISA": upper, "FBGEMM_ENABLE_INSTRUCTIONS": upper,
                "MKL_ENABLE_INSTRUCTIONS": upper}

    def isa_report(self, cap):
        aten = self.torch.backends.cpu.get_cpu_capability()
        report = {"isa_used": [f"ATen {aten}"]}
        if cap:
            # ATen capped is all this process can show: oneDNN, FBGEMM and MKL kernels stay unverified.
            report.update(isa_above_cap=[] if aten.lower() == cap else [f"ATen {aten}"],
                          isa_status="partly capped" if aten.lower() == cap else "not capped")
        return report

    def prepare(self, files, model):
        return save_state_dict(files, model)

    def import_modules(self):
        import torch

        self.torch = torch

    def _build(self, files, threads):
        self.torch.set_num_threads(threads)
        model = build_model(files.name)
        model.load_state_dict(self.torch.load(files.state_dict, weights_only=True))
        return model.eval()

    def load(self, artifact, files, batch, threads):
        self.model = self._build(files, threads)
        return {}

    def run(self, x):
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(x)).numpy()


class TorchInt8(TorchFP32):
    """PyTorch FX post-training quantization, x86 engine."""

    name = "torch-int8"
    cap_note = (TorchFP32.cap_note + "; FBGEMM's groupwise and 1-D conv kernels pick AVX-512 VNNI from CPUID "
                "regardless of FBGEMM_ENABLE_INSTRUCTIONS, and the x86 engine sends convs with <= 100 groups to oneDNN "
                "instead of FBGEMM because the CPU has AVX-512 VNNI (an AVX2-only host runs FBGEMM there)")

    @staticmethod
    def _quantize(torch, model, batches):
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = "x86"
        example = (torch.from_numpy(batches[0]),)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FX quantization's deprecation notices
            prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), example_inputs=example)
            with torch.inference_mode():
                for b in batches:
                    prepared(torch.from_numpy(b))
            return convert_fx(prepared)

    def prepare(self, files, model):
        import torch

        save_state_dict(files, model)
        # Saved for its size only: an FX-quantized state_dict cannot be loaded without re-tracing the model,
        # so the child re-makes the int8 model from the fp32 state_dict and the calibration batches.
        path = files.root / "torch_int8_state_dict.pt"
        torch.save(self._quantize(torch, model, files.calibration_batches()).state_dict(), path)
        return path

    def import_modules(self):
        super().import_modules()
        import torch.ao.quantization.quantize_fx  # noqa: F401 (timed with torch)

    def load(self, artifact, files, batch, threads):
        model = self._build(files, threads)
        t0 = time.perf_counter()
        self.model = self._quantize(self.torch, model, files.calibration_batches())
        return {"remake_ms": (time.perf_counter() - t0) * 1e3}


class OrtFP32(Engine):
    """ONNX Runtime fp32 (CPU provider)."""

    name = "ort-fp32"
    cap_note = ("MLAS picks its kernels from CPUID alone (onnxruntime/core/mlas/lib/platform.cpp): no environment "
                "variable or session option caps it, so it ran the CPU's best ISA")

    def prepare(self, files, model):
        return export_onnx_fp32(files, model)

    def import_modules(self):
        import onnxruntime

        self.ort = onnxruntime

    def load(self, artifact, files, batch, threads):
        self.session = ort_session(self.ort, artifact, threads)
        self.input_name = self.session.get_inputs()[0].name
        return {}

    def run(self, x):
        return self.session.run(None, {self.input_name: x})[0]


class _CalibrationReader:
    """onnxruntime.quantization's CalibrationDataReader protocol over a list of batches."""

    def __init__(self, batches):
        self.batches = iter(batches)

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {"x": batch}


class OrtInt8(OrtFP32):
    """ONNX Runtime static int8, QDQ, per-channel weights."""

    name = "ort-int8"

    def prepare(self, files, model):
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        export_onnx_fp32(files, model)
        # ORT's recommended pre-processing (shape inference + graph optimisation) before static quantization.
        preprocessed = files.root / "fp32_preprocessed.onnx"
        quant_pre_process(str(files.onnx_fp32), str(preprocessed))
        path = files.root / "ort_int8.onnx"
        quantize_static(str(preprocessed), str(path), _CalibrationReader(files.calibration_batches()),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        preprocessed.unlink()
        return path


class OpenVINOInt8(Engine):
    """OpenVINO int8 (NNCF post-training quantization of the fp32 ONNX model)."""

    name = "openvino-int8"
    cap_note = ("ONEDNN_MAX_CPU_ISA caps the oneDNN kernels (conv, FC); the plugin's own JIT nodes (e.g. Reduce) "
                "may still pick AVX-512, and are listed per cell")

    def cap_env(self, isa):
        return {"ONEDNN_MAX_CPU_ISA": isa.upper()}

    def isa_report(self, cap):
        kernels = {}  # primitive type -> the layer types that ran it
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            kind = rt["primitiveType"].astype(str) if "primitiveType" in rt else "unknown"
            if not kind.startswith("unknown"):  # inputs, constants, reshapes: no kernel
                kernels.setdefault(kind, set()).add(rt["layerType"].astype(str))
        report = {"isa_used": sorted(kernels)}
        if cap:
            above = sorted(f"{layer}:{kind}" for kind, layers in kernels.items() if above_cap(kind, cap)
                           for layer in layers)
            heavy = any(entry.split(":")[0] in OPENVINO_HEAVY_LAYERS for entry in above)
            report.update(isa_above_cap=above,
                          isa_status="capped" if not above else "not capped" if heavy else "mostly capped")
        return report

    def prepare(self, files, model):
        import logging

        import nncf
        import openvino as ov

        nncf.set_log_level(logging.ERROR)
        batches = files.calibration_batches()
        quantized = nncf.quantize(ov.convert_model(str(export_onnx_fp32(files, model))), nncf.Dataset(batches),
                                  subset_size=len(batches))
        path = files.root / "openvino_int8.xml"
        ov.save_model(quantized, str(path))
        return path

    def import_modules(self):
        import openvino

        self.ov = openvino

    def load(self, artifact, files, batch, threads):
        core = self.ov.Core()
        model = core.read_model(str(artifact))
        # A static batch, as an OpenVINO deployment would compile it; compilation counts as load time.
        model.reshape([batch, *files.input_chw()])
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()
        return {}

    def run(self, x):
        return self.request.infer({0: x})[self.compiled.output(0)]

    @staticmethod
    def artifact_bytes(artifact):
        return os.path.getsize(artifact) + os.path.getsize(Path(artifact).with_suffix(".bin"))


class QruntimeInt8(Engine):
    """qruntime int8 (.qnn, minmax calibration)."""

    name = "qruntime"
    weight_bits = 8
    file_name = "model.qnn"
    cap_note = "QRUNTIME_ISA caps every kernel; qruntime.isa() reports the path taken"

    def cap_env(self, isa):
        return {"QRUNTIME_ISA": isa}

    def isa_report(self, cap):
        isa = self.qruntime.isa()
        report = {"isa_used": [isa]}
        if cap:
            above = above_cap(isa, cap)
            report.update(isa_above_cap=[isa] if above else [], isa_status="not capped" if above else "capped")
        return report

    def prepare(self, files, model):
        import qruntime

        path = files.root / self.file_name
        qruntime.quantize(model, files.calibration_batches(), method="minmax", weight_bits=self.weight_bits,
                          progress=False).save(path)
        return path

    def import_modules(self):
        import qruntime

        self.qruntime = qruntime

    def load(self, artifact, files, batch, threads):
        self.qruntime.set_num_threads(threads)
        self.model = self.qruntime.load(artifact)
        return {}

    def run(self, x):
        return self.model.run(x)


class QruntimeInt8W7(QruntimeInt8):
    """qruntime with 7-bit weights ([-64, 64]): every layer takes AVX2's exact vpmaddubsw kernel."""

    name = "qruntime-w7"
    weight_bits = 7
    file_name = "model_w7.qnn"


ENGINES = {e.name: e for e in (TorchFP32, TorchInt8, OrtFP32, OrtInt8, OpenVINOInt8, QruntimeInt8, QruntimeInt8W7)}


def artifact_bytes(engine_name, artifact):
    """On-disk size of an engine's artifact (OpenVINO IR: the .xml and its .bin)."""
    engine = ENGINES[engine_name]
    if hasattr(engine, "artifact_bytes"):
        return engine.artifact_bytes(artifact)
    return os.path.getsize(artifact)
