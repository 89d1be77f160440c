import json

import pytest

from shared import protocol
from shared.errors import BackendError


def test_request_round_trip():
    line = protocol.request("generate", job="j1", image="/tmp/a.png", settings={"seed": 3})
    assert line.endswith("\n") and "\n" not in line[:-1]
    msg = protocol.decode_request(line)
    assert msg.kind == "generate"
    assert msg.fields == {"job": "j1", "image": "/tmp/a.png", "settings": {"seed": 3}}


def test_event_round_trip_keeps_null_job():
    line = protocol.event("error", job=None, code="invalid_request", message="bad")
    msg = protocol.decode_event(line)
    assert msg.kind == "error" and msg.fields["job"] is None and msg.fields["code"] == "invalid_request"
    line = protocol.event("progress", job="a", stage="geometry", step=3, total=50)
    assert protocol.decode_event(line).fields == {"job": "a", "stage": "geometry", "step": 3, "total": 50}


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"op": 3}', "no string"),
        ('{"op": "explode"}', "unknown op"),
        ('{"op": "cancel"}', "needs the field 'job'"),
        ('{"op": "cancel", "job": 5}', "must be str"),
        ('{"op": "generate", "image": "a.png", "colour": 1}', "no field 'colour'"),
        ('{"op": "generate"}', "'image', a 'mesh'"),
        ('{"op": "generate", "image": "a", "engine": "magic"}', "unknown engine"),
        ('{"op": "hello", "protocol": true}', "boolean"),
        (b'{"op": "status", "x": "\xff"}', "UTF-8"),
    ],
)
def test_malformed_lines_are_rejected(line, fragment):
    with pytest.raises(BackendError) as info:
        protocol.decode_request(line)
    assert info.value.code == "invalid_request"
    assert fragment in info.value.message


def test_oversized_line_is_rejected_before_parsing():
    huge = json.dumps({"op": "generate", "image": "x" * (protocol.MAX_LINE_BYTES + 1)})
    with pytest.raises(BackendError, match="exceeds"):
        protocol.decode_request(huge)
    with pytest.raises(BackendError, match="exceeds"):
        protocol.decode_request(huge.encode())


def test_encoder_refuses_invalid_events():
    with pytest.raises(BackendError):
        protocol.event("progress", job="a", stage="geometry", step="3", total=50)
    with pytest.raises(BackendError):
        protocol.event("done", job="a", path="x.glb", metadata={}, seconds=float("nan"))
