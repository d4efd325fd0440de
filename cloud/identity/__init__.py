"""Device identity: the fleet CA, the certificates it issued, their revocation (CRL)."""
