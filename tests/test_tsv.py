"""The labelled TSV reader: every kind of bad row is reported with file and line, or counted and skipped
with --skip-bad-rows; BOM and CRLF are accepted and noted, never silently."""

import codecs

import pytest

from rnnkit.data.tsv import read_labelled_tsv, read_text_lines
from rnnkit.errors import UserError


def write(tmp_path, data: bytes, name="d.tsv"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_reads_examples_with_line_numbers(tmp_path):
    p = write(tmp_path, b"text\tlabel\nfine film\tpos\n  dull \t neg \n")
    d = read_labelled_tsv(p)
    assert d.texts == ["fine film", "dull"] and d.labels == ["pos", "neg"]
    assert [e.line for e in d.examples] == [2, 3]
    assert d.skipped == [] and d.notes == []


def test_header_columns_in_any_order(tmp_path):
    p = write(tmp_path, b"Label\tid\tText\n1\t7\thello\n")
    d = read_labelled_tsv(p)
    assert d.texts == ["hello"] and d.labels == ["1"]


def test_crlf_and_bom_are_accepted_and_noted(tmp_path):
    p = write(tmp_path, codecs.BOM_UTF8 + "text\tlabel\r\ncafé ok\t1\r\nbad\t0\r\n".encode())
    d = read_labelled_tsv(p)
    assert d.texts == ["café ok", "bad"] and d.labels == ["1", "0"]  # no "\r" left in the label
    assert any("byte order mark" in n and "line 1" in n for n in d.notes)
    assert any("CRLF" in n and "3 lines" in n for n in d.notes)


def test_utf16_file_names_the_encoding(tmp_path):
    p = write(tmp_path, "text\tlabel\nhi\t1\n".encode("utf-16"))
    with pytest.raises(UserError, match=r"d.tsv: line 1: .*UTF-16 byte order mark.*--encoding utf-16"):
        read_labelled_tsv(p)
    d = read_labelled_tsv(p, encoding="utf-16")
    assert d.texts == ["hi"] and d.labels == ["1"]


@pytest.mark.parametrize("row, reason", [
    (b"no tab here", "no tab"),
    (b"a\tb\tc", "3 tab-separated fields, expected 2"),
    (b"   \tpos", "empty text"),
    (b"some text\t  ", "empty label"),
    (b"", "blank line"),
    (b"caf\xe9\tpos", "not valid UTF-8"),
])
def test_bad_row_names_file_and_line(tmp_path, row, reason):
    p = write(tmp_path, b"text\tlabel\ngood\tpos\n" + row + b"\nalso good\tneg\n")
    with pytest.raises(UserError) as e:
        read_labelled_tsv(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}:3: ") and reason in msg and "\n" not in msg
    d = read_labelled_tsv(p, skip_bad_rows=True)
    assert d.texts == ["good", "also good"]
    assert [line for line, _ in d.skipped] == [3] and reason in d.skipped[0][1]
    assert d.skipped_summary().startswith(f"{p}: skipped 1 bad row (first: line 3:")


def test_unknown_label(tmp_path):
    p = write(tmp_path, b"text\tlabel\nok\t1\nodd\t2\nok too\t0\nodd again\t7\n")
    with pytest.raises(UserError, match=r":3: label '2' never seen in training \(known labels: 0, 1\)"):
        read_labelled_tsv(p, known_labels=["0", "1"])
    d = read_labelled_tsv(p, known_labels=["0", "1"], skip_bad_rows=True)
    assert d.labels == ["1", "0"] and [line for line, _ in d.skipped] == [3, 5]
    assert "skipped 2 bad rows" in d.skipped_summary()


def test_file_level_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_labelled_tsv(tmp_path / "missing.tsv")
    with pytest.raises(UserError, match="empty file"):
        read_labelled_tsv(write(tmp_path, b""))
    with pytest.raises(UserError, match=r":1: expected the header 'text<TAB>label'"):
        read_labelled_tsv(write(tmp_path, b"great film\t1\n"))
    with pytest.raises(UserError, match="no examples after the header"):
        read_labelled_tsv(write(tmp_path, b"text\tlabel\n"))
    with pytest.raises(UserError, match=r"no examples after the header \(1 bad rows skipped\)"):
        read_labelled_tsv(write(tmp_path, b"text\tlabel\nnotab\n"), skip_bad_rows=True)


def test_text_lines_keep_numbers_and_strip_crlf(tmp_path):
    rows, notes = read_text_lines(write(tmp_path, codecs.BOM_UTF8 + b"one\r\n\r\nthree\r\n", "x.txt"))
    assert rows == [(1, "one"), (2, ""), (3, "three")]
    assert len(notes) == 2
