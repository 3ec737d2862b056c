"""data/phantom."""
