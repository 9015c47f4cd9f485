"""Reports built from `collect`'s tables: `tables` (mean ± std over seeds, Markdown and CSV) and
`figures` (PNG and PDF per benchmark). Import the submodules directly; `figures` pulls in matplotlib."""
