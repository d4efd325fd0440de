"""How the hub reaches devices: MQTT (``mqtt``, ``retained``), the gRPC artifact service
(``grpc_server``) and the broker it uses or embeds (``broker``)."""
