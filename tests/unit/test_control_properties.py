"""The tap and the target agree on the control properties."""

from tap_redis_stream import control as tap_control
from target_batched_postgres import control as target_control


def test_control_properties_are_the_same_set():
    assert tap_control.CONTROL_PROPERTIES == target_control.CONTROL_PROPERTIES
