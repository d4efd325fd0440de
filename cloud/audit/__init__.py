"""The audit log: who changed what through the API, when, and what it was before and after.

``recorder`` turns every mutation made while a request's actor is known into an ``AuditEntry`` row
in the same transaction; ``service`` reads the log back.
"""
