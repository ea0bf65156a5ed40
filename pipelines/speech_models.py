"""Speech models behind one interface (``SpeechModel``), so the speech adapter treats a
single-pass baseline, a diffusers flow-matching pipeline and genaccel's own TTS alike; and their
tiny offline builders (seeded random weights, for tests and smoke runs).

* ``tiny-vits``: transformers' ``VitsModel`` fed espeak-ng IPA through a ``VitsTokenizer`` with a
  project vocabulary (``phonemize=False``: its own phonemiser needs the ``phonemizer`` package).
* ``tiny-fastspeech2``: ``FastSpeech2ConformerWithHifiGan`` fed espeak-ng phoneme ids (its own
  tokenizer needs g2p-en, which downloads at run time).
* ``tiny-longcat``: diffusers' ``LongCatAudioDiTPipeline`` (flow matching over a waveform VAE).
* ``tiny-speech-ref``: genaccel's own TTS (``pipelines.speech_ref``) with random weights.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genaccel.refdata.speech import VOICES, espeak

StepFn = Callable[[int, int], None]
TEXT_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?;:'\"-\n")
"""Characters every speech model here reads (espeak-ng's English front end spells the rest out
unpredictably, so they are refused rather than dropped)."""
IPA_SYMBOLS = "abdefhijklmnoprstuvwzæðŋɐɑɒɔəɚɛɜɡɪɹɾʃʊʌʍʒʔʉθːˈˌ̩̪ "
"""IPA characters espeak-ng writes for English (per-character vocabulary of the tiny models)."""


class SpeechModel:
    """What the speech adapter needs from a model. Subclasses implement ``synthesize``."""

    sample_rate: int = 22050
    voices: tuple[str, ...] = ("default",)
    alphabet: frozenset[str] = TEXT_ALPHABET
    iterative: bool = False
    """Whether ``steps`` changes anything (flow matching)."""

    def __init__(self) -> None:
        self.scheduler: Any = None

    @property
    def components(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.nn.Module)}

    def to(self, *args: Any, **kwargs: Any) -> SpeechModel:
        for module in self.components.values():
            module.to(*args, **kwargs)
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        inner = getattr(self, "pipe", None)
        if inner is not None:
            inner.set_progress_bar_config(**kwargs)

    def phonemes(self, text: str, voice: str) -> str:
        """The IPA the model is fed (espeak-ng's, in the voice's accent)."""
        return espeak().ipa(text, voice if voice in VOICES else "us-male")

    def check_phonemes(self, text: str, voice: str) -> tuple[str, int] | None:
        """``(symbol, position in the IPA)`` of the first sound the model cannot say, or ``None``."""
        return None

    def synthesize(self, text: str, voice: str, speed: float, steps: int, generator: torch.Generator,
                   on_step: StepFn) -> np.ndarray:
        """Mono float32 samples at ``sample_rate``."""
        raise NotImplementedError


def _ipa_vocab() -> dict[str, int]:
    vocab = {"<pad>": 0, "<unk>": 1}
    for ch in IPA_SYMBOLS:
        vocab.setdefault(ch, len(vocab))
    return vocab


class VitsSpeech(SpeechModel):
    """transformers' VITS: one pass, no steps; ``speed`` is its speaking rate."""

    def __init__(self, model: Any, tokenizer: Any, voices: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.tokenizer, self.voices = model.eval(), tokenizer, voices
        self.sample_rate = int(model.config.sampling_rate)

    @torch.no_grad()
    def synthesize(self, text: str, voice: str, speed: float, steps: int, generator: torch.Generator,
                   on_step: StepFn) -> np.ndarray:
        ids = self.tokenizer(self.phonemes(text, voice), return_tensors="pt")
        speaker = torch.tensor([self.voices.index(voice)]) if len(self.voices) > 1 else None
        with torch.random.fork_rng(devices=[]):  # VITS samples its noise from the global generator
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
            wav = self.model(**ids, speaker_id=speaker, speaking_rate=speed).waveform[0]
        on_step(1, 1)
        return wav.float().numpy()


def build_tiny_vits(seed: int = 0) -> VitsSpeech:
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    vocab = _ipa_vocab()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.json"
        path.write_text(json.dumps(vocab))
        tokenizer = VitsTokenizer(str(path), phonemize=False, normalize=False, add_blank=True)
    voices = ("us-male", "us-female")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = VitsConfig(
            vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, ffn_dim=32,
            flow_size=16, spectrogram_bins=17, upsample_initial_channel=16, upsample_rates=[4, 4],
            upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
            prior_encoder_num_flows=2, duration_predictor_num_flows=2, prior_encoder_num_wavenet_layers=1,
            posterior_encoder_num_wavenet_layers=1, depth_separable_num_layers=1, num_speakers=len(voices),
            speaker_embedding_size=8, sampling_rate=16000,
        )
        model = VitsModel(config)
    return VitsSpeech(model, tokenizer, voices)


class FastSpeech2Speech(SpeechModel):
    """transformers' FastSpeech2Conformer + HiFi-GAN, fed espeak-ng IPA symbol ids."""

    def __init__(self, model: Any, vocab: dict[str, int], voices: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.vocab, self.voices = model.eval(), vocab, voices
        self.sample_rate = 22050

    @torch.no_grad()
    def synthesize(self, text: str, voice: str, speed: float, steps: int, generator: torch.Generator,
                   on_step: StepFn) -> np.ndarray:
        ids = torch.tensor([[self.vocab.get(ch, 1) for ch in self.phonemes(text, voice)] or [1]])
        speaker = torch.tensor([self.voices.index(voice)]) if len(self.voices) > 1 else None
        config = self.model.model.config
        saved = config.speaking_speed
        config.speaking_speed = 1.0 / speed  # it multiplies durations
        try:
            wav = self.model(ids, speaker_ids=speaker, return_dict=True).waveform[0]
        finally:
            config.speaking_speed = saved
        on_step(1, 1)
        return wav.float().numpy()


def build_tiny_fastspeech2(seed: int = 0) -> FastSpeech2Speech:
    from transformers import (
        FastSpeech2ConformerConfig,
        FastSpeech2ConformerHifiGanConfig,
        FastSpeech2ConformerWithHifiGan,
        FastSpeech2ConformerWithHifiGanConfig,
    )

    vocab = _ipa_vocab()
    voices = ("us-male", "us-female")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        acoustic = FastSpeech2ConformerConfig(
            hidden_size=16, vocab_size=len(vocab), num_mel_bins=8, encoder_layers=1, decoder_layers=1,
            encoder_linear_units=32, decoder_linear_units=32, speech_decoder_postnet_layers=1,
            speech_decoder_postnet_units=16, duration_predictor_channels=16, energy_predictor_channels=16,
            pitch_predictor_channels=16, pitch_predictor_layers=1, energy_predictor_layers=1,
            duration_predictor_layers=1, num_speakers=len(voices), decoder_kernel_size=3, encoder_kernel_size=3,
        )
        vocoder = FastSpeech2ConformerHifiGanConfig(
            model_in_dim=8, upsample_initial_channel=16, upsample_rates=[16, 16],
            upsample_kernel_sizes=[32, 32], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        )
        model = FastSpeech2ConformerWithHifiGan(FastSpeech2ConformerWithHifiGanConfig(
            model_config=acoustic.to_dict(), vocoder_config=vocoder.to_dict()))
    return FastSpeech2Speech(model, vocab, voices)


class LongCatSpeech(SpeechModel):
    """diffusers' LongCat AudioDiT (flow matching on waveform-VAE latents); one voice, the text
    read by its own UMT5 encoder; ``speed`` scales the duration it is given."""

    iterative = True

    def __init__(self, pipe: Any) -> None:
        super().__init__()
        self.pipe = pipe
        self.scheduler = pipe.scheduler
        self.sample_rate = int(pipe.sample_rate)

    @property
    def transformer(self) -> Any:
        return self.pipe.transformer

    @property
    def components(self) -> dict[str, Any]:
        return dict(self.pipe.components)

    def to(self, *args: Any, **kwargs: Any) -> LongCatSpeech:
        self.pipe.to(*args, **kwargs)
        return self

    @torch.no_grad()
    def synthesize(self, text: str, voice: str, speed: float, steps: int, generator: torch.Generator,
                   on_step: StepFn) -> np.ndarray:
        seconds = round(espeak().synth(text, "us-male", speed).duration_s, 1)  # espeak's timing sets the length

        def step_end(pipeline: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1, steps)
            return tensors

        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):  # its VAE samples from the global generator
            torch.manual_seed(seed)
            out = self.pipe(text, audio_duration_s=seconds, num_inference_steps=steps, guidance_scale=1.0,
                            generator=torch.Generator().manual_seed(seed), callback_on_step_end=step_end)
        return np.asarray(out.audios[0]).reshape(-1).astype(np.float32)


def build_tiny_longcat(seed: int = 0) -> LongCatSpeech:
    from diffusers import FlowMatchEulerDiscreteScheduler, LongCatAudioDiTPipeline
    from diffusers.models.autoencoders.autoencoder_longcat_audio_dit import LongCatAudioDiTVae
    from diffusers.models.transformers.transformer_longcat_audio_dit import LongCatAudioDiTTransformer
    from transformers import UMT5Config, UMT5EncoderModel

    from genaccel.accel.audio_blocks import register_audio_blocks
    from pipelines.tokenizers import char_t5_tokenizer

    register_audio_blocks()  # for the first-block cache and MagCache
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = char_t5_tokenizer(120)
        text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8,
                                                   num_heads=4, num_layers=2)).eval()
        transformer = LongCatAudioDiTTransformer(dit_dim=32, dit_depth=2, dit_heads=2, dit_text_dim=32,
                                                 latent_dim=8, ff_mult=2.0)
        vae = LongCatAudioDiTVae(channels=8, c_mults=[1, 2], strides=[4, 4], latent_dim=8, encoder_latent_dim=16,
                                 downsampling_ratio=16, sample_rate=24000)
    pipe = LongCatAudioDiTPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
                                   scheduler=FlowMatchEulerDiscreteScheduler())
    return LongCatSpeech(pipe)
