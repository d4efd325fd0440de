"""edgefleet's wire contracts: protobuf messages, gRPC services and MQTT topic names.

This package imports nothing else from edgefleet; both the hub and the agent depend on it.
"""

from edgefleet_proto.topics import Channel, DeviceTopics, FleetTopics, TopicError

__all__ = ["Channel", "DeviceTopics", "FleetTopics", "TopicError"]
