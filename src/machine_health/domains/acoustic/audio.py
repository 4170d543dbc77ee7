"""Clip bytes on the wire: a base64 WAV file (mono, 16-bit PCM) <-> float samples.

Why a WAV file in base64 rather than a JSON list of samples: a 10 s clip at 16 kHz is 160,000
numbers, about 1.5 MB of JSON text for the service to parse, versus 427 kB of base64 for the
320 kB of PCM a microphone client already has; the WAV header carries the sample rate and the
format, so the client cannot misstate them. Every bound is checked on the header BEFORE the
samples are decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
import wave

import numpy as np
from scipy.signal import resample_poly

from machine_health.errors import InputError

#: a microphone's ADC rate: 8 kHz (telephony) to 48 kHz (studio / MEMS microphones).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8_000, 48_000
#: clip length: the statistics of shorter clips are not those the threshold was set on (normal
#: validation clips cut to 2 s raised 30 % false alarms, to 5 s 10 %, whole 10 s clips 5 %:
#: `python -m research.acoustic_selection`); at most 12 s bounds the request (1.15 MB of PCM
#: at 48 kHz).
MIN_SECONDS, MAX_SECONDS = 5.0, 12.0
#: largest WAV accepted: the longest clip at the highest rate + 4 kB of header / extra chunks.
MAX_WAV_BYTES = int(MAX_SECONDS * MAX_SAMPLE_RATE * 2) + 4096
MAX_BASE64_CHARS = 4 * math.ceil(MAX_WAV_BYTES / 3)


def b64decode_strict(text: str) -> bytes:
    """Standard base64 (padding required, no whitespace); InputError otherwise."""
    if len(text) > MAX_BASE64_CHARS:
        raise InputError(f"audio is {len(text)} base64 characters, at most {MAX_BASE64_CHARS}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"audio is not valid base64 ({exc})") from exc


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Samples in [-1, 1) as float32 and the rate of a mono 16-bit PCM WAV, within the bounds."""
    if len(data) > MAX_WAV_BYTES:
        raise InputError(f"WAV is {len(data)} bytes, at most {MAX_WAV_BYTES}")
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            channels, width = reader.getnchannels(), reader.getsampwidth()
            rate, frames = reader.getframerate(), reader.getnframes()
            if channels != 1 or width != 2:
                raise InputError(
                    f"WAV must be mono 16-bit PCM, got {channels} channel(s) of {8 * width} bits"
                )
            check_rate_and_length(rate, frames)
            pcm = reader.readframes(frames)
    except (wave.Error, EOFError, struct.error) as exc:
        raise InputError(f"not a PCM WAV file ({exc})") from exc
    if len(pcm) != 2 * frames:
        raise InputError(f"WAV truncated: header says {frames} samples, data holds {len(pcm) // 2}")
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return samples, rate


def check_rate_and_length(rate: int, samples: int) -> None:
    """InputError unless the rate and the duration are within the request bounds."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError(f"sample rate {rate} Hz outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    seconds = samples / rate
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise InputError(f"clip lasts {seconds:.3f} s, must last {MIN_SECONDS}..{MAX_SECONDS} s")


def encode_wav(samples: np.ndarray, rate: int) -> bytes:
    """A mono 16-bit PCM WAV of `samples` (int16, or floats in [-1, 1] which are clipped)."""
    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        samples = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(int(rate))
        writer.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def wav_base64(samples: np.ndarray, rate: int) -> str:
    """What a client posts: base64 of `encode_wav(samples, rate)`."""
    return base64.b64encode(encode_wav(samples, rate)).decode("ascii")


def to_model_rate(samples: np.ndarray, rate: int, model_rate: int) -> np.ndarray:
    """Samples resampled to the model's rate; only DOWN-sampling is allowed.

    A higher rate holds the model's whole band and is filtered down exactly (polyphase,
    anti-aliased); a lower one lacks the upper bands the model was trained on, and every such
    clip would look anomalous, so it is refused.
    """
    if rate == model_rate:
        return samples
    if rate < model_rate:
        raise InputError(
            f"sample rate {rate} Hz is below the model's {model_rate} Hz: the upper bands "
            f"the model reads would be missing; record at {model_rate} Hz or more"
        )
    divisor = math.gcd(rate, model_rate)
    return resample_poly(samples, model_rate // divisor, rate // divisor).astype(np.float32)
