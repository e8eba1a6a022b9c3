"""A strict parser of the Prometheus text exposition format (version 0.0.4), for the
tests of every /metrics (master, volume server, mount).

parse(text) returns {(name, frozenset(labels.items())): value} and raises
PromFormatError on anything a strict reader would refuse:
- a line that is neither `# HELP name text`, `# TYPE name type` nor a sample
  `name{label="value",...} value`; bad metric or label names; bad escapes;
- a sample before its family's TYPE, a TYPE or HELP given twice, a family's samples
  not together, a duplicate series (same name and labels);
- kelp's conventions: every family typed, counters named *_total, histograms with
  cumulative _bucket series ending in le="+Inf" equal to _count, and a _sum.
check_monotonic(before, after) fails when a counter or histogram series went down.
"""

import math
import re

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
CONTENT_TYPE = "text/plain; version=0.0.4"


class PromFormatError(AssertionError):
    pass


def _value(s, where):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    try:
        return float(s)
    except ValueError:
        raise PromFormatError("%s: bad value %r" % (where, s)) from None


def _labels(s, where):
    """Parses `a="x",b="y"` (the inside of the braces) into a dict."""
    out = {}
    i = 0
    while i < len(s):
        eq = s.find("=", i)
        if eq < 0:
            raise PromFormatError("%s: label without '=' in {%s}" % (where, s))
        name = s[i:eq]
        if not LABEL.match(name):
            raise PromFormatError("%s: bad label name %r" % (where, name))
        if name in out:
            raise PromFormatError("%s: label %r twice" % (where, name))
        if eq + 1 >= len(s) or s[eq + 1] != '"':
            raise PromFormatError("%s: label %r value not quoted" % (where, name))
        j = eq + 2
        val = []
        while True:
            if j >= len(s):
                raise PromFormatError("%s: unterminated label value" % where)
            c = s[j]
            if c == "\\":
                if j + 1 >= len(s) or s[j + 1] not in '\\"n':
                    raise PromFormatError("%s: bad escape in label value" % where)
                val.append({"\\": "\\", '"': '"', "n": "\n"}[s[j + 1]])
                j += 2
            elif c == '"':
                break
            elif c == "\n":
                raise PromFormatError("%s: newline in label value" % where)
            else:
                val.append(c)
                j += 1
        out[name] = "".join(val)
        j += 1
        if j < len(s):
            if s[j] != ",":
                raise PromFormatError("%s: expected ',' after label %r" % (where, name))
            j += 1
        i = j
    return out


def _family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
            return name[: -len(suffix)]
    return name


def parse(text):
    if text and not text.endswith("\n"):
        raise PromFormatError("the text does not end with a newline")
    types, helps, samples = {}, {}, {}
    done = set()        # families whose samples are over
    current = None
    for n, line in enumerate(text.split("\n")[:-1] if text else [], 1):
        where = "line %d %r" % (n, line[:120])
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) < 3 or parts[0] != "#" or parts[1] not in ("HELP", "TYPE"):
                raise PromFormatError("%s: a comment other than HELP or TYPE" % where)
            name = parts[2]
            if not NAME.match(name):
                raise PromFormatError("%s: bad metric name" % where)
            if parts[1] == "TYPE":
                if name in types:
                    raise PromFormatError("%s: second TYPE for %s" % (where, name))
                if len(parts) != 4 or parts[3] not in TYPES:
                    raise PromFormatError("%s: bad type" % where)
                if any(_family_of(k[0], types) == name for k in samples):
                    raise PromFormatError("%s: TYPE after samples of %s" % (where, name))
                types[name] = parts[3]
            else:
                if name in helps:
                    raise PromFormatError("%s: second HELP for %s" % (where, name))
                helps[name] = parts[3] if len(parts) == 4 else ""
            continue
        if not line.strip():
            raise PromFormatError("%s: empty line" % where)
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?\Z", line)
        if not m:
            raise PromFormatError("%s: not a sample line" % where)
        name, labels, value = m.group(1), _labels(m.group(3) or "", where), \
            _value(m.group(4), where)
        fam = _family_of(name, types)
        if fam not in types:
            raise PromFormatError("%s: sample of %s before (or without) its TYPE" % (
                where, fam))
        if fam != current:
            if fam in done:
                raise PromFormatError("%s: samples of %s are not together" % (where, fam))
            if current:
                done.add(current)
            current = fam
        key = (name, frozenset(labels.items()))
        if key in samples:
            raise PromFormatError("%s: duplicate series" % where)
        samples[key] = value
        t = types[fam]
        if t == "counter" and not name.endswith("_total"):
            raise PromFormatError("%s: counter %s does not end in _total" % (where, name))
        if t in ("counter",) and (value < 0 or math.isnan(value)):
            raise PromFormatError("%s: negative counter" % where)
        if t == "histogram" and name == fam:
            raise PromFormatError("%s: histogram sample without a suffix" % where)
        if name.endswith("_bucket") and t == "histogram" and "le" not in labels:
            raise PromFormatError("%s: bucket without le" % where)
    _check_histograms(types, samples)
    return samples


def _check_histograms(types, samples):
    series = {}
    for (name, labels), v in samples.items():
        fam = _family_of(name, types)
        if types.get(fam) != "histogram":
            continue
        d = dict(labels)
        le = d.pop("le", None)
        s = series.setdefault((fam, frozenset(d.items())), {"buckets": [], "sum": None,
                                                            "count": None})
        if name.endswith("_bucket"):
            s["buckets"].append((_value(le, fam), v))
        elif name.endswith("_sum"):
            s["sum"] = v
        else:
            s["count"] = v
    for (fam, labels), s in series.items():
        what = "%s{%s}" % (fam, dict(labels))
        b = sorted(s["buckets"])
        if not b or b[-1][0] != math.inf:
            raise PromFormatError("%s: no le=\"+Inf\" bucket" % what)
        if s["sum"] is None or s["count"] is None:
            raise PromFormatError("%s: no _sum or _count" % what)
        for (_, x), (_, y) in zip(b, b[1:]):
            if y < x:
                raise PromFormatError("%s: buckets not cumulative" % what)
        if b[-1][1] != s["count"]:
            raise PromFormatError("%s: +Inf bucket %s != count %s" % (what, b[-1][1],
                                                                      s["count"]))


def types_of(text):
    return {m.group(1): m.group(2) for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M)}


def check_monotonic(text_before, text_after):
    """Counters and histogram series present in both scrapes did not go down."""
    types = types_of(text_after)
    a, b = parse(text_before), parse(text_after)
    for key, v in a.items():
        fam = _family_of(key[0], types)
        if types.get(fam) in ("counter", "histogram") and key in b and b[key] < v:
            raise PromFormatError("%s%s went down: %s -> %s" % (key[0], dict(key[1]), v,
                                                                 b[key]))


def value(samples, name, **labels):
    """The value of one series, or None."""
    return samples.get((name, frozenset(labels.items())))


def total(samples, name, **labels):
    """Sum over every series of name whose labels include the given ones."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))
