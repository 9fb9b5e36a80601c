"""Resource classes in words, the same in the API's answers, the ledger and the CLI."""

from __future__ import annotations


def describe(resource_class: str) -> str:
    """A resource class in words: ``gpu:A100`` -> ``A100 GPU-hours``."""
    kind, _, rest = resource_class.partition(":")
    return {
        "gpu": f"{rest} GPU-hours",
        "slice": f"{rest} GPU-slice-hours",
        "host": f"'{rest}' host-hours",
        "vcpu": "vCPU-hours",
    }.get(kind, f"{resource_class} hours")
