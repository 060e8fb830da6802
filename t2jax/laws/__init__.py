"""Scaling laws: tables, Chinchilla, Approach 1 (loss-based T2), Approach 2 (Beta regression).

Modules, imported on their own (`table` needs numpy only): `table`, `chinchilla`, `approach1`,
`approach2`, `posterior` (draws + diagnostics), `optim` (shared fitting machinery), `optimize` (the
T2 planner), `simulate`.
"""
