"""The server sends its fitted preprocessor to each node until that node replies without error."""

import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

from metals.common.data import Preprocessor
from metals.common.preprocessor_record import DIGEST_FIELD, RECORD_KEY, STATE_FIELD
from metals.server.preprocessor_delivery import PreprocessorDelivery


@pytest.fixture(autouse=True)
def _identity(flower_identity):
    return None


@pytest.fixture()
def delivery():
    import pandas as pd

    frame = pd.DataFrame({"bytes": [1.0, 5.0], "proto": ["tcp", "udp"], "label": ["a", "b"]})
    preprocessor = Preprocessor(["bytes"], ["proto"], {"a": "a", "b": "b"}, ["a", "b"])
    return PreprocessorDelivery(preprocessor.fit(frame))


def _messages(node_ids):
    # One shared RecordDict, as Flower's FedAvg builds the messages of a round.
    content = RecordDict({"config": ConfigRecord({"server-round": 1})})
    return [Message(content, dst_node_id=node, message_type="train") for node in node_ids]


def _reply(message, *, error=False):
    if error:
        return Message(Error(code=0, reason="failed"), reply_to=message)
    return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=message)


def test_new_nodes_get_state_and_digest(delivery):
    messages = delivery.attach(_messages([1, 2]))

    for message in messages:
        record = message.content[RECORD_KEY]
        assert record[DIGEST_FIELD] == delivery.encoded.digest
        assert record[STATE_FIELD] == delivery.encoded.compressed
        assert message.content["config"]["server-round"] == 1


def test_node_that_replied_gets_digest_only(delivery):
    # Prepare: node 1 replies without error, node 2 with one.
    first = delivery.attach(_messages([1, 2]))
    delivery.record_replies([_reply(first[0]), _reply(first[1], error=True)])

    # Execute
    second = delivery.attach(_messages([1, 2]))

    # Assert
    assert STATE_FIELD not in second[0].content[RECORD_KEY]
    assert second[0].content[RECORD_KEY][DIGEST_FIELD] == delivery.encoded.digest
    assert STATE_FIELD in second[1].content[RECORD_KEY]
