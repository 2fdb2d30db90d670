"""Simulators of the outside world we cannot reach from here (mobile-money providers; later the DGI).
Each follows its provider's documented API, listens on 127.0.0.1 only, calls back only loopback URLs,
and can be told to misbehave through a control API (common.py)."""
