"""Pulumi programs the infra agent drives: one directory (with a ``Pulumi.yaml``) each."""
