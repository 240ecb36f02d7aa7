"""The memory engine the memory agent serves: embedder (ONNX), tiers, routing, chunking, cache.

Entry point: :class:`memory.engine.MemoryEngine`. See DESIGN.md §4 for the tiers.
"""
