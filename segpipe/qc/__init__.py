"""Quality control at inference: per-case table, confidence, out-of-distribution flags."""
