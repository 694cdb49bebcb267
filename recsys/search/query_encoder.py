"""The query side of search on ONNX Runtime: the text encoder (MiniLM + mean pooling + L2 norm,
recsys.search.encoder) exported to ONNX by the index stage into the version's text folder, and
run by ONNX Runtime in the replicas.

Why (measured, docs/serving.md): one short query through the torch model takes ~14 ms on one
core here, nearly all of it Python dispatch over the 6 layers; the same graph on ONNX Runtime
takes ~4 ms with the same vectors (cosine 1.0000), and the int8 variant (ONNX Runtime's dynamic
per-channel weight quantisation) ~1.7 ms, at a mean cosine 0.991 but a worst case of 0.955 on
1–4-word Online Retail queries. So `search.query_runtime` defaults to `onnx` (fp32); `onnx_int8`
is there for catalogs where the build's parity check says it holds.

The index stage measures the parity of the export against the torch encoder on its recall
queries; below `search.query_min_cosine` (worst query) the version keeps the torch encoder and the
manifest says why. Item vectors are always the torch encoder's (the index stage and POST /items).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recsys.search.encoder import MAX_TOKENS, TextEncoder

logger = logging.getLogger(__name__)
RUNTIMES = ("onnx", "onnx_int8", "torch")
ONNX_FILE = "query_encoder.onnx"


def export_onnx(encoder: TextEncoder, folder: Path, int8: bool = False) -> Path:
    """`encoder` (token ids, mask → unit vectors) as an ONNX graph in `folder`; int8: its weights
    quantised per channel by ONNX Runtime's dynamic quantisation."""
    import warnings

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / ONNX_FILE
    fp32 = folder / "query_encoder.fp32.onnx" if int8 else out
    example = encoder.tokenize(["a query"], 8)
    was_training = encoder.training
    encoder.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            encoder, (example["input_ids"], example["attention_mask"]), str(fp32),
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    encoder.train(was_training)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)
        fp32.unlink()
    return out


class OnnxQueryEncoder:
    """`encode(texts, max_tokens)` like TextEncoder's, on one ONNX Runtime session (one thread: a
    replica's core), tokenised by the same Hugging Face tokenizer."""

    def __init__(self, model_file: str | Path, tokenizer_path: str | Path):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str], batch_size: int = 128, max_tokens: int = MAX_TOKENS) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors."""
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(texts[i : i + batch_size], padding=True, truncation=True, max_length=max_tokens, return_tensors="np")
            feed = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
            out.append(self.session.run(None, feed)[0])
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Cosine of each candidate vector with its reference (both unit vectors): worst and mean."""
    cos = (reference * candidate).sum(1)
    return {"min_cosine": round(float(cos.min()), 5), "mean_cosine": round(float(cos.mean()), 5), "queries": len(cos)}


def build_query_encoder(encoder: TextEncoder, runtime: str, folder: Path, queries: list[str], max_tokens: int,
                        min_cosine: float) -> dict:
    """Export the query encoder for `runtime` into `folder` and check it on `queries`; the
    manifest's `search.query_encoder` entry (runtime torch, with the reason, when the check fails)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"search.query_runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "torch":
        return {"runtime": "torch"}
    model_file = export_onnx(encoder, folder, int8=runtime == "onnx_int8")
    reference = encoder.encode(queries, max_tokens=max_tokens).numpy()
    check = parity(reference, OnnxQueryEncoder(model_file, encoder.path).encode(queries, max_tokens=max_tokens))
    if check["min_cosine"] < min_cosine:
        model_file.unlink()
        reason = f"{runtime} export's worst query cosine {check['min_cosine']} < search.query_min_cosine {min_cosine}"
        logger.warning("query encoder stays on torch: %s", reason)
        return {"runtime": "torch", "refused": runtime, "reason": reason, "parity": check}
    return {"runtime": runtime, "file": model_file.name, "parity": check}
