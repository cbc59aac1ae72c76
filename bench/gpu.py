"""GPU figures with random weights of the real large-v3 and nllb-200-1.3B shapes (no model can
be downloaded where this runs). Prints:

1. each worker process (``workers.transcribe``, ``workers.translate``) run on a short clip, on
   both engines (CTranslate2: large-v3 float16 batched, converted from a Hugging Face folder as
   a person's first run does; NLLB-1.3B float16 and int8_float16): GPU memory used before it,
   at its peak, and after it exits (nvidia-ml-py, which counts every process; this script
   holds no CUDA context while they run), and its wall time;
2. transcription, batched against sequential: the same chunks decoded all at once with
   ``model.decode`` and one after another, for a fixed number of decoding steps (the end
   token is suppressed, so random weights cannot make one side stop early), and peak memory;
3. translation throughput by batch size, greedy and beam 4, for a fixed number of new tokens;
4. the LLM engine (a random-weight Qwen3-1.7B shape, converted by CTranslate2 as a person's
   first run does): the translate worker's GPU memory before, at its peak and after it exits
   (float16, int8_float16), and lines and tokens a second on the card.

    python3 -m bench.gpu --device cuda            # bench/gpu.sh runs this on a GPU machine
    python3 -m bench.gpu --device cpu --small     # the same code on tiny shapes, for a check
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]

LARGE_V3_HF = dict(vocab_size=51866, num_mel_bins=128, d_model=1280, encoder_layers=32,
                   encoder_attention_heads=20, decoder_layers=32, decoder_attention_heads=20,
                   encoder_ffn_dim=5120, decoder_ffn_dim=5120)  # fmt: skip
LARGE_V3 = dict(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
                n_vocab=51866, n_text_ctx=448, n_text_state=1280, n_text_head=20, n_text_layer=32)  # fmt: skip
SMALL_WHISPER = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                     n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=1)  # fmt: skip
NLLB_1_3B = dict(d_model=1024, encoder_layers=24, decoder_layers=24, encoder_attention_heads=16,
                 decoder_attention_heads=16, encoder_ffn_dim=8192, decoder_ffn_dim=8192)  # fmt: skip
SMALL_NLLB = dict(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128)  # fmt: skip
MB = 1024**2


def build_whisper(path: Path, shape: dict[str, int], device: str) -> Path:
    import torch
    import whisper
    from whisper.model import ModelDimensions

    dims = ModelDimensions(**shape)
    with torch.device(device):
        model = whisper.model.Whisper(dims)
        with torch.no_grad():
            model.decoder.positional_embedding.normal_(0.0, 0.02)  # torch.empty in openai-whisper
    state = {key: value.half().cpu() for key, value in model.state_dict().items()}
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": state}, path)
    del model, state
    return path


def build_nllb(directory: Path, shape: dict[str, int], device: str) -> Path:
    """The tests' tokenizer (trained on a dozen sentences) with a random model of ``shape`` and
    NLLB-200's 256,206-token vocabulary."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    from testkit.tiny_models import build_tiny_nllb

    build_tiny_nllb(directory, steps=1)
    tiny = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    config = M2M100Config(
        vocab_size=256206, max_position_embeddings=1024, scale_embedding=True, **shape,
        pad_token_id=tiny["pad_token_id"], bos_token_id=tiny["bos_token_id"], eos_token_id=tiny["eos_token_id"],
        decoder_start_token_id=tiny["decoder_start_token_id"],
    )  # fmt: skip
    with torch.device(device):
        model = M2M100ForConditionalGeneration(config).half()
    model.save_pretrained(str(directory))
    del model
    return directory


def write_clip(path: Path, seconds: float) -> Path:
    """Speech-band noise bursts as 16 kHz mono WAV (random weights: content does not matter)."""
    import numpy as np

    rng = np.random.default_rng(0)
    samples = (rng.normal(0, 0.1, int(seconds * 16000)) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(samples.tobytes())
    return path


class GpuMemory:
    """Used memory on the card as nvidia-ml-py reports it (all processes), polled for a peak."""

    def __init__(self, index: int = 0) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.pynvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)

    def used(self) -> float:
        return self.pynvml.nvmlDeviceGetMemoryInfo(self.handle).used / MB

    def peak_while(self, command: list[str]) -> tuple[float, float]:
        peak, done = [self.used()], threading.Event()

        def poll() -> None:
            while not done.is_set():
                peak.append(self.used())
                time.sleep(0.02)

        watcher = threading.Thread(target=poll)
        watcher.start()
        started = time.monotonic()
        finished = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY)
        wall = time.monotonic() - started
        done.set()
        watcher.join()
        if finished.returncode != 0:
            raise SystemExit(f"{command[2]} failed ({finished.returncode}):\n{finished.stderr[-3000:]}")
        return max(peak), wall


def workers_memory(folder: Path, whisper_path: Path, nllb: Path, device: str) -> None:
    memory = GpuMemory()
    wav = write_clip(folder / "clip.wav", 60.0)
    python = sys.executable
    transcript, translation, converted = folder / "t.json", folder / "k.json", str(folder / "converted")
    transcribe = [python, "-m", "workers.transcribe", str(wav), str(transcript), "--device", device, "--no-vad",
                  "--keep-hallucinations", "--batch-size", "8"]  # fmt: skip
    translate = [python, "-m", "workers.translate", str(transcript), str(translation), "--model", str(nllb),
                 "--device", device, "--converted-dir", converted]  # fmt: skip
    runs = {
        "transcribe torch": [*transcribe, "--model", str(whisper_path), "--engine", "torch"],
        # The first run converts the Hugging Face folder (once); the second is what every later one costs.
        "transcribe ct2 f16 (converting)": [*transcribe, "--model", str(folder / "whisper-hf"),
                                            "--converted-dir", converted, "--compute-type", "float16"],
        "transcribe ct2 float16": [*transcribe, "--model", str(folder / "whisper-hf"), "--converted-dir", converted,
                                   "--compute-type", "float16"],
        "transcribe ct2 int8_float16": [*transcribe, "--model", str(folder / "whisper-hf"),
                                        "--converted-dir", converted, "--compute-type", "int8_float16"],
        "translate torch": [*translate, "--engine", "torch"],
        "translate ct2 float16": [*translate, "--compute-type", "float16"],
        "translate ct2 int8_float16": [*translate, "--compute-type", "int8_float16"],
    }  # fmt: skip
    if (folder / "llm" / "config.json").exists():
        # The LLM engine in the translate worker: random weights answer nothing usable, so each
        # window is asked again and halved down to single lines (fallback none: the video then
        # fails, as the protocol says); what matters here is the card's memory around the stage.
        four = folder / "t4.json"
        document = json.loads(transcript.read_text(encoding="utf-8")) if transcript.exists() else {"segments": []}
        segments = (document.get("segments") or [{"start": 0.0, "end": 2.0, "text": "こんにちは。"}])[:4]
        four.write_text(json.dumps({"language": "ja", "segments": segments}, ensure_ascii=False), encoding="utf-8")
        llm = [python, "-m", "workers.translate", str(four), str(folder / "k4.json"), "--model", "llm",
               "--llm-model", str(folder / "llm"), "--llm-window", "4", "--llm-fallback", "none", "--device", device,
               "--converted-dir", converted]  # fmt: skip
        runs["translate llm float16 (converting)"] = [*llm, "--compute-type", "float16"]
        runs["translate llm float16"] = [*llm, "--compute-type", "float16"]
        runs["translate llm int8_float16"] = [*llm, "--compute-type", "int8_float16"]
    print("worker processes (GPU memory used on the card, all processes):")
    for stage, command in runs.items():
        before = memory.used()
        peak, wall = memory.peak_while(command)
        time.sleep(1.0)
        after = memory.used()
        back = "back to idle" if after <= before + 64 else "NOT back to idle"
        print(f"  {stage:<32} before {before:8.0f} MiB  peak {peak:8.0f} MiB  after exit {after:8.0f} MiB"
              f"  ({back}; {wall:.1f} s)")  # fmt: skip


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_mib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / MB if device.startswith("cuda") else float("nan")


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def llm_throughput(folder: Path, device: str) -> None:
    """The LLM engine's speed on the card: 24 subtitle lines in windows of 12 with context and
    look-ahead, answers forced to a good answer's length (bench/translate.py's measurement)."""
    from bench.translate import run_llm

    for compute in ("float16", "int8_float16") if device.startswith("cuda") else ("int8",):
        result = run_llm(folder / "llm", folder / "converted", 24, 12, 3, device, compute)
        wall = sorted(result["walls_s"])[len(result["walls_s"]) // 2]
        print(f"  LLM {compute:<13} {result['lines']} lines in {result['requests']} requests: median {wall:.2f} s, "
              f"{result['lines'] / wall:.1f} lines/s, {result['answer_tokens'] / wall:.0f} answer tokens/s, "
              f"{(result['prompt_tokens'] + result['answer_tokens']) / wall:.0f} tokens/s in all; "
              f"load {result['load_s']:.1f} s")  # fmt: skip


def transcription(whisper_path: Path, device: str, steps: int, batches: list[int]) -> None:
    import numpy as np
    import torch
    import whisper
    from whisper.audio import log_mel_spectrogram

    from workers.torch_engine import device as torch_device
    from workers.torch_engine import load_whisper

    model = load_whisper(str(whisper_path), torch_device(device), None)
    fp16 = device.startswith("cuda")
    eot = whisper.tokenizer.get_tokenizer(True, num_languages=model.num_languages).eot
    options = whisper.DecodingOptions(
        language="ja", fp16=fp16, without_timestamps=True, sample_len=steps, suppress_tokens=[-1, eot]
    )
    rng = np.random.default_rng(1)
    chunk = rng.normal(0, 0.1, 30 * 16000).astype(np.float32)
    mel = log_mel_spectrogram(chunk, model.dims.n_mels).to(device)
    print(f"transcription, {steps} decoding steps a chunk (30 s chunks), {device}:")
    for batch in batches:
        mels = mel[None].repeat(batch, 1, 1)
        with torch.inference_mode():
            model.decode(mels[:1], options)  # warm-up
            synchronize(device)
            reset_peak(device)
            started = time.perf_counter()
            results = model.decode(mels, options)
            synchronize(device)
            batched = time.perf_counter() - started
            batched_peak = peak_mib(device)
            started = time.perf_counter()
            for index in range(batch):
                model.decode(mels[index : index + 1], options)
            synchronize(device)
            sequential = time.perf_counter() - started
        assert all(len(result.tokens) == steps for result in results), [len(r.tokens) for r in results]
        print(f"  {batch:3d} chunks: batched {batched:7.2f} s, one by one {sequential:7.2f} s "
              f"→ {sequential / batched:5.2f}×; peak {batched_peak:8.0f} MiB allocated")  # fmt: skip
    del model
    torch.cuda.empty_cache() if fp16 else None


def translation(nllb: Path, device: str, new_tokens: int, batches: list[int]) -> None:
    import torch

    from testkit.tiny_models import SENTENCE_PAIRS
    from workers.torch_engine import device as torch_device
    from workers.torch_engine import load_translator

    tokenizer, model = load_translator(str(nllb), torch_device(device), "jpn_Jpan", None)
    forced_bos = tokenizer.convert_tokens_to_ids("kor_Hang")
    sentences = [source for source, _ in SENTENCE_PAIRS] * 6
    print(f"translation, {new_tokens} new tokens a sentence, {len(sentences)} sentences, {device}:")
    for beams in (1, 4):
        for batch in batches:
            reset_peak(device)
            synchronize(device)
            started = time.perf_counter()
            for first in range(0, len(sentences), batch):
                inputs = tokenizer(sentences[first : first + batch], return_tensors="pt", padding=True).to(device)
                with torch.inference_mode():
                    model.generate(**inputs, forced_bos_token_id=forced_bos, num_beams=beams, do_sample=False,
                                   min_new_tokens=new_tokens, max_new_tokens=new_tokens)  # fmt: skip
            synchronize(device)
            wall = time.perf_counter() - started
            print(f"  beam {beams} batch {batch:3d}: {len(sentences) / wall:8.1f} sentences/s; "
                  f"peak {peak_mib(device):8.0f} MiB allocated")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny shapes (a check of this script on a CPU)")
    parser.add_argument("--steps", type=int, default=100, help="decoding steps per Whisper chunk")
    parser.add_argument("--work", type=Path, help="folder for the checkpoints (default: a temporary one)")
    arguments = parser.parse_args(argv)
    work = arguments.work or Path(tempfile.mkdtemp(prefix="autokr-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    build_device = arguments.device
    started = time.monotonic()
    whisper_path = build_whisper(work / "whisper.pt", SMALL_WHISPER if arguments.small else LARGE_V3, build_device)
    nllb = build_nllb(work / "nllb", SMALL_NLLB if arguments.small else NLLB_1_3B, build_device)
    from testkit.tiny_models import build_tiny_whisper_hf

    if not (work / "whisper-hf").exists():
        build_tiny_whisper_hf(work / "whisper-hf", None if arguments.small else LARGE_V3_HF)
    from bench.translate import LLM_SHAPES, build_llm

    build_llm(work / "llm", LLM_SHAPES["small" if arguments.small else "qwen3-1.7b"])
    print(f"random-weight checkpoints built in {time.monotonic() - started:.0f} s: "
          f"{'tiny shapes' if arguments.small else 'large-v3 and nllb-200-1.3B shapes'}")  # fmt: skip
    if arguments.device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
        # Measure the workers from a clean card: this process's own CUDA context would count.
        subprocess.run(
            [sys.executable, "-m", "bench.gpu", "--workers-only", str(work), arguments.device],
            check=True,
            cwd=REPOSITORY,
        )
    batches = [1, 4, 8, 16]
    transcription(whisper_path, arguments.device, arguments.steps, batches)
    translation(nllb, arguments.device, 32, [1, 8, 32])
    print(f"LLM translation engine (random-weight {'tiny' if arguments.small else 'Qwen3-1.7B'} shape), "
          f"{arguments.device}:")  # fmt: skip
    llm_throughput(work, arguments.device)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--workers-only":
        folder = Path(sys.argv[2])
        workers_memory(folder, folder / "whisper.pt", folder / "nllb", sys.argv[3])
        sys.exit(0)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
