"""The tiny chat model (``testkit/tiny_models.build_tiny_chat``) written as a GGUF file, the
format llama.cpp's server (and Ollama) loads, with the ``gguf`` package (llama.cpp's own writer).

No registry here ships a GGUF model, so the test writes one: the same trained Llama weights, its
byte-level BPE vocabulary and merges, and its chat template, under the names llama.cpp reads
(``general.architecture = "llama"``, ``tokenizer.ggml.model = "gpt2"``). The query and key
projections are permuted as llama.cpp's converter does for Llama (Hugging Face rotates halves,
llama.cpp rotates interleaved pairs). Weights stay float32: the model is 0.7 MB.
``LlamaServer`` serves it with llama-cpp-python's OpenAI-compatible server.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _permute(weights: object, heads: int) -> object:
    """A q/k projection from Hugging Face's rotary layout to llama.cpp's (convert_hf_to_gguf)."""
    import numpy as np

    array = np.asarray(weights)
    return array.reshape(heads, 2, array.shape[0] // heads // 2, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape)


def write_gguf(model: Path, path: Path, name: str = "tiny-chat") -> Path:
    """``model`` (a Hugging Face Llama folder with ``tokenizer.json``) as the GGUF file ``path``."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    tokenizer = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
    settings = json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8"))
    tensors = load_file(str(model / "model.safetensors"))
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    width = config["hidden_size"]

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(width)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(width // heads)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocabulary = sorted(tokenizer["model"]["vocab"].items(), key=lambda item: item[1])
    special = {entry["content"] for entry in tokenizer["added_tokens"] if entry.get("special")}
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in tokenizer["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # the GPT-2 split, as tokenizers' ByteLevel pre-tokenizer does
    writer.add_token_list([token for token, _ in vocabulary])
    writer.add_token_types(
        [gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL for token, _ in vocabulary]
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(False)  # the chat template writes <s> itself
    template = model / "chat_template.jinja"  # where newer transformers save it
    writer.add_chat_template(template.read_text("utf-8") if template.exists() else settings["chat_template"])

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    parts = {
        "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    }  # fmt: skip
    for key, value in tensors.items():
        if key in names:
            target = names[key]
        else:
            _, _, layer, rest = key.split(".", 3)  # model.layers.N.<part>.weight
            target = f"blk.{layer}.{parts[rest.removesuffix('.weight')]}.weight"
        data = np.ascontiguousarray(value, dtype=np.float32)
        if target.endswith("attn_q.weight"):
            data = np.ascontiguousarray(_permute(data, heads))
        elif target.endswith("attn_k.weight"):
            data = np.ascontiguousarray(_permute(data, kv_heads))
        writer.add_tensor(target, data)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``, llama.cpp
    built from source by ``./setup.sh --dev``) serving a GGUF file on 127.0.0.1: a real server of
    the kind a person points ``[llm] url`` at, as the tests' counterpart to ``ChatFake``."""

    def __init__(self, gguf_file: Path, model: str = "tiny-chat") -> None:
        self.file, self.model = gguf_file, model
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = gguf_file.with_suffix(".server.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> LlamaServer:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.file), "--model_alias", self.model,
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048", "--n_threads", "1",
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
