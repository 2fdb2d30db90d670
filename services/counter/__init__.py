"""The counter service: gapless fiscal numbers per (outlet, series), handed out under leases."""
