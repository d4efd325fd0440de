#!/bin/sh
# Issues each simulated device its bundle (client certificate and key, the fleet CA, the TUF root and
# an agent.toml) through the first hub's API with the admin token from the shared data folder: the
# `provision` service of compose.yaml. A device that already has a bundle keeps it.
# Usage: provision-devices.sh DEVICE_ID...
set -eu

data="${EDGEFLEET_DATA_DIR:?EDGEFLEET_DATA_DIR must name the hubs shared data folder}"
[ "$#" -gt 0 ] || { echo "usage: provision-devices.sh DEVICE_ID..." >&2; exit 2; }

for device in "$@"; do
    out="$data/devices/$device"
    if [ -f "$out/agent.toml" ]; then
        echo "$device: bundle already in $out"
    else
        fleet devices provision "$device" --out "$out"
    fi
done
