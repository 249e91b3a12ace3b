"""Reader for labelled text in TSV: a header `text<TAB>label` (either order, any extra columns named),
then one example per line. Labels are arbitrary strings.

What a user's file may hold, and what happens:
  - a UTF-8 byte order mark, CRLF line endings: accepted, and said so in `notes` (the CLI prints them);
  - a UTF-16/32 byte order mark: an error naming the encoding to pass (`--encoding`);
  - a bad row (no tab, wrong number of fields, empty text or label, a blank line, undecodable bytes, a
    label outside `known_labels`): a `UserError` "FILE:LINE: what was expected"; with
    `skip_bad_rows=True` the row is skipped and recorded in `skipped` as (line, reason), so the caller
    reports the count. Nothing is dropped silently.
Line numbers are 1-based and count the header, as an editor shows them.
"""

from __future__ import annotations

import codecs
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rnnkit.errors import UserError

_UTF16_32_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                  (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]


@dataclass
class Example:
    text: str
    label: str
    line: int  # line number in the file (the header is line 1)


@dataclass
class LabelledTSV:
    path: str
    examples: list[Example] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason) of each skipped row
    notes: list[str] = field(default_factory=list)  # accepted oddities (BOM, CRLF)

    @property
    def texts(self):
        return [e.text for e in self.examples]

    @property
    def labels(self):
        return [e.label for e in self.examples]

    def skipped_summary(self) -> str | None:
        """One line for the user, or None when nothing was skipped."""
        if not self.skipped:
            return None
        line, reason = self.skipped[0]
        n = len(self.skipped)
        return (f"{self.path}: skipped {n} bad row{'s' if n != 1 else ''} "
                f"(first: line {line}: {reason})")


def read_bytes(path) -> tuple[bytes, str]:
    """The bytes of `path` ("-" reads stdin) and the name to use in messages."""
    if str(path) == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    p = Path(path)
    try:
        return p.read_bytes(), str(p)
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a directory, expected a file") from None
    except OSError as e:
        raise UserError(f"{p}: cannot read ({e.strerror or e.__class__.__name__})") from None


def split_lines(data: bytes, name: str, encoding: str = "utf-8"):
    """Split `data` into lines: returns ([(line number, text or None, error or None)], notes).

    A line that does not decode gives text None and an error message; notes name accepted oddities.
    """
    notes = []
    for bom, enc in _UTF16_32_BOMS:
        if data.startswith(bom) and not encoding.lower().replace("_", "-").startswith(enc):
            raise UserError(f"{name}: line 1: the file starts with a {enc.upper()} byte order mark; "
                            f"expected UTF-8 (convert it, or pass --encoding {enc})")
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8") and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
        notes.append(f"{name}: line 1: UTF-8 byte order mark removed")
    if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
        # A multi-byte encoding cannot be split on b"\n" safely: decode the whole file first.
        try:
            text = data.decode(encoding)
        except LookupError:
            raise UserError(f"--encoding: unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as e:
            raise UserError(f"{name}: not valid {encoding} (byte {e.start})") from None
        text = text.lstrip("\ufeff")
        raw = [ln.encode("utf-8") for ln in text.split("\n")]
        encoding = "utf-8"
    else:
        raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()  # the newline that ends the last line
    rows, crlf = [], 0
    for i, b in enumerate(raw, start=1):
        if b.endswith(b"\r"):
            b = b[:-1]
            crlf += 1
        try:
            rows.append((i, b.decode(encoding), None))
        except UnicodeDecodeError as e:
            rows.append((i, None, f"not valid UTF-8 (byte {e.start + 1} of the line); "
                                  f"expected UTF-8 text or pass --encoding"))
    if crlf:
        notes.append(f"{name}: CRLF (Windows) line endings on {crlf} line{'s' if crlf != 1 else ''} "
                     f"accepted")
    return rows, notes


def read_labelled_tsv(path, skip_bad_rows: bool = False, known_labels=None, encoding: str = "utf-8",
                      text_column: str = "text", label_column: str = "label") -> LabelledTSV:
    """Read a `text<TAB>label` file. `known_labels`: the labels a row may carry (e.g. the training set's,
    when reading the dev set); a row with another label is a bad row."""
    data, name = read_bytes(path)
    rows, notes = split_lines(data, name, encoding)
    out = LabelledTSV(path=name, notes=notes)
    if not rows:
        raise UserError(f"{name}: empty file; expected a header line '{text_column}<TAB>{label_column}'")
    line, header, err = rows[0]
    if err:
        raise UserError(f"{name}:{line}: {err}")
    cols = [c.strip().lower() for c in header.split("\t")]
    if text_column not in cols or label_column not in cols or len(set(cols)) != len(cols):
        raise UserError(f"{name}:{line}: expected the header '{text_column}<TAB>{label_column}', "
                        f"got {header[:60]!r}")
    ti, li, ncols = cols.index(text_column), cols.index(label_column), len(cols)
    known = None if known_labels is None else set(known_labels)

    for line, text, err in rows[1:]:
        reason = err
        if reason is None:
            fields = text.split("\t")
            if not text.strip():
                reason = "blank line; expected 'text<TAB>label'"
            elif len(fields) == 1:
                reason = f"no tab; expected {ncols} tab-separated fields (text<TAB>label)"
            elif len(fields) != ncols:
                reason = f"{len(fields)} tab-separated fields, expected {ncols} (a tab inside the text?)"
            else:
                t, lab = fields[ti].strip(), fields[li].strip()
                if not t:
                    reason = "empty text"
                elif not lab:
                    reason = "empty label"
                elif known is not None and lab not in known:
                    shown = ", ".join(sorted(known)[:10]) + (", ..." if len(known) > 10 else "")
                    reason = f"label {lab!r} never seen in training (known labels: {shown})"
                else:
                    out.examples.append(Example(t, lab, line))
                    continue
        if not skip_bad_rows:
            raise UserError(f"{name}:{line}: {reason}" + ("" if err else "; --skip-bad-rows skips such rows"))
        out.skipped.append((line, reason))
    if not out.examples:
        extra = f" ({len(out.skipped)} bad rows skipped)" if out.skipped else ""
        raise UserError(f"{name}: no examples after the header{extra}")
    return out


def read_text_lines(path, encoding: str = "utf-8") -> tuple[list[tuple[int, str]], list[str]]:
    """Plain text, one input per line ("-": stdin): [(line number, text)] and notes. Blank lines are
    returned too (the caller says what it does with them)."""
    data, name = read_bytes(path)
    rows, notes = split_lines(data, name, encoding)
    out = []
    for line, text, err in rows:
        if err:
            raise UserError(f"{name}:{line}: {err}")
        out.append((line, text))
    return out, notes
