"""The fitted preprocessor as the ServerApp sends it to devices that read their own files.

A device started with node config ``data-path`` has no copy of the training
data, so it cannot fit the preprocessing itself. It must not refit it on its
own rows either, because that would give it another feature space than the
global model's.
The server therefore sends the preprocessor it fitted on the training rows,
as zlib-compressed :meth:`Preprocessor.to_json` text, in a ConfigRecord
stored under :data:`RECORD_KEY` of a message. The SHA-256 digest of the JSON
text travels with every message, and the compressed text only until the node
has replied once without error (see ``metals.server.preprocessor_delivery``).
For NSL-KDD (118 features) the JSON text is 3,606 bytes and the compressed
text 1,010 bytes, against 77,420 bytes of float32 weights of the default
MLP (hidden layers 90,90) in the same message.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from metals.common.data.errors import DataError
from metals.common.data.preprocess import Preprocessor

#: Key of the preprocessor's ConfigRecord in a message's RecordDict.
RECORD_KEY = "preprocessor"
#: Field with the SHA-256 hex digest of the JSON text (in every message).
DIGEST_FIELD = "sha256"
#: Field with the zlib-compressed JSON text (only for nodes without a copy).
STATE_FIELD = "json-zlib"


@dataclass(frozen=True)
class EncodedPreprocessor:
    """A fitted preprocessor ready to put into a message.

    Attributes
    ----------
    compressed : bytes
        zlib-compressed UTF-8 JSON text of :meth:`Preprocessor.to_json`.
    digest : str
        SHA-256 hex digest of the uncompressed JSON text.
    json_bytes : int
        Size of the uncompressed JSON text in bytes.
    """

    compressed: bytes
    digest: str
    json_bytes: int


def encode_preprocessor(preprocessor: Preprocessor) -> EncodedPreprocessor:
    """Compress a fitted preprocessor's JSON text and compute its digest."""
    text = preprocessor.to_json().encode("utf-8")
    return EncodedPreprocessor(
        compressed=zlib.compress(text, 9),
        digest=hashlib.sha256(text).hexdigest(),
        json_bytes=len(text),
    )


def decode_preprocessor(compressed: bytes, digest: str) -> tuple[Preprocessor, str]:
    """Decompress and check a preprocessor sent by :func:`encode_preprocessor`.

    Parameters
    ----------
    compressed : bytes
        The :data:`STATE_FIELD` value of a message.
    digest : str
        The :data:`DIGEST_FIELD` value sent with it.

    Returns
    -------
    preprocessor : Preprocessor
        The fitted preprocessor.
    text : str
        Its JSON text, a hashable key for caches.

    Raises
    ------
    DataError
        When the bytes do not decompress, their digest differs from
        ``digest``, or the text is not a preprocessor state.
    """
    try:
        raw = zlib.decompress(compressed)
    except zlib.error as error:
        raise DataError(
            f"the preprocessor sent by the server is not zlib data ({error}); the server "
            "and this client probably run different metals versions"
        ) from None
    received = hashlib.sha256(raw).hexdigest()
    if received != digest:
        raise DataError(
            f"the preprocessor sent by the server has SHA-256 {received}, but the message "
            f"names {digest}; the message was damaged, so restart this node"
        )
    text = raw.decode("utf-8")
    return Preprocessor.from_json(text, source="preprocessor sent by the server"), text
