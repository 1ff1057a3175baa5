"""Accounts: users, tokens and who may call what (auth.py); their secrets (credentials.py)."""
