"""payments: mobile-money collections (M-Pesa, Airtel Money, Orange Money) recorded against invoices."""
