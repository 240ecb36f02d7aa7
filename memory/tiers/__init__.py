"""Memory tiers: L1 hot, L2 semantic, L3 facts, L4 archive — each one Protocol, two backends."""
