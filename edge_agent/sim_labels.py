"""Labels for a simulated fleet: the same on every device (``--label``), or a mix (``--label-mix``).

``--label-mix region=eu:40,region=us:60,tier=edge:100`` gives 40 % of the devices
``region=eu`` and 60 % ``region=us``, and every device ``tier=edge``. Each key's shares
must add up to 100. Which device gets which value depends only on its index and the
fleet's size, so a run is reproducible: the counts are the shares of N rounded by the
largest remainder (so they add up to N exactly), and devices take the values in blocks,
in the order given (devices 1-4 of 10 are ``eu``, 5-10 are ``us``).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.errors import ConfigError

__all__ = ["LabelMix", "parse_label", "parse_label_mix"]

_FORMAT = "KEY=VALUE:PERCENT[,KEY=VALUE:PERCENT...]"
# Characters that separate label selectors and mix items; a label holding one could not be selected.
_RESERVED = ",:="


def _check_part(what: str, text: str, item: str, option: str) -> str:
    part = text.strip()
    if not part:
        raise ConfigError(f"{option} item {item!r} has an empty {what}: expected KEY=VALUE")
    if any(c in part for c in _RESERVED) or any(c.isspace() for c in part):
        raise ConfigError(
            f"{option} item {item!r}: the {what} {part!r} may not hold spaces or any of {_RESERVED!r}"
        )
    return part


def parse_label(text: str) -> tuple[str, str]:
    """``"region=eu"`` -> ``("region", "eu")``; the value may be empty, neither may hold a comma."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--label expects KEY=VALUE, got {text!r}")
    if "," in text:
        # The hub's selectors are comma-separated: such a label could never be selected.
        raise ConfigError(f"--label {text!r}: a label may not hold a comma")
    return key.strip(), value.strip()


@dataclass(frozen=True)
class LabelMix:
    """Per key, its values in the order given, each with its share in percent (adding up to 100)."""

    shares: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.shares)

    def counts(self, devices: int) -> dict[str, list[tuple[str, int]]]:
        """How many of ``devices`` get each value of each key (largest remainder; ties: order given)."""
        if devices < 1:
            raise ValueError(f"a fleet needs at least 1 device, got {devices}")
        result: dict[str, list[tuple[str, int]]] = {}
        for key, values in self.shares:
            exact = [(value, percent * devices) for value, percent in values]
            counts = [whole // 100 for _, whole in exact]
            by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i][1] % 100), i))
            for i in by_remainder[: devices - sum(counts)]:
                counts[i] += 1
            result[key] = [(value, count) for (value, _), count in zip(exact, counts, strict=True)]
        return result

    def assign(self, devices: int) -> list[dict[str, str]]:
        """The mixed labels of device 0 .. devices-1."""
        labels: list[dict[str, str]] = [{} for _ in range(devices)]
        for key, counts in self.counts(devices).items():
            index = 0
            for value, count in counts:
                for device in labels[index : index + count]:
                    device[key] = value
                index += count
        return labels


def parse_label_mix(text: str) -> LabelMix:
    """``"region=eu:40,region=us:60"`` -> a LabelMix; ConfigError saying what was expected otherwise."""
    option = "--label-mix"
    by_key: dict[str, list[tuple[str, int]]] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise ConfigError(f"{option} has an empty item in {text!r}: expected {_FORMAT}")
        pair, sep, percent_text = item.rpartition(":")
        key, eq, value = pair.partition("=")
        if not sep or not eq:
            raise ConfigError(f"{option} item {item!r}: expected KEY=VALUE:PERCENT, e.g. region=eu:40")
        key = _check_part("key", key, item, option)
        value = _check_part("value", value, item, option)
        try:
            percent = int(percent_text.strip())
        except ValueError:
            percent = -1
        if not 0 < percent <= 100:
            raise ConfigError(
                f"{option} item {item!r}: expected a whole percentage from 1 to 100, got {percent_text!r}"
            )
        values = by_key.setdefault(key, [])
        if any(v == value for v, _ in values):
            raise ConfigError(f"{option} gives {key}={value} twice in {text!r}")
        values.append((value, percent))
    for key, values in by_key.items():
        total = sum(p for _, p in values)
        if total != 100:
            given = ", ".join(f"{key}={v}:{p}" for v, p in values)
            raise ConfigError(f"{option} shares of {key!r} add up to {total}: expected 100 ({given})")
    return LabelMix(tuple((key, tuple(values)) for key, values in by_key.items()))
