"""How we search: CLI entry points, budget parsing, drivers, storage, scaling, export."""
