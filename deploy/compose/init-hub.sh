#!/bin/sh
# One-shot set-up that runs before the hubs start (the `init` service of compose.yaml), in the hub
# image, as the hub's user, on the hubs' shared data volume (EDGEFLEET_DATA_DIR). Every step is
# idempotent, so it runs again on every `docker compose up` and changes nothing the second time.
set -eu

data="${EDGEFLEET_DATA_DIR:?EDGEFLEET_DATA_DIR must name the hubs shared data folder}"

# The schema first: the hub refuses to start on a database older than it knows, and only one process
# should migrate it, not two replicas at once.
fleet db upgrade

# The fleet CA (kept in $data/identity, which only the hubs mount) and what the broker needs: its
# server certificate for the name the others reach it by, and the CA that issued the clients'.
fleet identity ca
[ -f "$data/broker/server.key" ] || fleet identity server-cert mosquitto --out "$data/broker"
# The gRPC artifact service's certificate: devices reach either replica through the alias `hub`.
[ -f "$data/tls/grpc/server.key" ] || fleet identity server-cert hub hub-1 hub-2 --out "$data/tls/grpc"
# The hubs' own MQTT client certificate (CN edgefleet-hub, the name the broker's ACL grants).
[ -f "$data/tls/mqtt/hub.key" ] || fleet identity hub-cert --out "$data/tls/mqtt"
# Mosquitto refuses to start without its CRL (EDGEFLEET_CRL_FILE); the hubs rewrite it at each start
# and revocation.
fleet identity crl
# The broker mounts only $data/broker, and reads it as its own user.
chmod 0755 "$data/broker"
