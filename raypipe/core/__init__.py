"""The shared core: record schema and input formats, io, verification, lexicons and structure, the one Scorer
and the keep/drop decision it shares with the online path. Plain Python on plain values and Arrow: no Ray here."""
