"""Phantom cohorts: generated, documented, deterministic stand-ins for LUS videos and brain MRI."""
