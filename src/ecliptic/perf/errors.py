"""Why a benchmark could not be specified, run or read."""

from __future__ import annotations

from ecliptic.errors import EclipticError


class ParseError(EclipticError):
    """A tool's output is truncated, empty or not the tool's: names the kind and the line."""

    code = "unparsable_output"
    status = 422
    title = "Output not understood"

    def __init__(
        self, kind: str, message: str, *, line_no: int | None = None, line: str = ""
    ) -> None:
        where = f" at line {line_no}" if line_no is not None else ""
        shown = f": {line.strip()[:200]!r}" if line.strip() else ""
        super().__init__(f"{kind}: cannot read the output{where}{shown}: {message}")
        self.kind = kind
        self.line_no = line_no
        self.line = line


class RunFailed(EclipticError):
    """The tool did not run to the end (it failed, timed out, or its peer did not start)."""

    code = "benchmark_failed"
    status = 409
    title = "Benchmark failed"


class Unsupported(EclipticError):
    """The benchmark cannot run where it was asked to (no RDMA device, no Slurm there)."""

    code = "unsupported"
    status = 422
    title = "Cannot run there"
