"""Compressing checkpoint serializer: zstd above a size threshold, tagged in the type.

:class:`ZstdCipher` plugs into LangGraph's ``EncryptedSerializer``, which appends the cipher
name to the serializer's type: payloads above the threshold are stored as ``<type>+zstd``
(e.g. ``msgpack+zstd``), smaller ones as ``<type>+raw``. Payloads written by the stock
serializer carry no ``+`` and are passed straight to the inner serializer, so old rows load.
Every payload written counts in ``gradeflow_checkpoint_bytes_written_total{encoding}`` (stored bytes)
and ``gradeflow_checkpoint_payload_bytes_total`` (before compression).
"""

from __future__ import annotations

import threading

import zstandard
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from infra.observability.metrics import CHECKPOINT_BYTES_WRITTEN, CHECKPOINT_PAYLOAD_BYTES

ZSTD_TAG = "zstd"
"""Cipher name of compressed payloads (full type e.g. ``msgpack+zstd``)."""
RAW_TAG = "raw"
"""Cipher name of payloads stored uncompressed by this serializer (e.g. ``msgpack+raw``)."""
DEFAULT_COMPRESS_THRESHOLD = 512
"""Payloads of at least this many bytes are compressed."""


class ZstdCipher:
    """``CipherProtocol`` that zstd-compresses payloads above a threshold.

    zstandard compressor objects are not thread-safe and the saver serializes from worker
    threads (``asyncio.to_thread``), so each thread gets its own compressor and decompressor.
    """

    def __init__(self, *, threshold: int = DEFAULT_COMPRESS_THRESHOLD, level: int = 3) -> None:
        """Create the cipher.

        Args:
            threshold: Smallest payload size, in bytes, that is compressed.
            level: zstd compression level.

        """
        self.threshold = threshold
        self.level = level
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        comp = getattr(self._local, "compressor", None)
        if comp is None:
            comp = self._local.compressor = zstandard.ZstdCompressor(level=self.level)
        return comp

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dec = getattr(self._local, "decompressor", None)
        if dec is None:
            dec = self._local.decompressor = zstandard.ZstdDecompressor()
        return dec

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        """Compress ``plaintext`` if it is large enough; return ``(tag, payload)`` (and count the bytes)."""
        tag, payload = (RAW_TAG, plaintext) if len(plaintext) < self.threshold else \
            (ZSTD_TAG, self._compressor().compress(plaintext))
        CHECKPOINT_PAYLOAD_BYTES.inc(len(plaintext))
        CHECKPOINT_BYTES_WRITTEN.labels(tag).inc(len(payload))
        return tag, payload

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        """Undo :meth:`encrypt`.

        Raises:
            ValueError: Unknown tag.
            zstandard.ZstdError: Corrupt compressed payload.

        """
        if ciphername == RAW_TAG:
            return ciphertext
        if ciphername == ZSTD_TAG:
            return self._decompressor().decompress(ciphertext)
        raise ValueError(f"unknown checkpoint payload tag {ciphername!r}")

    def __copy__(self) -> ZstdCipher:
        return ZstdCipher(threshold=self.threshold, level=self.level)


def make_serde(
    *, threshold: int = DEFAULT_COMPRESS_THRESHOLD, level: int = 3, inner: SerializerProtocol | None = None
) -> EncryptedSerializer:
    """Build the compressing serializer.

    Args:
        threshold: Smallest payload size, in bytes, that is compressed.
        level: zstd compression level.
        inner: Serializer of the values; default ``JsonPlusSerializer()``, which, like the
            stock saver's, honours ``LANGGRAPH_STRICT_MSGPACK`` (strict mode: only LangGraph's
            safe types, plus what the graph's ``with_allowlist`` adds, deserialize).

    """
    cipher = ZstdCipher(threshold=threshold, level=level)
    return EncryptedSerializer(cipher, serde=inner or JsonPlusSerializer())
