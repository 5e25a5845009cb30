"""The server's fitted preprocessor, kept in a device's ``context.state`` between messages."""

from __future__ import annotations

import logging

from flwr.app import ConfigRecord, Context, Message

from metals.common.preprocessor_record import (
    DIGEST_FIELD,
    RECORD_KEY,
    STATE_FIELD,
    decode_preprocessor,
)

logger = logging.getLogger(__name__)

_STATE_KEY = "metals-preprocessor"
_TEXT_FIELD = "json"


def received_preprocessor_json(msg: Message, context: Context) -> str:
    """Return the JSON text of the preprocessor the message names, caching it in the state.

    The server sends the compressed preprocessor until the node has replied
    once without error, and its SHA-256 digest in every message. A message
    with the preprocessor replaces the cached copy. A message with the
    digest alone is served from the copy in ``context.state``.

    Raises
    ------
    ValueError
        When the message has no preprocessor record, or names a digest that
        differs from the cached copy and carries no preprocessor. The error
        reply makes the server send the preprocessor again next time.
    metals.common.data.DataError
        When the preprocessor received is damaged (see
        :func:`metals.common.preprocessor_record.decode_preprocessor`).
    """
    if RECORD_KEY not in msg.content:
        raise ValueError(
            f"the message has no '{RECORD_KEY}' record, so this device cannot encode its "
            "traffic file; the server must run a metals version that sends its fitted "
            "preprocessor"
        )
    record = msg.content[RECORD_KEY]
    digest = str(record[DIGEST_FIELD])
    if STATE_FIELD in record:
        _, text = decode_preprocessor(bytes(record[STATE_FIELD]), digest)
        context.state[_STATE_KEY] = ConfigRecord({DIGEST_FIELD: digest, _TEXT_FIELD: text})
        logger.info("received preprocessor %s from the server", digest[:12])
        return text

    cached_digest = None
    if _STATE_KEY in context.state:
        cached = context.state[_STATE_KEY]
        cached_digest = str(cached[DIGEST_FIELD])
        if cached_digest == digest:
            return str(cached[_TEXT_FIELD])
    raise ValueError(
        f"the server names preprocessor {digest[:12]} but this node has "
        f"{'none' if cached_digest is None else cached_digest[:12]} cached and the message "
        "does not carry it; the server sends it again with this node's next message"
    )
