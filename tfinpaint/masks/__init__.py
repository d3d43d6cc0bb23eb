"""Hole-mask generators and mask-file reading. Convention everywhere: float32, 1 = hole, 0 = known."""
