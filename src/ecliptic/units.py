"""Resource classes in words, the same in the API's answers, the ledger and the CLI."""

from __future__ import annotations


def describe(resource_class: str) -> str:
    """A resource class in words: ``gpu:A100`` -> ``A100 GPU-hours``.

    Whole hosts are counted in *host credits*: one host-hour at credit rate 1. A host
    whose ``credit_rate`` is 20 costs 20 host credits an hour, so an amount of a ``host:``
    class is never a number of hours."""
    kind, _, rest = resource_class.partition(":")
    return {
        "gpu": f"{rest} GPU-hours",
        "slice": f"{rest} GPU-slice-hours",
        "host": f"'{rest}' host credits",
        "vcpu": "vCPU-hours",
    }.get(kind, f"{resource_class} hours")
