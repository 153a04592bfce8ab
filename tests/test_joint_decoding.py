"""Joint CTC/attention beam search: the CTC prefix score against brute force and torch's ctc_loss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from speeched.inference.joint_decoding import CTCState, extend, extend_to


def _logp(steps: int, units: int, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    x = g.standard_normal((steps, units))
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _collapse(path: tuple[int, ...]) -> list[int]:
    out, prev = [], None
    for p in path:
        if p != prev and p != 0:
            out.append(p)
        prev = p
    return out


@pytest.mark.parametrize("target", [[1], [2, 1], [1, 1], [3, 2, 3]])
def test_full_score_equals_torch_ctc_loss(target):
    logp = _logp(7, 4)
    state = extend_to(CTCState.initial(logp), target, logp, CTCState.initial(logp))
    nll = torch.nn.functional.ctc_loss(
        torch.tensor(logp).unsqueeze(1),
        torch.tensor([target]),
        torch.tensor([7]),
        torch.tensor([len(target)]),
        reduction="sum",
    )
    assert state.full_score() == pytest.approx(-nll.item(), abs=1e-6)


@pytest.mark.parametrize("prefix", [[1], [2], [1, 2], [2, 2]])
def test_prefix_score_equals_brute_force(prefix):
    steps, units = 5, 3
    logp = _logp(steps, units, seed=1)
    total = -np.inf
    for path in itertools.product(range(units), repeat=steps):
        if _collapse(path)[: len(prefix)] == prefix:
            total = np.logaddexp(total, sum(logp[t, u] for t, u in enumerate(path)))
    state = CTCState.initial(logp)
    for u in prefix:
        state = extend(state, u, logp)
    assert state.score == pytest.approx(total, abs=1e-6)


def test_extend_to_reuses_a_prefix_and_restarts_otherwise():
    logp = _logp(6, 4)
    init = CTCState.initial(logp)
    a = extend_to(init, [1, 2], logp, init)
    b = extend_to(a, [1, 2, 3], logp, init)
    direct = extend_to(init, [1, 2, 3], logp, init)
    assert b.score == pytest.approx(direct.score) and b.units == [1, 2, 3]
    c = extend_to(b, [3, 1], logp, init)  # not an extension: recomputed from scratch
    assert c.units == [3, 1] and c.score == pytest.approx(extend_to(init, [3, 1], logp, init).score)


def _word_ctc_model(tmp_path):
    """A tiny Speech2Text encoder + MiniLM decoder with a word-level CTC head over "one" and "two"."""
    from helpers import make_tiny_model_dir

    from speeched.modeling.model_dir import load_model_dir

    path = make_tiny_model_dir(
        tmp_path,
        "speech2text",
        ctc_weight=0.3,
        ctc_vocab=["<blank>", "<unk>", "one", "two"],
        ctc_units="word",
    )
    return load_model_dir(path)


def test_joint_decode_runs_on_a_tiny_model_and_ctc_weight_changes_the_result(tmp_path):

    from speeched.inference.joint_decoding import joint_decode

    lm = _word_ctc_model(tmp_path)
    torch.manual_seed(0)
    feats = torch.randn(2, 60, 80)
    mask = torch.ones(2, 60, dtype=torch.long)
    out = joint_decode(lm.model, lm.tokenizer, feats, mask, num_beams=3, ctc_weight=0.5, max_new_tokens=5)
    assert len(out) == 2 and all(1 <= len(t) <= 5 for t in out)
    eos = lm.model.config.eos_token_id
    assert all(t[-1] == eos or len(t) == 5 for t in out)


@pytest.mark.parametrize("decoder", ["minilm", "gpt2"])
def test_cached_joint_decode_gives_the_tokens_of_full_recomputation(tmp_path, decoder):
    """The key/value cache (reordered to the surviving beams) must not change what the search finds."""
    from extension_helpers import tiny_gpt2_dir
    from helpers import minilm_path, tiny_encoder_dir

    from speeched.inference.joint_decoding import joint_decode
    from speeched.modeling.compose import ComposeSpec, init_model
    from speeched.modeling.model_dir import load_model_dir

    torch.manual_seed(0)
    dec = minilm_path() if decoder == "minilm" else str(tiny_gpt2_dir(tmp_path))
    init_model(
        ComposeSpec(
            encoder=str(tiny_encoder_dir(tmp_path, "speech2text")),
            decoder=dec,
            decoder_options={"num_hidden_layers": 2} if decoder == "minilm" else {},
            extensions={
                "ctc_weight": 0.3,
                "ctc_vocab": ["<blank>", "<unk>", "a", "b", "c"],
                "ctc_units": "char",
            },
        ),
        tmp_path / "m",
    )
    lm = load_model_dir(tmp_path / "m")
    # a random decoder may end at once; push EOS down so the search runs several steps and reorders the cache
    forward, eos = lm.model.decoder.forward, lm.model.config.eos_token_id

    def later_eos(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits[..., eos] -= 8.0
        return out

    lm.model.decoder.forward = later_eos
    feats = torch.randn(3, 70, 80)
    mask = torch.ones(3, 70, dtype=torch.long)
    mask[1, 50:] = 0
    kwargs = {"num_beams": 4, "ctc_weight": 0.3, "max_new_tokens": 8}
    cached = joint_decode(lm.model, lm.tokenizer, feats, mask, use_cache=True, **kwargs)
    full = joint_decode(lm.model, lm.tokenizer, feats, mask, use_cache=False, **kwargs)
    assert cached == full
    assert any(len(t) > 2 for t in cached)  # the search went several steps (the cache was reordered)


def test_a_wider_pre_beam_lets_ctc_rescue_a_word_the_attention_ranks_low(tmp_path):
    """The attention decoder ranks "one" 7th; the CTC head hears "one". Only candidates the attention
    proposes are scored, so 4 beams with 5 candidates each never find it, and 8 candidates do."""

    from speeched.inference.joint_decoding import joint_decode

    lm = _word_ctc_model(tmp_path)
    model, tok = lm.model, lm.tokenizer
    eos = model.config.eos_token_id
    one = tok.convert_tokens_to_ids("one")
    others = tok.convert_tokens_to_ids(["the", "a", "of", "and", "in", "to"])

    def ctc_head(module, args, output):  # blank everywhere but a run of "one" in the middle
        hidden = args[0]
        logits = torch.full((*hidden.shape[:2], 4), -10.0)
        logits[..., 0] = 0.0
        middle = hidden.shape[1] // 2
        logits[:, middle - 2 : middle + 2, 0] = -10.0
        logits[:, middle - 2 : middle + 2, 2] = 0.0
        return logits

    forward = model.decoder.forward

    def ranked_decoder(*args, **kwargs):
        out = forward(*args, **kwargs)
        logits = torch.full_like(out.logits, -20.0)
        for rank, t in enumerate(others):
            logits[..., t] = -0.1 * rank
        logits[..., one] = -1.0  # 7th after the six others
        logits[..., eos] = -2.0
        out.logits = logits
        return out

    model.ctc_head.register_forward_hook(ctc_head)
    model.decoder.forward = ranked_decoder
    feats = torch.randn(1, 60, 80)
    kwargs = {"num_beams": 4, "ctc_weight": 0.9, "max_new_tokens": 4}
    narrow = joint_decode(model, tok, feats, None, pre_beam=5, **kwargs)[0]
    wide = joint_decode(model, tok, feats, None, pre_beam=8, **kwargs)[0]
    assert one not in narrow
    assert wide == [one, eos]


def test_ctc_weight_one_decodes_the_ctc_best_path_without_running_the_decoder(tmp_path):
    """λ = 1 leaves the attention term no weight: decode() returns the CTC head's best path (repeats
    collapsed, blanks and <unk> dropped) and never calls the decoder."""
    import numpy as np

    from speeched.inference import DecodeOptions, InferenceModel, decode
    from speeched.inference.features import featurize
    from speeched.modeling.ctc import decode_ctc_ids

    lm = _word_ctc_model(tmp_path)
    model = lm.model
    with torch.no_grad():  # a CTC head that prefers "one"/"two" on alternating stretches of frames
        model.ctc_head.proj.weight.normal_(0, 1.0)
    rng = np.random.default_rng(0)
    audio = [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 24000, 9000)]

    def no_decoder(*args, **kwargs):
        raise AssertionError("the decoder ran")

    model.decoder.forward = no_decoder
    im = InferenceModel(model, lm.tokenizer, lm.feature_extractor)
    out = decode(im, audio, DecodeOptions(ctc_weight=1.0, num_beams=4, max_duration=100))
    expected = []
    for x in audio:  # one at a time: the best path of each input alone
        with torch.no_grad():
            enc = model.encode(**featurize(lm.feature_extractor, [x], "cpu"))
            best = model.ctc_head(enc.raw_last_hidden_state).argmax(-1)[
                0, : int(model.ctc_frame_lengths(enc)[0])
            ]
        expected.append(decode_ctc_ids(best.tolist(), model.config.ctc_vocab, "word"))
    assert [d.text for d in out] == expected
    assert any(expected) and all(set(t.split()) <= {"one", "two"} for t in expected)
    assert all(d.token_ids == [] and d.num_tokens == len(d.text.split()) for d in out)
    assert DecodeOptions(ctc_weight=1.0).strategy().startswith("CTC only")


def test_one_beam_joint_search_is_what_decode_runs_for_num_beams_1(tmp_path, monkeypatch):
    """num_beams=1 with a CTC weight is a greedy joint search (it used to be widened to 2 beams)."""
    import importlib

    import numpy as np

    from speeched.inference import DecodeOptions, InferenceModel, decode
    from speeched.inference.joint_decoding import joint_decode

    generate = importlib.import_module("speeched.inference.generate")
    widths = []

    def recording(model, tokenizer, x, mask, num_beams, *args, **kwargs):
        widths.append(num_beams)
        return joint_decode(model, tokenizer, x, mask, num_beams, *args, **kwargs)

    monkeypatch.setattr(generate, "joint_decode", recording)
    lm = _word_ctc_model(tmp_path)
    x = (0.3 * np.random.default_rng(1).standard_normal(16000)).astype(np.float32)
    im = InferenceModel(lm.model, lm.tokenizer, lm.feature_extractor)
    for beams in (1, 3):
        out = decode(im, [x], DecodeOptions(ctc_weight=0.5, num_beams=beams, max_new_tokens=6))
        assert out[0].error is None and out[0].skipped is None
    assert widths == [1, 3]
    assert DecodeOptions(ctc_weight=0.5, num_beams=1).strategy().endswith("(λ=0.5, 1 beam)")
