"""`make bench`: end-to-end figures over the real local stack (never asserted in tests)."""
