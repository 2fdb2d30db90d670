"""One adapter per mobile-money provider behind one interface (base.py)."""
