"""Wire schemas: every message on the bus is one of these ``msgspec.Struct`` types."""
