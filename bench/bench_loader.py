"""Loader throughput: utterances/s through SpeechDataset + SpeechCollator + DurationBucketSampler.

Writes synthetic 44.1 kHz stereo FLAC and 16 kHz WAV files (so decoding, mixdown and soxr resampling are
all exercised) to a temp dir and times one epoch with 0, 1 and 2 DataLoader workers.
Run: .venv/bin/python bench/bench_loader.py
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import soundfile as sf
import torch
from transformers import Wav2Vec2FeatureExtractor

from speeched.data.collator import SpeechCollator
from speeched.data.dataset import SpeechDataset
from speeched.data.records import Utterance
from speeched.data.sampler import DurationBucketSampler

N = 200


class _Tok:
    """Stand-in tokenizer (character ids) so the bench needs no model files."""

    eos_token_id = 2

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) % 1000 + 3 for c in t] for t in texts]}


def make_corpus(d: str) -> list[Utterance]:
    rng = np.random.default_rng(0)
    utts = []
    for i, sec in enumerate(np.clip(rng.lognormal(np.log(8.0), 0.5, N), 1.0, 20.0)):
        if i % 2:
            sr, path = 44100, os.path.join(d, f"{i}.flac")
            x = 0.05 * rng.standard_normal((int(sec * sr), 2))
        else:
            sr, path = 16000, os.path.join(d, f"{i}.wav")
            x = 0.05 * rng.standard_normal(int(sec * sr))
        sf.write(path, x.astype(np.float32), sr)
        utts.append(Utterance(id=str(i), audio=path, text="synthetic words " * 5, duration=float(sec)))
    return utts


def main() -> None:
    torch.set_num_threads(1)
    fe = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, do_normalize=True, return_attention_mask=True
    )
    with tempfile.TemporaryDirectory() as d:
        utts = make_corpus(d)
        hours = sum(u.duration for u in utts) / 3600
        print(
            f"{N} files ({hours:.2f} h; half 44.1 kHz stereo FLAC, half 16 kHz WAV), cores: {os.cpu_count()}\n"
        )
        print("| num_workers | utterances/s | audio seconds/s | epoch time |")
        print("|---:|---:|---:|---:|")
        for workers in (0, 1, 2):
            ds = SpeechDataset(utts, 16000)
            sampler = DurationBucketSampler(ds.durations, max_duration=120.0, world_size=1)
            loader = torch.utils.data.DataLoader(
                ds, batch_sampler=sampler, collate_fn=SpeechCollator(fe, _Tok()), num_workers=workers
            )
            t0 = time.perf_counter()
            n = secs = 0.0
            for batch in loader:
                n += len(batch["ids"])
                secs += batch["audio_seconds"]
            dt = time.perf_counter() - t0
            print(f"| {workers} | {n / dt:.0f} | {secs / dt:.0f} | {dt:.1f} s |")


if __name__ == "__main__":
    main()
