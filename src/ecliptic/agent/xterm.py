"""xterm.js as one script a browser can load, linked from Debian's packages at start-up.

Debian 12's ``libjs-xterm`` (3.8.1) ships ``/usr/share/javascript/xterm/xterm.js`` as a
288-byte wrapper that still calls ``require("./public/Terminal")`` and assigns to
``exports``: a browser cannot load it. The modules it means are the CommonJS files of
``node-xterm`` (``/usr/share/nodejs/xterm/lib``, same version; its ``addons`` folder links
libjs-xterm's addons, whose ``fit.js`` is CommonJS too). ``bundle`` links the modules the
terminal and the fit addon need into one script that defines ``window.Terminal`` (with
``fit()``); nothing is copied into our tree and nothing comes from a CDN.

``asset`` serves the other files of that folder (``xterm.css``) and nothing outside it.
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path

DEFAULT_DIR = Path("/usr/share/nodejs/xterm/lib")
"""node-xterm's modules (``xterm.js``, ``xterm.css``, ``addons/`` -> libjs-xterm's)."""

PACKAGES = "Debian's node-xterm and libjs-xterm (apt-get install node-xterm libjs-xterm)"

ENTRY = "xterm"
"""The module whose ``module.exports`` is the ``Terminal`` class."""
ADDONS = ("addons/fit/fit",)
"""Addons applied to ``Terminal`` (``term.fit()`` sizes the terminal to its element)."""

CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
}

_REQUIRE = re.compile(r"""\brequire\((["'])([^"'\\]+)\1\)""")
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)

_LOADER = """\
(function () {
  "use strict";
  var defs = {%s};
  var cache = {};
  function load(id) {
    if (Object.prototype.hasOwnProperty.call(cache, id)) return cache[id].exports;
    var def = defs[id];
    var module = (cache[id] = { exports: {} });
    def[0].call(module.exports, function (spec) { return load(def[1][spec]); },
                module, module.exports);
    return module.exports;
  }
  var Terminal = load(%s);
  [%s].forEach(function (id) { Terminal.applyAddon(load(id)); });
  window.Terminal = Terminal;
})();
"""


class XtermMissing(Exception):
    """xterm.js's files are not where the terminal was told to find them."""

    code = "xterm_missing"


def _resolve(root: Path, module: str, spec: str) -> str:
    """The id (path from ``root`` without ``.js``) that ``require(spec)`` in ``module`` means."""
    if not spec.startswith(("./", "../")):
        raise XtermMissing(f"{module}.js requires {spec!r}, which is not a file beside it")
    target = posixpath.normpath(posixpath.join(posixpath.dirname(module), spec))
    if target == ".." or target.startswith("../"):
        raise XtermMissing(f"{module}.js requires {spec!r}, outside {root}")
    if not (root / f"{target}.js").is_file() and (root / target / "index.js").is_file():
        return f"{target}/index"
    return target


def bundle(root: Path = DEFAULT_DIR) -> bytes:
    """One browser script of xterm.js and its addons, from the CommonJS modules in ``root``."""
    modules: dict[str, tuple[str, dict[str, str]]] = {}
    pending = [*ADDONS, ENTRY]  # popped from the end: the entry first
    while pending:
        module = pending.pop()
        if module in modules:
            continue
        path = root / f"{module}.js"
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise XtermMissing(f"cannot read {path} ({exc}); install {PACKAGES}") from None
        links = {spec: _resolve(root, module, spec) for _, spec in _REQUIRE.findall(source)}
        pending.extend(links.values())
        modules[module] = (_SOURCE_MAP.sub("", source), links)
    defs = ",\n".join(
        f"{json.dumps(module)}: [function (require, module, exports) {{\n{source}\n}}, "
        f"{json.dumps(links)}]"
        for module, (source, links) in sorted(modules.items())
    )
    addons = ", ".join(json.dumps(a) for a in ADDONS)
    return (_LOADER % (defs, json.dumps(ENTRY), addons)).encode()


def asset(root: Path, relative: str) -> tuple[bytes, str] | None:
    """The bytes and content type of the file ``relative`` (a URL path) inside ``root``, or
    None: for hidden names, ``..``, unknown suffixes and anything that resolves outside."""
    parts = relative.split("/")
    if any(not p or p.startswith(".") or "\\" in p or "\0" in p for p in parts):
        return None
    content_type = CONTENT_TYPES.get(posixpath.splitext(parts[-1])[1])
    if content_type is None:
        return None
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    try:
        return path.read_bytes(), content_type
    except OSError:
        return None
