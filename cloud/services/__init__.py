"""The hub's services: every write to the database goes through one of these modules."""
