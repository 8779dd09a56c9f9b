"""plotly.js's own style rules as a static stylesheet (static/css/plotly.css), so pages need no inline <style>.

plotly.js injects its rules into a <style> element it creates, which the Content-Security-Policy (style-src 'self')
refuses. It skips that when the page already has an element with id "plotly.js-style-global" and class
"no-inline-styles": our pages link static/css/plotly.css under that id. The rules are read from the bundled
plotly.min.js, so a plotly upgrade that changes them fails tests/controlplane/test_security_pages.py until
`python -m controlplane.plotly_css` is run again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from pathlib import Path

import plotly

BUNDLE = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
STYLESHEET = Path(__file__).resolve().parent.parent / "static" / "css" / "plotly.css"
# The object literal of selector → declarations, and the loop that expands X and Y in each selector.
_RULES = re.compile(r'=\{("X,X div":.*?)\};for\((\w+) in \w+\)')
# The bundled maplibre (map charts) adds its stylesheet to a <style> with this id unless an element has that id.
_MAP_STYLE = re.compile(
    r'if\(!document\.getElementById\("([0-9a-f]{64})"\)\)\{var (\w)=document\.createElement\("style"\)'
)
_RULE = re.compile(r'"((?:[^"\\]|\\.)*)":(?:\'((?:[^\'\\]|\\.)*)\'|"((?:[^"\\]|\\.)*)")')


def rules(bundle: Path = BUNDLE) -> list[tuple[str, str]]:
    source = bundle.read_text(encoding="utf-8")
    found = _RULES.search(source)
    if found is None:
        raise ValueError(f"{bundle}: plotly.js's style rules were not found (has the bundle's layout changed?)")
    result = []
    for match in _RULE.finditer(found.group(1)):
        selector = re.sub(r"^,", " ,", match.group(1))
        selector = selector.replace("X", ".js-plotly-plot .plotly").replace("Y", ".plotly-notifier")
        result.append((selector, match.group(2) if match.group(2) is not None else match.group(3)))
    return result


def map_style_id(bundle: Path = BUNDLE) -> str:
    """The id that stops maplibre's <style>: templates/_plotly.html gives it to a placeholder (we draw no maps)."""
    found = _MAP_STYLE.search(bundle.read_text(encoding="utf-8"))
    if found is None:
        raise ValueError(f"{bundle}: maplibre's stylesheet id was not found (has the bundle's layout changed?)")
    return found.group(1)


_PIXELATED = re.compile(r"CSS_DECLARATIONS=(\[\[\"image-rendering\".*?\]\]);")


def style_attributes(bundle: Path = BUNDLE) -> list[str]:
    """The style="" values plotly.js sets as attributes (the CSP's style-src-attr allows exactly these, by hash): an
    empty one on a colour bar's fills, and the heatmap image's crisp-pixels rendering."""
    found = _PIXELATED.search(bundle.read_text(encoding="utf-8"))
    if found is None:
        raise ValueError(f"{bundle}: the heatmap's image-rendering declarations were not found")
    declarations = json.loads(found.group(1))
    return ["", "".join(f"{name}: {value}; " for name, value in declarations)]


def csp_hash(value: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(value.encode()).digest()).decode() + "'"


def stylesheet(bundle: Path = BUNDLE) -> str:
    version = re.search(r"plotly\.js v([\d.]+)", bundle.read_text(encoding="utf-8")[:200])
    header = f"/* plotly.js {version.group(1) if version else ''} style rules, from controlplane/plotly_css.py. */\n"
    return header + "".join(f"{selector} {{ {declarations} }}\n" for selector, declarations in rules(bundle))


if __name__ == "__main__":
    STYLESHEET.write_text(stylesheet(), encoding="utf-8")
    sys.stdout.write(f"wrote {STYLESHEET}\n")
