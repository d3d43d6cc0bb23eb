"""Evaluation on fixed, seeded mask sets with classical baselines (OpenCV Telea and Navier-Stokes)."""
