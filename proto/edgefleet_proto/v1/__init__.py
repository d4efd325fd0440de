"""Generated code for the edgefleet.v1 protobuf package (scripts/gen_proto.py)."""
