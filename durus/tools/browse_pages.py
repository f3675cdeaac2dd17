"""The HTML pages of `durus browse`. Every value from the database goes
through html.escape; the pages carry no script."""

from html import escape
from urllib.parse import urlencode
from typing import Any

from durus.tools.raw_state import Placeholder, RawObject, Ref

# How much of one value an attribute shows: elements of each container,
# characters of each string, containers deep.
MAX_ELEMENTS = 100
MAX_CHARACTERS = 2000
MAX_DEPTH = 8

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 2em 2em; color: #222; }
nav { padding: .6em 0; border-bottom: 1px solid #ccc; margin-bottom: 1em; }
nav a { margin-right: 1.2em; }
nav form { display: inline; }
table { border-collapse: collapse; }
td, th { border-bottom: 1px solid #e4e4e4; padding: .25em .8em .25em 0; text-align: left;
         vertical-align: top; }
td.value, .value { font-family: ui-monospace, monospace; white-space: pre-wrap;
                   word-break: break-all; }
th.number, td.number { text-align: right; }
.note { color: #a40; }
.pager a, .pager span { margin-right: 1em; }
"""


def page(title: str, body: str) -> str:
    """Return a whole HTML page: the navigation bar, then body (HTML)."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        "<title>%s - durus browse</title><style>%s</style></head><body>"
        "<nav><a href=\"/\">Root</a><a href=\"/census\">Census</a>"
        "<form action=\"/goto\" method=\"get\"><label>Go to oid "
        "<input name=\"oid\" size=\"10\" inputmode=\"numeric\"></label> "
        "<button type=\"submit\">Go</button></form></nav>%s</body></html>\n"
        % (escape(title), _STYLE, body))


def error_page(title: str, message: str) -> str:
    return page(title, "<h1>%s</h1><p>%s</p>" % (escape(title), escape(message)))


def short_name(class_name: str) -> str:
    return class_name.rpartition(".")[2]


def ref_link(ref: Ref) -> str:
    return '<a class="ref" href="/oid/%d">%s %d</a>' % (
        ref.oid, escape(short_name(ref.class_name)), ref.oid)


def value_html(value: Any, depth: int = 0) -> str:
    """Return value as HTML: Python-like text, each Ref a link."""
    if isinstance(value, Ref):
        return ref_link(value)
    if depth >= MAX_DEPTH:
        return "…"
    if isinstance(value, Placeholder):
        return _placeholder_html(value, depth)
    if isinstance(value, dict):
        return "{%s}" % _elements_html(
            ("%s: %s" % (value_html(k, depth + 1), value_html(v, depth + 1))
             for k, v in value.items()), len(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        inner = _elements_html((value_html(v, depth + 1) for v in value), len(value))
        if isinstance(value, list):
            return "[%s]" % inner
        if isinstance(value, tuple):
            return "(%s%s)" % (inner, "," if len(value) == 1 else "")
        return "{%s}" % inner if value else "%s()" % type(value).__name__
    text = repr(value)
    if len(text) > MAX_CHARACTERS:
        text = "%s… (%d characters)" % (text[:MAX_CHARACTERS], len(text))
    return escape(text)


def _elements_html(elements, count: int) -> str:
    shown: list[str] = []
    for element in elements:
        if len(shown) == MAX_ELEMENTS:
            shown.append("… %d more" % (count - MAX_ELEMENTS))
            break
        shown.append(element)
    return ", ".join(shown)


def _placeholder_html(value: Placeholder, depth: int) -> str:
    text = escape(value.class_name)
    if value.args:
        text += value_html(value.args, depth + 1)
    if value.state is not None:
        text += " " + value_html(value.state, depth + 1)
    if value.items:
        text += " " + value_html(value.items, depth + 1)
    return text


def object_page(obj: RawObject, importable: bool, attributes: dict | None,
                contents: str = "") -> str:
    """Return the page of one object: its class, oid, size and references,
    then its attributes (a dict; None to show the raw state instead), then
    contents (HTML, for containers)."""
    note = "" if importable else (
        ' <span class="note">(class not importable here: shown from its raw state)</span>')
    facts = (
        "<table class=\"facts\"><tr><th>class</th><td class=\"value\" id=\"class\">%s</td>"
        "<td>%s</td></tr><tr><th>oid</th><td id=\"oid\">%d</td></tr>"
        "<tr><th>size</th><td>%d bytes</td></tr><tr><th>references</th><td>%d</td></tr>"
        "</table>" % (escape(obj.class_name), note, obj.oid, obj.size, len(obj.refs)))
    if attributes is None:
        state = "<h2>State</h2><div class=\"value\">%s</div>" % value_html(obj.state)
    else:
        rows = "".join('<tr><th>%s</th><td class="value">%s</td></tr>'
                       % (escape(str(name)), value_html(value))
                       for name, value in attributes.items())
        state = "<h2>Attributes</h2><table class=\"attributes\">%s</table>" % (
            rows or "<tr><td>none</td></tr>")
    title = "%s %d" % (short_name(obj.class_name), obj.oid)
    return page(title, "<h1>%s</h1>%s%s%s" % (escape(title), facts, state, contents))


def contents_html(heading: str, rows: list, pager: str) -> str:
    """Return a container's contents section: rows of (key or index, value)."""
    body = "".join('<tr><td class="value key">%s</td><td class="value">%s</td></tr>'
                   % (value_html(key), value_html(value)) for key, value in rows)
    return "<h2>%s</h2>%s<table class=\"contents\">%s</table>%s" % (
        escape(heading), pager, body or "<tr><td>empty</td></tr>", pager)


def pager_html(oid: int, page_number: int, previous: dict | None, following: dict | None,
               total: int | None = None) -> str:
    """Return the previous/next links of page_number of an object's contents;
    previous and following are the query parameters of those pages, None
    where there is none."""
    parts = []
    for label, rel, query in (("« previous", "prev", previous), ("next »", "next", following)):
        if query is None:
            parts.append("<span>%s</span>" % label)
        else:
            parts.append('<a rel="%s" href="/oid/%d?%s">%s</a>'
                         % (rel, oid, escape(urlencode(query)), label))
    position = "page %d" % page_number
    if total is not None:
        position += " of %d" % max(1, total)
    parts.append('<span class="position">%s</span>' % position)
    return '<div class="pager">%s</div>' % "".join(parts)


def census_page(census: dict) -> str:
    """Return the census page: {class name: (objects, bytes)} as a chart and a table."""
    ordered = sorted(census.items(), key=lambda item: (-item[1][1], item[0]))
    rows = "".join(
        '<tr><td class="value">%s</td><td class="number">%d</td><td class="number">%d</td></tr>'
        % (escape(name), count, size) for name, (count, size) in ordered)
    total_objects = sum(count for count, _ in census.values())
    total_bytes = sum(size for _, size in census.values())
    table = ("<table class=\"census\"><tr><th>class</th><th class=\"number\">objects</th>"
             "<th class=\"number\">bytes</th></tr>%s<tr><th>total</th><th class=\"number\">"
             "%d</th><th class=\"number\">%d</th></tr></table>"
             % (rows, total_objects, total_bytes))
    return page("Census", "<h1>Census</h1><p>Objects and bytes by class.</p>%s%s"
                % (census_chart(ordered), table))


_ROW_HEIGHT = 34
_LABEL_WIDTH = 320
_BAR_WIDTH = 520
_COLOURS = {"objects": "#4e79a7", "bytes": "#f28e2b"}


def census_chart(ordered: list) -> str:
    """Return an SVG chart of [(class name, (objects, bytes))]: two bars a
    class, each scaled to the largest of its kind."""
    most = [max([numbers[i] for _, numbers in ordered], default=0) or 1 for i in (0, 1)]
    height = 30 + _ROW_HEIGHT * len(ordered)
    parts = ['<svg id="census-chart" xmlns="http://www.w3.org/2000/svg" width="%d" '
             'height="%d" role="img" aria-label="objects and bytes by class">'
             % (_LABEL_WIDTH + _BAR_WIDTH + 140, height)]
    for x, (kind, colour) in zip((_LABEL_WIDTH, _LABEL_WIDTH + 110), _COLOURS.items()):
        parts.append('<rect x="%d" y="6" width="12" height="12" fill="%s"/>'
                     '<text x="%d" y="17" font-size="13">%s</text>' % (x, colour, x + 16, kind))
    for row, (name, numbers) in enumerate(ordered):
        y = 30 + row * _ROW_HEIGHT
        # The label shows the class's own name; hovering shows its module too.
        parts.append('<g><title>%s</title><text class="label" x="%d" y="%d" font-size="13" '
                     'text-anchor="end">%s</text></g>'
                     % (escape(name), _LABEL_WIDTH - 8, y + 19, escape(short_name(name))))
        for i, colour in enumerate(_COLOURS.values()):
            width = max(1, round(_BAR_WIDTH * numbers[i] / most[i]))
            bar_y = y + 2 + i * 14
            parts.append('<rect x="%d" y="%d" width="%d" height="12" fill="%s"/>'
                         '<text x="%d" y="%d" font-size="11">%d</text>'
                         % (_LABEL_WIDTH, bar_y, width, colour, _LABEL_WIDTH + width + 4,
                            bar_y + 10, numbers[i]))
    parts.append("</svg>")
    return "".join(parts)
