"""Sending the fitted preprocessor to each node until it has replied once without error."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import ConfigRecord, Message, RecordDict

from metals.common.data import Preprocessor
from metals.common.preprocessor_record import (
    DIGEST_FIELD,
    RECORD_KEY,
    STATE_FIELD,
    encode_preprocessor,
)

logger = logging.getLogger(__name__)


class PreprocessorDelivery:
    """Adds the preprocessor to the messages of nodes that may not have it yet.

    The server cannot see a node's config, so it does not know which nodes
    read their own traffic file and need the preprocessor. Every message
    gets the digest. A node also gets the compressed preprocessor until it
    has sent one reply without error: a device caches the preprocessor in
    its ``context.state`` before it replies, and a node with a
    ``partition-id`` does not need it. An error reply puts the node back on
    the list, so a device that lost its cache gets the preprocessor again in
    the next round.

    Parameters
    ----------
    preprocessor : Preprocessor
        Preprocessing fitted on the training rows of the prepared dataset.
    """

    def __init__(self, preprocessor: Preprocessor) -> None:
        self.encoded = encode_preprocessor(preprocessor)
        self.served_nodes: set[int] = set()
        logger.info(
            "preprocessor %s: %d bytes of JSON, %d bytes compressed, sent to each node "
            "until its first reply without error",
            self.encoded.digest[:12],
            self.encoded.json_bytes,
            len(self.encoded.compressed),
        )

    def attach(self, messages: Iterable[Message]) -> list[Message]:
        """Add the preprocessor record to each message and return the messages.

        Each message gets its own RecordDict, because Flower's strategies
        give all the messages of a round one shared RecordDict. The records
        inside it (weights, config) stay shared.
        """
        digest_only = ConfigRecord({DIGEST_FIELD: self.encoded.digest})
        full = ConfigRecord(
            {DIGEST_FIELD: self.encoded.digest, STATE_FIELD: self.encoded.compressed}
        )
        attached = []
        for message in messages:
            needs_state = message.metadata.dst_node_id not in self.served_nodes
            content = RecordDict(dict(message.content.items()))
            content[RECORD_KEY] = full if needs_state else digest_only
            message.content = content
            attached.append(message)
        return attached

    def record_replies(self, replies: Iterable[Message]) -> None:
        """Note which nodes replied without error, and forget those that replied with one."""
        for reply in replies:
            node_id = reply.metadata.src_node_id
            if reply.has_error():
                self.served_nodes.discard(node_id)
            else:
                self.served_nodes.add(node_id)
