"""The lines of one geo-DVF file on their way to PostgreSQL's COPY (the SQL import), pure.

Why: PostgreSQL builds the sales (memory/dvf_load.py) but must only see lines it can read
as the Python parser (jobs/dvf_parse.py) would: a broken line is skipped with its reason,
never fails the file. Looking at every line in Python would cost what the SQL import
saves, so a block of lines is only looked at as a whole when it can be.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter

from jobs.dvf_parse import Columns, Records, RowError, check_numbers, check_row, column_indexes

NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2})?")
"""A number PostgreSQL reads as Python does (checked mode)."""
NUMBER_COLUMNS = ("valeur_fonciere", "surface_reelle_bati", "nombre_pieces_principales",
                  "surface_terrain", "longitude", "latitude")


class Feed:
    """Fast mode: a block of lines passes as it is when it is plain (UTF-8, no quote, CR
    or NUL, every line with its number of fields), PostgreSQL reading the values;
    otherwise its lines are read one by one (the csv module) and written back, broken
    ones skipped with their reason. Checked mode (after PostgreSQL refused a value):
    every row is also checked as the Python parser does (département, id_mutation,
    date, numbers) before it is sent. HeaderError: not a geo-DVF header."""

    def __init__(self, header: list[str], departement: str | None, checked: bool) -> None:
        self.index = column_indexes(header)
        self.cols = Columns.of(self.index)
        self.width = len(header)
        self.departement = departement
        self.checked = checked
        self.rows = 0
        self.outside = 0
        self.skipped: Counter[str] = Counter()
        self.last_id: str | None = None
        """The id_mutation of the last row sent (a file cut short drops its rows)."""
        self._numbers = [(self.index[n], n) for n in NUMBER_COLUMNS]
        self._records = Records()

    def block(self, data: bytes) -> bytes:
        """Whole lines (each ending with a newline) → what COPY gets of them."""
        if not data:
            return b""
        if not self.checked and not self._records.holding and not (
                b'"' in data or b"\r" in data or b"\x00" in data or b"\n\n" in data
                or data[0] == 10):
            lines = data.split(b"\n")
            lines.pop()
            if (lines[0].count(b",") == self.width - 1
                    and list(map(bytes.count, lines, [b","] * len(lines))).count(
                        self.width - 1) == len(lines)
                    and (data.isascii() or _utf8(data))):
                self.rows += len(lines)
                self.last_id = lines[-1].split(b",")[self.cols.id].decode("utf-8")
                return data
        text = data.decode("utf-8", errors="replace").split("\n")
        if text[-1] == "":
            text.pop()
        return self._slow(text, final=False)

    def finish(self) -> bytes:
        """At the end of the data (or where it was cut): a record still held back, waiting
        for the end of its quoted field, as the csv module reads it then."""
        return self._slow([], final=True) if self._records.holding else b""

    def _slow(self, lines: list[str], *, final: bool) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        # the csv module quotes a field holding a character of the line terminator only
        cr_out = io.StringIO()
        cr_writer = csv.writer(cr_out, lineterminator="\r\n")
        width, dept, c = self.width, self.departement, self.cols
        for row in self._records.read(lines, final=final):
            if isinstance(row, csv.Error):
                self.rows += 1
                self.skipped[f"unreadable CSV line ({row})"] += 1
                continue
            if not row:
                continue
            self.rows += 1
            if len(row) != width:
                self.skipped[f"wrong number of columns ({len(row)} instead of {width})"] += 1
                continue
            if self.checked:
                if dept is not None and row[c.departement] != dept:
                    self.outside += 1
                    continue
                try:
                    check_row(row, c, width)
                    check_numbers(row, c)
                    for i, name in self._numbers:
                        if row[i] and not NUMBER.fullmatch(row[i]):
                            raise RowError(f"{name} is not a number")
                except RowError as exc:
                    self.skipped[str(exc)] += 1
                    continue
            if any("\r" in value for value in row):  # quoted, or COPY ends the line there
                cr_out.seek(0)
                cr_out.truncate()
                cr_writer.writerow(row)
                out.write(cr_out.getvalue()[:-2] + "\n")
            else:
                writer.writerow(row)
            self.last_id = row[c.id]
        return out.getvalue().encode("utf-8")


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
