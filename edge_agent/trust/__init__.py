"""The signed-update channel on the device: TUF metadata, the director's signature, target rules."""
