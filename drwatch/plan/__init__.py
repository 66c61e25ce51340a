"""The DR plan as a document (`drwatch plan`) and the drill ledger's commands."""
